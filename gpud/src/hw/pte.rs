//! The page-table-entry format of simgpu, declared once as data, with an encode/decode API.
//!
//! Owns: the bit layout of a 64-bit PTE/PDE (valid, writable, location, null/sparse, cache
//! mode, leaf, 64K-contiguous hint, physical address), page sizes and the VA index math of
//! the 4-level tables. Must not: allocate or walk page tables; the page-table manager uses
//! this to write entries, and simgpu's walker decodes them with its own independent decoder
//! (a test checks they agree).

use crate::types::{GpuVa, PhysAddr};
use bitfield::bitfield;
use thiserror::Error;

bitfield! {
    /// One raw 64-bit page-table entry.
    #[derive(Clone, Copy, PartialEq, Eq, Default)]
    pub struct Pte(u64);
    impl Debug;
    /// Bit 0: the entry is valid.
    pub valid, set_valid: 0;
    /// Bit 1: writes allowed (leaves only).
    pub writable, set_writable: 1;
    /// Bit 2: the target (page or next table) is in VRAM, else system memory.
    pub vram, set_vram: 2;
    /// Bit 3: null/sparse: reads return zero, writes are dropped.
    pub null, set_null: 3;
    /// Bits 5:4: cache mode ([`CacheMode`]).
    pub u8, cache, set_cache: 5, 4;
    /// Bit 6: leaf at level 1 (2 MiB) or level 2 (1 GiB).
    pub leaf, set_leaf: 6;
    /// Bit 7: one of 16 aligned level-0 entries that map 64 KiB contiguously.
    pub contig_64k, set_contig_64k: 7;
    /// Bits 51:12: physical frame number (address >> 12).
    pub u64, pfn, set_pfn: 51, 12;
}

/// Page-table levels; level 3 is the root.
pub const LEVELS: u32 = 4;
/// Entries per table.
pub const ENTRIES_PER_TABLE: u64 = 512;
/// Bytes per table.
pub const TABLE_SIZE: u64 = ENTRIES_PER_TABLE * 8;
/// Virtual address bits.
pub const VA_BITS: u32 = 48;

/// Where a page or table lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemLocation {
    /// System memory (DMA).
    System,
    /// Device VRAM.
    Vram,
}

/// Cache mode of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum CacheMode {
    /// Write-back (coherent, cached).
    #[default]
    WriteBack = 0,
    /// Uncached.
    Uncached = 1,
    /// Write-combined.
    WriteCombined = 2,
    /// Write-through (reads cached, writes go through).
    WriteThrough = 3,
}

/// The device's PAT table: a bind's `pat_index` selects the cache mode of its PTEs. The
/// layout is Xe's for graphics IP up to 12.60 (0 write-back, 1 write-combined, 2
/// write-through, 3 uncached), so clients built for those parts need no remapping.
pub const PAT_TABLE: [CacheMode; 4] = [
    CacheMode::WriteBack,
    CacheMode::WriteCombined,
    CacheMode::WriteThrough,
    CacheMode::Uncached,
];

impl CacheMode {
    /// The cache mode of PAT entry `index`; `None` past the table (refused, never wrapped).
    pub fn from_pat_index(index: u16) -> Option<Self> {
        PAT_TABLE.get(usize::from(index)).copied()
    }

    /// The PAT index selecting this mode.
    pub fn pat_index(self) -> u16 {
        PAT_TABLE.iter().position(|&m| m == self).unwrap_or(0) as u16
    }
}

/// The page sizes an entry can map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageSize {
    /// 4 KiB, a level-0 entry.
    Size4K,
    /// 64 KiB: 16 level-0 entries with the contiguous hint.
    Size64K,
    /// 2 MiB, a level-1 leaf.
    Size2M,
    /// 1 GiB, a level-2 leaf.
    Size1G,
}

impl PageSize {
    /// Bytes mapped.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 4 << 10,
            PageSize::Size64K => 64 << 10,
            PageSize::Size2M => 2 << 20,
            PageSize::Size1G => 1 << 30,
        }
    }

    /// Level of the table holding the leaf entry.
    pub const fn level(self) -> u32 {
        match self {
            PageSize::Size4K | PageSize::Size64K => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
        }
    }
}

/// Attributes of a leaf mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeafFlags {
    /// Writes allowed.
    pub writable: bool,
    /// Cache mode.
    pub cache: CacheMode,
}

/// An entry that cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PteError {
    /// The physical address is not aligned to the page (or table) size.
    #[error("physical address {addr:#x} not aligned to {align:#x}")]
    Misaligned { addr: u64, align: u64 },
    /// The physical address does not fit in bits 51:12.
    #[error("physical address {addr:#x} beyond 52 bits")]
    TooHigh { addr: u64 },
}

/// A decoded entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PteView {
    /// Valid bit.
    pub valid: bool,
    /// Writable bit.
    pub writable: bool,
    /// Location bit.
    pub location: MemLocation,
    /// Null/sparse bit.
    pub null: bool,
    /// Cache mode (every encoding is one; `Option` kept for views of foreign entries).
    pub cache: Option<CacheMode>,
    /// Leaf bit.
    pub leaf: bool,
    /// 64K contiguous hint.
    pub contig_64k: bool,
    /// Physical address.
    pub addr: PhysAddr,
}

fn set_addr(pte: &mut Pte, addr: PhysAddr, align: u64) -> Result<(), PteError> {
    let a = addr.get();
    if a >> 52 != 0 {
        return Err(PteError::TooHigh { addr: a });
    }
    if !addr.is_aligned(align) {
        return Err(PteError::Misaligned { addr: a, align });
    }
    pte.set_pfn(a >> 12);
    Ok(())
}

impl Pte {
    /// The invalid entry (all zeroes).
    pub const INVALID: Pte = Pte(0);

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// A leaf mapping a page of `size` at `addr`. For [`PageSize::Size64K`] this is the entry
    /// of the first 4K page; use [`Pte::contig_64k_entries`] for all sixteen.
    pub fn leaf_entry(
        size: PageSize,
        addr: PhysAddr,
        location: MemLocation,
        flags: LeafFlags,
    ) -> Result<Pte, PteError> {
        let mut pte = Pte(0);
        set_addr(&mut pte, addr, size.bytes())?;
        pte.set_valid(true);
        pte.set_writable(flags.writable);
        pte.set_vram(location == MemLocation::Vram);
        pte.set_cache(flags.cache as u8);
        pte.set_leaf(size.level() > 0);
        pte.set_contig_64k(size == PageSize::Size64K);
        Ok(pte)
    }

    /// The sixteen level-0 entries of a 64 KiB page at `addr` (64K-aligned).
    pub fn contig_64k_entries(
        addr: PhysAddr,
        location: MemLocation,
        flags: LeafFlags,
    ) -> Result<[Pte; 16], PteError> {
        let first = Pte::leaf_entry(PageSize::Size64K, addr, location, flags)?;
        let mut out = [first; 16];
        for (i, e) in out.iter_mut().enumerate() {
            e.set_pfn(first.pfn() + i as u64);
        }
        Ok(out)
    }

    /// An entry pointing at a next-level table at `addr` (4K-aligned).
    pub fn table_entry(addr: PhysAddr, location: MemLocation) -> Result<Pte, PteError> {
        let mut pte = Pte(0);
        set_addr(&mut pte, addr, 4096)?;
        pte.set_valid(true);
        pte.set_vram(location == MemLocation::Vram);
        Ok(pte)
    }

    /// A null (sparse) entry at `level`: the whole range it covers reads zero, drops writes.
    pub fn null_entry(level: u32) -> Pte {
        let mut pte = Pte(0);
        pte.set_valid(true);
        pte.set_null(true);
        pte.set_leaf(level > 0);
        pte
    }

    /// Decodes every field.
    pub fn view(self) -> PteView {
        PteView {
            valid: self.valid(),
            writable: self.writable(),
            location: if self.vram() {
                MemLocation::Vram
            } else {
                MemLocation::System
            },
            null: self.null(),
            cache: match self.cache() {
                0 => Some(CacheMode::WriteBack),
                1 => Some(CacheMode::Uncached),
                2 => Some(CacheMode::WriteCombined),
                _ => Some(CacheMode::WriteThrough),
            },
            leaf: self.leaf(),
            contig_64k: self.contig_64k(),
            addr: PhysAddr(self.pfn() << 12),
        }
    }
}

/// Index of `va` in a table of `level`.
pub const fn table_index(va: GpuVa, level: u32) -> u64 {
    (va.0 >> (12 + 9 * level)) & (ENTRIES_PER_TABLE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use simgpu::pte as dev;

    fn size() -> impl Strategy<Value = PageSize> {
        prop_oneof![
            Just(PageSize::Size4K),
            Just(PageSize::Size64K),
            Just(PageSize::Size2M),
            Just(PageSize::Size1G)
        ]
    }

    fn cache() -> impl Strategy<Value = CacheMode> {
        prop_oneof![
            Just(CacheMode::WriteBack),
            Just(CacheMode::Uncached),
            Just(CacheMode::WriteCombined),
            Just(CacheMode::WriteThrough)
        ]
    }

    proptest! {
        /// The driver's encoder and the device's decoder agree on every field.
        #[test]
        fn device_decodes_what_the_driver_encodes(size in size(), frame in 0u64..(1 << 20), vram: bool, writable: bool, cache in cache()) {
            let addr = PhysAddr(frame * size.bytes());
            let location = if vram { MemLocation::Vram } else { MemLocation::System };
            let pte = Pte::leaf_entry(size, addr, location, LeafFlags { writable, cache });
            let Ok(pte) = pte else {
                prop_assert!(addr.get() >> 52 != 0);
                return Ok(());
            };
            let d = dev::decode(pte.bits());
            prop_assert!(d.valid);
            prop_assert_eq!(d.writable, writable);
            prop_assert_eq!(d.location == simgpu::Location::Vram, vram);
            prop_assert!(!d.null);
            prop_assert_eq!(d.cache, cache as u8);
            prop_assert_eq!(d.leaf, size.level() > 0);
            prop_assert_eq!(d.contig_64k, size == PageSize::Size64K);
            prop_assert_eq!(d.addr, addr.get());
            prop_assert_eq!(pte.view().addr, addr);
        }

        #[test]
        fn misaligned_leaves_are_rejected(size in size(), addr in any::<u64>()) {
            let r = Pte::leaf_entry(size, PhysAddr(addr), MemLocation::System, LeafFlags::default());
            let ok = addr % size.bytes() == 0 && addr >> 52 == 0;
            prop_assert_eq!(r.is_ok(), ok);
        }
    }

    #[test]
    fn table_and_null_entries_decode_on_the_device() {
        let t = Pte::table_entry(PhysAddr(0x3000), MemLocation::Vram).unwrap();
        let d = dev::decode(t.bits());
        assert!(
            d.valid
                && !d.leaf
                && !d.null
                && d.location == simgpu::Location::Vram
                && d.addr == 0x3000
        );
        let n = dev::decode(Pte::null_entry(1).bits());
        assert!(n.valid && n.null && n.leaf);
        assert_eq!(
            Pte::table_entry(PhysAddr(0x3001), MemLocation::System),
            Err(PteError::Misaligned {
                addr: 0x3001,
                align: 4096
            })
        );
        let c =
            Pte::contig_64k_entries(PhysAddr(0x10000), MemLocation::System, LeafFlags::default())
                .unwrap();
        assert_eq!(c[15].view().addr, PhysAddr(0x1F000));
        assert!(c.iter().all(|e| dev::decode(e.bits()).contig_64k));
        let va = GpuVa((1 << 39) | (1 << 30) | (1 << 21) | (0x100 << 12));
        assert_eq!(table_index(va, 3), 1);
        assert_eq!(table_index(va, 2), 1);
        assert_eq!(table_index(va, 1), 1);
        assert_eq!(table_index(va, 0), 0x100);
    }
}
