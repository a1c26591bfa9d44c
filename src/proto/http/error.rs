//! The one error type of the HTTP layer.

/// Why a request was refused. Every variant is the peer's fault (a malformed or
/// oversized request): answer with [`error_response`](super::error_response), which
/// writes [`status`](Self::status), [`reason`](Self::reason) and `Connection: close`,
/// then close the connection, because after a framing error the next request cannot be
/// found reliably.
///
/// Variants are named after the rule the request broke, so a grep leads from the RFC
/// text to the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub enum HttpError {
    /// Peer: the request head did not end within `max_header_bytes` (431).
    HeadTooLarge,
    /// Peer: the request line alone did not end within `max_header_bytes` (414).
    UriTooLong,
    /// Peer: more header lines than [`MAX_HEADERS`](super::MAX_HEADERS) (431).
    TooManyHeaders,
    /// Peer: the method or the request target is not a valid token (400).
    MalformedRequestLine,
    /// Peer: the request target is not valid UTF-8 (400).
    TargetNotUtf8,
    /// Peer: the request target is neither origin-form (`/p?q`), absolute-form
    /// (`http://h/p`) nor `OPTIONS *` (400).
    BadRequestTarget,
    /// Peer: a header name or value holds forbidden bytes (400).
    MalformedHeaderField,
    /// Peer: a line ending or the head's structure is broken (400).
    BadSyntax,
    /// Peer: the version is not HTTP/1.0 or HTTP/1.1 (505).
    UnsupportedVersion,
    /// Peer: an HTTP/1.1 request without `Host` (400, RFC 9112 §3.2).
    MissingHost,
    /// Peer: a field that must appear once appeared twice (400): `Host` (RFC 9112 §3.2),
    /// `Cookie` (RFC 6265 §5.4), and the fields a second copy of which could make two
    /// readers of the same request disagree: `Authorization`, `Origin`, `Last-Event-ID`,
    /// `Sec-WebSocket-Key`, `Sec-WebSocket-Version`. (Repeated `Content-Length` is
    /// [`ConflictingContentLength`](Self::ConflictingContentLength) when the values
    /// differ, and fine when they agree.)
    DuplicateSingletonField,
    /// Peer: `Content-Length` is not `1*DIGIT` or does not fit in 64 bits (400).
    InvalidContentLength,
    /// Peer: several `Content-Length` values that differ (400, RFC 9110 §8.6).
    ConflictingContentLength,
    /// Peer: both `Content-Length` and `Transfer-Encoding` (400, RFC 9112 §6.1: a
    /// request smuggling attempt until proven otherwise).
    ContentLengthWithTransferEncoding,
    /// Peer: `Transfer-Encoding` on an HTTP/1.0 request, whose framing is then faulty
    /// (400, RFC 9112 §6.1).
    TransferEncodingOnHttp10,
    /// Peer: `Transfer-Encoding` whose final coding is not `chunked`, or which applies
    /// `chunked` twice, so the body length cannot be determined (400, RFC 9112 §6.3).
    ChunkedNotFinal,
    /// Peer: a transfer coding other than `chunked`, such as `gzip, chunked` (501,
    /// RFC 9112 §6.1: "SHOULD respond with 501 (Not Implemented)").
    UnsupportedTransferEncoding,
    /// Peer: a request that needs a body came without `Content-Length` or chunked
    /// framing (411). Returned by the caller's routing, never by the parser.
    LengthRequired,
    /// Peer: the body is longer than `max_body_bytes` (413). Detected from
    /// `Content-Length` before any body byte is read, or from the chunk-size digit that
    /// pushes the total over.
    BodyTooLarge,
    /// Peer: a chunk-size line is not `1*HEXDIG [ chunk-ext ] CRLF`, or the size does not
    /// fit in 64 bits (400).
    BadChunkSize,
    /// Peer: chunk data not followed by CRLF, or a bare LF in chunked framing (400).
    BadChunkFraming,
    /// Peer: chunk extensions longer than the decoder allows in one body (400). They are
    /// ignored, so they only cost us bandwidth.
    ChunkExtensionsTooLong,
    /// Peer: the chunked trailer section is longer than the decoder allows (431).
    TrailersTooLarge,
    /// Peer: a query key or value that is not UTF-8 after percent-decoding (400).
    QueryNotUtf8,
    /// Peer: part of a request head came, but not all of it by the header deadline
    /// (408, `--header-timeout`).
    HeadTimeout,
    /// Peer: a request body did not arrive whole by the body deadline, however many
    /// bytes trickled in meanwhile (408, `--body-timeout`).
    BodyTimeout,
    /// Server: buffering more of the body would overdraw the process-wide budget for
    /// partial input (503 with `Retry-After`, `--max-inbound-memory`). The one variant
    /// that is not the peer's fault; the connection still closes, since the rest of the
    /// body is not read.
    InboundBudget,
}

impl HttpError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        use HttpError::*;
        match self {
            HeadTooLarge | TooManyHeaders | TrailersTooLarge => 431,
            UriTooLong => 414,
            UnsupportedVersion => 505,
            UnsupportedTransferEncoding => 501,
            LengthRequired => 411,
            HeadTimeout | BodyTimeout => 408,
            InboundBudget => 503,
            BodyTooLarge => 413,
            MalformedRequestLine
            | TargetNotUtf8
            | BadRequestTarget
            | MalformedHeaderField
            | BadSyntax
            | MissingHost
            | DuplicateSingletonField
            | InvalidContentLength
            | ConflictingContentLength
            | ContentLengthWithTransferEncoding
            | TransferEncodingOnHttp10
            | ChunkedNotFinal
            | BadChunkSize
            | BadChunkFraming
            | ChunkExtensionsTooLong
            | QueryNotUtf8 => 400,
        }
    }

    /// One human line naming the broken rule; the body of the error response.
    pub fn reason(self) -> &'static str {
        use HttpError::*;
        match self {
            HeadTooLarge => "request head exceeds the header size limit",
            UriTooLong => "request line exceeds the header size limit",
            TooManyHeaders => "too many header fields",
            MalformedRequestLine => "malformed request line: invalid method or target",
            TargetNotUtf8 => "request target is not valid UTF-8",
            BadRequestTarget => "request target must be origin-form, absolute-form or *",
            MalformedHeaderField => "malformed header field name or value",
            BadSyntax => "malformed request head",
            UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are supported",
            MissingHost => "HTTP/1.1 request without Host header",
            DuplicateSingletonField => "a header field that must appear once appears twice",
            InvalidContentLength => "Content-Length must be a decimal number",
            ConflictingContentLength => "conflicting Content-Length values",
            ContentLengthWithTransferEncoding => {
                "both Content-Length and Transfer-Encoding are present"
            }
            TransferEncodingOnHttp10 => "Transfer-Encoding is not allowed in HTTP/1.0",
            ChunkedNotFinal => "Transfer-Encoding must end with a single chunked",
            UnsupportedTransferEncoding => "only the chunked transfer coding is supported",
            LengthRequired => "request body needs Content-Length or chunked encoding",
            BodyTooLarge => "request body exceeds the body size limit",
            InboundBudget => "the server's memory for request bodies is spent: retry later",
            BadChunkSize => "malformed chunk size line",
            BadChunkFraming => "chunk data must be followed by CRLF",
            ChunkExtensionsTooLong => "chunk extensions too long",
            TrailersTooLarge => "chunked trailer section too large",
            QueryNotUtf8 => "query string is not valid UTF-8 after percent-decoding",
            HeadTimeout => "request head not received within --header-timeout",
            BodyTimeout => "request body not received within --body-timeout",
        }
    }
}
