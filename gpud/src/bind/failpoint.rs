//! Test-only fault injection for the bind flow: named points at every allocation and lock
//! step, armed per device so parallel tests do not see each other's injections.
//!
//! Owns: [`FailPoint`] (the names), [`FailPoints`] (the armed set) and [`FailPoints::check`],
//! which the bind flow calls at each point. Must not: be compiled into release builds; without
//! `cfg(test)` or the `failpoints` feature `check` is an inlined `Ok(())` and arming is absent.

use thiserror::Error;

/// The named steps a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailPoint {
    /// Parsing the in/out syncs of a bind.
    SyncParse,
    /// Planning an op against the VA tree.
    Plan,
    /// Creating the vm_bo of a BO a MAP names.
    VmBoObtain,
    /// Locking the VM resv and the BOs' resvs.
    ResvLock,
    /// Making a BO a MAP needs resident.
    BoValidate,
    /// Reserving page-table pages (`PageTable::prepare`), before any page is taken.
    PtPrepare,
    /// Allocating one page-table page (fails the n-th allocation of a prepare).
    PtAlloc,
    /// Creating the bind job (fence, queue slot).
    JobCreate,
}

impl FailPoint {
    /// Every point, for tests that walk them all.
    pub const ALL: [FailPoint; 8] = [
        FailPoint::SyncParse,
        FailPoint::Plan,
        FailPoint::VmBoObtain,
        FailPoint::ResvLock,
        FailPoint::BoValidate,
        FailPoint::PtPrepare,
        FailPoint::PtAlloc,
        FailPoint::JobCreate,
    ];
}

/// An injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("injected failure at {point:?}")]
pub struct Injected {
    /// Where it was injected.
    pub point: FailPoint,
}

/// The armed fail points of one device.
#[derive(Debug, Default)]
pub struct FailPoints {
    #[cfg(any(test, feature = "failpoints"))]
    armed: parking_lot::Mutex<Vec<(FailPoint, u32)>>,
}

impl FailPoints {
    /// Fails the `(skip + 1)`-th pass through `point` (once), counted from now.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn arm(&self, point: FailPoint, skip: u32) {
        self.armed.lock().push((point, skip));
    }

    /// Disarms everything.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn clear(&self) {
        self.armed.lock().clear();
    }

    /// Whether `point` is still armed (it has not fired yet).
    #[cfg(any(test, feature = "failpoints"))]
    pub fn is_armed(&self, point: FailPoint) -> bool {
        self.armed.lock().iter().any(|(p, _)| *p == point)
    }

    /// Called by the bind flow at `point`.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn check(&self, point: FailPoint) -> Result<(), Injected> {
        let mut armed = self.armed.lock();
        let Some(i) = armed.iter().position(|(p, _)| *p == point) else {
            return Ok(());
        };
        // PANIC: `i` came from `position` on the same vector under the same lock.
        let entry = &mut armed[i];
        if entry.1 > 0 {
            entry.1 -= 1;
            return Ok(());
        }
        armed.remove(i);
        Err(Injected { point })
    }

    /// Called by the bind flow at `point`; compiled out.
    #[cfg(not(any(test, feature = "failpoints")))]
    #[inline(always)]
    pub fn check(&self, _point: FailPoint) -> Result<(), Injected> {
        Ok(())
    }
}
