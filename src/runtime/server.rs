//! Process boot and shutdown: `ringcast serve` from [`Settings`] to exit.
//!
//! [`run`] picks the I/O driver, does the OS chores ([`os`]), builds what the
//! cores share (metrics, lifecycle, access policy, the bus and the broker
//! bridge), then starts one pinned thread per core, each with its own monoio
//! runtime and [`Worker`]. The server counts as started once every core has
//! bound its listener and reported ready. The main thread then waits for
//! SIGTERM/SIGINT, starts the drain, and waits (bounded) for the cores to stop.

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use monoio::net::{ListenerOpts, TcpListener, UnixListener};

use super::broker::{self, BrokerStatus};
use super::bus::{self, Bus};
use super::os;
use super::settings::{AuthSettings, Driver, Secret, Settings};
use super::shutdown::{self, Lifecycle};
use super::tasks;
use super::tls::{self, Tls};
use super::worker::{ProcessShared, Worker};
use crate::admission::inbound::InboundBudget;
use crate::admission::peers::PeerCounts;
use crate::metrics::CoreMetrics;
use crate::proto::access::AccessPolicy;
use crate::{info, warn};

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
    #[error("{0}")]
    Tls(#[from] super::tls::TlsError),
}

/// Runs the server until the process is stopped.
pub fn run(cfg: Settings) -> Result<(), StartError> {
    let cfg = Arc::new(cfg);
    let cores = cfg.cores;
    let uring = use_uring(cfg.driver)?;
    let driver: &'static str = if uring { "uring" } else { "epoll" };
    os::raise_nofile_limit();
    os::disable_huge_pages();
    crate::core::encodings::set_ws_deflate_min(cfg.ws_deflate_min_bytes);

    os::refuse_a_port_in_use(cfg.listen).map_err(|source| StartError::Listen {
        addr: cfg.listen.to_string(),
        source,
    })?;
    let access = Arc::new(access_policy(&cfg.auth)?);
    let tls = match &cfg.tls {
        Some(settings) => {
            let tls = Tls::load(settings)?;
            tls::log_ktls();
            info!(
                "msg=\"https and wss on --listen\" cert={} not_after={}",
                tls.cert_path().display(),
                tls.not_after()
            );
            Some(tls)
        }
        None => None,
    };
    let epoch = os::new_epoch();
    let epoch_text = format!("{:012x}", epoch.get());
    let publish_listener = os::bind_publish_socket(&cfg.publish_socket, cfg.publish_socket_mode)
        .map_err(|reason| StartError::PublishSocket {
            path: cfg.publish_socket.display().to_string(),
            reason,
        })?;
    let all_metrics: Arc<[Arc<CoreMetrics>]> = (0..cores)
        .map(|_| Arc::new(CoreMetrics::default()))
        .collect();

    let life = Arc::new(Lifecycle::new(cores));
    shutdown::block_stop_signals();
    if let Some(tls) = &tls {
        spawn_reloader(tls.clone());
    }
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let mut publish_listener = Some(publish_listener);
    let mut threads = Vec::new();
    let mut buses = bus::build(cores + usize::from(cfg.broker.is_some()), cores).map_err(|e| {
        StartError::Worker {
            core: 0,
            reason: format!("cross-core doorbells: {e}"),
        }
    })?;
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
    let shared = ProcessShared {
        cfg: cfg.clone(),
        all_metrics,
        driver,
        epoch,
        epoch_text: epoch_text.clone(),
        life: life.clone(),
        access,
        broker: broker_status,
        inbound: InboundBudget::new(cfg.max_inbound_memory),
        peers: cfg.max_connections_per_ip.map(PeerCounts::new),
        tls,
    };
    for (core, bus) in buses.into_iter().enumerate() {
        // The publish socket is served by core 0.
        let unix = if core == 0 {
            publish_listener.take()
        } else {
            None
        };
        let spawned = spawn_core(
            core,
            uring,
            bus,
            shared.clone(),
            unix,
            ready_tx.clone(),
            done_tx.clone(),
        );
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
    os::remove_publish_socket(&cfg.publish_socket);
    info!("msg=\"stopped\" cores_stopped={stopped}");
    Ok(())
}

/// Reloads the TLS pair on every SIGHUP, on a thread of its own (blocked in
/// every other thread, so none is killed by it): new handshakes get the new
/// pair; a broken pair is logged and the previous one serves on.
fn spawn_reloader(tls: Arc<Tls>) {
    shutdown::block_signal(libc::SIGHUP);
    let spawned = std::thread::Builder::new()
        .name("ringcast-tls-reload".into())
        .spawn(move || loop {
            shutdown::wait_signal(libc::SIGHUP);
            let _ = tls.reload();
        });
    if let Err(e) = spawned {
        warn!("msg=\"cannot start the TLS reload thread: SIGHUP ignored\" error=\"{e}\"");
    }
}

/// Whether the workers run on io_uring (else epoll), as `--driver` asks and the
/// kernel allows.
fn use_uring(driver: Driver) -> Result<bool, StartError> {
    Ok(match driver {
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
    })
}

/// The io_uring runtime of one core, built on its thread.
///
/// The ring is set up with `IORING_SETUP_COOP_TASKRUN`. The ring belongs to
/// its core's thread, and only that thread submits to it or reaps it. Without
/// the flag, a completion posted from another CPU (a client's bytes, an
/// accept, a peer's close) interrupts the core with an IPI whenever it runs
/// in user space, so that the kernel can post the completion at once. With
/// it, that work waits for the thread's next entry into the kernel. A busy
/// core enters the kernel with every send and every wait, so little waits
/// long. The flag took a WS connection from 47 to 37 µs of server CPU (8
/// interleaved pairs), level with Bun, and publishing lost nothing
/// measurable (README, "What a connection and a heartbeat cost"). Kernels
/// before 5.19 refuse the flag; the ring is then set up without it.
fn uring_runtime() -> io::Result<UringRuntime> {
    uring_runtime_with(true).or_else(|e| {
        warn!("msg=\"io_uring refuses COOP_TASKRUN (a kernel before 5.19?), ring set up without it\" error=\"{e}\"");
        uring_runtime_with(false)
    })
}

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

/// The core runtime of [`uring_runtime`], with or without `COOP_TASKRUN`.
fn uring_runtime_with(coop_taskrun: bool) -> io::Result<UringRuntime> {
    let mut ring = io_uring::IoUring::builder();
    if coop_taskrun {
        ring.setup_coop_taskrun();
    }
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .uring_builder(ring)
        .with_entries(4096)
        .enable_timer()
        .build()
}

/// Starts the thread of one core: pinned to a CPU, with its own monoio runtime
/// and [`Worker`]. It reports on `ready` once serving (or why it cannot), and on
/// `done` when it has stopped.
fn spawn_core(
    core: usize,
    uring: bool,
    bus: Bus,
    shared: ProcessShared,
    unix: Option<std::os::unix::net::UnixListener>,
    ready: mpsc::Sender<Result<(), StartError>>,
    done: mpsc::Sender<usize>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::Builder::new()
        .name(format!("ringcast-core-{core}"))
        .spawn(move || {
            if let Err(e) = monoio::utils::bind_to_cpu_set([core % available]) {
                warn!("core={core} msg=\"cannot pin thread to cpu\" error=\"{e}\"");
            }
            // Built on the core's own thread, once its runtime exists.
            let worker = move || Worker::new(core, bus, shared);
            let result = if uring {
                uring_runtime().map(|mut rt| rt.block_on(core_main(worker(), unix, ready.clone())))
            } else {
                monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build()
                    .map(|mut rt| rt.block_on(core_main(worker(), unix, ready.clone())))
            };
            if let Err(e) = result {
                let _ = ready.send(Err(StartError::Worker {
                    core,
                    reason: e.to_string(),
                }));
            }
            let _ = done.send(core);
        })
}

/// The life of one core inside its runtime: binds its listener (and, on core
/// 0, takes the publish socket), starts the core's tasks, reports ready, then
/// serves until the drain ends.
async fn core_main(
    w: Rc<Worker>,
    unix: Option<std::os::unix::net::UnixListener>,
    ready: mpsc::Sender<Result<(), StartError>>,
) {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    // Non-blocking: the accept loop takes connections with accept4 on readiness.
    let bound = TcpListener::bind_with_config(w.cfg.listen, &opts)
        .and_then(|l| crate::netio::set_nonblocking(l.as_raw_fd()).map(|()| l));
    let listener = match bound {
        Ok(l) => l,
        Err(source) => {
            let _ = ready.send(Err(StartError::Listen {
                addr: w.cfg.listen.to_string(),
                source,
            }));
            return;
        }
    };
    let inherited = os::set_inherited_options(listener.as_raw_fd(), w.cfg.idle_timeout);
    if let Err(e) = inherited {
        warn!(
            "core={} msg=\"cannot set the listener's TCP options\" error=\"{e}\"",
            w.core
        );
    }
    let publish = match unix.map(UnixListener::from_std).transpose() {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(StartError::PublishSocket {
                path: w.cfg.publish_socket.display().to_string(),
                reason: e.to_string(),
            }));
            return;
        }
    };
    tasks::spawn_tasks(&w, publish);
    info!(
        "core={} driver={} msg=\"worker started\" listen={}",
        w.core, w.driver, w.cfg.listen
    );
    let _ = ready.send(Ok(()));
    drop(ready);
    tasks::serve(w, listener).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
    use std::io::{Read, Write};

    #[test]
    fn a_core_ring_with_coop_taskrun_gets_completions_posted_from_another_cpu() {
        if !monoio::utils::detect_uring() {
            eprintln!("no io_uring here: nothing to check");
            return;
        }
        let mut rt = uring_runtime_with(true).expect("kernels from 5.19 take COOP_TASKRUN");
        rt.block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("address");
            // The peer runs on another thread: its connect and its bytes are
            // completions the ring gets from outside its own thread.
            let peer = std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                std::thread::sleep(Duration::from_millis(50));
                s.write_all(b"ping").expect("write");
                let mut answer = [0u8; 4];
                s.read_exact(&mut answer).expect("read");
                answer
            });
            let (mut conn, _) = listener.accept().await.expect("accept");
            let (r, got) = conn.read_exact(vec![0u8; 4]).await;
            r.expect("read");
            assert_eq!(got, b"ping");
            conn.write_all(b"pong".to_vec()).await.0.expect("write");
            assert_eq!(&peer.join().expect("peer"), b"pong");
        });
    }
}
