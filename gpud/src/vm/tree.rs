//! The ordered interval structure of one VM's mappings.
//!
//! Owns: [`VaTree`], a `BTreeMap` keyed by mapping start address. Lookups are O(log n) and
//! range walks O(log n + k).
//!
//! INVARIANTS (checked by [`VaTree::check_invariants`], which `GpuVm::check_invariants` and
//! every property test call; O(n), so not on the hot path):
//! - each entry's key equals its mapping's `range().start()`;
//! - mappings do not overlap: for consecutive entries `a`, `b`, `a.end <= b.start`.
//!
//! Because mappings never overlap, the mapping covering an address is the last one starting
//! at or below it, if that one ends above it; this is what makes a plain ordered map enough.
//! For the same reason a range `[a, e)` overlaps something iff the last mapping starting
//! below `e` ends above `a`, so emptiness checks and single-overlap lookups take one search.
//!
//! Must not: plan splits, assign ids, or know about vm_bos (the VM does that around it).

use super::mapping::Mapping;
use super::va::VaRange;
use crate::types::GpuVa;
use std::collections::{btree_map, BTreeMap};
use thiserror::Error;

/// A tree change that would break the non-overlap invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{new} overlaps the existing mapping {existing}")]
pub struct OverlapError {
    /// The range that was to be inserted.
    pub new: VaRange,
    /// The mapping already there.
    pub existing: VaRange,
}

/// Iterator over the mappings overlapping a range ([`VaTree::iter_range`]).
pub struct RangeIter<'a> {
    inner: RangeIterInner<'a>,
}

enum RangeIterInner<'a> {
    /// At most one mapping overlaps: found by the first search, no walk needed.
    One(Option<&'a Mapping>),
    /// Several may overlap: walk the map from the first one.
    Walk(btree_map::Range<'a, GpuVa, Mapping>),
}

impl<'a> Iterator for RangeIter<'a> {
    type Item = &'a Mapping;

    fn next(&mut self) -> Option<&'a Mapping> {
        match &mut self.inner {
            RangeIterInner::One(m) => m.take(),
            RangeIterInner::Walk(walk) => walk.next().map(|(_, m)| m),
        }
    }
}

/// Mappings of one VM, ordered by start address, never overlapping.
#[derive(Debug, Clone, Default)]
pub struct VaTree {
    map: BTreeMap<GpuVa, Mapping>,
}

impl VaTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of mappings.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no mappings.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All mappings in address order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Mapping> + '_ {
        self.map.values()
    }

    /// The mapping starting exactly at `start`.
    pub fn get(&self, start: GpuVa) -> Option<&Mapping> {
        self.map.get(&start)
    }

    /// The mapping containing `va`.
    pub fn covering(&self, va: GpuVa) -> Option<&Mapping> {
        self.map
            .range(..=va)
            .next_back()
            .map(|(_, m)| m)
            .filter(|m| m.range().end() > va)
    }

    /// drm_gpuva_find: the mapping whose range is exactly `range`.
    pub fn find_exact(&self, range: VaRange) -> Option<&Mapping> {
        self.map
            .get(&range.start())
            .filter(|m| m.range().end() == range.end())
    }

    /// The last mapping starting below `end`. Because mappings do not overlap, it is the
    /// only one that can overlap the right edge of any range ending at `end`: a range
    /// `[a, end)` overlaps some mapping iff this one ends above `a`. One tree search.
    pub fn last_before(&self, end: GpuVa) -> Option<&Mapping> {
        self.map.range(..end).next_back().map(|(_, m)| m)
    }

    /// drm_gpuva_find_first: the lowest mapping overlapping `range`. One tree search when
    /// `range` overlaps at most one mapping, two otherwise.
    pub fn find_first(&self, range: VaRange) -> Option<&Mapping> {
        self.iter_range(range).next()
    }

    /// drm_gpuva_find_prev: the mapping covering `start - 1` (the left neighbour that ends
    /// exactly at `start`, if `start` begins a mapping or a hole).
    pub fn find_prev(&self, start: GpuVa) -> Option<&Mapping> {
        let before = start.get().checked_sub(1)?;
        self.covering(GpuVa(before))
    }

    /// drm_gpuva_find_next: the mapping covering `end` (the right neighbour that starts
    /// exactly at `end`; none if there is a gap).
    pub fn find_next(&self, end: GpuVa) -> Option<&Mapping> {
        self.covering(end)
    }

    /// Every mapping overlapping `range`, in address order. The first one may start below
    /// `range.start()`; the walk stops before the first mapping starting at or after
    /// `range.end()`. One tree search when at most one mapping overlaps (the common case of
    /// a map or unmap inside or beside one mapping), otherwise two plus the walk.
    pub fn iter_range(&self, range: VaRange) -> RangeIter<'_> {
        let inner = match self.last_before(range.end()) {
            None => RangeIterInner::One(None),
            Some(last) if last.range().end() <= range.start() => RangeIterInner::One(None),
            Some(last) if last.range().start() <= range.start() => RangeIterInner::One(Some(last)),
            Some(_) => {
                let from = self
                    .covering(range.start())
                    .map_or(range.start(), |m| m.range().start());
                // PANIC: `BTreeMap::range` panics only if its start exceeds its end; here
                // `from <= range.start() < range.end()` (a `VaRange` is never empty).
                RangeIterInner::Walk(self.map.range(from..range.end()))
            }
        };
        RangeIter { inner }
    }

    /// drm_gpuvm_interval_empty: no mapping overlaps `range`. One tree search.
    pub fn is_range_empty(&self, range: VaRange) -> bool {
        self.last_before(range.end())
            .is_none_or(|m| m.range().end() <= range.start())
    }

    /// Fails if anything overlaps `new`. One tree search.
    pub(crate) fn check_free(&self, new: VaRange) -> Result<(), OverlapError> {
        match self.last_before(new.end()) {
            Some(existing) if existing.range().end() > new.start() => Err(OverlapError {
                new,
                existing: existing.range(),
            }),
            _ => Ok(()),
        }
    }

    /// Inserts a mapping that overlaps nothing.
    pub(crate) fn insert(&mut self, mapping: Mapping) -> Result<(), OverlapError> {
        self.check_free(mapping.range())?;
        self.map.insert(mapping.range().start(), mapping);
        Ok(())
    }

    /// Inserts a mapping into space the caller has just vacated (the `next` piece of a
    /// remap lies inside the old mapping's range). Overlap is checked in debug builds only.
    pub(crate) fn insert_vacated(&mut self, mapping: Mapping) {
        debug_assert!(
            self.is_range_empty(mapping.range()),
            "{} not vacated",
            mapping.range()
        );
        self.map.insert(mapping.range().start(), mapping);
    }

    /// Removes the mapping starting at `start`.
    pub(crate) fn remove(&mut self, start: GpuVa) -> Option<Mapping> {
        self.map.remove(&start)
    }

    /// Removes the mapping at `planned`'s start if it is still `planned` (same id and
    /// flags); otherwise leaves the tree as it was.
    pub(crate) fn remove_if_current(&mut self, planned: &Mapping) -> Option<Mapping> {
        let start = planned.range().start();
        let m = self.map.remove(&start)?;
        if m.is_current(planned) {
            return Some(m);
        }
        self.map.insert(start, m);
        None
    }

    /// Replaces the mapping `planned` (same start, id and flags) by `new`, which must start
    /// at the same address and not be longer (so it cannot overlap a neighbour). Returns the
    /// old mapping, or gives `new` back if a precondition does not hold. One tree search.
    pub(crate) fn shrink_in_place(
        &mut self,
        planned: &Mapping,
        new: Mapping,
    ) -> Result<Mapping, Mapping> {
        let start = new.range().start();
        match self.map.get_mut(&start) {
            Some(slot) if slot.is_current(planned) && new.range().end() <= slot.range().end() => {
                Ok(std::mem::replace(slot, new))
            }
            _ => Err(new),
        }
    }

    pub(crate) fn get_mut(&mut self, start: GpuVa) -> Option<&mut Mapping> {
        self.map.get_mut(&start)
    }

    /// Checks the invariants of the module header; returns the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut prev_end: Option<GpuVa> = None;
        for (key, m) in &self.map {
            if *key != m.range().start() {
                return Err(format!("key {key:#x} holds mapping {}", m.range()));
            }
            if let Some(end) = prev_end {
                if end > *key {
                    return Err(format!("mapping {} overlaps its predecessor", m.range()));
                }
            }
            prev_end = Some(m.range().end());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::mapping::{MappingId, MappingSpec};
    use super::*;
    use crate::types::PAGE_SIZE;
    use proptest::prelude::*;

    const P: u64 = PAGE_SIZE;

    fn r(start_page: u64, pages: u64) -> VaRange {
        VaRange::new(GpuVa(start_page * P), pages * P).unwrap()
    }

    fn tree_of(ranges: &[(u64, u64)]) -> VaTree {
        let mut t = VaTree::new();
        for (i, &(s, n)) in ranges.iter().enumerate() {
            let m = Mapping::new(MappingId(i as u64), MappingSpec::sparse(r(s, n)));
            t.insert(m).unwrap();
        }
        t
    }

    fn starts<'a>(it: impl Iterator<Item = &'a Mapping>) -> Vec<u64> {
        it.map(|m| m.range().start().get() / P).collect()
    }

    #[test]
    fn lookups_on_a_tree_with_gaps() {
        // [2,4) [4,5) [8,12)
        let t = tree_of(&[(2, 2), (4, 1), (8, 4)]);
        assert_eq!(t.find_exact(r(2, 2)).map(|m| m.id()), Some(MappingId(0)));
        assert!(t.find_exact(r(2, 1)).is_none());
        assert_eq!(t.find_first(r(0, 3)).map(|m| m.id()), Some(MappingId(0)));
        assert_eq!(t.find_first(r(5, 4)).map(|m| m.id()), Some(MappingId(2)));
        assert!(t.find_first(r(5, 3)).is_none());
        assert_eq!(
            t.find_prev(GpuVa(4 * P)).map(|m| m.id()),
            Some(MappingId(0))
        );
        assert!(t.find_prev(GpuVa(8 * P)).is_none());
        assert!(t.find_prev(GpuVa(0)).is_none());
        assert_eq!(
            t.find_next(GpuVa(4 * P)).map(|m| m.id()),
            Some(MappingId(1))
        );
        assert!(t.find_next(GpuVa(5 * P)).is_none());
        assert_eq!(starts(t.iter_range(r(3, 6))), vec![2, 4, 8]);
        assert_eq!(starts(t.iter_range(r(5, 3))), Vec::<u64>::new());
        assert!(t.is_range_empty(r(5, 3)) && !t.is_range_empty(r(11, 1)));
    }

    #[test]
    fn insert_refuses_overlap_and_shrink_checks_bounds() {
        let mut t = tree_of(&[(2, 4)]);
        let bad = Mapping::new(MappingId(9), MappingSpec::sparse(r(5, 2)));
        assert_eq!(
            t.insert(bad),
            Err(OverlapError {
                new: r(5, 2),
                existing: r(2, 4)
            })
        );
        let current = t.get(GpuVa(2 * P)).cloned().unwrap();
        let other_id = Mapping::new(MappingId(5), MappingSpec::sparse(r(2, 4)));
        let mut other_flags = current.clone();
        other_flags
            .spec_mut()
            .set_flag(super::super::mapping::MappingFlags::INVALIDATED, true);
        let longer = Mapping::new(MappingId(9), MappingSpec::sparse(r(2, 5)));
        assert!(t.shrink_in_place(&current, longer).is_err());
        let shorter = Mapping::new(MappingId(9), MappingSpec::sparse(r(2, 1)));
        for stale in [&other_id, &other_flags] {
            assert!(t.shrink_in_place(stale, shorter.clone()).is_err());
            assert!(t.remove_if_current(stale).is_none());
        }
        assert_eq!(t.get(GpuVa(2 * P)).map(|m| m.id()), Some(MappingId(0)));
        let old = t.shrink_in_place(&current, shorter).ok();
        assert_eq!(old.map(|m| m.range()), Some(r(2, 4)));
        assert_eq!(t.get(GpuVa(2 * P)).map(|m| m.range()), Some(r(2, 1)));
        t.check_invariants().unwrap();
    }

    proptest! {
        /// Lookups agree with a linear scan over random non-overlapping layouts.
        #[test]
        fn lookups_match_linear_scan(
            layout in proptest::collection::vec((0u64..3, 1u64..4), 0..20),
            q_start in 0u64..80,
            q_len in 1u64..10,
        ) {
            let mut ranges = Vec::new();
            let mut at = 0;
            for (gap, len) in layout {
                ranges.push((at + gap, len));
                at += gap + len;
            }
            let t = tree_of(&ranges);
            t.check_invariants().unwrap();
            let q = r(q_start, q_len);
            let expect: Vec<u64> = ranges
                .iter()
                .filter(|&&(s, n)| r(s, n).overlaps(q))
                .map(|&(s, _)| s)
                .collect();
            prop_assert_eq!(starts(t.iter_range(q)), expect.clone());
            prop_assert_eq!(t.find_first(q).map(|m| m.range().start().get() / P), expect.first().copied());
            prop_assert_eq!(t.is_range_empty(q), expect.is_empty());
            let cov = ranges.iter().find(|&&(s, n)| r(s, n).contains(GpuVa(q_start * P))).map(|&(s, _)| s);
            prop_assert_eq!(t.covering(GpuVa(q_start * P)).map(|m| m.range().start().get() / P), cov);
        }
    }
}
