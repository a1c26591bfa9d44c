//! The home role of a core: for the topics whose name hashes to it, it assigns
//! positions (or, with a broker, takes them from the stream in stream order),
//! keeps the history, knows which cores listen, and answers every subscribe with
//! where it starts and what it missed, so every subscriber sees one order.
//!
//! With a broker the bridge reads each topic's stream for this node while some
//! core listens (`Watch`); the history then holds every entry after the stream
//! position where reading began, and a resume from further back asks the bridge
//! for the older entries (`Range`).

use std::sync::Arc;

use super::CoreState;
use crate::core::bus_msg::{Backlog, CoreMsg, Gap, Since, StreamEntry};
use crate::core::history::Resume;
use crate::core::homes::{WaitingSubscribe, Watch};
use crate::core::message::Message;
use crate::core::registry::ClientId;

impl CoreState {
    /// The bus index of the broker bridge (one past the last core).
    pub fn bridge(&self) -> usize {
        self.cores
    }

    /// At the home core: record the subscribing core and answer where the
    /// subscription starts and what it missed. `None` when the answer must wait
    /// for the bridge; it is then sent from [`CoreState::home_watching`] or
    /// [`CoreState::home_ranged`].
    pub(super) fn home_subscribe(
        &mut self,
        topic: &Arc<str>,
        client: ClientId,
        since: Since,
        req: u32,
    ) -> Option<CoreMsg> {
        let broker = self.broker;
        let bridge = self.bridge();
        let home = self.homes.get_or_create_shared(topic);
        let core = client.core() as u16;
        if !home.cores.contains(&core) {
            home.cores.push(core);
        }
        if broker && home.watch == Watch::Off {
            home.watch = Watch::Starting;
            self.send(
                bridge,
                CoreMsg::Watch {
                    topic: topic.clone(),
                },
            );
        }
        let reply = self.answer_subscribe(topic, client, since, req);
        self.update_gauges();
        reply
    }

    /// Answers a subscribe from the history, or parks it until the bridge has
    /// spoken.
    fn answer_subscribe(
        &mut self,
        topic: &Arc<str>,
        client: ClientId,
        since: Since,
        req: u32,
    ) -> Option<CoreMsg> {
        let broker = self.broker;
        let bridge = self.bridge();
        let home = self.homes.get_mut(topic)?;
        if home.watch == Watch::Starting {
            home.waiting.push(WaitingSubscribe { client, since, req });
            return None;
        }
        let head = home.seq;
        let (gap, backlog): (_, Backlog) = match since {
            Since::Live => (None, self.no_backlog.clone()),
            Since::After(after)
                if broker && after < home.history.covered_after() && after <= head =>
            {
                let upto = home.history.covered_after();
                let msg = CoreMsg::Range {
                    topic: topic.clone(),
                    after,
                    upto,
                    client,
                    req,
                };
                self.send(bridge, msg);
                return None;
            }
            // Past what this node has read: the client may have seen it on
            // another node before this node's bridge read it. The bridge asks
            // the stream whether the entry exists (`Range` over just `after`).
            Since::After(after) if broker && after > head => {
                let msg = CoreMsg::Range {
                    topic: topic.clone(),
                    after,
                    upto: after,
                    client,
                    req,
                };
                self.send(bridge, msg);
                return None;
            }
            Since::After(after) => {
                let (resume, backlog) = home.backlog_since(after);
                match resume {
                    Resume::Complete => (None, backlog),
                    Resume::Trimmed { oldest } => (Some(Gap::Trimmed { after, oldest }), backlog),
                    Resume::Future => (Some(Gap::Future { after }), backlog),
                }
            }
            Since::Unknown(reason) => (
                Some(Gap::Unknown(reason)),
                home.history.all().cloned().collect(),
            ),
        };
        Some(CoreMsg::Subscribed {
            topic: topic.clone(),
            client,
            req,
            head,
            gap,
            backlog,
        })
    }

    /// Sends a home's answer to its subscriber's core (or applies it here).
    pub(super) fn reply_subscribed(&mut self, client: ClientId, reply: Option<CoreMsg>) {
        if let Some(reply) = reply {
            self.post(client.core(), reply);
        }
    }

    /// At the home core, single-node mode: stamp the next position, keep it in
    /// history, fan out.
    pub(super) fn home_publish(&mut self, topic: &str, event: Option<&str>, data: &[u8]) -> u64 {
        let ids = self.ids;
        let home = self.homes.get_or_create(topic);
        home.seq += 1;
        let msg = Arc::new(Message::encode(
            ids,
            home.name.clone(),
            home.seq,
            event,
            data,
        ));
        self.keep_and_fan_out(msg)
    }

    /// At the home core, broker mode: a stream entry read by the bridge. Entries
    /// come in stream order; one already seen is dropped.
    pub(super) fn home_entry(&mut self, entry: StreamEntry) {
        let ids = self.ids;
        let Some(home) = self.homes.get_mut(&entry.topic) else {
            return;
        };
        if home.watch != Watch::On || entry.key <= home.seq {
            return;
        }
        home.seq = entry.key;
        let msg = Arc::new(Message::encode(
            ids,
            home.name.clone(),
            entry.key,
            entry.event.as_deref(),
            &entry.data,
        ));
        self.keep_and_fan_out(msg);
    }

    /// Puts a stamped message in its topic's history and queues it to every core
    /// that listens.
    fn keep_and_fan_out(&mut self, msg: Arc<Message>) -> u64 {
        let here = self.core;
        let Some(home) = self.homes.get_mut(&msg.topic) else {
            return msg.seq;
        };
        let mut local = false;
        let mut remote = Vec::with_capacity(home.cores.len());
        for &core in &home.cores {
            if core == here {
                local = true;
            } else {
                remote.push(usize::from(core));
            }
        }
        // Keeping it may make room by dropping the core's oldest messages, and
        // forget a topic nobody listens to (this one too, under a tiny budget).
        self.homes.keep(&msg, self.now);
        self.arm_history_expiry();
        for core in remote {
            self.send(core, CoreMsg::Deliver(msg.clone()));
        }
        let seq = msg.seq;
        if local {
            // Queued to the subscribers by the effects task, after this
            // publish is answered.
            self.defer_delivery(msg);
        }
        self.metrics.published.inc();
        self.update_gauges();
        seq
    }

    /// A core no longer listens to `topic`; with a broker, the last one stops
    /// the bridge reading it.
    pub(super) fn home_release(&mut self, topic: &str, core: u16) {
        let broker = self.broker;
        let bridge = self.bridge();
        if self.homes.release(topic, core) || !broker {
            self.update_gauges();
            return;
        }
        let Some(home) = self.homes.get_mut(topic) else {
            return;
        };
        if home.waiting.is_empty() && home.watch != Watch::Off {
            home.watch = Watch::Off;
            let name = home.name.clone();
            self.send(bridge, CoreMsg::Unwatch { topic: name });
            // Reading again starts a new history: this one is of no use.
            self.homes.drop_history(topic);
        }
        self.update_gauges();
    }

    /// The bridge reads `topic` from after stream position `from`: the history
    /// starts there, and the parked subscribes get their answers.
    pub(super) fn home_watching(&mut self, topic: &str, from: u64) {
        if self
            .homes
            .get_mut(topic)
            .is_none_or(|home| home.watch != Watch::Starting)
        {
            return;
        }
        self.homes.restart_history(topic, from);
        let Some(home) = self.homes.get_mut(topic) else {
            return;
        };
        home.seq = home.seq.max(from);
        home.watch = Watch::On;
        let waiting = std::mem::take(&mut home.waiting);
        let name = home.name.clone();
        for w in waiting {
            let reply = self.answer_subscribe(&name, w.client, w.since, w.req);
            self.reply_subscribed(w.client, reply);
        }
    }

    /// The bridge's answer to a `Range`: the older entries, then what the
    /// history holds, as one backlog.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn home_ranged(
        &mut self,
        topic: &Arc<str>,
        after: u64,
        upto: u64,
        client: ClientId,
        req: u32,
        entries: Vec<StreamEntry>,
        trimmed: bool,
    ) {
        let ids = self.ids;
        let Some(home) = self.homes.get_mut(topic) else {
            return;
        };
        let head = home.seq;
        let mut older: Vec<Arc<Message>> = entries
            .iter()
            .filter(|e| e.key > after && e.key <= upto)
            .map(|e| {
                Arc::new(Message::encode(
                    ids,
                    home.name.clone(),
                    e.key,
                    e.event.as_deref(),
                    &e.data,
                ))
            })
            .collect();
        let last = older.last().map_or(after, |m| m.seq).max(upto);
        let (resume, rest) = home.history.since(last, head);
        older.extend(rest.cloned());
        let backlog = Backlog::from(older);
        let trimmed_gap = |backlog: &[Arc<Message>]| Gap::Trimmed {
            after,
            oldest: backlog.first().map_or(head + 1, |m| m.seq),
        };
        let (start, gap) = match resume {
            // A resume from past what this node has read (the `Range` over just
            // `after`), and the stream holds that entry: the client starts right
            // after it; the entries up to it, read later, count as seen.
            Resume::Future if !trimmed => (after, None),
            Resume::Future => (head, Some(Gap::Future { after })),
            // The history may have dropped entries after `upto` while the
            // bridge answered; then the seam has a hole too.
            Resume::Trimmed { .. } => (head, Some(trimmed_gap(&backlog))),
            Resume::Complete => (head, trimmed.then(|| trimmed_gap(&backlog))),
        };
        let reply = CoreMsg::Subscribed {
            topic: topic.clone(),
            client,
            req,
            head: start,
            gap,
            backlog,
        };
        self.reply_subscribed(client, Some(reply));
    }
}
