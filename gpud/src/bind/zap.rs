//! The notifier-safe zap: what every invalidation of backing memory (userptr and SVM
//! notifiers, eviction before freeing) calls to take a GPU VA range away from the device.
//!
//! Owns: [`Vm::zap_range`], [`ZapError`], and the VM's side of
//! [`crate::mem::mappings::BoMappings`] (the zap a BO move runs in every VM that mapped it). Must not: take `vm.lock` (a notifier can fire
//! while a bind holds it and waits for that very memory), allocate or free a table page, or
//! change the VA tree: the mappings stay, only their PTEs go. Whoever zaps marks the mappings
//! for revalidation itself (a fault-mode VM repopulates on the next fault).
//!
//! Locking: only the page-table lock (class NotifierLock, the VM's notifier lock), held from
//! the wait for conflicting bind jobs to the end of the invalidation. Binds take it after
//! `vm.lock` and the reservations, so a zap never waits behind a bind's planning.

use super::queue::BIND_WAIT_LIMIT;
use super::vm::Vm;
use crate::hw::HwError;
use crate::mem::mappings::{BoMappings, ZapFailed};
use crate::types::{BoId, GpuVa, VmId};
use crate::vm::pagetable::{PageTable, PtError};
use crate::vm::{VaRange, VmBo};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use thiserror::Error;

/// Why a zap did not complete.
#[derive(Debug, Error)]
pub enum ZapError {
    /// The range is not page-aligned or leaves the VA space (nothing was zapped).
    #[error("zap range: {0}")]
    Range(#[from] PtError),
    /// A pending bind job writing the range's tables did not finish in time (nothing was
    /// zapped).
    #[error("a pending bind job on {start:#x}+{len:#x} did not finish")]
    BindTimeout { start: u64, len: u64 },
    /// The entries are cleared but the TLB invalidation failed: translations may still be
    /// cached, so the backing must not be freed (the device needs a reset).
    #[error("TLB invalidation after the zap failed: {0}")]
    Invalidation(#[from] HwError),
}

impl Vm {
    /// Takes `range` away from the GPU: clears every page leaf of the range in place (null
    /// entries stay; in scratch mode the range then reads the scratch page), invalidates
    /// the range in the VM's TLB once and waits for it. When this returns `Ok`, no GPU
    /// access of this VM reaches the old backing of the range, and it may be freed.
    ///
    /// Pending bind jobs that write the range's table pages are waited for first (they
    /// were committed before the zap and would write the old entries back). Runs under the
    /// page-table lock only — never `vm.lock` — and allocates no table page, so a notifier
    /// may call it while a bind of the same VM holds `vm.lock`.
    pub fn zap_range(&self, range: VaRange) -> Result<(), ZapError> {
        let mut pt = self.pt.lock();
        self.zap_locked(&mut pt, &[(range.start().get(), range.len())])
    }

    /// Zaps `ranges` with the page-table lock held: waits for the pending bind jobs writing
    /// their table pages, clears the leaves, then one TLB invalidation (of the range when
    /// there is one, of the whole context otherwise), waited for.
    pub(crate) fn zap_locked(
        &self,
        pt: &mut PageTable,
        ranges: &[(u64, u64)],
    ) -> Result<(), ZapError> {
        let mut pages = Vec::new();
        for &(start, len) in ranges {
            pages.extend(pt.zap_pages(GpuVa(start), len)?);
        }
        let pending = self.claims.lock().pending_on(&pages);
        for f in pending {
            // A failed job banned the VM and wrote what it could; the zap clears anyway.
            if f.wait(Some(BIND_WAIT_LIMIT)).is_err() && !f.is_signalled() {
                let (start, len) = ranges.first().copied().unwrap_or_default();
                return Err(ZapError::BindTimeout { start, len });
            }
        }
        let mut changed = false;
        for &(start, len) in ranges {
            changed |= pt.zap(GpuVa(start), len)?;
        }
        // As for bind jobs: before the VM's first exec nothing can be cached.
        std::sync::atomic::fence(Ordering::SeqCst);
        // Without a context nothing of the VM is cached: one given to it later is flushed
        // after these writes.
        let ctx = self.ctx.current().filter(|_| changed);
        if let Some(ctx) = ctx.filter(|_| self.ctx_used.load(Ordering::SeqCst)) {
            let scope = match ranges {
                [(start, len)] => Some((GpuVa(*start), *len)),
                _ => None,
            };
            let inv = self.core.mmu.invalidate(ctx, scope)?;
            self.core.mmu.wait_invalidation(inv, BIND_WAIT_LIMIT)?;
        }
        Ok(())
    }

    /// [`Vm::zap_range`] of `[start, start + len)`.
    pub fn zap(&self, start: u64, len: u64) -> Result<(), ZapError> {
        let range = VaRange::new(GpuVa(start), len)
            .map_err(|_| ZapError::Range(PtError::OutOfRange { va: start, len }))?;
        self.zap_range(range)
    }
}

impl BoMappings for Vm {
    fn vm_id(&self) -> VmId {
        self.id
    }

    /// Zaps every range the tables map `bo` at (as `MappedRanges` records them, read under
    /// the same page-table lock the zap holds, so no bind commits in between).
    fn zap_bo(&self, bo: BoId) -> Result<(), ZapFailed> {
        let mut pt = self.pt.lock();
        let ranges = self.mapped.lock().ranges_of(bo);
        if ranges.is_empty() {
            return Ok(());
        }
        self.zap_locked(&mut pt, &ranges).map_err(|e| ZapFailed {
            bo: bo.0,
            vm: self.id.0,
            reason: e.to_string(),
        })
    }

    fn private_bo_moved(&self, vm_bo: Arc<VmBo>) {
        self.foreign_evictions.lock().push(vm_bo);
    }
}
