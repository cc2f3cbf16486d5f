//! The wound/wait ("ww") mutex: a lock that many objects of one class can be taken under,
//! in any order, without deadlock.
//!
//! Owns: acquire contexts with tickets and the per-object owner state. The scheme is
//! *wait-die*: every acquire context carries a ticket (a global stamp; lower is older) that it
//! keeps across retries. A context that already holds locks and finds the object owned by an
//! *older* ticket "dies" — `lock` returns [`WwError::Deadlock`] and the caller must release
//! everything and retry (the exec helper does this). In every other case it waits. Waits
//! therefore only ever go from an older ticket to a younger one (or from a context holding
//! nothing), so a cycle — a deadlock — is impossible, and a retried context keeps its ticket
//! until it is the oldest, so it cannot starve.
//!
//! Every held ww lock is registered with the lock-order checker as class `Resv`. Must not:
//! protect data itself (callers check ownership with [`WwMutex::is_owned_by`]), or be used
//! without an acquire context.

use super::cond::CountedCondvar;
use super::lockdep::{self, LockClass};
use super::shim::{self, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// An acquire context's age: lower stamps are older and win contention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

// Tickets are ids, not synchronisation state, so this counter is not model-checked.
static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

impl Ticket {
    /// The raw stamp.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// Errors of ww-mutex operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WwError {
    /// An older context owns the lock while this one holds others: back off and retry.
    #[error("ticket {ticket} must back off: lock owned by older ticket {owner}")]
    Deadlock { ticket: u64, owner: u64 },
    /// This context already owns the lock.
    #[error("ticket {ticket} already owns this lock")]
    AlreadyOwned { ticket: u64 },
    /// Unlock by a context that does not own the lock.
    #[error("ticket {ticket} does not own this lock")]
    NotOwner { ticket: u64 },
}

/// One multi-lock acquisition: a ticket plus the number of locks it currently holds.
#[derive(Debug)]
pub struct AcquireCtx {
    ticket: Ticket,
    acquired: usize,
}

impl AcquireCtx {
    /// A context with a fresh (youngest) ticket.
    pub fn new() -> Self {
        Self {
            ticket: Ticket(NEXT_TICKET.fetch_add(1, Ordering::Relaxed)),
            acquired: 0,
        }
    }

    /// This context's ticket.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    /// How many ww locks the context holds.
    pub fn acquired(&self) -> usize {
        self.acquired
    }
}

impl Default for AcquireCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// A ww-mutex: an owner slot plus a condition variable to wait for release.
#[derive(Debug, Default)]
pub struct WwMutex {
    owner: Mutex<Option<Ticket>>,
    released: CountedCondvar,
}

impl WwMutex {
    /// An unlocked ww-mutex.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks for `ctx`, waiting or dying per wait-die.
    pub fn lock(&self, ctx: &mut AcquireCtx) -> Result<(), WwError> {
        // Check the order before blocking, so an inversion is reported rather than hung on.
        lockdep::acquire(LockClass::Resv);
        let mut owner = shim::lock(&self.owner);
        loop {
            match *owner {
                None => {
                    *owner = Some(ctx.ticket);
                    ctx.acquired += 1;
                    return Ok(());
                }
                Some(held) => {
                    if let Err(err) = Self::may_wait(ctx, held) {
                        drop(owner);
                        lockdep::release(LockClass::Resv);
                        return Err(err);
                    }
                }
            }
            owner = self.released.wait(owner);
        }
    }

    /// Locks only if free right now; `Ok(false)` when owned by someone else.
    pub fn try_lock(&self, ctx: &mut AcquireCtx) -> Result<bool, WwError> {
        let mut owner = shim::lock(&self.owner);
        match *owner {
            None => {
                lockdep::acquire(LockClass::Resv);
                *owner = Some(ctx.ticket);
                ctx.acquired += 1;
                Ok(true)
            }
            Some(held) if held == ctx.ticket => Err(WwError::AlreadyOwned {
                ticket: ctx.ticket.0,
            }),
            Some(_) => Ok(false),
        }
    }

    /// Wait-die: may `ctx` wait for the owner `held`?
    fn may_wait(ctx: &AcquireCtx, held: Ticket) -> Result<(), WwError> {
        if held == ctx.ticket {
            return Err(WwError::AlreadyOwned {
                ticket: ctx.ticket.0,
            });
        }
        if held < ctx.ticket && ctx.acquired > 0 {
            return Err(WwError::Deadlock {
                ticket: ctx.ticket.0,
                owner: held.0,
            });
        }
        Ok(())
    }

    /// Releases a lock `ctx` owns and wakes its waiters.
    pub fn unlock(&self, ctx: &mut AcquireCtx) -> Result<(), WwError> {
        let mut owner = shim::lock(&self.owner);
        if *owner != Some(ctx.ticket) {
            return Err(WwError::NotOwner {
                ticket: ctx.ticket.0,
            });
        }
        *owner = None;
        drop(owner);
        ctx.acquired = ctx.acquired.saturating_sub(1);
        lockdep::release(LockClass::Resv);
        self.released.notify_all();
        Ok(())
    }

    /// Whether `ctx` owns the lock.
    pub fn is_owned_by(&self, ctx: &AcquireCtx) -> bool {
        *shim::lock(&self.owner) == Some(ctx.ticket)
    }

    /// Whether anyone owns the lock.
    pub fn is_locked(&self) -> bool {
        shim::lock(&self.owner).is_some()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn ww_younger_context_holding_locks_dies_on_older_owner() {
        let (a, b) = (WwMutex::new(), WwMutex::new());
        let mut old = AcquireCtx::new();
        let mut young = AcquireCtx::new();
        a.lock(&mut old).unwrap();
        b.lock(&mut young).unwrap();
        assert_eq!(
            a.lock(&mut young),
            Err(WwError::Deadlock {
                ticket: young.ticket().get(),
                owner: old.ticket().get()
            })
        );
        assert_eq!(young.acquired(), 1, "a failed lock acquires nothing");
        b.unlock(&mut young).unwrap();
        a.unlock(&mut old).unwrap();
        assert!(!a.is_locked() && !b.is_locked());
    }

    #[test]
    fn ww_older_context_waits_for_younger_owner() {
        let a = Arc::new(WwMutex::new());
        let mut old = AcquireCtx::new();
        let mut young = AcquireCtx::new();
        a.lock(&mut young).unwrap();
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || {
                let held = WwMutex::new();
                held.lock(&mut old).unwrap();
                // Older with a lock held: waits instead of dying.
                let got = a.lock(&mut old);
                let owned = a.is_owned_by(&old);
                a.unlock(&mut old).unwrap();
                held.unlock(&mut old).unwrap();
                (got, owned)
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(2));
        a.unlock(&mut young).unwrap();
        assert_eq!(waiter.join().unwrap(), (Ok(()), true));
    }

    #[test]
    fn ww_context_holding_nothing_waits_even_when_younger() {
        let a = Arc::new(WwMutex::new());
        let mut old = AcquireCtx::new();
        let mut young = AcquireCtx::new();
        a.lock(&mut old).unwrap();
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || {
                let got = a.lock(&mut young);
                a.unlock(&mut young).unwrap();
                got
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(2));
        a.unlock(&mut old).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(()));
    }

    #[test]
    fn ww_relock_by_owner_and_foreign_unlock_are_errors() {
        let a = WwMutex::new();
        let mut ctx = AcquireCtx::new();
        let mut other = AcquireCtx::new();
        a.lock(&mut ctx).unwrap();
        let ticket = ctx.ticket().get();
        assert_eq!(a.lock(&mut ctx), Err(WwError::AlreadyOwned { ticket }));
        assert_eq!(a.try_lock(&mut ctx), Err(WwError::AlreadyOwned { ticket }));
        assert_eq!(a.try_lock(&mut other), Ok(false));
        assert_eq!(
            a.unlock(&mut other),
            Err(WwError::NotOwner {
                ticket: other.ticket().get()
            })
        );
        a.unlock(&mut ctx).unwrap();
        assert_eq!(a.try_lock(&mut other), Ok(true));
        a.unlock(&mut other).unwrap();
    }
}
