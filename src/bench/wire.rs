//! The client side of the protocols, sans-IO: request heads, response heads, server
//! WebSocket frames, masked client frames and SSE `data:` lines.
//!
//! Like the server's codecs, every parser returns `Ok(None)` when it needs more
//! bytes and consumes nothing then; on success it says how many bytes it used.

use std::io::Write as _;
use std::ops::Range;

use crate::proto::ws::frame::{apply_mask, FrameHeader, OpCode};

/// The `Sec-WebSocket-Key` every bench client sends (a valid 16-byte nonce; the bench
/// does not need it to be unpredictable).
pub const WS_KEY: &str = "cmluZ2Nhc3QtYmVuY2gtMQ==";

/// Appends a WebSocket upgrade request, offering permessage-deflate when `deflate`.
pub fn write_ws_upgrade(out: &mut Vec<u8>, host: &str, path: &str, deflate: bool) {
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let _ = write!(
        out,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
}

/// Appends an SSE request, resuming after `last_event_id` when given (the header
/// EventSource sends when it reconnects).
pub fn write_sse_get(out: &mut Vec<u8>, host: &str, path: &str, last_event_id: Option<&str>) {
    let _ = write!(
        out,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\n"
    );
    if let Some(id) = last_event_id {
        let _ = write!(out, "Last-Event-ID: {id}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `path` with `lastEventId=<id>` added to its query: how a WebSocket client resumes.
pub fn with_last_event_id(path: &str, id: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}lastEventId={id}")
}

/// Longest id or cursor the bench keeps for a resume.
pub const MAX_RESUME_ID: usize = 512;

/// The id or cursor a server sent, when it is safe to send back as it is in a header
/// or a query: the charset ringcast's ids and cursors use (`0-9 a-z A-Z - . _ :`),
/// at most [`MAX_RESUME_ID`] bytes. Anything else is not kept: a peer's bytes never
/// reach a request line or header unchecked.
pub fn resume_id(raw: &[u8]) -> Option<&str> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_RESUME_ID
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    ok.then(|| std::str::from_utf8(raw).ok()).flatten()
}

/// The `"id"` of a ringcast envelope (`{"topic":"a","id":"<id>",...,"data":...}`).
pub fn envelope_id(msg: &[u8]) -> Option<&[u8]> {
    envelope_head_field(msg, b"\"id\":\"")
}

/// The `"event"` of a ringcast envelope (server events such as `ringcast.gap`).
pub fn envelope_event(msg: &[u8]) -> Option<&[u8]> {
    envelope_head_field(msg, b"\"event\":\"")
}

/// The string value after `key` (`"name":"`) in an envelope's head: the part before
/// `"data":`, which the envelope puts last, so nothing in the published data can be
/// taken for the key (a topic name cannot hold a quote either).
fn envelope_head_field<'m>(msg: &'m [u8], key: &[u8]) -> Option<&'m [u8]> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let head = &msg[..find(msg, b"\"data\":").unwrap_or(msg.len())];
    let at = find(head, key)? + key.len();
    let len = head[at..].iter().position(|&b| b == b'"')?;
    Some(&head[at..at + len])
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Bytes of the head, final empty line included.
    pub len: usize,
    pub content_length: Option<u64>,
    /// The `Sec-WebSocket-Accept` value matched the key sent.
    pub ws_accept_ok: bool,
}

/// Why a response could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed HTTP response head")]
    BadResponseHead,
    #[error("response head over 16 KiB")]
    ResponseHeadTooLarge,
    #[error("server sent a masked WebSocket frame (RFC 6455 §5.1: a server MUST NOT mask)")]
    MaskedFrameFromServer,
    #[error("reserved WebSocket opcode or bits from the server")]
    BadFrameFromServer,
    #[error("WebSocket message over the bench's 64 MiB limit")]
    MessageTooBig,
}

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest WebSocket message the bench reassembles.
pub const MAX_MESSAGE: u64 = 64 << 20;

/// Parses a response head at the start of `buf`.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            Err(WireError::ResponseHeadTooLarge)
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let status = resp.code.ok_or(WireError::BadResponseHead)?;
            let mut content_length = None;
            let mut ws_accept_ok = false;
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    content_length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                } else if h.name.eq_ignore_ascii_case("sec-websocket-accept") {
                    let want = crate::proto::ws::accept_key(WS_KEY.as_bytes());
                    ws_accept_ok = h.value.trim_ascii() == want.as_slice();
                }
            }
            Ok(Some(ResponseHead {
                status,
                len,
                content_length,
                ws_accept_ok,
            }))
        }
        Err(_) => Err(WireError::BadResponseHead),
    }
}

/// One frame from the server, its payload as a range of the parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Range<usize>,
    /// RSV1: a permessage-deflate message (the bench offers it only with
    /// `--ws-deflate`, and the server sends it only when agreed).
    pub compressed: bool,
}

/// Parses one complete server frame (header and payload) at the start of `buf`.
pub fn parse_server_frame(buf: &[u8]) -> Result<Option<(ServerFrame, usize)>, WireError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x30 != 0 {
        return Err(WireError::BadFrameFromServer);
    }
    let opcode = OpCode::from_nibble(b0 & 0x0F).map_err(|_| WireError::BadFrameFromServer)?;
    // RFC 6455 §5.1: "A server MUST NOT mask any frames that it sends to the client."
    if b1 & 0x80 != 0 {
        return Err(WireError::MaskedFrameFromServer);
    }
    let Some(head) = FrameHeader::announced_len(buf) else {
        return Ok(None);
    };
    if buf.len() < head {
        return Ok(None);
    }
    let len = match b1 & 0x7F {
        126 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        127 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&buf[2..10]);
            u64::from_be_bytes(be)
        }
        n => u64::from(n),
    };
    if len > MAX_MESSAGE {
        return Err(WireError::MessageTooBig);
    }
    let end = head + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let frame = ServerFrame {
        fin: b0 & 0x80 != 0,
        opcode,
        payload: head..end,
        compressed: b0 & 0x40 != 0,
    };
    Ok(Some((frame, end)))
}

/// Appends one masked client frame (§5.3: "a client MUST mask all frames that it
/// sends to the server").
pub fn write_client_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], key: [u8; 4]) {
    let header = FrameHeader {
        fin: true,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; crate::proto::ws::frame::MAX_HEADER_LEN];
    let n = header
        .encode(&mut head)
        .expect("MAX_HEADER_LEN fits every header");
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
}

/// A field's value: what follows the colon, less one leading space.
fn sse_value(v: &[u8]) -> &[u8] {
    v.strip_prefix(b" ").unwrap_or(v)
}

/// One SSE line the bench acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseLine<'a> {
    /// `data:`: one message (the bench's payloads never hold a line break, so an
    /// event never needs more than one data line).
    Data(&'a [u8]),
    /// `id:`: the event's id, the stream's last id once the event is dispatched.
    Id(&'a [u8]),
    /// `event:`: the event's name.
    Event(&'a [u8]),
    /// The blank line that ends (dispatches) an event block.
    Dispatch,
}

/// Calls `on_line` for every complete `data:`, `id:`, `event:` and blank line in
/// `buf` and returns the bytes consumed (up to and including the last line break).
/// Other fields and comments are skipped.
pub fn scan_sse_lines(buf: &[u8], mut on_line: impl FnMut(SseLine<'_>)) -> usize {
    let mut at = 0;
    while let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') {
        let mut line = &buf[at..at + nl];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.is_empty() {
            on_line(SseLine::Dispatch);
        } else if let Some(v) = line.strip_prefix(b"data:") {
            on_line(SseLine::Data(sse_value(v)));
        } else if let Some(v) = line.strip_prefix(b"id:") {
            on_line(SseLine::Id(sse_value(v)));
        } else if let Some(v) = line.strip_prefix(b"event:") {
            on_line(SseLine::Event(sse_value(v)));
        }
        at += nl + 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ws::frame::encode_frame;

    #[test]
    fn a_101_with_the_right_accept_key_is_recognized() {
        let accept = crate::proto::ws::accept_key(WS_KEY.as_bytes());
        let mut head =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: "
                .to_vec();
        head.extend_from_slice(&accept);
        head.extend_from_slice(b"\r\n\r\n\x81");
        let h = parse_response_head(&head).unwrap().unwrap();
        assert_eq!(
            (h.status, h.ws_accept_ok, h.len),
            (101, true, head.len() - 1)
        );
        for cut in 0..h.len {
            assert_eq!(parse_response_head(&head[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn a_response_with_a_body_reports_its_length() {
        let r = b"HTTP/1.1 202 Accepted\r\nContent-Length: 12\r\n\r\n{\"id\":\"1\"}\n";
        let h = parse_response_head(r).unwrap().unwrap();
        assert_eq!((h.status, h.content_length), (202, Some(12)));
        assert_eq!(
            parse_response_head(b"SPDY/9 200\r\n\r\n"),
            Err(WireError::BadResponseHead)
        );
    }

    #[test]
    fn server_frames_parse_at_every_length_format_and_split() {
        for len in [0usize, 5, 125, 126, 300, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut wire = Vec::new();
            encode_frame(&mut wire, OpCode::Text, true, &payload);
            let (f, used) = parse_server_frame(&wire).unwrap().unwrap();
            assert_eq!(
                (used, f.fin, f.opcode),
                (wire.len(), true, OpCode::Text),
                "len {len}"
            );
            assert_eq!(&wire[f.payload], &payload[..]);
            for cut in [0, 1, 2, 3, wire.len() - 1] {
                if cut < wire.len() {
                    assert_eq!(
                        parse_server_frame(&wire[..cut]),
                        Ok(None),
                        "len {len} cut {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_masked_frame_from_the_server_is_refused() {
        let mut wire = Vec::new();
        write_client_frame(&mut wire, OpCode::Text, b"hi", [1, 2, 3, 4]);
        assert_eq!(
            parse_server_frame(&wire),
            Err(WireError::MaskedFrameFromServer)
        );
    }

    #[test]
    fn client_frames_are_what_the_server_decoder_reads() {
        let mut wire = Vec::new();
        write_client_frame(
            &mut wire,
            OpCode::Text,
            b"{\"op\":\"publish\"}",
            [9, 8, 7, 6],
        );
        let (h, n) = FrameHeader::parse(&wire).unwrap().unwrap();
        let mut body = wire[n..].to_vec();
        apply_mask(&mut body, h.mask.unwrap(), 0);
        assert_eq!(body, b"{\"op\":\"publish\"}");
    }

    #[test]
    fn sse_data_lines_are_messages_and_partial_lines_wait() {
        let stream = b"retry: 2000\n\nid: 1\ndata: {\"a\":1}\n\n:\n\ndata:x\r\n\r\ndata: part";
        let mut got = Vec::new();
        let used = scan_sse_lines(stream, |line| {
            if let SseLine::Data(d) = line {
                got.push(d.to_vec())
            }
        });
        assert_eq!(got, vec![b"{\"a\":1}".to_vec(), b"x".to_vec()]);
        assert_eq!(&stream[used..], b"data: part");
    }

    #[test]
    fn sse_ids_events_and_block_ends_are_reported_in_order() {
        let stream = b"id: e-1\n\nid:e-2\nevent: ringcast.gap\ndata: {}\n\n";
        let mut got = Vec::new();
        scan_sse_lines(stream, |line| got.push(format!("{line:?}")));
        let want = [
            SseLine::Id(b"e-1"),
            SseLine::Dispatch,
            SseLine::Id(b"e-2"),
            SseLine::Event(b"ringcast.gap"),
            SseLine::Data(b"{}"),
            SseLine::Dispatch,
        ]
        .map(|l| format!("{l:?}"));
        assert_eq!(got, want);
    }

    #[test]
    fn a_resume_id_is_kept_only_in_the_id_charset() {
        assert_eq!(resume_id(b"1b243d993a35-3"), Some("1b243d993a35-3"));
        assert_eq!(resume_id(b"1b243d993a35-3.7_9"), Some("1b243d993a35-3.7_9"));
        for bad in [&b""[..], b"a\r\nX-Evil: 1", b"a b", b"a&b", b"\xff"] {
            assert_eq!(resume_id(bad), None, "{bad:?}");
        }
        assert_eq!(resume_id(&[b'1'; MAX_RESUME_ID + 1]), None);
    }

    #[test]
    fn envelope_fields_are_read_from_the_head_only() {
        let env = br#"{"topic":"t","id":"e-42","data":{"id":"x","event":"ringcast.gap"}}"#;
        assert_eq!(envelope_id(env), Some(&b"e-42"[..]));
        assert_eq!(envelope_event(env), None);
        let gap = br#"{"topic":"t","event":"ringcast.gap","data":{"topic":"t"}}"#;
        assert_eq!(
            (envelope_id(gap), envelope_event(gap)),
            (None, Some(&b"ringcast.gap"[..]))
        );
        assert_eq!(envelope_id(br#"{"topic":"t","id":"unterminated"#), None);
    }

    #[test]
    fn resume_requests_carry_the_last_id() {
        let mut out = Vec::new();
        write_sse_get(&mut out, "h:1", "/sse?topic=a", Some("e-7"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nLast-Event-ID: e-7\r\n\r\n"), "{text}");
        assert_eq!(
            with_last_event_id("/ws?topic=a", "e-7"),
            "/ws?topic=a&lastEventId=e-7"
        );
        assert_eq!(with_last_event_id("/ws", "e-7"), "/ws?lastEventId=e-7");
    }
}
