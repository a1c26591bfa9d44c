//! What a core knows of one connected subscriber.

use std::os::fd::RawFd;
use std::task::Waker;

use super::frame::Frame;
use super::outbox::{Outbox, StreamCursor};
use super::replay::Replay;
use super::topics::TopicKey;
use super::wheel::TimerHandle;

/// How the client receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse,
    Ws,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }
}

/// Why a client is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed or reset the connection.
    PeerGone,
    /// The outbox passed `--max-outbox-bytes`.
    SlowConsumer,
    /// The server is draining.
    Shutdown,
    /// A WebSocket client sent nothing (no frame, no pong) for `--idle-timeout`.
    IdleTimeout,
    /// The client's access token expired.
    TokenExpired,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::PeerGone => "peer",
            CloseReason::SlowConsumer => "slow",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IdleTimeout => "idle",
            CloseReason::TokenExpired => "expired",
        }
    }
}

/// One topic a client listens to.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub topic: TopicKey,
    /// Position of this client in the topic's subscriber list.
    pub pos: u32,
    /// Position in the topic of the newest message queued to the client.
    pub seq: u64,
    /// Waiting for the home core's answer (start position, backlog); live
    /// messages are skipped meanwhile, the answer covers them.
    pub pending: bool,
    /// The request the answer must carry (an unsubscribe and a new subscribe
    /// to the same topic must not take the old request's answer).
    pub req: u32,
    /// The acknowledgement this subscription holds back until it is confirmed
    /// (0: none), see [`PendingAck`].
    pub ack: u32,
}

/// An answer (a WS `ack`) sent once every subscription of one request is
/// confirmed by its home core: from then on, everything published reaches the
/// client.
#[derive(Debug, Clone)]
pub struct PendingAck {
    pub token: u32,
    /// Subscriptions still unconfirmed, plus one while the request is being made.
    pub waiting: u16,
    pub bytes: bytes::Bytes,
}

/// Write side of the connection, as the core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteState {
    /// Flushes write straight to the socket.
    Ready,
    /// The socket was full: the connection task waits for writability and flushes.
    Blocked,
    /// The client must go; its connection task does the removal.
    Closing(CloseReason),
}

pub struct Client {
    pub transport: Transport,
    /// The socket, written to directly by flushes on this core. Valid while the
    /// client is registered: the connection task removes the client before it
    /// closes the socket.
    pub fd: RawFd,
    pub subs: Vec<Subscription>,
    pub outbox: Outbox,
    /// SSE streams: the cursor of the `id:` lines.
    pub cursor: Option<StreamCursor>,
    /// SSE streams over several topics render their own `id:` lines.
    pub multi_topic: bool,
    /// No message or id line has been queued yet (SSE sends its starting cursor).
    pub fresh: bool,
    pub write: WriteState,
    /// Queued for the next flush of dirty clients.
    pub dirty: bool,
    /// Takes no more messages: the connection is closing (its last frames are
    /// being written); anything published to it now counts as dropped.
    pub muted: bool,
    /// The connection task, parked until the core has something for it to do.
    pub waker: Option<Waker>,
    /// Tick of the last byte written to the socket (heartbeats fill silences).
    pub last_write: u64,
    /// Tick of the last byte read from the peer (WebSocket liveness).
    pub last_read: u64,
    /// A WebSocket ping went out because the peer was silent for a heartbeat
    /// interval, and nothing was read since: no second one until it answers.
    pub probed: bool,
    /// The client's one timer-wheel entry, due at its earliest deadline.
    pub timer: Option<TimerHandle>,
    /// Tick at which the client's access token expires.
    pub expires_at: Option<u64>,
    /// Acknowledgements waiting for their subscriptions to be confirmed.
    pub acks: Vec<PendingAck>,
    /// Nothing is written yet: the response head (`200`, `101`) waits until
    /// every topic of the request is confirmed by its home core, so a client
    /// that sees it receives everything published from then on.
    pub gated: bool,
    /// Open the gate as soon as no subscription is pending.
    pub open_when_ready: bool,
    /// What the client's resumes still have to send, moved into the outbox as
    /// the socket drains (boxed: most clients never resume).
    pub replay: Option<Box<Replay>>,
}

impl Client {
    pub fn new(transport: Transport, fd: RawFd) -> Self {
        Self {
            transport,
            fd,
            subs: Vec::new(),
            outbox: Outbox::default(),
            cursor: None,
            multi_topic: false,
            fresh: true,
            write: WriteState::Ready,
            dirty: false,
            muted: false,
            waker: None,
            last_write: 0,
            last_read: 0,
            probed: false,
            timer: None,
            expires_at: None,
            acks: Vec::new(),
            gated: false,
            open_when_ready: false,
            replay: None,
        }
    }

    /// One subscription of acknowledgement `token` is settled (confirmed, or
    /// dropped while pending): queue the ack once none is left.
    pub fn settle_ack(&mut self, token: u32) {
        if token == 0 {
            return;
        }
        let Some(i) = self.acks.iter().position(|a| a.token == token) else {
            return;
        };
        self.acks[i].waiting -= 1;
        if self.acks[i].waiting == 0 {
            let ack = self.acks.swap_remove(i);
            self.outbox.push(&ack.bytes);
        }
    }

    /// The client still takes messages: it is not closing, nor muted for its
    /// last frames (a message for it now counts as dropped).
    #[inline]
    pub fn takes_messages(&self) -> bool {
        !self.muted && !matches!(self.write, WriteState::Closing(_))
    }

    /// Queues one message of subscription `index` to the outbox: the frame,
    /// after its cursor line on a stream over several topics.
    #[inline]
    pub fn push_message(&mut self, index: u16, seq: u64, frame: Frame) {
        if self.multi_topic {
            self.outbox.push_cursor(index, seq);
        }
        self.outbox.push_owned(frame);
    }

    /// Bytes queued to the client that count toward `--max-outbox-bytes`: the
    /// outbox and the live messages waiting behind a resume (not the backlog,
    /// which is paced by the socket).
    #[inline]
    pub fn queued_bytes(&self) -> usize {
        self.outbox.bytes() + self.replay.as_ref().map_or(0, |r| r.live_bytes())
    }

    /// Messages queued and not yet written (dropped if the client goes now).
    pub fn queued_messages(&self) -> usize {
        self.outbox.len() + self.replay.as_ref().map_or(0, |r| r.len())
    }

    /// Index of the subscription to `topic`, if any.
    pub fn sub_index(&self, topic: TopicKey) -> Option<usize> {
        self.subs.iter().position(|s| s.topic == topic)
    }
}
