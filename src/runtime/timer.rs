//! Time on a core: deadlines for tasks on the core's timer wheel, the tick task
//! that advances the wheel, and wall-clock seconds for token expiry. No
//! per-connection runtime timers: every deadline of a core is one entry in its
//! wheel.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::worker::Worker;
use crate::core::wheel::TimerHandle;
use crate::time::Tick;

/// Ready once the core's clock reaches `deadline`; its wheel entry is cancelled
/// if dropped first.
pub struct Sleep<'a> {
    w: &'a Worker,
    deadline: Tick,
    handle: Option<TimerHandle>,
}

impl Future for Sleep<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.w.state.borrow_mut();
        match self.handle {
            None => {
                let handle = st.insert_wake(self.deadline, cx.waker().clone());
                drop(st);
                self.handle = Some(handle);
                Poll::Pending
            }
            Some(handle) => {
                let r = st.poll_wake(handle, cx);
                drop(st);
                if r.is_ready() {
                    self.handle = None;
                }
                r
            }
        }
    }
}

impl Drop for Sleep<'_> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            if let Ok(mut st) = self.w.state.try_borrow_mut() {
                st.cancel_wake(handle);
            }
        }
    }
}

/// Sleeps `d` on the core's wheel (rounded up to whole ticks).
pub fn sleep(w: &Worker, d: Duration) -> Sleep<'_> {
    // Rounded up from the worker's origin as a whole, so it never fires early.
    sleep_until(w, Tick::deadline(w.started.elapsed() + d))
}

/// Sleeps until the core's clock reaches `deadline` (at least one tick).
pub fn sleep_until(w: &Worker, deadline: Tick) -> Sleep<'_> {
    Sleep {
        w,
        deadline: deadline.max(w.now_tick() + Tick::new(1)),
        handle: None,
    }
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Runs `f` for at most `d`.
pub async fn timeout<F: Future>(w: &Worker, d: Duration, f: F) -> Result<F::Output, Elapsed> {
    let deadline = Tick::deadline(w.started.elapsed() + d);
    timeout_at(w, deadline, f).await
}

/// Runs `f` until the core's clock reaches `deadline` at most.
pub async fn timeout_at<F: Future>(w: &Worker, deadline: Tick, f: F) -> Result<F::Output, Elapsed> {
    let mut f = std::pin::pin!(f);
    let mut sleep = std::pin::pin!(sleep_until(w, deadline));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// Seconds since the Unix epoch (token times).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The tick at which a token expiring at `exp` (Unix seconds) is due.
pub fn expiry_tick(w: &Worker, exp: u64) -> Tick {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(exp);
    let left = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    // Rounded up from the worker's origin as a whole, never early.
    Tick::deadline(w.started.elapsed() + left)
}

/// The tick task: sleeps until the wheel's next deadline (or until an earlier
/// one is filed), then fires everything due and writes what it queued.
pub async fn run_ticks(w: Rc<Worker>) {
    let mut next_report = Tick::ZERO;
    loop {
        let now = w.now_tick();
        let next = w.state.borrow().next_timer();
        let kicked = Kicked {
            w: &w,
            armed: false,
        };
        match next {
            Some(at) if at <= now => {}
            Some(at) => {
                let _ = monoio::time::timeout((at - now).to_duration(), kicked).await;
            }
            None => kicked.await,
        }
        let now = w.now_tick();
        {
            let mut st = w.state.borrow_mut();
            st.advance_timers(now);
            let writes = w.write_heartbeats(&mut st);
            st.metrics().stream_writes.add(writes as u64);
        }
        if now >= next_report {
            // Once a second: the largest outbox of the second that ended.
            next_report = now + Tick::span(Duration::from_secs(1));
            w.metrics()
                .outbox_max
                .set(crate::core::outbox::take_largest() as u64);
        }
    }
}

/// Ready when a deadline earlier than the one the tick task sleeps until is filed.
struct Kicked<'a> {
    w: &'a Worker,
    armed: bool,
}

impl Future for Kicked<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed {
            return Poll::Ready(());
        }
        self.armed = true;
        self.w.state.borrow_mut().park_ticks(cx);
        Poll::Pending
    }
}
