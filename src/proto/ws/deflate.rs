//! permessage-deflate (RFC 7692): the offer/answer, compressing a server
//! message, and the bounded inflate of a client message.
//!
//! ringcast compresses each message once per core for every subscriber, so it
//! always answers `server_no_context_takeover`: every server message is a
//! standalone DEFLATE stream that any client can inflate. It also always
//! answers `client_no_context_takeover` (§7.1.1.2 lets a server add it to any
//! offer), so a client's message never refers to an earlier one and the
//! inflate state lives only while one compressed message is being read.
//!
//! What a connection keeps of the agreement is [`Agreed`]: two window sizes
//! packed into one byte.
//!
//! Window sizes and "compress once": a server message is compressed with a
//! 32 KiB window. A client that asked for `server_max_window_bits=N` (N < 15)
//! can still inflate it when the message is at most 2^N bytes long, since with
//! no context takeover no back-reference reaches further than the message's own
//! start. Longer messages go to such a client uncompressed (RSV1 clear), which
//! the RFC allows for any message. No per-window encoding is ever made.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Method, Strategy};

use super::frame::{encode_frame, OpCode};

/// §7.2.1: the 4 octets a sync flush ends with, removed by the sender and
/// appended again by the receiver.
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest LZ77 window, 2^15 bytes (§7.1.2: values 8 to 15).
pub const MAX_WINDOW_BITS: u8 = 15;
/// The smallest window a peer may ask for.
pub const MIN_WINDOW_BITS: u8 = 8;

/// How server messages are compressed: zlib level 7 with the `Filtered`
/// strategy (matches of 5 bytes or less are sent as literals). Measured on
/// 1 KiB JSON quotes (README, permessage-deflate): level 6 gives 0.359 × the
/// plain frame, level 7 0.354, level 7 filtered 0.348 (levels 8 and 9 no
/// smaller); on JSON the short matches are mostly digits that happen to
/// repeat, cheaper as literals. Prose loses a little (0.505 to 0.519 on 2 KB
/// of the README). The cost, paid once per message and core, is the same as
/// level 6 (388,000 instructions against 390,000; 15 to 21 µs for 1.1 KB on a
/// loaded machine, `cargo bench --bench hot_paths -- deflate`). libdeflate
/// compresses smaller still (level 12: 0.340), but only with a final block
/// (BFINAL), which Chromium fails on in one case (README).
const CONFIG: DeflateConfig = DeflateConfig {
    level: 7,
    method: Method::Deflated,
    // Negative: a raw DEFLATE stream, no zlib header (§7.2.1), 32 KiB window.
    window_bits: -(MAX_WINDOW_BITS as i32),
    mem_level: 8,
    strategy: Strategy::Filtered,
};

/// What a connection agreed to, in one byte: the server's window bits in the
/// low nibble, the client's in the high nibble; `0` when nothing was agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agreed(u8);

impl Agreed {
    /// No extension: RSV1 is a protocol error, messages go plain.
    pub const NONE: Agreed = Agreed(0);

    /// An agreement with these window sizes (each 8..=15).
    pub fn new(server_bits: u8, client_bits: u8) -> Agreed {
        debug_assert!(
            (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&server_bits)
                && (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&client_bits),
            "window bits {server_bits} / {client_bits}"
        );
        Agreed(server_bits | (client_bits << 4))
    }

    /// From the byte [`Agreed::to_byte`] gave.
    pub const fn from_byte(b: u8) -> Agreed {
        Agreed(b)
    }

    /// The byte to keep (in the core's client record).
    pub const fn to_byte(self) -> u8 {
        self.0
    }

    /// permessage-deflate is on for this connection.
    pub const fn is_on(self) -> bool {
        self.0 != 0
    }

    /// The window the server's messages may use, in bits (0 when off).
    pub const fn server_bits(self) -> u8 {
        self.0 & 0x0F
    }

    /// The window the client's messages may use, in bits (0 when off).
    pub const fn client_bits(self) -> u8 {
        self.0 >> 4
    }

    /// Whether a compressed message of `len` bytes (with our 32 KiB window) can
    /// be inflated by this client: always with a full window, else only when
    /// the message fits the client's window (see the module doc).
    pub const fn takes_compressed(self, len: usize) -> bool {
        let bits = self.server_bits();
        bits == MAX_WINDOW_BITS || (bits != 0 && len <= 1 << bits)
    }
}

/// Parameters of one `permessage-deflate` offer (§7.1).
#[derive(Debug, Default, Clone, Copy)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// `server_max_window_bits=N`.
    server_max_window_bits: Option<u8>,
    /// `client_max_window_bits` with its value, if any (`Some(None)`: no value).
    client_max_window_bits: Option<Option<u8>>,
}

/// Picks the first acceptable `permessage-deflate` offer of a
/// `Sec-WebSocket-Extensions` value and returns the agreement with the answer
/// to append to the `101` (see [`write_answer`]). Offers of other extensions,
/// and offers with an unknown, repeated or invalid parameter, are declined
/// (skipped) without failing the handshake (§5: "the server ... MUST decline"
/// such an offer; §7.1: "a server MUST decline an extension negotiation offer
/// ... if the negotiation offer contains an extension parameter not defined
/// for use in an offer" or "with an invalid value").
pub fn negotiate(offers: &[u8]) -> Option<Agreed> {
    split_unquoted(offers, b',').find_map(|offer| {
        let mut params = split_unquoted(offer, b';');
        let name = trim(params.next()?);
        if !name.eq_ignore_ascii_case(b"permessage-deflate") {
            return None;
        }
        let offer = parse_params(params)?;
        // server_no_context_takeover is what we do anyway; the client's window
        // limits apply to its own messages, which we inflate with its window.
        let _ = (
            offer.server_no_context_takeover,
            offer.client_no_context_takeover,
        );
        let server_bits = offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
        let client_bits = match offer.client_max_window_bits {
            Some(Some(bits)) => bits,
            _ => MAX_WINDOW_BITS,
        };
        Some(Agreed::new(server_bits, client_bits))
    })
}

/// Parses the parameters of one offer; `None` declines it.
fn parse_params<'a>(params: impl Iterator<Item = &'a [u8]>) -> Option<Offer> {
    let mut o = Offer::default();
    for param in params {
        let param = trim(param);
        let (key, value) = match param.iter().position(|&b| b == b'=') {
            Some(i) => (trim(&param[..i]), Some(unquote(trim(&param[i + 1..]))?)),
            None => (param, None),
        };
        let key = key.to_ascii_lowercase();
        // §7.1: "A server MUST decline an extension negotiation offer for this
        // extension if ... the negotiation offer contains multiple extension
        // parameters with the same name."
        match (&key[..], value) {
            (b"server_no_context_takeover", None) if !o.server_no_context_takeover => {
                o.server_no_context_takeover = true;
            }
            (b"client_no_context_takeover", None) if !o.client_no_context_takeover => {
                o.client_no_context_takeover = true;
            }
            (b"server_max_window_bits", Some(v)) if o.server_max_window_bits.is_none() => {
                o.server_max_window_bits = Some(window_bits(v)?);
            }
            (b"client_max_window_bits", v) if o.client_max_window_bits.is_none() => {
                o.client_max_window_bits = Some(match v {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
            }
            // Unknown, repeated, or a value where none belongs (or none where
            // one is required): decline this offer.
            _ => return None,
        }
    }
    Some(o)
}

/// §7.1.2.1: "The value ... MUST conform to the ABNF below. %x38-39 / %x31 %x30-35
/// ; 8-15" (after unquoting): no sign, no leading zero.
fn window_bits(v: &[u8]) -> Option<u8> {
    match v {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// RFC 6455 §9.1: a parameter value is a token or a quoted-string; a quoted
/// one is unquoted (no escapes are valid in the values defined here).
fn unquote(v: &[u8]) -> Option<&[u8]> {
    match v {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'"') && !inner.contains(&b'\\') => {
            Some(inner)
        }
        v if v.contains(&b'"') || v.is_empty() => None,
        v => Some(v),
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

/// Splits at `sep` outside double quotes.
fn split_unquoted(v: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(v);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        for (i, &b) in s.iter().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b if b == sep && !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

/// Appends the `Sec-WebSocket-Extensions` answer line (with CRLF) for `agreed`.
///
/// §7.1.2.1: a server that accepts `server_max_window_bits=N` MUST answer it
/// with a value no larger; §7.1.2.2: `client_max_window_bits` is answered only
/// when offered, and we answer it only with the value the client gave.
pub fn write_answer(out: &mut Vec<u8>, agreed: Agreed) {
    out.extend_from_slice(
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    );
    if agreed.server_bits() != MAX_WINDOW_BITS {
        out.extend_from_slice(b"; server_max_window_bits=");
        out.extend_from_slice(agreed.server_bits().to_string().as_bytes());
    }
    if agreed.client_bits() != MAX_WINDOW_BITS {
        out.extend_from_slice(b"; client_max_window_bits=");
        out.extend_from_slice(agreed.client_bits().to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The one compressor of this thread (a core), reset for every message:
    /// compression is per message, never per connection.
    static COMPRESSOR: RefCell<Deflate> = RefCell::new(Deflate::new_with_config(CONFIG));
}

/// One complete, unmasked data frame of `payload` compressed as a standalone
/// message (RSV1 set, §7.2.1), or `None` when compressing would not make it
/// smaller (send it plain then).
pub fn compressed_frame(opcode: OpCode, payload: &[u8]) -> Option<Vec<u8>> {
    // Output room for the payload's size plus the trailer: a result that does
    // not fit would not be smaller than the payload, so it is not wanted.
    let mut body = vec![0u8; payload.len() + TRAILER.len() + 1];
    let written = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        let status = c.compress(payload, &mut body, DeflateFlush::SyncFlush);
        let (taken, written) = (c.total_in() as usize, c.total_out() as usize);
        (status.is_ok() && taken == payload.len() && written < body.len()).then_some(written)
    })?;
    body.truncate(written);
    if !body.ends_with(&TRAILER) || written - TRAILER.len() >= payload.len() {
        return None;
    }
    body.truncate(written - TRAILER.len());
    let mut out = Vec::with_capacity(body.len() + 10);
    encode_frame(&mut out, opcode, true, &body);
    // RFC 7692 §6: "the RSV1 bit is set ... on the first frame of a compressed message".
    out[0] |= 0x40;
    Some(out)
}

/// Heap bytes an [`Inflater`] holds besides its window (zlib-rs's inflate
/// state, measured with a counting allocator; the window is `1 << bits`).
pub const INFLATE_STATE_BYTES: usize = 7 * 1024;

/// Why an inflate stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The output would pass the message limit (a bomb, or just too big).
    TooBig,
    /// The data is not valid DEFLATE.
    Corrupt,
}

/// The inflate state of one compressed client message: made at its first frame,
/// dropped at its last (the client agreed to no context takeover).
pub struct Inflater {
    inner: Decompress,
    bits: u8,
}

impl Inflater {
    /// An inflater for a client window of `bits` (8..=15). zlib takes 9 at the
    /// least; a larger window inflates any stream of a smaller one.
    pub fn new(bits: u8) -> Inflater {
        let bits = bits.clamp(9, MAX_WINDOW_BITS);
        Inflater {
            inner: Decompress::new_with_window_bits(false, bits),
            bits,
        }
    }

    /// Starts over for a new standalone message (a client, such as the bench,
    /// that keeps one inflater for many messages without context takeover).
    pub fn reset(&mut self) {
        self.inner.reset(false);
    }

    /// Heap bytes held, for the inbound memory budget.
    pub fn held_bytes(&self) -> usize {
        INFLATE_STATE_BYTES + (1 << self.bits)
    }

    /// Inflates `input` (unmasked compressed bytes) onto `out`, never letting
    /// `out` pass `limit` bytes: at the limit it stops with [`InflateError::TooBig`]
    /// whatever the rest of the input holds.
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        // Bounded: every turn consumes input or adds output, and output stops at
        // `limit`; a turn that does neither has used up what it can.
        loop {
            // Room for one byte past the limit, to tell "at" from "over"; a few
            // times the input (JSON inflates 3-10x), more on the next turn.
            let room = (limit + 1)
                .saturating_sub(out.len())
                .min((input.len() * 4).clamp(1024, 16 * 1024));
            if room == 0 {
                return Err(InflateError::TooBig);
            }
            let before = out.len();
            out.resize(before + room, 0);
            let (in0, out0) = (self.inner.total_in(), self.inner.total_out());
            let status = self
                .inner
                .decompress(input, &mut out[before..], FlushDecompress::Sync);
            let used = (self.inner.total_in() - in0) as usize;
            let made = (self.inner.total_out() - out0) as usize;
            out.truncate(before + made);
            input = &input[used..];
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            match status {
                Err(_) => return Err(InflateError::Corrupt),
                // Past the final block: what follows (the trailer) is ignored.
                Ok(Status::StreamEnd) => return Ok(()),
                Ok(_) => {}
            }
            if input.is_empty() && made < room {
                // Input used up, output room left over: all of it is out.
                return Ok(());
            }
            if used == 0 && made == 0 {
                // No progress with input and room to spare: zlib is stuck.
                return if input.is_empty() {
                    Ok(())
                } else {
                    Err(InflateError::Corrupt)
                };
            }
        }
    }

    /// Ends the message: inflates the trailer that §7.2.2 says to append.
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        self.inflate(&TRAILER, out, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(offer: &str) -> Option<String> {
        negotiate(offer.as_bytes()).map(|a| {
            let mut out = Vec::new();
            write_answer(&mut out, a);
            String::from_utf8(out).unwrap()
        })
    }

    #[test]
    fn offers_are_accepted_declined_and_answered_as_rfc_7692_says() {
        let base = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        let cases: &[(&str, Option<&str>)] = &[
            ("permessage-deflate", Some("")),
            // Chromium's offer.
            ("permessage-deflate; client_max_window_bits", Some("")),
            ("permessage-deflate; client_max_window_bits=10", Some("; client_max_window_bits=10")),
            ("permessage-deflate; client_max_window_bits=\"10\"", Some("; client_max_window_bits=10")),
            ("permessage-deflate; server_max_window_bits=8", Some("; server_max_window_bits=8")),
            ("PerMessage-Deflate ; Server_No_Context_Takeover ; client_no_context_takeover", Some("")),
            // Declined offers, then the next one is taken.
            ("permessage-deflate; foo=1, permessage-deflate", Some("")),
            ("permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=9", Some("; server_max_window_bits=9")),
            ("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=15", Some("")),
            // Declined, none left.
            ("permessage-deflate; server_max_window_bits", None),
            ("permessage-deflate; server_max_window_bits=16", None),
            ("permessage-deflate; server_max_window_bits=08", None),
            ("permessage-deflate; client_max_window_bits=0", None),
            ("permessage-deflate; server_no_context_takeover=1", None),
            ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
            ("permessage-deflate; client_max_window_bits; client_max_window_bits=9", None),
            ("permessage-deflate; client_max_window_bits=\"9", None),
            ("permessage-deflatex", None),
            ("", None),
        ];
        for (offer, want) in cases {
            assert_eq!(
                answer(offer),
                want.map(|w| format!("{base}{w}\r\n")),
                "offer {offer:?}"
            );
        }
    }

    #[test]
    fn agreement_packs_into_one_byte() {
        let a = Agreed::new(9, 12);
        assert_eq!((a.server_bits(), a.client_bits()), (9, 12));
        assert_eq!(Agreed::from_byte(a.to_byte()), a);
        assert!(!Agreed::NONE.is_on() && a.is_on());
        assert!(a.takes_compressed(512) && !a.takes_compressed(513));
        assert!(Agreed::new(15, 15).takes_compressed(1 << 20));
        assert!(!Agreed::NONE.takes_compressed(10));
    }

    /// The payload of an unmasked server frame.
    fn body(frame: &[u8]) -> &[u8] {
        let at = match frame[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &frame[at..]
    }

    fn inflate_all(frame_payload: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        inf.inflate(frame_payload, &mut out, limit)?;
        inf.finish(&mut out, limit)?;
        Ok(out)
    }

    #[test]
    fn a_compressed_frame_inflates_back_to_its_payload() {
        let payload =
            br#"{"topic":"a","id":"1-1","data":{"x":[1,2,3,1,2,3,1,2,3,1,2,3,1,2,3,1,2,3]}}"#
                .repeat(20);
        let frame = compressed_frame(OpCode::Text, &payload).unwrap();
        assert_eq!(frame[0], 0xC1, "FIN + RSV1 + text");
        let body = body(&frame);
        assert!(body.len() * 5 < payload.len());
        assert_eq!(inflate_all(body, 1 << 20).unwrap(), payload);
        // Incompressible input stays plain.
        assert_eq!(compressed_frame(OpCode::Text, b"ab"), None);
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        let bomb = vec![b'a'; 10 << 20];
        let frame = compressed_frame(OpCode::Binary, &bomb).unwrap();
        let body = body(&frame);
        assert!(body.len() < 20_000, "{}", body.len());
        assert_eq!(inflate_all(body, 1 << 20), Err(InflateError::TooBig));
        assert_eq!(inflate_all(body, 10 << 20).map(|v| v.len()), Ok(10 << 20));
        assert_eq!(
            inflate_all(b"\xff\xff\xff\xff", 100),
            Err(InflateError::Corrupt)
        );
    }
}
