//! One core's context: the [`Worker`] that all tasks of a core share (its
//! [`CoreState`], bus endpoint, clock, scratch buffers, open-connection count
//! and drain), the [`OpenConn`] count of its connections, and the effects task
//! that carries out what the core queued ([`Worker::run_effects`]).
//!
//! Tasks change the core state freely; none carries out what the change asks
//! for. The core queues it (cross-core messages, wakes, clients to write) and
//! wakes the effects task, which does all of it once per turn of the event loop.
//!
//! Every other runtime module reads the core through this one, and it imports
//! none of them but the ones it holds (bus, broker status, settings, shutdown).
//! The core's tasks (accept, bus, drain) are in `tasks`; starting the process
//! and its threads is `server`'s job.

use std::cell::{Cell, OnceCell, RefCell};
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::broker::BrokerStatus;
use super::bus::Bus;
use super::send_batch::SendBatch;
use super::settings::Settings;
use super::shutdown::{DrainSignal, Lifecycle};
use super::tls::conns::TlsConns;
use super::tls::Tls;
use crate::admission::inbound::{InboundBudget, InboundShare};
use crate::admission::peers::{PeerCounts, PeerSlot};
use crate::core::registry::ClientId;
use crate::core::state::CoreState;
use crate::metrics::CoreMetrics;
use crate::netio;
use crate::proto::access::AccessPolicy;
use crate::proto::cursor::{Epoch, IdScheme};
use crate::proto::json::JsonScratch;
use crate::time::Tick;

/// Everything one core owns, shared by its tasks (never by other threads).
pub struct Worker {
    pub core: usize,
    pub cfg: Arc<Settings>,
    pub state: RefCell<CoreState>,
    pub bus: RefCell<Bus>,
    pub all_metrics: Arc<[Arc<CoreMetrics>]>,
    pub json: RefCell<JsonScratch>,
    /// Read scratch for sockets whose input is discarded or parsed at once.
    pub scratch: RefCell<Vec<u8>>,
    /// Where a stream's response head (`101`, `200`) is written before the
    /// core copies it into the client's outbox.
    pub head_scratch: RefCell<Vec<u8>>,
    /// Writes each timer pass's heartbeats as one batch.
    pub heartbeat_writes: RefCell<SendBatch>,
    pub driver: &'static str,
    pub epoch_text: String,
    pub started: std::time::Instant,
    /// `started` on monoio's clock, for its timers.
    started_monoio: monoio::time::Instant,
    pub life: Arc<Lifecycle>,
    /// Who may subscribe, publish and connect from which origin.
    pub access: Arc<AccessPolicy>,
    /// The broker bridge's health, when topics are shared through one.
    pub broker: Option<Arc<BrokerStatus>>,
    /// The drain of this core: once started, no new streams, `/healthz`
    /// answers 503, and every task waiting on it is woken.
    pub drain: DrainSignal,
    /// Open connections of this core (HTTP, streams, publish socket); see
    /// [`OpenConn`].
    open: Cell<usize>,
    /// The drain task, waiting for the last connection to close.
    all_closed: Cell<Option<std::task::Waker>>,
    /// Connections being refused for capacity right now.
    pub refusing: Cell<usize>,
    rng: Cell<u64>,
    /// This core's part of `--max-inbound-memory`.
    pub inbound: Rc<InboundShare>,
    /// Connections per address (`--max-connections-per-ip`), when capped.
    pub peers: Option<Arc<PeerCounts>>,
    /// A socket that is always readable, for [`Worker::yield_to_io`] (made when
    /// the effects task starts, inside the runtime).
    always_readable: OnceCell<Option<AlwaysReadable>>,
    /// The core's TLS connections, when `--listen` serves https.
    pub tls: Option<TlsConns>,
}

/// One end of a socket pair with a byte waiting in it, and the other end.
struct AlwaysReadable(
    monoio::net::UnixStream,
    /// Kept open: the byte stays unread, so the other end stays readable.
    #[allow(dead_code)]
    std::os::unix::net::UnixStream,
);

impl AlwaysReadable {
    fn new() -> Option<AlwaysReadable> {
        let (read, mut write) = std::os::unix::net::UnixStream::pair().ok()?;
        std::io::Write::write_all(&mut write, &[1]).ok()?;
        read.set_nonblocking(true).ok()?;
        Some(AlwaysReadable(
            monoio::net::UnixStream::from_std(read).ok()?,
            write,
        ))
    }
}

/// What the process hands every worker at start: the same for all cores.
#[derive(Clone)]
pub struct ProcessShared {
    pub cfg: Arc<Settings>,
    pub all_metrics: Arc<[Arc<CoreMetrics>]>,
    /// The I/O driver the runtimes run on: `uring` or `epoll`.
    pub driver: &'static str,
    pub epoch: Epoch,
    pub epoch_text: String,
    pub life: Arc<Lifecycle>,
    pub access: Arc<AccessPolicy>,
    pub broker: Option<Arc<BrokerStatus>>,
    /// The budget for partial input (`--max-inbound-memory`).
    pub inbound: Arc<InboundBudget>,
    pub peers: Option<Arc<PeerCounts>>,
    /// The certificate pair and config, when `--listen` serves https.
    pub tls: Option<Arc<Tls>>,
}

/// Clients written per slice of a flush (see [`Worker::run_effects`]).
const FLUSH_SLICE: usize = 32;

/// Gives up the thread for as little as possible: monoio puts a task woken
/// while it runs at the *front* of its queue, so this task runs again next,
/// before the other ready tasks and before the ring is reaped. Use
/// [`Worker::yield_to_io`] to let the rest of the core run.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

impl Worker {
    /// The worker of `core`, with its state and its end of the bus. Called on
    /// the core's own thread: its clock starts now.
    pub fn new(core: usize, bus: Bus, shared: ProcessShared) -> Rc<Worker> {
        let ProcessShared {
            cfg,
            all_metrics,
            driver,
            epoch,
            epoch_text,
            life,
            access,
            broker,
            inbound,
            peers,
            tls,
        } = shared;
        let mut state = CoreState::new(
            core,
            cfg.cores,
            IdScheme::Local(epoch),
            cfg.limits,
            cfg.history,
            all_metrics[core].clone(),
        );
        if broker.is_some() {
            state = state.with_broker();
        }
        let started = std::time::Instant::now();
        let share = InboundShare::new(inbound, cfg.cores, Some(all_metrics[core].clone()));
        Rc::new(Worker {
            core,
            cfg,
            state: RefCell::new(state),
            bus: RefCell::new(bus),
            all_metrics,
            json: RefCell::new(JsonScratch::new()),
            scratch: RefCell::new(vec![0; 16 * 1024]),
            head_scratch: RefCell::new(Vec::with_capacity(512)),
            heartbeat_writes: RefCell::new(SendBatch::new(driver == "uring")),
            driver,
            epoch_text,
            started,
            started_monoio: monoio::time::Instant::from_std(started),
            life,
            broker,
            access,
            drain: DrainSignal::default(),
            open: Cell::new(0),
            all_closed: Cell::new(None),
            refusing: Cell::new(0),
            rng: Cell::new(epoch.get() ^ (core as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            inbound: share,
            peers,
            always_readable: OnceCell::new(),
            tls: tls.map(TlsConns::new),
        })
    }

    /// The effects task: carries out what the core queued (see
    /// [`CoreState::run_effects`]) once per turn of the event loop. The first
    /// effect of a turn wakes it, so it runs after every task already woken in
    /// that turn: cross-core messages leave in one batch, the cores sent to are
    /// woken once, and all the messages a turn fans out reach each client in one
    /// write.
    ///
    /// The writes go in slices of [`FLUSH_SLICE`] clients. Between slices the
    /// task yields, so the runtime reaps the ring's completions and the core's
    /// other tasks run (the bus, through its doorbell, reads, publishes and
    /// their answers): they wait for one slice at most, never for a whole
    /// fan-out. The clients left get whatever arrived
    /// meanwhile in the same write. When the core's write pacing holds the
    /// writes back, the task sleeps until the hold ends (anything else queued
    /// meanwhile is carried out at once).
    pub async fn run_effects(self: Rc<Self>) {
        // The yield's socket pair is made now, with the core's other
        // descriptors, not at the first long flush.
        if self.driver == "uring" {
            self.always_readable.get_or_init(AlwaysReadable::new);
        }
        let mut hold = std::pin::pin!(monoio::time::sleep(Duration::ZERO));
        let mut holding = None;
        loop {
            std::future::poll_fn(|cx| {
                let mut st = self.state.borrow_mut();
                if st.poll_effects(cx, self.elapsed()).is_ready() {
                    return Poll::Ready(());
                }
                let Some(until) = st.held_until() else {
                    return Poll::Pending;
                };
                if holding != Some(until) {
                    holding = Some(until);
                    hold.as_mut().reset(self.started_monoio + until);
                }
                hold.as_mut().poll(cx)
            })
            .await;
            holding = None;
            loop {
                let more = {
                    let mut st = self.state.borrow_mut();
                    let mut bus = self.bus.borrow_mut();
                    let mut overflowed = 0;
                    let mut writes = 0;
                    let more = st.run_effects(
                        || self.elapsed(),
                        FLUSH_SLICE,
                        |to, msg| {
                            if !bus.send(to, msg) {
                                overflowed += 1;
                            }
                        },
                        |fd, iov| {
                            writes += 1;
                            self.writev(fd, iov)
                        },
                    );
                    self.tls_backlog(&mut st);
                    bus.wake_peers();
                    st.metrics().stream_writes.add(writes);
                    st.metrics().bus_overflow.add(overflowed);
                    st.metrics()
                        .outbox_bytes
                        .set(crate::core::outbox::queued_on_this_core() as u64);
                    more
                };
                if !more {
                    break;
                }
                self.yield_to_io().await;
            }
        }
    }

    /// Flushes one client after its socket became writable (see
    /// [`CoreState::flush_client`]), through TLS when the listener serves it.
    pub fn flush_client(&self, id: ClientId) {
        let mut st = self.state.borrow_mut();
        st.flush_client(id, |fd, iov| self.writev(fd, iov));
        self.tls_backlog(&mut st);
    }

    /// The core's write to a client socket: plain, or sealed by the TLS
    /// table when the listener serves https (see [`TlsConns::writev`]).
    fn writev(&self, fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        match &self.tls {
            None => netio::writev(fd, iov),
            Some(tls) => tls.writev(fd, iov),
        }
    }

    /// Writes the heartbeats the timer pass found due to idle streams (see
    /// [`CoreState::write_heartbeats`]): as one batch of raw sends on a plain
    /// listener; on https each is sealed into a record of its connection
    /// like any other write (raw bytes would break the stream). Returns the
    /// writes made.
    pub fn write_heartbeats(&self, st: &mut CoreState) -> usize {
        let Some(tls) = &self.tls else {
            let mut batch = self.heartbeat_writes.borrow_mut();
            return st.write_heartbeats(|sends, results| batch.send(sends, results));
        };
        let writes = st.write_heartbeats(|sends, results| {
            for (&(fd, bytes), result) in sends.iter().zip(results.iter_mut()) {
                *result = match tls.writev(fd, &[IoSlice::new(bytes)]) {
                    Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
                    Err(e) => -e.raw_os_error().unwrap_or(libc::EAGAIN),
                };
            }
        });
        self.tls_backlog(st);
        writes
    }

    /// Tells the core which TLS clients took a whole write that their socket
    /// did not: they wait for writability like any client after a short write.
    fn tls_backlog(&self, st: &mut CoreState) {
        if let Some(tls) = &self.tls {
            for id in tls.take_backlog() {
                st.socket_full(id);
            }
        }
    }

    /// Lets the core's other ready tasks run and the runtime submit and reap
    /// its I/O, then continues: waits for readiness of a socket that is always
    /// readable, which completes only through the ring. A task that works in
    /// slices yields this way (see [`yield_now`] for why not that way).
    ///
    /// On the epoll fallback a readiness wait on a ready socket completes at
    /// once, without going through the event loop, so there it is a plain
    /// [`yield_now`]: fairness between slices is the io_uring driver's.
    pub async fn yield_to_io(&self) {
        if self.driver != "uring" {
            return yield_now().await;
        }
        match self.always_readable.get_or_init(AlwaysReadable::new) {
            Some(AlwaysReadable(ready, _)) => {
                let _ = ready.readable(false).await;
            }
            None => yield_now().await,
        }
    }

    /// Until this core's fan-out is no longer behind its publishes (see
    /// [`CoreState::fan_out_behind`]): the backpressure on publishers and on the
    /// bus. At once when it is not behind, which is the rule.
    pub async fn fan_out_caught_up(&self) {
        while self.state.borrow().fan_out_behind() {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Time since the worker started: the origin of its ticks, at full
    /// resolution (the write pacing's clock).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The core's clock: ticks since the worker started, the one time base of
    /// the core and of the sans-IO state machines.
    pub fn now_tick(&self) -> Tick {
        Tick::now(self.elapsed())
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.all_metrics[self.core]
    }

    /// The drain has begun on this core.
    pub fn draining(&self) -> bool {
        self.drain.started()
    }

    /// Open connections of this core.
    pub fn open_connections(&self) -> usize {
        self.open.get()
    }

    /// Ready once no connection of this core is open.
    pub async fn all_closed(&self) {
        std::future::poll_fn(|cx| {
            if self.open.get() == 0 {
                return Poll::Ready(());
            }
            self.all_closed.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// The `retry:` hint for a refused or drained SSE client: the configured
    /// delay plus up to as much again at random, so a crowd does not return at once.
    pub fn retry_with_jitter(&self) -> u32 {
        // xorshift64: cheap, per core, good enough to spread reconnects.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        let base = self.cfg.sse_retry_ms;
        base + (x % u64::from(base.max(1))) as u32
    }
}

/// Counts a connection as open on its core (and toward its address's cap)
/// while alive; moves with the connection from the request reader into the
/// session task that takes it over. The drain waits until none is left.
///
/// On an https listener it also owns the connection's place in the core's TLS
/// table ([`OpenConn::with_tls`]), freed when it drops, before the socket closes.
pub struct OpenConn(Rc<Worker>, Option<PeerSlot>, Option<RawFd>);

impl OpenConn {
    pub fn new(w: &Rc<Worker>) -> Self {
        w.open.set(w.open.get() + 1);
        w.life.count_open(true);
        OpenConn(w.clone(), None, None)
    }

    /// The connection on `fd` has an entry in the core's TLS table, removed
    /// with this.
    pub fn with_tls(mut self, fd: RawFd) -> Self {
        self.2 = Some(fd);
        self
    }

    /// The worker the connection is counted on.
    pub fn worker(&self) -> &Rc<Worker> {
        &self.0
    }

    /// The connection also holds its place in its address's count.
    pub fn with_peer(mut self, slot: Option<PeerSlot>) -> Self {
        self.1 = slot;
        self
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        let w = &self.0;
        if let (Some(fd), Some(tls)) = (self.2, &w.tls) {
            tls.end(fd);
        }
        w.open.set(w.open.get() - 1);
        w.life.count_open(false);
        if w.open.get() == 0 {
            if let Some(waker) = w.all_closed.take() {
                waker.wake();
            }
        }
    }
}
