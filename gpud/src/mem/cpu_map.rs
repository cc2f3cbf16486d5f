//! In-process CPU mappings of BOs: the Redox `mmap_prep` answer (an address in gpud's own
//! address space, see [`super::window`]) and the pin that keeps it true until `munmap`.
//!
//! Owns: [`CpuMaps`], the live window mappings per BO: each one holds a pin on the BO (it
//! neither evicts nor validates) *and* an `Arc` of it. Must not: know about clients or
//! handles (the scheme server counts mappings per handle and calls [`CpuMaps::unmap`] only
//! for mappings it counted), nor touch the host's per-BO memory objects (that path pins for
//! the BO's life, because the daemon cannot see a host `munmap`).
//!
//! Why the `Arc`: on Redox the server cannot revoke a client's mapping. The kernel shares the
//! frames behind the returned address with the client until the client unmaps. If the BO
//! were dropped while a mapping is live (a handle closed early, a server bug), its backing
//! would go back to the pool and be handed to the next BO, whose owner could be another
//! client: the first client would read and write the second's memory. Holding the BO until
//! the last counted `munmap` makes that impossible; the cost of an unbalanced server is a
//! leak, never an alias.
//!
//! INVARIANT: a BO with `n > 0` live window mappings holds exactly `n` pins taken here and
//! is referenced from the table; the last unmap drops both.

use super::bo::{Bo, BoError};
use super::window::{CpuWindow, WindowError};
use crate::types::{BoId, CpuVa, PAGE_SIZE};
use crate::vm::GpuBo;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

/// Why a BO range cannot be mapped by address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CpuMapError {
    /// Offset not page-aligned, empty, or past the BO's end.
    #[error("mapping {offset:#x}+{len:#x} of a BO of {size:#x} bytes: unaligned or outside")]
    Range {
        /// Offset in the BO.
        offset: u64,
        /// Bytes (as asked).
        len: u64,
        /// BO bytes.
        size: u64,
    },
    /// The range is not one physically contiguous range inside the window (a scattered VRAM
    /// BO: create it with `NEEDS_VISIBLE_VRAM`).
    #[error("not CPU-mappable as one range: {0}")]
    NotMappable(#[from] WindowError),
    /// The BO has no backing.
    #[error("BO has no backing: {0}")]
    Bo(#[from] BoError),
}

/// One BO's live window mappings.
struct Entry {
    bo: Arc<Bo>,
    count: u64,
}

/// The live window mappings of all BOs.
#[derive(Default)]
pub struct CpuMaps {
    live: Mutex<HashMap<BoId, Entry>>,
}

impl CpuMaps {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[offset, offset + len)` of `bo` (`len` rounded up to pages): pins the BO where
    /// it is, and returns where gpud sees those bytes. On error nothing changed.
    pub fn map(
        &self,
        window: &CpuWindow,
        bo: &Arc<Bo>,
        offset: u64,
        len: u64,
    ) -> Result<CpuVa, CpuMapError> {
        let size = GpuBo::size(bo.as_ref());
        let range = CpuMapError::Range { offset, len, size };
        let pages = len
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(range.clone())?;
        let fits = offset.checked_add(pages).is_some_and(|end| end <= size);
        if offset % PAGE_SIZE != 0 || len == 0 || !fits {
            return Err(range);
        }
        let (location, segments) = bo.pin_in_place()?;
        match window.backing_addr(location, &segments, offset, pages) {
            Ok(addr) => {
                let mut live = self.live.lock();
                let entry = live.entry(GpuBo::id(bo.as_ref())).or_insert(Entry {
                    bo: bo.clone(),
                    count: 0,
                });
                entry.count += 1;
                Ok(addr)
            }
            Err(e) => {
                bo.unpin();
                Err(e.into())
            }
        }
    }

    /// Ends one window mapping of the BO `id`: drops its pin, and the table's reference when
    /// it was the last. Returns whether there was one (an unknown BO changes nothing).
    pub fn unmap(&self, id: BoId) -> bool {
        let gone = {
            let mut live = self.live.lock();
            let Some(entry) = live.get_mut(&id) else {
                return false;
            };
            entry.bo.unpin();
            entry.count = entry.count.saturating_sub(1);
            if entry.count == 0 {
                live.remove(&id)
            } else {
                None
            }
        };
        // The BO may be freed here: outside the table's lock.
        drop(gone);
        true
    }

    /// Live window mappings of the BO `id`.
    pub fn count(&self, id: BoId) -> u64 {
        self.live.lock().get(&id).map_or(0, |e| e.count)
    }

    /// BOs with at least one live window mapping.
    pub fn mapped_bos(&self) -> usize {
        self.live.lock().len()
    }
}
