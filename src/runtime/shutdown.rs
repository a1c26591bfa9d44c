//! Graceful lifecycle: SIGTERM/SIGINT start a drain, a second signal exits at once.
//!
//! The main thread blocks both signals before the workers start (threads inherit
//! the mask) and waits for them with `sigwait`, so no handler runs in a worker. On
//! the first signal it raises [`Lifecycle::draining`] and wakes every core; each core
//! closes its listener, answers `/healthz` with 503, closes WebSocket clients with
//! 1001 and ends SSE streams with a `retry:` hint and a `ringcast.shutdown` event,
//! lets publish connections answer what they read, and stops when its last
//! connection is gone or `--drain-timeout` has passed.
//!
//! The signal reaches a core in two hops. [`Lifecycle`] holds one cross-thread
//! waker per core, registered by that core's watcher task alone ([`watch`]);
//! the watcher then raises the core's [`DrainSignal`], which wakes every task of
//! the core that waits for the drain, each in a slot of its own. (One shared
//! slot lost all but the last task to register: on core 0 the publish socket
//! took the HTTP accept loop's place, and the drain never began there.)

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use atomic_waker::AtomicWaker;
use slab::Slab;

/// Process-wide lifecycle state shared by the main thread and the workers.
pub struct Lifecycle {
    draining: AtomicBool,
    /// Open connections over all cores (for `--max-connections`); changes only
    /// when a connection opens or closes, never on the message path.
    open: AtomicUsize,
    /// One per core, registered by that core's watcher task only ([`watch`]).
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

    /// Ready once the drain has started. Only the watcher of `core` polls this:
    /// a second task would take its waker slot.
    fn poll_drain(&self, core: usize, cx: &mut Context<'_>) -> Poll<()> {
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

/// The watcher of one core: waits for the process-wide drain, then raises the
/// core's own signal, waking every task of the core that waits for it.
pub async fn watch(life: &Lifecycle, core: usize, signal: &DrainSignal) {
    std::future::poll_fn(|cx| life.poll_drain(core, cx)).await;
    signal.start();
}

/// The drain as the tasks of one core see it: whether it has begun, and every
/// task waiting for it, each in its own slot (so no registration replaces
/// another). Core-local: never shared across threads.
#[derive(Default)]
pub struct DrainSignal {
    started: Cell<bool>,
    /// One slot per waiting [`Drained`] future; `None` until first polled.
    waiters: RefCell<Slab<Option<Waker>>>,
}

impl DrainSignal {
    /// The drain has begun on this core.
    pub fn started(&self) -> bool {
        self.started.get()
    }

    /// Begins the drain: every waiting task is woken, and every later wait ends at once.
    pub fn start(&self) {
        self.started.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters.into_iter().filter_map(|(_, w)| w) {
            waker.wake();
        }
    }

    /// Ready once the drain has begun.
    pub fn wait(&self) -> Drained<'_> {
        Drained {
            signal: self,
            slot: None,
        }
    }

    /// Waits for `fut` (pinned by the caller, so it can be waited on again) or
    /// the start of the drain, whichever comes first: `None` on drain.
    pub async fn unless_draining<F: Future>(&self, mut fut: Pin<&mut F>) -> Option<F::Output> {
        let mut drained = std::pin::pin!(self.wait());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            drained.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}

/// A wait for the drain of one core ([`DrainSignal::wait`]); gives its slot
/// back when dropped.
pub struct Drained<'a> {
    signal: &'a DrainSignal,
    slot: Option<usize>,
}

impl Future for Drained<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.started() {
            self.release();
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        match self.slot.and_then(|slot| waiters.get_mut(slot)) {
            Some(Some(w)) if w.will_wake(cx.waker()) => {}
            Some(entry) => *entry = Some(cx.waker().clone()),
            None => {
                let slot = waiters.insert(Some(cx.waker().clone()));
                drop(waiters);
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drained<'_> {
    fn release(&mut self) {
        if let Some(slot) = self.slot.take() {
            // After `start` the slab is empty (taken whole); a slot number may
            // then be reused by a newer wait, which this one must not remove.
            if !self.signal.started() {
                self.signal.waiters.borrow_mut().try_remove(slot);
            }
        }
    }
}

impl Drop for Drained<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// The set of `signals`.
fn signal_set(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local, owned sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// The signals that stop the server.
fn stop_signals() -> libc::sigset_t {
    signal_set(&[libc::SIGTERM, libc::SIGINT])
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

/// Blocks `signal` in the calling thread and the threads it spawns afterwards.
pub fn block_signal(signal: i32) {
    let set = signal_set(&[signal]);
    // SAFETY: `set` is a valid sigset_t; a null old-set pointer is allowed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for `signal`, which must be blocked (see [`block_signal`]).
pub fn wait_signal(signal: i32) {
    let set = signal_set(&[signal]);
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` and `sig` are valid for the call; the signal is blocked,
    // as sigwait requires.
    unsafe {
        libc::sigwait(&set, &mut sig);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn every_task_waiting_on_a_core_is_woken_when_the_drain_starts() {
        let signal = DrainSignal::default();
        let tasks: Vec<_> = (0..5).map(|_| counter()).collect();
        let mut waits: Vec<_> = tasks.iter().map(|_| Box::pin(signal.wait())).collect();
        for (wait, (_, waker)) in waits.iter_mut().zip(&tasks) {
            let mut cx = Context::from_waker(waker);
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            // Polled again (a task woken for something else) keeps one slot.
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(signal.waiters.borrow().len(), 5);
        signal.start();
        for (i, (count, _)) in tasks.iter().enumerate() {
            assert_eq!(count.0.load(Ordering::Relaxed), 1, "task {i} was not woken");
        }
        for (wait, (_, waker)) in waits.iter_mut().zip(&tasks) {
            assert!(wait
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_ready());
        }
    }

    #[test]
    fn a_wait_dropped_before_the_drain_gives_its_slot_back_and_is_not_woken() {
        let signal = DrainSignal::default();
        let (gone, gone_waker) = counter();
        let (kept, kept_waker) = counter();
        let mut first = Box::pin(signal.wait());
        let mut second = Box::pin(signal.wait());
        assert!(first
            .as_mut()
            .poll(&mut Context::from_waker(&gone_waker))
            .is_pending());
        assert!(second
            .as_mut()
            .poll(&mut Context::from_waker(&kept_waker))
            .is_pending());
        drop(first);
        assert_eq!(signal.waiters.borrow().len(), 1);
        signal.start();
        assert_eq!(gone.0.load(Ordering::Relaxed), 0);
        assert_eq!(kept.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_wait_that_starts_after_the_drain_is_ready_at_once() {
        let signal = DrainSignal::default();
        signal.start();
        let (_, waker) = counter();
        let mut wait = Box::pin(signal.wait());
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready());
    }

    #[test]
    fn the_process_signal_reaches_a_core_through_its_watcher() {
        let life = Lifecycle::new(2);
        let signals = [DrainSignal::default(), DrainSignal::default()];
        let (count, waker) = counter();
        let mut watchers: Vec<_> = (0..2)
            .map(|core| Box::pin(watch(&life, core, &signals[core])))
            .collect();
        let mut cx = Context::from_waker(&waker);
        for w in &mut watchers {
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        life.start_drain();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        for (w, s) in watchers.iter_mut().zip(&signals) {
            assert!(w.as_mut().poll(&mut cx).is_ready());
            assert!(s.started());
        }
    }
}
