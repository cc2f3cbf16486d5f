//! The device's page-table-entry decoder: how the MMU reads a 64-bit PTE.
//!
//! Owns: the PTE bit layout as the hardware interprets it (the manual's table in
//! `docs/simgpu.md`). Must not: encode entries for the driver; the driver declares its own
//! encoder, and a test checks the two agree, as it would against silicon.

use crate::mem::Location;

/// Bit 0: the entry is valid.
pub const VALID: u64 = 1 << 0;
/// Bit 1: writes are allowed.
pub const WRITABLE: u64 = 1 << 1;
/// Bit 2: the address is in VRAM (1) or system memory (0). Applies to tables and pages.
pub const LOCATION_VRAM: u64 = 1 << 2;
/// Bit 3: null/sparse: reads return zero, writes are dropped, no memory is touched.
pub const NULL: u64 = 1 << 3;
/// Bits 5:4: cache mode (0 write-back, 1 uncached, 2 write-combined, 3 write-through). The
/// model keeps memory coherent whatever the mode; the walker reports it in a [`Translation`].
///
/// [`Translation`]: crate::mmu::Translation
pub const CACHE_SHIFT: u32 = 4;
/// Mask of the cache-mode field after shifting.
pub const CACHE_MASK: u64 = 0b11;
/// Bit 6: leaf at level 1 (2 MiB) or level 2 (1 GiB); ignored at level 0, illegal at level 3.
pub const LEAF: u64 = 1 << 6;
/// Bit 7: at level 0, this entry is one of 16 aligned entries mapping 64 KiB contiguously.
pub const CONTIG_64K: u64 = 1 << 7;
/// Bits 51:12: physical address of the page or next-level table.
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Number of page-table levels; level 3 is the root.
pub const LEVELS: u32 = 4;
/// Virtual address bits.
pub const VA_BITS: u32 = 48;
/// Entries per table (9 index bits per level).
pub const ENTRIES: u64 = 512;

/// Log2 of the size a leaf entry at `level` maps (without the 64K hint).
pub const fn level_shift(level: u32) -> u32 {
    12 + 9 * level
}

/// One decoded entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Bit 0.
    pub valid: bool,
    /// Bit 1.
    pub writable: bool,
    /// Bit 2.
    pub location: Location,
    /// Bit 3.
    pub null: bool,
    /// Bits 5:4.
    pub cache: u8,
    /// Bit 6.
    pub leaf: bool,
    /// Bit 7.
    pub contig_64k: bool,
    /// Bits 51:12.
    pub addr: u64,
}

/// Decodes a raw entry.
pub const fn decode(raw: u64) -> Entry {
    Entry {
        valid: raw & VALID != 0,
        writable: raw & WRITABLE != 0,
        location: if raw & LOCATION_VRAM != 0 {
            Location::Vram
        } else {
            Location::System
        },
        null: raw & NULL != 0,
        cache: ((raw >> CACHE_SHIFT) & CACHE_MASK) as u8,
        leaf: raw & LEAF != 0,
        contig_64k: raw & CONTIG_64K != 0,
        addr: raw & ADDR_MASK,
    }
}
