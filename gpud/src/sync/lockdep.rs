//! The lock-order checker ("lockdep") and the lock wrappers that register with it.
//!
//! Owns: the documented lock classes (ARCHITECTURE §5), outermost first:
//! `VmLock` → `Resv` → `MmNotifier` → `NotifierLock` → `Internal`, a per-thread record of held classes, and
//! [`OrderedMutex`] / [`OrderedRwLock`], which register their class on every acquisition.
//! Acquiring a class while holding a later (inner) class is an inversion and panics with a
//! message naming both classes. [`assert_no_locks_held`] guards waits that may block without
//! bound (user fences). Taking the same class twice is allowed (several reservation objects,
//! several internal locks); ordering within a class is the ww-mutex's job.
//!
//! Checking exists only in `cfg(debug_assertions)` builds (all tests); in release builds
//! every hook is an empty inline function and the wrappers are plain `parking_lot` locks.
//! Must not: block, allocate per acquisition in release builds, or know about the objects
//! the locks protect.

use std::ops::{Deref, DerefMut};

/// A documented lock class; the derive order is the lock order (outermost first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockClass {
    /// `vm.lock` (rw): the VA tree and the userptr list.
    VmLock,
    /// Reservation objects (ww-mutex class), acquired through the exec helper.
    Resv,
    /// A VM's userptr notifier lock (rw): userptr sequences and pages; taken before the
    /// page-table lock (the notifier path zaps under it).
    MmNotifier,
    /// The per-VM / per-SVM notifier lock (rw).
    NotifierLock,
    /// Short internal locks (lists, fence state).
    Internal,
}

#[cfg(all(debug_assertions, not(loom)))]
mod imp {
    use super::LockClass;
    use std::cell::RefCell;

    thread_local! {
        /// Classes this thread holds, in acquisition order (a multiset).
        static HELD: RefCell<Vec<LockClass>> = const { RefCell::new(Vec::new()) };
    }

    pub fn acquire(class: LockClass) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(inner) = held.iter().copied().filter(|h| *h > class).max() {
                // End the borrow before panicking: guards dropped while unwinding must be
                // able to update the record.
                drop(held);
                // PANIC: deliberate — failing loudly on an inversion is the checker's job,
                // and it exists only in debug builds.
                panic!(
                    "lock order inversion: acquiring {class:?} while holding {inner:?} \
                     (documented order: VmLock -> Resv -> MmNotifier -> NotifierLock -> Internal)"
                );
            }
            held.push(class);
        });
    }

    pub fn release(class: LockClass) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(pos) = held.iter().rposition(|h| *h == class) {
                held.remove(pos);
            }
        });
    }

    pub fn held() -> Vec<LockClass> {
        HELD.with(|held| held.borrow().clone())
    }
}

#[cfg(not(all(debug_assertions, not(loom))))]
mod imp {
    use super::LockClass;

    #[inline(always)]
    pub fn acquire(_class: LockClass) {}

    #[inline(always)]
    pub fn release(_class: LockClass) {}

    #[inline(always)]
    pub fn held() -> Vec<LockClass> {
        Vec::new()
    }
}

/// Records that this thread is about to acquire a lock of `class`; panics on an inversion.
///
/// Call before blocking on the lock, so an inversion is reported even when it would
/// deadlock. Pair every call with [`release`].
#[inline]
pub fn acquire(class: LockClass) {
    imp::acquire(class);
}

/// Records that this thread released one lock of `class`.
#[inline]
pub fn release(class: LockClass) {
    imp::release(class);
}

/// The classes this thread holds (always empty in release builds).
pub fn held_classes() -> Vec<LockClass> {
    imp::held()
}

/// Panics (debug builds) if this thread holds any checked lock; `what` names the operation.
///
/// Waiting on a user/memory fence has no bounded completion time, so doing it under a lock
/// can stall every other user of that lock indefinitely.
#[inline]
pub fn assert_no_locks_held(what: &str) {
    #[cfg(all(debug_assertions, not(loom)))]
    {
        let held = imp::held();
        if !held.is_empty() {
            // PANIC: deliberate, debug builds only (see above).
            panic!(
                "{what} while holding checked locks {held:?}: unbounded waits must hold no lock"
            );
        }
    }
    #[cfg(not(all(debug_assertions, not(loom))))]
    let _ = what;
}

/// A mutex that registers `class` with the lock-order checker on every acquisition.
#[derive(Debug)]
pub struct OrderedMutex<T> {
    class: LockClass,
    inner: parking_lot::Mutex<T>,
}

/// Declares a guard wrapping a `parking_lot` guard: it derefs to the data and releases the
/// class record when dropped (before the inner guard unlocks).
macro_rules! ordered_guard {
    ($(#[$meta:meta])* $name:ident, $inner:ident $(, $deref_mut:ident)?) => {
        $(#[$meta])*
        pub struct $name<'a, T> {
            class: LockClass,
            guard: parking_lot::$inner<'a, T>,
        }

        impl<T> Deref for $name<'_, T> {
            type Target = T;
            fn deref(&self) -> &T {
                &self.guard
            }
        }

        impl<T> Drop for $name<'_, T> {
            fn drop(&mut self) {
                release(self.class);
            }
        }

        $(ordered_guard!(@$deref_mut $name);)?
    };
    (@DerefMut $name:ident) => {
        impl<T> DerefMut for $name<'_, T> {
            fn deref_mut(&mut self) -> &mut T {
                &mut self.guard
            }
        }
    };
}

ordered_guard!(
    /// Guard of an [`OrderedMutex`].
    OrderedMutexGuard,
    MutexGuard,
    DerefMut
);
ordered_guard!(
    /// Shared guard of an [`OrderedRwLock`].
    OrderedReadGuard,
    RwLockReadGuard
);
ordered_guard!(
    /// Exclusive guard of an [`OrderedRwLock`].
    OrderedWriteGuard,
    RwLockWriteGuard,
    DerefMut
);

impl<T> OrderedMutex<T> {
    /// A mutex of lock class `class`.
    pub const fn new(class: LockClass, value: T) -> Self {
        Self {
            class,
            inner: parking_lot::Mutex::new(value),
        }
    }

    /// The class this lock was declared with.
    pub fn class(&self) -> LockClass {
        self.class
    }

    /// Locks, checking the order first.
    pub fn lock(&self) -> OrderedMutexGuard<'_, T> {
        acquire(self.class);
        OrderedMutexGuard {
            class: self.class,
            guard: self.inner.lock(),
        }
    }

    /// Mutable access without locking (the borrow proves exclusivity).
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

/// A reader-writer lock that registers `class` with the lock-order checker.
#[derive(Debug)]
pub struct OrderedRwLock<T> {
    class: LockClass,
    inner: parking_lot::RwLock<T>,
}

impl<T> OrderedRwLock<T> {
    /// A reader-writer lock of lock class `class`.
    pub const fn new(class: LockClass, value: T) -> Self {
        Self {
            class,
            inner: parking_lot::RwLock::new(value),
        }
    }

    /// The class this lock was declared with.
    pub fn class(&self) -> LockClass {
        self.class
    }

    /// Shared lock, checking the order first.
    pub fn read(&self) -> OrderedReadGuard<'_, T> {
        acquire(self.class);
        OrderedReadGuard {
            class: self.class,
            guard: self.inner.read(),
        }
    }

    /// Exclusive lock, checking the order first.
    pub fn write(&self) -> OrderedWriteGuard<'_, T> {
        acquire(self.class);
        OrderedWriteGuard {
            class: self.class,
            guard: self.inner.write(),
        }
    }

    /// Mutable access without locking (the borrow proves exclusivity).
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

#[cfg(all(test, debug_assertions, not(loom)))]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn panic_message(result: std::thread::Result<()>) -> String {
        let payload = result.expect_err("expected a lock-order panic");
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn lockdep_documented_order_is_accepted() {
        let vm = OrderedRwLock::new(LockClass::VmLock, 0u32);
        let notifier = OrderedRwLock::new(LockClass::NotifierLock, 0u32);
        let internal = OrderedMutex::new(LockClass::Internal, 0u32);
        let _v = vm.write();
        acquire(LockClass::Resv);
        let _n = notifier.read();
        let _i = internal.lock();
        assert_eq!(
            held_classes(),
            vec![
                LockClass::VmLock,
                LockClass::Resv,
                LockClass::NotifierLock,
                LockClass::Internal
            ]
        );
        release(LockClass::Resv);
    }

    #[test]
    fn lockdep_inversion_panics_naming_both_classes() {
        let vm = OrderedRwLock::new(LockClass::VmLock, ());
        let notifier = OrderedRwLock::new(LockClass::NotifierLock, ());
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            let _n = notifier.write();
            let _v = vm.read();
        })));
        assert!(
            msg.contains("VmLock") && msg.contains("NotifierLock"),
            "{msg}"
        );
        // The guards unwound, so this thread holds nothing again.
        assert!(held_classes().is_empty());
    }

    #[test]
    fn lockdep_resv_under_notifier_lock_panics() {
        let notifier = OrderedMutex::new(LockClass::NotifierLock, ());
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            let _n = notifier.lock();
            acquire(LockClass::Resv);
        })));
        assert!(
            msg.contains("Resv") && msg.contains("NotifierLock"),
            "{msg}"
        );
    }

    #[test]
    fn lockdep_no_locks_held_check_fails_under_a_lock() {
        assert_no_locks_held("idle");
        let internal = OrderedMutex::new(LockClass::Internal, ());
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            let _i = internal.lock();
            assert_no_locks_held("user fence wait");
        })));
        assert!(
            msg.contains("user fence wait") && msg.contains("Internal"),
            "{msg}"
        );
    }

    #[test]
    fn lockdep_release_forgets_only_one_acquisition() {
        acquire(LockClass::Resv);
        acquire(LockClass::Resv);
        release(LockClass::Resv);
        assert_eq!(held_classes(), vec![LockClass::Resv]);
        release(LockClass::Resv);
        assert!(held_classes().is_empty());
    }
}
