//! Range creation, invalidation and garbage collection against a flat-list oracle.

use super::*;
use proptest::prelude::*;

const K4: u64 = 4 << 10;
/// The universe straddles a notifier boundary, so chunks near it must shrink.
const BASE: u64 = 3 * NOTIFIER_SIZE - (4 << 20);
const PAGES: u64 = 2048; // 8 MiB

#[derive(Debug, Clone)]
enum Op {
    /// A fault at page `at` of the universe, whose CPU mapping and mirror span the given
    /// pages (clamped so they contain `at`); `map`: the range gets pages.
    Fault {
        at: u64,
        cpu: (u64, u64),
        mirror: (u64, u64),
        map: bool,
    },
    Invalidate(u64, u64),
    /// The memory behind `[s, s + n)` moves: GPU mappings go, the ranges stay.
    TakeGpu(u64, u64),
    Gc,
    RemoveUnmappedIn(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    let page = 0..PAGES;
    prop_oneof![
        6 => (page.clone(), page.clone(), page.clone(), page.clone(), page.clone(), any::<bool>())
            .prop_map(|(at, a, b, c, d, map)| Op::Fault { at, cpu: (a, b), mirror: (c, d), map }),
        2 => (page.clone(), 1..600u64).prop_map(|(s, n)| Op::Invalidate(s, n)),
        1 => (page.clone(), 1..600u64).prop_map(|(s, n)| Op::TakeGpu(s, n)),
        1 => Just(Op::Gc),
        1 => (page, 1..600u64).prop_map(|(s, n)| Op::RemoveUnmappedIn(s, n)),
    ]
}

/// The oracle: a flat list of (start, len, mapped, unmapped).
#[derive(Default, Debug)]
struct Flat(Vec<(u64, u64, bool, bool)>);

impl Flat {
    fn overlaps(&self, s: u64, e: u64) -> bool {
        self.0.iter().any(|r| r.0 < e && s < r.0 + r.1)
    }

    fn containing(&self, a: u64) -> bool {
        self.overlaps(a, a + 1)
    }

    /// The largest chunk drm_gpusvm would pick, naively.
    fn choose(&self, addr: u64, cpu: (u64, u64), mirror: (u64, u64)) -> Option<(u64, u64)> {
        if self.containing(addr) {
            return None;
        }
        for c in CHUNK_SIZES {
            let s = addr / c * c;
            let e = s + c;
            let n = addr / NOTIFIER_SIZE * NOTIFIER_SIZE;
            let fits = |(a, b): (u64, u64)| a <= s && e <= b;
            if fits(cpu)
                && fits(mirror)
                && fits((n, n + NOTIFIER_SIZE))
                && (c == K4 || !self.overlaps(s, e))
            {
                return Some((s, c));
            }
        }
        None
    }
}

/// A span of pages around `at` (inclusive of `at`), as byte bounds.
fn span(at: u64, (a, b): (u64, u64)) -> (u64, u64) {
    let lo = a.min(at);
    let hi = b.max(at + 1);
    (BASE + lo * K4, BASE + hi * K4)
}

fn check_shape(s: &SvmRanges<()>, flat: &Flat) {
    let mut got: Vec<(u64, u64, bool, bool)> = s
        .iter()
        .map(|r| (r.start, r.len, r.pages.is_some(), r.unmapped))
        .collect();
    let mut want = flat.0.clone();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    for w in got.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "ranges overlap: {w:?}");
    }
    for (start, len, ..) in got {
        assert!(CHUNK_SIZES.contains(&len));
        assert_eq!(start % len, 0, "a range is aligned to its size");
        assert_eq!(notifier_of(start), notifier_of(start + len - 1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn ranges_follow_the_oracle(ops in proptest::collection::vec(op(), 1..80)) {
        let mut s: SvmRanges<()> = SvmRanges::default();
        let mut flat = Flat::default();
        for op in ops {
            match op {
                Op::Fault { at, cpu, mirror, map } => {
                    let addr = BASE + at * K4 + 123;
                    let (cpu, mirror) = (span(at, cpu), span(at, mirror));
                    let want = flat.choose(addr, cpu, mirror);
                    let got = s.candidates(addr, cpu, mirror).first().copied();
                    prop_assert_eq!(got, want, "chunk for {:#x}", addr);
                    prop_assert_eq!(s.find(addr).is_some(), flat.containing(addr));
                    if let Some((start, len)) = got {
                        prop_assert!(s.insert(start, len, map.then_some(())).is_ok());
                        flat.0.push((start, len, map, false));
                    }
                }
                Op::Invalidate(p, n) => {
                    let (a, b) = (BASE + p * K4, BASE + (p + n) * K4);
                    let mut zapped: Vec<(u64, u64)> =
                        s.invalidate(a, b).into_iter().map(|i| (i.start, i.len)).collect();
                    let mut want = Vec::new();
                    for r in flat.0.iter_mut().filter(|r| r.0 < b && a < r.0 + r.1) {
                        if r.2 {
                            want.push((r.0, r.1));
                        }
                        r.2 = false;
                        r.3 = true;
                    }
                    zapped.sort_unstable();
                    want.sort_unstable();
                    prop_assert_eq!(zapped, want);
                }
                Op::TakeGpu(p, n) => {
                    let (a, b) = (BASE + p * K4, BASE + (p + n) * K4);
                    let mut taken: Vec<(u64, u64)> =
                        s.take_gpu(a, b).into_iter().map(|i| (i.start, i.len)).collect();
                    let mut want = Vec::new();
                    for r in flat.0.iter_mut().filter(|r| r.0 < b && a < r.0 + r.1 && r.2) {
                        want.push((r.0, r.1));
                        r.2 = false;
                    }
                    taken.sort_unstable();
                    want.sort_unstable();
                    prop_assert_eq!(taken, want);
                }
                Op::Gc => {
                    let before = flat.0.len();
                    flat.0.retain(|r| !r.3);
                    prop_assert_eq!(s.collect_garbage(), before - flat.0.len());
                    prop_assert_eq!(s.garbage(), 0);
                }
                Op::RemoveUnmappedIn(p, n) => {
                    let (a, b) = (BASE + p * K4, BASE + (p + n) * K4);
                    let busy = flat.0.iter().any(|r| r.0 < b && a < r.0 + r.1 && r.2);
                    prop_assert_eq!(s.has_mapping(a, b), busy);
                    let before = flat.0.len();
                    flat.0.retain(|r| !(r.0 < b && a < r.0 + r.1 && !r.2));
                    prop_assert_eq!(s.remove_unmapped_in(a, b), before - flat.0.len());
                }
            }
            check_shape(&s, &flat);
        }
        // Notifiers exist only for non-empty ones.
        let mut ns: Vec<u64> = flat.0.iter().map(|r| notifier_of(r.0)).collect();
        ns.sort_unstable();
        ns.dedup();
        prop_assert_eq!(s.notifiers(), ns.len());
    }
}

#[test]
fn a_fault_takes_the_largest_chunk_that_fits() {
    let mut s: SvmRanges<()> = SvmRanges::default();
    let m = 2 << 20;
    let all = (0, u64::MAX);
    // A 2 MiB-aligned 4 MiB CPU mapping: 2 MiB.
    assert_eq!(s.candidates(m + 5, (m, 3 * m), all)[0], (m, m));
    // A 1 MiB CPU mapping: 64 KiB; then a neighbour fault next to it can't take 2 MiB.
    assert_eq!(
        s.candidates(m + 70_000, (m, m + (1 << 20)), all)[0],
        (m + 65536, 65536)
    );
    s.insert(m + 65536, 65536, None).unwrap();
    assert_eq!(s.candidates(m + 5, (m, 3 * m), all)[0], (m, 65536));
    // Inside an existing range: nothing to create.
    assert!(s.candidates(m + 65536 + 8, all, all).is_empty());
    // A one-page mirror: 4 KiB.
    assert_eq!(
        s.candidates(8 * m, all, (8 * m, 8 * m + K4)),
        vec![(8 * m, K4)]
    );
    // Across a notifier boundary a range never reaches.
    assert!(s.insert(NOTIFIER_SIZE - K4, 2 * K4, None).is_err());
}

#[test]
fn a_partial_invalidation_takes_the_whole_range() {
    let mut s: SvmRanges<u32> = SvmRanges::default();
    s.insert(0, 2 << 20, Some(7)).unwrap();
    let inv = s.invalidate(1 << 20, 2 << 20);
    assert_eq!(inv.len(), 1);
    assert_eq!((inv[0].start, inv[0].len, inv[0].pages), (0, 2 << 20, 7));
    assert!(s.find(0).unwrap().unmapped);
    assert!(!s.has_mapping(0, 4096));
    assert_eq!(s.collect_garbage(), 1);
    assert!(s.is_empty());
    assert_eq!(s.notifiers(), 0);
}
