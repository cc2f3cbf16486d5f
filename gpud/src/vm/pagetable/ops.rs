//! The page-table manager's request vocabulary: operations, targets, errors, and their
//! validation into the internal form the tree walker consumes.
//!
//! Owns: [`PtOp`], [`MapTarget`], [`PhysSeg`], [`PtError`] and the checks that make a later
//! commit unable to fail (alignment, 48-bit VA bound, backing length, encodable addresses).
//! Must not: touch page tables or allocate table pages.

use super::memory::PtAllocError;
use crate::hw::pte::{LeafFlags, MemLocation, VA_BITS};
use crate::types::{GpuVa, PhysAddr, PAGE_SIZE};
use std::sync::Arc;
use thiserror::Error;

/// One physically contiguous piece of a mapping's backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhysSeg {
    /// Start (4 KiB-aligned).
    pub addr: PhysAddr,
    /// Length in bytes (a multiple of 4 KiB).
    pub len: u64,
}

/// What a mapped range points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapTarget {
    /// Null/sparse: reads return zero, writes are dropped, no fault.
    Null,
    /// Pages: the segments, concatenated, back the range in order.
    Pages {
        /// Memory holding the pages.
        location: MemLocation,
        /// Writable bit and cache mode of every entry.
        flags: LeafFlags,
        /// Backing; total length must equal the op's length.
        segments: Vec<PhysSeg>,
    },
}

/// One page-table operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtOp {
    /// Maps `[va, va + len)` (replacing whatever was there).
    Map {
        /// Start (4 KiB-aligned).
        va: GpuVa,
        /// Length (a multiple of 4 KiB, non-zero).
        len: u64,
        /// Target.
        target: MapTarget,
    },
    /// Unmaps `[va, va + len)`. Never needs memory, so it cannot fail for lack of it.
    Unmap {
        /// Start (4 KiB-aligned).
        va: GpuVa,
        /// Length (a multiple of 4 KiB, non-zero).
        len: u64,
    },
}

/// Why a batch was refused. A refused batch changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PtError {
    /// A VA, length or physical address is not 4 KiB-aligned (or a length is zero).
    #[error("{what} {value:#x} is not a non-zero multiple of 4 KiB")]
    Misaligned { what: &'static str, value: u64 },
    /// The range leaves the 48-bit VA space.
    #[error("range {va:#x}+{len:#x} outside the {VA_BITS}-bit VA space")]
    OutOfRange { va: u64, len: u64 },
    /// The backing segments do not add up to the mapped length.
    #[error("backing of {backing:#x} bytes for a mapping of {len:#x} bytes")]
    BackingLength { len: u64, backing: u64 },
    /// A physical address does not fit in an entry.
    #[error("physical address {addr:#x} beyond 52 bits")]
    PhysTooHigh { addr: u64 },
    /// VRAM has no room for the table pages the batch needs (`pages`: the count reached
    /// when the allocation failed).
    #[error("no VRAM for page-table page {pages} of the batch ({free:#x} bytes free)")]
    NoSpace { pages: u64, free: u64 },
    /// System memory has no room for the table pages the batch needs (`pages`: the count
    /// reached when the allocation failed).
    #[error("no memory for page-table page {pages} of the batch")]
    NoMemory { pages: u64 },
}

impl PtError {
    pub(super) fn from_alloc(e: PtAllocError, pages: u64) -> Self {
        match e {
            PtAllocError::NoSpace { free } => PtError::NoSpace { pages, free },
            PtAllocError::NoMemory => PtError::NoMemory { pages },
        }
    }
}

/// Validated backing: segments merged where physically adjacent, with VA offsets.
#[derive(Debug)]
pub(super) struct Pages {
    pub location: MemLocation,
    pub flags: LeafFlags,
    /// Start VA of the mapping.
    pub va: u64,
    /// `(offset in the mapping, physical address, length)`, sorted by offset.
    pub segs: Vec<(u64, u64, u64)>,
}

impl Pages {
    /// The physical address backing `va` and how many bytes stay contiguous from there.
    pub fn phys_run(&self, va: u64) -> (u64, u64) {
        let off = va.wrapping_sub(self.va);
        let i = self.segs.partition_point(|&(o, _, _)| o <= off);
        match i.checked_sub(1).and_then(|i| self.segs.get(i)) {
            Some(&(o, pa, len)) if off - o < len => (pa + (off - o), len - (off - o)),
            // PANIC-free: validation made the segments cover the whole range; a miss means
            // an address outside the op, which callers never ask for.
            _ => (0, 0),
        }
    }
}

/// The content a range is set to.
#[derive(Debug, Clone)]
pub(super) enum Content {
    Empty,
    Null,
    Pages(Arc<Pages>),
}

/// A validated operation: `[start, end)` gets `content`.
#[derive(Debug, Clone)]
pub(super) struct RangeOp {
    pub start: u64,
    pub end: u64,
    pub content: Content,
}

fn check_page(what: &'static str, value: u64) -> Result<(), PtError> {
    if value % PAGE_SIZE != 0 {
        return Err(PtError::Misaligned { what, value });
    }
    Ok(())
}

pub(super) fn check_range(va: GpuVa, len: u64) -> Result<u64, PtError> {
    check_page("VA", va.get())?;
    check_page("length", len)?;
    if len == 0 {
        return Err(PtError::Misaligned {
            what: "length",
            value: 0,
        });
    }
    let end = va
        .get()
        .checked_add(len)
        .filter(|&e| e <= 1 << VA_BITS)
        .ok_or(PtError::OutOfRange { va: va.get(), len })?;
    Ok(end)
}

fn validate_pages(
    va: u64,
    len: u64,
    location: MemLocation,
    flags: LeafFlags,
    segments: &[PhysSeg],
) -> Result<Pages, PtError> {
    let mut segs: Vec<(u64, u64, u64)> = Vec::with_capacity(segments.len());
    let mut off = 0u64;
    for s in segments {
        check_page("physical address", s.addr.get())?;
        check_page("segment length", s.len)?;
        let end = s.addr.get().checked_add(s.len);
        if end.is_none_or(|e| e > 1 << 52) {
            return Err(PtError::PhysTooHigh { addr: s.addr.get() });
        }
        if s.len == 0 {
            continue;
        }
        match segs.last_mut() {
            Some(last) if last.1 + last.2 == s.addr.get() => last.2 += s.len,
            _ => segs.push((off, s.addr.get(), s.len)),
        }
        off = off.saturating_add(s.len);
    }
    if off != len {
        return Err(PtError::BackingLength { len, backing: off });
    }
    Ok(Pages {
        location,
        flags,
        va,
        segs,
    })
}

/// Validates a batch into range operations.
pub(super) fn validate(ops: &[PtOp]) -> Result<Vec<RangeOp>, PtError> {
    ops.iter()
        .map(|op| match op {
            PtOp::Unmap { va, len } => Ok(RangeOp {
                start: va.get(),
                end: check_range(*va, *len)?,
                content: Content::Empty,
            }),
            PtOp::Map { va, len, target } => {
                let end = check_range(*va, *len)?;
                let content = match target {
                    MapTarget::Null => Content::Null,
                    MapTarget::Pages {
                        location,
                        flags,
                        segments,
                    } => Content::Pages(Arc::new(validate_pages(
                        va.get(),
                        *len,
                        *location,
                        *flags,
                        segments,
                    )?)),
                };
                Ok(RangeOp {
                    start: va.get(),
                    end,
                    content,
                })
            }
        })
        .collect()
}
