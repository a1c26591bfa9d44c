//! HTTP/1.1 request heads, query strings, chunked bodies and responses (sans-IO).
//!
//! Everything here is a pure function or a small state machine over byte slices the
//! caller owns: no sockets, no clocks, no monoio. The runtime reads bytes, hands them in,
//! and writes out whatever the encoders appended to its `Vec<u8>`.
//!
//! | step | item | limit enforced there |
//! |---|---|---|
//! | wait for the end of the head | [`HeadScanner`] / [`head_complete`] | [`HeadLimits::max_header_bytes`] |
//! | parse the head | [`parse_request`] → [`RequestHead`] | header bytes, 64 header lines |
//! | decide how the body is framed | [`RequestHead::body`] → [`Body`] | `max_body_bytes` against `Content-Length` |
//! | decode a chunked body | [`ChunkedDecoder`] | `max_body_bytes` at the chunk-size digit, size line, extensions, trailers |
//! | read the query | [`query_pairs`] | none (borrows, allocates only to decode) |
//! | answer | [`write_response`], [`write_head`], [`error_response`] | none |
//! | all of the above, per connection | [`Connection`] | every limit above, the header and body deadlines, answer order |
//!
//! Every failure is one [`HttpError`]: a `Copy` value that knows its status code and the
//! one-line reason the server puts in the body before it closes the connection.

mod chunked;
mod connection;
mod error;
mod head;
mod query;
mod response;

pub use chunked::ChunkedDecoder;
pub use connection::{Close, Config, Connection, Event, RequestId, Response, MAX_UNANSWERED};
pub use error::HttpError;
pub use head::{
    bearer_token, cookie_value, head_complete, parse_request, Body, HeadLimits, HeadScanner,
    Method, RequestHead, MAX_HEADERS,
};
pub use query::{query_pairs, query_text, QueryPairs};
pub use response::{error_response, status_text, write_head, write_response, CONTINUE};
