//! A condition variable that knows whether anyone waits on it.
//!
//! Owns: [`CountedCondvar`]. The standard condition variable makes a futex system call on
//! every notify, waiters or not; fences signal and reservations unlock on every bind and
//! job, almost always with nobody waiting, so the count saves a system call on the hot path.
//! Must not: be used with a mutex other than the one guarding the waited-for state.
//!
//! Why no wake-up is lost: a waiter counts itself while holding the state's mutex, before
//! the wait releases it. A notifier changes the state under the same mutex and reads the
//! count afterwards, so either the waiter's count happened before the notifier took the
//! mutex (the notifier sees it and wakes), or the waiter took the mutex after the change
//! (it sees the new state and does not wait).

use super::shim::{self, AtomicUsize, Condvar, MutexGuard, Ordering};
use std::time::Instant;

/// A condition variable with a waiter count (see the module header for the rule).
#[derive(Debug)]
pub(crate) struct CountedCondvar {
    cond: Condvar,
    waiters: AtomicUsize,
}

impl Default for CountedCondvar {
    fn default() -> Self {
        Self::new()
    }
}

impl CountedCondvar {
    /// A condition variable with no waiters.
    pub(crate) fn new() -> Self {
        Self {
            cond: Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Waits until notified or `deadline` (forever when `None`); `guard` must guard the
    /// state the notifier changes. Returns the re-acquired guard and whether the deadline
    /// has passed.
    pub(crate) fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let out = shim::wait_until(&self.cond, guard, deadline);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        out
    }

    /// Waits until notified; see [`CountedCondvar::wait_until`].
    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait_until(guard, None).0
    }

    /// Wakes every waiter, if there is one. Call after changing the state under its mutex.
    pub(crate) fn notify_all(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.cond.notify_all();
        }
    }

    /// Threads waiting now (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn waiters(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Many waiters and notifiers racing on a counter: every waiter sees its target value
    /// (a lost wake-up would hang the test, bounded by the deadline and reported).
    #[test]
    fn no_wake_up_is_lost_under_contention() {
        let state = Arc::new((Mutex::new(0u64), CountedCondvar::new()));
        let rounds = 2_000u64;
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let state = state.clone();
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    for target in 1..=rounds {
                        let mut g = shim::lock(&state.0);
                        while *g < target {
                            let (next, late) = state.1.wait_until(g, Some(deadline));
                            g = next;
                            assert!(!late || *g >= target, "lost wake-up at {target}");
                        }
                    }
                })
            })
            .collect();
        let notifier = {
            let state = state.clone();
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    *shim::lock(&state.0) += 1;
                    state.1.notify_all();
                    std::thread::yield_now();
                }
            })
        };
        notifier.join().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(state.1.waiters(), 0);
    }
}
