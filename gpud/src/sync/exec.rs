//! The exec helper (drm_exec): lock any number of reservation objects without deadlock.
//!
//! Owns: one acquire context, the list of objects it locked, and the back-off protocol. Use:
//!
//! ```
//! # use gpud::sync::{Exec, ExecFlags, Resv, Usage, Fence, FenceContext};
//! let (a, b) = (Resv::new(), Resv::new());
//! let mut exec = Exec::new(ExecFlags::empty());
//! exec.run(|exec| {
//!     exec.prepare_obj(&a, 1)?;
//!     exec.prepare_obj(&b, 1)
//! })?;
//! exec.add_fence(&a, Fence::new(FenceContext::alloc(), 1), Usage::Write)?;
//! drop(exec); // unlocks everything
//! # Ok::<(), gpud::sync::ExecError>(())
//! ```
//!
//! [`Exec::run`] reruns its closure after contention: the failed `lock_obj` returns
//! [`ExecError::Contended`], `run` releases every lock, takes the contended object first
//! (blocking, holding nothing, so it cannot die again) and calls the closure again; the
//! `lock_obj` call that reaches the pre-locked object just adopts it. The closure must
//! therefore be idempotent up to its locking calls. Dropping the exec unlocks all.
//!
//! Must not: be sent to another thread while holding locks (the lock-order checker tracks
//! locks per thread, so `Exec` is not `Send`), or wait on user fences.

use super::fence::Fence;
use super::resv::{Resv, ResvError, ResvId, Usage};
use super::ww::{AcquireCtx, WwError};
use std::marker::PhantomData;
use std::sync::Arc;
use thiserror::Error;

bitflags::bitflags! {
    /// Behaviour switches of an [`Exec`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ExecFlags: u32 {
        /// Locking an object this exec already holds is a no-op instead of an error.
        const IGNORE_DUPLICATES = 1 << 0;
    }
}

/// Errors of the exec helper.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExecError {
    /// Another (older) acquisition holds this object: `run` backs off and retries.
    #[error("reservation object {resv:?} is contended; back off and retry")]
    Contended { resv: ResvId },
    /// The object is already locked by this exec and duplicates were not allowed.
    #[error("reservation object {resv:?} locked twice")]
    Duplicate { resv: ResvId },
    /// A reservation-object update failed.
    #[error(transparent)]
    Resv(#[from] ResvError),
}

/// A multi-object locking transaction.
pub struct Exec {
    ctx: AcquireCtx,
    flags: ExecFlags,
    locked: Vec<Arc<Resv>>,
    /// Taken by the back-off slow path (already in `locked`); the next `lock_obj` on it is
    /// accepted silently.
    prelocked: Option<Arc<Resv>>,
    contended: Option<Arc<Resv>>,
    retries: u64,
    /// Lock records are per thread: keep the exec on the thread that locked.
    _not_send: PhantomData<*const ()>,
}

impl Exec {
    /// An exec with a fresh ticket, holding nothing.
    pub fn new(flags: ExecFlags) -> Self {
        Self {
            ctx: AcquireCtx::new(),
            flags,
            locked: Vec::new(),
            prelocked: None,
            contended: None,
            retries: 0,
            _not_send: PhantomData,
        }
    }

    /// Locks `resv`; `Contended` means "return it from the `run` closure".
    pub fn lock_obj(&mut self, resv: &Arc<Resv>) -> Result<(), ExecError> {
        if self
            .prelocked
            .take_if(|pre| Arc::ptr_eq(pre, resv))
            .is_some()
        {
            return Ok(());
        }
        match resv.ww().lock(&mut self.ctx) {
            Ok(()) => {
                self.locked.push(resv.clone());
                Ok(())
            }
            Err(WwError::Deadlock { .. }) => {
                self.contended = Some(resv.clone());
                Err(ExecError::Contended { resv: resv.id() })
            }
            Err(WwError::AlreadyOwned { .. }) | Err(WwError::NotOwner { .. }) => {
                if self.flags.contains(ExecFlags::IGNORE_DUPLICATES) {
                    Ok(())
                } else {
                    Err(ExecError::Duplicate { resv: resv.id() })
                }
            }
        }
    }

    /// Locks `resv` and reserves `num_fences` slots on it.
    pub fn prepare_obj(&mut self, resv: &Arc<Resv>, num_fences: usize) -> Result<(), ExecError> {
        self.lock_obj(resv)?;
        resv.reserve_fences(&self.ctx, num_fences)?;
        Ok(())
    }

    /// Runs `lock_all` until it completes without contention, backing off in between.
    pub fn run<R>(
        &mut self,
        mut lock_all: impl FnMut(&mut Exec) -> Result<R, ExecError>,
    ) -> Result<R, ExecError> {
        loop {
            match lock_all(self) {
                Err(ExecError::Contended { .. }) => self.back_off(),
                other => return other,
            }
        }
    }

    /// Releases everything, then blocks for the contended object alone.
    fn back_off(&mut self) {
        self.unlock_all();
        self.retries += 1;
        if let Some(resv) = self.contended.take() {
            // Holding nothing, wait-die always lets this context wait, so it cannot fail.
            if resv.ww().lock(&mut self.ctx).is_ok() {
                self.locked.push(resv.clone());
                self.prelocked = Some(resv);
            }
        }
    }

    /// Reserves `count` more slots on an object this exec holds.
    pub fn reserve_fences(&self, resv: &Resv, count: usize) -> Result<(), ExecError> {
        Ok(resv.reserve_fences(&self.ctx, count)?)
    }

    /// Adds `fence` to a locked object (a slot must be reserved).
    pub fn add_fence(&self, resv: &Resv, fence: Arc<Fence>, usage: Usage) -> Result<(), ExecError> {
        Ok(resv.add_fence(&self.ctx, fence, usage)?)
    }

    /// Adds `fence` to every object this exec holds, stopping at the first error.
    pub fn add_fence_to_all(&self, fence: &Arc<Fence>, usage: Usage) -> Result<(), ExecError> {
        self.locked
            .iter()
            .try_for_each(|resv| self.add_fence(resv, fence.clone(), usage))
    }

    /// The objects locked so far, in locking order.
    pub fn locked(&self) -> &[Arc<Resv>] {
        &self.locked
    }

    /// How many times this exec backed off.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Unlocks every object (also done on drop); the exec can lock again afterwards.
    pub fn unlock_all(&mut self) {
        self.prelocked = None;
        // Newest first, like drm_exec: a context woken by the release of an early lock must not
        // find the later ones still held (it would back off once more for nothing).
        for resv in self.locked.drain(..).rev() {
            resv.reset_reservations();
            // Only objects this context locked are in the list, so unlock cannot fail.
            let _ = resv.ww().unlock(&mut self.ctx);
        }
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        self.unlock_all();
    }
}

#[cfg(all(test, not(loom)))]
#[path = "tests/exec.rs"]
mod tests;
