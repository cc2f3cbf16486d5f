//! Which VA ranges of a VM's page tables may map each BO: what a move's zap clears without
//! `vm.lock`.
//!
//! Owns: [`MappedRanges`], a mirror of the VA tree's BO mappings (range → BO) as the page
//! tables last committed them, and [`Vm::record_mapped`], which updates it at a bind's commit
//! point. Must not: be read or written without the VM's page-table lock (`Vm::pt`, class
//! NotifierLock) held: that lock is what makes the mirror and the tables agree, for binds
//! (which commit under it) and for zaps (which read the mirror under it).
//!
//! Unlike the tree it is not emptied when a VM is destroyed: the tables of a closed VM keep
//! their entries until the VM is dropped, so a move still zaps them.

use super::vm::{Vm, VmState};
use crate::types::BoId;
use crate::vm::{Step, VaRange};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// BO mappings by start address, and the starts of each BO's mappings.
#[derive(Debug, Default)]
pub struct MappedRanges {
    by_start: BTreeMap<u64, (u64, BoId)>,
    by_bo: HashMap<BoId, BTreeSet<u64>>,
}

impl MappedRanges {
    /// Records `[start, end)` as mapping `bo` (the range overlaps no recorded one).
    pub fn insert(&mut self, start: u64, end: u64, bo: BoId) {
        if let Some((_, old)) = self.by_start.insert(start, (end, bo)) {
            self.forget(old, start);
        }
        self.by_bo.entry(bo).or_default().insert(start);
    }

    fn forget(&mut self, bo: BoId, start: u64) {
        if let Some(set) = self.by_bo.get_mut(&bo) {
            set.remove(&start);
            if set.is_empty() {
                self.by_bo.remove(&bo);
            }
        }
    }

    /// Drops every recorded range that intersects `[start, end)`.
    pub fn remove_overlapping(&mut self, start: u64, end: u64) {
        let before = self
            .by_start
            .range(..start)
            .next_back()
            .filter(|(_, (e, _))| *e > start)
            .map(|(s, _)| *s);
        let inside: Vec<u64> = self.by_start.range(start..end).map(|(s, _)| *s).collect();
        for s in before.into_iter().chain(inside) {
            if let Some((_, bo)) = self.by_start.remove(&s) {
                self.forget(bo, s);
            }
        }
    }

    /// The `(start, len)` of every range mapping `bo`.
    pub fn ranges_of(&self, bo: BoId) -> Vec<(u64, u64)> {
        let Some(starts) = self.by_bo.get(&bo) else {
            return Vec::new();
        };
        starts
            .iter()
            .filter_map(|s| self.by_start.get(s).map(|(e, _)| (*s, e - s)))
            .collect()
    }

    /// How many ranges are recorded.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }
}

impl Vm {
    /// At a bind's commit point (the caller holds `vm.lock` and the page-table lock): the
    /// ranges the applied `steps` touched now map what the tree says.
    pub(super) fn record_mapped<'a>(&self, st: &VmState, steps: impl Iterator<Item = &'a Step>) {
        let touched: Vec<VaRange> = steps
            .filter_map(|step| match step {
                Step::Map(spec) => Some(spec.range()),
                Step::Remap(r) => Some(r.unmap().old().range()),
                Step::Unmap(u) => Some(u.old().range()),
                Step::Prefetch(_) => None,
            })
            .collect();
        if touched.is_empty() {
            return;
        }
        let mut mapped = self.mapped.lock();
        for r in &touched {
            mapped.remove_overlapping(r.start().get(), r.end().get());
        }
        for r in &touched {
            for m in st.gpuvm.tree().iter_range(*r) {
                if let Some(bo) = m.bo_id() {
                    let mr = m.range();
                    mapped.insert(mr.start().get(), mr.end().get(), bo);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(simgpu::testkit::proptest_cases(256)))]

        /// Against a page-granular oracle: after any sequence of "map `[a, b)` to BO k" (which
        /// first drops whatever overlapped, as a bind's commit does), `ranges_of` names
        /// exactly the pages each BO's recorded ranges cover.
        #[test]
        fn ranges_follow_a_page_oracle(ops in prop::collection::vec((0u64..64, 1u64..16, 0u64..4), 1..60)) {
            let mut m = MappedRanges::default();
            let mut oracle: BTreeMap<u64, (u64, u64)> = BTreeMap::new(); // page -> (start, bo)
            for (a, n, k) in ops {
                let (s, e) = (a, a + n);
                // The oracle drops every whole range that touches [s, e).
                let hit: BTreeSet<u64> = (s..e).filter_map(|p| oracle.get(&p).map(|x| x.0)).collect();
                oracle.retain(|_, (st, _)| !hit.contains(st));
                m.remove_overlapping(s, e);
                if k > 0 {
                    for p in s..e { oracle.insert(p, (s, k)); }
                    m.insert(s, e, BoId(k));
                }
                for bo in 1..4u64 {
                    let mut got: Vec<u64> = m.ranges_of(BoId(bo)).into_iter().flat_map(|(s, l)| s..s + l).collect();
                    got.sort_unstable();
                    let want: Vec<u64> = oracle.iter().filter(|(_, (_, b))| *b == bo).map(|(p, _)| *p).collect();
                    prop_assert_eq!(got, want, "BO {}", bo);
                }
                prop_assert_eq!(m.len(), oracle.values().map(|x| x.0).collect::<BTreeSet<_>>().len());
            }
        }
    }
}
