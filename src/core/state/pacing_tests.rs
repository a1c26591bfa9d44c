//! The write pacing on virtual time: one core driven the way the runtime's
//! effects task drives it (slices of writes, publishes read between slices, a
//! sleep while the writes are held back), with every write costing virtual
//! time. Checks what coalescing must keep: order, no loss, the slow-consumer
//! cut, and the bound on the added delay.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use super::*;
use crate::core::bus_msg::Since;
use crate::core::client::Lifecycle;
use crate::core::homes::HistoryLimits;

const US: Duration = Duration::from_micros(1);
const MS: Duration = Duration::from_millis(1);
/// Clients written per slice, as the runtime's `FLUSH_SLICE`.
const SLICE: usize = 64;

/// One core and the world around it, on a virtual clock.
struct Sim {
    core: CoreState,
    /// The clients, by socket (client `fd` is `ids[fd]`).
    ids: Vec<ClientId>,
    now: Cell<Duration>,
    /// What each client's socket took, and when each write happened.
    sockets: HashMap<RawFd, Vec<u8>>,
    /// The cost of one write system call, in virtual time.
    send_cost: Duration,
    /// Sockets that take nothing (a peer that stopped reading).
    stalled: Vec<RawFd>,
    writes: usize,
    /// The holds the core imposed: from when it first had writes held back to
    /// when their pass began.
    holds: Vec<Duration>,
    /// For each message (by its payload number), when it was published.
    published_at: Vec<Duration>,
    /// The longest a message waited from its publish to a write carrying it.
    worst_wait: Duration,
}

impl Sim {
    fn new(clients: usize, send_cost: Duration, write_delay: Duration) -> Sim {
        let limits = Limits {
            max_outbox_bytes: 1 << 20,
            max_topics_per_client: 8,
            heartbeat: Tick::new(1_000_000),
            idle: Tick::ZERO,
            write_delay,
        };
        let mut core = CoreState::new(
            0,
            1,
            IdScheme::Local(crate::proto::cursor::Epoch::new(0xe)),
            limits,
            HistoryLimits::per_topic(100, 1 << 20),
            Arc::new(CoreMetrics::default()),
        );
        let mut ids = Vec::new();
        for fd in 0..clients as RawFd {
            let id = core.register(Transport::Sse, fd);
            core.set_stream_cursor(id, 1);
            core.subscribe(id, "t", Since::Live).expect("subscribe");
            ids.push(id);
        }
        let mut sim = Sim {
            core,
            ids,
            now: Cell::new(Duration::ZERO),
            sockets: HashMap::new(),
            send_cost,
            stalled: Vec::new(),
            writes: 0,
            holds: Vec::new(),
            published_at: Vec::new(),
            worst_wait: Duration::ZERO,
        };
        // The subscriptions' first bytes (the stream cursor) go out now.
        sim.run_until(Duration::ZERO, &[]);
        sim.writes = 0;
        sim
    }

    fn publish(&mut self) {
        let n = self.published_at.len();
        self.published_at.push(self.now.get());
        let start = self.core.publish("t", None, n.to_string().into_bytes());
        assert!(matches!(start, PublishStart::Done(_)));
    }

    /// Runs the effects task and publishes at the times in `publishes` (sorted)
    /// until `end`, then until nothing is left to write.
    fn run_until(&mut self, end: Duration, publishes: &[Duration]) {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut next = 0;
        let mut held_since: Option<Duration> = None;
        loop {
            // Reads happen between slices: publish what is due.
            while next < publishes.len() && publishes[next] <= self.now.get() {
                self.publish();
                next += 1;
            }
            let now = self.now.get();
            if self.core.poll_effects(&mut cx, now).is_ready() {
                let writes_before = self.writes;
                self.step();
                if self.writes > writes_before {
                    if let Some(since) = held_since.take() {
                        self.holds.push(now - since);
                    }
                }
                continue;
            }
            let held = self.core.held_until();
            if let Some(at) = held {
                held_since.get_or_insert(now);
                assert!(at > now, "held until a time already come");
            }
            // Sleep until the hold ends or the next publish, whichever first.
            let wake = [held, publishes.get(next).copied()]
                .into_iter()
                .flatten()
                .min();
            match wake {
                Some(at) => self.now.set(at.max(now)),
                None if now >= end => return,
                None => self.now.set(end),
            }
        }
    }

    /// One run of the effects task (one slice of writes at most).
    fn step(&mut self) {
        let Sim {
            core,
            now,
            sockets,
            send_cost,
            stalled,
            writes,
            published_at,
            worst_wait,
            ..
        } = self;
        core.run_effects(
            || now.get(),
            SLICE,
            |_, _| unreachable!("one core sends nothing"),
            |fd: RawFd, iov: &[IoSlice<'_>]| -> io::Result<usize> {
                now.set(now.get() + *send_cost);
                *writes += 1;
                if stalled.contains(&fd) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let out = sockets.entry(fd).or_default();
                let mut n = 0;
                for s in iov {
                    out.extend_from_slice(s);
                    n += s.len();
                    // Each message's wait: the payload is its number.
                    for m in payloads(s) {
                        let waited = now.get() - published_at[m];
                        *worst_wait = (*worst_wait).max(waited);
                    }
                }
                Ok(n)
            },
        );
    }

    /// The payload numbers `fd` received, in order.
    fn received(&self, fd: RawFd) -> Vec<usize> {
        self.sockets.get(&fd).map_or_else(Vec::new, |b| payloads(b))
    }
}

/// The payload numbers of the SSE events in `bytes` (each event's `data`).
fn payloads(bytes: &[u8]) -> Vec<usize> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|env| {
            let at = env.find("\"data\":")? + 7;
            env[at..].trim_end_matches('}').parse().ok()
        })
        .collect()
}

fn every(period: Duration, count: usize) -> Vec<Duration> {
    (1..=count as u32).map(|i| period * i).collect()
}

#[test]
fn an_idle_core_writes_every_message_at_once() {
    // 300 clients at 2 µs a write: a pass takes 0.6 ms, below the least hold.
    let mut sim = Sim::new(300, 2 * US, 2 * MS);
    sim.run_until(200 * MS, &every(10 * MS, 20));
    assert_eq!(sim.writes, 300 * 20, "one write per message per client");
    assert!(sim.holds.is_empty(), "no hold: {:?}", sim.holds);
    assert!(
        sim.worst_wait <= 300 * 2 * US,
        "a message waits for its own pass only: {:?}",
        sim.worst_wait
    );
}

#[test]
fn a_busy_core_holds_its_writes_within_the_bound_and_loses_nothing() {
    // 300 clients at 10 µs a write: a pass takes 3 ms; a publish every 0.5 ms.
    let bound = 2 * MS;
    let mut sim = Sim::new(300, 10 * US, bound);
    let publishes = every(500 * US, 400);
    sim.run_until(250 * MS, &publishes);
    let expect: Vec<usize> = (0..400).collect();
    for fd in 0..300 {
        assert_eq!(sim.received(fd), expect, "client {fd}: in order, none lost");
    }
    assert!(!sim.holds.is_empty(), "the busy core held its writes");
    let longest = sim.holds.iter().max().copied().unwrap_or_default();
    assert!(longest <= bound, "a hold of {longest:?} passed the bound");
    let per_write = 300.0 * 400.0 / sim.writes as f64;
    assert!(
        per_write > 4.0,
        "writes carry several messages: {per_write:.1}"
    );
    // A message waits at most for the pass under way, a hold, and its own pass.
    assert!(
        sim.worst_wait <= bound + 2 * 300 * 10 * US + 500 * US,
        "{:?}",
        sim.worst_wait
    );
}

#[test]
fn without_a_bound_a_busy_core_writes_back_to_back() {
    let mut sim = Sim::new(300, 10 * US, Duration::ZERO);
    sim.run_until(250 * MS, &every(500 * US, 400));
    assert!(sim.holds.is_empty());
    for fd in [0, 150, 299] {
        assert_eq!(sim.received(fd).len(), 400);
    }
}

#[test]
fn a_stalled_client_of_a_busy_core_is_cut_and_the_others_get_everything() {
    let mut sim = Sim::new(300, 10 * US, 2 * MS);
    sim.core.limits.max_outbox_bytes = 4096;
    sim.stalled.push(7);
    sim.run_until(250 * MS, &every(500 * US, 400));
    let life = sim.core.client(sim.ids[7]).map(Client::lifecycle);
    assert_eq!(life, Some(Lifecycle::Closing(CloseReason::SlowConsumer)));
    assert_eq!(sim.core.metrics().slow_consumers_sse.get(), 1);
    let expect: Vec<usize> = (0..400).collect();
    for fd in [0, 6, 8, 299] {
        assert_eq!(sim.received(fd), expect, "client {fd}");
    }
}
