//! VRAM for SVM ranges: the memory a range migrated to VRAM lives in, the copies that move
//! its bytes between system pages and VRAM, and the seam through which VRAM pressure evicts
//! SVM ranges.
//!
//! Owns: [`SvmVram`] (a VRAM allocation holding one migrated range's data; freed when the
//! last holder drops it), [`MemoryManager::alloc_svm`] (VRAM for a range, evicting idle BOs
//! and other SVM ranges like any allocation), [`MemoryManager::copy_segments`] (a
//! copy-engine copy between two lists of segments, waited for) and [`SvmEvictor`] (what the
//! memory manager asks when no BO can go).
//! Must not: know ranges, VMs or the client's address space. Who holds an [`SvmVram`]
//! decides when it may go: the VM keeps one reference per GPU mapping of it and drops that
//! only after the PTEs were zapped and the TLB invalidation retired (zap, invalidate, free).

use super::bo::{Backing, Pools};
use super::copy::copy_commands;
use super::manager::{EvictReport, MemError, MemoryManager};
use crate::hw::cmd::CommandStream;
use crate::hw::pte::MemLocation;
use crate::vm::pagetable::PhysSeg;
use std::sync::Arc;

/// VRAM holding one SVM range's data. Freed (back to the VRAM allocator) on drop.
///
/// INVARIANT: dropped only when no PTE and no TLB entry reaches it any more: every GPU
/// mapping of it holds a clone of the `Arc` it lives in, released after the zap.
pub struct SvmVram {
    backing: Option<Backing>,
    pools: Arc<Pools>,
}

impl SvmVram {
    /// The VRAM segments, in range order.
    pub fn segments(&self) -> Vec<PhysSeg> {
        self.backing.as_ref().map_or(Vec::new(), Backing::segments)
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.segments().iter().map(|s| s.len).sum()
    }

    /// Never true for an allocation (kept for the `len`/`is_empty` convention).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for SvmVram {
    fn drop(&mut self) {
        if let Some(b) = self.backing.take() {
            self.pools.free(b);
        }
    }
}

impl std::fmt::Debug for SvmVram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvmVram").field("len", &self.len()).finish()
    }
}

/// What the memory manager asks to free VRAM held by SVM ranges (the device implements it
/// over every VM). Neither call may wait for a lock another thread holds.
pub trait SvmEvictor: Send + Sync {
    /// The LRU clock value of the least recently used SVM range in VRAM (comparable with
    /// BOs' `last_use`), if any.
    fn oldest(&self) -> Option<u64>;
    /// Moves the least recently used SVM range it can take right now back to system
    /// memory (zap, invalidate, copy, free); false if none could go.
    fn evict_one(&self) -> bool;
}

impl MemoryManager {
    /// VRAM for an SVM range of `size` bytes, evicting idle BOs and other SVM ranges as
    /// any allocation does. The content is undefined: the caller copies the range in.
    pub fn alloc_svm(&self, size: u64) -> Result<(SvmVram, EvictReport), MemError> {
        let mut report = EvictReport::default();
        let backing = self.alloc_vram_evicting(size, false, None, &mut report)?;
        let vram = SvmVram {
            backing: Some(backing),
            pools: self.pools().clone(),
        };
        Ok((vram, report))
    }

    /// Copies `from` (segments in `from_loc`) to `to` (in `to_loc`) on the copy engine and
    /// waits for it. Both lists cover the same number of bytes.
    pub fn copy_segments(
        &self,
        from: (MemLocation, &[PhysSeg]),
        to: (MemLocation, &[PhysSeg]),
    ) -> Result<(), MemError> {
        let mut s = CommandStream::new();
        for (a, b, len) in super::manager::piecewise_segments(from.1, to.1) {
            copy_commands(&mut s, (from.0, a), (to.0, b), len);
        }
        let fence = self.copy_engine().submit(s.dwords(), &[])?;
        super::manager::wait_copy(&fence)
    }
}
