//! Buffer objects: size, placement, reservation, pin count, backing, CPU access, and the
//! rule that backing outlives every GPU use.
//!
//! Owns: [`Bo`] (implements [`GpuBo`]), its [`Backing`] (VRAM blocks or a contiguous
//! system-pool region), pinning, and the CPU-mapping rule below. The memories backings come
//! from are [`Pools`] (`pools.rs`). Must not: evict or move BOs (the [`super::manager`] does,
//! under the BO's reservation) or write page tables.
//!
//! INVARIANT: a backing is returned to its pool only when no GPU mapping can reach it (the
//! BO is dropped only after its last vm_bo, and so its last mapping, is gone) and every
//! fence in the BO's reservation has signalled; otherwise it waits in [`Pools`] until
//! [`Pools::reclaim`] sees the fences signalled.
//!
//! INVARIANT (CPU mappings): once a BO's memory has been handed out for a CPU mapping
//! ([`Bo::cpu_memory`]) the BO never moves again (neither eviction nor validation) until it
//! is destroyed. A client holding the memory object can map it at any time, and the daemon
//! cannot see a host `munmap`, so "mapped" lasts for the BO's life; a client mapping thus
//! always shows the pages the GPU uses, and after destruction only that BO's stale pages.

use super::mappings::BoMappings;
pub use super::pools::{Pools, SharedWindows};
use super::vram::VramBlock;
use crate::hw::pte::{LeafFlags, MemLocation};
use crate::hw::DmaRegion;
use crate::sync::{Fence, Resv, ResvId, Usage};
use crate::types::{BoId, GpuVa, PhysAddr};
use crate::vm::pagetable::{MapTarget, PhysSeg, PtOp};
use crate::vm::vm_bo::{GpuBo, VmBo};
use parking_lot::Mutex;
use rustix::fd::OwnedFd;
use std::sync::{Arc, Weak};
use thiserror::Error;

/// Where a BO may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// System memory only.
    System,
    /// VRAM only (never evicted).
    Vram,
    /// VRAM preferred, system memory allowed: evictable and migratable.
    Migratable,
}

/// The memory behind a BO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// VRAM blocks, in BO order.
    Vram(Vec<VramBlock>),
    /// Regions of the system pool, in BO order: one when the pool had a contiguous range,
    /// several when it is fragmented or made of separate chunks (Redox's DMA pool).
    System(Vec<DmaRegion>),
}

impl Backing {
    /// The memory the backing is in.
    pub fn location(&self) -> MemLocation {
        match self {
            Backing::Vram(_) => MemLocation::Vram,
            Backing::System(_) => MemLocation::System,
        }
    }

    /// The physical segments, in BO order.
    pub fn segments(&self) -> Vec<PhysSeg> {
        match self {
            Backing::Vram(blocks) => blocks
                .iter()
                .map(|b| PhysSeg {
                    addr: PhysAddr(b.offset),
                    len: b.size(),
                })
                .collect(),
            Backing::System(regions) => regions
                .iter()
                .map(|r| PhysSeg {
                    addr: r.addr,
                    len: r.len,
                })
                .collect(),
        }
    }
}

/// Errors of BO access.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BoError {
    /// An access or mapping outside the BO.
    #[error("range {offset:#x}+{len:#x} outside BO of {size:#x} bytes")]
    Range { offset: u64, len: u64, size: u64 },
    /// The memory refused the access (a pool smaller than its allocator: a bug).
    #[error("memory access at {addr:#x} failed")]
    Access { addr: u64 },
    /// The BO's memory cannot be mapped by another process (no shared windows).
    #[error("BO memory is not shareable")]
    NotShared,
}

/// Mutable state of a BO, under its lock.
#[derive(Debug)]
pub(super) struct BoState {
    pub backing: Option<Backing>,
    pub pins: u32,
    pub last_use: u64,
    pub vm_bos: Vec<Weak<VmBo>>,
    /// Every VM that has mapped the BO (while the VM lives its tables may still point at
    /// it): moves zap through these before freeing.
    pub mappers: Vec<Weak<dyn BoMappings>>,
    /// Its memory was handed out for a CPU mapping: it stays where it is until destroyed.
    pub cpu_mapped: bool,
}

impl BoState {
    /// Whether a move (eviction or validation) may take the BO's backing.
    pub fn movable(&self) -> bool {
        self.pins == 0 && !self.cpu_mapped
    }
}

/// A buffer object.
pub struct Bo {
    id: BoId,
    size: u64,
    placement: Placement,
    resv: Arc<Resv>,
    private: bool,
    /// VRAM backings are one contiguous range (`NEEDS_VISIBLE_VRAM`: CPU-mappable as one
    /// address on Redox).
    contiguous: bool,
    pools: Arc<Pools>,
    pub(super) state: Mutex<BoState>,
    /// Held for the whole of a move (eviction or validation), so two moves of one BO never
    /// interleave. Evictors only try-lock it, so moves never wait on each other in a cycle.
    pub(super) move_lock: Mutex<()>,
    /// Times it was evicted from VRAM (per-client stats).
    pub(super) evictions: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Bo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bo")
            .field("id", &self.id)
            .field("size", &self.size)
            .field("placement", &self.placement)
            .field("private", &self.private)
            .finish()
    }
}

impl GpuBo for Bo {
    fn id(&self) -> BoId {
        self.id
    }

    fn resv(&self) -> ResvId {
        self.resv.id()
    }

    fn size(&self) -> u64 {
        self.size
    }
}

impl Bo {
    pub(super) fn new(
        id: BoId,
        size: u64,
        placement: (Placement, bool),
        resv: (Arc<Resv>, bool),
        pools: Arc<Pools>,
        backing: Backing,
        now: u64,
    ) -> Self {
        Self {
            id,
            size,
            placement: placement.0,
            contiguous: placement.1,
            resv: resv.0,
            private: resv.1,
            pools,
            state: Mutex::new(BoState {
                backing: Some(backing),
                pins: 0,
                last_use: now,
                vm_bos: Vec::new(),
                mappers: Vec::new(),
                cpu_mapped: false,
            }),
            move_lock: Mutex::new(()),
            evictions: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Where the BO may live.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Whether VRAM backings of this BO are one contiguous range (every allocation, including
    /// validation back into VRAM, asks for one).
    pub fn is_contiguous(&self) -> bool {
        self.contiguous
    }

    /// The reservation (the VM's for a VM-private BO).
    pub fn reservation(&self) -> &Arc<Resv> {
        &self.resv
    }

    /// Whether the BO shares its VM's reservation.
    pub fn is_vm_private(&self) -> bool {
        self.private
    }

    /// How many times it was evicted from VRAM.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where the backing is now.
    pub fn location(&self) -> Option<MemLocation> {
        self.state.lock().backing.as_ref().map(Backing::location)
    }

    /// The backing's physical segments (what page tables point at).
    pub fn segments(&self) -> Vec<PhysSeg> {
        self.state
            .lock()
            .backing
            .as_ref()
            .map(Backing::segments)
            .unwrap_or_default()
    }

    /// For a BO in one contiguous region of the system pool: that region.
    pub fn system_region(&self) -> Option<DmaRegion> {
        match &self.state.lock().backing {
            Some(Backing::System(regions)) if regions.len() == 1 => regions.first().copied(),
            _ => None,
        }
    }

    /// Pins the BO: it is never evicted until unpinned.
    pub fn pin(&self) {
        let mut s = self.state.lock();
        s.pins = s.pins.saturating_add(1);
    }

    /// Pins the BO where it is now and returns that place: its location and physical
    /// segments. Waits for a move in progress to finish, so the answer stays true until the
    /// matching [`Bo::unpin`] (pinned BOs are neither evicted nor validated). An in-process
    /// CPU mapping (Redox `mmap_prep`) takes one such pin per live mapping.
    pub fn pin_in_place(&self) -> Result<(MemLocation, Vec<PhysSeg>), BoError> {
        let _no_move = self.move_lock.lock();
        let mut s = self.state.lock();
        let backing = s.backing.as_ref().ok_or(BoError::Range {
            offset: 0,
            len: self.size,
            size: 0,
        })?;
        let place = (backing.location(), backing.segments());
        s.pins = s.pins.saturating_add(1);
        Ok(place)
    }

    /// Drops one pin.
    pub fn unpin(&self) {
        let mut s = self.state.lock();
        s.pins = s.pins.saturating_sub(1);
    }

    /// Pins held.
    pub fn pin_count(&self) -> u32 {
        self.state.lock().pins
    }

    /// Whether the BO's memory was handed out for a CPU mapping (it no longer moves).
    pub fn is_cpu_mapped(&self) -> bool {
        self.state.lock().cpu_mapped
    }

    /// Marks the BO CPU-mapped for the rest of its life (it will not move: see the module
    /// docs) and returns a new descriptor of its backing's own memory object, offset 0 = the
    /// BO's first byte, exactly the BO's size. Waits for a move in progress to finish.
    pub fn cpu_memory(&self) -> Result<OwnedFd, BoError> {
        if !self.pools.is_shared() {
            return Err(BoError::NotShared);
        }
        let _no_move = self.move_lock.lock();
        let mut s = self.state.lock();
        let backing = s.backing.as_ref().ok_or(BoError::NotShared)?;
        let fd = self.pools.memory_fd(backing).ok_or(BoError::NotShared)?;
        s.cpu_mapped = true;
        Ok(fd)
    }

    /// Registers a vm_bo of this BO (the VM does so when `bo_obtain` created it), so
    /// eviction can mark it.
    pub fn register_vm_bo(&self, vm_bo: &Arc<VmBo>) {
        let mut s = self.state.lock();
        s.vm_bos.retain(|w| w.strong_count() > 0);
        s.vm_bos.push(Arc::downgrade(vm_bo));
    }

    /// Registers a VM that maps (or is about to map) this BO, so a move zaps its entries
    /// before freeing the old memory. Idempotent; registrations of dropped VMs are pruned.
    pub fn register_mappings(&self, vm: Weak<dyn BoMappings>) {
        let mut s = self.state.lock();
        s.mappers.retain(|w| w.strong_count() > 0);
        if !s.mappers.iter().any(|w| Weak::ptr_eq(w, &vm)) {
            s.mappers.push(vm);
        }
    }

    /// The live VMs that mapped the BO.
    pub(super) fn mappers(&self) -> Vec<Arc<dyn BoMappings>> {
        let s = self.state.lock();
        s.mappers.iter().filter_map(Weak::upgrade).collect()
    }

    /// The live vm_bos of the BO.
    pub(super) fn vm_bos(&self) -> Vec<Arc<VmBo>> {
        let s = self.state.lock();
        s.vm_bos.iter().filter_map(Weak::upgrade).collect()
    }

    /// The map operation for `[offset, offset + len)` of the BO at `va`, following the
    /// current backing (used to bind and, after validation, to rebind).
    pub fn map_op(
        &self,
        va: GpuVa,
        offset: u64,
        len: u64,
        flags: LeafFlags,
    ) -> Result<PtOp, BoError> {
        self.check(offset, len)?;
        let s = self.state.lock();
        let Some(backing) = s.backing.as_ref() else {
            return Err(BoError::Range {
                offset,
                len,
                size: 0,
            });
        };
        let mut segments = Vec::new();
        let mut pos = 0u64;
        for seg in backing.segments() {
            let (lo, hi) = (pos.max(offset), (pos + seg.len).min(offset + len));
            if lo < hi {
                segments.push(PhysSeg {
                    addr: PhysAddr(seg.addr.get() + (lo - pos)),
                    len: hi - lo,
                });
            }
            pos += seg.len;
        }
        Ok(PtOp::Map {
            va,
            len,
            target: MapTarget::Pages {
                location: backing.location(),
                flags,
                segments,
            },
        })
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), BoError> {
        if offset.checked_add(len).is_none_or(|e| e > self.size) {
            return Err(BoError::Range {
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    /// Visits the physical pieces of `[offset, offset + len)`: `(location, addr, buf range)`.
    fn pieces(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(MemLocation, u64, usize, usize)>, BoError> {
        self.check(offset, len)?;
        let s = self.state.lock();
        let backing = s.backing.as_ref().ok_or(BoError::Range {
            offset,
            len,
            size: 0,
        })?;
        let loc = backing.location();
        let mut out = Vec::new();
        let mut pos = 0u64;
        for seg in backing.segments() {
            let (lo, hi) = (pos.max(offset), (pos + seg.len).min(offset + len));
            if lo < hi {
                let at = seg.addr.get() + (lo - pos);
                out.push((loc, at, (lo - offset) as usize, (hi - offset) as usize));
            }
            pos += seg.len;
        }
        Ok(out)
    }

    /// CPU read of BO bytes (system frames through DMA memory, VRAM through the aperture).
    /// Waits for a move in progress, so the bytes come from the backing that stays.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BoError> {
        let _no_move = self.move_lock.lock();
        for (loc, addr, a, b) in self.pieces(offset, buf.len() as u64)? {
            let Some(dst) = buf.get_mut(a..b) else {
                continue;
            };
            let ok = match loc {
                MemLocation::System => self.pools.sys.read(PhysAddr(addr), dst).is_ok(),
                MemLocation::Vram => self.pools.aperture.read(addr, dst).is_ok(),
            };
            if !ok {
                return Err(BoError::Access { addr });
            }
        }
        Ok(())
    }

    /// CPU write of BO bytes. Waits for a move in progress, so no write is lost to it.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), BoError> {
        let _no_move = self.move_lock.lock();
        for (loc, addr, a, b) in self.pieces(offset, data.len() as u64)? {
            let Some(src) = data.get(a..b) else { continue };
            let ok = match loc {
                MemLocation::System => self.pools.sys.write(PhysAddr(addr), src).is_ok(),
                MemLocation::Vram => self.pools.aperture.write(addr, src).is_ok(),
            };
            if !ok {
                return Err(BoError::Access { addr });
            }
        }
        Ok(())
    }
}

impl Drop for Bo {
    fn drop(&mut self) {
        let Some(backing) = self.state.get_mut().backing.take() else {
            return;
        };
        // Mappings hold the BO (through their vm_bo), so none is left; jobs may still run.
        let fences: Vec<Arc<Fence>> = self
            .resv
            .fences(Usage::Bookkeep)
            .into_iter()
            .filter(|f| !f.is_signalled())
            .collect();
        if fences.is_empty() {
            self.pools.free(backing);
        } else {
            self.pools.bury(backing, fences);
        }
    }
}
