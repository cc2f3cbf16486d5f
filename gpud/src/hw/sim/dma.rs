//! DMA memory on the host: a page allocator over a physical-memory object shared with the
//! device model.
//!
//! Owns: [`PageAllocator`] (first-fit over free extents, coalescing on free) and
//! [`HeapDma`], the [`DmaMemory`] implementation that allocates from it and reaches memory
//! through `simgpu::PhysMemory`'s atomic accessors. Must not: hand out references into
//! memory the device can write.

use crate::hw::{DmaMemory, DmaRegion, HwError};
use crate::types::{PhysAddr, PAGE_SIZE};
use parking_lot::Mutex;
use simgpu::PhysMemory;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Free-extent page allocator: `free` maps a first page to a page count; extents never touch.
#[derive(Debug, Clone)]
pub struct PageAllocator {
    free: BTreeMap<u64, u64>,
    first: u64,
    total: u64,
}

impl PageAllocator {
    /// Pages `[first, first + count)` available.
    pub fn new(first: u64, count: u64) -> Self {
        let mut free = BTreeMap::new();
        if count > 0 {
            free.insert(first, count);
        }
        Self {
            free,
            first,
            total: count,
        }
    }

    /// Free pages.
    pub fn free_pages(&self) -> u64 {
        self.free.values().sum()
    }

    /// Pages managed.
    pub fn total_pages(&self) -> u64 {
        self.total
    }

    /// First fit: the first page of `count` contiguous free pages.
    pub fn alloc(&mut self, count: u64) -> Option<u64> {
        if count == 0 {
            return None;
        }
        let (&start, &len) = self.free.iter().find(|(_, &len)| len >= count)?;
        self.free.remove(&start);
        if len > count {
            self.free.insert(start + count, len - count);
        }
        Some(start)
    }

    /// Returns `[first, first + count)`; fails (changing nothing) if any page is already free
    /// or outside the managed range.
    pub fn free(&mut self, first: u64, count: u64) -> bool {
        let Some(end) = first.checked_add(count) else {
            return false;
        };
        if count == 0 || first < self.first || end > self.first + self.total {
            return false;
        }
        let before = self.free.range(..end).next_back().map(|(&s, &l)| (s, l));
        if before.is_some_and(|(s, l)| s + l > first) {
            return false; // overlaps a free extent
        }
        let mut start = first;
        let mut len = count;
        if let Some((s, l)) = before.filter(|(s, l)| s + l == first) {
            self.free.remove(&s);
            start = s;
            len += l;
        }
        if let Some(next) = self.free.remove(&end) {
            len += next;
        }
        self.free.insert(start, len);
        true
    }
}

/// Host DMA memory: pages of a shared physical-memory object, page 0 reserved so that a
/// zero address never names a live allocation.
pub struct HeapDma {
    mem: Arc<dyn PhysMemory>,
    pages: Mutex<PageAllocator>,
}

impl HeapDma {
    /// Manages all of `mem` except its first page.
    pub fn new(mem: Arc<dyn PhysMemory>) -> Self {
        let pages = mem.size() / PAGE_SIZE;
        Self {
            mem,
            pages: Mutex::new(PageAllocator::new(1, pages.saturating_sub(1))),
        }
    }

    /// Free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.pages.lock().free_pages() * PAGE_SIZE
    }

    fn range_err(addr: PhysAddr, len: usize) -> HwError {
        HwError::DmaRange {
            addr: addr.get(),
            len: len as u64,
        }
    }
}

impl DmaMemory for HeapDma {
    fn alloc(&self, bytes: u64) -> Result<DmaRegion, HwError> {
        let region = self.alloc_uncleared(bytes)?;
        let count = region.len / PAGE_SIZE;
        // Zero in page-sized pieces: the device never sees stale data from a previous user.
        let zero = vec![0u8; PAGE_SIZE as usize];
        for p in 0..count {
            let at = region.addr.get() + p * PAGE_SIZE;
            self.mem
                .write(at, &zero)
                .map_err(|_| Self::range_err(PhysAddr(at), zero.len()))?;
        }
        Ok(region)
    }

    fn alloc_uncleared(&self, bytes: u64) -> Result<DmaRegion, HwError> {
        let count = bytes.div_ceil(PAGE_SIZE).max(1);
        let first = self
            .pages
            .lock()
            .alloc(count)
            .ok_or(HwError::OutOfDma { bytes })?;
        Ok(DmaRegion {
            addr: PhysAddr(first * PAGE_SIZE),
            len: count * PAGE_SIZE,
        })
    }

    fn free(&self, region: DmaRegion) -> Result<(), HwError> {
        let bad = HwError::BadFree {
            addr: region.addr.get(),
            len: region.len,
        };
        if !region.addr.is_aligned(PAGE_SIZE) || region.len % PAGE_SIZE != 0 {
            return Err(bad);
        }
        let ok = self
            .pages
            .lock()
            .free(region.addr.get() / PAGE_SIZE, region.len / PAGE_SIZE);
        ok.then_some(()).ok_or(bad)
    }

    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), HwError> {
        let len = buf.len();
        self.mem
            .read(addr.get(), buf)
            .map_err(|_| Self::range_err(addr, len))
    }

    fn write(&self, addr: PhysAddr, data: &[u8]) -> Result<(), HwError> {
        self.mem
            .write(addr.get(), data)
            .map_err(|_| Self::range_err(addr, data.len()))
    }

    fn read_u32(&self, addr: PhysAddr) -> Result<u32, HwError> {
        self.mem
            .load_u32(addr.get())
            .map_err(|_| Self::range_err(addr, 4))
    }

    fn write_u32(&self, addr: PhysAddr, value: u32) -> Result<(), HwError> {
        self.mem
            .store_u32(addr.get(), value)
            .map_err(|_| Self::range_err(addr, 4))
    }

    fn read_u64(&self, addr: PhysAddr) -> Result<u64, HwError> {
        self.mem
            .load_u64(addr.get())
            .map_err(|_| Self::range_err(addr, 8))
    }

    fn write_u64(&self, addr: PhysAddr, value: u64) -> Result<(), HwError> {
        self.mem
            .store_u64(addr.get(), value)
            .map_err(|_| Self::range_err(addr, 8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use simgpu::HeapMemory;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(u64),
        Free(usize),
        FreeBogus(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..9).prop_map(Op::Alloc),
            any::<usize>().prop_map(Op::Free),
            (0u64..70, 1u64..4).prop_map(|(a, b)| Op::FreeBogus(a, b)),
        ]
    }

    proptest! {
        /// Against an oracle set of used pages: allocations are in range, never overlap,
        /// frees of free pages are refused, and free space is conserved.
        #[test]
        fn allocator_matches_page_set_oracle(ops in prop::collection::vec(op(), 1..80)) {
            let mut a = PageAllocator::new(4, 60);
            let mut used: BTreeSet<u64> = BTreeSet::new();
            let mut live: Vec<(u64, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(n) => match a.alloc(n) {
                        Some(first) => {
                            for p in first..first + n {
                                prop_assert!((4..64).contains(&p));
                                prop_assert!(used.insert(p), "page {} handed out twice", p);
                            }
                            live.push((first, n));
                        }
                        None => {
                            // Refusal must be honest: no run of n free pages exists.
                            let free: Vec<u64> = (4..64).filter(|p| !used.contains(p)).collect();
                            let longest = free.chunk_by(|x, y| y == &(x + 1)).map(|c| c.len() as u64).max().unwrap_or(0);
                            prop_assert!(longest < n);
                        }
                    },
                    Op::Free(i) if !live.is_empty() => {
                        let (first, n) = live.swap_remove(i % live.len());
                        prop_assert!(a.free(first, n));
                        for p in first..first + n {
                            used.remove(&p);
                        }
                    }
                    Op::Free(_) => {}
                    Op::FreeBogus(first, n) => {
                        let all_used = (first..first + n).all(|p| used.contains(&p));
                        if !all_used {
                            let any_free_in_range = (first..first + n).any(|p| (4..64).contains(&p) && !used.contains(&p));
                            let outside = first < 4 || first + n > 64;
                            if any_free_in_range || outside {
                                prop_assert!(!a.free(first, n));
                            }
                        }
                    }
                }
                prop_assert_eq!(a.free_pages(), 60 - used.len() as u64);
            }
        }
    }

    #[test]
    fn heap_dma_zeroes_reserves_page_zero_and_checks_frees() {
        let dma = HeapDma::new(Arc::new(HeapMemory::new(16 * PAGE_SIZE)));
        let r = dma.alloc(100).unwrap();
        assert_eq!(
            r,
            DmaRegion {
                addr: PhysAddr(PAGE_SIZE),
                len: PAGE_SIZE
            }
        );
        dma.write_u64(r.addr, 7).unwrap();
        dma.free(r).unwrap();
        assert_eq!(
            dma.free(r),
            Err(HwError::BadFree {
                addr: PAGE_SIZE,
                len: PAGE_SIZE
            })
        );
        let again = dma.alloc(1).unwrap();
        assert_eq!(
            dma.read_u64(again.addr).unwrap(),
            0,
            "reallocated memory is zeroed"
        );
        // `alloc_uncleared` hands out the same pages without the clearing.
        dma.write_u64(again.addr, 9).unwrap();
        dma.free(again).unwrap();
        let raw = dma.alloc_uncleared(1).unwrap();
        assert_eq!((raw, dma.read_u64(raw.addr).unwrap()), (again, 9));
        assert_eq!(
            dma.alloc(15 * PAGE_SIZE),
            Err(HwError::OutOfDma {
                bytes: 15 * PAGE_SIZE
            })
        );
        assert!(matches!(
            dma.read_u32(PhysAddr(16 * PAGE_SIZE)),
            Err(HwError::DmaRange { .. })
        ));
    }
}
