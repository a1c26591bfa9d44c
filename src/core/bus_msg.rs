//! Messages between cores ([`CoreMsg`]). Every cross-core interaction is one of
//! these, sent over the bus; nothing else is shared. (A published message itself,
//! as subscribers get it, is [`Message`], in `core::message`.)

use std::sync::Arc;

use super::message::Message;
use super::registry::ClientId;
use crate::proto::cursor::IdScheme;
use crate::proto::publish::PublishError;

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// Live messages only, from the topic's current position.
    Live,
    /// Everything after this position of the topic (a resume).
    After(u64),
    /// The client gave an id this server cannot place (another run, a malformed
    /// id, a cursor of other topics): it gets a gap event and all history kept.
    Unknown(&'static str),
}

impl Since {
    /// Where each of a stream's `topics` topics starts, given the id or cursor the
    /// client sent back (`Last-Event-ID`, `lastEventId`), if any.
    pub fn from_cursor(text: Option<&[u8]>, ids: IdScheme, topics: usize) -> Sinces {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Sinces::All(Since::Live);
        };
        match ids.parse(text) {
            Err(reason) => Sinces::All(Since::Unknown(reason)),
            Ok(keys) if keys.len() != topics => {
                Sinces::All(Since::Unknown("cursor does not match the stream's topics"))
            }
            Ok(keys) => Sinces::Each(keys.into_iter().map(Since::After).collect()),
        }
    }
}

/// Where each topic of a stream starts: the same for all of them (a live
/// stream, or a cursor that cannot be placed: nothing to allocate), or one
/// position each (a resume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sinces {
    All(Since),
    Each(Vec<Since>),
}

impl Sinces {
    /// Where topic `i` starts (live past the end of a list).
    pub fn get(&self, i: usize) -> Since {
        match self {
            Sinces::All(since) => since.clone(),
            Sinces::Each(each) => each.get(i).cloned().unwrap_or(Since::Live),
        }
    }
}

/// The messages a resume missed, oldest first: shared by every client that
/// resumes from the same position (a reconnect storm builds it once).
pub type Backlog = Arc<[Arc<Message>]>;

/// Why a resume could not be served in full; becomes a `ringcast.gap` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// History no longer reaches back past `after`; `oldest` is the first kept.
    Trimmed { after: u64, oldest: u64 },
    /// The position given was never issued by this topic.
    Future { after: u64 },
    /// The id could not be placed at all.
    Unknown(&'static str),
}

/// Where the answer to a publish goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    pub core: u16,
    pub slot: u32,
}

#[derive(Debug)]
pub enum CoreMsg {
    /// To the topic's home: stamp and fan out this message.
    Publish {
        topic: Box<str>,
        event: Option<Box<str>>,
        data: Vec<u8>,
        reply: ReplyTo,
    },
    /// From the home to the publishing core: the position it got.
    Published {
        slot: u32,
        result: Result<u64, PublishError>,
    },
    /// From the home to every core with subscribers of the topic.
    Deliver(Arc<Message>),
    /// To the topic's home: a client of the sending core subscribes.
    Subscribe {
        topic: Arc<str>,
        client: ClientId,
        since: Since,
        /// Echoed in the answer: it applies only to this very subscription, not
        /// to a later one of the same client to the same topic.
        req: u32,
    },
    /// From the home: where the subscription starts, and what it missed.
    Subscribed {
        topic: Arc<str>,
        client: ClientId,
        req: u32,
        /// The position the subscription starts after when the backlog is
        /// empty (the home's head, or a resume position past it).
        head: u64,
        gap: Option<Gap>,
        backlog: Backlog,
    },
    /// To the topic's home: the sending core has no subscriber of it any more.
    Release { topic: Arc<str>, core: u16 },

    // ---- broker mode: between the homes and the bridge ----
    /// To the bridge: read this topic's stream for this node.
    Watch { topic: Arc<str> },
    /// To the bridge: stop reading this topic's stream.
    Unwatch { topic: Arc<str> },
    /// From the bridge: reading starts after stream position `from`.
    Watching { topic: Arc<str>, from: u64 },
    /// From the bridge to the topic's home: one stream entry, in stream order.
    Entry(StreamEntry),
    /// To the bridge: the entries of a topic in `(after, upto]`, for a resume
    /// older than the home's history; with `upto == after`, whether the stream
    /// holds `after`, for a resume past what this node has read.
    Range {
        topic: Arc<str>,
        after: u64,
        upto: u64,
        client: ClientId,
        req: u32,
    },
    /// From the bridge: the answer to `Range`. `trimmed` when the stream no
    /// longer holds every entry after `after`.
    Ranged {
        topic: Arc<str>,
        after: u64,
        upto: u64,
        client: ClientId,
        req: u32,
        entries: Vec<StreamEntry>,
        trimmed: bool,
    },
}

/// An entry of a topic's stream, as the bridge read it.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    pub topic: Arc<str>,
    /// The stream id, packed (see `IdScheme::Stream`).
    pub key: u64,
    pub event: Option<Box<str>>,
    /// Minified JSON.
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_of_this_run_resumes_each_topic_and_anything_else_is_unknown() {
        let epoch = IdScheme::Local(crate::proto::cursor::Epoch::new(0x1234));
        let mut c = Vec::new();
        epoch.write_cursor(&mut c, [4, 9]);
        assert_eq!(
            Since::from_cursor(Some(&c), epoch, 2),
            Sinces::Each(vec![Since::After(4), Since::After(9)])
        );
        assert_eq!(Since::from_cursor(None, epoch, 2).get(1), Since::Live);
        assert_eq!(Since::from_cursor(Some(b""), epoch, 1).get(0), Since::Live);
        assert!(matches!(
            Since::from_cursor(Some(&c), epoch, 3).get(0),
            Since::Unknown(_)
        ));
        assert!(matches!(
            Since::from_cursor(
                Some(&c),
                IdScheme::Local(crate::proto::cursor::Epoch::new(1)),
                2
            )
            .get(0),
            Since::Unknown(_)
        ));
        assert!(matches!(
            Since::from_cursor(Some(b"garbage"), epoch, 1).get(0),
            Since::Unknown(_)
        ));
    }
}
