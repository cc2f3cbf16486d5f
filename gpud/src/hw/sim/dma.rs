//! DMA memory: a page allocator over a physical-memory object the device also reaches.
//!
//! Owns: [`PageAllocator`] (first-fit over free extents, coalescing on free) and
//! [`HeapDma`], the [`DmaMemory`] implementation that allocates from it and reaches memory
//! through `simgpu::PhysMemory`'s atomic accessors. The memory may be several chunks, each at
//! its own physical base (contiguous chunks the platform handed over, e.g. from Redox's
//! memory scheme): regions then carry real physical addresses, because the device puts those
//! on the bus. Must not: hand out references into memory the device can write.

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

/// One physically contiguous piece of DMA memory.
struct Segment {
    /// Physical address of `mem`'s first byte.
    base: u64,
    /// One past its last byte.
    end: u64,
    mem: Arc<dyn PhysMemory>,
}

/// DMA memory: pages of one or more physical-memory objects, each seen by the device at its
/// own physical base. Allocations never span two segments (they may not be contiguous).
/// Physical page 0 is never handed out, so that a zero address never names a live allocation.
pub struct HeapDma {
    /// Sorted by base, non-overlapping.
    segs: Vec<Segment>,
    /// One allocator per segment, same order.
    pages: Mutex<Vec<PageAllocator>>,
}

impl HeapDma {
    /// Manages all of `mem`, which the device sees at physical 0, except its first page.
    pub fn new(mem: Arc<dyn PhysMemory>) -> Self {
        Self::with_base(mem, PhysAddr(0))
    }

    /// Manages all of `mem`, which the device sees at physical `base` (pages start at the
    /// first page boundary at or above it). Regions carry physical addresses.
    pub fn with_base(mem: Arc<dyn PhysMemory>, base: PhysAddr) -> Self {
        let seg = Self::segment(mem, base);
        let pages = Self::allocator(&seg);
        Self {
            segs: vec![seg],
            pages: Mutex::new(vec![pages]),
        }
    }

    /// Manages several chunks, each `(memory, physical base)`; `None` if two overlap.
    pub fn with_segments(chunks: Vec<(Arc<dyn PhysMemory>, PhysAddr)>) -> Option<Self> {
        let mut segs: Vec<Segment> = chunks
            .into_iter()
            .map(|(mem, base)| Self::segment(mem, base))
            .collect();
        segs.sort_by_key(|s| s.base);
        let overlap = |w: &[Segment]| matches!(w, [a, b] if a.end > b.base);
        if segs.windows(2).any(overlap) {
            return None;
        }
        let pages = segs.iter().map(Self::allocator).collect();
        Some(Self {
            segs,
            pages: Mutex::new(pages),
        })
    }

    fn segment(mem: Arc<dyn PhysMemory>, base: PhysAddr) -> Segment {
        let end = base.get().saturating_add(mem.size());
        Segment {
            base: base.get(),
            end,
            mem,
        }
    }

    fn allocator(seg: &Segment) -> PageAllocator {
        let first = seg.base.div_ceil(PAGE_SIZE);
        let count = (seg.end / PAGE_SIZE).saturating_sub(first);
        // Physical page 0 stays unused (only possible when a base is 0).
        if first == 0 {
            PageAllocator::new(1, count.saturating_sub(1))
        } else {
            PageAllocator::new(first, count)
        }
    }

    /// Physical address of the lowest byte managed.
    pub fn base(&self) -> PhysAddr {
        PhysAddr(self.segs.first().map_or(0, |s| s.base))
    }

    /// One past the highest physical address managed.
    pub fn end(&self) -> PhysAddr {
        PhysAddr(self.segs.iter().map(|s| s.end).max().unwrap_or(0))
    }

    /// The index of the segment holding `addr`, if any.
    fn seg_index(&self, addr: u64) -> Option<usize> {
        let i = self
            .segs
            .partition_point(|s| s.base <= addr)
            .checked_sub(1)?;
        self.segs.get(i).filter(|s| addr < s.end).map(|_| i)
    }

    /// The memory and offset of `[addr, addr + len)`, which must lie in one segment.
    fn at(&self, addr: PhysAddr, len: usize) -> Result<(&dyn PhysMemory, u64), HwError> {
        let err = || Self::range_err(addr, len);
        let seg = self.seg_index(addr.get()).and_then(|i| self.segs.get(i));
        let seg = seg.ok_or_else(err)?;
        let end = addr.get().checked_add(len as u64).ok_or_else(err)?;
        if end > seg.end {
            return Err(err());
        }
        Ok((&*seg.mem, addr.get() - seg.base))
    }

    /// Free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.pages
            .lock()
            .iter()
            .map(|p| p.free_pages())
            .sum::<u64>()
            * PAGE_SIZE
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
            let pa = PhysAddr(region.addr.get() + p * PAGE_SIZE);
            let (mem, off) = self.at(pa, zero.len())?;
            mem.write(off, &zero)
                .map_err(|_| Self::range_err(pa, zero.len()))?;
        }
        Ok(region)
    }

    fn alloc_uncleared(&self, bytes: u64) -> Result<DmaRegion, HwError> {
        let count = bytes.div_ceil(PAGE_SIZE).max(1);
        let first = self
            .pages
            .lock()
            .iter_mut()
            .find_map(|p| p.alloc(count))
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
        let seg = self.seg_index(region.addr.get()).ok_or(bad.clone())?;
        let mut pages = self.pages.lock();
        let ok = pages
            .get_mut(seg)
            .is_some_and(|p| p.free(region.addr.get() / PAGE_SIZE, region.len / PAGE_SIZE));
        ok.then_some(()).ok_or(bad)
    }

    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), HwError> {
        let len = buf.len();
        let (mem, off) = self.at(addr, len)?;
        mem.read(off, buf).map_err(|_| Self::range_err(addr, len))
    }

    fn write(&self, addr: PhysAddr, data: &[u8]) -> Result<(), HwError> {
        let (mem, off) = self.at(addr, data.len())?;
        mem.write(off, data)
            .map_err(|_| Self::range_err(addr, data.len()))
    }

    fn read_u32(&self, addr: PhysAddr) -> Result<u32, HwError> {
        let (mem, off) = self.at(addr, 4)?;
        mem.load_u32(off).map_err(|_| Self::range_err(addr, 4))
    }

    fn write_u32(&self, addr: PhysAddr, value: u32) -> Result<(), HwError> {
        let (mem, off) = self.at(addr, 4)?;
        mem.store_u32(off, value)
            .map_err(|_| Self::range_err(addr, 4))
    }

    fn read_u64(&self, addr: PhysAddr) -> Result<u64, HwError> {
        let (mem, off) = self.at(addr, 8)?;
        mem.load_u64(off).map_err(|_| Self::range_err(addr, 8))
    }

    fn write_u64(&self, addr: PhysAddr, value: u64) -> Result<(), HwError> {
        let (mem, off) = self.at(addr, 8)?;
        mem.store_u64(off, value)
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

    #[test]
    fn heap_dma_at_a_physical_base_hands_out_physical_addresses() {
        let mem = Arc::new(HeapMemory::new(4 * PAGE_SIZE));
        let base = PhysAddr(0x1234_5000);
        let dma = HeapDma::with_base(mem.clone(), base);
        assert_eq!((dma.base(), dma.end()), (base, PhysAddr(0x1234_9000)));
        assert_eq!(dma.free_bytes(), 4 * PAGE_SIZE, "no page reserved above 0");
        let r = dma.alloc(2 * PAGE_SIZE).unwrap();
        assert_eq!(r.addr, base);
        dma.write_u64(PhysAddr(base.get() + PAGE_SIZE + 8), 0xfeed)
            .unwrap();
        assert_eq!(
            mem.load_u64(PAGE_SIZE + 8).unwrap(),
            0xfeed,
            "offset = pa - base"
        );
        assert_eq!(
            dma.read_u64(PhysAddr(base.get() + PAGE_SIZE + 8)),
            Ok(0xfeed)
        );
        // Below the base and past the end are range errors, never offsets that wrap.
        assert!(matches!(
            dma.read_u32(PhysAddr(base.get() - 4)),
            Err(HwError::DmaRange { .. })
        ));
        assert!(matches!(
            dma.write_u32(dma.end(), 1),
            Err(HwError::DmaRange { .. })
        ));
        assert_eq!(
            dma.free(DmaRegion {
                addr: PhysAddr(PAGE_SIZE),
                len: PAGE_SIZE
            }),
            Err(HwError::BadFree {
                addr: PAGE_SIZE,
                len: PAGE_SIZE
            })
        );
        dma.free(r).unwrap();
        assert_eq!(dma.alloc(4 * PAGE_SIZE).unwrap().addr, base);
    }

    #[test]
    fn heap_dma_rounds_an_unaligned_base_up() {
        let dma = HeapDma::with_base(
            Arc::new(HeapMemory::new(4 * PAGE_SIZE)),
            PhysAddr(PAGE_SIZE + 16),
        );
        assert_eq!(dma.free_bytes(), 3 * PAGE_SIZE);
        assert_eq!(dma.alloc(1).unwrap().addr, PhysAddr(2 * PAGE_SIZE));
    }

    fn chunk(pages: u64) -> Arc<dyn PhysMemory> {
        Arc::new(HeapMemory::new(pages * PAGE_SIZE))
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let a = (chunk(4), PhysAddr(0x10_0000));
        let b = (chunk(4), PhysAddr(0x10_3000));
        assert!(HeapDma::with_segments(vec![a.clone(), b]).is_none());
        let adjacent = (chunk(4), PhysAddr(0x10_4000));
        assert!(HeapDma::with_segments(vec![adjacent, a]).is_some());
    }

    proptest! {
        /// Several segments (some physically adjacent, given in any order): every region lies
        /// inside one segment, live regions never overlap, free space is conserved, and
        /// every region reaches its own memory (a tag written at its start reads back).
        #[test]
        fn segments_never_share_or_split_a_region(
            sizes in prop::collection::vec(1u64..6, 1..4),
            gaps in prop::collection::vec(0u64..3, 4),
            ops in prop::collection::vec(op(), 1..60),
        ) {
            let mut chunks = Vec::new();
            let mut at = 0x4_0000_0000u64;
            for (i, pages) in sizes.iter().enumerate() {
                chunks.push((chunk(*pages), PhysAddr(at)));
                at += (pages + gaps.get(i).copied().unwrap_or(0)) * PAGE_SIZE;
            }
            let bounds: Vec<(u64, u64)> =
                chunks.iter().map(|(m, b)| (b.get(), b.get() + m.size())).collect();
            let total: u64 = sizes.iter().sum::<u64>() * PAGE_SIZE;
            chunks.reverse();
            let dma = HeapDma::with_segments(chunks).unwrap();
            prop_assert_eq!(dma.free_bytes(), total);
            let mut live: Vec<(DmaRegion, u64)> = Vec::new();
            let mut tag = 1u64;
            for op in ops {
                match op {
                    Op::Alloc(n) => {
                        if let Ok(r) = dma.alloc(n * PAGE_SIZE) {
                            let end = r.addr.get() + r.len;
                            prop_assert!(bounds.iter().any(|(b, e)| *b <= r.addr.get() && end <= *e));
                            for (o, _) in &live {
                                prop_assert!(end <= o.addr.get() || o.addr.get() + o.len <= r.addr.get());
                            }
                            dma.write_u64(r.addr, tag).unwrap();
                            live.push((r, tag));
                            tag += 1;
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (r, _) = live.swap_remove(i % live.len());
                        prop_assert!(dma.free(r).is_ok());
                        prop_assert!(dma.free(r).is_err(), "double free refused");
                    }
                    _ => {}
                }
                let used: u64 = live.iter().map(|(r, _)| r.len).sum();
                prop_assert_eq!(dma.free_bytes(), total - used);
            }
            for (r, t) in &live {
                prop_assert_eq!(dma.read_u64(r.addr).unwrap(), *t);
            }
        }
    }
}
