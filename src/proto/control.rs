//! WebSocket control messages (sans-IO): what a client may send over `/ws`, and the
//! answers.
//!
//! ```json
//! {"op":"subscribe","topics":["a"],"since":"<id or cursor>","ref":1}
//! {"op":"unsubscribe","topics":["a"],"ref":2}
//! {"op":"publish","topic":"a","data":{...},"event":"optional","ref":3}
//! ```
//!
//! Every message gets one answer echoing its `ref` (any JSON value, kept as
//! written): `{"op":"ack","ref":1}` (a publish ack adds `"id"`) or
//! `{"op":"error","ref":1,"error":"reason"}`.

use thiserror::Error;

use super::json::{self, JsonScratch};
use super::topic::{validate_event, validate_topic, NameError, MAX_TOPIC_LEN};

/// Why a control message was refused. The client is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ControlError {
    #[error("control messages are JSON objects with an \"op\"")]
    InvalidJson,
    #[error("missing or unknown \"op\" (subscribe, unsubscribe, publish)")]
    UnknownOp,
    #[error("\"topics\" must be a non-empty array of topic names")]
    BadTopics,
    #[error("missing \"topic\"")]
    MissingTopic,
    #[error("missing \"data\"")]
    MissingData,
    #[error("\"since\" must be a string id")]
    BadSince,
    #[error("\"event\" must be a string")]
    BadEvent,
    #[error("unknown field")]
    UnknownField,
    #[error("{0}")]
    BadName(#[from] NameError),
    #[error("binary messages are not understood; send JSON text")]
    Binary,
    #[error("message larger than --max-message-bytes")]
    TooLarge,
}

/// What a control message asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Subscribe {
        topics: Vec<String>,
        since: Option<String>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    Publish {
        topic: String,
        event: Option<String>,
        data: Vec<u8>,
    },
}

/// A parsed control message: the op, and its `ref` as raw JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub op: Op,
    pub reference: Option<Vec<u8>>,
}

/// The largest control message a client needs to send when it may name up to
/// `topics` topics: a `subscribe` of that many names of the longest length,
/// with their quoting, and room for `since`, `ref` and the rest.
pub fn max_message_bytes(topics: usize) -> usize {
    (topics * (MAX_TOPIC_LEN + 8) + 1024).max(4096)
}

/// Parses one text message. On error, returns the `ref` when it could be read,
/// so the error answer can still echo it.
pub fn parse(
    scratch: &mut JsonScratch,
    text: &[u8],
) -> Result<Control, (Option<Vec<u8>>, ControlError)> {
    if !scratch.is_valid(text) {
        return Err((None, ControlError::InvalidJson));
    }
    let fields = json::object_fields(text).map_err(|_| (None, ControlError::InvalidJson))?;
    let mut reference = None;
    let (mut op, mut topics, mut topic, mut since, mut event, mut data) =
        (None, None, None, None, None, None);
    let mut unknown = false;
    for (key, value) in &fields {
        match json::decode_string(scratch, key).as_deref() {
            Some("ref") => reference = Some(value.to_vec()),
            Some("op") => op = Some(*value),
            Some("topics") => topics = Some(*value),
            Some("topic") => topic = Some(*value),
            Some("since") => since = Some(*value),
            Some("event") => event = Some(*value),
            Some("data") => data = Some(*value),
            _ => unknown = true,
        }
    }
    let fail = |e: ControlError| (reference.clone(), e);
    if unknown {
        return Err(fail(ControlError::UnknownField));
    }
    let op = op
        .and_then(|raw| json::decode_string(scratch, raw))
        .ok_or(fail(ControlError::UnknownOp))?;
    let op = match &*op {
        "subscribe" | "unsubscribe" => {
            let list = topics_list(scratch, topics).map_err(fail)?;
            if op == "subscribe" {
                let since = match since {
                    None | Some(b"null") => None,
                    Some(raw) => Some(
                        json::decode_string(scratch, raw)
                            .ok_or(fail(ControlError::BadSince))?
                            .into_owned(),
                    ),
                };
                Op::Subscribe {
                    topics: list,
                    since,
                }
            } else {
                Op::Unsubscribe { topics: list }
            }
        }
        "publish" => {
            let topic = topic
                .and_then(|raw| json::decode_string(scratch, raw))
                .ok_or(fail(ControlError::MissingTopic))?;
            validate_topic(topic.as_bytes()).map_err(|e| fail(e.into()))?;
            let event = match event {
                None | Some(b"null") => None,
                Some(raw) => {
                    let e =
                        json::decode_string(scratch, raw).ok_or(fail(ControlError::BadEvent))?;
                    validate_event(e.as_bytes()).map_err(|e| fail(e.into()))?;
                    Some(e.into_owned())
                }
            };
            let raw = data.ok_or(fail(ControlError::MissingData))?;
            let mut data = Vec::with_capacity(raw.len());
            json::minify_into(raw, &mut data);
            Op::Publish {
                topic: topic.into_owned(),
                event,
                data,
            }
        }
        _ => return Err(fail(ControlError::UnknownOp)),
    };
    Ok(Control { op, reference })
}

/// The names of a `"topics"` array, each validated.
fn topics_list(scratch: &mut JsonScratch, raw: Option<&[u8]>) -> Result<Vec<String>, ControlError> {
    let raw = raw.ok_or(ControlError::BadTopics)?;
    let names = scratch
        .with_value(raw, |v| {
            use simd_json::prelude::*;
            v.as_array().map(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
            })
        })
        .ok()
        .flatten()
        .flatten()
        .ok_or(ControlError::BadTopics)?;
    if names.is_empty() {
        return Err(ControlError::BadTopics);
    }
    for name in &names {
        validate_topic(name.as_bytes())?;
    }
    Ok(names)
}

/// Appends `{"op":"ack"[,"ref":..][,"id":".."]}`.
pub fn write_ack(out: &mut Vec<u8>, reference: Option<&[u8]>, id: Option<&str>) {
    out.extend_from_slice(b"{\"op\":\"ack\"");
    if let Some(r) = reference {
        out.extend_from_slice(b",\"ref\":");
        json::minify_into(r, out);
    }
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        json::write_string(out, id);
    }
    out.push(b'}');
}

/// Appends `{"op":"error"[,"ref":..],"error":"reason"}`.
pub fn write_error(out: &mut Vec<u8>, reference: Option<&[u8]>, error: &str) {
    out.extend_from_slice(b"{\"op\":\"error\"");
    if let Some(r) = reference {
        out.extend_from_slice(b",\"ref\":");
        json::minify_into(r, out);
    }
    out.extend_from_slice(b",\"error\":");
    json::write_string(out, error);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Control, (Option<Vec<u8>>, ControlError)> {
        parse(&mut JsonScratch::new(), text.as_bytes())
    }

    #[test]
    fn the_largest_subscribe_fits_the_control_message_limit() {
        for n in [1, 64, 500] {
            let name = "t".repeat(MAX_TOPIC_LEN);
            let topics: Vec<String> = (0..n).map(|_| format!("\"{name}\"")).collect();
            let since = format!("\"{}\"", "0".repeat(200));
            let text = format!(
                r#"{{"op":"subscribe","topics":[{}],"since":{since},"ref":"{}"}}"#,
                topics.join(","),
                "r".repeat(100)
            );
            assert!(p(&text).is_ok());
            assert!(
                text.len() <= max_message_bytes(n),
                "{n} topics: {} bytes",
                text.len()
            );
        }
    }

    #[test]
    fn the_three_ops_parse_with_their_ref() {
        assert_eq!(
            p(r#"{"op":"subscribe","topics":["a","b"],"since":"x-1","ref":7}"#),
            Ok(Control {
                op: Op::Subscribe {
                    topics: vec!["a".into(), "b".into()],
                    since: Some("x-1".into())
                },
                reference: Some(b"7".to_vec())
            })
        );
        assert_eq!(
            p(r#"{"op":"unsubscribe","topics":["a"]}"#),
            Ok(Control {
                op: Op::Unsubscribe {
                    topics: vec!["a".into()]
                },
                reference: None
            })
        );
        assert_eq!(
            p(r#"{"ref":"r","op":"publish","topic":"a","data": {"x": 1},"event":"e"}"#),
            Ok(Control {
                op: Op::Publish {
                    topic: "a".into(),
                    event: Some("e".into()),
                    data: br#"{"x":1}"#.to_vec()
                },
                reference: Some(br#""r""#.to_vec())
            })
        );
    }

    #[test]
    fn bad_messages_say_why_and_keep_the_ref() {
        use ControlError::*;
        let cases: &[(&str, ControlError)] = &[
            ("nope", InvalidJson),
            ("[1]", InvalidJson),
            (r#"{"ref":1}"#, UnknownOp),
            (r#"{"op":"dance","ref":1}"#, UnknownOp),
            (r#"{"op":"subscribe","ref":1}"#, BadTopics),
            (r#"{"op":"subscribe","topics":[],"ref":1}"#, BadTopics),
            (r#"{"op":"subscribe","topics":[1],"ref":1}"#, BadTopics),
            (
                r#"{"op":"subscribe","topics":["a b"],"ref":1}"#,
                BadName(NameError::BadTopic),
            ),
            (
                r#"{"op":"subscribe","topics":["a"],"since":5,"ref":1}"#,
                BadSince,
            ),
            (r#"{"op":"publish","data":1,"ref":1}"#, MissingTopic),
            (r#"{"op":"publish","topic":"a","ref":1}"#, MissingData),
            (
                r#"{"op":"publish","topic":"a","data":1,"event":"ringcast.x","ref":1}"#,
                BadName(NameError::ReservedEvent),
            ),
            (
                r#"{"op":"publish","topic":"a","data":1,"extra":1,"ref":1}"#,
                UnknownField,
            ),
        ];
        for (text, want) in cases {
            let got = p(text).expect_err(text);
            assert_eq!(got.1, *want, "{text}");
            if *want != InvalidJson {
                assert_eq!(got.0.as_deref(), Some(&b"1"[..]), "{text}");
            }
        }
    }

    #[test]
    fn answers_echo_the_ref() {
        let mut out = Vec::new();
        write_ack(&mut out, Some(br#"{"a": 1}"#), Some("e-1"));
        assert_eq!(out, br#"{"op":"ack","ref":{"a":1},"id":"e-1"}"#);
        out.clear();
        write_error(&mut out, None, "bad");
        assert_eq!(out, br#"{"op":"error","error":"bad"}"#);
    }
}
