//! HTTP/1.1 responses, appended to the caller's output buffer.
//!
//! Appending to a `Vec` cannot fail half-way, so these encoders are all-or-nothing by
//! construction (STYLE rule 3) without a `NoSpace` error. Header names and values come
//! from the server, never from the peer; a CR or LF in one is a programmer error caught
//! by a `debug_assert!`.

use super::HttpError;

/// The interim response to `Expect: 100-continue`: send it before reading the body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase for `code`, or `""` for a code ringcast does not use (the phrase is
/// optional: RFC 9112 §4 `status-line = HTTP-version SP status-code SP [ reason-phrase ]`).
pub fn status_text(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends a response head without framing headers: status line, `headers` in order,
/// and the empty line. For responses whose body is a stream or another protocol (`200`
/// `text/event-stream`, `101 Switching Protocols`); everything else uses
/// [`write_response`].
pub fn write_head(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    status_line(out, status);
    for &(name, value) in headers {
        header(out, name, value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete response: status line, `extra_headers`, `Content-Type` (omitted
/// when empty), `Content-Length`, `Connection: close` unless `keep_alive`, and `body`.
///
/// `1xx`, `204` and `304` responses get no `Content-Length` ("A server MUST NOT send a
/// Content-Length header field in any response with a status code of 1xx
/// (Informational) or 204 (No Content)", RFC 9110 §8.6) and must have an empty body.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) {
    write_parts(
        out,
        status,
        extra_headers,
        content_type,
        &[body],
        keep_alive,
    );
}

/// Appends the response for a refused request: `err`'s status, its reason and a newline
/// as a `text/plain` body, and `Connection: close` (after a framing error the next
/// request cannot be found, so the connection must end).
pub fn error_response(out: &mut Vec<u8>, err: HttpError) {
    let retry: &[(&str, &str)] = match err {
        HttpError::InboundBudget => &[("Retry-After", "1")],
        _ => &[],
    };
    write_parts(
        out,
        err.status(),
        retry,
        "text/plain; charset=utf-8",
        &[err.reason().as_bytes(), b"\n"],
        false,
    );
}

fn write_parts(
    out: &mut Vec<u8>,
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[&[u8]],
    keep_alive: bool,
) {
    let body_len: usize = body.iter().map(|part| part.len()).sum();
    let bodiless = status < 200 || status == 204 || status == 304;
    debug_assert!(
        !bodiless || body_len == 0,
        "status {status} must not carry a body, got {body_len} bytes"
    );
    status_line(out, status);
    for &(name, value) in extra_headers {
        header(out, name, value.as_bytes());
    }
    if !content_type.is_empty() {
        header(out, "Content-Type", content_type.as_bytes());
    }
    if !bodiless {
        let mut digits = [0u8; 20];
        header(out, "Content-Length", decimal(body_len as u64, &mut digits));
    }
    if !keep_alive {
        header(out, "Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    for part in body {
        out.extend_from_slice(part);
    }
}

fn status_line(out: &mut Vec<u8>, status: u16) {
    debug_assert!(
        (100..=999).contains(&status),
        "status code {status} is not three digits"
    );
    let mut digits = [0u8; 20];
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(decimal(u64::from(status), &mut digits));
    out.push(b' ');
    out.extend_from_slice(status_text(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    debug_assert!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
        "header name {name:?} is not a token"
    );
    debug_assert!(
        !value.iter().any(|&b| b == b'\r' || b == b'\n'),
        "header {name} value {value:x?} holds CR or LF"
    );
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn a_keep_alive_response_has_length_and_no_connection_header() {
        let mut out = b"previous".to_vec();
        write_response(
            &mut out,
            202,
            &[("Cache-Control", "no-store")],
            "application/json",
            b"{\"id\":\"1\"}",
            true,
        );
        assert_eq!(
            text(&out),
            "previousHTTP/1.1 202 Accepted\r\nCache-Control: no-store\r\n\
             Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"id\":\"1\"}"
        );
    }

    #[test]
    fn a_closing_response_says_connection_close() {
        let mut out = Vec::new();
        write_response(&mut out, 503, &[], "text/plain", b"draining\n", false);
        assert_eq!(
            text(&out),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
             Content-Length: 9\r\nConnection: close\r\n\r\ndraining\n"
        );
    }

    #[test]
    fn no_content_responses_carry_no_length() {
        let mut out = Vec::new();
        write_response(&mut out, 204, &[], "", b"", true);
        assert_eq!(text(&out), "HTTP/1.1 204 No Content\r\n\r\n");
        let mut out = Vec::new();
        write_response(&mut out, 200, &[], "", b"", true);
        assert_eq!(text(&out), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn error_responses_name_the_rule_and_close() {
        let mut out = Vec::new();
        error_response(&mut out, HttpError::ConflictingContentLength);
        assert_eq!(
            text(&out),
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 34\r\nConnection: close\r\n\r\nconflicting Content-Length values\n"
        );
        let mut out = Vec::new();
        error_response(&mut out, HttpError::HeadTooLarge);
        assert!(text(&out).starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    }

    #[test]
    fn a_head_for_a_stream_has_no_framing_headers() {
        let mut out = Vec::new();
        write_head(
            &mut out,
            101,
            &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        );
    }

    #[test]
    fn every_status_the_server_uses_has_a_reason_phrase() {
        for code in [
            100, 101, 200, 202, 204, 400, 401, 403, 404, 405, 408, 411, 413, 414, 426, 429, 431,
            500, 501, 503, 505,
        ] {
            assert!(!status_text(code).is_empty(), "{code}");
        }
        assert_eq!(status_text(299), "");
    }

    #[test]
    fn decimal_writes_every_width() {
        let mut buf = [0u8; 20];
        for n in [0, 9, 10, 99, 100, 12345, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn every_error_has_a_4xx_or_5xx_status_with_a_phrase_and_a_reason() {
        use HttpError::*;
        for err in [
            HeadTooLarge,
            UriTooLong,
            TooManyHeaders,
            MalformedRequestLine,
            TargetNotUtf8,
            BadRequestTarget,
            MalformedHeaderField,
            BadSyntax,
            UnsupportedVersion,
            MissingHost,
            DuplicateSingletonField,
            InvalidContentLength,
            ConflictingContentLength,
            ContentLengthWithTransferEncoding,
            TransferEncodingOnHttp10,
            ChunkedNotFinal,
            UnsupportedTransferEncoding,
            LengthRequired,
            BodyTooLarge,
            BadChunkSize,
            BadChunkFraming,
            ChunkExtensionsTooLong,
            TrailersTooLarge,
            QueryNotUtf8,
        ] {
            assert!((400..600).contains(&err.status()), "{err:?}");
            assert!(!status_text(err.status()).is_empty(), "{err:?}");
            assert!(
                !err.reason().is_empty() && !err.reason().contains('\n'),
                "{err:?}"
            );
            assert_eq!(err.to_string(), err.reason());
        }
    }
}
