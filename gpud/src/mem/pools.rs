//! The memories BO backings come from, and the rule that ties a backing to its own shared
//! memory object on the host.
//!
//! Owns: [`Pools`] (the VRAM allocator, the CPU's VRAM aperture, the system DMA pool, the
//! backings of dropped BOs still waiting for fences) and, when the memories are shared
//! windows ([`SharedWindows`]), the [`ShmObject`] of every live backing: allocation binds one
//! over the backing's place(s), [`Pools::free`] unbinds it *before* returning the range to its
//! allocator. Must not: move or evict BOs (the manager does) or export anything but a
//! backing's own object (page tables and other driver allocations stay on the pool memfd).
//!
//! INVARIANT: while a range is allocated to a BO backing on shared windows, exactly that
//! backing's object covers it; once freed, the pool's memory does, so an object handed to a
//! client never aliases memory owned by anything else. A range whose pool memory could not
//! be restored is never allocated again (it is counted in [`Pools::lost_ranges`]).

use super::bo::Backing;
use super::manager::MemError;
use super::shm::{BindFailure, Piece, ShmObject, ShmPool};
use super::vram::{AllocRequest, VramAllocator, VramError};
use crate::hw::pte::MemLocation;
use crate::hw::{DmaMemory, DmaRegion, HwError};
use crate::sync::Fence;
use crate::types::{PhysAddr, PAGE_SIZE};
use parking_lot::Mutex;
use rustix::fd::{BorrowedFd, OwnedFd};
use simgpu::PhysMemory;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The shared windows behind system memory and VRAM (the host's `gpud serve`): the same
/// memories the device and `Pools` use, as [`ShmPool`]s that can bind per-backing objects.
#[derive(Clone)]
pub struct SharedWindows {
    /// The system-memory window (the DMA pool's memory).
    pub sys: Arc<ShmPool>,
    /// The VRAM window (simgpu's VRAM and the CPU aperture).
    pub vram: Arc<ShmPool>,
}

/// A live backing's key: its memory and first address (backings never overlap).
type Key = (MemLocation, u64);

fn key(backing: &Backing) -> Option<Key> {
    let first = backing.segments().first()?.addr.get();
    Some((backing.location(), first))
}

/// The memories backings come from, shared by every BO and the manager.
pub struct Pools {
    /// VRAM allocator (shared with page-table pages in VRAM).
    pub vram: Arc<Mutex<VramAllocator>>,
    /// VRAM as the CPU reaches it (the BAR2 aperture).
    pub aperture: Arc<dyn PhysMemory>,
    /// The system-memory pool.
    pub sys: Arc<dyn DmaMemory>,
    /// Backings of dropped BOs waiting for fences.
    zombies: Mutex<Vec<(Backing, Vec<Arc<Fence>>)>>,
    shared: Option<SharedWindows>,
    /// The object of every live backing (with `shared`).
    objects: Mutex<HashMap<Key, ShmObject>>,
    lost: AtomicU64,
    observer: OnceLock<MemObserver>,
}

/// Told of every backing range allocated (`true`) and freed (`false`): an in-process
/// simulated device uses it to check that no GPU access reaches freed memory.
pub type MemObserver = Arc<dyn Fn(MemLocation, PhysAddr, u64, bool) + Send + Sync>;

impl Pools {
    /// Pools over the given memories (no CPU sharing with other processes).
    pub fn new(
        vram: Arc<Mutex<VramAllocator>>,
        aperture: Arc<dyn PhysMemory>,
        sys: Arc<dyn DmaMemory>,
    ) -> Arc<Self> {
        Self::with_sharing(vram, aperture, sys, None)
    }

    /// Pools whose system memory and VRAM are `shared`'s windows: every BO backing gets its
    /// own memory object, which [`Pools::memory_fd`] hands out.
    pub fn with_sharing(
        vram: Arc<Mutex<VramAllocator>>,
        aperture: Arc<dyn PhysMemory>,
        sys: Arc<dyn DmaMemory>,
        shared: Option<SharedWindows>,
    ) -> Arc<Self> {
        Arc::new(Self {
            vram,
            aperture,
            sys,
            zombies: Mutex::new(Vec::new()),
            shared,
            objects: Mutex::new(HashMap::new()),
            lost: AtomicU64::new(0),
            observer: OnceLock::new(),
        })
    }

    /// Sets the observer of allocations and frees (once; later calls are ignored).
    pub fn set_observer(&self, observer: MemObserver) {
        let _ = self.observer.set(observer);
    }

    fn observe(&self, backing: &Backing, allocated: bool) {
        if let Some(o) = self.observer.get() {
            for s in backing.segments() {
                o(backing.location(), s.addr, s.len, allocated);
            }
        }
    }

    /// Whether backings have memory objects clients can map.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Allocates a system-pool backing of `size` bytes (zeroed: by the pool, or, with shared
    /// windows, by being a fresh object, so the pool need not clear it first): one contiguous
    /// region when the pool has one, else several, largest first.
    pub fn alloc_sys(&self, size: u64) -> Result<Backing, MemError> {
        // Memory of dropped BOs whose last jobs are done is free again.
        self.reclaim();
        let regions = match self.sys_region(size) {
            Ok(region) => vec![region],
            Err(_) => self.sys_scattered(size)?,
        };
        let backing = self.share(Backing::System(regions))?;
        self.observe(&backing, true);
        Ok(backing)
    }

    fn sys_region(&self, bytes: u64) -> Result<DmaRegion, HwError> {
        if self.shared.is_some() {
            self.sys.alloc_uncleared(bytes)
        } else {
            self.sys.alloc(bytes)
        }
    }

    /// `size` bytes in pieces: each the largest power-of-two size (at most the remainder,
    /// at least a page) the pool can still give. All or nothing.
    fn sys_scattered(&self, size: u64) -> Result<Vec<DmaRegion>, MemError> {
        let mut regions: Vec<DmaRegion> = Vec::new();
        let mut left = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let mut piece = prev_power_of_two(left);
        while left > 0 {
            match self.sys_region(piece.min(left)) {
                Ok(r) => {
                    left = left.saturating_sub(r.len);
                    regions.push(r);
                }
                Err(_) if piece > PAGE_SIZE => piece /= 2,
                Err(_) => {
                    for r in regions {
                        // Just allocated by us: a refusal cannot happen.
                        let _ = self.sys.free(r);
                    }
                    return Err(MemError::NoMemory { bytes: size });
                }
            }
        }
        Ok(regions)
    }

    /// Whether new backings come zeroed (each is a fresh shared-memory object). Otherwise new
    /// VRAM holds a previous owner's bytes and the manager clears it.
    pub fn fresh_backings_are_zero(&self) -> bool {
        self.shared.is_some()
    }

    /// Allocates VRAM for `size` bytes (in blocks of at least 2 MiB when the size allows,
    /// so large mappings get large pages; `contiguous`: physically adjacent blocks, one
    /// range). Zeroed only with shared windows (see [`Pools::fresh_backings_are_zero`]).
    pub fn alloc_vram(&self, size: u64, contiguous: bool) -> Result<Backing, MemError> {
        self.reclaim();
        let min_block = if size >= 2 << 20 { 2 << 20 } else { 4096 };
        let base = if contiguous {
            AllocRequest::contiguous(size)
        } else {
            AllocRequest::scattered(size)
        };
        let req = AllocRequest { min_block, ..base };
        let blocks = {
            let mut alloc = self.vram.lock();
            match alloc.alloc(req) {
                Ok(b) => Ok(b),
                Err(_) if min_block > 4096 => alloc.alloc(AllocRequest {
                    min_block: 4096,
                    ..base
                }),
                Err(e) => Err(e),
            }
        };
        match blocks {
            Ok(b) => {
                let backing = self.share(Backing::Vram(b))?;
                self.observe(&backing, true);
                Ok(backing)
            }
            Err(VramError::NoSpace { free, .. }) => Err(MemError::NoSpace {
                requested: size,
                free,
            }),
            Err(_) => Err(MemError::InvalidSize { size }),
        }
    }

    /// Binds a fresh backing's own object over it (with shared windows). On failure the
    /// range goes back to its allocator, or is kept out of use if it could not be restored.
    fn share(&self, backing: Backing) -> Result<Backing, MemError> {
        let (Some(shared), Some(k)) = (&self.shared, key(&backing)) else {
            return Ok(backing);
        };
        let window = match backing.location() {
            MemLocation::System => &shared.sys,
            MemLocation::Vram => &shared.vram,
        };
        let pieces: Vec<Piece> = backing
            .segments()
            .iter()
            .map(|s| Piece {
                addr: s.addr.get(),
                len: s.len,
            })
            .collect();
        match window.bind(&pieces) {
            Ok(obj) => {
                self.objects.lock().insert(k, obj);
                Ok(backing)
            }
            Err(BindFailure { error, range_lost }) => {
                if range_lost {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.release(backing);
                }
                Err(MemError::Share(error))
            }
        }
    }

    /// A new descriptor of `backing`'s own memory object (offset 0 is the backing's first
    /// byte, its size is the backing's), or `None` without shared windows.
    pub fn memory_fd(&self, backing: &Backing) -> Option<OwnedFd> {
        let k = key(backing)?;
        let objects = self.objects.lock();
        objects.get(&k)?.fd().try_clone_to_owned().ok()
    }

    /// Returns a backing whose last user is gone: first its object is unbound (the pool's
    /// memory covers the range again), then the range goes back to its allocator.
    pub fn free(&self, backing: Backing) {
        let obj = key(&backing).and_then(|k| self.objects.lock().remove(&k));
        if let Some(obj) = obj {
            if obj.unbind().is_err() {
                // The range may still show the object's pages: never hand it out again.
                self.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.release(backing);
    }

    fn release(&self, backing: Backing) {
        self.observe(&backing, false);
        match backing {
            // A refusal means blocks that are not allocated: nothing to return.
            Backing::Vram(blocks) => drop(self.vram.lock().free(&blocks)),
            Backing::System(regions) => {
                for r in regions {
                    drop(self.sys.free(r));
                }
            }
        }
    }

    /// Parks the backing of a dropped BO until `fences` signal; [`Pools::reclaim`] (run by
    /// every allocation and every look at free memory) frees it after that.
    pub(super) fn bury(&self, backing: Backing, fences: Vec<Arc<Fence>>) {
        self.zombies.lock().push((backing, fences));
    }

    /// Frees zombie backings whose fences all signalled; returns how many.
    pub fn reclaim(&self) -> usize {
        let ready: Vec<Backing> = {
            let mut z = self.zombies.lock();
            let (ready, wait): (Vec<_>, Vec<_>) = z
                .drain(..)
                .partition(|(_, f)| f.iter().all(|f| f.is_signalled()));
            *z = wait;
            ready.into_iter().map(|(b, _)| b).collect()
        };
        let n = ready.len();
        ready.into_iter().for_each(|b| self.free(b));
        n
    }

    /// Backings waiting for fences.
    pub fn zombies(&self) -> usize {
        self.zombies.lock().len()
    }

    /// Live backings with their own memory object.
    pub fn shared_objects(&self) -> usize {
        self.objects.lock().len()
    }

    /// Ranges kept out of use because the pool's memory could not be restored over them.
    pub fn lost_ranges(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

/// A client's memfd pages bound over places of the system-memory window (userptr on the
/// host): the places are allocated like a backing's, then the client's memfd is mapped over
/// them, so the device reaches the client's own page-cache pages. Dropping it re-covers the
/// places with the pool's memory before they go back to the allocator (or keeps them out of
/// use if that fails), as [`Pools::free`] does for a backing.
pub struct ForeignPages {
    backing: Option<Backing>,
    obj: Option<ShmObject>,
    pools: Arc<Pools>,
}

impl ForeignPages {
    /// The device physical address of each 4 KiB page, in file order.
    pub fn pages(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        let segs = self
            .backing
            .as_ref()
            .map(Backing::segments)
            .unwrap_or_default();
        segs.into_iter().flat_map(|s| {
            (0..s.len / PAGE_SIZE).map(move |i| PhysAddr(s.addr.get() + i * PAGE_SIZE))
        })
    }

    /// Bytes.
    pub fn len(&self) -> u64 {
        self.backing
            .as_ref()
            .map_or(0, |b| b.segments().iter().map(|s| s.len).sum())
    }

    /// Whether no page is held (never, for a successful pin).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ForeignPages {
    fn drop(&mut self) {
        let (Some(obj), Some(backing)) = (self.obj.take(), self.backing.take()) else {
            return;
        };
        if obj.unbind().is_err() {
            // The places may still show the client's pages: never hand them out again.
            self.pools.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.pools.release(backing);
    }
}

impl Pools {
    /// Binds `len` bytes of a client's memfd `fd` from file offset `offset` over fresh
    /// places of the system-memory window (userptr). The memfd must be sealed against
    /// shrinking and long enough (`ShareError::Foreign` otherwise); without shared windows
    /// there is nothing to bind into (`ShareError::Foreign`).
    pub fn pin_foreign(
        self: &Arc<Self>,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: u64,
    ) -> Result<ForeignPages, MemError> {
        let Some(shared) = &self.shared else {
            return Err(MemError::Share(super::shm::ShareError::Foreign(
                "no shared windows to bind client memory into",
            )));
        };
        if len == 0 || len % PAGE_SIZE != 0 {
            return Err(MemError::InvalidSize { size: len });
        }
        self.reclaim();
        let regions = match self.sys_region(len) {
            Ok(region) => vec![region],
            Err(_) => self.sys_scattered(len)?,
        };
        let backing = Backing::System(regions);
        let pieces: Vec<Piece> = backing
            .segments()
            .iter()
            .map(|s| Piece {
                addr: s.addr.get(),
                len: s.len,
            })
            .collect();
        match shared.sys.bind_foreign(&pieces, fd, offset) {
            Ok(obj) => {
                self.observe(&backing, true);
                Ok(ForeignPages {
                    backing: Some(backing),
                    obj: Some(obj),
                    pools: self.clone(),
                })
            }
            Err(BindFailure { error, range_lost }) => {
                if range_lost {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.release(backing);
                }
                Err(MemError::Share(error))
            }
        }
    }
}

/// The largest power of two not above `n` (`n` > 0).
fn prev_power_of_two(n: u64) -> u64 {
    1 << (63 - n.max(1).leading_zeros())
}
