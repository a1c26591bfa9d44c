//! The message envelope every subscriber receives (WS text frame, SSE `data:`):
//! `{"topic":"a","id":"<id>","event":"<name>","data":<payload>}`, `event` only when
//! the publisher gave one.

/// Appends the envelope. `topic` and `event` are validated names (no escaping
/// needed), `id` is an id of [`super::cursor`], `data` minified JSON.
pub fn write_envelope(out: &mut Vec<u8>, topic: &str, id: &[u8], event: Option<&str>, data: &[u8]) {
    out.extend_from_slice(b"{\"topic\":\"");
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(b"\",\"id\":\"");
    out.extend_from_slice(id);
    out.push(b'"');
    if let Some(event) = event {
        out.extend_from_slice(b",\"event\":\"");
        out.extend_from_slice(event.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
}

/// A hole in a resume: history no longer reaches back, or the id cannot be placed.
pub const GAP_EVENT: &str = "ringcast.gap";
/// The stream is cut as a slow consumer.
pub const SLOW_EVENT: &str = "ringcast.slow";
/// The server is draining: reconnect elsewhere after `retry`.
pub const SHUTDOWN_EVENT: &str = "ringcast.shutdown";
/// The server is over capacity.
pub const BUSY_EVENT: &str = "ringcast.busy";
/// The access token expired.
pub const EXPIRED_EVENT: &str = "ringcast.expired";

/// Appends the envelope of an event the server itself emits on a topic's behalf
/// (`{"topic":"a","event":"ringcast.gap","data":<data>}`): no id, since it is no
/// message of the topic. `event` is one of the names above, `data` JSON.
pub fn write_server_envelope(out: &mut Vec<u8>, topic: &str, event: &str, data: &[u8]) {
    out.extend_from_slice(b"{\"topic\":\"");
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(b"\",\"event\":\"");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_event_envelope_is_valid_json_without_an_id() {
        let mut out = Vec::new();
        write_server_envelope(
            &mut out,
            "news",
            GAP_EVENT,
            br#"{"topic":"news","reason":"r"}"#,
        );
        assert_eq!(
            out,
            br#"{"topic":"news","event":"ringcast.gap","data":{"topic":"news","reason":"r"}}"#
        );
        assert!(super::super::json::JsonScratch::new().is_valid(&out));
    }

    #[test]
    fn the_envelope_is_valid_json_with_event_only_when_given() {
        let mut out = Vec::new();
        write_envelope(&mut out, "news", b"e-1", None, b"{\"h\":\"hi\"}");
        assert_eq!(out, br#"{"topic":"news","id":"e-1","data":{"h":"hi"}}"#);
        out.clear();
        write_envelope(&mut out, "news", b"e-2", Some("upd"), b"3");
        assert_eq!(
            out,
            br#"{"topic":"news","id":"e-2","event":"upd","data":3}"#
        );
        let mut scratch = super::super::json::JsonScratch::new();
        assert!(scratch.is_valid(&out));
    }
}
