//! A minimal page-table writer for the demo and the hardware layer's tests: mappings of any
//! page size in DMA memory, tables allocated on demand, never freed.
//!
//! Owns: nothing lasting; it is a stand-in until the VM layer's page-table manager exists.
//! Must not: be used for client VMs (no splitting or merging, no freeing, no preallocation).

use crate::hw::pte::{self, LeafFlags, MemLocation, PageSize, Pte, PteError};
use crate::hw::{DmaMemory, DmaRegion, HwError, PtRoot};
use crate::types::{GpuVa, PhysAddr, PAGE_SIZE};
use std::sync::Arc;

/// A 4-level page table in system memory.
pub struct SimplePageTable {
    dma: Arc<dyn DmaMemory>,
    root: DmaRegion,
    tables: Vec<DmaRegion>,
}

impl SimplePageTable {
    /// An empty table (a zeroed root).
    pub fn new(dma: Arc<dyn DmaMemory>) -> Result<Self, HwError> {
        let root = dma.alloc(pte::TABLE_SIZE)?;
        Ok(Self {
            dma,
            root,
            tables: Vec::new(),
        })
    }

    /// The root to program into a context.
    pub fn root(&self) -> PtRoot {
        PtRoot {
            addr: self.root.addr,
            location: MemLocation::System,
        }
    }

    /// Page-table pages allocated so far (root included).
    pub fn table_count(&self) -> usize {
        self.tables.len() + 1
    }

    /// The address of the `leaf_level` slot for `va`, allocating tables on the way.
    fn leaf_slot(&mut self, va: GpuVa, leaf_level: u32) -> Result<PhysAddr, HwError> {
        let mut table = self.root.addr;
        for level in (leaf_level + 1..pte::LEVELS).rev() {
            let slot = PhysAddr(table.get() + pte::table_index(va, level) * 8);
            let e = Pte(self.dma.read_u64(slot)?);
            table = if e.valid() {
                e.view().addr
            } else {
                let t = self.dma.alloc(pte::TABLE_SIZE)?;
                self.tables.push(t);
                let entry = Pte::table_entry(t.addr, MemLocation::System)?;
                self.dma.write_u64(slot, entry.bits())?;
                t.addr
            };
        }
        Ok(PhysAddr(table.get() + pte::table_index(va, leaf_level) * 8))
    }

    /// Maps one 4 KiB page (overwriting any previous entry; the caller invalidates the TLB).
    pub fn map_4k(
        &mut self,
        va: GpuVa,
        pa: PhysAddr,
        location: MemLocation,
        flags: LeafFlags,
    ) -> Result<(), HwError> {
        let entry = Pte::leaf_entry(pte::PageSize::Size4K, pa, location, flags)?;
        let slot = self.leaf_slot(va, 0)?;
        self.dma.write_u64(slot, entry.bits())
    }

    /// Maps one page of `size` at `va` (both aligned to the size). The table on the way must
    /// not already hold a smaller mapping there (this writer never splits or merges).
    pub fn map_page(
        &mut self,
        size: PageSize,
        va: GpuVa,
        pa: PhysAddr,
        location: MemLocation,
        flags: LeafFlags,
    ) -> Result<(), HwError> {
        if !va.is_aligned(size.bytes()) {
            return Err(PteError::Misaligned {
                addr: va.get(),
                align: size.bytes(),
            }
            .into());
        }
        let entries: Vec<Pte> = match size {
            PageSize::Size64K => Pte::contig_64k_entries(pa, location, flags)?.to_vec(),
            _ => vec![Pte::leaf_entry(size, pa, location, flags)?],
        };
        for (i, e) in entries.iter().enumerate() {
            let at = GpuVa(va.get() + i as u64 * PAGE_SIZE);
            let slot = self.leaf_slot(at, size.level())?;
            self.dma.write_u64(slot, e.bits())?;
        }
        Ok(())
    }

    /// Maps `len` bytes page by page.
    pub fn map_range(
        &mut self,
        va: GpuVa,
        pa: PhysAddr,
        len: u64,
        location: MemLocation,
        flags: LeafFlags,
    ) -> Result<(), HwError> {
        for off in (0..len).step_by(PAGE_SIZE as usize) {
            self.map_4k(
                GpuVa(va.get() + off),
                PhysAddr(pa.get() + off),
                location,
                flags,
            )?;
        }
        Ok(())
    }

    /// Clears the entry of one page (the caller invalidates the TLB).
    pub fn unmap_4k(&mut self, va: GpuVa) -> Result<(), HwError> {
        let slot = self.leaf_slot(va, 0)?;
        self.dma.write_u64(slot, Pte::INVALID.bits())
    }
}
