//! The core's timers: one wheel per core holding every deadline of its
//! connections. A client has exactly one entry, due at the earliest of its
//! deadlines (heartbeat, idle); writes and reads only update `last_write` and
//! `last_read`, and an entry that fires early is simply re-filed. Tasks waiting on
//! a deadline (a request head, a close handshake) hold a `Wake` entry instead.
//!
//! Heartbeats: a stream silent for `--heartbeat` gets one (SSE comment, WS
//! ping), so proxies keep it open and a dead peer is found by the write. A
//! WebSocket also gets a ping when the *peer* has been silent that long, even
//! while messages flow to it: a browser only listens and sends nothing but the
//! pongs the pings ask for, and without this probe the idle timeout, which
//! counts inbound frames, would close every such client on a busy topic.

use std::os::fd::RawFd;
use std::task::{Context, Poll, Waker};

use super::CoreState;
use crate::core::client::{CloseReason, Transport};
use crate::core::frame::Frame;
use crate::core::registry::ClientId;
use crate::core::wheel::TimerHandle;
use crate::proto::sse;
use crate::time::Tick;

/// What a wheel entry stands for.
#[derive(Debug)]
pub enum TimerTarget {
    /// A client's liveness deadlines.
    Client(ClientId),
    /// A task waiting for a deadline.
    Wake(Waker),
    /// The oldest message kept comes due for `--history-ttl`.
    HistoryTtl,
}

/// A WebSocket ping with an empty payload (RFC 6455 §5.5.2), unmasked.
const WS_PING: &[u8] = &[0x89, 0x00];

/// The heartbeat frames, made once per core and shared by all its clients,
/// and the heartbeats of the last timer pass still to write.
pub(super) struct Heartbeats {
    sse: Frame,
    ws: Frame,
    /// Idle streams owed a heartbeat: nothing queued, nothing held. They are
    /// written as one batch ([`CoreState::write_heartbeats`]), straight from
    /// the static bytes, without touching their outboxes.
    due: Vec<ClientId>,
    /// The batch handed to the writer: `(socket, bytes)`, then what each
    /// write returned.
    sends: Vec<(RawFd, &'static [u8])>,
    results: Vec<i32>,
}

impl Heartbeats {
    pub(super) fn new() -> Self {
        Heartbeats {
            sse: Frame::new(sse::HEARTBEAT),
            ws: Frame::new(WS_PING),
            due: Vec::new(),
            sends: Vec::new(),
            results: Vec::new(),
        }
    }

    fn bytes(transport: Transport) -> &'static [u8] {
        match transport {
            Transport::Sse => sse::HEARTBEAT,
            Transport::Ws => WS_PING,
        }
    }
}

impl CoreState {
    /// Moves the core's clock forward (never back).
    pub fn set_now(&mut self, now: Tick) {
        self.now = self.now.max(now);
    }

    pub fn now(&self) -> Tick {
        self.now
    }

    /// Records that the peer of `id` sent something: any inbound frame counts as
    /// liveness, not only pongs.
    pub fn touch_read(&mut self, id: ClientId) {
        let now = self.now;
        if let Some(c) = self.clients.get_mut(id) {
            c.last_read = now;
            c.probed = false;
        }
    }

    /// The client's earliest deadline.
    fn client_deadline(&self, id: ClientId) -> Option<Tick> {
        let c = self.clients.get(id)?;
        let hb = self.limits.heartbeat;
        let mut heartbeat = c.last_write + hb;
        if c.transport == Transport::Ws && !c.probed {
            heartbeat = heartbeat.min(c.last_read + hb);
        }
        let idle = match c.transport {
            Transport::Ws if !self.limits.idle.is_zero() => c.last_read + self.limits.idle,
            _ => Tick::MAX,
        };
        let expiry = c.expires_at;
        Some(heartbeat.min(idle).min(expiry).max(self.now + Tick::new(1)))
    }

    /// Closes the client at `at` (its access token's expiry).
    pub fn set_expiry(&mut self, id: ClientId, at: Tick) {
        if let Some(c) = self.clients.get_mut(id) {
            c.expires_at = at;
        }
        self.arm_client(id);
    }

    /// Files (or re-files) the client's one wheel entry at its earliest deadline.
    pub(super) fn arm_client(&mut self, id: ClientId) {
        let Some(deadline) = self.client_deadline(id) else {
            return;
        };
        let existing = self.clients.get(id).and_then(|c| c.timer);
        if let Some(handle) = existing {
            if self.wheel.reschedule(handle, deadline.get()) {
                self.kick_ticks(deadline);
                return;
            }
        }
        let handle = self.wheel.insert(deadline.get(), TimerTarget::Client(id));
        if let Some(c) = self.clients.get_mut(id) {
            c.timer = Some(handle);
        }
        self.kick_ticks(deadline);
    }

    /// Files the history's age deadline (the oldest message kept comes due),
    /// unless one is filed already: it is never later than a newer message's.
    pub(super) fn arm_history_expiry(&mut self) {
        if self.history_timer.is_some() {
            return;
        }
        if let Some(due) = self.homes.next_expiry() {
            let due = due.max(self.now + Tick::new(1));
            self.history_timer = Some(self.wheel.insert(due.get(), TimerTarget::HistoryTtl));
            self.kick_ticks(due);
        }
    }

    /// A deadline for a waiting task; poll it with [`CoreState::poll_wake`].
    pub fn insert_wake(&mut self, deadline: Tick, waker: Waker) -> TimerHandle {
        let handle = self.wheel.insert(deadline.get(), TimerTarget::Wake(waker));
        self.kick_ticks(deadline);
        self.metrics.timer_entries.set(self.wheel.len() as u64);
        handle
    }

    /// Ready once the deadline of `handle` has passed (its entry fired).
    pub fn poll_wake(&mut self, handle: TimerHandle, cx: &mut Context<'_>) -> Poll<()> {
        match self.wheel.get_mut(handle) {
            Some(TimerTarget::Wake(w)) => {
                if !w.will_wake(cx.waker()) {
                    *w = cx.waker().clone();
                }
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// Cancels a task deadline; a handle that already fired is a no-op.
    pub fn cancel_wake(&mut self, handle: TimerHandle) {
        if let Some(TimerTarget::Client(id)) = self.wheel.cancel(handle) {
            debug_assert!(false, "a wake handle cancelled the timer of client {id:?}");
        }
        self.metrics.timer_entries.set(self.wheel.len() as u64);
    }

    /// Wakes the tick task when a deadline comes before the one it sleeps until.
    fn kick_ticks(&mut self, deadline: Tick) {
        if deadline < self.tick_target {
            if let Some(w) = self.tick_waker.take() {
                self.effects.wake(w);
            }
        }
    }

    /// The wheel's next deadline (possibly early, never late).
    pub fn next_timer(&self) -> Option<Tick> {
        self.wheel.next_expiration().map(Tick::new)
    }

    /// For the tick task: registers its waker, to be woken when a deadline earlier
    /// than the one it sleeps until is filed.
    pub fn park_ticks(&mut self, cx: &mut Context<'_>) {
        self.tick_target = self.next_timer().unwrap_or(Tick::MAX);
        self.tick_waker = Some(cx.waker().clone());
    }

    /// Fires every deadline up to `now`; returns how many fired.
    pub fn advance_timers(&mut self, now: Tick) -> usize {
        self.set_now(now);
        let mut fired = 0;
        while let Some((_, target)) = self.wheel.poll_expired(self.now.get()) {
            fired += 1;
            match target {
                TimerTarget::Wake(w) => self.effects.wake(w),
                TimerTarget::Client(id) => self.on_client_timer(id),
                TimerTarget::HistoryTtl => {
                    self.history_timer = None;
                    self.homes.expire(self.now);
                    self.arm_history_expiry();
                    self.update_gauges();
                }
            }
        }
        self.metrics.timer_entries.set(self.wheel.len() as u64);
        fired
    }

    /// A client's entry came due: close it if silent too long, send a heartbeat
    /// if the stream was quiet, and re-file the entry.
    fn on_client_timer(&mut self, id: ClientId) {
        let now = self.now;
        let (hb, idle) = (self.limits.heartbeat, self.limits.idle);
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        c.timer = None;
        if c.lifecycle().closing().is_some() {
            return;
        }
        c.outbox.release_room();
        if now >= c.expires_at {
            self.close(id, CloseReason::TokenExpired);
            return;
        }
        if c.transport == Transport::Ws && !idle.is_zero() && now >= c.last_read + idle {
            self.metrics.idle_timeouts.inc();
            self.close(id, CloseReason::IdleTimeout);
            return;
        }
        // A WebSocket peer silent for a heartbeat interval is asked for a pong,
        // once, even while messages flow to it (see the module doc).
        let probe = c.transport == Transport::Ws && !c.probed && now >= c.last_read + hb;
        if (now >= c.last_write + hb || probe) && c.takes_messages() {
            c.last_write = now;
            c.probed |= probe;
            self.metrics.heartbeats.inc();
            if c.outbox.is_empty() && !c.dirty && c.replay.is_none() && c.lifecycle().may_write() {
                self.heartbeats.due.push(id);
            } else {
                // Behind other output: it goes with it, in order.
                let beat = match c.transport {
                    Transport::Sse => &self.heartbeats.sse,
                    Transport::Ws => &self.heartbeats.ws,
                };
                c.outbox.push_frame_alone(beat);
                self.mark_dirty(id);
            }
        }
        self.arm_client(id);
    }

    /// Writes the heartbeats the timer passes found due to idle streams, all
    /// at once: `send` makes the writes (one io_uring submission, in the
    /// runtime) and fills in what each returned, a byte count or `-errno`.
    /// A heartbeat that did not go whole (a full socket, a peer gone) is
    /// queued to its client instead, and the flush deals with it as with any
    /// write. Returns the writes made.
    pub fn write_heartbeats(
        &mut self,
        send: impl FnOnce(&[(RawFd, &'static [u8])], &mut [i32]),
    ) -> usize {
        let hb = &mut self.heartbeats;
        hb.sends.clear();
        hb.due.retain(|&id| match self.clients.get(id) {
            // Still as it was found: a later timer of the same pass may have
            // started closing it.
            Some(c) if c.outbox.is_empty() && !c.dirty && c.lifecycle().may_write() => {
                hb.sends.push((c.fd, Heartbeats::bytes(c.transport)));
                true
            }
            _ => false,
        });
        if hb.sends.is_empty() {
            return 0;
        }
        hb.results.clear();
        hb.results.resize(hb.sends.len(), 0);
        send(&hb.sends, &mut hb.results);
        let mut due = std::mem::take(&mut self.heartbeats.due);
        for (i, id) in due.drain(..).enumerate() {
            let (_, bytes) = self.heartbeats.sends[i];
            let written = usize::try_from(self.heartbeats.results[i]).unwrap_or(0);
            if written >= bytes.len() {
                continue;
            }
            if let Some(c) = self.clients.get_mut(id) {
                c.outbox.push(&bytes[written..]);
                self.mark_dirty(id);
            }
        }
        self.heartbeats.due = due;
        self.heartbeats.sends.len()
    }

    /// Entries in the wheel (the `ringcast_timer_entries` gauge).
    pub fn timer_entries(&self) -> usize {
        self.wheel.len()
    }
}
