//! The VRAM buddy allocator.
//!
//! Owns: which byte ranges of VRAM are free, in power-of-two blocks of at least 4 KiB, each
//! aligned to its own size. Must not: know what the memory is used for, touch the memory, or
//! block. Eviction (making room) is the caller's job; this allocator only says "no space".
//!
//! INVARIANTS (checked by `check_invariants` in tests):
//! - every free block is aligned to its size and lies inside `[0, size)`;
//! - free blocks and allocated blocks never overlap, and together cover `[0, size)` exactly;
//! - no two free buddies of the same order coexist (they would have been merged);
//! - `free_bytes` equals the sum of the free blocks' sizes.
//!
//! VRAM whose size is not a power of two starts as several maximal aligned blocks, so full
//! coalescing on free means "back to that initial decomposition".

use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// log2 of the smallest block (4 KiB).
pub const MIN_ORDER_SHIFT: u32 = 12;
/// Largest block order handled (2^(12+30) bytes = 4 TiB; far above any VRAM).
const MAX_ORDER: u8 = 30;

/// One allocated block: `[offset, offset + size())`, aligned to its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VramBlock {
    /// Byte offset inside VRAM.
    pub offset: u64,
    /// Block size is `4 KiB << order`.
    pub order: u8,
}

impl VramBlock {
    /// Size in bytes.
    pub const fn size(self) -> u64 {
        1u64 << (self.order as u32 + MIN_ORDER_SHIFT)
    }

    /// First byte past the block.
    pub const fn end(self) -> u64 {
        self.offset + self.size()
    }
}

/// How an allocation may be laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocRequest {
    /// Bytes wanted; rounded up to 4 KiB.
    pub size: u64,
    /// Every block is at least this large and aligned to it (a power of two ≥ 4 KiB). Lets a
    /// caller ask for memory it can map with 64 KiB or 2 MiB pages.
    pub min_block: u64,
    /// All blocks must be physically adjacent (one contiguous range).
    pub contiguous: bool,
}

impl AllocRequest {
    /// A scattered allocation of `size` bytes in blocks of at least 4 KiB.
    pub const fn scattered(size: u64) -> Self {
        Self {
            size,
            min_block: 1 << MIN_ORDER_SHIFT,
            contiguous: false,
        }
    }

    /// One physically contiguous range of `size` bytes.
    pub const fn contiguous(size: u64) -> Self {
        Self {
            size,
            min_block: 1 << MIN_ORDER_SHIFT,
            contiguous: true,
        }
    }
}

/// Why an allocation or free failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VramError {
    /// Not enough free VRAM in a usable shape; the caller may evict and retry.
    #[error("no VRAM for {requested:#x} bytes (free {free:#x}, largest block {largest:#x})")]
    NoSpace {
        requested: u64,
        free: u64,
        largest: u64,
    },
    /// Zero size, or a minimum block that is not a power of two ≥ 4 KiB.
    #[error("invalid VRAM request: size {size:#x}, min_block {min_block:#x}")]
    InvalidRequest { size: u64, min_block: u64 },
    /// The block is not currently allocated (double free or a foreign block).
    #[error("block at {offset:#x} (order {order}) is not allocated")]
    NotAllocated { offset: u64, order: u8 },
}

/// Free-space statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VramStats {
    /// Managed bytes.
    pub size: u64,
    /// Free bytes.
    pub free: u64,
    /// Largest free block in bytes.
    pub largest_free_block: u64,
    /// Number of free blocks per order (index = order).
    pub free_blocks_per_order: Vec<u64>,
}

impl VramStats {
    /// Fragmentation in per mille: 0 when all free space is one block, towards 1000 when it
    /// is scattered into small pieces.
    pub fn fragmentation_permille(&self) -> u64 {
        if self.free == 0 {
            return 0;
        }
        1000 - self.largest_free_block * 1000 / self.free
    }
}

/// The buddy allocator over `[0, size)`.
#[derive(Debug, Clone)]
pub struct VramAllocator {
    size: u64,
    /// Free block offsets per order; `BTreeSet` so allocation is lowest-address first
    /// (deterministic) and buddy lookup is O(log n).
    free: Vec<BTreeSet<u64>>,
    /// Allocated blocks: offset → order. Lets `free` reject double frees.
    allocated: BTreeMap<u64, u8>,
    free_bytes: u64,
}

const fn block_size(order: u8) -> u64 {
    1u64 << (order as u32 + MIN_ORDER_SHIFT)
}

/// The smallest order whose block holds `bytes`.
fn order_for(bytes: u64) -> Option<u8> {
    let pages = bytes.div_ceil(block_size(0)).max(1);
    let order = pages.next_power_of_two().trailing_zeros();
    u8::try_from(order).ok().filter(|o| *o <= MAX_ORDER)
}

impl VramAllocator {
    /// An allocator for `size` bytes of VRAM (rounded down to 4 KiB).
    pub fn new(size: u64) -> Self {
        let size = size & !(block_size(0) - 1);
        let mut this = Self {
            size,
            free: vec![BTreeSet::new(); MAX_ORDER as usize + 1],
            allocated: BTreeMap::new(),
            free_bytes: 0,
        };
        // Carve [0, size) into maximal blocks aligned to their size.
        let mut offset = 0;
        while offset < size {
            let mut order = MAX_ORDER;
            while block_size(order) > size - offset || offset % block_size(order) != 0 {
                order -= 1;
            }
            this.insert_free(VramBlock { offset, order });
            offset += block_size(order);
        }
        this
    }

    /// Managed bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    fn insert_free(&mut self, block: VramBlock) {
        self.free[block.order as usize].insert(block.offset);
        self.free_bytes += block.size();
    }

    fn largest_free_order(&self) -> Option<u8> {
        (0..=MAX_ORDER)
            .rev()
            .find(|o| !self.free[*o as usize].is_empty())
    }

    /// Takes one free block of exactly `order`, splitting a larger one if needed.
    fn take_block(&mut self, order: u8) -> Option<VramBlock> {
        let from = (order..=MAX_ORDER).find(|o| !self.free[*o as usize].is_empty())?;
        let offset = self.free[from as usize].pop_first()?;
        self.free_bytes -= block_size(from);
        // Split down, returning the upper halves to the free lists.
        let mut current = from;
        while current > order {
            current -= 1;
            self.insert_free(VramBlock {
                offset: offset + block_size(current),
                order: current,
            });
        }
        self.allocated.insert(offset, order);
        Some(VramBlock { offset, order })
    }

    /// Allocates per `req`. All or nothing: on error nothing stays allocated.
    pub fn alloc(&mut self, req: AllocRequest) -> Result<Vec<VramBlock>, VramError> {
        let invalid = VramError::InvalidRequest {
            size: req.size,
            min_block: req.min_block,
        };
        if req.size == 0 || !req.min_block.is_power_of_two() || req.min_block < block_size(0) {
            return Err(invalid);
        }
        let min_order = order_for(req.min_block).ok_or(invalid.clone())?;
        let size = req
            .size
            .checked_next_multiple_of(req.min_block)
            .ok_or(invalid)?;
        let result = if req.contiguous {
            self.alloc_contiguous(size, min_order)
        } else {
            self.alloc_scattered(size, min_order)
        };
        result.ok_or_else(|| VramError::NoSpace {
            requested: req.size,
            free: self.free_bytes,
            largest: self.largest_free_order().map_or(0, block_size),
        })
    }

    /// One block of the next power of two, with the unused tail trimmed back to the free
    /// lists. The kept blocks are adjacent and in address order.
    fn alloc_contiguous(&mut self, size: u64, min_order: u8) -> Option<Vec<VramBlock>> {
        let order = order_for(size)?.max(min_order);
        let block = self.take_block(order)?;
        self.allocated.remove(&block.offset);
        let mut kept = Vec::new();
        let (mut offset, mut order, mut want) = (block.offset, block.order, size);
        loop {
            if want == block_size(order) {
                kept.push(VramBlock { offset, order });
                break;
            }
            // `want < block_size(order)` and `want >= min_block`, so `order > min_order ≥ 0`.
            let half = order - 1;
            if want <= block_size(half) {
                self.insert_free(VramBlock {
                    offset: offset + block_size(half),
                    order: half,
                });
            } else {
                kept.push(VramBlock {
                    offset,
                    order: half,
                });
                offset += block_size(half);
                want -= block_size(half);
            }
            order = half;
        }
        for b in &kept {
            self.allocated.insert(b.offset, b.order);
        }
        Some(kept)
    }

    /// Greedy largest-first so big requests get big blocks (and so large GPU pages).
    fn alloc_scattered(&mut self, size: u64, min_order: u8) -> Option<Vec<VramBlock>> {
        if size > self.free_bytes {
            return None;
        }
        let mut blocks = Vec::new();
        let mut remaining = size;
        while remaining > 0 {
            let fit = order_for(remaining)?;
            // The largest order ≤ what is still needed that has a free block of that order or
            // larger; a block larger than `remaining` is only used when it is the smallest.
            let want = (min_order..=fit)
                .rev()
                .find(|o| block_size(*o) <= remaining || *o == min_order)
                .unwrap_or(min_order);
            let got = (min_order..=want).rev().find_map(|o| self.take_block(o));
            match got {
                Some(b) => {
                    remaining = remaining.saturating_sub(b.size());
                    blocks.push(b);
                }
                None => {
                    for b in blocks {
                        self.release(b);
                    }
                    return None;
                }
            }
        }
        Some(blocks)
    }

    /// Frees blocks returned by [`alloc`](Self::alloc), merging buddies. Validates every block
    /// first, so a bad list frees nothing.
    pub fn free(&mut self, blocks: &[VramBlock]) -> Result<(), VramError> {
        let mut seen = BTreeSet::new();
        for b in blocks {
            if self.allocated.get(&b.offset) != Some(&b.order) || !seen.insert(b.offset) {
                return Err(VramError::NotAllocated {
                    offset: b.offset,
                    order: b.order,
                });
            }
        }
        for b in blocks {
            self.release(*b);
        }
        Ok(())
    }

    fn release(&mut self, block: VramBlock) {
        self.allocated.remove(&block.offset);
        let VramBlock {
            mut offset,
            mut order,
        } = block;
        while order < MAX_ORDER {
            let buddy = offset ^ block_size(order);
            // A buddy beyond the end of VRAM does not exist (non-power-of-two sizes).
            if buddy + block_size(order) > self.size || !self.free[order as usize].remove(&buddy) {
                break;
            }
            self.free_bytes -= block_size(order);
            offset = offset.min(buddy);
            order += 1;
        }
        self.insert_free(VramBlock { offset, order });
    }

    /// Free-space statistics.
    pub fn stats(&self) -> VramStats {
        VramStats {
            size: self.size,
            free: self.free_bytes,
            largest_free_block: self.largest_free_order().map_or(0, block_size),
            free_blocks_per_order: self.free.iter().map(|s| s.len() as u64).collect(),
        }
    }

    /// Checks the module invariants; returns a description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut ranges: Vec<(u64, u64, bool)> = Vec::new();
        let mut free_sum = 0;
        for (order, set) in self.free.iter().enumerate() {
            let order = order as u8;
            for &off in set {
                let b = VramBlock { offset: off, order };
                if off % b.size() != 0 || b.end() > self.size {
                    return Err(format!("free block {b:?} misaligned or out of range"));
                }
                let buddy = off ^ b.size();
                if buddy + b.size() <= self.size && set.contains(&buddy) && order < MAX_ORDER {
                    return Err(format!("free buddies {off:#x} and {buddy:#x} not merged"));
                }
                free_sum += b.size();
                ranges.push((off, b.end(), true));
            }
        }
        for (&off, &order) in &self.allocated {
            ranges.push((off, VramBlock { offset: off, order }.end(), false));
        }
        if free_sum != self.free_bytes {
            return Err(format!(
                "free_bytes {:#x} != sum {free_sum:#x}",
                self.free_bytes
            ));
        }
        ranges.sort_unstable();
        let mut cursor = 0;
        for (start, end, _) in ranges {
            if start != cursor {
                return Err(format!(
                    "gap or overlap at {cursor:#x} (next block at {start:#x})"
                ));
            }
            cursor = end;
        }
        if cursor != self.size {
            return Err(format!(
                "blocks end at {cursor:#x}, VRAM at {:#x}",
                self.size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "vram_tests.rs"]
mod tests;
