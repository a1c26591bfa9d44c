//! Graceful lifecycle: SIGTERM/SIGINT start a drain, a second signal exits at once.
//!
//! The main thread blocks both signals before the workers start (threads inherit
//! the mask) and waits for them with `sigwait`, so no handler runs in a worker. On
//! the first signal it raises [`Lifecycle::draining`] and wakes every core; each core
//! closes its listener, answers `/healthz` with 503, closes WebSocket clients with
//! 1001 and ends SSE streams with a `retry:` hint and a `ringcast.shutdown` event,
//! lets publish connections answer what they read, and stops when its last
//! connection is gone or `--drain-timeout` has passed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// Process-wide lifecycle state shared by the main thread and the workers.
pub struct Lifecycle {
    draining: AtomicBool,
    /// Open connections over all cores (for `--max-connections`); changes only
    /// when a connection opens or closes, never on the message path.
    open: AtomicUsize,
    /// One per core: its drain watcher.
    wakers: Vec<AtomicWaker>,
}

impl Lifecycle {
    pub fn new(cores: usize) -> Self {
        Self {
            draining: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            wakers: (0..cores).map(|_| AtomicWaker::new()).collect(),
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Counts a connection opened (`+1`) or closed (`-1`) on some core.
    pub fn count_open(&self, opened: bool) {
        if opened {
            self.open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Open connections over all cores.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Starts the drain on every core.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::Release);
        for w in &self.wakers {
            w.wake();
        }
    }

    /// Waits for `fut` (pinned by the caller, so it can be waited on again) or
    /// the start of the drain, whichever comes first: `None` on drain.
    pub async fn unless_draining<F: Future>(
        &self,
        core: usize,
        mut fut: Pin<&mut F>,
    ) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            self.poll_drain(core, cx).map(|()| None)
        })
        .await
    }

    /// Ready once the drain has started.
    pub fn poll_drain(&self, core: usize, cx: &mut Context<'_>) -> Poll<()> {
        if self.draining() {
            return Poll::Ready(());
        }
        self.wakers[core].register(cx.waker());
        if self.draining() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The signals that stop the server.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local, owned sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread and the threads it spawns
/// afterwards. Call before starting the workers.
pub fn block_stop_signals() {
    let set = stop_signals();
    // SAFETY: `set` is a valid sigset_t; a null old-set pointer is allowed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGTERM or SIGINT; returns the signal number.
pub fn wait_stop_signal() -> i32 {
    let set = stop_signals();
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` and `sig` are valid for the call; the signals are blocked, as
    // sigwait requires.
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    sig
}
