//! Time for the hardware layer: a monotonic clock trait, the system clock, a fake clock for
//! tests, and deadlines built on them.
//!
//! Owns: how waits decide they timed out. Must not: sleep on its own; waiting is done by the
//! interrupt layer, which asks a [`Deadline`] how long it may still wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock.
pub trait Clock: Send + Sync {
    /// Time since an arbitrary fixed origin.
    fn now(&self) -> Duration;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to, for testing timeouts without waiting for them.
#[derive(Debug, Default)]
pub struct FakeClock {
    nanos: AtomicU64,
}

impl FakeClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(ns, Ordering::AcqRel);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

/// A point in time on some clock after which a wait gives up.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Duration,
}

/// Longest single sleep of a waiter, so that a fake clock moved by another thread is noticed.
pub const WAIT_SLICE: Duration = Duration::from_millis(5);

impl Deadline {
    /// `timeout` from now on `clock`.
    pub fn after(clock: &dyn Clock, timeout: Duration) -> Self {
        Self {
            at: clock.now().saturating_add(timeout),
        }
    }

    /// How long a waiter may sleep before checking again (`None`: the deadline passed).
    pub fn slice(&self, clock: &dyn Clock) -> Option<Duration> {
        let now = clock.now();
        (now < self.at).then(|| (self.at - now).min(WAIT_SLICE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_expires_when_the_fake_clock_moves() {
        let clock = FakeClock::new();
        let d = Deadline::after(&clock, Duration::from_secs(10));
        assert_eq!(d.slice(&clock), Some(WAIT_SLICE));
        clock.advance(Duration::from_secs(10) - Duration::from_millis(1));
        assert_eq!(d.slice(&clock), Some(Duration::from_millis(1)));
        clock.advance(Duration::from_millis(1));
        assert_eq!(d.slice(&clock), None);
    }

    #[test]
    fn system_clock_is_monotonic() {
        let c = SystemClock::new();
        let a = c.now();
        assert!(c.now() >= a);
    }
}
