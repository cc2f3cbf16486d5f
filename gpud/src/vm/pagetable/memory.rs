//! Where page-table pages live: the [`PtMemory`] seam and its system-memory, VRAM and
//! failure-injecting implementations.
//!
//! Owns: allocating and freeing 4 KiB table pages and writing their entries through the
//! hardware layer's memory accessors (never through Rust references to memory the device
//! walks). Must not: decide what goes into an entry or when a page may be freed; the
//! page-table manager frees a page only after the TLB invalidation that covers it completed.

use crate::hw::pte::TABLE_SIZE;
use crate::hw::{DmaMemory, DmaRegion, MemLocation};
use crate::mem::vram::{AllocRequest, VramAllocator, VramBlock, VramError};
use crate::types::PhysAddr;
use parking_lot::Mutex;
use simgpu::PhysMemory;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thiserror::Error;

/// A table page could not be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PtAllocError {
    /// VRAM has no free 4 KiB block (the caller may evict and retry).
    #[error("no VRAM for a page-table page ({free:#x} bytes free)")]
    NoSpace { free: u64 },
    /// System memory is exhausted.
    #[error("no system memory for a page-table page")]
    NoMemory,
}

/// Memory that holds page-table pages. Writes go through atomic accessors because the
/// device's walker reads the same words concurrently.
pub trait PtMemory: Send + Sync {
    /// Where the pages are (the location bit of entries pointing at them).
    fn location(&self) -> MemLocation;
    /// A 4 KiB-aligned page; its content is undefined unless [`PtMemory::zeroed_pages`].
    fn alloc_page(&self) -> Result<PhysAddr, PtAllocError>;
    /// Whether `alloc_page` returns zero-filled pages. The manager then writes only the
    /// non-zero entries of a new table instead of all 512.
    fn zeroed_pages(&self) -> bool {
        false
    }
    /// Returns a page. The caller guarantees no walker can reach it any more.
    fn free_page(&self, page: PhysAddr);
    /// Writes one entry. Returns false if the address is outside the memory (a bug).
    fn write_u64(&self, addr: PhysAddr, value: u64) -> bool;
    /// Reads one entry (tests and diagnostics).
    fn read_u64(&self, addr: PhysAddr) -> Option<u64>;
}

/// Table pages in system memory, allocated from the platform's DMA memory.
pub struct SysPtMemory {
    dma: Arc<dyn DmaMemory>,
}

impl SysPtMemory {
    /// Pages from `dma`.
    pub fn new(dma: Arc<dyn DmaMemory>) -> Self {
        Self { dma }
    }
}

impl PtMemory for SysPtMemory {
    fn location(&self) -> MemLocation {
        MemLocation::System
    }

    fn zeroed_pages(&self) -> bool {
        // `DmaMemory::alloc` hands out zeroed memory.
        true
    }

    fn alloc_page(&self) -> Result<PhysAddr, PtAllocError> {
        self.dma
            .alloc(TABLE_SIZE)
            .map(|r| r.addr)
            .map_err(|_| PtAllocError::NoMemory)
    }

    fn free_page(&self, page: PhysAddr) {
        // A failing free means a page we never allocated: nothing more to release.
        let _ = self.dma.free(DmaRegion {
            addr: page,
            len: TABLE_SIZE,
        });
    }

    fn write_u64(&self, addr: PhysAddr, value: u64) -> bool {
        self.dma.write_u64(addr, value).is_ok()
    }

    fn read_u64(&self, addr: PhysAddr) -> Option<u64> {
        self.dma.read_u64(addr).ok()
    }
}

/// Table pages in VRAM: blocks of the VRAM allocator, written through the BAR2 aperture.
pub struct VramPtMemory {
    alloc: Arc<Mutex<VramAllocator>>,
    aperture: Arc<dyn PhysMemory>,
}

impl VramPtMemory {
    /// Pages from `alloc`, written through `aperture` (VRAM as the CPU sees it).
    pub fn new(alloc: Arc<Mutex<VramAllocator>>, aperture: Arc<dyn PhysMemory>) -> Self {
        Self { alloc, aperture }
    }
}

impl PtMemory for VramPtMemory {
    fn location(&self) -> MemLocation {
        MemLocation::Vram
    }

    fn alloc_page(&self) -> Result<PhysAddr, PtAllocError> {
        let mut alloc = self.alloc.lock();
        match alloc.alloc(AllocRequest::scattered(TABLE_SIZE)) {
            Ok(blocks) => Ok(PhysAddr(blocks.first().map_or(0, |b| b.offset))),
            Err(VramError::NoSpace { free, .. }) => Err(PtAllocError::NoSpace { free }),
            Err(_) => Err(PtAllocError::NoSpace {
                free: alloc.free_bytes(),
            }),
        }
    }

    fn free_page(&self, page: PhysAddr) {
        let block = VramBlock {
            offset: page.get(),
            order: 0,
        };
        // Only pages this memory handed out come back; a refusal would be a double free,
        // which the allocator already rejected without changing state.
        let _ = self.alloc.lock().free(&[block]);
    }

    fn write_u64(&self, addr: PhysAddr, value: u64) -> bool {
        self.aperture.store_u64(addr.get(), value).is_ok()
    }

    fn read_u64(&self, addr: PhysAddr) -> Option<u64> {
        self.aperture.load_u64(addr.get()).ok()
    }
}

/// Table pages for a device: VRAM when the device has any (walks then stay on the device,
/// like Xe on discrete parts), else system memory.
pub fn for_device(
    vram_size: u64,
    vram: Arc<Mutex<VramAllocator>>,
    aperture: Arc<dyn PhysMemory>,
    dma: Arc<dyn DmaMemory>,
) -> Arc<dyn PtMemory> {
    if vram_size > 0 {
        Arc::new(VramPtMemory::new(vram, aperture))
    } else {
        Arc::new(SysPtMemory::new(dma))
    }
}

/// A wrapper that refuses allocations once a budget is spent: tests use it to prove that a
/// failed `prepare` leaves everything unchanged.
pub struct FailingPtMemory {
    inner: Arc<dyn PtMemory>,
    budget: AtomicU64,
}

impl FailingPtMemory {
    /// Allows `budget` more page allocations, then fails with [`PtAllocError::NoMemory`].
    pub fn new(inner: Arc<dyn PtMemory>, budget: u64) -> Self {
        Self {
            inner,
            budget: AtomicU64::new(budget),
        }
    }

    /// Resets the remaining budget.
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::Relaxed);
    }
}

impl PtMemory for FailingPtMemory {
    fn location(&self) -> MemLocation {
        self.inner.location()
    }

    fn zeroed_pages(&self) -> bool {
        self.inner.zeroed_pages()
    }

    fn alloc_page(&self) -> Result<PhysAddr, PtAllocError> {
        let took = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1));
        match took {
            Ok(_) => self.inner.alloc_page(),
            Err(_) => Err(PtAllocError::NoMemory),
        }
    }

    fn free_page(&self, page: PhysAddr) {
        self.inner.free_page(page);
    }

    fn write_u64(&self, addr: PhysAddr, value: u64) -> bool {
        self.inner.write_u64(addr, value)
    }

    fn read_u64(&self, addr: PhysAddr) -> Option<u64> {
        self.inner.read_u64(addr)
    }
}
