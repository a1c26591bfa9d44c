//! Worker threads: one per core, pinned, each with its own monoio runtime, its own
//! `SO_REUSEPORT` listener and its own [`CoreState`]. A connection accepted on a
//! core lives and dies there.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::net::{ListenerOpts, TcpListener, UnixListener};

use super::bus::{self, Bus};
use super::{conn, ingress, netio};
use crate::config::{Driver, ServeConfig};
use crate::core::state::{CoreState, Limits};
use crate::metrics::CoreMetrics;
use crate::proto::cursor::Epoch;
use crate::proto::json::JsonScratch;
use crate::{debug, error, info, warn};

/// Bus messages handled per batch before other tasks get a turn.
const BUS_BATCH: usize = 1024;

/// Everything one core owns, shared by its tasks (never by other threads).
pub struct Worker {
    pub core: usize,
    pub cfg: Arc<ServeConfig>,
    pub state: RefCell<CoreState>,
    pub bus: RefCell<Bus>,
    pub all_metrics: Arc<[Arc<CoreMetrics>]>,
    pub json: RefCell<JsonScratch>,
    /// Read scratch for sockets whose input is discarded or parsed at once.
    pub scratch: RefCell<Vec<u8>>,
    pub driver: &'static str,
    pub epoch_text: String,
    pub started: std::time::Instant,
}

impl Worker {
    /// After any change to the core state: hands queued cross-core messages to the
    /// bus, writes to every client touched, and wakes the cores sent to.
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
        st.flush_dirty(netio::writev);
        bus.wake_peers();
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
}

/// Runs the server until the process is stopped.
pub fn run(cfg: ServeConfig) -> Result<(), StartError> {
    let cfg = Arc::new(cfg);
    let cores = cfg.core_count();
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

    let epoch = new_epoch();
    let epoch_text = format!("{:012x}", epoch.get());
    let publish_listener = bind_publish_socket(&cfg)?;
    let all_metrics: Arc<[Arc<CoreMetrics>]> = (0..cores)
        .map(|_| Arc::new(CoreMetrics::default()))
        .collect();
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());

    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
    let mut publish_listener = Some(publish_listener);
    let mut threads = Vec::new();
    for (core, bus) in bus::build(cores).into_iter().enumerate() {
        let cfg = cfg.clone();
        let all_metrics = all_metrics.clone();
        let ready = ready_tx.clone();
        let epoch_text = epoch_text.clone();
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
                    let state = CoreState::new(
                        core,
                        cores,
                        epoch,
                        Limits {
                            max_outbox_bytes: cfg.max_outbox_bytes,
                            max_topics_per_client: cfg.max_topics_per_client,
                            heartbeat_ticks: ticks(cfg.heartbeat).max(1),
                            idle_ticks: ticks(cfg.effective_idle_timeout()),
                        },
                        (cfg.history, cfg.history_bytes),
                        all_metrics[core].clone(),
                    );
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
    for t in threads {
        let _ = t.join();
    }
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
    monoio::spawn(super::timer::run_ticks(w.clone()));
    info!(
        "core={} driver={} msg=\"worker started\" listen={}",
        w.core, w.driver, w.cfg.listen
    );
    let _ = ready.send(Ok(()));
    drop(ready);
    accept_loop(w, listener).await;
}

async fn accept_loop(w: Rc<Worker>, listener: TcpListener) {
    let mut backoff = Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                backoff = Duration::from_millis(5);
                w.metrics().accepted.inc();
                let _ = stream.set_nodelay(true);
                monoio::spawn(conn::serve(w.clone(), stream));
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

/// A duration in wheel ticks, rounded up.
pub fn ticks(d: Duration) -> u64 {
    crate::core::wheel::deadline_to_tick(d, crate::core::wheel::DEFAULT_TICK)
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

/// Binds the publish socket, replacing a stale file but never a live server's.
fn bind_publish_socket(cfg: &ServeConfig) -> Result<std::os::unix::net::UnixListener, StartError> {
    let path = &cfg.publish_socket;
    let fail = |reason: String| StartError::PublishSocket {
        path: path.display().to_string(),
        reason,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail("another server is listening on it".into()));
        }
        std::fs::remove_file(path).map_err(|e| fail(format!("cannot remove stale socket: {e}")))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    if let Err(e) =
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
    {
        error!("msg=\"cannot set publish socket mode\" error=\"{e}\"");
    }
    Ok(listener)
}
