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

#[cfg(test)]
mod tests {
    use super::*;

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
