//! The per-core encodings of a message, made on first use: one copy per core,
//! so the per-subscriber reference counts stay core-local and plain.
//!
//! A client takes one of four cuts of a message ([`FrameKind`]): the SSE
//! block, the SSE block without its `id:` line (a stream over several topics
//! writes its own cursor line), the WebSocket text frame of the envelope, or
//! that frame compressed (permessage-deflate): compressed once per message and
//! core for every client that agreed to it, never per client.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::client::{Client, Transport};
use super::frame::Frame;
use super::message::Message;
use crate::proto::ws::deflate::{self, Agreed};
use crate::proto::ws::frame::{self as ws_frame, OpCode};

/// `--ws-deflate-min-bytes`: envelopes shorter than this go plain to every
/// client. Process-wide configuration, set once at start
/// ([`set_ws_deflate_min`]) and read only when a message is compressed.
static WS_DEFLATE_MIN: AtomicUsize = AtomicUsize::new(DEFAULT_WS_DEFLATE_MIN);

/// Below this, deflate saves under 15 % of a JSON envelope (at 64 bytes
/// nothing), and the client still pays an inflate: README, permessage-deflate.
pub const DEFAULT_WS_DEFLATE_MIN: usize = 128;

/// Sets `--ws-deflate-min-bytes` (once, before the workers start).
pub fn set_ws_deflate_min(bytes: usize) {
    WS_DEFLATE_MIN.store(bytes, Ordering::Relaxed);
}

/// Which encoding of a message a client takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The full SSE block, `id:` line included.
    Sse,
    /// The SSE block after its `id:` line.
    SseBody,
    /// A WebSocket text frame of the envelope.
    Ws,
    /// The WebSocket frame for a client with permessage-deflate (the
    /// [`Agreed`] byte): compressed, or plain when that is better or when the
    /// client's window is too small for the message.
    WsDeflate(u8),
}

impl FrameKind {
    #[inline]
    pub fn of(client: &Client) -> FrameKind {
        match client.transport {
            Transport::Sse if client.multi_topic => FrameKind::SseBody,
            Transport::Sse => FrameKind::Sse,
            Transport::Ws if client.ws_deflate != 0 => FrameKind::WsDeflate(client.ws_deflate),
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
    /// The compressed frame (RSV1), or a clone of the plain one when the
    /// message goes plain to every deflate client (short, or incompressible).
    ws_deflate: Option<Frame>,
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
            FrameKind::WsDeflate(agreed)
                if Agreed::from_byte(agreed).takes_compressed(msg.envelope.len()) =>
            {
                if self.ws_deflate.is_none() {
                    self.deflate(msg);
                }
                &mut self.ws_deflate
            }
            FrameKind::WsDeflate(_) => &mut self.ws,
        };
        slot.get_or_insert_with(|| encode(msg, kind))
    }

    /// Makes the compressed cut of `msg`, once (a clone of the plain frame when
    /// the message is not worth compressing).
    #[cold]
    #[inline(never)]
    fn deflate(&mut self, msg: &Message) {
        let env = msg.envelope();
        let frame = match (env.len() >= WS_DEFLATE_MIN.load(Ordering::Relaxed))
            .then(|| deflate::compressed_frame(OpCode::Text, env))
            .flatten()
        {
            Some(bytes) => Frame::new(&bytes),
            None => self
                .ws
                .get_or_insert_with(|| encode(msg, FrameKind::Ws))
                .clone(),
        };
        self.ws_deflate = Some(frame);
    }
}

/// Encodes `msg` the way `kind` takes it (once per message, kind and core).
#[cold]
#[inline(never)]
fn encode(msg: &Message, kind: FrameKind) -> Frame {
    match kind {
        FrameKind::Sse => Frame::new(&msg.sse),
        FrameKind::SseBody => Frame::new(&msg.sse).from_offset(msg.sse_body),
        FrameKind::Ws | FrameKind::WsDeflate(_) => {
            Frame::new(&ws_frame::text_frame(msg.envelope()))
        }
    }
}
