//! The memory manager: creates BOs in their placement, evicts least-recently-used BOs when
//! VRAM runs out, and validates (moves back) evicted BOs.
//!
//! Owns: the LRU of BOs, the eviction policy (unpinned, migratable, least recently used
//! first), and the copies that move a BO between VRAM and the system pool (submitted to the
//! [`CopyEngine`] behind the BO's reservation fences). Must not: write page tables (the
//! caller rebinds the mappings of a validated BO with [`Bo::map_op`]) or take the VM lock.
//!
//! Eviction never frees memory the GPU might still access: the copy waits for every fence in
//! the BO's reservation, the old VRAM is freed only after the copy's fence signalled, and the
//! BO's vm_bos are marked evicted so the VM's exec path rebinds them before any new job runs
//! (drm_gpuvm's validate step). VM-private vm_bos are returned for the caller to move onto
//! the VM's evict list with `VmBoLists::evict_local` under the VM reservation.

use super::bo::{Backing, Bo, Placement, Pools};
use super::copy::{copy_commands, CopyEngine, CopyError, KernelMap};
use super::shm::ShareError;
use crate::hw::cmd::CommandStream;
use crate::hw::pte::MemLocation;
use crate::sync::{Fence, FenceStatus, Resv, Usage};
use crate::types::{BoId, PhysAddr, PAGE_SIZE};
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
        }
    }

    /// The pools.
    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
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

    /// Allocates VRAM, evicting LRU BOs (never `keep`) until it fits or nothing is left.
    fn alloc_vram_evicting(
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
            if !self.evict_one(keep, report)? {
                return Err(MemError::NoSpace {
                    requested: size,
                    free,
                });
            }
        }
    }

    /// Evicts the least recently used candidate whose move lock is free; false if none.
    fn evict_one(&self, keep: Option<BoId>, report: &mut EvictReport) -> Result<bool, MemError> {
        for victim in self.lru_candidates(keep) {
            // A BO another thread is moving is skipped, never waited for: no lock cycles.
            let Some(_moving) = victim.move_lock.try_lock() else {
                continue;
            };
            if is_candidate(&victim) {
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
    /// VRAM). The caller holds the BO's reservation. A pinned or CPU-mapped BO does not move:
    /// `MemError::Pinned`.
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
        let old = match self.move_backing(bo, target.clone(), &deps) {
            Ok(old) => old,
            Err(e) => {
                self.pools.free(target);
                return Err(e);
            }
        };
        self.pools.free(old);
        let vm_bos: Vec<Arc<VmBo>> = bo
            .state
            .lock()
            .vm_bos
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for vm_bo in vm_bos {
            if vm_bo.is_external() {
                vm_bo.set_evicted(true);
            } else {
                report.private_vm_bos.push(vm_bo);
            }
        }
        tracing::debug!(bo = ?bo.id(), size = bo.size(), "evicted from VRAM to system memory");
        report.evicted.push(bo.id());
        bo.evictions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Moves an evicted migratable BO back to VRAM (evicting others if needed). `by` is the
    /// vm_bo of the VM validating it, which rebinds its mappings with [`Bo::map_op`] right
    /// after: after a move its external evicted flag is cleared, while every *other* VM's
    /// external vm_bo is flagged evicted, because their PTEs still point at the old pages and
    /// must be rebound before their next job. VM-private vm_bos are the caller's to
    /// un-evict. A pinned or CPU-mapped BO stays where it is (the GPU keeps using it in
    /// system memory, where the CPU mapping points). Returns whether it moved.
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
            self.alloc_vram_evicting(bo.size(), bo.is_contiguous(), Some(bo.id()), report)?;
        let deps = bo.reservation().fences(Usage::Bookkeep);
        match self.move_backing(bo, target.clone(), &deps) {
            Ok(old) => self.pools.free(old),
            Err(e) => {
                self.pools.free(target);
                return Err(e);
            }
        }
        let vm_bos: Vec<Arc<VmBo>> = bo
            .state
            .lock()
            .vm_bos
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for v in vm_bos.iter().filter(|v| v.is_external()) {
            v.set_evicted(by.is_none_or(|by| !Arc::ptr_eq(by, v)));
        }
        self.touch(bo);
        Ok(true)
    }

    /// Copies the BO into `target` after `deps`, waits for the copy, installs `target` and
    /// returns the old backing (now unused by any job).
    fn move_backing(
        &self,
        bo: &Bo,
        target: Backing,
        deps: &[Arc<Fence>],
    ) -> Result<Backing, MemError> {
        let Some(source) = bo.state.lock().backing.clone() else {
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
        let fence = self.copy.submit(s.dwords(), deps)?;
        wait_copy(&fence)?;
        let mut st = bo.state.lock();
        Ok(st.backing.replace(target).unwrap_or(source))
    }
}

/// Waits for a copy job and turns its failure into an error.
fn wait_copy(fence: &Fence) -> Result<(), MemError> {
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
    let (a, b) = (from.segments(), to.segments());
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
