//! Worker threads: one per core, pinned, each with its own monoio runtime, its own
//! `SO_REUSEPORT` listener and its own [`CoreState`]. A connection accepted on a
//! core lives and dies there.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::net::{ListenerOpts, TcpListener, UnixListener};

use super::broker::{self, BrokerStatus};
use super::bus::{self, Bus};
use super::settings::{AuthSettings, Driver, Secret, Settings};
use super::shutdown::{self, DrainSignal, Lifecycle};
use super::{conn, ingress};
use crate::core::state::CoreState;
use crate::metrics::CoreMetrics;
use crate::netio;
use crate::proto::access::AccessPolicy;
use crate::proto::cursor::{Epoch, IdScheme};
use crate::proto::json::JsonScratch;
use crate::{debug, error, info, warn};

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
    /// A flush is due (see [`Worker::settle`]), and the flush task's waker.
    flush_due: Cell<bool>,
    flusher: Cell<Option<std::task::Waker>>,
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

/// Clients written per slice of a flush (see [`Worker::run_flush`]).
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
    /// After any change to the core state: hands queued cross-core messages to the
    /// bus, writes to every client touched, and wakes the cores sent to.
    ///
    /// Cross-core messages leave at once; the writes are left to the flush task,
    /// which runs after every task already woken in this turn of the event loop,
    /// so all the messages a turn fans out reach each client in one write.
    pub fn settle(&self) {
        let mut st = self.state.borrow_mut();
        st.set_now(self.now_tick());
        let mut bus = self.bus.borrow_mut();
        let mut overflowed = 0;
        for (to, msg) in st.outbound.drain(..) {
            if !bus.send(to, msg) {
                overflowed += 1;
            }
        }
        st.metrics().bus_overflow.add(overflowed);
        bus.wake_peers();
        if !self.flush_due.replace(true) {
            if let Some(w) = self.flusher.take() {
                w.wake();
            }
        }
    }

    /// The flush task: writes every client touched since the last flush, once
    /// per turn of the event loop, in slices of [`FLUSH_SLICE`] clients.
    ///
    /// Between slices the task yields, so the core's other tasks run (the bus
    /// with its publishes and their acknowledgements, reads): a flush to many
    /// subscribers, which takes milliseconds of system calls, does not hold up a
    /// publish from another core until it ends. The clients left get whatever
    /// arrived meanwhile in the same write.
    pub async fn run_flush(self: Rc<Self>) {
        loop {
            std::future::poll_fn(|cx| {
                if self.flush_due.replace(false) {
                    return Poll::Ready(());
                }
                self.flusher.set(Some(cx.waker().clone()));
                Poll::Pending
            })
            .await;
            loop {
                let more = {
                    let mut st = self.state.borrow_mut();
                    let more = st.flush_dirty_upto(FLUSH_SLICE, netio::writev);
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

    /// The current tick of the core's timer wheel.
    pub fn now_tick(&self) -> u64 {
        crate::core::wheel::now_to_tick(self.started.elapsed(), crate::core::wheel::DEFAULT_TICK)
    }

    /// Milliseconds since the worker started: the tick of sans-IO state machines.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
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

/// Start-up failures, reported before the server counts as started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("io_uring is not available here (kernel, seccomp or io_uring_disabled); use --driver epoll or auto")]
    NoUring,
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
    #[error("cannot use publish socket {path}: {reason}")]
    PublishSocket { path: String, reason: String },
    #[error("worker {core} failed to start: {reason}")]
    Worker { core: usize, reason: String },
    #[error("cannot start the broker bridge: {reason}")]
    Broker { reason: String },
    #[error("access control: {reason}")]
    Access { reason: String },
}

/// Runs the server until the process is stopped.
pub fn run(cfg: Settings) -> Result<(), StartError> {
    let cfg = Arc::new(cfg);
    let cores = cfg.cores;
    let uring = match cfg.driver {
        Driver::Epoll => false,
        Driver::Uring if !monoio::utils::detect_uring() => return Err(StartError::NoUring),
        Driver::Uring => true,
        Driver::Auto => {
            let ok = monoio::utils::detect_uring();
            if !ok {
                warn!("msg=\"io_uring unavailable, falling back to epoll\"");
            }
            ok
        }
    };
    let driver: &'static str = if uring { "uring" } else { "epoll" };
    raise_nofile_limit();
    disable_huge_pages();

    refuse_a_port_in_use(cfg.listen)?;
    let access = Arc::new(access_policy(&cfg.auth)?);
    let epoch = new_epoch();
    let epoch_text = format!("{:012x}", epoch.get());
    let publish_listener = bind_publish_socket(&cfg)?;
    let all_metrics: Arc<[Arc<CoreMetrics>]> = (0..cores)
        .map(|_| Arc::new(CoreMetrics::default()))
        .collect();
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());

    let life = Arc::new(Lifecycle::new(cores));
    shutdown::block_stop_signals();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let mut publish_listener = Some(publish_listener);
    let mut threads = Vec::new();
    let mut buses = bus::build(cores + usize::from(cfg.broker.is_some()));
    let broker_status = match &cfg.broker {
        Some(settings) => {
            let status = Arc::new(BrokerStatus::default());
            let bridge_bus = buses.pop().ok_or_else(|| StartError::Worker {
                core: cores,
                reason: "no bus endpoint for the broker".into(),
            })?;
            broker::spawn(settings, bridge_bus, cores, status.clone())
                .map_err(|reason| StartError::Broker { reason })?;
            Some(status)
        }
        None => None,
    };
    for (core, bus) in buses.into_iter().enumerate() {
        let cfg = cfg.clone();
        let all_metrics = all_metrics.clone();
        let ready = ready_tx.clone();
        let epoch_text = epoch_text.clone();
        let life = life.clone();
        let done = done_tx.clone();
        let broker_status = broker_status.clone();
        let access = access.clone();
        let unix = if core == 0 {
            publish_listener.take()
        } else {
            None
        };
        let spawned = std::thread::Builder::new()
            .name(format!("ringcast-core-{core}"))
            .spawn(move || {
                if let Err(e) = monoio::utils::bind_to_cpu_set([core % available]) {
                    warn!("core={core} msg=\"cannot pin thread to cpu\" error=\"{e}\"");
                }
                let worker = move || {
                    let mut state = CoreState::new(
                        core,
                        cores,
                        IdScheme::Local(epoch),
                        cfg.limits,
                        cfg.history,
                        all_metrics[core].clone(),
                    );
                    if broker_status.is_some() {
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
                        flush_due: Cell::new(false),
                        flusher: Cell::new(None),
                        broker: broker_status,
                        access,
                        drain: DrainSignal::default(),
                        open: Cell::new(0),
                        all_closed: Cell::new(None),
                        refusing: Cell::new(0),
                        rng: Cell::new(
                            epoch.get() ^ (core as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
                        ),
                    })
                };
                let result = if uring {
                    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                        .with_entries(4096)
                        .enable_timer()
                        .build()
                        .map(|mut rt| rt.block_on(worker_main(worker(), unix, ready.clone())))
                } else {
                    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .map(|mut rt| rt.block_on(worker_main(worker(), unix, ready.clone())))
                };
                if let Err(e) = result {
                    let _ = ready.send(Err(StartError::Worker {
                        core,
                        reason: e.to_string(),
                    }));
                }
                let _ = done.send(core);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                return Err(StartError::Worker {
                    core,
                    reason: e.to_string(),
                })
            }
        }
    }
    drop(ready_tx);
    drop(done_tx);
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StartError::Worker {
                    core: 0,
                    reason: "a worker stopped during start".into(),
                })
            }
        }
    }
    info!(
        "msg=\"ringcast serving\" listen={} publish_socket={} cores={cores} driver={driver} epoch={epoch_text}",
        cfg.listen,
        cfg.publish_socket.display()
    );
    let sig = shutdown::wait_stop_signal();
    info!(
        "msg=\"draining\" signal={sig} drain_timeout_ms={}",
        cfg.drain_timeout.as_millis()
    );
    life.start_drain();
    std::thread::spawn(|| {
        let sig = shutdown::wait_stop_signal();
        eprintln!("ringcast: second signal ({sig}), exiting now");
        std::process::exit(1);
    });
    // Each core stops by itself at the drain deadline; the margin covers a core
    // stuck in a long batch.
    let deadline = std::time::Instant::now() + cfg.drain_timeout + Duration::from_secs(2);
    let mut stopped = 0;
    while stopped < cores {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(_) => stopped += 1,
            Err(_) => break,
        }
    }
    if stopped == cores {
        for t in threads {
            let _ = t.join();
        }
    }
    let _ = std::fs::remove_file(&cfg.publish_socket);
    let mut lock_path = cfg.publish_socket.clone().into_os_string();
    lock_path.push(".lock");
    let _ = std::fs::remove_file(lock_path);
    info!("msg=\"stopped\" cores_stopped={stopped}");
    Ok(())
}

async fn worker_main(
    w: Rc<Worker>,
    unix: Option<std::os::unix::net::UnixListener>,
    ready: mpsc::Sender<Result<(), StartError>>,
) {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    let listener = match TcpListener::bind_with_config(w.cfg.listen, &opts) {
        Ok(l) => l,
        Err(source) => {
            let _ = ready.send(Err(StartError::Listen {
                addr: w.cfg.listen.to_string(),
                source,
            }));
            return;
        }
    };
    if let Some(unix) = unix {
        match UnixListener::from_std(unix) {
            Ok(l) => {
                monoio::spawn(ingress::serve(w.clone(), l));
            }
            Err(e) => {
                let _ = ready.send(Err(StartError::PublishSocket {
                    path: w.cfg.publish_socket.display().to_string(),
                    reason: e.to_string(),
                }));
                return;
            }
        }
    }
    monoio::spawn(run_bus(w.clone()));
    monoio::spawn(w.clone().run_flush());
    let watcher = w.clone();
    monoio::spawn(
        async move { shutdown::watch(&watcher.life, watcher.core, &watcher.drain).await },
    );
    monoio::spawn(super::timer::run_ticks(w.clone()));
    info!(
        "core={} driver={} msg=\"worker started\" listen={}",
        w.core, w.driver, w.cfg.listen
    );
    let _ = ready.send(Ok(()));
    drop(ready);
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
    {
        let mut st = w.state.borrow_mut();
        st.close_all(crate::core::client::CloseReason::Shutdown);
    }
    w.settle();
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

/// The bus task: applies what other cores send, in batches, then settles.
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
            w.settle();
            if n < BUS_BATCH {
                break;
            }
            YieldNow(false).await;
        }
    }
}

/// Gives other tasks of the core a turn.
pub struct YieldNow(pub bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Refuses to share the listen address with a live server: with `SO_REUSEPORT`
/// the kernel would silently split connections between the two. A port that
/// answers a few times in a row is taken (a killed server's listener can answer
/// for a moment after it is gone).
fn refuse_a_port_in_use(addr: std::net::SocketAddr) -> Result<(), StartError> {
    for attempt in 0..5 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return Ok(());
        }
        if attempt < 4 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Err(StartError::Listen {
        addr: addr.to_string(),
        source: io::Error::new(
            io::ErrorKind::AddrInUse,
            "another server is listening on it",
        ),
    })
}

/// The access rules from the flags; the secret must be long enough for HS256.
fn access_policy(cfg: &AuthSettings) -> Result<AccessPolicy, StartError> {
    let fail = |reason: String| StartError::Access { reason };
    let secret = match &cfg.secret {
        Some(Secret::Given(s)) => Some(s.as_bytes().to_vec()),
        Some(Secret::File(path)) => {
            let mut bytes = std::fs::read(path)
                .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
            while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                bytes.pop();
            }
            Some(bytes)
        }
        None => None,
    };
    if let Some(secret) = &secret {
        if secret.len() < crate::proto::token::MIN_SECRET_LEN {
            return Err(fail(format!(
                "the auth secret must be at least {} bytes (RFC 7518 §3.2)",
                crate::proto::token::MIN_SECRET_LEN
            )));
        }
    }
    if cfg.publish_key.is_some() && secret.is_none() {
        warn!("msg=\"--publish-key has no effect without --auth-secret: publishing is open\"");
    }
    Ok(AccessPolicy::new(
        secret.as_deref(),
        cfg.publish_key.as_deref().map(str::as_bytes),
        cfg.allowed_origins.as_deref(),
    ))
}

/// A fresh epoch for this run: clock and process id mixed, 48 bits.
fn new_epoch() -> Epoch {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32);
    // splitmix64 finalizer: neighbouring starts get unrelated epochs.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Epoch::new(x ^ (x >> 31))
}

/// Raises the open-file soft limit to the hard limit, and logs what it got.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let before = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            info!(
                "msg=\"open file limit\" before={before} now={}",
                lim.rlim_cur
            );
        }
    }
}

/// Turns transparent huge pages off for this process. The allocator asks for them
/// on its arenas, and then every first touch of a 2 MiB region makes all of it
/// resident: idle connections measured 2.3 KiB of RSS each with huge pages and
/// 1.3 KiB without (15,000 SSE streams, `--cores 2`), with no measurable gain in
/// fan-out throughput from them.
fn disable_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        debug!(
            "msg=\"transparent huge pages stay on\" error=\"{}\"",
            std::io::Error::last_os_error()
        );
    }
}

/// Binds the publish socket, replacing a stale file but never a live server's.
fn bind_publish_socket(cfg: &Settings) -> Result<std::os::unix::net::UnixListener, StartError> {
    let path = &cfg.publish_socket;
    let fail = |reason: String| StartError::PublishSocket {
        path: path.display().to_string(),
        reason,
    };
    // Whether another server owns the socket is told by a lock the kernel
    // drops with its owner, not by whether the socket still answers: a killed
    // server's io_uring listener can accept for a moment after it is gone.
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| fail(format!("cannot open {}: {e}", lock_path.to_string_lossy())))?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        return Err(fail("another server is using it".into()));
    }
    // Held until the process exits.
    std::mem::forget(lock);
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| fail(format!("cannot remove stale socket: {e}")))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    if let Err(e) = std::fs::set_permissions(
        path,
        std::os::unix::fs::PermissionsExt::from_mode(cfg.publish_socket_mode),
    ) {
        error!("msg=\"cannot set publish socket mode\" error=\"{e}\"");
    }
    Ok(listener)
}
