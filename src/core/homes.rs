//! The topics a core is home to (chosen by a hash of the name): their positions,
//! their histories, which cores listen, and the bounds over all of them.
//!
//! Every structure here is bounded by design:
//!
//! - **Memory.** The core's histories, with their bookkeeping, hold at most its
//!   share of `--history-memory` ([`HistoryLimits::memory`]). Past it the oldest
//!   message of the core leaves first, whichever topic it belongs to.
//! - **Age.** Messages older than `--history-ttl` leave; the core's timer wheel
//!   calls [`HomeTopics::expire`] when the oldest one comes due.
//! - **Topics.** A topic with no subscriber on any core, no subscribe waiting and
//!   an empty history is forgotten: its entry, name and backlog go.
//!
//! Both bounds need the oldest message of the core in O(1). The core keeps one
//! age order of every message it holds, oldest first ([`Aged`]), appended to on
//! each publish. A topic's own bounds (`--history`, `--history-bytes`) also drop
//! messages from the front of its ring, and those leave stale entries behind in
//! the age order: an entry is live while its topic (slot and generation) exists
//! and its position is still in the topic's ring. Stale entries are skipped when
//! they reach the front, and the order is compacted when it holds more than
//! twice the messages it stands for, so it stays O(messages held), amortised
//! O(1) per publish.
//!
//! Positions never repeat within a run: in single-node mode a topic created
//! (again) starts above the highest position any forgotten topic of the core
//! reached, and its history says nothing is kept from before that, so a resume
//! from an old id gets a `ringcast.gap`, never another message's id. The last
//! positions of the most recently forgotten topics are remembered
//! ([`ForgottenTopics`], bounded): a client that saw a topic's last message
//! before it was forgotten resumes it without a gap.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use slab::Slab;

use super::bus_msg::{Backlog, Since};
use super::history::{History, Resume};
use super::message::{Message, AGE_ENTRY_BYTES};
use super::registry::ClientId;
use super::topics::TopicMap;
use crate::metrics::{CoreMetrics, EvictionReason};
use crate::time::Tick;

/// The history bounds of one core. Durations are in wheel ticks.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Messages kept per topic (`--history`).
    pub len: usize,
    /// Bytes kept per topic (`--history-bytes`).
    pub bytes: usize,
    /// Bytes held by every history of the core, bookkeeping included: the
    /// core's share of `--history-memory`.
    pub memory: usize,
    /// How long a message is kept (`--history-ttl`); zero: no age limit.
    pub ttl: Tick,
}

impl HistoryLimits {
    /// Per-topic bounds only: no budget over all topics, no age limit.
    pub fn per_topic(len: usize, bytes: usize) -> Self {
        Self {
            len,
            bytes,
            memory: usize::MAX,
            ttl: Tick::ZERO,
        }
    }
}

/// A topic as its home core keeps it.
pub struct HomeTopic {
    pub name: Arc<str>,
    /// Position of the newest message (0 before the first).
    pub seq: u64,
    pub history: History,
    /// Cores with local subscribers, to which new messages go.
    pub cores: Vec<u16>,
    /// With a broker: whether the bridge reads the topic's stream for this node.
    pub watch: Watch,
    /// With a broker: subscriptions waiting for the bridge (start of reading, or
    /// older entries than the history holds).
    pub waiting: Vec<WaitingSubscribe>,
    /// The backlog last handed to a resume from `.0`, with what it found: a
    /// storm of clients resuming from one position shares one backlog. Cleared
    /// whenever the history changes.
    last_backlog: Option<(u64, Resume, Backlog)>,
    /// Tells this topic from a later one in the same slot (age entries name both).
    gen: u32,
}

impl HomeTopic {
    /// Nothing holds the topic: no listener, no waiting subscribe, no history.
    fn idle(&self) -> bool {
        self.cores.is_empty()
            && self.waiting.is_empty()
            && self.watch == Watch::Off
            && self.history.is_empty()
    }

    /// The messages after `after` (a resume), shared with the last resume from
    /// the same position while the history has not changed.
    pub fn backlog_since(&mut self, after: u64) -> (Resume, Backlog) {
        if let Some((at, resume, backlog)) = &self.last_backlog {
            if *at == after {
                return (*resume, backlog.clone());
            }
        }
        let (resume, missed) = self.history.since(after, self.seq);
        let backlog: Backlog = missed.cloned().collect();
        self.last_backlog = Some((after, resume, backlog.clone()));
        (resume, backlog)
    }
}

/// Whether the bridge reads a topic's stream (broker mode only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Not read: no subscriber on this node (or single-node mode).
    Off,
    /// Asked the bridge to start; it answers with the position reading starts after.
    Starting,
    /// Read: every entry after the history's covered position reaches the home.
    On,
}

/// A subscribe the home answers once the bridge has spoken.
#[derive(Debug, Clone)]
pub struct WaitingSubscribe {
    pub client: ClientId,
    pub since: Since,
    pub req: u32,
}

/// One message held by some history of the core, in the core's age order.
#[derive(Debug, Clone, Copy)]
struct Aged {
    /// The topic's slot and generation.
    topic: u32,
    gen: u32,
    seq: u64,
    /// When the message was kept.
    at: Tick,
}

/// Forgotten topics remembered per core (about 32 bytes each).
pub const FORGOTTEN_KEPT: usize = 65_536;

/// The last position of the topics a core forgot most recently (single-node
/// mode), by a keyed hash of the name: a topic published again reports that
/// nothing is missing after it. Bounded by [`FORGOTTEN_KEPT`], oldest out first;
/// a topic no longer remembered falls back to the core's floor (a gap).
#[derive(Default)]
struct ForgottenTopics {
    last: HashMap<u64, u64>,
    /// Forgetting order: (name hash, last position).
    order: VecDeque<(u64, u64)>,
    /// Keys drawn per process, so names cannot be chosen to collide.
    keys: std::collections::hash_map::RandomState,
}

impl ForgottenTopics {
    fn remember(&mut self, name: &str, last: u64) {
        let h = self.keys.hash_one(name);
        self.last.insert(h, last);
        self.order.push_back((h, last));
        if self.order.len() > FORGOTTEN_KEPT {
            if let Some((old, at)) = self.order.pop_front() {
                // A name forgotten again since keeps its newer entry.
                if self.last.get(&old) == Some(&at) {
                    self.last.remove(&old);
                }
            }
        }
    }

    /// The last position of `name` when it was forgotten, if remembered.
    fn take(&mut self, name: &str) -> Option<u64> {
        self.last.remove(&self.keys.hash_one(name))
    }
}

/// Bytes a topic holds besides its messages: its record, its name with the
/// `Arc` counts, and its entry in the name map.
fn topic_bytes(name: &str) -> usize {
    std::mem::size_of::<HomeTopic>()
        + name.len()
        + 2 * std::mem::size_of::<usize>()
        + std::mem::size_of::<(Arc<str>, u32)>()
        + 1
}

pub struct HomeTopics {
    by_name: TopicMap<u32>,
    topics: Slab<HomeTopic>,
    next_gen: u32,
    /// Every message held, oldest first (plus stale entries, see the module doc).
    age: VecDeque<Aged>,
    /// Messages held over all histories (the live entries of `age`).
    messages: usize,
    /// Bytes held: messages ([`Message::held_bytes`]) and topics ([`topic_bytes`]).
    bytes: usize,
    limits: HistoryLimits,
    /// Single-node mode: the highest position a forgotten topic of this core
    /// reached; topics created from now on start above it.
    floor: u64,
    /// Single-node mode: where recently forgotten topics stood.
    forgotten: ForgottenTopics,
    /// Positions are stream ids from the broker (they never repeat: no floor).
    broker: bool,
    metrics: Arc<CoreMetrics>,
}

impl HomeTopics {
    pub fn new(limits: HistoryLimits, metrics: Arc<CoreMetrics>) -> Self {
        Self {
            by_name: TopicMap::default(),
            topics: Slab::new(),
            next_gen: 0,
            age: VecDeque::new(),
            messages: 0,
            bytes: 0,
            limits,
            floor: 0,
            forgotten: ForgottenTopics::default(),
            broker: false,
            metrics,
        }
    }

    /// Positions come from the broker's streams.
    pub fn set_broker(&mut self) {
        self.broker = true;
    }

    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut HomeTopic> {
        let key = *self.by_name.get(name)?;
        self.topics.get_mut(key as usize)
    }

    /// The topic, created when new: its positions start above every position a
    /// forgotten topic of this core issued.
    pub fn get_or_create(&mut self, name: &str) -> &mut HomeTopic {
        let key = match self.by_name.get(name) {
            Some(&key) => key,
            None => self.create(Arc::from(name)),
        };
        &mut self.topics[key as usize]
    }

    /// As [`HomeTopics::get_or_create`], for a name the core already holds (a
    /// subscription's): a new topic shares it instead of copying it.
    pub fn get_or_create_shared(&mut self, name: &Arc<str>) -> &mut HomeTopic {
        let key = match self.by_name.get(&**name) {
            Some(&key) => key,
            None => self.create(name.clone()),
        };
        &mut self.topics[key as usize]
    }

    fn create(&mut self, name: Arc<str>) -> u32 {
        let mut history = History::new(self.limits.len, self.limits.bytes);
        // Nothing is kept from before the floor; from a topic remembered, its
        // last position on is complete (no position of it lies in between).
        let covered = match self.forgotten.take(&name) {
            Some(last) if !self.broker => last,
            _ => self.floor,
        };
        history.cover_from(covered);
        self.next_gen = self.next_gen.wrapping_add(1);
        let key = self.topics.insert(HomeTopic {
            name: name.clone(),
            seq: self.floor,
            history,
            cores: Vec::new(),
            watch: Watch::Off,
            waiting: Vec::new(),
            last_backlog: None,
            gen: self.next_gen,
        }) as u32;
        self.bytes += topic_bytes(&name);
        self.by_name.insert(name, key);
        self.hold_budget();
        key
    }

    /// Drops the core's oldest messages until its histories fit the budget
    /// (or none is left: topics with listeners stay, and count).
    fn hold_budget(&mut self) {
        while self.bytes > self.limits.memory && self.evict_oldest(EvictionReason::Budget) {}
    }

    /// Keeps a message stamped now (tick `now`) in its topic's history, then
    /// holds the core's budget by dropping its oldest messages. The topic must
    /// exist.
    pub fn keep(&mut self, msg: &Arc<Message>, now: Tick) {
        let Some(&key) = self.by_name.get(&msg.topic) else {
            debug_assert!(false, "keep for unknown topic {:?}", msg.topic);
            return;
        };
        let topic = &mut self.topics[key as usize];
        let before = topic.history.bytes();
        let trimmed = topic.history.push(msg.clone());
        let after = topic.history.bytes();
        topic.last_backlog = None;
        let held = !topic.history.is_empty();
        if held {
            self.age.push_back(Aged {
                topic: key,
                gen: topic.gen,
                seq: msg.seq,
                at: now,
            });
            self.messages += 1;
        }
        self.messages -= trimmed.total();
        self.bytes = self.bytes + after - before;
        self.metrics
            .eviction(EvictionReason::Count)
            .add(trimmed.by_count as u64);
        self.metrics
            .eviction(EvictionReason::Bytes)
            .add(trimmed.by_bytes as u64);
        self.hold_budget();
        if !held {
            self.forget_if_idle(key);
        }
        if self.age.len() > 2 * self.messages + 64 {
            self.compact();
        }
    }

    /// Drops every message older than the age limit at tick `now`; returns the
    /// tick at which the next one comes due, if any.
    pub fn expire(&mut self, now: Tick) -> Option<Tick> {
        if self.limits.ttl.is_zero() {
            return None;
        }
        loop {
            let oldest = self.oldest()?;
            let due = oldest.at + self.limits.ttl;
            if due > now {
                return Some(due);
            }
            self.evict_oldest(EvictionReason::Ttl);
        }
    }

    /// The tick at which the oldest message leaves for its age, if any.
    pub fn next_expiry(&mut self) -> Option<Tick> {
        if self.limits.ttl.is_zero() {
            return None;
        }
        self.oldest().map(|a| a.at + self.limits.ttl)
    }

    /// The oldest message held, after dropping stale entries from the front.
    fn oldest(&mut self) -> Option<Aged> {
        while let Some(&front) = self.age.front() {
            if self.is_held(front) {
                return Some(front);
            }
            self.age.pop_front();
        }
        None
    }

    /// The entry's message is still in its topic's history.
    fn is_held(&self, a: Aged) -> bool {
        self.topics
            .get(a.topic as usize)
            .filter(|t| t.gen == a.gen)
            .and_then(|t| t.history.oldest())
            .is_some_and(|oldest| a.seq >= oldest)
    }

    /// Drops the oldest message of the core; false when none is held.
    fn evict_oldest(&mut self, reason: EvictionReason) -> bool {
        let Some(oldest) = self.oldest() else {
            return false;
        };
        self.age.pop_front();
        let topic = &mut self.topics[oldest.topic as usize];
        let before = topic.history.bytes();
        let gone = topic.history.pop_oldest();
        debug_assert_eq!(
            gone.as_ref().map(|m| m.seq),
            Some(oldest.seq),
            "the age order's front {oldest:x?} is not its topic's oldest"
        );
        topic.last_backlog = None;
        self.bytes -= before - topic.history.bytes();
        self.messages -= 1;
        self.metrics.eviction(reason).inc();
        self.forget_if_idle(oldest.topic);
        true
    }

    /// Rebuilds the age order without its stale entries.
    fn compact(&mut self) {
        let mut age = std::mem::take(&mut self.age);
        age.retain(|&a| self.is_held(a));
        debug_assert_eq!(
            age.len(),
            self.messages,
            "held messages miscounted: {:#x} entries live, {:#x} counted",
            age.len(),
            self.messages
        );
        self.age = age;
    }

    /// A core no longer listens to the topic; returns whether others still do.
    pub fn release(&mut self, name: &str, core: u16) -> bool {
        let Some(&key) = self.by_name.get(name) else {
            return false;
        };
        let topic = &mut self.topics[key as usize];
        topic.cores.retain(|&c| c != core);
        let listened = !topic.cores.is_empty();
        self.forget_if_idle(key);
        listened
    }

    /// Broker mode, when the bridge stops reading the topic: the history is of
    /// no use any more (the stream holds it; reading again starts a new one).
    pub fn drop_history(&mut self, name: &str) {
        if let Some(&key) = self.by_name.get(name) {
            self.reset_history(key, 0);
            self.forget_if_idle(key);
        }
    }

    /// Replaces a topic's history with an empty one covering every position
    /// after `from` (broker mode: the bridge starts reading there).
    pub fn restart_history(&mut self, name: &str, from: u64) {
        if let Some(&key) = self.by_name.get(name) {
            self.reset_history(key, from);
        }
    }

    /// Empties a topic's history. Its entries in the age order turn stale: the
    /// positions read from now on are all past them.
    fn reset_history(&mut self, key: u32, from: u64) {
        let topic = &mut self.topics[key as usize];
        self.messages -= topic.history.len();
        self.bytes -= topic.history.bytes();
        topic.history = History::new(self.limits.len, self.limits.bytes);
        topic.history.cover_from(from);
        topic.last_backlog = None;
    }

    /// Forgets a topic nothing holds any more.
    fn forget_if_idle(&mut self, key: u32) {
        if !self.topics.get(key as usize).is_some_and(HomeTopic::idle) {
            return;
        }
        let topic = self.topics.remove(key as usize);
        self.by_name.remove(&topic.name);
        self.bytes -= topic_bytes(&topic.name);
        if !self.broker {
            self.floor = self.floor.max(topic.seq);
            self.forgotten.remember(&topic.name, topic.seq);
        }
        self.metrics.topics_forgotten.inc();
    }

    /// Bytes held by every history of this core, bookkeeping included (the
    /// `ringcast_history_bytes` gauge).
    pub fn history_bytes(&self) -> usize {
        self.bytes
    }

    /// Messages held over every history of this core.
    pub fn messages(&self) -> usize {
        self.messages
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

const _: () = assert!(std::mem::size_of::<Aged>() == AGE_ENTRY_BYTES);

#[cfg(test)]
mod tests;
