//! A core's own tasks: the accept loop (and the refusals over
//! `--max-connections` and `--max-connections-per-ip`), the bus that applies what other cores send, the drain,
//! and starting the flush, tick and publish-socket tasks beside them.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream, UnixListener};

use super::http_conn::{self, Busy};
use super::worker::{OpenConn, Worker};
use super::{bus, ingress, shutdown, timer};
use crate::metrics::InboundRefusal;
use crate::netio;
use crate::{debug, info, warn};

/// Bus messages handled per batch before other tasks get a turn.
const BUS_BATCH: usize = 1024;

/// Starts the tasks of a core that run beside its accept loop: the publish
/// socket (on the core that has it), the bus, the flush, the drain watcher and
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
    monoio::spawn(timer::run_ticks(w.clone()));
}

/// The rest of a core's life once started: accepts connections until the
/// drain begins, then drains.
pub async fn serve(w: Rc<Worker>, listener: TcpListener) {
    accept_loop(w.clone(), listener).await;
    drain(w).await;
}

/// Connections taken in a row before the core's other tasks get a turn.
const ACCEPT_BATCH: usize = 64;

/// Takes connections with `accept4` once the listener is readable, as many as
/// are waiting (in batches of [`ACCEPT_BATCH`]), rather than with one io_uring
/// accept op each: that op costs an allocation for the address and a trip
/// through the ring per connection, and measured about 4 % more server CPU
/// per connection opened and closed (medians of 7 interleaved pairs, 10,000
/// WS connections, 48 against 46 µs).
async fn accept_loop(w: Rc<Worker>, listener: TcpListener) {
    let limit = w.cfg.max_connections;
    let mut backoff = Duration::from_millis(5);
    // Non-blocking since the core bound it (`server::core_main`).
    let lfd = listener.as_raw_fd();
    let mut in_row = 0;
    loop {
        let accepted = match netio::accept(lfd) {
            Ok((fd, peer)) => TcpStream::from_std(std::net::TcpStream::from(fd)).map(|s| (s, peer)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                in_row = 0;
                let readable = std::pin::pin!(listener.readable(false));
                if w.drain.unless_draining(readable).await.is_none() {
                    return;
                }
                continue;
            }
            Err(e) => Err(e),
        };
        in_row += 1;
        if in_row == ACCEPT_BATCH {
            in_row = 0;
            w.yield_to_io().await;
            if w.drain.started() {
                return;
            }
        }
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                w.metrics().accepted.inc();
                let slot = match &w.peers {
                    None => None,
                    Some(peers) => match peers.admit(peer.ip()) {
                        Some(slot) => Some(slot),
                        None => {
                            w.metrics().inbound_refused(InboundRefusal::PerIp);
                            refuse(&w, stream, Busy::PerIp);
                            continue;
                        }
                    },
                };
                if limit.is_some_and(|l| w.life.open() >= l) {
                    refuse(&w, stream, Busy::Capacity);
                    continue;
                }
                let mut open = OpenConn::new(&w).with_peer(slot);
                if w.tls.is_some() {
                    open = open.with_tls(stream.as_raw_fd());
                }
                monoio::spawn(http_conn::serve(w.clone(), stream, open));
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

/// Answers a connection refused at accept (`503`, `429`, or a retry hint on
/// `/sse`), with a bound on how many refusals may be pending at once: past it
/// the connection is dropped unanswered.
fn refuse(w: &Rc<Worker>, stream: TcpStream, why: Busy) {
    let bound = w.cfg.max_connections.unwrap_or(0).max(16);
    if w.refusing.get() < bound {
        w.refusing.set(w.refusing.get() + 1);
        let w = w.clone();
        monoio::spawn(async move {
            http_conn::refuse_busy(&w, stream, why).await;
            w.refusing.set(w.refusing.get() - 1);
        });
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
    let _ = timer::timeout(&w, w.cfg.drain_timeout, w.all_closed()).await;
    info!(
        "core={} msg=\"drained\" open_left={}",
        w.core,
        w.open_connections()
    );
}

/// The bus task: applies what other cores send, in batches. It waits on the
/// core's doorbell (see `bus`), so it runs within a round of the core's tasks
/// after a sender rang, however busy the core is.
async fn run_bus(w: Rc<Worker>) {
    // Without a doorbell (the runtime refused it), the bus task waits through
    // its waker: correct, but woken only when the core idles.
    let bell =
        w.bus.borrow_mut().take_doorbell().and_then(
            |bell| match monoio::net::UnixStream::from_std(bell) {
                Ok(bell) => Some(bell),
                Err(e) => {
                    warn!(
                        "core={} msg=\"doorbell refused by the runtime\" error=\"{e}\"",
                        w.core
                    );
                    None
                }
            },
        );
    let bell = bell.as_ref();
    loop {
        let congested = w.bus.borrow().congested();
        if congested {
            // A ring to some core is full: retry soon, and meanwhile take input.
            let sleep = monoio::time::sleep(Duration::from_millis(1));
            let mut sleep = std::pin::pin!(sleep);
            let mut inbound = std::pin::pin!(wait_inbound(&w, bell));
            std::future::poll_fn(|cx| {
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                inbound.as_mut().poll(cx)
            })
            .await;
            w.bus.borrow_mut().retry_overflow();
        } else {
            wait_inbound(&w, bell).await;
        }
        // A fan-out behind its publishes takes nothing more from the other
        // cores: their rings fill, and their publishers slow down.
        w.fan_out_caught_up().await;
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
            w.yield_to_io().await;
        }
    }
}

/// Until messages from other cores wait: arms the doorbell and waits for it
/// (or, without one, for the bus's waker).
async fn wait_inbound(w: &Worker, bell: Option<&monoio::net::UnixStream>) {
    let Some(bell) = bell else {
        return std::future::poll_fn(|cx| w.bus.borrow().poll_inbound(cx)).await;
    };
    while !w.bus.borrow().arm() {
        let _ = bell.readable(false).await;
        bus::silence(bell.as_raw_fd());
    }
}
