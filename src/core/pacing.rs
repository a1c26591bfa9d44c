//! When a core writes to its subscribers: at once when it is idle, after a
//! bounded hold when it is busy, so that one write carries several messages.
//!
//! On loopback about 95 % of a one-message delivery is the kernel's send path,
//! one `sendmsg` per subscriber: the only way below that cost is fewer sends.
//! Messages queued to a client before its write already ride in that write
//! (the outbox keeps them, the flush writes them with one vectored call). What
//! this module adds is the choice of *when* a flush pass starts.
//!
//! A *pass* writes every dirty client once, in slices (the runtime lets other
//! tasks run between slices). The policy:
//!
//! - A pass that took `T` holds the next one back for `min(T, bound)` after it
//!   ended. A core whose passes are long is busy: it spends at most about half
//!   its time starting passes for one message each, and what is queued during
//!   the hold goes out in the same writes.
//! - A pass shorter than [`MIN_HOLD`] holds nothing: such a core is not busy,
//!   and the runtime's timers are no finer than a millisecond anyway.
//! - So an idle core (no pass within the last `bound`) writes at once, and no
//!   message waits for a hold longer than `bound` (`--write-delay`).
//! - Answers to a client's own request (a WebSocket publish acknowledgement, a
//!   control answer) are never held: they take the core's urgent lane.
//!
//! The nearest peer feature, Centrifugo's `client.write_delay`, delays every
//! write by a fixed time; this one costs nothing while the core is idle.
//!
//! Time here is a [`Duration`] since the worker's origin, the same origin as
//! the core's [`Tick`](crate::time::Tick)s, but at full resolution: a hold is
//! shorter than a tick.

use std::time::Duration;

/// Passes shorter than this hold nothing back.
pub const MIN_HOLD: Duration = Duration::from_millis(1);

/// The write pacing of one core (see the module doc).
#[derive(Debug, Clone)]
pub struct WritePacing {
    /// The longest a hold may last (`--write-delay`); zero: never hold.
    bound: Duration,
    /// When the pass under way started.
    pass_start: Option<Duration>,
    /// When the next pass may start (the last pass's end plus its hold).
    next_pass: Duration,
}

impl WritePacing {
    pub fn new(bound: Duration) -> Self {
        Self {
            bound,
            pass_start: None,
            next_pass: Duration::ZERO,
        }
    }

    /// The longest a hold may last.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// A pass is under way: its next slice goes on at once.
    pub fn in_pass(&self) -> bool {
        self.pass_start.is_some()
    }

    /// When a new pass may start (in the past when it may start now).
    pub fn next_pass_at(&self) -> Duration {
        if self.in_pass() {
            Duration::ZERO
        } else {
            self.next_pass
        }
    }

    /// A pass may run now (a new one, or the rest of the one under way).
    pub fn may_write(&self, now: Duration) -> bool {
        now >= self.next_pass_at()
    }

    /// A slice of writes starts at `now`: the start of a pass unless one is under way.
    pub fn begin(&mut self, now: Duration) {
        self.pass_start.get_or_insert(now);
    }

    /// The pass under way ended at `now` (no dirty client left): the next may
    /// start after its hold.
    pub fn end(&mut self, now: Duration) {
        let Some(start) = self.pass_start.take() else {
            return;
        };
        let took = now.saturating_sub(start);
        let hold = if took < MIN_HOLD {
            Duration::ZERO
        } else {
            took.min(self.bound)
        };
        self.next_pass = now + hold;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_idle_core_writes_at_once() {
        let p = WritePacing::new(2 * MS);
        assert!(p.may_write(Duration::ZERO));
        let mut p = p;
        // Short passes hold nothing back.
        p.begin(10 * MS);
        p.end(10 * MS + Duration::from_micros(300));
        assert!(p.may_write(10 * MS + Duration::from_micros(300)));
    }

    #[test]
    fn a_long_pass_holds_the_next_for_its_length_up_to_the_bound() {
        let mut p = WritePacing::new(5 * MS);
        p.begin(Duration::ZERO);
        p.end(3 * MS);
        assert_eq!(
            p.next_pass_at(),
            6 * MS,
            "held for as long as the pass took"
        );
        assert!(!p.may_write(5 * MS));
        assert!(p.may_write(6 * MS));
        p.begin(6 * MS);
        assert!(p.in_pass());
        assert!(p.may_write(6 * MS), "slices of a pass go on at once");
        p.end(26 * MS);
        assert_eq!(
            p.next_pass_at(),
            31 * MS,
            "never held longer than the bound"
        );
    }

    #[test]
    fn a_zero_bound_never_holds() {
        let mut p = WritePacing::new(Duration::ZERO);
        p.begin(Duration::ZERO);
        p.end(50 * MS);
        assert!(p.may_write(50 * MS));
    }
}
