//! A wait queue with a generation counter: the sleep/wake primitive for everything that is
//! not a single fence (user/memory fences, multi-object waits, syncobj wait-for-submit).
//!
//! Owns: the generation counter and the condition variable. The protocol that makes a wake
//! impossible to lose: read [`WaitQueue::generation`], check the condition, then
//! [`WaitQueue::wait`] with the generation read; a [`WaitQueue::notify_all`] issued after the
//! read bumps the generation, and `wait` returns at once. Must not: know what is being
//! waited for, or run callbacks.
//!
//! The device interrupt handler calls `notify_all()` on the queue its user fences wait on;
//! the call takes one short internal lock and never blocks on anything else.

use super::shim::{self, AtomicU64, Condvar, Mutex, Ordering};
use std::time::Instant;

/// Why [`WaitQueue::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The generation moved past the one the caller saw.
    Notified,
    /// The deadline passed first.
    TimedOut,
}

/// A generation-counted wait queue.
#[derive(Debug, Default)]
pub struct WaitQueue {
    generation: AtomicU64,
    lock: Mutex<()>,
    cond: Condvar,
}

impl WaitQueue {
    /// An empty queue at generation 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current generation; read it before checking the condition you wait for.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Wakes every waiter (and makes every in-flight check-then-wait return at once).
    pub fn notify_all(&self) {
        // Bumping under the lock orders the bump against a waiter's "compare then sleep",
        // which also runs under the lock: the waiter either sees the new generation or is
        // already asleep when the notification is sent.
        let guard = shim::lock(&self.lock);
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(guard);
        self.cond.notify_all();
    }

    /// Sleeps until the generation differs from `seen` or `deadline` passes (`None`: never).
    pub fn wait(&self, seen: u64, deadline: Option<Instant>) -> Wake {
        let mut guard = shim::lock(&self.lock);
        loop {
            if self.generation.load(Ordering::Acquire) != seen {
                return Wake::Notified;
            }
            let (next, timed_out) = shim::wait_until(&self.cond, guard, deadline);
            guard = next;
            if timed_out && self.generation.load(Ordering::Acquire) == seen {
                return Wake::TimedOut;
            }
        }
    }

    /// Sleeps until `ready()` returns `Some`, re-checking after every notification.
    ///
    /// Returns `None` when `deadline` passes first. `ready` runs without the queue's lock.
    pub fn wait_for<R>(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        loop {
            let seen = self.generation();
            if let Some(result) = ready() {
                return Some(result);
            }
            if self.wait(seen, deadline) == Wake::TimedOut {
                return ready();
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn wait_queue_notification_after_generation_read_is_not_lost() {
        let queue = WaitQueue::new();
        let seen = queue.generation();
        queue.notify_all();
        // Would sleep forever if the notification had been lost.
        assert_eq!(queue.wait(seen, None), Wake::Notified);
    }

    #[test]
    fn wait_queue_times_out_without_notification() {
        let queue = WaitQueue::new();
        let seen = queue.generation();
        let deadline = Instant::now() + Duration::from_millis(5);
        assert_eq!(queue.wait(seen, Some(deadline)), Wake::TimedOut);
    }

    #[test]
    fn wait_queue_wait_for_wakes_on_notify_from_another_thread() {
        let queue = Arc::new(WaitQueue::new());
        let flag = Arc::new(AtomicBool::new(false));
        let waker = {
            let (queue, flag) = (queue.clone(), flag.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2));
                flag.store(true, std::sync::atomic::Ordering::Release);
                queue.notify_all();
            })
        };
        let got = queue.wait_for(None, || {
            flag.load(std::sync::atomic::Ordering::Acquire).then_some(7)
        });
        assert_eq!(got, Some(7));
        waker.join().unwrap();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::shim::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn loom_wait_queue_condition_set_then_notify_is_never_lost() {
        loom::model(|| {
            let queue = Arc::new(WaitQueue::new());
            let flag = Arc::new(AtomicBool::new(false));
            let device = {
                let (queue, flag) = (queue.clone(), flag.clone());
                loom::thread::spawn(move || {
                    flag.store(true, Ordering::Release);
                    queue.notify_all();
                })
            };
            let seen = queue.wait_for(None, || flag.load(Ordering::Acquire).then_some(()));
            assert_eq!(seen, Some(()));
            device.join().unwrap();
        });
    }
}
