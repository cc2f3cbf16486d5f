//! The `gpuvm` group: VA-tree lookups, splitting maps and unmaps at 1e4 and 1e6 live
//! mappings, and the rangemap crate's insert of the same pattern as a peer.
//!
//! Layout (the same for gpud and the peer): the VA space is cut into 4-page slots; slot `i`
//! holds a 1-page (4 KiB) mapping at its first page. `SPLITS` slots, spread evenly, also
//! hold a 3-page mapping on their other pages; a timed "map split" maps the middle page of
//! one of those with another BO, which cuts it in two (Remap{prev, next} + Map). Timed
//! operations visit their targets in a shuffled order so the tree is not walked in address
//! order. Requests are built before timing; timing covers planning and applying. Each value
//! is the lowest of `ROUNDS` round means (medians of the headline pair are reported too); a
//! round restores the layout (untimed) when it is done. Both structures are built before
//! either is timed.

use crate::report::{mean_ns, Report};
use gpud::types::{BoId, GpuVa, ResvId, VmId, PAGE_SIZE};
use gpud::vm::{GpuBo, GpuVm, MappingSpec, UndoLog, VaRange, VaSpace, VmBo};
use rangemap::RangeMap;
use std::hint::black_box;
use std::sync::Arc;

/// Timed map-split and unmap operations per size.
const SPLITS: usize = 10_000;
/// Timed lookups per size (over all rounds).
const LOOKUPS: u64 = 1_000_000;
/// Measurement rounds per value; the median round is reported.
const ROUNDS: usize = 7;
const SLOT: u64 = 4 * PAGE_SIZE;

#[derive(Debug)]
struct BenchBo(u64);

impl GpuBo for BenchBo {
    fn id(&self) -> BoId {
        BoId(self.0)
    }
    fn resv(&self) -> ResvId {
        ResvId(0)
    }
    fn size(&self) -> u64 {
        u64::MAX / 2
    }
}

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

fn range(start: u64, len: u64) -> VaRange {
    VaRange::new(GpuVa(start), len).expect("bench ranges are valid")
}

/// The slots that get a 3-page split target, spread over `n` slots.
fn split_slots(n: usize) -> Vec<u64> {
    let stride = (n / SPLITS).max(1) as u64;
    (0..SPLITS.min(n) as u64).map(|j| j * stride).collect()
}

struct Setup {
    vm: GpuVm,
    main: Arc<VmBo>,
    other: Arc<VmBo>,
}

/// A VM with `n` 1-page mappings (slot starts) plus the split targets.
fn build_vm(n: usize) -> Setup {
    let space = VaSpace::new(GpuVa(0), (n as u64 + 1) * SLOT, None).expect("space");
    let mut vm = GpuVm::new(VmId(1), ResvId(0), space);
    let (main, _) = vm.bo_obtain(Arc::new(BenchBo(1)));
    let (other, _) = vm.bo_obtain(Arc::new(BenchBo(2)));
    let map = |vm: &mut GpuVm, main: &Arc<VmBo>, start: u64, len: u64| {
        let spec =
            MappingSpec::bo(range(start, len), Arc::clone(main), start, false).expect("spec");
        let plan = vm.plan_map(&spec).expect("plan");
        vm.apply_plan(plan, &mut UndoLog::new()).expect("apply");
    };
    for i in 0..n as u64 {
        map(&mut vm, &main, i * SLOT, PAGE_SIZE);
    }
    for s in split_slots(n) {
        map(&mut vm, &main, s * SLOT + PAGE_SIZE, 3 * PAGE_SIZE);
    }
    Setup { vm, main, other }
}

/// The lowest and the median of per-round means. Other processes on the machine only ever
/// add time, so the lowest round is the best estimate of the code's own cost; the median
/// is reported beside it for the headline pair.
fn best_and_median(mut means: Vec<f64>) -> (f64, f64) {
    means.sort_by(f64::total_cmp);
    let best = means.first().copied().unwrap_or(0.0);
    (best, means.get(means.len() / 2).copied().unwrap_or(0.0))
}

fn best_of_rounds(mut round: impl FnMut() -> f64) -> f64 {
    best_and_median((0..ROUNDS).map(|_| round()).collect()).0
}

fn lookup_ns(vm: &GpuVm, n: usize, rng: &mut Rng) -> f64 {
    let addrs: Vec<u64> = (0..4096).map(|_| rng.below(n as u64) * SLOT).collect();
    let mut i = 0;
    best_of_rounds(|| {
        mean_ns(LOOKUPS / ROUNDS as u64, || {
            let va = addrs[i % addrs.len()];
            i += 1;
            black_box(vm.tree().find_first(range(va, PAGE_SIZE)));
        })
    })
}

fn plan_apply(vm: &mut GpuVm, spec: &MappingSpec) {
    let plan = vm.plan_map(spec).expect("plan");
    vm.apply_plan(plan, &mut UndoLog::new()).expect("apply");
}

/// The map-split workload: the split requests and the originals that undo them.
struct Splits {
    reqs: Vec<MappingSpec>,
    originals: Vec<MappingSpec>,
}

impl Splits {
    fn new(setup: &Setup, n: usize) -> Self {
        let (mut reqs, mut originals) = (Vec::new(), Vec::new());
        for s in split_slots(n) {
            let (at, whole) = (s * SLOT + 2 * PAGE_SIZE, s * SLOT + PAGE_SIZE);
            let other = Arc::clone(&setup.other);
            let main = Arc::clone(&setup.main);
            let split = MappingSpec::bo(range(at, PAGE_SIZE), other, at, false);
            let orig = MappingSpec::bo(range(whole, 3 * PAGE_SIZE), main, whole, false);
            reqs.push(split.expect("spec"));
            originals.push(orig.expect("spec"));
        }
        Self { reqs, originals }
    }

    /// One timed round (mean ns per split), then the layout restored untimed.
    fn round(&mut self, vm: &mut GpuVm, rng: &mut Rng) -> f64 {
        rng.shuffle(&mut self.reqs);
        let mut i = 0;
        let ns = mean_ns(self.reqs.len() as u64, || {
            plan_apply(vm, &self.reqs[i]);
            i += 1;
        });
        self.originals.iter().for_each(|o| plan_apply(vm, o));
        ns
    }
}

fn unmap_ns(setup: &mut Setup, n: usize, rng: &mut Rng) -> f64 {
    let count = SPLITS.min(n);
    let mut targets: Vec<u64> = (0..count).map(|j| (j * n / count) as u64 * SLOT).collect();
    let vm = &mut setup.vm;
    best_of_rounds(|| {
        rng.shuffle(&mut targets);
        let mut i = 0;
        let ns = mean_ns(targets.len() as u64, || {
            let plan = vm.plan_unmap(range(targets[i], PAGE_SIZE)).expect("plan");
            vm.apply_plan(plan, &mut UndoLog::new()).expect("apply");
            i += 1;
        });
        for &at in &targets {
            let spec = MappingSpec::bo(range(at, PAGE_SIZE), Arc::clone(&setup.main), at, false);
            plan_apply(vm, &spec.expect("spec"));
        }
        ns
    })
}

/// The peer: a rangemap with the same layout and the same split inserts (value = BO,
/// offset).
struct Peer {
    map: RangeMap<u64, (u64, u64)>,
    wholes: Vec<u64>,
    inserts: Vec<u64>,
}

impl Peer {
    fn new(n: usize) -> Self {
        let mut map = RangeMap::new();
        for i in 0..n as u64 {
            map.insert(i * SLOT..i * SLOT + PAGE_SIZE, (1, i * SLOT));
        }
        let wholes: Vec<u64> = split_slots(n)
            .into_iter()
            .map(|s| s * SLOT + PAGE_SIZE)
            .collect();
        for &at in &wholes {
            map.insert(at..at + 3 * PAGE_SIZE, (1, at));
        }
        let inserts = wholes.iter().map(|w| w + PAGE_SIZE).collect();
        Self {
            map,
            wholes,
            inserts,
        }
    }

    fn round(&mut self, rng: &mut Rng) -> f64 {
        rng.shuffle(&mut self.inserts);
        let mut i = 0;
        let ns = mean_ns(self.inserts.len() as u64, || {
            let at = self.inserts[i];
            self.map.insert(at..at + PAGE_SIZE, (2, at));
            i += 1;
        });
        for &at in &self.wholes {
            self.map.insert(at..at + 3 * PAGE_SIZE, (1, at));
        }
        black_box(self.map.len());
        ns
    }
}

/// Runs the group.
pub fn gpuvm() -> Report {
    let mut r = Report::new("gpuvm");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = 10_000;
    let mut setup = build_vm(n);
    r.push("live_mappings_1e4", setup.vm.tree().len() as u64);
    r.push("lookup_ns_1e4", lookup_ns(&setup.vm, n, &mut rng));
    let mut splits = Splits::new(&setup, n);
    let split_1e4 = best_of_rounds(|| splits.round(&mut setup.vm, &mut rng));
    r.push("map_split_ns_1e4", split_1e4);
    drop(setup);

    let n = 1_000_000;
    let mut setup = build_vm(n);
    let mut peer = Peer::new(n);
    r.push("live_mappings_1e6", setup.vm.tree().len() as u64);
    r.push("lookup_ns_1e6", lookup_ns(&setup.vm, n, &mut rng));
    // Each side runs its rounds back to back, so each measures its own steady state rather
    // than the other's cache footprint.
    let mut splits = Splits::new(&setup, n);
    let ours = (0..ROUNDS)
        .map(|_| splits.round(&mut setup.vm, &mut rng))
        .collect();
    let theirs = (0..ROUNDS).map(|_| peer.round(&mut rng)).collect();
    let (split_1e6, split_med) = best_and_median(ours);
    let (peer_1e6, peer_med) = best_and_median(theirs);
    r.push("map_split_ns_1e6", split_1e6);
    r.push("unmap_ns_1e6", unmap_ns(&mut setup, n, &mut rng));
    r.push("peer_rangemap_insert_ns_1e6", peer_1e6);
    r.push("map_split_ns_1e6_median", split_med);
    r.push("peer_rangemap_insert_ns_1e6_median", peer_med);
    r.push("map_split_vs_peer_1e6", split_1e6 / peer_1e6.max(1e-9));
    r.push("map_split_ratio_1e6_1e4", split_1e6 / split_1e4.max(1e-9));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timed round must leave the layout as it found it, or later rounds measure
    /// something else.
    #[test]
    fn rounds_restore_the_layout() {
        let n = 64;
        let mut setup = build_vm(n);
        let before: Vec<_> = setup
            .vm
            .tree()
            .iter()
            .map(|m| (m.range(), m.offset()))
            .collect();
        assert_eq!(before.len(), n + split_slots(n).len());
        let mut rng = Rng(1);
        let mut splits = Splits::new(&setup, n);
        assert!(splits.round(&mut setup.vm, &mut rng) > 0.0);
        assert!(unmap_ns(&mut setup, n, &mut rng) > 0.0);
        let after: Vec<_> = setup
            .vm
            .tree()
            .iter()
            .map(|m| (m.range(), m.offset()))
            .collect();
        assert_eq!(after, before);
        setup.vm.check_invariants().unwrap();
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        Rng(7).shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
