//! The publish protocol (sans-IO): NDJSON command lines of the Unix socket, their
//! answer lines, and the payload rule shared by every publish path (HTTP body, CLI
//! argument, socket line): JSON is kept as JSON (minified, values byte for byte),
//! anything else becomes a JSON string.

use std::borrow::Cow;

use thiserror::Error;

use super::json::{self, JsonError, JsonScratch};
use super::topic::{validate_event, validate_topic, NameError};

/// Why a publish was refused. The publisher is at fault unless the variant says
/// otherwise; `Display` is the text of the `error` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PublishError {
    #[error("line is not valid JSON")]
    InvalidJson,
    #[error("a publish command must be a JSON object")]
    NotAnObject,
    #[error("missing field `topic`")]
    MissingTopic,
    #[error("`topic` must be a string")]
    TopicNotString,
    #[error("missing field `data`")]
    MissingData,
    #[error("`event` must be a string")]
    EventNotString,
    #[error("unknown field (allowed: topic, data, event)")]
    UnknownField,
    #[error("duplicate field")]
    DuplicateField,
    #[error("{0}")]
    BadName(#[from] NameError),
    #[error("data must be JSON or UTF-8 text")]
    DataNotUtf8,
    #[error("message larger than --max-message-bytes")]
    TooLarge,
    #[error("line longer than --max-message-bytes")]
    LineTooLong,
    /// The server could not take the message (for example while draining).
    #[error("server unavailable")]
    Unavailable,
    /// A broker is configured and cannot be reached: the message was not taken.
    #[error("broker unavailable")]
    BrokerUnavailable,
}

impl From<JsonError> for PublishError {
    fn from(e: JsonError) -> Self {
        match e {
            JsonError::Invalid => PublishError::InvalidJson,
            JsonError::NotAnObject => PublishError::NotAnObject,
        }
    }
}

/// One decoded publish command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishCommand<'a> {
    pub topic: Cow<'a, str>,
    pub event: Option<Cow<'a, str>>,
    /// The payload as minified JSON, ready to embed in the envelope.
    pub data: Vec<u8>,
}

/// Parses one command line `{"topic":"a","data":...,"event":"optional"}`.
///
/// `data` may be any JSON value; it is kept byte for byte (minus whitespace). An
/// `event` of `null` counts as absent.
pub fn parse_command<'a>(
    scratch: &mut JsonScratch,
    line: &'a [u8],
    max_message_bytes: usize,
) -> Result<PublishCommand<'a>, PublishError> {
    if !scratch.is_valid(line) {
        return Err(PublishError::InvalidJson);
    }
    let mut topic = None;
    let mut event = None;
    let mut data = None;
    for (key, value) in json::object_fields(line)? {
        let key = json::decode_string(scratch, key).ok_or(PublishError::InvalidJson)?;
        let slot = match &*key {
            "topic" => &mut topic,
            "data" => &mut data,
            "event" => &mut event,
            _ => return Err(PublishError::UnknownField),
        };
        if slot.replace(value).is_some() {
            return Err(PublishError::DuplicateField);
        }
    }
    let topic_raw = topic.ok_or(PublishError::MissingTopic)?;
    let topic = json::decode_string(scratch, topic_raw).ok_or(PublishError::TopicNotString)?;
    validate_topic(topic.as_bytes())?;
    let event = match event {
        None | Some(b"null") => None,
        Some(raw) => {
            let name = json::decode_string(scratch, raw).ok_or(PublishError::EventNotString)?;
            validate_event(name.as_bytes())?;
            Some(name)
        }
    };
    let raw = data.ok_or(PublishError::MissingData)?;
    if raw.len() > max_message_bytes {
        return Err(PublishError::TooLarge);
    }
    let mut data = Vec::with_capacity(raw.len());
    json::minify_into(raw, &mut data);
    Ok(PublishCommand { topic, event, data })
}

/// Turns a raw payload (HTTP body, CLI argument) into the JSON the envelope carries:
/// JSON stays JSON (minified), UTF-8 text becomes a JSON string.
pub fn payload_to_json(
    scratch: &mut JsonScratch,
    raw: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<u8>, PublishError> {
    if raw.len() > max_message_bytes {
        return Err(PublishError::TooLarge);
    }
    let mut out = Vec::with_capacity(raw.len() + 2);
    if scratch.is_valid(raw) {
        json::minify_into(raw, &mut out);
    } else {
        let text = std::str::from_utf8(raw).map_err(|_| PublishError::DataNotUtf8)?;
        json::write_string(&mut out, text);
    }
    Ok(out)
}

/// Appends the success answer `{"ok":true,"id":"..."}\n`.
pub fn write_ok_line(out: &mut Vec<u8>, id: &str) {
    out.extend_from_slice(b"{\"ok\":true,\"id\":");
    json::write_string(out, id);
    out.extend_from_slice(b"}\n");
}

/// Appends the start of a command line, `{"topic":"<topic>",["event":"<e>",]"data":`:
/// the data and [`COMMAND_END`] follow (a publisher that sends many commands to
/// one topic writes this once).
pub fn write_command_start(out: &mut Vec<u8>, topic: &str, event: Option<&str>) {
    out.extend_from_slice(b"{\"topic\":");
    json::write_string(out, topic);
    if let Some(event) = event {
        out.extend_from_slice(b",\"event\":");
        json::write_string(out, event);
    }
    out.extend_from_slice(b",\"data\":");
}

/// What ends a command line after its data.
pub const COMMAND_END: &[u8] = b"}\n";

/// Appends one whole command line; `data` is JSON.
pub fn write_command_line(out: &mut Vec<u8>, topic: &str, event: Option<&str>, data: &[u8]) {
    write_command_start(out, topic, event);
    out.extend_from_slice(data);
    out.extend_from_slice(COMMAND_END);
}

/// Appends the failure answer `{"ok":false,"error":"..."}\n`.
pub fn write_error_line(out: &mut Vec<u8>, error: &str) {
    out.extend_from_slice(b"{\"ok\":false,\"error\":");
    json::write_string(out, error);
    out.extend_from_slice(b"}\n");
}

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line, without its `\n` (and without a trailing `\r`).
    Complete(&'a [u8]),
    /// A line passed the limit; its bytes up to the next `\n` are discarded and
    /// it gets exactly one error answer.
    TooLong,
}

/// Splits a byte stream into `\n`-terminated lines of at most `max` bytes.
///
/// Call order: [`LineReader::buffer`] to get room for new bytes, read into it,
/// [`LineReader::filled`] with the count, then [`LineReader::next_line`] until `None`.
/// Memory stays below `max` + one read, whatever the peer sends.
pub struct LineReader {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    /// Bytes before this offset (from `start`) were already scanned for `\n`.
    scanned: usize,
    /// Discarding the rest of an overlong line.
    skipping: bool,
    max: usize,
}

impl LineReader {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            skipping: false,
            max,
        }
    }

    /// Room for at least `n` more bytes at the end of the buffer.
    pub fn buffer(&mut self, n: usize) -> &mut [u8] {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start.min(self.scanned);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + n, 0);
        &mut self.buf[len..]
    }

    /// Records that `n` bytes of the last [`LineReader::buffer`] were filled.
    pub fn filled(&mut self, requested: usize, n: usize) {
        let keep = self.buf.len() - requested + n.min(requested);
        self.buf.truncate(keep);
    }

    /// The next complete line, if any.
    #[must_use]
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        loop {
            let pending = &self.buf[self.start..];
            let from = self.scanned.saturating_sub(self.start).min(pending.len());
            match pending[from..].iter().position(|&b| b == b'\n') {
                Some(rel) => {
                    let end = from + rel;
                    let line_start = self.start;
                    self.start += end + 1;
                    self.scanned = self.start;
                    if self.skipping {
                        self.skipping = false;
                        continue;
                    }
                    if end > self.max {
                        return Some(Line::TooLong);
                    }
                    let mut line = &self.buf[line_start..line_start + end];
                    if let [rest @ .., b'\r'] = line {
                        line = rest;
                    }
                    return Some(Line::Complete(line));
                }
                None => {
                    if self.skipping {
                        self.start = self.buf.len();
                        self.scanned = self.start;
                        return None;
                    }
                    if pending.len() > self.max {
                        self.skipping = true;
                        self.start = self.buf.len();
                        self.scanned = self.start;
                        return Some(Line::TooLong);
                    }
                    self.scanned = self.start + pending.len();
                    return None;
                }
            }
        }
    }

    /// Bytes of an unfinished line still held.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_written_here_parses_back() {
        let mut line = Vec::new();
        write_command_line(&mut line, "news", Some("upd"), br#"{"h":1}"#);
        assert_eq!(
            line,
            b"{\"topic\":\"news\",\"event\":\"upd\",\"data\":{\"h\":1}}\n"
        );
        let mut json = JsonScratch::new();
        let cmd = parse_command(&mut json, &line[..line.len() - 1], 1 << 20).unwrap();
        assert_eq!((&*cmd.topic, cmd.event.as_deref()), ("news", Some("upd")));
        assert_eq!(cmd.data, br#"{"h":1}"#);
    }

    fn parse(line: &str) -> Result<PublishCommand<'_>, PublishError> {
        parse_command(&mut JsonScratch::new(), line.as_bytes(), 1 << 20)
    }

    #[test]
    fn a_command_keeps_its_data_byte_for_byte() {
        let cmd = parse(
            r#"{"topic":"news","data":{"n": 1.50, "big": 123456789012345678901},"event":"upd"}"#,
        )
        .expect("valid");
        assert_eq!(cmd.topic, "news");
        assert_eq!(cmd.event.as_deref(), Some("upd"));
        assert_eq!(cmd.data, br#"{"n":1.50,"big":123456789012345678901}"#);
    }

    #[test]
    fn bad_commands_name_what_is_wrong() {
        use PublishError::*;
        let cases: &[(&str, PublishError)] = &[
            ("nope", InvalidJson),
            ("[1]", NotAnObject),
            (r#"{"data":1}"#, MissingTopic),
            (r#"{"topic":1,"data":1}"#, TopicNotString),
            (r#"{"topic":"a"}"#, MissingData),
            (r#"{"topic":"a b","data":1}"#, BadName(NameError::BadTopic)),
            (
                r#"{"topic":"a","data":1,"event":"x\ny"}"#,
                BadName(NameError::BadEvent),
            ),
            (
                r#"{"topic":"a","data":1,"event":"ringcast.gap"}"#,
                BadName(NameError::ReservedEvent),
            ),
            (r#"{"topic":"a","data":1,"event":7}"#, EventNotString),
            (r#"{"topic":"a","data":1,"extra":2}"#, UnknownField),
            (r#"{"topic":"a","data":1,"data":2}"#, DuplicateField),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).err(), Some(*want), "{line}");
        }
    }

    #[test]
    fn an_escaped_topic_is_decoded_before_validation() {
        let cmd = parse(r#"{"topic":"\u0061","data":null,"event":null}"#).expect("valid");
        assert_eq!(cmd.topic, "a");
        assert_eq!(cmd.event, None);
        assert_eq!(cmd.data, b"null");
    }

    #[test]
    fn payloads_are_json_when_they_parse_and_strings_otherwise() {
        let mut s = JsonScratch::new();
        assert_eq!(
            payload_to_json(&mut s, b" {\"x\": 1}\n", 100).unwrap(),
            b"{\"x\":1}"
        );
        assert_eq!(
            payload_to_json(&mut s, b"hello \"you\"", 100).unwrap(),
            br#""hello \"you\"""#
        );
        assert_eq!(payload_to_json(&mut s, b"", 100).unwrap(), br#""""#);
        assert_eq!(
            payload_to_json(&mut s, b"\xff", 100),
            Err(PublishError::DataNotUtf8)
        );
        assert_eq!(
            payload_to_json(&mut s, b"12345", 4),
            Err(PublishError::TooLarge)
        );
    }

    #[test]
    fn answer_lines_are_one_json_object_each() {
        let mut out = Vec::new();
        write_ok_line(&mut out, "abc-1");
        write_error_line(&mut out, "bad \"x\"");
        assert_eq!(
            out,
            b"{\"ok\":true,\"id\":\"abc-1\"}\n{\"ok\":false,\"error\":\"bad \\\"x\\\"\"}\n"
        );
    }

    fn feed(reader: &mut LineReader, bytes: &[u8]) -> Vec<Result<Vec<u8>, ()>> {
        let buf = reader.buffer(bytes.len());
        buf.copy_from_slice(bytes);
        reader.filled(bytes.len(), bytes.len());
        let mut out = Vec::new();
        while let Some(line) = reader.next_line() {
            out.push(match line {
                Line::Complete(l) => Ok(l.to_vec()),
                Line::TooLong => Err(()),
            });
        }
        out
    }

    #[test]
    fn lines_split_at_every_byte_come_out_whole() {
        let input = b"{\"a\":1}\r\nsecond\n\nthird\n";
        for split in 0..input.len() {
            let mut reader = LineReader::new(64);
            let mut lines = feed(&mut reader, &input[..split]);
            lines.extend(feed(&mut reader, &input[split..]));
            let want: Vec<Result<Vec<u8>, ()>> = vec![
                Ok(b"{\"a\":1}".to_vec()),
                Ok(b"second".to_vec()),
                Ok(b"".to_vec()),
                Ok(b"third".to_vec()),
            ];
            assert_eq!(lines, want, "split at {split}");
        }
    }

    #[test]
    fn an_overlong_line_gets_one_error_and_the_next_line_still_works() {
        let mut reader = LineReader::new(8);
        let mut lines = feed(&mut reader, b"0123456789");
        lines.extend(feed(&mut reader, b"abcdefghijkl"));
        lines.extend(feed(&mut reader, b"xyz\nok\n"));
        assert_eq!(lines, vec![Err(()), Ok(b"ok".to_vec())]);
        assert!(reader.pending() <= 8);
        let mut reader = LineReader::new(4);
        assert_eq!(
            feed(&mut reader, b"12345\nabcd\n"),
            vec![Err(()), Ok(b"abcd".to_vec())]
        );
    }
}
