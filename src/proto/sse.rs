//! Server-Sent Events encoding (WHATWG HTML §9.2), sans-IO.
//!
//! What browsers depend on: `200` + `text/event-stream` or EventSource stops
//! reconnecting; `retry:` is digits only; lines starting with `:` are comments (our
//! heartbeat); an `id:` field with no data still sets the browser's last event id,
//! which is how a fresh stream hands out its starting cursor.

use std::io::Write as _;

use super::json;

/// The heartbeat: a comment line, ignored by EventSource, that keeps proxies and
/// the TCP connection honest.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Appends the response head of an event stream and the initial `retry:` hint.
pub fn write_stream_head(out: &mut Vec<u8>, retry_ms: u32, extra_headers: &[(&str, &str)]) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\n\
          Content-Type: text/event-stream\r\n\
          Cache-Control: no-cache\r\n\
          X-Accel-Buffering: no\r\n\
          Connection: keep-alive\r\n",
    );
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    write_retry(out, retry_ms);
}

/// Appends `retry: <ms>` as its own event block.
pub fn write_retry(out: &mut Vec<u8>, retry_ms: u32) {
    let _ = write!(out, "retry: {retry_ms}\n\n");
}

/// Appends an id-only block: sets the client's last event id, dispatches nothing.
pub fn write_id_only(out: &mut Vec<u8>, id: &[u8]) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id);
    out.extend_from_slice(b"\n\n");
}

/// Appends one message block: `id:`, optional `event:`, `data:` and the blank line.
///
/// Returns the offset in `out` (relative to where writing started) of the first
/// byte after the `id:` line, so a stream that needs its own cursor in the `id:`
/// line can reuse the rest of the block unchanged.
pub fn write_message(out: &mut Vec<u8>, id: &[u8], event: Option<&str>, data: &[u8]) -> usize {
    let start = out.len();
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id);
    out.push(b'\n');
    let body = out.len() - start;
    write_event_body(out, event, data);
    body
}

/// Appends `event:` (when given), `data:` and the closing blank line. `data` must
/// not contain line breaks (envelopes are minified JSON, which never does).
pub fn write_event_body(out: &mut Vec<u8>, event: Option<&str>, data: &[u8]) {
    debug_assert!(
        !data.iter().any(|&b| b == b'\n' || b == b'\r'),
        "SSE data with a line break: {:?}",
        String::from_utf8_lossy(data)
    );
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// Appends a `ringcast.*` event whose data is a JSON object of string fields.
pub fn write_server_event(out: &mut Vec<u8>, event: &str, fields: &[(&str, &str)]) {
    let mut data = Vec::with_capacity(64);
    write_json_object(&mut data, fields);
    write_event_body(out, Some(event), &data);
}

/// `{"k":"v",...}` with every value a JSON string.
pub fn write_json_object(out: &mut Vec<u8>, fields: &[(&str, &str)]) {
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_string(out, k);
        out.push(b':');
        json::write_string(out, v);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_block_has_id_event_data_and_a_blank_line() {
        let mut out = b"prefix".to_vec();
        let body = write_message(&mut out, b"e-1", Some("upd"), b"{\"x\":1}");
        assert_eq!(&out[6..], b"id: e-1\nevent: upd\ndata: {\"x\":1}\n\n");
        assert_eq!(&out[6 + body..], b"event: upd\ndata: {\"x\":1}\n\n");
    }

    #[test]
    fn the_stream_head_is_200_event_stream_with_a_retry_hint() {
        let mut out = Vec::new();
        write_stream_head(&mut out, 1500, &[]);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Type: text/event-stream\r\n"));
        assert!(text.contains("Cache-Control: no-cache\r\n"));
        assert!(text.ends_with("\r\n\r\nretry: 1500\n\n"));
    }

    #[test]
    fn server_events_carry_json_data() {
        let mut out = Vec::new();
        write_server_event(
            &mut out,
            "ringcast.gap",
            &[("topic", "a"), ("reason", "x\"y")],
        );
        assert_eq!(
            out,
            b"event: ringcast.gap\ndata: {\"topic\":\"a\",\"reason\":\"x\\\"y\"}\n\n"
        );
    }
}
