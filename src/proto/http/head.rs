//! Request heads: the incremental end-of-head scan, httparse, and the header fields the
//! server needs, extracted once and borrowed from the caller's buffer.

use super::HttpError;

/// Header lines [`parse_request`] accepts; one more is [`HttpError::TooManyHeaders`].
/// Browsers send 10–20; 64 leaves room for proxies and costs 2 KiB of stack.
pub const MAX_HEADERS: usize = 64;

/// Limits on a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request head accepted, request line and final empty line included
    /// (`--max-header-bytes`). A head of exactly this many bytes is accepted; a buffer of
    /// this many bytes that still holds no complete head is [`HttpError::HeadTooLarge`].
    pub max_header_bytes: usize,
}

impl Default for HeadLimits {
    /// 8 KiB, the `--max-header-bytes` default.
    fn default() -> Self {
        Self {
            max_header_bytes: 8 * 1024,
        }
    }
}

/// The request method. Method tokens are case-sensitive (RFC 9110 §9.1), so `get` is
/// [`Method::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method<'b> {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `OPTIONS`
    Options,
    /// Any other token, as sent (the server answers 405).
    Other(&'b str),
}

impl<'b> Method<'b> {
    fn from_token(token: &'b str) -> Self {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "OPTIONS" => Method::Options,
            other => Method::Other(other),
        }
    }

    /// The method token.
    pub fn as_str(&self) -> &'b str {
        match *self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Options => "OPTIONS",
            Method::Other(token) => token,
        }
    }
}

/// How the request body is framed (RFC 9112 §6.3), from [`RequestHead::body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Neither `Content-Length` nor `Transfer-Encoding`: the body is empty. A route that
    /// needs a body answers [`HttpError::LengthRequired`].
    Absent,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows the head: feed it to a [`ChunkedDecoder`](super::ChunkedDecoder).
    Chunked,
}

/// A parsed request head. It borrows the buffer it was parsed from; a caller that must
/// give the buffer back (an io_uring ring buffer) copies out what it needs first.
///
/// Header names are matched case-insensitively and values have surrounding spaces and
/// tabs removed. The raw header list is not kept: what the server needs is here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'b> {
    /// The request method.
    pub method: Method<'b>,
    /// The target's path, before `?`, still percent-encoded: `/sse`. For absolute-form
    /// targets (`http://host/p?q`) this is the path part (`/p`, or `/` when empty); for
    /// `OPTIONS *` it is `*`.
    pub path: &'b str,
    /// The target's query, after the first `?`, still encoded; empty if none. Read it
    /// with [`query_pairs`](super::query_pairs).
    pub query: &'b str,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// Length of the head, final empty line included: the body starts at `buf[head_len..]`.
    pub head_len: usize,
    /// The `Content-Length` value (identical duplicates folded into one).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`. Checked: it is the only coding, applied once, on
    /// HTTP/1.1, without `Content-Length`.
    pub chunked: bool,
    /// Whether the connection may carry another request after this one: HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive` (and no `close`).
    pub keep_alive: bool,
    /// `Connection` lists the `upgrade` token (the field is a token list: Firefox sends
    /// `keep-alive, Upgrade`).
    pub connection_upgrade: bool,
    /// `Upgrade` lists the `websocket` token (any case).
    pub upgrade_websocket: bool,
    /// `Sec-WebSocket-Key`, raw (the WebSocket handshake validates it).
    pub ws_key: Option<&'b [u8]>,
    /// `Sec-WebSocket-Version`, raw.
    pub ws_version: Option<&'b [u8]>,
    /// The first `Sec-WebSocket-Extensions` line, raw. ringcast negotiates no extension;
    /// this is here for logging.
    pub ws_extensions: Option<&'b [u8]>,
    /// `Origin`, raw.
    pub origin: Option<&'b [u8]>,
    /// `Authorization`, raw; see [`RequestHead::bearer`].
    pub authorization: Option<&'b [u8]>,
    /// `Cookie`, raw; see [`RequestHead::cookie`].
    pub cookie: Option<&'b [u8]>,
    /// `Last-Event-ID`, raw (the SSE resume cursor).
    pub last_event_id: Option<&'b [u8]>,
    /// `Expect: 100-continue`: the client waits for [`CONTINUE`](super::CONTINUE) before
    /// it sends the body. Other expectations are ignored (RFC 9110 §10.1.1 allows a 417
    /// but does not require it).
    pub expect_continue: bool,
    /// `Host`, raw. Always present on HTTP/1.1 ([`HttpError::MissingHost`] otherwise).
    pub host: Option<&'b [u8]>,
}

impl<'b> RequestHead<'b> {
    /// How the body is framed, with `max_body_bytes` enforced against `Content-Length`
    /// before any body byte is read. For chunked bodies, give the same limit to
    /// [`ChunkedDecoder::new`](super::ChunkedDecoder::new).
    pub fn body(&self, max_body_bytes: u64) -> Result<Body, HttpError> {
        if self.chunked {
            return Ok(Body::Chunked);
        }
        match self.content_length {
            None => Ok(Body::Absent),
            Some(len) if len > max_body_bytes => Err(HttpError::BodyTooLarge),
            Some(len) => Ok(Body::Length(len)),
        }
    }

    /// `GET` with `Connection: upgrade` and `Upgrade: websocket`: a WebSocket opening
    /// handshake (its key and version are checked by the WebSocket layer).
    pub fn is_websocket_upgrade(&self) -> bool {
        self.method == Method::Get && self.connection_upgrade && self.upgrade_websocket
    }

    /// The value of the cookie `name`, if the request carries it; see [`cookie_value`].
    pub fn cookie(&self, name: &[u8]) -> Option<&'b [u8]> {
        cookie_value(self.cookie?, name)
    }

    /// The token of `Authorization: Bearer <token>`; see [`bearer_token`].
    pub fn bearer(&self) -> Option<&'b [u8]> {
        bearer_token(self.authorization?)
    }
}

/// Where the request head ends in `buf`, if it does: the index just past the empty line
/// that ends it. Only `buf[scanned_from - 2..]` is searched, so a caller that remembers
/// how far it got (`scanned_from = previous buf.len()`) scans every byte about once
/// instead of re-parsing the whole head on every read (STYLE rule 8).
///
/// The end of a head is an empty line: LF, an optional CR, LF. That covers CRLF and the
/// bare LF line endings httparse accepts (RFC 9112 §2.2). No byte of a valid head
/// before its end can match, so `Some` means "worth parsing"; it can still be early when
/// the head starts with the empty lines RFC 9112 §2.2 lets a server skip, in which case
/// [`parse_request`] answers `Ok(None)` and scanning goes on. [`HeadScanner`] does this
/// bookkeeping.
pub fn head_complete(buf: &[u8], scanned_from: usize) -> Option<usize> {
    // A terminator is at most 3 bytes (`\n\r\n`); one that straddles the previous end
    // starts at most 2 bytes before it.
    let mut from = scanned_from.min(buf.len()).saturating_sub(2);
    while let Some(offset) = buf[from..].iter().position(|&b| b == b'\n') {
        let lf = from + offset;
        match buf.get(lf + 1..lf + 3) {
            Some([b'\n', _]) => return Some(lf + 2),
            Some(b"\r\n") => return Some(lf + 3),
            None if buf.get(lf + 1) == Some(&b'\n') => return Some(lf + 2),
            _ => {}
        }
        from = lf + 1;
    }
    None
}

/// Incremental front end for [`parse_request`]: remembers how far it has scanned for the
/// end of the head so each read costs only its new bytes, and parses once the end is
/// there.
///
/// Call order: [`parse`](Self::parse) after every read with the whole buffered input
/// (which starts at the request); on `Ok(None)` read more; on `Ok(Some(head))` the scanner
/// is reset for the next request, which starts at `buf[head.head_len..]` once the body
/// has been consumed. Call [`reset`](Self::reset) if the buffer is replaced in any other
/// way.
#[derive(Debug, Clone, Default)]
pub struct HeadScanner {
    /// Bytes of the current request already searched for the end of the head.
    scanned: usize,
}

impl HeadScanner {
    /// A scanner at the start of a request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the scan position: the buffer now starts at a new request.
    pub fn reset(&mut self) {
        self.scanned = 0;
    }

    /// Like [`parse_request`], but only parses when the bytes since the last call hold the
    /// end of the head. Same limits, and the same result once the head has ended or the
    /// limit is reached; before that, a syntax error in the early bytes waits for one of
    /// the two (the header timeout bounds the wait).
    pub fn parse<'b>(
        &mut self,
        buf: &'b [u8],
        limits: &HeadLimits,
    ) -> Result<Option<RequestHead<'b>>, HttpError> {
        let window = &buf[..buf.len().min(limits.max_header_bytes)];
        if head_complete(window, self.scanned).is_some() {
            if let Some(head) = parse_request(buf, limits)? {
                self.scanned = 0;
                return Ok(Some(head));
            }
        }
        self.scanned = window.len();
        incomplete(window, limits)
    }
}

/// Parses the request head at the start of `buf`.
///
/// Returns `Ok(None)` when the head is not complete yet (read more; nothing is consumed),
/// `Ok(Some(head))` with [`RequestHead::head_len`] the bytes consumed, or the rule the
/// request broke. Bytes after the head (body, pipelined requests) are not looked at.
///
/// Limits, each at the earliest byte that reveals it: only the first
/// `limits.max_header_bytes` bytes are ever parsed, so a head that has not ended by then
/// is [`HttpError::HeadTooLarge`] ([`HttpError::UriTooLong`] if the request line has not
/// ended either) as soon as that many bytes are buffered; more than [`MAX_HEADERS`]
/// header lines is [`HttpError::TooManyHeaders`].
///
/// Each call parses from the start. Calling it after every read is correct but costs
/// O(n²) over a head that trickles in byte by byte; [`HeadScanner`] avoids that.
pub fn parse_request<'b>(
    buf: &'b [u8],
    limits: &HeadLimits,
) -> Result<Option<RequestHead<'b>>, HttpError> {
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return incomplete(window, limits),
        Err(err) => return Err(from_httparse(err, window)),
    };
    // httparse fills all three before it reports Complete.
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HttpError::BadSyntax);
    };
    let method = Method::from_token(method);
    let (path, query) = split_target(method, target)?;

    let mut fields = Fields::default();
    for header in req.headers.iter() {
        fields.add(header.name.as_bytes(), trim_ows(header.value))?;
    }
    fields.finish(minor_version)?;

    Ok(Some(RequestHead {
        method,
        path,
        query,
        minor_version,
        head_len,
        content_length: fields.content_length,
        chunked: fields.te_seen,
        keep_alive: if minor_version == 0 {
            fields.conn_keep_alive && !fields.conn_close
        } else {
            !fields.conn_close
        },
        connection_upgrade: fields.conn_upgrade,
        upgrade_websocket: fields.upgrade_websocket,
        ws_key: fields.ws_key,
        ws_version: fields.ws_version,
        ws_extensions: fields.ws_extensions,
        origin: fields.origin,
        authorization: fields.authorization,
        cookie: fields.cookie,
        last_event_id: fields.last_event_id,
        expect_continue: fields.expect_continue,
        host: fields.host,
    }))
}

/// The answer for a head that has not ended within `window` (the buffer cut at the
/// limit): wait for more bytes, or refuse once the window is full.
fn incomplete<'b>(
    window: &[u8],
    limits: &HeadLimits,
) -> Result<Option<RequestHead<'b>>, HttpError> {
    if window.len() < limits.max_header_bytes {
        Ok(None)
    } else if window.contains(&b'\n') {
        Err(HttpError::HeadTooLarge)
    } else {
        Err(HttpError::UriTooLong)
    }
}

fn from_httparse(err: httparse::Error, window: &[u8]) -> HttpError {
    match err {
        // httparse reports a target that is not UTF-8 as a bad token; tell them apart so
        // the client learns which rule it broke.
        httparse::Error::Token if target_is_not_utf8(window) => HttpError::TargetNotUtf8,
        httparse::Error::Token => HttpError::MalformedRequestLine,
        httparse::Error::HeaderName | httparse::Error::HeaderValue => {
            HttpError::MalformedHeaderField
        }
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        httparse::Error::Version => HttpError::UnsupportedVersion,
        httparse::Error::NewLine | httparse::Error::Status => HttpError::BadSyntax,
    }
}

/// Whether the second word of the request line holds an invalid UTF-8 sequence (a
/// sequence merely cut off by the end of `window` does not count).
fn target_is_not_utf8(window: &[u8]) -> bool {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let line = window[start..].split(|&b| b == b'\n').next().unwrap_or(&[]);
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or(&[]);
    matches!(std::str::from_utf8(target), Err(e) if e.error_len().is_some())
}

/// Splits a request target into path and query (RFC 9112 §3.2).
fn split_target<'b>(method: Method<'b>, target: &'b str) -> Result<(&'b str, &'b str), HttpError> {
    let (before, query) = target.split_once('?').unwrap_or((target, ""));
    if before.starts_with('/') {
        return Ok((before, query));
    }
    // "asterisk-form ... is only used for a server-wide OPTIONS request".
    if target == "*" && method == Method::Options {
        return Ok(("*", ""));
    }
    // "a server MUST accept the absolute-form in requests even though most HTTP/1.1
    // clients will only send the absolute-form to a proxy."
    let Some(rest) = strip_prefix_ignore_case(before, "http://")
        .or_else(|| strip_prefix_ignore_case(before, "https://"))
    else {
        return Err(HttpError::BadRequestTarget);
    };
    match rest.find('/') {
        Some(0) => Err(HttpError::BadRequestTarget),
        Some(slash) => Ok((&rest[slash..], query)),
        None if rest.is_empty() => Err(HttpError::BadRequestTarget),
        None => Ok(("/", query)),
    }
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Header fields as they are folded in, one line at a time.
#[derive(Default)]
struct Fields<'b> {
    content_length: Option<u64>,
    /// Some `Transfer-Encoding` line was seen.
    te_seen: bool,
    /// The last coding seen is `chunked`.
    te_last_chunked: bool,
    /// How many times `chunked` was listed.
    te_chunked: u32,
    /// A coding other than `chunked` was listed.
    te_other: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    conn_upgrade: bool,
    upgrade_websocket: bool,
    expect_continue: bool,
    host: Option<&'b [u8]>,
    ws_key: Option<&'b [u8]>,
    ws_version: Option<&'b [u8]>,
    ws_extensions: Option<&'b [u8]>,
    origin: Option<&'b [u8]>,
    authorization: Option<&'b [u8]>,
    cookie: Option<&'b [u8]>,
    last_event_id: Option<&'b [u8]>,
}

impl<'b> Fields<'b> {
    fn add(&mut self, name: &[u8], value: &'b [u8]) -> Result<(), HttpError> {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        if is("content-length") {
            self.content_length = Some(parse_content_length(value, self.content_length)?);
        } else if is("transfer-encoding") {
            self.add_transfer_coding(value);
        } else if is("connection") {
            for token in tokens(value) {
                self.conn_close |= token.eq_ignore_ascii_case(b"close");
                self.conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                self.conn_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if is("upgrade") {
            self.upgrade_websocket |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if is("expect") {
            self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        } else if is("host") {
            // "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
            // request message that lacks a Host header field and to any request message
            // that contains more than one Host header field line" (RFC 9112 §3.2).
            set_once(&mut self.host, value)?;
        } else if is("sec-websocket-key") {
            set_once(&mut self.ws_key, value)?;
        } else if is("sec-websocket-version") {
            set_once(&mut self.ws_version, value)?;
        } else if is("sec-websocket-extensions") {
            self.ws_extensions.get_or_insert(value);
        } else if is("origin") {
            set_once(&mut self.origin, value)?;
        } else if is("authorization") {
            set_once(&mut self.authorization, value)?;
        } else if is("cookie") {
            // "the user agent MUST NOT attach more than one Cookie header field"
            // (RFC 6265 §5.4).
            set_once(&mut self.cookie, value)?;
        } else if is("last-event-id") {
            set_once(&mut self.last_event_id, value)?;
        }
        Ok(())
    }

    /// `Transfer-Encoding = #transfer-coding`, each `token *( OWS ";" OWS parameter )`;
    /// the field may be split over several lines, which concatenate in order.
    fn add_transfer_coding(&mut self, value: &[u8]) {
        self.te_seen = true;
        for coding in tokens(value) {
            let name = trim_ows(coding.split(|&b| b == b';').next().unwrap_or(&[]));
            if name.eq_ignore_ascii_case(b"chunked") {
                self.te_chunked += 1;
                self.te_last_chunked = true;
            } else {
                self.te_other = true;
                self.te_last_chunked = false;
            }
        }
    }

    /// The checks that need all lines.
    fn finish(&self, minor_version: u8) -> Result<(), HttpError> {
        if minor_version == 1 && self.host.is_none() {
            return Err(HttpError::MissingHost);
        }
        if !self.te_seen {
            return Ok(());
        }
        // "If a message is received with both a Transfer-Encoding and a Content-Length
        // header field, the Transfer-Encoding overrides the Content-Length. Such a message
        // might indicate an attempt to perform request smuggling ... A server MAY reject
        // a request that contains both ... and then close the connection" (RFC 9112
        // §6.1). We do: nothing legitimate sends both.
        if self.content_length.is_some() {
            return Err(HttpError::ContentLengthWithTransferEncoding);
        }
        // "A server or client that receives an HTTP/1.0 message containing a
        // Transfer-Encoding header field MUST treat the message as if the framing is
        // faulty" (RFC 9112 §6.1).
        if minor_version == 0 {
            return Err(HttpError::TransferEncodingOnHttp10);
        }
        // "If a Transfer-Encoding header field is present in a request and the chunked
        // transfer coding is not the final encoding, the message body length cannot be
        // determined reliably; the server MUST respond with the 400 (Bad Request)"
        // (RFC 9112 §6.3). "A sender MUST NOT apply the chunked transfer coding more
        // than once" (§7).
        if !self.te_last_chunked || self.te_chunked != 1 {
            return Err(HttpError::ChunkedNotFinal);
        }
        // "A server that receives a request message with a transfer coding it does not
        // understand SHOULD respond with 501 (Not Implemented)" (RFC 9112 §6.1).
        if self.te_other {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        Ok(())
    }
}

fn set_once<'b>(slot: &mut Option<&'b [u8]>, value: &'b [u8]) -> Result<(), HttpError> {
    match slot {
        Some(_) => Err(HttpError::DuplicateSingletonField),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// `Content-Length = 1*DIGIT`. "a recipient MAY either reject the message as invalid or
/// replace the duplicated field values with a single valid Content-Length field
/// containing that decimal value" (RFC 9110 §8.6): identical values, on one line as a
/// list or on several lines, fold into one; different values are refused.
fn parse_content_length(value: &[u8], previous: Option<u64>) -> Result<u64, HttpError> {
    let mut length = previous;
    for item in value.split(|&b| b == b',') {
        let n = parse_decimal(trim_ows(item)).ok_or(HttpError::InvalidContentLength)?;
        match length {
            Some(seen) if seen != n => return Err(HttpError::ConflictingContentLength),
            _ => length = Some(n),
        }
    }
    // `split` yields at least one item, and an empty one fails `parse_decimal`.
    length.ok_or(HttpError::InvalidContentLength)
}

/// `1*DIGIT` that fits in a `u64`; no sign, no spaces.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The elements of a comma-separated list field (`#token`), trimmed, empty ones skipped
/// (RFC 9110 §5.6.1: "a recipient MUST accept empty list elements").
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Removes optional whitespace (SP, HTAB) at both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The value of the cookie `name` in a `Cookie` header value (`a=1; b=2`), the first if
/// it appears twice. Names match exactly (cookie names are case-sensitive); surrounding
/// double quotes are removed from the value (RFC 6265 §4.1.1 `cookie-value`).
pub fn cookie_value<'b>(cookie: &'b [u8], name: &[u8]) -> Option<&'b [u8]> {
    cookie.split(|&b| b == b';').find_map(|pair| {
        let pair = trim_ows(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        if trim_ows(&pair[..eq]) != name {
            return None;
        }
        let value = trim_ows(&pair[eq + 1..]);
        Some(match value {
            [b'"', inner @ .., b'"'] => inner,
            _ => value,
        })
    })
}

/// The token of an `Authorization: Bearer <token>` value (RFC 6750 §2.1: `"Bearer" 1*SP
/// b64token`; the scheme is case-insensitive, RFC 9110 §11.1). `None` for another
/// scheme, an empty token, or bytes outside `b64token` (a JWT always fits).
pub fn bearer_token(authorization: &[u8]) -> Option<&[u8]> {
    let value = trim_ows(authorization);
    let space = value.iter().position(|&b| b == b' ')?;
    if !value[..space].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = trim_ows(&value[space..]);
    // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body_len = token
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)))
        .unwrap_or(token.len());
    let valid = body_len > 0 && token[body_len..].iter().all(|&b| b == b'=');
    valid.then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 8 * 1024,
    };

    fn parse(buf: &[u8]) -> Result<Option<RequestHead<'_>>, HttpError> {
        parse_request(buf, &LIMITS)
    }

    fn head(buf: &[u8]) -> RequestHead<'_> {
        match parse(buf) {
            Ok(Some(head)) => head,
            other => panic!(
                "{:?}: expected a head, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    /// `req!(bytes => Err(Variant))` or `req!(bytes => |head| assertions)`.
    macro_rules! req {
        ($buf:expr => Err($err:ident)) => {
            assert_eq!(
                parse($buf),
                Err(HttpError::$err),
                "{:?}",
                String::from_utf8_lossy($buf)
            );
        };
        ($buf:expr => |$h:ident| $body:expr) => {{
            let $h = head($buf);
            $body;
        }};
    }

    const SSE: &[u8] = b"GET /sse?topic=a&topic=b HTTP/1.1\r\n\
        Host: example.com\r\n\
        Accept: text/event-stream\r\n\
        Last-Event-ID: 7\r\n\
        Cookie: theme=dark; rc_token=\"abc.def\"\r\n\
        Authorization: Bearer eyJ.abc-_x.y==\r\n\
        \r\n";

    #[test]
    fn a_typical_sse_request_yields_every_field_the_server_needs() {
        let h = head(SSE);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/sse");
        assert_eq!(h.query, "topic=a&topic=b");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.head_len, SSE.len());
        assert_eq!(h.host, Some(&b"example.com"[..]));
        assert_eq!(h.last_event_id, Some(&b"7"[..]));
        assert_eq!(h.cookie(b"rc_token"), Some(&b"abc.def"[..]));
        assert_eq!(h.cookie(b"theme"), Some(&b"dark"[..]));
        assert_eq!(h.cookie(b"them"), None);
        assert_eq!(h.bearer(), Some(&b"eyJ.abc-_x.y=="[..]));
        assert!(h.keep_alive);
        assert!(!h.chunked);
        assert_eq!(h.content_length, None);
        assert_eq!(h.body(0), Ok(Body::Absent));
    }

    #[test]
    fn a_firefox_websocket_handshake_is_an_upgrade() {
        let buf = b"GET /ws?topic=a HTTP/1.1\r\nHost: h\r\n\
            Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Extensions: permessage-deflate\r\n\
            Origin: http://localhost:8080\r\n\r\n";
        let h = head(buf);
        assert!(h.is_websocket_upgrade());
        assert_eq!(h.ws_key, Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]));
        assert_eq!(h.ws_version, Some(&b"13"[..]));
        assert_eq!(h.ws_extensions, Some(&b"permessage-deflate"[..]));
        assert_eq!(h.origin, Some(&b"http://localhost:8080"[..]));
    }

    #[test]
    fn connection_is_read_as_a_case_insensitive_token_list() {
        // (Connection value, version, keep_alive, connection_upgrade)
        let cases: &[(&str, u8, bool, bool)] = &[
            ("keep-alive, Upgrade", 1, true, true),
            ("Upgrade", 1, true, true),
            ("upgrade", 1, true, true),
            ("UPGRADE ,\tkeep-alive", 1, true, true),
            ("close", 1, false, false),
            ("Close, Upgrade", 1, false, true),
            ("keep-alive", 0, true, false),
            ("KEEP-ALIVE", 0, true, false),
            ("keep-alive, close", 0, false, false),
            ("", 0, false, false),
            ("upgrades", 1, true, false),
            (",,", 1, true, false),
        ];
        for &(value, minor, keep_alive, upgrade) in cases {
            let buf = format!("GET / HTTP/1.{minor}\r\nHost: h\r\nConnection: {value}\r\n\r\n");
            let h = head(buf.as_bytes());
            assert_eq!(
                (h.keep_alive, h.connection_upgrade),
                (keep_alive, upgrade),
                "{value:?} on 1.{minor}"
            );
        }
        assert!(head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        // Tokens from several Connection lines add up.
        let h = head(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: upgrade\r\n\r\n",
        );
        assert!(h.connection_upgrade);
    }

    #[test]
    fn upgrade_is_read_as_a_token_list() {
        for (value, websocket) in [
            ("websocket", true),
            ("WebSocket", true),
            ("h2c, websocket", true),
            ("websockets", false),
            ("h2c", false),
        ] {
            let buf = format!("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: {value}\r\n\r\n");
            assert_eq!(
                head(buf.as_bytes()).upgrade_websocket,
                websocket,
                "{value:?}"
            );
        }
    }

    #[test]
    fn content_length_duplicates_fold_only_when_identical() {
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n" => |h| assert_eq!(h.content_length, Some(5)));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n" => |h| assert_eq!(h.content_length, Some(5)));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n" => |h| assert_eq!(h.content_length, Some(5)));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n" => Err(ConflictingContentLength));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n" => Err(ConflictingContentLength));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n" => Err(InvalidContentLength));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n" => Err(InvalidContentLength));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n" => Err(InvalidContentLength));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n" => Err(InvalidContentLength));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n" => Err(InvalidContentLength));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n" => Err(InvalidContentLength));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n" => |h| assert_eq!(h.content_length, Some(u64::MAX)));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n" => Err(InvalidContentLength));
    }

    #[test]
    fn transfer_encoding_must_be_exactly_chunked_and_alone() {
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" => |h| assert_eq!(h.body(10), Ok(Body::Chunked)));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n" => |h| assert!(h.chunked));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" => Err(ContentLengthWithTransferEncoding));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" => Err(ContentLengthWithTransferEncoding));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n" => Err(ChunkedNotFinal));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n" => Err(ChunkedNotFinal));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n" => Err(ChunkedNotFinal));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" => Err(ChunkedNotFinal));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n" => Err(ChunkedNotFinal));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" => Err(UnsupportedTransferEncoding));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" => Err(UnsupportedTransferEncoding));
        req!(b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" => Err(TransferEncodingOnHttp10));
    }

    #[test]
    fn malformed_heads_are_refused_naming_the_rule() {
        req!(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n" => Err(UnsupportedVersion));
        req!(b"GET / HTTP/1.1\r\n\r\n" => Err(MissingHost));
        req!(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n" => Err(DuplicateSingletonField));
        req!(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n" => Err(DuplicateSingletonField));
        req!(b"GET / HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: x\r\nsec-websocket-key: y\r\n\r\n" => Err(DuplicateSingletonField));
        req!(b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n" => Err(TargetNotUtf8));
        req!(b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n" => |h| assert_eq!(h.path, "/\u{e9}"));
        req!(b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n" => Err(MalformedRequestLine));
        req!(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n" => Err(MalformedRequestLine));
        req!(b"GET / HTTP/1.1\r\nHo st: h\r\n\r\n" => Err(MalformedHeaderField));
        req!(b"GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n" => Err(MalformedHeaderField));
        req!(b"GET / HTTP/1.1\rHost: h\r\n\r\n" => Err(BadSyntax));
        req!(b"GET sse HTTP/1.1\r\nHost: h\r\n\r\n" => Err(BadRequestTarget));
        req!(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n" => Err(BadRequestTarget));
        req!(b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n" => Err(BadRequestTarget));
        req!(b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n" => Err(BadRequestTarget));
    }

    #[test]
    fn request_targets_split_into_path_and_query() {
        for (target, path, query) in [
            ("/", "/", ""),
            ("/sse?", "/sse", ""),
            ("/sse?topic=a?b", "/sse", "topic=a?b"),
            ("/a%2Fb?x=%2F", "/a%2Fb", "x=%2F"),
            ("http://example.com/ws?topic=a", "/ws", "topic=a"),
            ("HTTPS://example.com", "/", ""),
            ("http://example.com?x=1", "/", "x=1"),
        ] {
            let buf = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let h = head(buf.as_bytes());
            assert_eq!((h.path, h.query), (path, query), "{target}");
        }
        let h = head(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((h.method, h.path), (Method::Options, "*"));
    }

    #[test]
    fn methods_are_case_sensitive_and_unknown_ones_keep_their_token() {
        for (token, method) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("OPTIONS", Method::Options),
            ("get", Method::Other("get")),
            ("DELETE", Method::Other("DELETE")),
        ] {
            let buf = format!("{token} / HTTP/1.1\r\nHost: h\r\n\r\n");
            let h = head(buf.as_bytes());
            assert_eq!(h.method, method);
            assert_eq!(h.method.as_str(), token);
        }
    }

    #[test]
    fn expect_continue_and_bare_lf_heads_are_understood() {
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n" => |h| assert!(h.expect_continue));
        req!(b"POST /p HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n" => |h| assert!(!h.expect_continue));
        req!(b"GET / HTTP/1.1\nHost: h\n\nbody" => |h| assert_eq!(h.head_len, 24));
        req!(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n" => |h| assert_eq!(h.head_len, 31));
    }

    #[test]
    fn every_strict_prefix_of_a_valid_head_is_incomplete() {
        for buf in [SSE, b"GET / HTTP/1.1\nHost: h\n\n"] {
            for end in 0..buf.len() {
                assert_eq!(parse(&buf[..end]), Ok(None), "prefix of {end} bytes");
                let mut scanner = HeadScanner::new();
                assert_eq!(
                    scanner.parse(&buf[..end], &LIMITS),
                    Ok(None),
                    "prefix of {end} bytes"
                );
            }
            assert_eq!(
                parse(buf).map(|h| h.map(|h| h.head_len)),
                Ok(Some(buf.len()))
            );
        }
    }

    #[test]
    fn the_scanner_agrees_with_parse_request_when_fed_one_byte_at_a_time() {
        let inputs: &[&[u8]] = &[
            SSE,
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\nHost: h\r\n\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
        ];
        for &buf in inputs {
            let mut scanner = HeadScanner::new();
            for end in 0..=buf.len() {
                assert_eq!(
                    scanner.parse(&buf[..end], &LIMITS),
                    parse(&buf[..end]),
                    "{end}"
                );
            }
        }
    }

    #[test]
    fn head_complete_finds_a_terminator_that_straddles_reads() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        for split in 0..buf.len() {
            let first = head_complete(&buf[..split], 0);
            let second = head_complete(buf, split);
            assert_eq!((first, second), (None, Some(buf.len())), "split at {split}");
        }
        assert_eq!(head_complete(b"a\n\n", 0), Some(3));
        assert_eq!(head_complete(b"a\n\r\n", 0), Some(4));
        assert_eq!(head_complete(b"a\r\n\rb\n", 0), None);
        assert_eq!(head_complete(b"", 10), None);
    }

    #[test]
    fn a_head_of_exactly_the_limit_passes_and_one_byte_more_fails() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nBODY";
        let exact = buf.len() - 4;
        let at = HeadLimits {
            max_header_bytes: exact,
        };
        let under = HeadLimits {
            max_header_bytes: exact - 1,
        };
        assert_eq!(parse_request(buf, &at).unwrap().unwrap().head_len, exact);
        assert_eq!(
            HeadScanner::new()
                .parse(buf, &at)
                .unwrap()
                .unwrap()
                .head_len,
            exact
        );
        assert_eq!(parse_request(buf, &under), Err(HttpError::HeadTooLarge));
        assert_eq!(
            HeadScanner::new().parse(buf, &under),
            Err(HttpError::HeadTooLarge)
        );
        // Incomplete: one byte short of the limit waits, at the limit fails.
        assert_eq!(parse_request(&buf[..exact - 2], &under), Ok(None));
        assert_eq!(
            parse_request(&buf[..exact - 1], &under),
            Err(HttpError::HeadTooLarge)
        );
        // The request line alone is too long: 414.
        assert_eq!(
            parse_request(
                b"GET /aaaa",
                &HeadLimits {
                    max_header_bytes: 9
                }
            ),
            Err(HttpError::UriTooLong)
        );
        assert_eq!(
            parse_request(
                b"GET /aaa",
                &HeadLimits {
                    max_header_bytes: 9
                }
            ),
            Ok(None)
        );
        assert_eq!(
            parse_request(
                b"",
                &HeadLimits {
                    max_header_bytes: 0
                }
            ),
            Err(HttpError::UriTooLong)
        );
    }

    #[test]
    fn sixty_four_headers_pass_and_sixty_five_fail() {
        let build = |n: usize| {
            let mut buf = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
            for i in 1..n {
                buf.push_str(&format!("X-{i}: v\r\n"));
            }
            buf + "\r\n"
        };
        assert!(parse(build(MAX_HEADERS).as_bytes()).unwrap().is_some());
        assert_eq!(
            parse(build(MAX_HEADERS + 1).as_bytes()),
            Err(HttpError::TooManyHeaders)
        );
    }

    #[test]
    fn content_length_over_the_body_limit_is_refused_before_the_body() {
        let h = head(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n");
        assert_eq!(h.body(11), Ok(Body::Length(11)));
        assert_eq!(h.body(10), Err(HttpError::BodyTooLarge));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let c = b"a=1; rc=tok;b=\"q\" ;  empty=; noeq; rc=second";
        assert_eq!(cookie_value(c, b"a"), Some(&b"1"[..]));
        assert_eq!(cookie_value(c, b"rc"), Some(&b"tok"[..]));
        assert_eq!(cookie_value(c, b"b"), Some(&b"q"[..]));
        assert_eq!(cookie_value(c, b"empty"), Some(&b""[..]));
        assert_eq!(cookie_value(c, b"noeq"), None);
        assert_eq!(cookie_value(c, b"RC"), None);
        assert_eq!(cookie_value(b"", b"a"), None);
    }

    #[test]
    fn bearer_tokens_need_the_scheme_in_any_case_and_a_b64token() {
        for (value, token) in [
            (&b"Bearer abc.def"[..], Some(&b"abc.def"[..])),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER   a+/b==", Some(b"a+/b==")),
            (b"Bearer", None),
            (b"Bearer ", None),
            (b"Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
            (b"Bearerabc", None),
            (b"Bearer a b", None),
            (b"Bearer ==", None),
            (b"Bearer a=b", None),
        ] {
            assert_eq!(
                bearer_token(value),
                token,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic_and_the_scanner_agrees_with_the_parser(
            buf in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            limit in 0usize..600,
            cut in 0usize..512,
        ) {
            let limits = HeadLimits { max_header_bytes: limit };
            let whole = parse_request(&buf, &limits);
            if let Ok(Some(h)) = &whole {
                proptest::prop_assert!(h.head_len <= limit.min(buf.len()));
            }
            // Fed in two reads, the scanner may wait where the parser already sees a
            // syntax error, but whenever either produces a head or the parser waits,
            // they agree.
            let mut scanner = HeadScanner::new();
            let first = scanner.parse(&buf[..cut.min(buf.len())], &limits);
            let last = if matches!(first, Ok(None)) { scanner.parse(&buf, &limits) } else { first };
            if whole.is_ok() || matches!(last, Ok(Some(_))) {
                proptest::prop_assert_eq!(&last, &whole);
            }
        }

        #[test]
        fn mutated_valid_heads_parse_the_same_whole_or_one_byte_at_a_time(
            at in 0usize..SSE.len(),
            byte in proptest::num::u8::ANY,
        ) {
            let mut buf = SSE.to_vec();
            buf[at] = byte;
            let whole = parse(&buf);
            let mut scanner = HeadScanner::new();
            let mut fed = Ok(None);
            for end in 0..=buf.len() {
                fed = scanner.parse(&buf[..end], &LIMITS);
                if !matches!(fed, Ok(None)) {
                    break;
                }
            }
            if whole.is_ok() || matches!(fed, Ok(Some(_))) {
                proptest::prop_assert_eq!(fed, whole);
            }
        }

        #[test]
        fn heads_with_random_header_values_never_panic(
            value in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            name in proptest::sample::select(vec![
                "Connection", "Upgrade", "Content-Length", "Transfer-Encoding",
                "Cookie", "Authorization", "Expect",
            ]),
        ) {
            let mut buf = format!("POST /p HTTP/1.1\r\nHost: h\r\n{name}: ").into_bytes();
            buf.extend_from_slice(&value);
            buf.extend_from_slice(b"\r\n\r\n");
            if let Ok(Some(h)) = parse(&buf) {
                let _ = (h.body(100), h.bearer(), h.cookie(b"a"));
            }
        }
    }
}
