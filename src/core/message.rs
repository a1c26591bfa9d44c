//! A published message as its home core stamped it: topic, position, and the SSE
//! block encoded once, from which every other encoding is cut.

use std::ops::Range;
use std::sync::Arc;

use crate::proto::cursor::IdScheme;
use crate::proto::{envelope, sse};

/// One message, shared read-only by every core (`Arc`) and by the topic history.
#[derive(Debug)]
pub struct Message {
    pub topic: Arc<str>,
    /// Position in the topic, from 1.
    pub seq: u64,
    /// The SSE block: `id: <id>\n[event: <e>\n]data: <envelope>\n\n`.
    pub sse: Box<[u8]>,
    /// Offset of the first byte after the `id:` line in [`Message::sse`].
    pub sse_body: usize,
    /// Where the JSON envelope sits in [`Message::sse`].
    pub envelope: Range<usize>,
}

impl Message {
    /// Encodes a message once: the envelope inside its SSE block.
    pub fn encode(
        ids: IdScheme,
        topic: Arc<str>,
        seq: u64,
        event: Option<&str>,
        data: &[u8],
    ) -> Message {
        let mut id = Vec::with_capacity(24);
        ids.write_id(&mut id, seq);
        let mut env = Vec::with_capacity(data.len() + topic.len() + 48);
        envelope::write_envelope(&mut env, &topic, &id, event, data);
        let mut block = Vec::with_capacity(env.len() + id.len() + 32);
        let sse_body = sse::write_message(&mut block, &id, event, &env);
        let env_start = block.len() - 2 - env.len();
        Message {
            topic,
            seq,
            sse: block.into_boxed_slice(),
            sse_body,
            envelope: env_start..env_start + env.len(),
        }
    }

    /// The JSON envelope (a WebSocket text frame's payload).
    pub fn envelope(&self) -> &[u8] {
        &self.sse[self.envelope.clone()]
    }

    /// The SSE block without its `id:` line.
    pub fn sse_body(&self) -> &[u8] {
        &self.sse[self.sse_body..]
    }

    /// Bytes this message holds while a history keeps it: its encoding, the
    /// message record with the `Arc` counts before it, its slot in the topic's
    /// ring and its entry in the core's age order ([`AGE_ENTRY_BYTES`]). The
    /// topic name is shared by every message of the topic and counted with the
    /// topic.
    pub fn held_bytes(&self) -> usize {
        self.sse.len()
            + std::mem::size_of::<Message>()
            + 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<Arc<Message>>()
            + AGE_ENTRY_BYTES
    }
}

/// Bytes of one entry in a core's age order of kept messages (see
/// `core::homes`): counted in [`Message::held_bytes`].
pub const AGE_ENTRY_BYTES: usize = 24;

impl Message {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_encoding_yields_the_sse_block_and_the_envelope() {
        let msg = Message::encode(
            IdScheme::Local(crate::proto::cursor::Epoch::new(1)),
            "news".into(),
            7,
            Some("upd"),
            b"{\"a\":1}",
        );
        let id = "000000000001-7";
        let env = format!(r#"{{"topic":"news","id":"{id}","event":"upd","data":{{"a":1}}}}"#);
        assert_eq!(msg.envelope(), env.as_bytes());
        assert_eq!(
            &msg.sse[..],
            format!("id: {id}\nevent: upd\ndata: {env}\n\n").as_bytes()
        );
        assert_eq!(
            msg.sse_body(),
            format!("event: upd\ndata: {env}\n\n").as_bytes()
        );
    }
}
