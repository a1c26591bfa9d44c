//! One core's worker: the [`Worker`] that all tasks of a core share (its
//! [`CoreState`], bus endpoint, clock, open-connection count and drain), and the
//! core's own tasks: accept, bus, effects and drain. A connection accepted on a
//! core lives and dies there.
//!
//! Tasks change the core state freely; none carries out what the change asks
//! for. The core queues it (cross-core messages, wakes, clients to write) and
//! wakes the effects task ([`Worker::run_effects`]), which does all of it once
//! per turn of the event loop.
//!
//! Starting the process and its threads is `server`'s job; each thread builds
//! its worker with [`Worker::new`], then [`spawn_tasks`] and [`serve`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use monoio::net::{TcpListener, UnixListener};

use super::broker::BrokerStatus;
use super::bus::Bus;
use super::settings::Settings;
use super::shutdown::{self, DrainSignal, Lifecycle};
use super::{conn, ingress};
use crate::core::state::CoreState;
use crate::metrics::CoreMetrics;
use crate::netio;
use crate::proto::access::AccessPolicy;
use crate::proto::cursor::{Epoch, IdScheme};
use crate::proto::json::JsonScratch;
use crate::time::Tick;
use crate::{debug, info, warn};

/// Bus messages handled per batch before other tasks get a turn.
const BUS_BATCH: usize = 1024;

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
    pub driver: &'static str,
    pub epoch_text: String,
    pub started: std::time::Instant,
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
}

/// Clients written per slice of a flush (see [`Worker::run_effects`]).
const FLUSH_SLICE: usize = 1024;

/// Lets the other ready tasks and the I/O completions run, then continues.
async fn yield_now() {
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
        Rc::new(Worker {
            core,
            cfg,
            state: RefCell::new(state),
            bus: RefCell::new(bus),
            all_metrics,
            json: RefCell::new(JsonScratch::new()),
            scratch: RefCell::new(vec![0; 16 * 1024]),
            driver,
            epoch_text,
            started: std::time::Instant::now(),
            life,
            broker,
            access,
            drain: DrainSignal::default(),
            open: Cell::new(0),
            all_closed: Cell::new(None),
            refusing: Cell::new(0),
            rng: Cell::new(epoch.get() ^ (core as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        })
    }

    /// The effects task: carries out what the core queued (see
    /// [`CoreState::run_effects`]) once per turn of the event loop. The first
    /// effect of a turn wakes it, so it runs after every task already woken in
    /// that turn: cross-core messages leave in one batch, the cores sent to are
    /// woken once, and all the messages a turn fans out reach each client in one
    /// write.
    ///
    /// Cross-core messages go first, then the writes, in slices of
    /// [`FLUSH_SLICE`] clients. Between slices the task yields, so the core's
    /// other tasks run (the bus with its publishes and their acknowledgements,
    /// reads): a flush to many subscribers, which takes milliseconds of system
    /// calls, does not hold up a publish from another core until it ends. The
    /// clients left get whatever arrived meanwhile in the same write, and the
    /// messages for other cores queued meanwhile leave at the next slice.
    pub async fn run_effects(self: Rc<Self>) {
        loop {
            std::future::poll_fn(|cx| self.state.borrow_mut().poll_effects(cx)).await;
            loop {
                let more = {
                    let mut st = self.state.borrow_mut();
                    let mut bus = self.bus.borrow_mut();
                    let mut overflowed = 0;
                    let more = st.run_effects(
                        self.now_tick(),
                        FLUSH_SLICE,
                        |to, msg| {
                            if !bus.send(to, msg) {
                                overflowed += 1;
                            }
                        },
                        netio::writev,
                    );
                    bus.wake_peers();
                    st.metrics().bus_overflow.add(overflowed);
                    st.metrics()
                        .outbox_bytes
                        .set(crate::core::outbox::queued_on_this_core() as u64);
                    more
                };
                if !more {
                    break;
                }
                yield_now().await;
            }
        }
    }

    /// The core's clock: ticks since the worker started, the one time base of
    /// the core and of the sans-IO state machines.
    pub fn now_tick(&self) -> Tick {
        Tick::now(self.started.elapsed())
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
    async fn all_closed(&self) {
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

/// Starts the tasks of a core that run beside its accept loop: the publish
/// socket (on the core that has it), the bus, the effects, the drain watcher and
/// the wheel's ticks.
pub fn spawn_tasks(w: &Rc<Worker>, publish: Option<UnixListener>) {
    if let Some(publish) = publish {
        monoio::spawn(ingress::serve(w.clone(), publish));
    }
    monoio::spawn(run_bus(w.clone()));
    monoio::spawn(w.clone().run_effects());
    let watcher = w.clone();
    monoio::spawn(
        async move { shutdown::watch(&watcher.life, watcher.core, &watcher.drain).await },
    );
    monoio::spawn(super::timer::run_ticks(w.clone()));
}

/// The rest of a core's life once started: accepts connections until the
/// drain begins, then drains.
pub async fn serve(w: Rc<Worker>, listener: TcpListener) {
    accept_loop(w.clone(), listener).await;
    drain(w).await;
}

async fn accept_loop(w: Rc<Worker>, listener: TcpListener) {
    let limit = w.cfg.max_connections;
    let mut backoff = Duration::from_millis(5);
    let mut accept = std::pin::pin!(listener.accept());
    loop {
        let Some(accepted) = w.drain.unless_draining(accept.as_mut()).await else {
            return;
        };
        accept.set(listener.accept());
        match accepted {
            Ok((stream, _peer)) => {
                backoff = Duration::from_millis(5);
                w.metrics().accepted.inc();
                let _ = stream.set_nodelay(true);
                if limit.is_some_and(|l| w.life.open() >= l) {
                    // Over capacity: answer 503 (or a retry hint on /sse), with a
                    // bound on how many refusals may be pending at once.
                    if limit.is_some_and(|l| w.refusing.get() < l.max(16)) {
                        w.refusing.set(w.refusing.get() + 1);
                        let w = w.clone();
                        monoio::spawn(async move {
                            conn::refuse_busy(&w, stream).await;
                            w.refusing.set(w.refusing.get() - 1);
                        });
                    }
                    continue;
                }
                monoio::spawn(conn::serve(w.clone(), stream, OpenConn::new(&w)));
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE)
                        | Some(libc::ENFILE)
                        | Some(libc::ENOBUFS)
                        | Some(libc::ENOMEM)
                ) =>
            {
                // Out of descriptors or memory: wait for connections to close
                // instead of spinning on the listener.
                warn!(
                    "core={} msg=\"accept failed, backing off\" error=\"{e}\" backoff_ms={}",
                    w.core,
                    backoff.as_millis()
                );
                monoio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                debug!("core={} msg=\"accept error\" error=\"{e}\"", w.core);
            }
        }
    }
}

/// The drain of one core: the listener is closed already, and every task that
/// waits for the drain is woken (idle keep-alive and publish-socket connections
/// close; those with a request under way answer it first). Close every client,
/// then wait for the last connection or the drain deadline.
async fn drain(w: Rc<Worker>) {
    w.state
        .borrow_mut()
        .close_all(crate::core::client::CloseReason::Shutdown);
    let _ = super::timer::timeout(&w, w.cfg.drain_timeout, w.all_closed()).await;
    info!("core={} msg=\"drained\" open_left={}", w.core, w.open.get());
}

/// Counts a connection as open on its core while alive; moves with the
/// connection from the request reader into the session task that takes it
/// over. The drain waits until none is left.
pub struct OpenConn(Rc<Worker>);

impl OpenConn {
    pub fn new(w: &Rc<Worker>) -> Self {
        w.open.set(w.open.get() + 1);
        w.life.count_open(true);
        OpenConn(w.clone())
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        let w = &self.0;
        w.open.set(w.open.get() - 1);
        w.life.count_open(false);
        if w.open.get() == 0 {
            if let Some(waker) = w.all_closed.take() {
                waker.wake();
            }
        }
    }
}

/// The bus task: applies what other cores send, in batches.
async fn run_bus(w: Rc<Worker>) {
    loop {
        let congested = w.bus.borrow().congested();
        if congested {
            // A ring to some core is full: retry soon, and meanwhile take input.
            let sleep = monoio::time::sleep(Duration::from_millis(1));
            let mut sleep = std::pin::pin!(sleep);
            std::future::poll_fn(|cx| {
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                w.bus.borrow().poll_inbound(cx)
            })
            .await;
            w.bus.borrow_mut().retry_overflow();
        } else {
            std::future::poll_fn(|cx| w.bus.borrow().poll_inbound(cx)).await;
        }
        loop {
            {
                let bus = w.bus.borrow();
                w.metrics()
                    .bus_depth
                    .set((bus.inbound_depth() + bus.overflowed()) as u64);
            }
            let n = {
                let mut st = w.state.borrow_mut();
                w.bus.borrow_mut().drain(BUS_BATCH, |msg| st.handle(msg))
            };
            if n < BUS_BATCH {
                break;
            }
            yield_now().await;
        }
    }
}
