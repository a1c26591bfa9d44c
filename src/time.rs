//! The one time base of the server: [`Tick`]s of [`TICK`] (10 ms) since a
//! worker's origin (the instant it started).
//!
//! Every deadline is a `Tick`, in the core and in the protocol machines alike:
//! heartbeats, the WebSocket idle timeout and close handshake, token expiry, the
//! history's age limit, task timeouts. Durations (from the configuration, or a
//! constant) become ticks here and only here, and ticks become a [`Duration`]
//! here only, for the runtime's one sleep (the tick task's).
//!
//! Rounding, the timer wheel's rule: "now" rounds **down** ([`Tick::now`]), a
//! deadline or a span rounds **up** ([`Tick::deadline`], [`Tick::span`]). A
//! deadline thus never fires before its time, and at most one tick after it.

use std::ops::{Add, Sub};
use std::time::Duration;

/// The length of a tick: coarse enough that a core's tick task wakes at most
/// 100 times a second (and only when a deadline is due), fine enough for the
/// deadlines the server keeps, which are seconds.
pub const TICK: Duration = Duration::from_millis(10);

/// A point in time (ticks since the worker's origin) or a span (a number of
/// ticks). Arithmetic saturates: `Tick::MAX` stands for "never".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(u64);

impl Tick {
    pub const ZERO: Tick = Tick(0);
    /// Never: later than every deadline.
    pub const MAX: Tick = Tick(u64::MAX);

    pub const fn new(ticks: u64) -> Tick {
        Tick(ticks)
    }

    /// The number of ticks (the timer wheel's unit).
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The tick at `since_origin`, rounded down: "now".
    pub fn now(since_origin: Duration) -> Tick {
        Tick(u64::try_from(since_origin.as_nanos() / TICK.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The first tick at or after `since_origin`, rounded up: a deadline, which
    /// fires when [`Tick::now`] reaches it, so never before `since_origin`.
    pub fn deadline(since_origin: Duration) -> Tick {
        Tick(u64::try_from(since_origin.as_nanos().div_ceil(TICK.as_nanos())).unwrap_or(u64::MAX))
    }

    /// A span in ticks, rounded up: a timeout is never shortened.
    pub fn span(d: Duration) -> Tick {
        Tick::deadline(d)
    }

    /// The span as a [`Duration`] (saturating), for a runtime timer.
    pub fn to_duration(self) -> Duration {
        TICK.saturating_mul(u32::try_from(self.0).unwrap_or(u32::MAX))
    }

    /// The span is empty (a limit of zero: off).
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl Add for Tick {
    type Output = Tick;
    /// Saturating: a deadline past the end of time is never.
    fn add(self, rhs: Tick) -> Tick {
        Tick(self.0.saturating_add(rhs.0))
    }
}

impl Sub for Tick {
    type Output = Tick;
    /// Saturating: the span until a tick already passed is zero.
    fn sub(self, rhs: Tick) -> Tick {
        Tick(self.0.saturating_sub(rhs.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_rounds_down_and_deadlines_and_spans_round_up() {
        assert_eq!(Tick::now(Duration::from_millis(19)), Tick::new(1));
        assert_eq!(Tick::now(Duration::from_millis(20)), Tick::new(2));
        assert_eq!(Tick::deadline(Duration::from_millis(11)), Tick::new(2));
        assert_eq!(Tick::deadline(Duration::from_millis(20)), Tick::new(2));
        assert_eq!(Tick::span(Duration::from_secs(15)), Tick::new(1500));
        assert_eq!(Tick::span(Duration::from_micros(1)), Tick::new(1));
        assert_eq!(Tick::deadline(Duration::MAX), Tick::MAX);
    }

    #[test]
    fn arithmetic_saturates_and_a_span_converts_back() {
        assert_eq!(Tick::MAX + Tick::new(1), Tick::MAX);
        assert_eq!(Tick::new(3) - Tick::new(5), Tick::ZERO);
        assert_eq!(Tick::new(150).to_duration(), Duration::from_millis(1500));
        assert_eq!(
            Tick::MAX.to_duration(),
            TICK.saturating_mul(u32::MAX),
            "a far deadline sleeps long, it does not overflow"
        );
    }
}
