//! The one place the model-checked sync code gets its atomics, mutexes and condition
//! variables from.
//!
//! Owns: the switch between `std::sync` and `loom::sync` under `cfg(loom)`, plus a
//! poison-tolerant `lock` helper. Must not: contain logic. `Arc` is always the std one
//! (loom's `Arc` has no `Weak`); reference counting is not what the model checks. The one
//! thread-local of the model-checked code (fence.rs's deferred callbacks) switches itself.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

use std::time::{Duration, Instant};

/// Locks `mutex`, ignoring poisoning.
///
/// A panic while one of the short internal locks is held can only come from a bug in this
/// module (callbacks never run under them), and the protected state stays consistent at
/// every await point, so continuing is safer than cascading the panic into the daemon.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits on `cond` until notified or until `deadline` (forever when `None`).
///
/// Returns the re-acquired guard and whether the deadline has passed.
pub(crate) fn wait_until<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> (MutexGuard<'a, T>, bool) {
    match deadline {
        None => (
            cond.wait(guard)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            false,
        ),
        Some(deadline) => {
            let now = Instant::now();
            if now >= deadline {
                return (guard, true);
            }
            let (guard, _) = cond
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (guard, Instant::now() >= deadline)
        }
    }
}

/// The deadline `timeout` from now; `None` (wait forever) when it does not fit an `Instant`.
pub fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
