//! Messages between cores. Every cross-core interaction is one of these, sent over
//! the bus; nothing else is shared.

use std::sync::Arc;

use super::message::Message;
use super::registry::ClientId;
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
    },
    /// From the home: where the subscription starts, and what it missed.
    Subscribed {
        topic: Arc<str>,
        client: ClientId,
        head: u64,
        gap: Option<Gap>,
        backlog: Vec<Arc<Message>>,
    },
    /// To the topic's home: the sending core has no subscriber of it any more.
    Release { topic: Arc<str>, core: u16 },
}
