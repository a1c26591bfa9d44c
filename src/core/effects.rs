//! What a core asks of the world outside it, queued while it handles input and
//! carried out by the runtime at one point per turn of the event loop.
//!
//! The core never touches the bus, a socket's readiness or the executor itself:
//! every change to [`CoreState`](super::state::CoreState) that has an effect
//! beyond it leaves that effect here. There are five kinds:
//!
//! | effect | queued by | carried out by the runtime |
//! |---|---|---|
//! | a message for another core | publish, subscribe, release, a home's answers | handed to the bus, then each core sent to is woken once |
//! | a task to wake | a close request, a full socket, a publish answered, a deadline | [`Waker::wake`] |
//! | a message to queue to this core's subscribers | a publish stamped here, a message from its home core | queued to each subscriber after the publish was answered, a bounded amount per run |
//! | a client to flush (a *dirty* client) | anything queued to a client | one vectored write per client, in slices, paced by [`WritePacing`](super::pacing::WritePacing) |
//! | a client with an answer to flush (an *urgent* client) | an acknowledgement or control answer | written first, never held |
//!
//! The runtime parks one task on [`Effects::poll_ready`]; the first effect
//! queued wakes it, so it runs after the tasks already woken in the same turn
//! and sees everything they queued: cross-core messages leave in one batch per
//! turn and each client gets one write for all the messages of the turn. The
//! work is done in bounded runs (so that reads and answers are never held up
//! for long); the writes of a busy core may also be held back for a bounded
//! time by its write pacing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::bus_msg::CoreMsg;
use super::message::Message;
use super::registry::ClientId;

/// How far a core's fan-out may fall behind its publishes, in subscribers to
/// visit (about 30 ms of queueing work): past it, publishes on this core wait
/// for their answer and the core takes nothing more from the bus, so a
/// publisher faster than the fan-out is slowed instead of growing memory.
pub const MAX_PENDING_VISITS: usize = 1 << 20;

/// The effects queue of one core (see the module doc).
#[derive(Default)]
pub struct Effects {
    /// Messages for other cores, in send order: `(core, message)`.
    sends: Vec<(usize, CoreMsg)>,
    /// Tasks to wake.
    wakes: Vec<Waker>,
    /// Messages to queue to this core's subscribers, in the order their home
    /// cores stamped them. Queued by the effects task, so that a publish is
    /// answered before its fan-out begins.
    pub(super) deliveries: VecDeque<Arc<Message>>,
    /// Subscribers the waiting deliveries will visit (see [`Effects::behind`]).
    pub(super) pending_visits: usize,
    /// Clients with an answer to write, never held back: their `urgent` flag
    /// says whether they are here.
    pub(super) urgent: VecDeque<ClientId>,
    /// Clients with output not yet written, oldest first. A client is listed at
    /// most once: its `dirty` flag says whether it is here.
    pub(super) dirty: VecDeque<ClientId>,
    /// The runtime's effects task, parked until an effect is queued.
    runner: Option<Waker>,
}

impl Effects {
    /// Queues a message for `core` (never this core: it handles its own at once).
    pub(super) fn send(&mut self, core: usize, msg: CoreMsg) {
        self.sends.push((core, msg));
        self.due();
    }

    /// Queues a task to wake.
    pub(super) fn wake(&mut self, waker: Waker) {
        self.wakes.push(waker);
        self.due();
    }

    /// Queues a client to flush; the caller checked and set its `dirty` flag.
    pub(super) fn mark_dirty(&mut self, id: ClientId) {
        self.dirty.push_back(id);
        self.due();
    }

    /// Queues a message for this core's `visits` subscribers of its topic.
    pub(super) fn deliver(&mut self, msg: Arc<Message>, visits: usize) {
        self.deliveries.push_back(msg);
        self.pending_visits += visits;
        self.due();
    }

    /// The fan-out is behind: the deliveries waiting would visit more than
    /// [`MAX_PENDING_VISITS`] subscribers.
    pub fn behind(&self) -> bool {
        self.pending_visits > MAX_PENDING_VISITS
    }

    /// Queues a client with an answer to write; the caller checked and set its
    /// `urgent` flag.
    pub(super) fn mark_urgent(&mut self, id: ClientId) {
        self.urgent.push_back(id);
        self.due();
    }

    /// An effect was queued: wake the runner unless it is awake already. Cheap
    /// when it is (one `None` check), so a fan-out may call it once per batch.
    #[inline]
    pub(super) fn due(&mut self) {
        if let Some(w) = self.runner.take() {
            w.wake();
        }
    }

    /// Nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
            && self.wakes.is_empty()
            && self.dirty.is_empty()
            && self.deliveries.is_empty()
            && self.urgent.is_empty()
    }

    /// Something is queued that is never held back (all but the dirty clients).
    fn pressing(&self) -> bool {
        !(self.sends.is_empty()
            && self.wakes.is_empty()
            && self.deliveries.is_empty()
            && self.urgent.is_empty())
    }

    /// Ready when some effect is queued that may be carried out now (the dirty
    /// clients only when `may_write`); otherwise parks `cx` until one is queued.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>, may_write: bool) -> Poll<()> {
        if self.pressing() || (may_write && !self.dirty.is_empty()) {
            return Poll::Ready(());
        }
        if !self
            .runner
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.runner = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Takes the queued cross-core messages, in send order.
    #[must_use]
    pub fn poll_transmit(&mut self) -> std::vec::Drain<'_, (usize, CoreMsg)> {
        self.sends.drain(..)
    }

    /// Wakes every task queued to wake.
    pub fn wake_tasks(&mut self) {
        for w in self.wakes.drain(..) {
            w.wake();
        }
    }
}
