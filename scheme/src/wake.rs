//! Waking the request loop from the threads that complete GPU work.
//!
//! Owns: [`Waker`] (the loop's side: which parked calls were woken, and the hook that makes
//! the loop's poll return) and [`WakeToken`] (the driver's side: one parked call's wake-up,
//! fired from a fence callback on whatever thread signals the fence). Must not: block or take
//! a lock that is held across anything but a few pushes — `fire` runs inside fence
//! signalling, on the IRQ, scheduler or bind-queue threads.
//!
//! The hook is the transport's wake source in its poll set: an eventfd on the host, a pipe
//! on Redox. It is poked once per batch of wake-ups (until the loop collects them), so a
//! burst of fence signals costs one write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What makes the loop's wait return (a write to its eventfd or pipe).
pub type WakeHook = Arc<dyn Fn() + Send + Sync>;

struct Shared {
    /// Serials of tokens fired since the loop last collected.
    fired: Mutex<Vec<u64>>,
    /// Set when the hook was called and the loop has not collected yet.
    poked: AtomicBool,
    hook: Mutex<Option<WakeHook>>,
}

/// The loop's side: collects fired tokens and owns the hook.
#[derive(Clone)]
pub struct Waker {
    shared: Arc<Shared>,
}

impl Default for Waker {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                fired: Mutex::new(Vec::new()),
                poked: AtomicBool::new(false),
                hook: Mutex::new(None),
            }),
        }
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker").finish_non_exhaustive()
    }
}

impl Waker {
    /// Installs the hook that wakes the loop (replacing any earlier one).
    pub fn set_hook(&self, hook: WakeHook) {
        *self
            .shared
            .hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// A token whose `fire` reports `serial`.
    pub fn token(&self, serial: u64) -> WakeToken {
        WakeToken {
            shared: self.shared.clone(),
            serial,
        }
    }

    /// The serials fired since the last call; re-arms the hook.
    pub fn collect(&self) -> Vec<u64> {
        self.shared.poked.store(false, Ordering::SeqCst);
        std::mem::take(
            &mut *self
                .shared
                .fired
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// One parked call's wake-up: the driver fires it when something the call waits for
/// signalled (a fence, a job of the VM). Firing a token whose call is gone is harmless.
#[derive(Clone)]
pub struct WakeToken {
    shared: Arc<Shared>,
    serial: u64,
}

impl std::fmt::Debug for WakeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeToken")
            .field("serial", &self.serial)
            .finish()
    }
}

impl WakeToken {
    /// Marks the call woken and wakes the loop (once per batch).
    pub fn fire(&self) {
        self.shared
            .fired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.serial);
        if !self.shared.poked.swap(true, Ordering::SeqCst) {
            let hook = self
                .shared
                .hook
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(hook) = hook {
                hook();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn fired_tokens_are_collected_once_and_poke_once_per_batch() {
        let waker = Waker::default();
        let pokes = Arc::new(AtomicU64::new(0));
        let p = pokes.clone();
        waker.set_hook(Arc::new(move || {
            p.fetch_add(1, Ordering::SeqCst);
        }));
        waker.token(3).fire();
        waker.token(5).fire();
        assert_eq!(pokes.load(Ordering::SeqCst), 1, "one poke per batch");
        assert_eq!(waker.collect(), vec![3, 5]);
        assert!(waker.collect().is_empty());
        let t = waker.token(7);
        std::thread::spawn(move || t.fire()).join().expect("fire");
        assert_eq!(pokes.load(Ordering::SeqCst), 2, "collect re-arms the hook");
        assert_eq!(waker.collect(), vec![7]);
    }
}
