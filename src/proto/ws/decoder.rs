//! Incremental decoder of client frames into messages (RFC 6455 §5, §6.2).

use std::fmt;

use super::close::parse_close_body;
use super::deflate::{Agreed, InflateError, Inflater};
use super::error::ProtocolError;
use super::frame::{apply_mask, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, RSV1};
use super::utf8::Utf8Validator;

/// The payload of a control frame (at most 125 bytes), held inline.
#[derive(Clone, Copy)]
pub struct ControlPayload {
    len: u8,
    bytes: [u8; MAX_CONTROL_PAYLOAD],
}

impl ControlPayload {
    /// An empty payload.
    pub const EMPTY: Self = Self {
        len: 0,
        bytes: [0; MAX_CONTROL_PAYLOAD],
    };

    /// Copies `bytes`, which must be at most 125 long (a caller bug otherwise).
    pub fn new(bytes: &[u8]) -> Self {
        assert!(
            bytes.len() <= MAX_CONTROL_PAYLOAD,
            "control payload of {} bytes",
            bytes.len()
        );
        let mut out = Self::EMPTY;
        out.bytes[..bytes.len()].copy_from_slice(bytes);
        out.len = bytes.len() as u8;
        out
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl PartialEq for ControlPayload {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ControlPayload {}

impl fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// What the decoder produced from the bytes of one or more frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message, reassembled from its fragments; valid UTF-8.
    /// Owned and mutable so that an in-place JSON parser can take it.
    Text(Vec<u8>),
    /// A complete binary message, reassembled from its fragments.
    Binary(Vec<u8>),
    /// A Ping: answer with a Pong carrying the same payload.
    Ping(ControlPayload),
    /// A Pong (unsolicited ones are allowed and mean nothing beyond liveness).
    Pong(ControlPayload),
    /// The peer's Close; `reason` is valid UTF-8 and empty when `code` is `None`.
    Close {
        code: Option<u16>,
        reason: ControlPayload,
    },
}

/// Kind of the data message being reassembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Text,
    Binary,
}

/// Where the decoder is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// Collecting the `len` header bytes seen so far of the next frame.
    Header {
        stash: [u8; MAX_HEADER_LEN],
        len: u8,
    },
    /// Reading the payload of `header`, of which `done` bytes were seen.
    Payload { header: FrameHeader, done: u64 },
    /// A protocol violation was found; the stream cannot be parsed any further.
    Failed(ProtocolError),
}

const NEW_HEADER: Read = Read::Header {
    stash: [0; MAX_HEADER_LEN],
    len: 0,
};

/// Incremental decoder of client frames into [`Event`]s.
///
/// Call [`handle_bytes`](Self::handle_bytes) with bytes read from the socket, in any
/// split, down to one byte at a time. Each call returns how many bytes it consumed
/// and at most one event; call again with the rest of the input until it is all
/// consumed (`consumed < input.len()` only happens together with an event or an
/// error).
///
/// Unlike the slice parsers of STYLE rule 1, this decoder consumes partial frames:
/// up to 14 header bytes are kept in an inline stash and payload bytes are unmasked
/// into the message buffer as they arrive. That lets the caller read into a per-core
/// scratch buffer and keep nothing per connection, and lets an invalid UTF-8 byte
/// fail the connection as soon as it arrives (Autobahn 6.4.x), even mid-frame.
///
/// Memory when idle is the struct itself (no heap): the message buffer is
/// allocated by the first data payload byte and handed out (moved) with the event,
/// the control payload by the first control payload byte, freed with its event.
/// After an error the decoder is fused: every later call returns the same error and
/// consumes nothing.
pub struct Decoder {
    max_message_bytes: usize,
    read: Read,
    /// The data message being reassembled, if one was started.
    message: Option<MessageKind>,
    /// Unmasked payload of the message so far.
    buf: Vec<u8>,
    /// UTF-8 state across the fragments of a text message.
    utf8: Utf8Validator,
    /// Unmasked payload of the control frame being read: boxed, and only once a
    /// payload byte arrives, so that an idle connection's decoder stays small.
    control: Option<Box<ControlPayload>>,
    /// permessage-deflate, if negotiated (one byte: the window sizes).
    deflate: Agreed,
    /// The inflate state of the compressed message being read: made by its
    /// first frame, dropped with its last (no context takeover), so an idle
    /// connection holds none.
    inflate: Option<Box<Inflater>>,
}

/// The outcome of one [`Decoder::handle_bytes`] call: bytes consumed, then the event
/// (or `None` when all input was consumed and more is needed) or the violation.
pub type Decoded = (usize, Result<Option<Event>, ProtocolError>);

impl Decoder {
    /// A decoder that fails messages over `max_message_bytes` (sum of fragments) with 1009.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            read: NEW_HEADER,
            message: None,
            buf: Vec::new(),
            utf8: Utf8Validator::default(),
            control: None,
            deflate: Agreed::NONE,
            inflate: None,
        }
    }

    /// Takes compressed messages (RSV1) as `deflate` agreed; with
    /// [`Agreed::NONE`], RSV1 is a protocol error (1002).
    pub fn set_deflate(&mut self, deflate: Agreed) {
        self.deflate = deflate;
    }

    /// Heap bytes held for a message or control frame not complete yet (what
    /// an inbound memory budget must count).
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity()
            + self
                .control
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<ControlPayload>())
            + self.inflate.as_ref().map_or(0, |i| i.held_bytes())
    }

    /// A frame or a fragmented message has started and is not complete.
    pub fn mid_message(&self) -> bool {
        self.message.is_some()
            || match self.read {
                Read::Header { len, .. } => len > 0,
                Read::Payload { .. } => true,
                Read::Failed(_) => false,
            }
    }

    /// Between frames with nothing under way (no partial header, payload,
    /// message or UTF-8 sequence, not failed): the decoder holds nothing a new
    /// one with the same limit would not.
    pub fn at_rest(&self) -> bool {
        matches!(self.read, Read::Header { len: 0, .. })
            && self.message.is_none()
            && self.inflate.is_none()
            && self.control.is_none()
            && self.buf.is_empty()
            && self.utf8 == Utf8Validator::default()
    }

    /// Drops whatever was partly received (the connection is being failed for
    /// a server limit and reads no more of the stream).
    pub fn discard(&mut self) {
        self.buf = Vec::new();
        self.control = None;
        self.inflate = None;
        self.message = None;
        self.read = NEW_HEADER;
    }

    /// The error the decoder is fused on, if any.
    pub fn failed(&self) -> Option<ProtocolError> {
        match self.read {
            Read::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Feeds bytes; see the type doc for the contract.
    pub fn handle_bytes(&mut self, input: &[u8]) -> Decoded {
        let mut pos = 0;
        loop {
            match &mut self.read {
                Read::Failed(e) => return (0, Err(*e)),
                Read::Header { stash, len } => {
                    if pos == input.len() {
                        return (pos, Ok(None));
                    }
                    let have = usize::from(*len);
                    // Copy at most up to the end of the header: 2 bytes first, then
                    // the rest once byte 1 announces the length format.
                    let want = FrameHeader::announced_len(&stash[..have]).unwrap_or(2);
                    let take = (want - have).min(input.len() - pos);
                    stash[have..have + take].copy_from_slice(&input[pos..pos + take]);
                    *len += take as u8;
                    pos += take;
                    let seen = &stash[..usize::from(*len)];
                    let parsed = FrameHeader::parse(seen);
                    let b0 = seen[0];
                    match parsed.and_then(|p| self.check_sequence(b0).map(|()| p)) {
                        Err(e) => return self.fail(pos, e),
                        Ok(None) => {}
                        Ok(Some((header, _))) => {
                            if let Err(e) = self.start_frame(&header, b0 & RSV1 != 0) {
                                return self.fail(pos, e);
                            }
                            self.read = Read::Payload { header, done: 0 };
                        }
                    }
                }
                Read::Payload { header, done } => {
                    let header = *header;
                    let start = *done;
                    let take =
                        (header.payload_len - start).min((input.len() - pos) as u64) as usize;
                    let chunk = &input[pos..pos + take];
                    pos += take;
                    *done += take as u64;
                    let finished = *done == header.payload_len;
                    let key = header.mask.expect("parse accepts masked frames only");
                    if let Err(e) = self.take_payload(header.opcode, chunk, key, start as usize) {
                        return self.fail(pos, e);
                    }
                    if !finished {
                        debug_assert_eq!(pos, input.len());
                        return (pos, Ok(None));
                    }
                    self.read = NEW_HEADER;
                    match self.finish_frame(header) {
                        Ok(None) => {}
                        Ok(Some(event)) => return (pos, Ok(Some(event))),
                        Err(e) => return self.fail(pos, e),
                    }
                }
            }
        }
    }

    fn fail(&mut self, pos: usize, e: ProtocolError) -> Decoded {
        self.read = Read::Failed(e);
        // Drop the partial message now: a failed connection keeps no buffer.
        self.buf = Vec::new();
        self.inflate = None;
        (pos, Err(e))
    }

    /// Stateful rules revealed by the first header byte (the opcode).
    fn check_sequence(&self, b0: u8) -> Result<(), ProtocolError> {
        // The reserved opcodes were already rejected by `FrameHeader::parse`.
        let opcode = OpCode::from_nibble(b0 & 0x0F)?;
        if b0 & RSV1 != 0 {
            // RFC 6455 §5.2: RSV1 "MUST be 0 unless an extension is negotiated that
            // defines meanings for non-zero values".
            if !self.deflate.is_on() {
                return Err(ProtocolError::ReservedBitsSet);
            }
            // RFC 7692 §6.1: "An endpoint MUST NOT set the "Per-Message Compressed"
            // bit of control frames and non-first fragments of a data message."
            if !matches!(opcode, OpCode::Text | OpCode::Binary) {
                return Err(ProtocolError::CompressedBitMisplaced);
            }
        }
        match (opcode, self.message) {
            // §5.4: a fragmented message is "a single frame with the FIN bit clear and
            // an opcode other than 0, followed by zero or more frames with the FIN bit
            // clear and the opcode set to 0": a continuation needs an open message.
            (OpCode::Continuation, None) => Err(ProtocolError::ContinuationWithoutMessage),
            // §5.4: "the fragments of one message MUST NOT be interleaved between the
            // fragments of another message".
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                Err(ProtocolError::NewMessageWhileFragmented)
            }
            _ => Ok(()),
        }
    }

    /// Rules revealed by the complete header, checked before any payload is buffered.
    fn start_frame(&mut self, header: &FrameHeader, rsv1: bool) -> Result<(), ProtocolError> {
        match header.opcode {
            OpCode::Text => self.message = Some(MessageKind::Text),
            OpCode::Binary => self.message = Some(MessageKind::Binary),
            OpCode::Continuation => {}
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                self.control = None;
                return Ok(());
            }
        }
        // Enforce the message size limit at the header, before buffering the payload.
        // (A compressed payload is counted as it is sent: larger than the limit, it
        // is refused too; its inflated size is checked as it is inflated.)
        let total = (self.buf.len() as u64).saturating_add(header.payload_len);
        if total > self.max_message_bytes as u64 {
            return Err(ProtocolError::MessageTooBig);
        }
        if rsv1 {
            // The first frame of a compressed message (check_sequence allowed RSV1).
            self.inflate = Some(Box::new(Inflater::new(self.deflate.client_bits())));
        }
        Ok(())
    }

    /// Unmasks and stores `chunk`, which starts at byte `start` of the frame payload.
    fn take_payload(
        &mut self,
        opcode: OpCode,
        chunk: &[u8],
        key: [u8; 4],
        start: usize,
    ) -> Result<(), ProtocolError> {
        if opcode.is_control() {
            let c = self
                .control
                .get_or_insert_with(|| Box::new(ControlPayload::EMPTY));
            let dst = &mut c.bytes[start..start + chunk.len()];
            dst.copy_from_slice(chunk);
            apply_mask(dst, key, start);
            c.len = (start + chunk.len()) as u8;
            return Ok(());
        }
        if self.inflate.is_some() {
            return self.inflate_payload(chunk, key, start);
        }
        let old = self.buf.len();
        self.buf.extend_from_slice(chunk);
        let new = &mut self.buf[old..];
        apply_mask(new, key, start);
        if self.message == Some(MessageKind::Text) {
            // §8.1: fail as soon as the invalid byte arrives (Autobahn 6.4.x fail-fast).
            self.utf8
                .feed(new)
                .map_err(|_| ProtocolError::InvalidUtf8InText)?;
        }
        Ok(())
    }

    /// Unmasks `chunk` of a compressed message (a piece at a time, on the stack)
    /// and inflates it onto the message, within the message limit.
    #[cold]
    fn inflate_payload(
        &mut self,
        chunk: &[u8],
        key: [u8; 4],
        start: usize,
    ) -> Result<(), ProtocolError> {
        let mut piece = [0u8; 2048];
        for (i, part) in chunk.chunks(piece.len()).enumerate() {
            let piece = &mut piece[..part.len()];
            piece.copy_from_slice(part);
            apply_mask(piece, key, start + i * 2048);
            self.inflate_unmasked(|inf, buf, limit| inf.inflate(piece, buf, limit))?;
        }
        Ok(())
    }

    /// Runs one inflate step onto the message buffer and checks the new bytes.
    fn inflate_unmasked(
        &mut self,
        step: impl FnOnce(&mut Inflater, &mut Vec<u8>, usize) -> Result<(), InflateError>,
    ) -> Result<(), ProtocolError> {
        let Some(inf) = self.inflate.as_mut() else {
            return Ok(());
        };
        let old = self.buf.len();
        // §7.4.1 (1009) on the inflated size: inflating stops at the limit.
        step(inf, &mut self.buf, self.max_message_bytes).map_err(|e| match e {
            InflateError::TooBig => ProtocolError::MessageTooBig,
            InflateError::Corrupt => ProtocolError::InvalidCompressedData,
        })?;
        if self.message == Some(MessageKind::Text) {
            self.utf8
                .feed(&self.buf[old..])
                .map_err(|_| ProtocolError::InvalidUtf8InText)?;
        }
        Ok(())
    }

    /// A frame's payload is complete: emit its event, if it completes one.
    fn finish_frame(&mut self, header: FrameHeader) -> Result<Option<Event>, ProtocolError> {
        let control = self.control.take().map_or(ControlPayload::EMPTY, |c| *c);
        let event = match header.opcode {
            OpCode::Ping => Event::Ping(control),
            OpCode::Pong => Event::Pong(control),
            OpCode::Close => match parse_close_body(control.as_bytes())? {
                None => Event::Close {
                    code: None,
                    reason: ControlPayload::EMPTY,
                },
                Some((code, reason)) => Event::Close {
                    code: Some(code),
                    reason: ControlPayload::new(reason),
                },
            },
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if !header.fin {
                    return Ok(None);
                }
                if self.inflate.is_some() {
                    // RFC 7692 §7.2.2: append 0x00 0x00 0xff 0xff and inflate.
                    self.inflate_unmasked(|inf, buf, limit| inf.finish(buf, limit))?;
                    self.inflate = None;
                }
                let payload = std::mem::take(&mut self.buf);
                match self.message.take() {
                    Some(MessageKind::Text) => {
                        // §8.1: a sequence left open at the end of the message is invalid.
                        self.utf8
                            .finish()
                            .map_err(|_| ProtocolError::InvalidUtf8InText)?;
                        Event::Text(payload)
                    }
                    Some(MessageKind::Binary) => Event::Binary(payload),
                    None => unreachable!("data frame without a message passed check_sequence"),
                }
            }
        };
        Ok(Some(event))
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("read", &self.read)
            .field("message", &self.message)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_decoder_holds_no_heap_buffer_between_messages() {
        let mut dec = Decoder::new(1 << 20);
        assert_eq!(dec.buf.capacity(), 0);
        // "Hi" as a masked text frame, key 0.
        let (n, r) = dec.handle_bytes(b"\x81\x82\0\0\0\0Hi");
        assert_eq!((n, r), (8, Ok(Some(Event::Text(b"Hi".to_vec())))));
        assert_eq!(dec.buf.capacity(), 0, "the buffer moved out with the event");
        assert!(
            std::mem::size_of::<Decoder>() <= 256,
            "{}",
            std::mem::size_of::<Decoder>()
        );
    }
}
