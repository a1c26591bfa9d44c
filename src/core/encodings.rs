//! The per-core encodings of a message, made on first use: one copy per core,
//! so the per-subscriber reference counts stay core-local and plain.
//!
//! A client takes one of three cuts of a message ([`FrameKind`]): the SSE
//! block, the SSE block without its `id:` line (a stream over several topics
//! writes its own cursor line), or the WebSocket text frame of the envelope.

use super::client::{Client, Transport};
use super::frame::Frame;
use super::message::Message;
use crate::proto::ws::frame as ws_frame;

/// Which encoding of a message a client takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The full SSE block, `id:` line included.
    Sse,
    /// The SSE block after its `id:` line.
    SseBody,
    /// A WebSocket text frame of the envelope.
    Ws,
}

impl FrameKind {
    #[inline]
    pub fn of(client: &Client) -> FrameKind {
        match client.transport {
            Transport::Sse if client.multi_topic => FrameKind::SseBody,
            Transport::Sse => FrameKind::Sse,
            Transport::Ws => FrameKind::Ws,
        }
    }
}

/// The encodings of one message on this core, each made when first asked for.
#[derive(Default)]
pub struct LazyFrames {
    sse: Option<Frame>,
    sse_body: Option<Frame>,
    ws: Option<Frame>,
}

impl LazyFrames {
    /// The frame of `msg` for a client taking `kind`, shared by every client
    /// of the core that takes it. Inlined into the fan-out loop: after the
    /// first client of each kind, this is one branch.
    #[inline(always)]
    pub fn get(&mut self, msg: &Message, kind: FrameKind) -> &Frame {
        let slot = match kind {
            FrameKind::Sse => &mut self.sse,
            FrameKind::SseBody => &mut self.sse_body,
            FrameKind::Ws => &mut self.ws,
        };
        slot.get_or_insert_with(|| encode(msg, kind))
    }
}

/// Encodes `msg` the way `kind` takes it (once per message, kind and core).
#[cold]
#[inline(never)]
fn encode(msg: &Message, kind: FrameKind) -> Frame {
    match kind {
        FrameKind::Sse => Frame::new(&msg.sse),
        FrameKind::SseBody => Frame::new(&msg.sse).from_offset(msg.sse_body),
        FrameKind::Ws => Frame::new(&ws_frame::text_frame(msg.envelope())),
    }
}
