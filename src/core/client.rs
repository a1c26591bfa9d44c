//! What a core knows of one connected subscriber.

use std::os::fd::RawFd;
use std::task::Waker;

use super::frame::Frame;
use super::outbox::{Outbox, StreamCursor};
use super::replay::Replay;
use super::topics::TopicKey;
use super::wheel::TimerHandle;
use crate::time::Tick;

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

/// Where a client is in its life, as the core sees it: whether it takes
/// messages, and whether its output may be written.
///
/// ```text
/// admit ─▶ Held ─┬─ admitted, all confirmed ──────────────────────────▶ Open
///                └─ admitted, some pending ─▶ Confirming ─ confirmed ─▶ Open
/// Open { blocked: false } ◀─ writable ─ socket full ─▶ Open { blocked: true }
/// any ─ close(reason) ─▶ Closing(reason) ─ begin_close ─▶ Finishing { blocked: false }
/// Held, Confirming, Open { blocked } ─ mute ─▶ Finishing { blocked }
/// Finishing { blocked: false } ◀─ writable ─ socket full ─▶ Finishing { blocked: true }
/// ```
///
/// - A client registered outside an admission (tests, benches) starts `Open`.
/// - A mute releases a held client's output (its head, then its last frames)
///   without waiting for confirmations: it takes no messages any more.
/// - `close` also moves a `Finishing` client (the drain, a failed write), and a
///   later close replaces the reason of an earlier one; a slow-consumer cut
///   never replaces a close already asked for.
/// - `mute` leaves a `Closing` client as it is: its task has yet to see why.
///
/// Being written to (the dirty queue), the stream's shape (`multi_topic`), the
/// starting cursor (`fresh`) and the WebSocket probe (`probed`) are not part of
/// it: each can be either way in several states, so they stay flags of their own.
///
/// `#[repr(u8)]` with the message-taking states first: the fan-out's one check,
/// [`Lifecycle::takes_messages`], is a compare of the tag byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lifecycle {
    /// Being admitted: the response head and all that follows wait while the
    /// stream's topics are subscribed.
    Held,
    /// Admitted: the head waits until every subscription is confirmed by its
    /// home core, so a client that sees it receives everything published after.
    Confirming,
    /// Output flows: flushes write straight to the socket, unless it is
    /// `blocked` (full), when the connection task waits for writability and
    /// flushes itself.
    Open { blocked: bool },
    /// The core asked the connection task to close the client for this reason
    /// (the task does the removal); it takes no more messages.
    Closing(CloseReason),
    /// Closing, its last frames being written: takes no more messages (one
    /// published to it counts as dropped), output still flows (`blocked` as in
    /// `Open`).
    Finishing { blocked: bool },
}

impl Lifecycle {
    /// Messages are queued to the client: it is not closing. The rule the
    /// fan-out applies to every subscriber, so one compare.
    #[inline]
    pub fn takes_messages(self) -> bool {
        matches!(
            self,
            Lifecycle::Held | Lifecycle::Confirming | Lifecycle::Open { .. }
        )
    }

    /// A flush may write to the socket now: the head is released and the
    /// socket is not known to be full.
    #[inline]
    pub fn may_write(self) -> bool {
        matches!(
            self,
            Lifecycle::Open { blocked: false } | Lifecycle::Finishing { blocked: false }
        )
    }

    /// Output waits for the home cores' confirmations.
    #[inline]
    pub fn held(self) -> bool {
        matches!(self, Lifecycle::Held | Lifecycle::Confirming)
    }

    /// The socket is full: the connection task waits for writability.
    pub fn blocked(self) -> bool {
        matches!(
            self,
            Lifecycle::Open { blocked: true } | Lifecycle::Finishing { blocked: true }
        )
    }

    /// The reason the core asked to close the client, if it did.
    pub fn closing(self) -> Option<CloseReason> {
        match self {
            Lifecycle::Closing(reason) => Some(reason),
            _ => None,
        }
    }
}

/// A transition of [`Lifecycle`] (see its doc for the diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// An admission begins: hold the output.
    Hold,
    /// The admission is done; `confirmed`: every subscription is confirmed.
    Admitted { confirmed: bool },
    /// The last pending subscription was confirmed.
    Confirmed,
    /// A write found the socket full.
    SocketFull,
    /// The socket became writable.
    Writable,
    /// The core asks the task to close the client.
    Close(CloseReason),
    /// The outbox passed its bound (a close that never replaces another).
    CutSlow,
    /// The task starts closing a client the core asked to close.
    BeginClose,
    /// The connection is closing on its own (peer close, end of stream, a
    /// protocol error): no more messages.
    Mute,
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
    /// Where the client is in its life; changed only by [`Client::step`].
    life: Lifecycle,
    /// SSE streams over several topics render their own `id:` lines.
    pub multi_topic: bool,
    /// WebSocket permessage-deflate as agreed (`proto::ws::deflate::Agreed`, one
    /// byte; 0: off): picks the compressed cut of each message.
    pub ws_deflate: u8,
    /// No message or id line has been queued yet (SSE sends its starting cursor).
    pub fresh: bool,
    /// Listed in the core's dirty queue, for the next flush.
    pub dirty: bool,
    /// Listed in the core's urgent queue: an answer waits, written first.
    pub urgent: bool,
    /// The connection task, parked until the core has something for it to do.
    pub waker: Option<Waker>,
    /// When the last byte was written to the socket (heartbeats fill silences).
    pub last_write: Tick,
    /// When the last byte was read from the peer (WebSocket liveness).
    pub last_read: Tick,
    /// A WebSocket ping went out because the peer was silent for a heartbeat
    /// interval, and nothing was read since: no second one until it answers.
    pub probed: bool,
    /// The client's one timer-wheel entry, due at its earliest deadline.
    pub timer: Option<TimerHandle>,
    /// When the client's access token expires (`Tick::MAX`: never). A plain
    /// tick, not an `Option`: every client's slot carries it.
    pub expires_at: Tick,
    /// Acknowledgements waiting for their subscriptions to be confirmed.
    pub acks: Vec<PendingAck>,
    /// What the client's resumes still have to send, moved into the outbox as
    /// the socket drains (boxed: most clients never resume). Not a state of
    /// [`Lifecycle`]: a replay goes on in `Held` to `Open`, and ends with the
    /// client's close.
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
            life: Lifecycle::Open { blocked: false },
            multi_topic: false,
            ws_deflate: 0,
            fresh: true,
            dirty: false,
            urgent: false,
            waker: None,
            last_write: Tick::ZERO,
            last_read: Tick::ZERO,
            probed: false,
            timer: None,
            expires_at: Tick::MAX,
            acks: Vec::new(),
            replay: None,
        }
    }

    /// Where the client is in its life.
    #[inline]
    pub fn lifecycle(&self) -> Lifecycle {
        self.life
    }

    /// Applies one transition; every change of [`Lifecycle`] is made here. A
    /// transition that does not apply to the current state changes nothing.
    /// Returns whether the state changed.
    pub fn step(&mut self, t: Transition) -> bool {
        use Lifecycle as L;
        use Transition as T;
        let next = match (self.life, t) {
            (L::Open { blocked: false }, T::Hold) => {
                debug_assert!(self.subs.is_empty(), "hold after a subscribe");
                L::Held
            }
            (L::Held, T::Admitted { confirmed: true }) | (L::Confirming, T::Confirmed) => {
                L::Open { blocked: false }
            }
            (L::Held, T::Admitted { confirmed: false }) => L::Confirming,
            (L::Open { .. }, T::SocketFull) => L::Open { blocked: true },
            (L::Finishing { .. }, T::SocketFull) => L::Finishing { blocked: true },
            (L::Open { .. }, T::Writable) => L::Open { blocked: false },
            (L::Finishing { .. }, T::Writable) => L::Finishing { blocked: false },
            (_, T::Close(reason)) => L::Closing(reason),
            (L::Closing(_), T::CutSlow) => return false,
            (_, T::CutSlow) => L::Closing(CloseReason::SlowConsumer),
            // The head (kept) and the last frames go out now, confirmed or not.
            (L::Closing(_), T::BeginClose) => L::Finishing { blocked: false },
            (L::Held | L::Confirming, T::Mute) => L::Finishing { blocked: false },
            (L::Open { blocked }, T::Mute) => L::Finishing { blocked },
            _ => return false,
        };
        let changed = next != self.life;
        self.life = next;
        changed
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

    /// The client still takes messages: it is not closing, nor writing its
    /// last frames (a message for it now counts as dropped).
    #[inline]
    pub fn takes_messages(&self) -> bool {
        self.life.takes_messages()
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

#[cfg(test)]
mod tests {
    use super::*;
    use Lifecycle as L;
    use Transition as T;

    fn client_in(path: &[Transition]) -> Client {
        let mut c = Client::new(Transport::Ws, -1);
        for &t in path {
            c.step(t);
        }
        c
    }

    #[test]
    fn an_admission_holds_the_output_until_every_subscription_is_confirmed() {
        let mut c = client_in(&[T::Hold]);
        assert_eq!(c.lifecycle(), L::Held);
        assert!(c.lifecycle().held() && c.takes_messages());
        assert!(
            !c.step(T::Confirmed),
            "a confirmation during the admission waits"
        );
        c.step(T::Admitted { confirmed: false });
        assert_eq!(c.lifecycle(), L::Confirming);
        assert!(!c.lifecycle().may_write());
        c.step(T::Confirmed);
        assert_eq!(c.lifecycle(), L::Open { blocked: false });
        let c = client_in(&[T::Hold, T::Admitted { confirmed: true }]);
        assert_eq!(c.lifecycle(), L::Open { blocked: false });
    }

    #[test]
    fn a_held_client_cannot_be_blocked_and_a_closing_one_is_not_held() {
        let mut c = client_in(&[T::Hold]);
        assert!(!c.step(T::SocketFull));
        c.step(T::Close(CloseReason::Shutdown));
        assert_eq!(c.lifecycle(), L::Closing(CloseReason::Shutdown));
        assert!(!c.lifecycle().held() && !c.takes_messages());
        assert!(!c.step(T::Admitted { confirmed: true }));
        assert!(!c.step(T::Confirmed));
        c.step(T::BeginClose);
        assert_eq!(c.lifecycle(), L::Finishing { blocked: false });
        assert!(c.lifecycle().may_write() && !c.takes_messages());
    }

    #[test]
    fn a_slow_consumer_cut_never_replaces_a_close_already_asked_for() {
        let mut c = client_in(&[T::Close(CloseReason::TokenExpired)]);
        assert!(!c.step(T::CutSlow));
        assert_eq!(c.lifecycle().closing(), Some(CloseReason::TokenExpired));
        let mut c = client_in(&[T::Mute]);
        c.step(T::CutSlow);
        assert_eq!(c.lifecycle().closing(), Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn a_mute_keeps_the_socket_state_and_leaves_a_close_request_alone() {
        let mut c = client_in(&[T::SocketFull, T::Mute]);
        assert_eq!(c.lifecycle(), L::Finishing { blocked: true });
        assert!(c.lifecycle().blocked());
        c.step(T::Writable);
        assert!(c.lifecycle().may_write());
        let mut c = client_in(&[T::Close(CloseReason::IdleTimeout)]);
        assert!(!c.step(T::Mute));
        assert_eq!(c.lifecycle().closing(), Some(CloseReason::IdleTimeout));
    }

    #[test]
    fn a_client_slot_stays_at_200_bytes() {
        // Every connection holds one slot of the core's slab (which rounds its
        // capacity up to a power of two): 216 bytes before the token expiry
        // became a plain tick and the SSE cursor a boxed slice.
        let size = std::mem::size_of::<Client>();
        assert!(size <= 200, "a client takes {size} bytes");
    }

    #[test]
    fn the_lifecycle_is_two_bytes_and_the_message_check_reads_the_tag() {
        assert_eq!(std::mem::size_of::<Lifecycle>(), 2);
        assert!(L::Held.takes_messages());
        assert!(L::Confirming.takes_messages());
        assert!(L::Open { blocked: true }.takes_messages());
        assert!(!L::Closing(CloseReason::PeerGone).takes_messages());
        assert!(!L::Finishing { blocked: false }.takes_messages());
    }
}
