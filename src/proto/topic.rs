//! Topic and event names: the one rule for what a name may contain.
//!
//! Topics are 1–128 bytes of `A-Z a-z 0-9 . _ - : /`. Event names follow the same
//! charset with at most 64 bytes, and the `ringcast.` prefix is reserved for the
//! events the server emits itself. Both rules keep names safe to embed verbatim in
//! JSON strings, SSE field lines and Prometheus labels: no escaping anywhere.

use thiserror::Error;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;
/// Longest event name, in bytes.
pub const MAX_EVENT_LEN: usize = 64;
/// Prefix of the events ringcast emits itself (`ringcast.gap`, ...).
pub const RESERVED_EVENT_PREFIX: &str = "ringcast.";

/// Why a name was refused. The peer is at fault; the message names the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("topic must be 1-128 bytes of A-Z a-z 0-9 . _ - : /")]
    BadTopic,
    #[error("event name must be 1-64 bytes of A-Z a-z 0-9 . _ - : /")]
    BadEvent,
    #[error("event names starting with `ringcast.` are reserved for the server")]
    ReservedEvent,
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/')
}

/// Checks a topic name; on success the bytes are ASCII and returned as `&str`.
pub fn validate_topic(name: &[u8]) -> Result<&str, NameError> {
    if name.is_empty() || name.len() > MAX_TOPIC_LEN || !name.iter().all(|&b| allowed(b)) {
        return Err(NameError::BadTopic);
    }
    // The charset is ASCII, so this cannot fail; no unwrap on peer input regardless.
    std::str::from_utf8(name).map_err(|_| NameError::BadTopic)
}

/// Checks an event name given by a publisher.
pub fn validate_event(name: &[u8]) -> Result<&str, NameError> {
    if name.is_empty() || name.len() > MAX_EVENT_LEN || !name.iter().all(|&b| allowed(b)) {
        return Err(NameError::BadEvent);
    }
    if name.starts_with(RESERVED_EVENT_PREFIX.as_bytes()) {
        return Err(NameError::ReservedEvent);
    }
    std::str::from_utf8(name).map_err(|_| NameError::BadEvent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_of_the_documented_charset_are_accepted() {
        for ok in ["a", "news", "chat.room-1", "user:42/inbox", "A_Z.09"] {
            assert_eq!(validate_topic(ok.as_bytes()), Ok(ok), "{ok}");
        }
        let longest = "x".repeat(MAX_TOPIC_LEN);
        assert!(validate_topic(longest.as_bytes()).is_ok());
    }

    #[test]
    fn topics_outside_the_rule_are_refused() {
        let too_long = "x".repeat(MAX_TOPIC_LEN + 1);
        for bad in [
            &b""[..],
            b"has space",
            b"new\nline",
            b"quote\"",
            b"\xff\xfe",
            "caf\u{e9}".as_bytes(),
            too_long.as_bytes(),
        ] {
            assert_eq!(validate_topic(bad), Err(NameError::BadTopic), "{bad:?}");
        }
    }

    #[test]
    fn event_names_refuse_newlines_and_the_reserved_prefix() {
        assert_eq!(validate_event(b"update"), Ok("update"));
        assert_eq!(validate_event(b"a\nb"), Err(NameError::BadEvent));
        assert_eq!(validate_event(b""), Err(NameError::BadEvent));
        assert_eq!(
            validate_event(b"ringcast.gap"),
            Err(NameError::ReservedEvent)
        );
    }
}

/// Why the topic list of a subscribe request was refused. The client is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicListError {
    #[error("no topic: use ?topic=NAME (repeatable) or ?topics=a,b")]
    Empty,
    #[error("too many topics for one client (--max-topics-per-client)")]
    TooMany,
    #[error("{0}")]
    BadName(#[from] NameError),
}

/// The topics a request names, from `topic=a&topic=b` and/or `topics=a,b`, in
/// order, without duplicates, each validated.
pub fn topics_from_query(query: &str, max: usize) -> Result<Vec<String>, TopicListError> {
    let mut topics: Vec<String> = Vec::new();
    let mut add = |name: &[u8]| -> Result<(), TopicListError> {
        let name = validate_topic(name)?;
        if !topics.iter().any(|t| t == name) {
            if topics.len() >= max {
                return Err(TopicListError::TooMany);
            }
            topics.push(name.to_owned());
        }
        Ok(())
    };
    for (key, value) in super::http::query_pairs(query) {
        match &*key {
            b"topic" => add(&value)?,
            b"topics" => {
                for name in value.split(|&b| b == b',') {
                    add(name)?;
                }
            }
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err(TopicListError::Empty);
    }
    Ok(topics)
}

#[cfg(test)]
mod list_tests {
    use super::*;

    #[test]
    fn topic_lists_come_from_both_forms_in_order_without_duplicates() {
        assert_eq!(
            topics_from_query("topic=b&topics=a,b,c&x=1&topic=d", 64),
            Ok(vec!["b".into(), "a".into(), "c".into(), "d".into()])
        );
        assert_eq!(topics_from_query("topic=a%2Fb", 64), Ok(vec!["a/b".into()]));
    }

    #[test]
    fn bad_topic_lists_say_why() {
        assert_eq!(topics_from_query("", 64), Err(TopicListError::Empty));
        assert_eq!(
            topics_from_query("topics=a,,b", 64),
            Err(TopicListError::BadName(NameError::BadTopic))
        );
        assert_eq!(
            topics_from_query("topic=%FF", 64),
            Err(TopicListError::BadName(NameError::BadTopic))
        );
        assert_eq!(
            topics_from_query("topics=a,b,c", 2),
            Err(TopicListError::TooMany)
        );
    }
}
