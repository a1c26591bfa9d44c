//! RFC 6455 WebSocket: handshake, frame codec and close handshake (sans-IO).
//!
//! - [`handshake`]: checks the upgrade request's headers, computes the accept key,
//!   writes the `101` response.
//! - [`frame`]: the header codec, the server frame encoder (never masked) and masking.
//! - [`decoder`]: the incremental decoder of client frames into messages (it
//!   inflates compressed ones).
//! - [`deflate`]: permessage-deflate (RFC 7692): the offer and the answer, a server
//!   message compressed on its own, the bounded inflate of a client message.
//! - [`utf8`]: streaming UTF-8 validation that fails at the first bad byte.
//! - [`close`]: close status codes and the Close body.
//! - [`conn`]: the connection's close handshake state machine around the decoder.
//!
//! Nothing here reads a clock or touches a socket.

pub mod close;
pub mod conn;
pub mod decoder;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod utf8;

pub use conn::{Connection, Tick};
pub use decoder::{ControlPayload, Decoded, Decoder, Event};
pub use error::ProtocolError;
pub use frame::{
    encode_close, encode_frame, encode_ping, encode_pong, encoded_len, text_frame, OpCode,
};
pub use handshake::{
    accept_key, check_handshake, write_101, AcceptKey, HandshakeError, HandshakeRequest,
};

#[cfg(test)]
mod deflate_tests;
#[cfg(test)]
mod tests;
