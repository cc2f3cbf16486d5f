//! The memory manager: creates BOs in their placement, evicts least-recently-used BOs when
//! VRAM runs out, and validates (moves back) evicted BOs.
//!
//! Owns: the LRU of BOs, the eviction policy (unpinned, migratable, idle, least recently used
//! first), and the copies that move a BO between VRAM and the system pool (submitted to the
//! [`CopyEngine`] behind the BO's reservation fences). Must not: write page tables itself
//! (it zaps through [`super::mappings::BoMappings`]; the caller rebinds the mappings of a
//! validated BO with [`Bo::map_op`]) or take the VM lock.
//!
//! Zap, invalidate, then free: every move (eviction or validation) copies the BO after every
//! fence in its reservation, then removes every GPU mapping of it in every VM that mapped it
//! (entries cleared, TLB invalidated and waited for), installs the new backing, and only
//! then frees the old one. A job that still runs on the BO (its completion was believed too
//! early, or it was submitted before the BO was bound) faults or reads the scratch page; it
//! never reaches freed memory. The vm_bos are then flagged so each VM rebinds before its next
//! job (drm_gpuvm's validate step).
//!
//! Never waiting on the request path: an allocation evicts only BOs that are idle (every
//! fence signalled) and whose reservation and move lock it can take without waiting, and
//! holds that reservation for the whole move, so an EXEC or bind of the victim waits for it
//! and then sees the move. It still waits for the copy of such an idle BO (the kernel copy
//! queue, no client work): see `docs/memory.md`.

use super::bo::{Backing, Bo, Placement, Pools};
use super::copy::{copy_commands, CopyEngine, CopyError, KernelMap};
use super::mappings::ZapFailed;
use super::shm::ShareError;
use super::svm::SvmEvictor;
use crate::hw::cmd::CommandStream;
use crate::hw::pte::MemLocation;
use crate::sync::{AcquireCtx, Fence, FenceStatus, Resv, Usage};
use crate::types::{BoId, PhysAddr, PAGE_SIZE};
use crate::vm::pagetable::PhysSeg;
use crate::vm::vm_bo::{GpuBo, VmBo};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use thiserror::Error;

/// How long a move waits for its copy before reporting failure.
const COPY_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of BO creation, eviction and validation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemError {
    /// VRAM is full and nothing can be evicted.
    #[error("no VRAM for {requested:#x} bytes ({free:#x} free, nothing evictable)")]
    NoSpace { requested: u64, free: u64 },
    /// The system pool is full.
    #[error("no system memory for {bytes:#x} bytes")]
    NoMemory { bytes: u64 },
    /// Zero or unaligned size.
    #[error("invalid BO size {size:#x}")]
    InvalidSize { size: u64 },
    /// The move's copy job failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// The backing's shared-memory object could not be made (e.g. the mapping budget of
    /// `docs/memory.md` is spent).
    #[error("shared memory for the backing: {0}")]
    Share(#[from] ShareError),
    /// The BO is pinned or CPU-mapped: it does not move.
    #[error("BO {bo} is pinned or CPU-mapped and does not move")]
    Pinned { bo: u64 },
}

/// What an eviction pass did.
#[derive(Debug, Default)]
pub struct EvictReport {
    /// BOs moved to system memory.
    pub evicted: Vec<BoId>,
    /// vm_bos of VM-private BOs: the caller moves each onto its VM's evict list
    /// (`VmBoLists::evict_local`) under the VM reservation. External ones are flagged here.
    pub private_vm_bos: Vec<Arc<VmBo>>,
}

/// Creates, evicts and validates BOs.
pub struct MemoryManager {
    pools: Arc<Pools>,
    copy: Arc<dyn CopyEngine>,
    lru: Mutex<Vec<Weak<Bo>>>,
    clock: AtomicU64,
    next_id: AtomicU64,
    leaked: AtomicU64,
    /// Who frees VRAM held by SVM ranges (the device), consulted with the BO LRU.
    svm: Mutex<Option<Weak<dyn SvmEvictor>>>,
}

impl MemoryManager {
    /// A manager over `pools`, moving memory with `copy`.
    pub fn new(pools: Arc<Pools>, copy: Arc<dyn CopyEngine>) -> Self {
        Self {
            pools,
            copy,
            lru: Mutex::new(Vec::new()),
            clock: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            leaked: AtomicU64::new(0),
            svm: Mutex::new(None),
        }
    }

    /// The pools.
    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    /// The LRU clock: BOs and SVM ranges record it when used.
    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers who evicts SVM ranges under VRAM pressure.
    pub fn set_svm_evictor(&self, evictor: Weak<dyn SvmEvictor>) {
        *self.svm.lock() = Some(evictor);
    }

    pub(super) fn copy_engine(&self) -> &Arc<dyn CopyEngine> {
        &self.copy
    }

    /// Evicts one SVM range if the evictor can; false if none went.
    fn evict_svm(&self) -> bool {
        let evictor = self.svm.lock().as_ref().and_then(Weak::upgrade);
        evictor.is_some_and(|e| e.evict_one())
    }

    /// Whether the least recently used SVM range is older than every BO candidate: the
    /// victims of both kinds come from one LRU clock.
    fn svm_is_older(&self, keep: Option<BoId>) -> bool {
        let evictor = self.svm.lock().as_ref().and_then(Weak::upgrade);
        let Some(svm) = evictor.and_then(|e| e.oldest()) else {
            return false;
        };
        let bo = self
            .lru_candidates(keep)
            .first()
            .map(|bo| bo.state.lock().last_use);
        bo.is_none_or(|b| svm < b)
    }

    /// Creates a BO of `size` bytes. `vm_resv` makes it VM-private (sharing that VM's
    /// reservation); `None` gives it its own (external). VRAM placements evict as needed.
    pub fn create_bo(
        &self,
        size: u64,
        placement: Placement,
        vm_resv: Option<Arc<Resv>>,
    ) -> Result<(Arc<Bo>, EvictReport), MemError> {
        self.create_bo_with(size, placement, vm_resv, false)
    }

    /// [`MemoryManager::create_bo`]; with `contiguous` every VRAM backing the BO ever gets
    /// is one physically contiguous range (a CPU-visible BO: one address maps all of it).
    pub fn create_bo_with(
        &self,
        size: u64,
        placement: Placement,
        vm_resv: Option<Arc<Resv>>,
        contiguous: bool,
    ) -> Result<(Arc<Bo>, EvictReport), MemError> {
        if size == 0 || size % PAGE_SIZE != 0 {
            return Err(MemError::InvalidSize { size });
        }
        let mut report = EvictReport::default();
        let backing = match placement {
            Placement::System => self.alloc_sys(size)?,
            Placement::Vram | Placement::Migratable => {
                match self.alloc_vram_evicting(size, contiguous, None, &mut report) {
                    Ok(b) => b,
                    Err(MemError::NoSpace { .. }) if placement == Placement::Migratable => {
                        self.alloc_sys(size)?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if let Err(e) = self.clear(&backing) {
            self.pools.free(backing);
            return Err(e);
        }
        let resv = match vm_resv {
            Some(r) => (r, true),
            None => (Resv::new(), false),
        };
        let id = BoId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let bo = Arc::new(Bo::new(
            id,
            size,
            (placement, contiguous),
            resv,
            self.pools.clone(),
            backing,
            self.tick(),
        ));
        self.lru.lock().push(Arc::downgrade(&bo));
        Ok((bo, report))
    }

    /// Zeroes new VRAM with a copy-engine FILL (system pages come zeroed from the pool), so
    /// no client sees a previous owner's data. A backing with its own fresh shared-memory
    /// object is zero already: its pages never belonged to anyone else.
    fn clear(&self, backing: &Backing) -> Result<(), MemError> {
        let Backing::Vram(blocks) = backing else {
            return Ok(());
        };
        if self.pools.fresh_backings_are_zero() {
            return Ok(());
        }
        let mut s = CommandStream::new();
        for b in blocks {
            s.fill(
                KernelMap::va(MemLocation::Vram, PhysAddr(b.offset)),
                b.size(),
                0,
            );
        }
        let fence = self.copy.submit(s.dwords(), &[])?;
        wait_copy(&fence)
    }

    /// Marks `bo` used now (exec and bind call this), moving it to the LRU's young end.
    pub fn touch(&self, bo: &Bo) {
        bo.state.lock().last_use = self.tick();
    }

    fn alloc_sys(&self, size: u64) -> Result<Backing, MemError> {
        self.pools.alloc_sys(size)
    }

    /// Allocates VRAM, evicting LRU BOs (never `keep`) and SVM ranges, least recently used
    /// first, until it fits or nothing is left.
    pub(super) fn alloc_vram_evicting(
        &self,
        size: u64,
        contiguous: bool,
        keep: Option<BoId>,
        report: &mut EvictReport,
    ) -> Result<Backing, MemError> {
        loop {
            let free = match self.pools.alloc_vram(size, contiguous) {
                Ok(b) => return Ok(b),
                Err(MemError::NoSpace { free, .. }) => free,
                Err(e) => return Err(e),
            };
            let kinds = if self.svm_is_older(keep) {
                [Victim::Svm, Victim::Bo]
            } else {
                [Victim::Bo, Victim::Svm]
            };
            let mut evicted = false;
            for kind in kinds {
                evicted = match kind {
                    Victim::Svm => self.evict_svm(),
                    Victim::Bo => self.evict_one(keep, report)?,
                };
                if evicted {
                    break;
                }
            }
            if !evicted {
                return Err(MemError::NoSpace {
                    requested: size,
                    free,
                });
            }
        }
    }

    /// Evicts the least recently used candidate that is idle and free to take right now;
    /// false if none. Never waits: a BO another thread is moving (its move lock) or whose
    /// reservation someone holds (an EXEC validating it, a bind mapping it) is skipped, and so
    /// is one with an unsignalled fence (a job may still use it): the request path never waits
    /// for another client's job or lock. Holding the victim's reservation for the whole move
    /// is what keeps a new EXEC of its VMs from validating it halfway: that EXEC waits for the
    /// reservation and then finds the vm_bos flagged evicted.
    fn evict_one(&self, keep: Option<BoId>, report: &mut EvictReport) -> Result<bool, MemError> {
        for victim in self.lru_candidates(keep) {
            let Some(_moving) = victim.move_lock.try_lock() else {
                continue;
            };
            let Some(_resv) = ResvTryGuard::new(victim.reservation()) else {
                continue;
            };
            if victim.reservation().test_signalled(Usage::Bookkeep) && is_candidate(&victim) {
                self.evict_locked(&victim, report)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Unpinned migratable BOs in VRAM, least recently used first.
    fn lru_candidates(&self, keep: Option<BoId>) -> Vec<Arc<Bo>> {
        let mut lru = self.lru.lock();
        lru.retain(|w| w.strong_count() > 0);
        let mut c: Vec<(u64, Arc<Bo>)> = lru
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|bo| Some(bo.id()) != keep && is_candidate(bo))
            .map(|bo| {
                let t = bo.state.lock().last_use;
                (t, bo)
            })
            .collect();
        drop(lru);
        c.sort_by_key(|(t, _)| *t);
        c.into_iter().map(|(_, bo)| bo).collect()
    }

    /// Moves `bo` to the system pool and marks its vm_bos evicted (no-op if it is not in
    /// VRAM). The caller holds the BO's reservation; the copy runs after every fence in it.
    /// A pinned or CPU-mapped BO does not move: `MemError::Pinned`.
    pub fn evict(&self, bo: &Arc<Bo>, report: &mut EvictReport) -> Result<(), MemError> {
        let _moving = bo.move_lock.lock();
        if bo.location() != Some(MemLocation::Vram) {
            return Ok(());
        }
        if !bo.state.lock().movable() {
            return Err(MemError::Pinned { bo: bo.id().0 });
        }
        self.evict_locked(bo, report)
    }

    fn evict_locked(&self, bo: &Arc<Bo>, report: &mut EvictReport) -> Result<(), MemError> {
        let target = self.alloc_sys(bo.size())?;
        let deps = bo.reservation().fences(Usage::Bookkeep);
        self.move_to(bo, target, &deps)?;
        self.flag_moved(bo, None, report);
        tracing::debug!(bo = ?bo.id(), size = bo.size(), "evicted from VRAM to system memory");
        report.evicted.push(bo.id());
        bo.evictions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Moves an evicted migratable BO back to VRAM (evicting idle others if needed). `by` is
    /// the vm_bo of the VM validating it, which rebinds its mappings with [`Bo::map_op`]
    /// right after; every *other* VM's vm_bo is flagged evicted (external) or handed to its
    /// VM (private), because their entries were zapped by the move and must be rebound
    /// before their next job. A pinned or CPU-mapped BO stays where it is (the GPU keeps
    /// using it in system memory, where the CPU mapping points), and so does a BO for which
    /// no VRAM can be had without waiting (every VRAM BO busy, held or pinned): it works from
    /// system memory and moves at a later validation. Returns whether it moved.
    pub fn validate(
        &self,
        bo: &Arc<Bo>,
        by: Option<&Arc<VmBo>>,
        report: &mut EvictReport,
    ) -> Result<bool, MemError> {
        let _moving = bo.move_lock.lock();
        if bo.placement() != Placement::Migratable
            || bo.location() == Some(MemLocation::Vram)
            || !bo.state.lock().movable()
        {
            self.touch(bo);
            return Ok(false);
        }
        let target =
            match self.alloc_vram_evicting(bo.size(), bo.is_contiguous(), Some(bo.id()), report) {
                Ok(t) => t,
                Err(MemError::NoSpace { .. }) => {
                    self.touch(bo);
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
        let deps = bo.reservation().fences(Usage::Bookkeep);
        self.move_to(bo, target, &deps)?;
        self.flag_moved(bo, by, report);
        self.touch(bo);
        Ok(true)
    }

    /// After a move: every vm_bo but `by` must rebind before its VM's next job. External ones
    /// are flagged (their VM's next EXEC moves them onto its evict list); VM-private ones go
    /// to their VM now (we hold its reservation), or into the report without one.
    fn flag_moved(&self, bo: &Bo, by: Option<&Arc<VmBo>>, report: &mut EvictReport) {
        let mappers = bo.mappers();
        for vm_bo in bo.vm_bos() {
            if by.is_some_and(|by| Arc::ptr_eq(by, &vm_bo)) {
                // The validating VM rebinds at once (a private one clears its list entry).
                if vm_bo.is_external() {
                    vm_bo.set_evicted(false);
                }
                continue;
            }
            if vm_bo.is_external() {
                vm_bo.set_evicted(true);
            } else if let Some(vm) = mappers.iter().find(|m| m.vm_id() == vm_bo.vm()) {
                vm.private_bo_moved(vm_bo);
            } else {
                report.private_vm_bos.push(vm_bo);
            }
        }
    }

    /// Copies the BO into `target` after `deps` and waits for the copy; then zaps every GPU
    /// mapping of the BO in every VM (entries cleared, TLB invalidated and waited for),
    /// installs `target`, and only then frees the old backing. A zap that failed leaves
    /// translations that may reach the old memory: it is never freed (counted in
    /// [`MemoryManager::leaked_backings`]). The caller holds the BO's reservation and move
    /// lock, so no bind, rebind or fault maps the BO meanwhile.
    fn move_to(&self, bo: &Bo, target: Backing, deps: &[Arc<Fence>]) -> Result<(), MemError> {
        let Some(source) = bo.state.lock().backing.clone() else {
            self.pools.free(target);
            return Err(MemError::InvalidSize { size: 0 });
        };
        let mut s = CommandStream::new();
        for (from, to, len) in piecewise(&source, &target) {
            copy_commands(
                &mut s,
                (source.location(), from),
                (target.location(), to),
                len,
            );
        }
        let copied = self
            .copy
            .submit(s.dwords(), deps)
            .map_err(MemError::from)
            .and_then(|fence| wait_copy(&fence));
        if let Err(e) = copied {
            self.pools.free(target);
            return Err(e);
        }
        let zapped = self.zap_mappings(bo);
        let old = {
            let mut st = bo.state.lock();
            st.backing.replace(target).unwrap_or(source)
        };
        match zapped {
            Ok(()) => self.pools.free(old),
            Err(e) => {
                tracing::error!(bo = ?bo.id(), error = %e, "zap failed: old backing kept out of use");
                self.leaked.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Zaps the BO's entries in every VM that mapped it; the first failure is returned after
    /// every VM was tried.
    fn zap_mappings(&self, bo: &Bo) -> Result<(), ZapFailed> {
        let mut result = Ok(());
        for vm in bo.mappers() {
            if let Err(e) = vm.zap_bo(bo.id()) {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Backings kept out of use forever because a zap before their free failed.
    pub fn leaked_backings(&self) -> u64 {
        self.leaked.load(Ordering::Relaxed)
    }
}

/// The kinds of eviction victims, tried in LRU order.
#[derive(Clone, Copy)]
enum Victim {
    Bo,
    Svm,
}

/// A reservation taken with a try-lock for as long as the guard lives.
struct ResvTryGuard<'a> {
    resv: &'a Resv,
    ctx: AcquireCtx,
}

impl<'a> ResvTryGuard<'a> {
    /// The reservation if it is free right now (never waits).
    fn new(resv: &'a Resv) -> Option<Self> {
        let mut ctx = AcquireCtx::new();
        match resv.ww().try_lock(&mut ctx) {
            Ok(true) => Some(Self { resv, ctx }),
            _ => None,
        }
    }
}

impl Drop for ResvTryGuard<'_> {
    fn drop(&mut self) {
        // Locked by this context in `new`, so unlock cannot fail.
        let _ = self.resv.ww().unlock(&mut self.ctx);
    }
}

/// Waits for a copy job and turns its failure into an error.
pub(super) fn wait_copy(fence: &Fence) -> Result<(), MemError> {
    let failed = |reason: String| MemError::Copy(CopyError::Failed { reason });
    if let Err(fault) = fence
        .wait(Some(COPY_TIMEOUT))
        .map_err(|e| failed(e.to_string()))?
    {
        return Err(failed(format!("{fault:?}")));
    }
    if fence.status() == FenceStatus::Pending {
        return Err(failed("copy did not complete".into()));
    }
    Ok(())
}

/// An unpinned, never CPU-mapped migratable BO in VRAM.
fn is_candidate(bo: &Bo) -> bool {
    let s = bo.state.lock();
    bo.placement() == Placement::Migratable
        && s.movable()
        && matches!(s.backing, Some(Backing::Vram(_)))
}

/// The copies moving `from`'s bytes to `to`, split where either side's segments end.
fn piecewise(from: &Backing, to: &Backing) -> Vec<(PhysAddr, PhysAddr, u64)> {
    piecewise_segments(&from.segments(), &to.segments())
}

/// [`piecewise`] over segment lists.
pub(super) fn piecewise_segments(a: &[PhysSeg], b: &[PhysSeg]) -> Vec<(PhysAddr, PhysAddr, u64)> {
    let (mut i, mut j, mut oa, mut ob) = (0, 0, 0u64, 0u64);
    let mut out = Vec::new();
    while let (Some(sa), Some(sb)) = (a.get(i), b.get(j)) {
        let len = (sa.len - oa).min(sb.len - ob);
        out.push((
            PhysAddr(sa.addr.get() + oa),
            PhysAddr(sb.addr.get() + ob),
            len,
        ));
        oa += len;
        ob += len;
        if oa == sa.len {
            (i, oa) = (i + 1, 0);
        }
        if ob == sb.len {
            (j, ob) = (j + 1, 0);
        }
    }
    out
}
