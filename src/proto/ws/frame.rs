//! RFC 6455 §5.2 frame header codec, server frame encoder and masking.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use bytes::Bytes;

use super::error::ProtocolError;

/// The longest header: 2 fixed bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 2 + 8 + 4;

/// §5.5: "All control frames MUST have a payload length of 125 bytes or less".
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode that is not reserved (§5.2, §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    /// Decodes the low nibble of the first header byte.
    pub const fn from_nibble(nibble: u8) -> Result<Self, ProtocolError> {
        match nibble {
            0x0 => Ok(Self::Continuation),
            0x1 => Ok(Self::Text),
            0x2 => Ok(Self::Binary),
            0x8 => Ok(Self::Close),
            0x9 => Ok(Self::Ping),
            0xA => Ok(Self::Pong),
            // §5.2: "%x3-7 are reserved for further non-control frames",
            // "%xB-F are reserved for further control frames".
            _ => Err(ProtocolError::ReservedOpcode),
        }
    }

    /// §5.5: control frames are identified by opcodes where the most significant bit is 1.
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// RSV1: "Per-Message Compressed" under permessage-deflate (RFC 7692 §6).
pub const RSV1: u8 = 0x40;

/// A parsed frame header (RSV1 is read from the first byte by the decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: OpCode,
    /// The masking key; always `Some` for a header that [`FrameHeader::parse`] accepted.
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// The caller's buffer is too small; nothing was written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("output buffer too small")]
pub struct NoSpace;

/// Bytes of a header with no mask, by payload length (§5.2 length format).
pub const fn header_len(payload_len: u64) -> usize {
    if payload_len < 126 {
        2
    } else if payload_len <= u16::MAX as u64 {
        4
    } else {
        10
    }
}

/// Bytes needed to encode a server (unmasked) frame with this payload length.
pub const fn encoded_len(payload_len: usize) -> usize {
    header_len(payload_len as u64) + payload_len
}

impl FrameHeader {
    /// Total header length announced by the first two bytes (`None` with fewer than 2).
    pub fn announced_len(prefix: &[u8]) -> Option<usize> {
        let b1 = *prefix.get(1)?;
        let ext = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        Some(2 + ext + mask)
    }

    /// Parses a client frame header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed (nothing is consumed then),
    /// `Ok(Some((header, consumed)))` once the header is complete. The stateless
    /// rules are checked at the earliest byte that reveals them: a bad first byte is
    /// an error even when the second has not arrived yet.
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        // §5.2: "RSV1, RSV2, RSV3: 1 bit each. MUST be 0 unless an extension is
        // negotiated that defines meanings for non-zero values." RSV1 is
        // permessage-deflate's (RFC 7692 §6): the decoder, which knows whether it
        // was negotiated, checks it.
        if b0 & 0x30 != 0 {
            return Err(ProtocolError::ReservedBitsSet);
        }
        let opcode = OpCode::from_nibble(b0 & 0x0F)?;
        let fin = b0 & 0x80 != 0;
        // §5.5: "All control frames ... MUST NOT be fragmented."
        if opcode.is_control() && !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        // §5.1: "The server MUST close the connection upon receiving a frame that is
        // not masked."
        if b1 & 0x80 == 0 {
            return Err(ProtocolError::UnmaskedFrameFromClient);
        }
        let len7 = b1 & 0x7F;
        // §5.5: "All control frames MUST have a payload length of 125 bytes or less".
        if opcode.is_control() && len7 > 125 {
            return Err(ProtocolError::ControlFrameTooBig);
        }
        let total = Self::announced_len(buf).unwrap_or(MAX_HEADER_LEN);
        if buf.len() < total {
            return Ok(None);
        }
        // Non-minimal length encodings ("the minimal number of bytes MUST be used")
        // are accepted: the rule binds the sender, rejecting them protects nothing.
        let (payload_len, mask_at) = match len7 {
            126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(be);
                // §5.2: "the most significant bit MUST be 0".
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBitSet);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mut key = [0u8; 4];
        key.copy_from_slice(&buf[mask_at..mask_at + 4]);
        let header = Self {
            fin,
            opcode,
            mask: Some(key),
            payload_len,
        };
        Ok(Some((header, total)))
    }

    /// Bytes this header takes on the wire.
    pub const fn encoded_len(&self) -> usize {
        header_len(self.payload_len) + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header to the start of `out`; all-or-nothing: on `NoSpace`,
    /// `out` is untouched.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, NoSpace> {
        let n = self.encoded_len();
        let out = out.get_mut(..n).ok_or(NoSpace)?;
        out[0] = (u8::from(self.fin) << 7) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let at = match header_len(self.payload_len) {
            2 => {
                out[1] = mask_bit | self.payload_len as u8;
                2
            }
            4 => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
                4
            }
            _ => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
        }
        Ok(n)
    }
}

/// Appends one unmasked server frame (header and payload) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, fin: bool, payload: &[u8]) {
    let header = FrameHeader {
        fin,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header
        .encode(&mut head)
        .expect("MAX_HEADER_LEN fits every header");
    out.reserve(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
}

/// One complete text frame as shared bytes: encoded once, queued to many subscribers.
///
/// `payload` must be valid UTF-8 (it is the server's own JSON envelope).
pub fn text_frame(payload: &[u8]) -> Bytes {
    debug_assert!(
        std::str::from_utf8(payload).is_ok(),
        "text frame payload is not UTF-8"
    );
    let mut out = Vec::with_capacity(encoded_len(payload.len()));
    encode_frame(&mut out, OpCode::Text, true, payload);
    Bytes::from(out)
}

/// Appends a Close frame with `code` and `reason`.
///
/// The reason is cut at a char boundary to fit the 125-byte control payload.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut body = [0u8; MAX_CONTROL_PAYLOAD];
    body[..2].copy_from_slice(&code.to_be_bytes());
    body[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    encode_frame(out, OpCode::Close, true, &body[..2 + cut]);
}

/// Appends a Ping frame. Panics if `payload` is over 125 bytes (a caller bug).
pub fn encode_ping(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(
        payload.len() <= MAX_CONTROL_PAYLOAD,
        "ping payload of {} bytes",
        payload.len()
    );
    encode_frame(out, OpCode::Ping, true, payload);
}

/// Appends a Pong frame. Panics if `payload` is over 125 bytes (a caller bug).
pub fn encode_pong(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(
        payload.len() <= MAX_CONTROL_PAYLOAD,
        "pong payload of {} bytes",
        payload.len()
    );
    encode_frame(out, OpCode::Pong, true, payload);
}

/// XORs `buf` with the masking key (§5.3), where `buf` starts at byte `phase` of
/// the frame payload (so a payload can be unmasked piece by piece as it arrives).
///
/// Works eight bytes at a time; checked against a byte-wise reference in tests.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    // Rotate the key so that byte 0 of `buf` lines up with key[phase % 4]. Both the
    // word and the data are read with the same byte order, so endianness cancels out.
    let p = phase % 4;
    let key = [key[p], key[(p + 1) % 4], key[(p + 2) % 4], key[(p + 3) % 4]];
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_reference(buf: &mut [u8], key: [u8; 4], phase: usize) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte ^= key[(phase + i) % 4];
        }
    }

    #[test]
    fn word_at_a_time_mask_matches_the_bytewise_reference() {
        let key = [0x6d, 0xb6, 0xb2, 0x80];
        let data: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37)).collect();
        for phase in 0..8 {
            for start in 0..9 {
                for end in start..data.len() {
                    let mut fast = data[start..end].to_vec();
                    let mut slow = fast.clone();
                    apply_mask(&mut fast, key, phase);
                    mask_reference(&mut slow, key, phase);
                    assert_eq!(fast, slow, "phase {phase} range {start}..{end}");
                }
            }
        }
    }

    #[test]
    fn encoded_len_switches_length_format_at_126_and_65536() {
        for (len, want) in [
            (0, 2),
            (125, 127),
            (126, 130),
            (65535, 65539),
            (65536, 65546),
        ] {
            assert_eq!(encoded_len(len), want, "len {len:#x}");
            let mut out = Vec::new();
            encode_frame(&mut out, OpCode::Binary, true, &vec![0; len]);
            assert_eq!(out.len(), want, "len {len:#x}");
        }
    }

    #[test]
    fn rfc_example_unmasked_hello_encodes_to_the_rfc_bytes() {
        // §5.7: "A single-frame unmasked text message".
        assert_eq!(&text_frame(b"Hello")[..], b"\x81\x05\x48\x65\x6c\x6c\x6f");
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, false, b"Hel");
        assert_eq!(out, b"\x01\x03\x48\x65\x6c");
    }

    #[test]
    fn rfc_example_masked_hello_parses_and_unmasks() {
        let wire = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
        let (h, n) = FrameHeader::parse(wire).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, n),
            (true, OpCode::Text, 5, 6)
        );
        let mut payload = wire[6..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn every_prefix_of_a_header_is_partial_and_consumes_nothing() {
        let mut wire = [0u8; 14];
        let h = FrameHeader {
            fin: true,
            opcode: OpCode::Binary,
            mask: Some([1, 2, 3, 4]),
            payload_len: 70_000,
        };
        let n = h.encode(&mut wire).unwrap();
        assert_eq!(n, 14);
        for cut in 0..n {
            assert_eq!(FrameHeader::parse(&wire[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(FrameHeader::parse(&wire), Ok(Some((h, 14))));
    }

    #[test]
    fn header_encode_is_all_or_nothing() {
        let h = FrameHeader {
            fin: true,
            opcode: OpCode::Text,
            mask: None,
            payload_len: 300,
        };
        let mut small = [0xEEu8; 3];
        assert_eq!(h.encode(&mut small), Err(NoSpace));
        assert_eq!(small, [0xEE; 3]);
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary_to_fit_125_bytes() {
        let reason = "é".repeat(100);
        let mut out = Vec::new();
        encode_close(&mut out, 1001, &reason);
        assert_eq!(out[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
