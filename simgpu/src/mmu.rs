//! The MMU: a 4-level page-table walker and a TLB that keeps stale translations.
//!
//! Owns: translation of a context's GPU VA to a physical address (walk, permission checks,
//! TLB fill and lookup, range/full invalidation) and the MMU counters. Must not: decide what a
//! fault does to a queue; it returns a [`MmuFault`] and the engine decides.
//!
//! The TLB is a real cache: once a translation is cached it is used until an invalidation
//! removes it, whatever the page tables say now. A driver that changes a PTE without
//! invalidating keeps seeing the old translation, exactly like silicon.

use crate::freed::FreedPages;
use crate::mem::{Location, MemError, PhysMemory};
use crate::pte::{self, level_shift};
use std::collections::BTreeMap;

/// The two memories the device can reach.
#[derive(Clone, Copy)]
pub struct Memories<'a> {
    /// System memory (DMA).
    pub sys: &'a dyn PhysMemory,
    /// VRAM.
    pub vram: &'a dyn PhysMemory,
}

impl<'a> Memories<'a> {
    /// The memory behind `location`.
    pub fn at(&self, location: Location) -> &'a dyn PhysMemory {
        match location {
            Location::System => self.sys,
            Location::Vram => self.vram,
        }
    }
}

/// How an access uses memory (reported in fault records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Access {
    /// Data read.
    Read = 0,
    /// Data write.
    Write = 1,
    /// Read-modify-write.
    Atomic = 2,
    /// Command fetch from a batch.
    Fetch = 3,
}

impl Access {
    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::Atomic)
    }
}

/// Why a translation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum FaultReason {
    /// No valid entry at some level.
    NotPresent = 0,
    /// A write through a read-only entry.
    ReadOnly = 1,
    /// A malformed entry (leaf at the root, misaligned large page) or a VA beyond 48 bits.
    BadEntry = 2,
    /// Reading a page-table entry went outside memory.
    Dma = 3,
}

/// A failed translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmuFault {
    /// The faulting address.
    pub va: u64,
    /// The access that faulted.
    pub access: Access,
    /// Why.
    pub reason: FaultReason,
}

/// A page-table root: physical address and where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtRoot {
    /// Page-aligned physical address of the level-3 table.
    pub addr: u64,
    /// Memory holding the root table.
    pub location: Location,
}

/// A successful translation of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Physical address of the byte.
    pub phys: u64,
    /// Memory holding it.
    pub location: Location,
    /// Null/sparse page: reads zero, writes dropped.
    pub null: bool,
    /// Cache mode of the leaf (PTE bits 5:4, see [`crate::pte::CACHE_SHIFT`]).
    pub cache: u8,
    /// Bytes from `phys` to the end of the page.
    pub remaining: u64,
    /// The freed-page epoch the translation was cached at (see [`crate::freed`]).
    pub cached_at: u64,
}

/// A cached leaf translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TlbEntry {
    phys_base: u64,
    location: Location,
    writable: bool,
    null: bool,
    cache: u8,
    /// The freed-page epoch at the fill.
    filled: u64,
}

/// Page sizes the TLB can hold, as log2 (4K, 64K, 2M, 1G).
const SIZES: [u32; 4] = [12, 16, 21, 30];

/// MMU statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MmuCounters {
    /// Entries read by the walker.
    pub pte_reads: u64,
    /// Lookups served by the TLB.
    pub tlb_hits: u64,
    /// Lookups that walked.
    pub tlb_misses: u64,
}

/// The TLB and the walker.
pub struct Mmu {
    /// Key: (context, page base VA, size log2).
    tlb: BTreeMap<(u16, u64, u32), TlbEntry>,
    capacity: usize,
    /// Statistics.
    pub counters: MmuCounters,
    /// Freed-page tracking (off unless a driver or test turns it on).
    pub freed: FreedPages,
}

impl Mmu {
    /// An empty TLB holding at most `capacity` translations.
    pub fn new(capacity: usize) -> Self {
        Self {
            tlb: BTreeMap::new(),
            capacity: capacity.max(1),
            counters: MmuCounters::default(),
            freed: FreedPages::default(),
        }
    }

    /// Number of cached translations.
    pub fn tlb_len(&self) -> usize {
        self.tlb.len()
    }

    /// Translates `va` of context `ctx` for `access`, using the TLB or walking `root`.
    pub fn translate(
        &mut self,
        mems: Memories<'_>,
        ctx: u16,
        root: PtRoot,
        va: u64,
        access: Access,
    ) -> Result<Translation, MmuFault> {
        let fault = |reason| MmuFault { va, access, reason };
        if va >> pte::VA_BITS != 0 {
            return Err(fault(FaultReason::BadEntry));
        }
        let hit = SIZES.iter().find_map(|&shift| {
            let base = va & !((1u64 << shift) - 1);
            self.tlb.get(&(ctx, base, shift)).map(|e| (*e, shift))
        });
        let (entry, shift) = match hit {
            Some(found) => {
                self.counters.tlb_hits += 1;
                found
            }
            None => {
                self.counters.tlb_misses += 1;
                let (entry, shift) = self.walk(mems, root, va).map_err(fault)?;
                self.insert(ctx, va, shift, entry);
                (entry, shift)
            }
        };
        if access.writes() && !entry.writable && !entry.null {
            return Err(fault(FaultReason::ReadOnly));
        }
        let offset = va & ((1u64 << shift) - 1);
        Ok(Translation {
            phys: entry.phys_base + offset,
            location: entry.location,
            null: entry.null,
            cache: entry.cache,
            remaining: (1u64 << shift) - offset,
            cached_at: entry.filled,
        })
    }

    fn insert(&mut self, ctx: u16, va: u64, shift: u32, entry: TlbEntry) {
        if self.tlb.len() >= self.capacity {
            // Evict the lowest key: deterministic, so step and thread modes agree.
            self.tlb.pop_first();
        }
        self.tlb
            .insert((ctx, va & !((1u64 << shift) - 1), shift), entry);
    }

    /// Walks the tables for `va`; returns the leaf and its size (log2).
    fn walk(
        &mut self,
        mems: Memories<'_>,
        root: PtRoot,
        va: u64,
    ) -> Result<(TlbEntry, u32), FaultReason> {
        let mut table = root.addr;
        let mut location = root.location;
        for level in (0..pte::LEVELS).rev() {
            let shift = level_shift(level);
            let index = (va >> shift) & (pte::ENTRIES - 1);
            self.counters.pte_reads += 1;
            let raw = mems
                .at(location)
                .load_u64(table + index * 8)
                .map_err(|_: MemError| FaultReason::Dma)?;
            let e = pte::decode(raw);
            if !e.valid {
                return Err(FaultReason::NotPresent);
            }
            let is_leaf = level == 0 || e.leaf || e.null;
            if !is_leaf {
                table = e.addr;
                location = e.location;
                continue;
            }
            if level == 3 && !e.null {
                return Err(FaultReason::BadEntry);
            }
            let size_shift = if level == 0 && e.contig_64k {
                16
            } else {
                shift
            };
            let phys_base = e.addr & !((1u64 << size_shift) - 1);
            if level > 0 && !e.null && e.addr != phys_base {
                return Err(FaultReason::BadEntry);
            }
            let entry = TlbEntry {
                phys_base,
                location: e.location,
                writable: e.writable,
                null: e.null,
                cache: e.cache,
                filled: self.freed.epoch(),
            };
            // A null entry above level 2 covers more than the largest TLB page: cache the
            // 1 GiB block around the address, so lookups (which try the TLB sizes) find it.
            let cached_shift = if e.null { shift.min(30) } else { size_shift };
            return Ok((entry, cached_shift));
        }
        Err(FaultReason::BadEntry)
    }

    /// Drops every translation of `ctx`.
    pub fn invalidate_all(&mut self, ctx: u16) {
        self.tlb.retain(|&(c, _, _), _| c != ctx);
    }

    /// Drops translations of `ctx` that overlap `[start, start + len)`.
    pub fn invalidate_range(&mut self, ctx: u16, start: u64, len: u64) {
        let end = start.saturating_add(len);
        self.tlb.retain(|&(c, base, shift), _| {
            let page_end = base.saturating_add(1u64 << shift);
            c != ctx || base >= end || page_end <= start
        });
    }

    /// Drops everything (engine/device reset does not do this; used on device reset).
    pub fn clear(&mut self) {
        self.tlb.clear();
    }
}
