//! The device's system memory: whatever the client mapped for DMA.
//!
//! Owns: the DMA-map table (bus address → shared mapping of the fd QEMU sent). QEMU sends one
//! `DMA_MAP` per guest RAM range (with the RAM's memfd), or, behind a vIOMMU, one per IOVA
//! range the guest's IOMMU maps. Must not: panic on an address nobody mapped — that is the
//! device's DMA error (simgpu turns a [`MemError`] into a context error).

use crate::mapping::Mapping;
use parking_lot::RwLock;
use simgpu::{MemError, PhysMemory};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One mapped range of bus addresses.
#[derive(Debug)]
struct Range {
    len: u64,
    /// `None`: mapped without an fd (ROM/BIOS areas): present, but unreachable for DMA.
    mem: Option<Arc<Mapping>>,
}

/// The bus-address space the device reaches by DMA.
#[derive(Debug, Default)]
pub struct GuestMemory {
    ranges: RwLock<BTreeMap<u64, Range>>,
}

/// Why a DMA map or unmap was refused.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    /// Empty, wrapping, or overlapping a mapped range.
    #[error("DMA range {addr:#x}+{len:#x} is empty, wraps or overlaps a mapped range")]
    Overlap {
        /// Bus address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// Nothing is mapped exactly there.
    #[error("no DMA mapping at {addr:#x}+{len:#x}")]
    NotMapped {
        /// Bus address.
        addr: u64,
        /// Length.
        len: u64,
    },
}

impl GuestMemory {
    /// Adds `[addr, addr + len)`, backed by `mem` (a mapping of exactly `len` bytes) or by
    /// nothing.
    pub fn map(&self, addr: u64, len: u64, mem: Option<Mapping>) -> Result<(), MapError> {
        let err = MapError::Overlap { addr, len };
        let end = addr.checked_add(len).filter(|_| len > 0).ok_or(err)?;
        let mut ranges = self.ranges.write();
        let before = ranges.range(..end).next_back();
        if before.is_some_and(|(&a, r)| a + r.len > addr) {
            return Err(err);
        }
        ranges.insert(
            addr,
            Range {
                len,
                mem: mem.map(Arc::new),
            },
        );
        Ok(())
    }

    /// Removes every mapping inside `[addr, addr + len)`. The spec allows one unmap to cover
    /// several maps; a range that only partly overlaps is refused and nothing changes.
    pub fn unmap(&self, addr: u64, len: u64) -> Result<usize, MapError> {
        let err = MapError::NotMapped { addr, len };
        let end = addr.checked_add(len).ok_or(err)?;
        let mut ranges = self.ranges.write();
        let inside: Vec<u64> = ranges
            .range(..end)
            .filter(|(&a, r)| a + r.len > addr)
            .map(|(&a, _)| a)
            .collect();
        if inside.is_empty() || inside.iter().any(|&a| a < addr || a + ranges[&a].len > end) {
            return Err(err);
        }
        for a in &inside {
            ranges.remove(a);
        }
        // A mapping an access still holds stays alive until that access ends (`Arc`).
        Ok(inside.len())
    }

    /// Drops every mapping (device reset or client gone).
    pub fn clear(&self) {
        self.ranges.write().clear();
    }

    /// Mapped ranges as `(bus address, length, has memory)`.
    pub fn ranges(&self) -> Vec<(u64, u64, bool)> {
        let ranges = self.ranges.read();
        ranges
            .iter()
            .map(|(&a, r)| (a, r.len, r.mem.is_some()))
            .collect()
    }

    /// The mapping holding all of `[addr, addr + len)` and the offset of `addr` in it.
    fn find(&self, addr: u64, len: u64) -> Result<(Arc<Mapping>, u64), MemError> {
        let out = MemError::OutOfRange {
            addr,
            len,
            size: self.size(),
        };
        let end = addr.checked_add(len).ok_or(out)?;
        let ranges = self.ranges.read();
        let (&start, range) = ranges.range(..=addr).next_back().ok_or(out)?;
        if end > start + range.len {
            return Err(out);
        }
        let mem = range.mem.clone().ok_or(out)?;
        Ok((mem, addr - start))
    }
}

impl PhysMemory for GuestMemory {
    /// The end of the highest mapped range.
    fn size(&self) -> u64 {
        let ranges = self.ranges.read();
        ranges.iter().next_back().map_or(0, |(&a, r)| a + r.len)
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let (m, off) = self.find(addr, buf.len() as u64)?;
        m.read(off, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let (m, off) = self.find(addr, data.len() as u64)?;
        m.write(off, data)
    }
    fn load_u32(&self, addr: u64) -> Result<u32, MemError> {
        let (m, off) = self.find(addr, 4)?;
        m.load_u32(off)
    }
    fn store_u32(&self, addr: u64, value: u32) -> Result<(), MemError> {
        let (m, off) = self.find(addr, 4)?;
        m.store_u32(off, value)
    }
    fn load_u64(&self, addr: u64) -> Result<u64, MemError> {
        let (m, off) = self.find(addr, 8)?;
        m.load_u64(off)
    }
    fn store_u64(&self, addr: u64, value: u64) -> Result<(), MemError> {
        let (m, off) = self.find(addr, 8)?;
        m.store_u64(off, value)
    }
    fn fetch_add_u32(&self, addr: u64, value: u32) -> Result<u32, MemError> {
        let (m, off) = self.find(addr, 4)?;
        m.fetch_add_u32(off, value)
    }
    fn fetch_add_u64(&self, addr: u64, value: u64) -> Result<u64, MemError> {
        let (m, off) = self.find(addr, 8)?;
        m.fetch_add_u64(off, value)
    }
    fn compare_exchange_u32(
        &self,
        addr: u64,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, MemError> {
        let (m, off) = self.find(addr, 4)?;
        m.compare_exchange_u32(off, current, new)
    }
    fn compare_exchange_u64(
        &self,
        addr: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError> {
        let (m, off) = self.find(addr, 8)?;
        m.compare_exchange_u64(off, current, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::memfd;

    fn backed(len: u64) -> Mapping {
        let fd = memfd("t", len).expect("memfd");
        Mapping::new(&fd, 0, len).expect("map")
    }

    #[test]
    fn accesses_go_to_the_range_that_holds_them() {
        let g = GuestMemory::default();
        g.map(0x10_000, 0x2000, Some(backed(0x2000))).unwrap();
        g.map(0x40_000, 0x1000, Some(backed(0x1000))).unwrap();
        g.store_u32(0x10_ffc, 7).unwrap();
        g.store_u64(0x40_ff8, 9).unwrap();
        assert_eq!(g.load_u32(0x10_ffc), Ok(7));
        assert_eq!(g.load_u64(0x40_ff8), Ok(9));
        assert_eq!(g.size(), 0x41_000);
        // Past the end of a range, across two ranges, in a hole: DMA errors.
        assert!(g.load_u32(0x12_000).is_err());
        assert!(g.read(0x11_ff0, &mut [0; 0x40]).is_err());
        assert!(g.load_u32(0x20_000).is_err());
        assert!(g.load_u32(0x0).is_err());
    }

    #[test]
    fn ranges_without_memory_are_present_but_unreachable() {
        let g = GuestMemory::default();
        g.map(0xc0_000, 0x1000, None).unwrap();
        assert!(g.load_u32(0xc0_000).is_err());
        assert_eq!(g.ranges(), vec![(0xc0_000, 0x1000, false)]);
    }

    #[test]
    fn overlapping_maps_and_partial_unmaps_are_refused() {
        let g = GuestMemory::default();
        g.map(0x10_000, 0x2000, None).unwrap();
        for (a, l) in [
            (0xf_000, 0x2000),
            (0x11_000, 0x1000),
            (0x11_fff, 1),
            (0x10_000, 0),
        ] {
            assert!(g.map(a, l, None).is_err(), "{a:#x}+{l:#x}");
        }
        assert!(g.map(u64::MAX, 2, None).is_err());
        g.map(0x12_000, 0x1000, None).unwrap();
        g.map(0xf_000, 0x1000, None).unwrap();
        // Cutting a mapping in two is refused; nothing changes.
        assert!(g.unmap(0x10_000, 0x1000).is_err());
        assert!(g.unmap(0x20_000, 0x1000).is_err());
        assert_eq!(g.ranges().len(), 3);
        // One unmap may cover several mappings.
        assert_eq!(g.unmap(0x10_000, 0x3000), Ok(2));
        assert_eq!(g.ranges(), vec![(0xf_000, 0x1000, false)]);
        g.clear();
        assert!(g.ranges().is_empty());
    }
}
