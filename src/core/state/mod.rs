//! The state of one core: its clients, its topic indexes, the topics it is home
//! to, and the publishes it waits on. Single-threaded, owned by its worker; other
//! cores are reached only through [`CoreMsg`]s.
//!
//! The runtime drives it: it registers and removes clients and hands in the bus
//! messages that arrive. Everything the core wants done outside itself (messages
//! for other cores, tasks to wake, clients to write) waits in its [`Effects`]
//! queue, which the runtime carries out at one point per turn of its event loop:
//! [`CoreState::poll_effects`], then [`CoreState::run_effects`] in slices until it
//! returns false, so that every client touched in the turn gets one coalesced
//! write.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use slab::Slab;

use super::bus_msg::{Backlog, CoreMsg, Gap, ReplyTo, Since, Sinces};
use super::client::{Client, CloseReason, PendingAck, Subscription, Transition, Transport};
use super::effects::Effects;
use super::encodings::{FrameKind, LazyFrames};
use super::frame::Frame;
use super::homes::{HistoryLimits, HomeTopics};
use super::message::Message;
use super::outbox::{Flush, FlushScratch, StreamCursor};
use super::pacing::WritePacing;
use super::registry::{ClientId, Registry};
use super::replay::{BacklogCache, Replay, REPLAY_SLICE, REPLAY_SLICE_ITEMS};
use super::topics::{home_of, LocalTopics};
use crate::metrics::CoreMetrics;
use crate::proto::cursor::IdScheme;
use crate::proto::envelope::{self, GAP_EVENT};
use crate::proto::publish::PublishError;
use crate::proto::sse;
use crate::proto::ws::frame as ws_frame;
use crate::time::Tick;

mod home;
#[cfg(test)]
mod pacing_tests;
#[cfg(test)]
mod tests;
mod timers;

use timers::Heartbeats;
pub use timers::TimerTarget;

use super::wheel::TimerWheel;

/// Limits and timers the core enforces per client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_outbox_bytes: usize,
    pub max_topics_per_client: usize,
    /// A stream idle this long gets a heartbeat (SSE comment, WS ping).
    pub heartbeat: Tick,
    /// A WebSocket client silent this long is closed; zero: never.
    pub idle: Tick,
    /// The longest a busy core holds its writes back (`--write-delay`; see
    /// [`WritePacing`]); zero: never.
    pub write_delay: Duration,
}

/// Subscribers visited per client written, when a run of the effects queues
/// deliveries before its slice of writes (a visit costs far less than a write).
pub const VISITS_PER_CLIENT: usize = 64;

/// Why a subscribe was refused. The client is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("too many topics for one client (--max-topics-per-client)")]
    TooManyTopics,
    #[error("unknown client")]
    UnknownClient,
}

/// A stream to admit, as both transports hand it to the core.
pub struct Admission<'a> {
    pub transport: Transport,
    pub fd: RawFd,
    /// The response head (`200`, `101`).
    pub head: &'a [u8],
    /// When the client's access token expires.
    pub expires_at: Option<Tick>,
    /// The stream's topics, validated and within `--max-topics-per-client`.
    pub topics: &'a [String],
    /// Where each topic starts (a resume, or live).
    pub sinces: Sinces,
    /// WebSocket permessage-deflate as agreed (`Agreed::to_byte`; 0: off).
    pub ws_deflate: u8,
}

/// The outcome of a publish started on this core.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishStart {
    /// The topic's home is this core: stamped already.
    Done(u64),
    /// Sent to the home core; poll [`CoreState::poll_publish`] with this slot.
    Pending(u32),
}

/// What a connection task should do for its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTask {
    /// The socket is full: wait until it is writable, then [`CoreState::flush_client`].
    AwaitWritable,
    /// Close the connection and remove the client.
    Close(CloseReason),
}

#[derive(Default)]
struct PublishSlot {
    result: Option<Result<u64, PublishError>>,
    waker: Option<Waker>,
}

pub struct CoreState {
    core: u16,
    cores: usize,
    ids: IdScheme,
    limits: Limits,
    clients: Registry<Client>,
    local: LocalTopics,
    homes: HomeTopics,
    pending: Slab<PublishSlot>,
    /// What the core asks of the runtime: cross-core messages, wakes, flushes.
    effects: Effects,
    scratch: FlushScratch,
    /// When the writes of the dirty clients may start.
    pacing: WritePacing,
    metrics: Arc<CoreMetrics>,
    /// Every timer of the core: client liveness and task deadlines.
    wheel: TimerWheel<TimerTarget>,
    heartbeats: Heartbeats,
    /// The current tick, as last told by the runtime.
    now: Tick,
    /// The tick task, and the tick it sleeps until.
    tick_waker: Option<Waker>,
    tick_target: Tick,
    /// Counter of subscribe requests (see [`Subscription::req`]).
    next_req: u32,
    /// Topics are shared through a broker: positions come from its streams.
    broker: bool,
    /// The wheel entry due when the oldest message kept leaves for its age.
    history_timer: Option<super::wheel::TimerHandle>,
    /// This core's encodings of the backlogs its clients replay.
    backlogs: BacklogCache,
    /// The empty backlog of every live subscribe: shared, so a subscribe
    /// allocates none.
    no_backlog: Backlog,
}

impl CoreState {
    pub fn new(
        core: usize,
        cores: usize,
        ids: IdScheme,
        limits: Limits,
        history: HistoryLimits,
        metrics: Arc<CoreMetrics>,
    ) -> Self {
        Self {
            core: core as u16,
            cores,
            ids,
            limits,
            clients: Registry::new(core as u16),
            local: LocalTopics::default(),
            homes: HomeTopics::new(history, metrics.clone()),
            pending: Slab::new(),
            effects: Effects::default(),
            scratch: FlushScratch::default(),
            pacing: WritePacing::new(limits.write_delay),
            metrics,
            wheel: TimerWheel::new(),
            heartbeats: Heartbeats::new(),
            now: Tick::ZERO,
            tick_waker: None,
            tick_target: Tick::MAX,
            next_req: 0,
            broker: false,
            history_timer: None,
            backlogs: BacklogCache::default(),
            no_backlog: Backlog::from([]),
        }
    }

    /// Shares topics through the broker bridge (bus index `cores`): publishes go
    /// to it, positions are its stream ids.
    pub fn with_broker(mut self) -> Self {
        self.broker = true;
        self.ids = IdScheme::Stream;
        self.homes.set_broker();
        self
    }

    pub fn core(&self) -> usize {
        usize::from(self.core)
    }

    /// How positions become ids for clients.
    pub fn ids(&self) -> IdScheme {
        self.ids
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub fn client(&self, id: ClientId) -> Option<&Client> {
        self.clients.get(id)
    }

    /// The topics a client is subscribed to, in the order it subscribed.
    pub fn topic_names(&self, id: ClientId) -> Vec<Arc<str>> {
        let Some(c) = self.clients.get(id) else {
            return Vec::new();
        };
        c.subs
            .iter()
            .filter_map(|s| self.local.get(s.topic).map(|t| t.name.clone()))
            .collect()
    }

    // ---- registration -------------------------------------------------------

    /// Registers a connected client; from now on it receives what is queued to it.
    pub fn register(&mut self, transport: Transport, fd: RawFd) -> ClientId {
        let mut client = Client::new(transport, fd);
        client.last_read = self.now;
        client.last_write = self.now;
        let id = self.clients.insert(client);
        self.arm_client(id);
        self.update_gauges();
        id
    }

    /// Admits a stream: registers its client, queues its response head, and
    /// subscribes it to its topics. The head goes out only once every topic's
    /// home core has confirmed the subscription: a client that sees it receives
    /// everything published from then on. The one sequence both transports use.
    pub fn admit(&mut self, a: Admission<'_>) -> ClientId {
        let id = self.register(a.transport, a.fd);
        if let Some(c) = self.clients.get_mut(id) {
            // Exactly as many as the request names: a first push would round
            // the list up to four (128 bytes kept by every one-topic stream).
            c.subs.reserve_exact(a.topics.len());
            c.ws_deflate = a.ws_deflate;
        }
        if a.transport == Transport::Sse {
            self.set_stream_cursor(id, a.topics.len());
        }
        self.queue_head(id, a.head);
        if let Some(at) = a.expires_at {
            self.set_expiry(id, at);
        }
        self.hold(id);
        for (i, topic) in a.topics.iter().enumerate() {
            let since = a.sinces.get(i);
            // The caller validated and bounded the list: a refusal here would be
            // a bug, and the stream then simply lacks that topic.
            let _ = self.subscribe(id, topic, since);
        }
        self.open_when_ready(id);
        id
    }

    /// The client's permessage-deflate agreement byte (0: off or unknown client).
    pub fn ws_deflate(&self, id: ClientId) -> u8 {
        self.clients.get(id).map_or(0, |c| c.ws_deflate)
    }

    /// Sets a WebSocket client's permessage-deflate agreement byte (clients
    /// registered outside an admission: benches, tests).
    pub fn set_ws_deflate(&mut self, id: ClientId, agreed: u8) {
        if let Some(c) = self.clients.get_mut(id) {
            c.ws_deflate = agreed;
        }
    }

    /// Makes an SSE client's stream carry a cursor over `topics` topics.
    pub fn set_stream_cursor(&mut self, id: ClientId, topics: usize) {
        let ids = self.ids;
        if let Some(c) = self.clients.get_mut(id) {
            c.multi_topic = topics > 1;
            c.cursor = Some(StreamCursor {
                ids,
                written: vec![0; topics].into_boxed_slice(),
            });
        }
    }

    /// Removes a client: from the registry, every topic index, and its outbox.
    /// The one place a client leaves; a stale id is a no-op and returns false.
    pub fn remove(&mut self, id: ClientId, reason: CloseReason) -> bool {
        let Some(client) = self.clients.remove(id) else {
            return false;
        };
        if let Some(timer) = client.timer {
            self.wheel.cancel(timer);
        }
        for sub in &client.subs {
            self.unlink(sub);
        }
        let m = &self.metrics;
        m.dropped.add(client.queued_messages() as u64);
        let i = crate::metrics::CLOSE_REASONS
            .iter()
            .position(|r| *r == reason.label())
            .unwrap_or(0);
        match client.transport {
            Transport::Sse => m.closed_sse[i].inc(),
            Transport::Ws => m.closed_ws[i].inc(),
        }
        self.update_gauges();
        true
    }

    /// Drops one subscription from its topic's list, fixing the entry moved into
    /// its place and releasing the topic at its home when it was the last.
    fn unlink(&mut self, sub: &Subscription) {
        let (moved, gone) = self.local.remove(sub.topic, sub.pos);
        if let Some((other, other_index)) = moved {
            if let Some(s) = self
                .clients
                .get_mut(other)
                .and_then(|c| c.subs.get_mut(usize::from(other_index)))
            {
                s.pos = sub.pos;
            }
        }
        if let Some(topic) = gone {
            let home = home_of(&topic, self.cores);
            let core = self.core;
            self.post(home, CoreMsg::Release { topic, core });
        }
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.connections_sse
            .set(self.clients.count(Transport::Sse as usize) as u64);
        m.connections_ws
            .set(self.clients.count(Transport::Ws as usize) as u64);
        m.subscriptions.set(self.local.subscriptions() as u64);
        m.topics_local.set(self.local.len() as u64);
        m.topics_home.set(self.homes.len() as u64);
        m.history_bytes.set(self.homes.history_bytes() as u64);
        m.history_messages.set(self.homes.messages() as u64);
        m.timer_entries.set(self.wheel.len() as u64);
    }

    /// Asks every client of the core to close (the drain at shutdown).
    pub fn close_all(&mut self, reason: CloseReason) {
        for id in self.clients.ids() {
            self.close(id, reason);
        }
    }

    /// Sends `msg` to `core`, or handles it at once when that is this core.
    fn post(&mut self, core: usize, msg: CoreMsg) {
        if core == self.core() {
            self.handle(msg);
        } else {
            self.send(core, msg);
        }
    }

    fn send(&mut self, core: usize, msg: CoreMsg) {
        debug_assert_ne!(core, self.core(), "a core sends itself nothing: {msg:?}");
        self.effects.send(core, msg);
    }

    // ---- effects ------------------------------------------------------------

    /// Ready when an effect waits that may be carried out at `now` (the time
    /// since the worker's origin); otherwise parks `cx` (the runtime's one
    /// effects task) until the core queues one. While the writes are held back
    /// ([`CoreState::held_until`]) the task must also wake when the hold ends.
    pub fn poll_effects(&mut self, cx: &mut Context<'_>, now: Duration) -> Poll<()> {
        let may_write = self.pacing.may_write(now);
        self.effects.poll_ready(cx, may_write)
    }

    /// When the writes of the dirty clients, held back by the write pacing,
    /// may start; `None` when no write waits for a hold.
    pub fn held_until(&self) -> Option<Duration> {
        (!self.effects.dirty.is_empty() && !self.pacing.in_pass())
            .then(|| self.pacing.next_pass_at())
    }

    /// Carries out the queued effects; `clock` reads the time since the
    /// worker's origin. In order: queues waiting deliveries to this core's
    /// subscribers (about [`VISITS_PER_CLIENT`] × `max` subscribers' worth),
    /// hands every cross-core message to `send`, wakes the tasks queued to wake,
    /// writes up to `max` clients with answers, then, unless the write pacing
    /// holds them back, up to `max` dirty clients with `write` (which must not
    /// block). True while work is left (deliveries, answers, or a pass of writes
    /// under way): call again, after letting other tasks run, so that no run
    /// holds the core for long.
    pub fn run_effects(
        &mut self,
        mut clock: impl FnMut() -> Duration,
        max: usize,
        mut send: impl FnMut(usize, CoreMsg),
        mut write: impl FnMut(RawFd, &[IoSlice<'_>]) -> io::Result<usize>,
    ) -> bool {
        let now = clock();
        self.set_now(Tick::now(now));
        let deliveries_left = self.queue_deliveries_upto(max.saturating_mul(VISITS_PER_CLIENT));
        for (to, msg) in self.effects.poll_transmit() {
            send(to, msg);
        }
        // Wakes before the writes, which may take a while (a publish answered
        // need not wait for a fan-out's flush), and after them: a write may
        // have found a socket full.
        self.effects.wake_tasks();
        let answers_left = self.flush_urgent(max, &mut write);
        let mut in_pass = false;
        if !self.effects.dirty.is_empty() && self.pacing.may_write(now) {
            self.pacing.begin(now);
            in_pass = self.flush_dirty_upto(max, &mut write);
        }
        if !in_pass && self.pacing.in_pass() {
            self.pacing.end(clock());
        }
        self.effects.wake_tasks();
        in_pass || deliveries_left || answers_left
    }

    /// The fan-out is behind its publishes (see
    /// [`MAX_PENDING_VISITS`](super::effects::MAX_PENDING_VISITS)): a publish
    /// answer waits, and the bus is not read, until it catches up.
    pub fn fan_out_behind(&self) -> bool {
        self.effects.behind()
    }

    /// Takes the queued cross-core messages, for a caller that moves them itself
    /// (the tests' `pump`).
    #[cfg(test)]
    pub(crate) fn take_sends(&mut self) -> Vec<(usize, CoreMsg)> {
        self.effects.poll_transmit().collect()
    }

    // ---- subscriptions ------------------------------------------------------

    /// Checks that subscribing `id` to `topics` stays within the per-client limit,
    /// so a caller can answer before the first backlog message is queued.
    pub fn check_subscribe(&self, id: ClientId, topics: &[String]) -> Result<(), SubscribeError> {
        let client = self.clients.get(id).ok_or(SubscribeError::UnknownClient)?;
        let new = topics
            .iter()
            .filter(|t| {
                self.local
                    .key(t)
                    .is_none_or(|key| client.sub_index(key).is_none())
            })
            .count();
        if client.subs.len() + new > self.limits.max_topics_per_client {
            return Err(SubscribeError::TooManyTopics);
        }
        Ok(())
    }

    /// Subscribes a client to `topic` from `since`. Idempotent: subscribing twice
    /// to a topic is accepted and changes nothing.
    pub fn subscribe(
        &mut self,
        id: ClientId,
        topic: &str,
        since: Since,
    ) -> Result<(), SubscribeError> {
        self.subscribe_as(id, topic, since, 0, false).map(|_| ())
    }

    /// Subscribes a client to several topics and queues `ack` once every one of
    /// them is confirmed by its home core (after the backlog of the ones that
    /// resume), so that a client holding the ack receives everything published
    /// after it. Topics it already has count as confirmed.
    pub fn subscribe_acked(
        &mut self,
        id: ClientId,
        topics: &[String],
        sinces: Sinces,
        ack: Bytes,
    ) -> Result<(), SubscribeError> {
        self.check_subscribe(id, topics)?;
        self.next_req = self.next_req.wrapping_add(1);
        let token = self.next_req.max(1);
        if let Some(c) = self.clients.get_mut(id) {
            c.acks.push(PendingAck {
                token,
                waiting: 1,
                bytes: ack,
            });
        }
        let last = topics.len().saturating_sub(1);
        let mut released = false;
        for (i, topic) in topics.iter().enumerate() {
            released |= self.subscribe_as(id, topic, sinces.get(i), token, i == last)?;
        }
        if !released {
            if let Some(c) = self.clients.get_mut(id) {
                c.settle_ack(token);
            }
        }
        self.mark_dirty(id);
        Ok(())
    }

    /// Subscribes one topic, holding back acknowledgement `ack` (0: none) until
    /// it is confirmed. With `release`, drops the request's own hold on the ack
    /// once this subscription holds it, so that when this last one is confirmed
    /// at once (a home on this core) the ack still precedes its backlog. Returns
    /// whether the hold was dropped.
    fn subscribe_as(
        &mut self,
        id: ClientId,
        topic: &str,
        since: Since,
        ack: u32,
        release: bool,
    ) -> Result<bool, SubscribeError> {
        let client = self.clients.get(id).ok_or(SubscribeError::UnknownClient)?;
        if let Some(key) = self.local.key(topic) {
            if client.sub_index(key).is_some() {
                return Ok(false);
            }
        }
        if client.subs.len() >= self.limits.max_topics_per_client {
            return Err(SubscribeError::TooManyTopics);
        }
        let sub_index = client.subs.len() as u16;
        let (key, pos, _) = self.local.add(topic, id, sub_index);
        self.next_req = self.next_req.wrapping_add(1);
        let req = self.next_req;
        if let Some(client) = self.clients.get_mut(id) {
            client.subs.push(Subscription {
                topic: key,
                pos,
                seq: 0,
                pending: true,
                req,
                ack,
            });
            if let Some(a) = client.acks.iter_mut().find(|a| a.token == ack) {
                a.waiting += 1;
            }
            if release {
                client.settle_ack(ack);
            }
        }
        let name = match self.local.get(key) {
            Some(t) => t.name.clone(),
            None => unreachable!("topic {key:#x} added above"),
        };
        let home = home_of(topic, self.cores);
        if home == self.core() {
            let reply = self.home_subscribe(&name, id, since, req);
            self.reply_subscribed(id, reply);
        } else {
            self.send(
                home,
                CoreMsg::Subscribe {
                    topic: name,
                    client: id,
                    since,
                    req,
                },
            );
        }
        self.update_gauges();
        Ok(release)
    }

    /// Unsubscribes a client from `topic`; false when it was not subscribed.
    pub fn unsubscribe(&mut self, id: ClientId, topic: &str) -> bool {
        let Some(key) = self.local.key(topic) else {
            return false;
        };
        let Some(client) = self.clients.get_mut(id) else {
            return false;
        };
        let Some(index) = client.sub_index(key) else {
            return false;
        };
        let sub = client.subs.swap_remove(index);
        if sub.pending {
            client.settle_ack(sub.ack);
        }
        // The subscription moved into `index` must tell its topic where it is now.
        let moved = client.subs.get(index).map(|s| (s.topic, s.pos));
        if let Some((topic, pos)) = moved {
            self.local.set_sub_index(topic, pos, index as u16);
        }
        self.unlink(&sub);
        self.update_gauges();
        true
    }

    /// At the subscriber's core: the home's answer. Queues the gap event and the
    /// backlog, then lets live messages through.
    fn on_subscribed(
        &mut self,
        topic: &str,
        id: ClientId,
        req: u32,
        head: u64,
        gap: Option<Gap>,
        backlog: &Backlog,
    ) {
        let Some(key) = self.local.key(topic) else {
            return;
        };
        let ids = self.ids;
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        let Some(index) = client.sub_index(key) else {
            return;
        };
        if !client.subs[index].pending || client.subs[index].req != req {
            return;
        }
        // Where the client's cursor stands for this topic before the backlog.
        let start = match (gap, backlog.first()) {
            (Some(Gap::Trimmed { after, .. }), _) => after,
            (Some(Gap::Future { .. }), _) => head,
            (Some(Gap::Unknown(_)), Some(first)) => first.seq - 1,
            (Some(Gap::Unknown(_)), None) => head,
            (None, Some(first)) => first.seq - 1,
            (None, None) => head,
        };
        client.subs[index].seq = start;
        if let Some(c) = client.cursor.as_mut() {
            if let Some(pos) = c.written.get_mut(index) {
                *pos = start;
            }
        }
        // The ack goes first: from here on the client gets everything of this
        // topic (its backlog, then live messages).
        let ack = client.subs[index].ack;
        client.settle_ack(ack);
        if let Some(gap) = gap {
            queue_gap(client, topic, gap, ids);
        }
        let mut delivered = 0u64;
        if let Some(last) = backlog.last() {
            if client.takes_messages() {
                // Paced by the socket: moved into the outbox as it drains.
                let frames = self.backlogs.frames(backlog);
                client
                    .replay
                    .get_or_insert_with(Box::<Replay>::default)
                    .push_backlog(frames, index as u16);
                client.fresh = false;
                client.subs[index].seq = last.seq;
                delivered = backlog.len() as u64;
            }
        }
        let client = &mut *client;
        client.subs[index].seq = client.subs[index].seq.max(head);
        client.subs[index].pending = false;
        if client.subs.iter().all(|s| !s.pending) {
            client.step(Transition::Confirmed);
        }
        if client.transport == Transport::Sse
            && client.fresh
            && client.subs.iter().all(|s| !s.pending)
        {
            // Hand the browser its starting cursor: an id-only block sets
            // EventSource's last event id without dispatching an event.
            client.fresh = false;
            if let Some(c) = client.cursor.as_ref() {
                let mut line = Vec::with_capacity(40);
                line.extend_from_slice(b"id: ");
                c.ids.write_cursor(&mut line, c.written.iter().copied());
                line.extend_from_slice(b"\n\n");
                client.outbox.push(&line);
            }
        }
        self.metrics.delivered.add(delivered);
        self.check_outbox(id);
        self.mark_dirty(id);
    }

    // ---- publishing ---------------------------------------------------------

    /// Publishes a message (topic and event already validated, `data` minified
    /// JSON). Stamped here when this core is the topic's home, else sent there.
    pub fn publish(&mut self, topic: &str, event: Option<&str>, data: Vec<u8>) -> PublishStart {
        let home = if self.broker {
            self.bridge()
        } else {
            home_of(topic, self.cores)
        };
        if home == self.core() {
            return PublishStart::Done(self.home_publish(topic, event, &data));
        }
        let slot = self.pending.insert(PublishSlot::default()) as u32;
        let reply = ReplyTo {
            core: self.core,
            slot,
        };
        self.send(
            home,
            CoreMsg::Publish {
                topic: topic.into(),
                event: event.map(Into::into),
                data,
                reply,
            },
        );
        PublishStart::Pending(slot)
    }

    /// Polls a publish sent to another core; the slot is freed when it completes.
    pub fn poll_publish(
        &mut self,
        slot: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<u64, PublishError>> {
        let Some(p) = self.pending.get_mut(slot as usize) else {
            return Poll::Ready(Err(PublishError::Unavailable));
        };
        match p.result.take() {
            Some(result) => {
                self.pending.remove(slot as usize);
                Poll::Ready(result)
            }
            None => {
                p.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Forgets a publish whose waiter went away (its connection closed).
    pub fn cancel_publish(&mut self, slot: u32) {
        if self.pending.contains(slot as usize) {
            self.pending.remove(slot as usize);
        }
    }

    /// Queues every message waiting for delivery to this core's subscribers.
    pub(crate) fn queue_deliveries(&mut self) {
        self.queue_deliveries_upto(usize::MAX);
    }

    /// Queues messages waiting for delivery until about `budget` subscribers
    /// were visited; true while some wait.
    fn queue_deliveries_upto(&mut self, budget: usize) -> bool {
        let mut spent = 0usize;
        while spent < budget {
            let Some(msg) = self.effects.deliveries.pop_front() else {
                self.effects.pending_visits = 0;
                return false;
            };
            let visits = self.deliver(&msg);
            self.effects.pending_visits = self.effects.pending_visits.saturating_sub(visits);
            spent += visits.max(1);
        }
        !self.effects.deliveries.is_empty()
    }

    /// The subscribers of `topic` on this core (a delivery's visits).
    fn local_subscribers(&self, topic: &str) -> usize {
        self.local
            .key(topic)
            .and_then(|k| self.local.get(k))
            .map_or(0, |t| t.subs.len())
    }

    /// Queues `msg` for delivery by the effects task.
    pub(super) fn defer_delivery(&mut self, msg: Arc<Message>) {
        let visits = self.local_subscribers(&msg.topic);
        self.effects.deliver(msg, visits);
    }

    /// Queues a message to every local subscriber of its topic; returns how
    /// many subscribers it visited.
    fn deliver(&mut self, msg: &Arc<Message>) -> usize {
        let Some(key) = self.local.key(&msg.topic) else {
            return 0;
        };
        let mut enc = LazyFrames::default();
        let Self {
            local,
            clients,
            effects,
            metrics,
            limits,
            ..
        } = self;
        let Some(topic) = local.get(key) else {
            return 0;
        };
        let mut delivered = 0u64;
        for &(id, index) in &topic.subs {
            let Some(client) = clients.get_mut(id) else {
                debug_assert!(false, "topic {key:#x} lists a removed client {id:?}");
                continue;
            };
            // The client's one check, a compare of its state byte: a closing
            // client takes nothing (the message counts as dropped at its removal).
            if !client.takes_messages() {
                continue;
            }
            // The subscription's: confirmed, and not past this message already
            // (its backlog brought it).
            let index = usize::from(index);
            match client.subs.get_mut(index) {
                Some(sub) if !sub.pending && sub.seq < msg.seq => sub.seq = msg.seq,
                _ => continue,
            }
            queue_message(client, index, msg.seq, enc.get(msg, FrameKind::of(client)));
            delivered += 1;
            if client.queued_bytes() > limits.max_outbox_bytes {
                judge_outbox(client, limits.max_outbox_bytes, metrics, effects);
            }
            if !client.dirty {
                client.dirty = true;
                effects.dirty.push_back(id);
            }
        }
        // One wake of the effects task for the whole fan-out.
        effects.due();
        metrics.delivered.add(delivered);
        topic.subs.len()
    }

    fn check_outbox(&mut self, id: ClientId) {
        let max = self.limits.max_outbox_bytes;
        if let Some(client) = self.clients.get_mut(id) {
            if client.queued_bytes() > max {
                judge_outbox(client, max, &self.metrics, &mut self.effects);
            }
        }
    }

    // ---- bus ----------------------------------------------------------------

    /// Handles one message from another core (or from this core's own home role).
    pub fn handle(&mut self, msg: CoreMsg) {
        match msg {
            CoreMsg::Publish {
                topic,
                event,
                data,
                reply,
            } => {
                let seq = self.home_publish(&topic, event.as_deref(), &data);
                let answer = CoreMsg::Published {
                    slot: reply.slot,
                    result: Ok(seq),
                };
                self.send(usize::from(reply.core), answer);
            }
            CoreMsg::Published { slot, result } => {
                if let Some(p) = self.pending.get_mut(slot as usize) {
                    p.result = Some(result);
                    if let Some(w) = p.waker.take() {
                        self.effects.wake(w);
                    }
                }
            }
            CoreMsg::Deliver(msg) => self.defer_delivery(msg),
            CoreMsg::Subscribe {
                topic,
                client,
                since,
                req,
            } => {
                let reply = self.home_subscribe(&topic, client, since, req);
                self.reply_subscribed(client, reply);
            }
            CoreMsg::Subscribed {
                topic,
                client,
                req,
                head,
                gap,
                backlog,
            } => {
                self.on_subscribed(&topic, client, req, head, gap, &backlog);
            }
            CoreMsg::Release { topic, core } => self.home_release(&topic, core),
            CoreMsg::Watching { topic, from } => self.home_watching(&topic, from),
            CoreMsg::Entry(entry) => self.home_entry(entry),
            CoreMsg::Ranged {
                topic,
                after,
                upto,
                client,
                req,
                entries,
                trimmed,
            } => self.home_ranged(&topic, after, upto, client, req, entries, trimmed),
            CoreMsg::Watch { .. } | CoreMsg::Unwatch { .. } | CoreMsg::Range { .. } => {
                debug_assert!(false, "a bridge message reached core {}", self.core);
            }
        }
    }

    // ---- writing ------------------------------------------------------------

    /// Queues the response head (`200`, `101`) of a new client: nothing else
    /// is queued before it, and a cut never drops it.
    fn queue_head(&mut self, id: ClientId, bytes: &[u8]) {
        if let Some(client) = self.clients.get_mut(id) {
            // An SSE stream's first `id:` line follows its head at once.
            let room = if client.cursor.is_some() { 2 } else { 1 };
            client.outbox.push_head(bytes, room);
            self.mark_dirty(id);
        }
    }

    /// Queues raw bytes (a control frame, a heartbeat) to a client, written
    /// with the next pass.
    pub fn queue(&mut self, id: ClientId, bytes: &[u8]) {
        if let Some(client) = self.clients.get_mut(id) {
            client.outbox.push(bytes);
            self.check_outbox(id);
            self.mark_dirty(id);
        }
    }

    /// Queues an answer to the client's own request (an acknowledgement, an
    /// error, a pong): written before the dirty clients, never held back.
    pub fn queue_answer(&mut self, id: ClientId, bytes: &[u8]) {
        if let Some(client) = self.clients.get_mut(id) {
            client.outbox.push(bytes);
            self.check_outbox(id);
            self.mark_urgent(id);
        }
    }

    /// Writes up to `max` clients with an answer queued (see
    /// [`CoreState::queue_answer`]); true while more wait.
    fn flush_urgent(
        &mut self,
        max: usize,
        write: &mut impl FnMut(RawFd, &[IoSlice<'_>]) -> io::Result<usize>,
    ) -> bool {
        for _ in 0..max {
            let Some(id) = self.effects.urgent.pop_front() else {
                return false;
            };
            if let Some(client) = self.clients.get_mut(id) {
                client.urgent = false;
                flush_taken(
                    client,
                    self.now,
                    &mut self.scratch,
                    &mut self.effects,
                    write,
                );
            }
        }
        !self.effects.urgent.is_empty()
    }

    fn mark_urgent(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(id) {
            if !client.urgent {
                client.urgent = true;
                self.effects.mark_urgent(id);
            }
        }
    }

    fn mark_dirty(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(id) {
            if !client.dirty {
                client.dirty = true;
                self.effects.mark_dirty(id);
            }
        }
    }

    /// Writes the heartbeats due (one write each), then every client touched
    /// since it was last written, one vectored write each. `write(fd, iov)`
    /// must not block. (The runtime writes in slices, and the heartbeats as a
    /// batch of its own.)
    pub fn flush_dirty(
        &mut self,
        mut write: impl FnMut(RawFd, &[IoSlice<'_>]) -> io::Result<usize>,
    ) {
        self.write_heartbeats(|sends, results| {
            for (&(fd, bytes), result) in sends.iter().zip(results) {
                *result = match write(fd, &[IoSlice::new(bytes)]) {
                    Ok(n) => n as i32,
                    Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
                };
            }
        });
        self.queue_deliveries();
        self.flush_dirty_upto(usize::MAX, write);
    }

    /// Writes up to `max` of the clients touched since they were last written,
    /// oldest first; true while more wait. A client touched again before its
    /// turn is written once, with everything queued by then.
    pub fn flush_dirty_upto(
        &mut self,
        max: usize,
        mut write: impl FnMut(RawFd, &[IoSlice<'_>]) -> io::Result<usize>,
    ) -> bool {
        for _ in 0..max {
            let Some(id) = self.effects.dirty.pop_front() else {
                break;
            };
            if let Some(client) = self.clients.get_mut(id) {
                client.dirty = false;
                flush_taken(
                    client,
                    self.now,
                    &mut self.scratch,
                    &mut self.effects,
                    &mut write,
                );
            }
        }
        !self.effects.dirty.is_empty()
    }

    /// The transport took every byte of a write but holds some back for a full
    /// socket (a sealed TLS record not written whole): the client waits for
    /// writability as after a short write. A no-op for a client that may not
    /// write now (held, blocked or gone).
    pub fn socket_full(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(id) {
            if client.lifecycle().may_write() {
                client.step(Transition::SocketFull);
                wake(client, &mut self.effects);
            }
        }
    }

    /// A full socket takes more again: the client is written with the next
    /// slice of the flush.
    pub fn socket_writable(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(id) {
            client.step(Transition::Writable);
            self.mark_dirty(id);
        }
    }

    /// Flushes one client after its socket became writable (a closing
    /// connection writing its last frames).
    pub fn flush_client(
        &mut self,
        id: ClientId,
        mut write: impl FnMut(RawFd, &[IoSlice<'_>]) -> io::Result<usize>,
    ) {
        if let Some(client) = self.clients.get_mut(id) {
            client.step(Transition::Writable);
            if client.lifecycle().may_write() {
                flush_one(
                    client,
                    self.now,
                    &mut self.scratch,
                    &mut self.effects,
                    &mut write,
                );
            }
        }
    }

    /// What the connection task of `id` must do next; registers its waker when
    /// there is nothing to do yet.
    pub fn poll_client(&mut self, id: ClientId, cx: &mut Context<'_>) -> Poll<ClientTask> {
        let Some(client) = self.clients.get_mut(id) else {
            return Poll::Ready(ClientTask::Close(CloseReason::PeerGone));
        };
        let life = client.lifecycle();
        if let Some(reason) = life.closing() {
            return Poll::Ready(ClientTask::Close(reason));
        }
        if life.blocked() {
            return Poll::Ready(ClientTask::AwaitWritable);
        }
        client.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Holds everything queued to a new client until [`CoreState::open_when_ready`].
    fn hold(&mut self, id: ClientId) {
        if let Some(c) = self.clients.get_mut(id) {
            c.step(Transition::Hold);
        }
    }

    /// Lets a held client's output go once every subscription made so far is
    /// confirmed (at once when none is pending).
    fn open_when_ready(&mut self, id: ClientId) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        let confirmed = c.subs.iter().all(|s| !s.pending);
        if c.step(Transition::Admitted { confirmed }) && confirmed {
            self.mark_dirty(id);
        }
    }

    /// Starts closing a client the core asked to close: drops what is queued (the
    /// messages count as dropped), takes no more messages, and lets the connection
    /// write its last frames. Returns the reason, or `None` when not closing.
    pub fn begin_close(&mut self, id: ClientId) -> Option<CloseReason> {
        let client = self.clients.get_mut(id)?;
        let reason = client.lifecycle().closing()?;
        let replayed = client.replay.take().map_or(0, |r| r.len());
        let dropped = client.outbox.drop_unsent() + replayed;
        self.metrics.dropped.add(dropped as u64);
        client.step(Transition::BeginClose);
        Some(reason)
    }

    /// Takes what is still queued to a closing client (the rest of a partly
    /// written frame, then its last frames), for its task to write on its own.
    pub fn take_rest(&mut self, id: ClientId) -> Vec<u8> {
        self.clients
            .get_mut(id)
            .map_or_else(Vec::new, |c| c.outbox.take_bytes())
    }

    /// Stops queueing messages to a client whose connection is closing.
    pub fn mute(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(id) {
            client.step(Transition::Mute);
        }
    }

    /// Bytes still queued to a client.
    pub fn queued(&self, id: ClientId) -> usize {
        self.clients.get(id).map_or(0, |c| c.outbox.bytes())
    }

    /// Ready when the core asks the task of `id` to close it (or `id` is gone),
    /// for a task that waits on something else meanwhile (a full socket).
    pub fn poll_close_request(&mut self, id: ClientId, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let Some(client) = self.clients.get_mut(id) else {
            return Poll::Ready(CloseReason::PeerGone);
        };
        match client.lifecycle().closing() {
            Some(reason) => Poll::Ready(reason),
            None => {
                client.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The socket of a client, for the last act of its connection task.
    pub fn fd(&self, id: ClientId) -> Option<RawFd> {
        self.clients.get(id).map(|c| c.fd)
    }

    /// Asks the connection task of `id` to close the connection.
    pub fn close(&mut self, id: ClientId, reason: CloseReason) {
        if let Some(client) = self.clients.get_mut(id) {
            client.step(Transition::Close(reason));
            wake(client, &mut self.effects);
        }
    }
}

/// Queues one message of a client's subscription `index` (the caller checked
/// that the client takes it, and moved the subscription's position): to the
/// outbox, or behind the backlog while the client replays one.
#[inline]
fn queue_message(client: &mut Client, index: usize, seq: u64, frame: &Frame) {
    match client.replay.as_mut() {
        Some(replay) => queue_behind_replay(replay, index, seq, frame),
        None => {
            if client.multi_topic {
                client.outbox.push_cursor(index as u16, seq);
            }
            client.outbox.push_frame(frame);
        }
    }
    client.fresh = false;
}

/// The rare case of [`queue_message`], kept out of the fan-out loop.
#[cold]
#[inline(never)]
fn queue_behind_replay(replay: &mut Replay, index: usize, seq: u64, frame: &Frame) {
    replay.push_live(index as u16, seq, frame.clone());
}

/// Moves replayed messages into the outbox until it holds [`REPLAY_SLICE`]
/// bytes or [`REPLAY_SLICE_ITEMS`] items, or the replay is done.
#[cold]
#[inline(never)]
fn refill(client: &mut Client) {
    let kind = FrameKind::of(client);
    while client.outbox.bytes() < REPLAY_SLICE && client.outbox.len() < REPLAY_SLICE_ITEMS {
        let Some(replay) = client.replay.as_mut() else {
            return;
        };
        match replay.pop(kind) {
            Some((index, seq, frame)) => client.push_message(index, seq, frame),
            None => {
                client.replay = None;
                return;
            }
        }
    }
}

/// Queues a `ringcast.gap` event for `topic`.
fn queue_gap(client: &mut Client, topic: &str, gap: Gap, ids: IdScheme) {
    let mut data = Vec::with_capacity(96);
    match gap {
        Gap::Trimmed { after, oldest } => sse::write_json_object(
            &mut data,
            &[
                ("topic", topic),
                ("after", &ids.format_id(after)),
                ("oldest", &ids.format_id(oldest)),
            ],
        ),
        Gap::Future { after } => sse::write_json_object(
            &mut data,
            &[
                ("topic", topic),
                ("after", &ids.format_id(after)),
                ("reason", "id never issued by this server"),
            ],
        ),
        Gap::Unknown(reason) => {
            sse::write_json_object(&mut data, &[("topic", topic), ("reason", reason)])
        }
    }
    let mut out = Vec::with_capacity(data.len() + 48);
    match client.transport {
        Transport::Sse => sse::write_event_body(&mut out, Some(GAP_EVENT), &data),
        Transport::Ws => {
            let mut env = Vec::with_capacity(data.len() + 48);
            envelope::write_server_envelope(&mut env, topic, GAP_EVENT, &data);
            out.extend_from_slice(&ws_frame::text_frame(&env));
        }
    }
    client.outbox.push(&out);
}

/// Queues the wake of a client's connection task, if it is parked.
fn wake(client: &mut Client, effects: &mut Effects) {
    if let Some(w) = client.waker.take() {
        effects.wake(w);
    }
}

/// How far past `--max-outbox-bytes` a client's queue may grow while its
/// socket has refused no write. A burst (a batch of up to 1,024 publishes from
/// the bus) can queue more than the bound before the flush that follows it in
/// the same turn of the event loop, and a client that reads is not a slow
/// consumer for that. The bytes counted are frames shared by every subscriber
/// of the core; what one client holds for them is a queue entry each.
const BURST_ALLOWANCE: usize = 16;

/// Cuts `client`, whose queue passed `max` as messages were queued to it, as a
/// slow consumer when its socket is what holds the queue back: its last write
/// found the socket full, or the queue passed [`BURST_ALLOWANCE`] × `max`,
/// which bounds what a client can hold whatever its socket.
#[cold]
#[inline(never)]
fn judge_outbox(client: &mut Client, max: usize, metrics: &CoreMetrics, effects: &mut Effects) {
    let queued = client.queued_bytes();
    if queued > max.saturating_mul(BURST_ALLOWANCE)
        || (queued > max && client.lifecycle().blocked())
    {
        cut_slow(client, metrics, effects);
    }
}

/// Marks a client whose outbox passed the bound as a slow consumer to cut.
fn cut_slow(client: &mut Client, metrics: &CoreMetrics, effects: &mut Effects) {
    if !client.step(Transition::CutSlow) {
        return;
    }
    match client.transport {
        Transport::Sse => metrics.slow_consumers_sse.inc(),
        Transport::Ws => metrics.slow_consumers_ws.inc(),
    }
    wake(client, effects);
}

/// Writes a client taken off the urgent or the dirty queue, if it may be
/// written: a held client's output waits for its admission to end (which marks
/// it dirty again), a blocked one's task waits for writability and flushes it
/// then, and a closing one's task is woken to see why.
#[inline(always)]
fn flush_taken(
    client: &mut Client,
    now: Tick,
    scratch: &mut FlushScratch,
    effects: &mut Effects,
    write: &mut impl FnMut(RawFd, &[IoSlice<'_>]) -> io::Result<usize>,
) {
    let life = client.lifecycle();
    if life.may_write() {
        flush_one(client, now, scratch, effects, write);
    } else if !life.held() && !life.blocked() {
        wake(client, effects);
    }
}

fn flush_one(
    client: &mut Client,
    now: Tick,
    scratch: &mut FlushScratch,
    effects: &mut Effects,
    write: &mut impl FnMut(RawFd, &[IoSlice<'_>]) -> io::Result<usize>,
) {
    let flushed = if client.replay.is_none() {
        flush_outbox(client, now, scratch, write)
    } else {
        flush_replaying(client, now, scratch, write)
    };
    match flushed {
        Flush::Drained => {}
        Flush::Blocked => {
            client.step(Transition::SocketFull);
            wake(client, effects);
        }
        Flush::Failed => {
            client.step(Transition::Close(CloseReason::PeerGone));
            wake(client, effects);
        }
    }
}

/// Writes what the outbox holds.
#[inline]
fn flush_outbox<W>(
    client: &mut Client,
    now: Tick,
    scratch: &mut FlushScratch,
    write: &mut W,
) -> Flush
where
    W: FnMut(RawFd, &[IoSlice<'_>]) -> io::Result<usize> + ?Sized,
{
    let fd = client.fd;
    let cursor = if client.multi_topic {
        client.cursor.as_mut()
    } else {
        None
    };
    let before = client.outbox.bytes();
    let flushed = client.outbox.flush(cursor, scratch, |iov| write(fd, iov));
    if client.outbox.bytes() != before {
        client.last_write = now;
    }
    flushed
}

/// Writes a resuming client: slice after slice of its replay, for as long as
/// the socket takes everything. Kept out of the live flush (its own copy of
/// the outbox writer, behind a `dyn`), which stays as lean as before resumes
/// were paced.
#[cold]
#[inline(never)]
fn flush_replaying(
    client: &mut Client,
    now: Tick,
    scratch: &mut FlushScratch,
    write: &mut dyn FnMut(RawFd, &[IoSlice<'_>]) -> io::Result<usize>,
) -> Flush {
    loop {
        refill(client);
        let flushed = flush_outbox(client, now, scratch, write);
        if flushed != Flush::Drained || client.replay.is_none() {
            return flushed;
        }
    }
}

impl super::registry::Classify for Client {
    fn class(&self) -> usize {
        self.transport as usize
    }
}
