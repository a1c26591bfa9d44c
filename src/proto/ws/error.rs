//! The one error type of the frame layer: a peer's protocol violation.

use super::close::code;

/// A protocol violation by the peer (RFC 6455 §7.1.7 "_Fail the WebSocket Connection_").
///
/// Every variant is the peer's fault. The caller should send a Close frame with
/// [`close_code`](Self::close_code) and [`reason`](Self::reason), stop processing
/// the peer's data, and close TCP ([`super::Connection`] does exactly that).
/// Variants are named after the rule they enforce so that a grep leads from RFC
/// text to the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// §5.1: a client MUST mask every frame it sends to the server.
    #[error("unmasked frame from client")]
    UnmaskedFrameFromClient,
    /// §5.2: RSV1-3 MUST be 0 unless an extension defining them was negotiated
    /// (RSV1 with permessage-deflate; RSV2 and RSV3 never).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBitsSet,
    /// RFC 7692 §6.1: "An endpoint MUST NOT set the "Per-Message Compressed" bit of
    /// control frames and non-first fragments of a data message."
    #[error("compressed bit on a control frame or a continuation")]
    CompressedBitMisplaced,
    /// RFC 7692 §6.2: the compressed payload is not valid DEFLATE (the data is
    /// not consistent with the message's type: 1007).
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved.
    #[error("reserved opcode")]
    ReservedOpcode,
    /// §5.5: all control frames MUST have a payload length of 125 bytes or less.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooBig,
    /// §5.5: all control frames MUST NOT be fragmented.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// §5.4: a continuation frame needs a started, unfinished message.
    #[error("continuation frame without a started message")]
    ContinuationWithoutMessage,
    /// §5.4: the fragments of one message MUST NOT be interleaved with another message.
    #[error("new data frame while a fragmented message is open")]
    NewMessageWhileFragmented,
    /// §5.2: in the 64-bit length, the most significant bit MUST be 0.
    #[error("64-bit payload length with the top bit set")]
    LengthTopBitSet,
    /// §7.4.1 (1009): the message (sum of its fragments) is over `max_message_bytes`.
    #[error("message too big")]
    MessageTooBig,
    /// §8.1: a text message MUST be valid UTF-8; checked byte by byte as it arrives.
    #[error("invalid UTF-8 in text message")]
    InvalidUtf8InText,
    /// §5.5.1: a Close body, if any, starts with a 2-byte status code; 1 byte is malformed.
    #[error("close frame with a 1-byte payload")]
    CloseFrameOneByte,
    /// §7.4: the close status code is not one an endpoint may send.
    #[error("invalid close code")]
    InvalidCloseCode,
    /// §5.5.1: the close reason MUST be valid UTF-8 (Autobahn 7.5.1 expects 1007).
    #[error("invalid UTF-8 in close reason")]
    InvalidUtf8InCloseReason,
}

impl ProtocolError {
    /// The status code to put in our Close frame.
    pub const fn close_code(self) -> u16 {
        match self {
            Self::MessageTooBig => code::MESSAGE_TOO_BIG,
            Self::InvalidUtf8InText
            | Self::InvalidUtf8InCloseReason
            | Self::InvalidCompressedData => code::INVALID_PAYLOAD,
            _ => code::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the Close frame (well under the 123 bytes a Close reason may take).
    pub const fn reason(self) -> &'static str {
        match self {
            Self::UnmaskedFrameFromClient => "unmasked frame from client",
            Self::ReservedBitsSet => "reserved bits set",
            Self::ReservedOpcode => "reserved opcode",
            Self::CompressedBitMisplaced => "compressed bit on a control frame or continuation",
            Self::InvalidCompressedData => "invalid compressed data",
            Self::ControlFrameTooBig => "control frame too big",
            Self::FragmentedControlFrame => "fragmented control frame",
            Self::ContinuationWithoutMessage => "continuation without message",
            Self::NewMessageWhileFragmented => "new message while fragmented",
            Self::LengthTopBitSet => "payload length top bit set",
            Self::MessageTooBig => "message too big",
            Self::InvalidUtf8InText => "invalid utf-8 in text",
            Self::CloseFrameOneByte => "close frame of one byte",
            Self::InvalidCloseCode => "invalid close code",
            Self::InvalidUtf8InCloseReason => "invalid utf-8 in close reason",
        }
    }
}
