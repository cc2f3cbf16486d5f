//! SVM ranges and notifiers as drm_gpusvm defines them: the GPU's view of a mirrored CPU
//! address space is cut into *ranges*, created on GPU fault, grouped under fixed-size
//! *notifiers*.
//!
//! Owns: [`SvmRanges`] (notifiers of [`NOTIFIER_SIZE`] bytes, each a tree of
//! [`SvmRange`]s), the chunk policy ([`SvmRanges::candidates`]: the largest of
//! [`CHUNK_SIZES`] that fits the fault address's CPU mapping, the mirror, the notifier and
//! does not overlap a neighbouring range), invalidation (a range an address-space change
//! touches loses its pages and is marked *unmapped*; it is never split) and the garbage
//! collector's list of unmapped ranges.
//!
//! Must not: know page tables, locks or the memory manager. It is plain data: the VM keeps
//! it under its notifier lock (`bind::userptr::Notifier`), zaps the GPU ranges an
//! invalidation returns and resolves pages through `svm::mm` (see `bind/mirror.rs`).
//! `P` is what a GPU-mapped range holds (the pinned pages; `()` in tests).

use std::collections::BTreeMap;

/// Bytes one notifier covers (Xe's default): `[ALIGN_DOWN(addr, N), +N)`.
pub const NOTIFIER_SIZE: u64 = 512 << 20;
/// Range sizes, largest first (Xe's: 2 MiB, 64 KiB, 4 KiB). 4 KiB always fits.
pub const CHUNK_SIZES: [u64; 3] = [2 << 20, 64 << 10, 4 << 10];

/// One SVM range: `[start, start + len)`, aligned to its size (one of [`CHUNK_SIZES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvmRange<P> {
    pub start: u64,
    pub len: u64,
    /// The pages while the range is GPU-mapped (its PTEs written); `None` otherwise.
    /// INVARIANT: `None` ⇒ no PTE of this VM maps the range (an invalidation takes the
    /// pages and zaps the PTEs under the same notifier lock).
    pub pages: Option<P>,
    /// An address-space change touched the range: it waits for the garbage collector and
    /// is never used again (a partial unmap destroys the whole range).
    pub unmapped: bool,
}

impl<P> SvmRange<P> {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end()
    }
}

/// A range an invalidation took from the GPU: zap `[start, start + len)`, then release
/// `pages`.
#[derive(Debug)]
pub struct Invalidated<P> {
    pub start: u64,
    pub len: u64,
    pub pages: P,
}

/// The SVM state of one VM: notifiers (by start) and their ranges (by start).
#[derive(Debug)]
pub struct SvmRanges<P> {
    notifiers: BTreeMap<u64, BTreeMap<u64, SvmRange<P>>>,
    /// Starts of ranges marked unmapped, for the garbage collector.
    garbage: Vec<u64>,
}

impl<P> Default for SvmRanges<P> {
    fn default() -> Self {
        Self {
            notifiers: BTreeMap::new(),
            garbage: Vec::new(),
        }
    }
}

/// The notifier covering `addr`.
pub fn notifier_of(addr: u64) -> u64 {
    addr & !(NOTIFIER_SIZE - 1)
}

impl<P> SvmRanges<P> {
    /// The range containing `addr`, if any (unmapped ones included).
    pub fn find(&self, addr: u64) -> Option<&SvmRange<P>> {
        let ranges = self.notifiers.get(&notifier_of(addr))?;
        ranges
            .range(..=addr)
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| addr < r.end())
    }

    /// Whether any range overlaps `[start, end)` (within one notifier).
    fn any_overlap(&self, start: u64, end: u64) -> bool {
        let Some(ranges) = self.notifiers.get(&notifier_of(start)) else {
            return false;
        };
        ranges
            .range(..end)
            .next_back()
            .is_some_and(|(_, r)| r.overlaps(start, end))
    }

    /// The chunks a range for a fault at `addr` may take, largest first: `[ALIGN_DOWN(addr,
    /// c), +c)` for each of [`CHUNK_SIZES`] that lies inside `cpu` (the CPU mapping, as far
    /// as known), `mirror` (the GPU mirror mapping) and the notifier, and — larger than 4
    /// KiB — overlaps no existing range. Empty if `addr` lies in an existing range or no
    /// chunk fits. Bounds are `[start, end)`.
    pub fn candidates(&self, addr: u64, cpu: (u64, u64), mirror: (u64, u64)) -> Vec<(u64, u64)> {
        if self.find(addr).is_some() {
            return Vec::new();
        }
        let n = notifier_of(addr);
        let n_end = n.saturating_add(NOTIFIER_SIZE);
        let mut out = Vec::new();
        for c in CHUNK_SIZES {
            let start = addr & !(c - 1);
            let Some(end) = start.checked_add(c) else {
                continue;
            };
            let inside = |(s, e): (u64, u64)| s <= start && end <= e;
            if !inside(cpu) || !inside(mirror) || !inside((n, n_end)) {
                continue;
            }
            if c > CHUNK_SIZES[CHUNK_SIZES.len() - 1] && self.any_overlap(start, end) {
                continue;
            }
            out.push((start, c));
        }
        out
    }

    /// Inserts a range `[start, start + len)` holding `pages` (the caller chose it from
    /// [`SvmRanges::candidates`]; an overlapping one is refused and `pages` given back).
    pub fn insert(&mut self, start: u64, len: u64, pages: Option<P>) -> Result<(), Option<P>> {
        let end = start.checked_add(len).ok_or(None::<P>);
        let Ok(end) = end else {
            return Err(pages);
        };
        if len == 0 || notifier_of(start) != notifier_of(end - 1) || self.any_overlap(start, end) {
            return Err(pages);
        }
        self.notifiers
            .entry(notifier_of(start))
            .or_default()
            .insert(
                start,
                SvmRange {
                    start,
                    len,
                    pages,
                    unmapped: false,
                },
            );
        Ok(())
    }

    /// The range starting at `start`.
    pub fn get_mut(&mut self, start: u64) -> Option<&mut SvmRange<P>> {
        self.notifiers.get_mut(&notifier_of(start))?.get_mut(&start)
    }

    /// Removes the range starting at `start` (its notifier goes when it empties).
    pub fn remove(&mut self, start: u64) -> Option<SvmRange<P>> {
        let n = notifier_of(start);
        let ranges = self.notifiers.get_mut(&n)?;
        let r = ranges.remove(&start);
        if ranges.is_empty() {
            self.notifiers.remove(&n);
        }
        r
    }

    /// Ranges overlapping `[start, end)`, by start.
    fn overlapping(&self, start: u64, end: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let first = notifier_of(start);
        for (_, ranges) in self.notifiers.range(first..end) {
            // A range starting before `start` may reach into it.
            let from = ranges.range(..start).next_back().map_or(start, |(s, _)| *s);
            out.extend(
                ranges
                    .range(from..end)
                    .filter(|(_, r)| r.overlaps(start, end))
                    .map(|(s, _)| *s),
            );
        }
        out
    }

    /// An address-space change touched `[start, end)`: every overlapping range — whole,
    /// even if only partly touched — loses its pages (returned: the caller zaps their GPU
    /// ranges, then releases them) and is marked unmapped for the garbage collector.
    pub fn invalidate(&mut self, start: u64, end: u64) -> Vec<Invalidated<P>> {
        let out = self.take_gpu(start, end);
        for s in self.overlapping(start, end) {
            if let Some(r) = self.get_mut(s).filter(|r| !r.unmapped) {
                r.unmapped = true;
                self.garbage.push(s);
            }
        }
        out
    }

    /// The ranges overlapping `[start, end)` lose their GPU mapping (returned: the caller
    /// zaps them, then releases the pages) but stay, not marked unmapped: the CPU side did
    /// not change, the memory behind them moves (SVM migration and eviction). The next GPU
    /// fault maps them again.
    pub fn take_gpu(&mut self, start: u64, end: u64) -> Vec<Invalidated<P>> {
        let mut out = Vec::new();
        for s in self.overlapping(start, end) {
            let Some(r) = self.get_mut(s) else {
                continue;
            };
            if let Some(pages) = r.pages.take() {
                out.push(Invalidated {
                    start: r.start,
                    len: r.len,
                    pages,
                });
            }
        }
        out
    }

    /// The garbage collector: removes every range marked unmapped. Returns how many went.
    pub fn collect_garbage(&mut self) -> usize {
        let mut n = 0;
        for s in std::mem::take(&mut self.garbage) {
            if self.get_mut(s).is_some_and(|r| r.unmapped) {
                self.remove(s);
                n += 1;
            }
        }
        n
    }

    /// Ranges waiting for the garbage collector.
    pub fn garbage(&self) -> usize {
        self.garbage.len()
    }

    /// Whether a GPU-mapped range overlaps `[start, end)` (the EBUSY rule of a mirror
    /// UNMAP).
    pub fn has_mapping(&self, start: u64, end: u64) -> bool {
        self.overlapping(start, end)
            .into_iter()
            .any(|s| self.find(s).is_some_and(|r| r.pages.is_some()))
    }

    /// Removes the ranges overlapping `[start, end)` that are not GPU-mapped (their mirror
    /// is going). Returns how many went.
    pub fn remove_unmapped_in(&mut self, start: u64, end: u64) -> usize {
        let mut n = 0;
        for s in self.overlapping(start, end) {
            if self.find(s).is_some_and(|r| r.pages.is_none()) {
                self.remove(s);
                n += 1;
            }
        }
        n
    }

    /// Takes every range's pages and forgets every range (the VM's tree is being emptied).
    pub fn take_all(&mut self) -> Vec<P> {
        self.garbage.clear();
        std::mem::take(&mut self.notifiers)
            .into_values()
            .flat_map(BTreeMap::into_values)
            .filter_map(|r| r.pages)
            .collect()
    }

    /// Every range, in address order.
    pub fn iter(&self) -> impl Iterator<Item = &SvmRange<P>> {
        self.notifiers.values().flat_map(BTreeMap::values)
    }

    /// How many notifiers exist.
    pub fn notifiers(&self) -> usize {
        self.notifiers.len()
    }

    /// How many ranges exist.
    pub fn len(&self) -> usize {
        self.notifiers.values().map(BTreeMap::len).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.notifiers.is_empty()
    }

    /// Bytes of GPU-mapped ranges.
    pub fn mapped_bytes(&self) -> u64 {
        self.iter()
            .filter(|r| r.pages.is_some())
            .map(|r| r.len)
            .sum()
    }
}

#[cfg(test)]
#[path = "range_tests.rs"]
mod tests;
