//! Property tests: random map/unmap/null batches, read back through simgpu's MMU walker,
//! must agree with a "last op covering the address wins" oracle; unmapping never allocates
//! and unmapping everything frees every table but the root.

use super::memory::{FailingPtMemory, PtMemory};
use super::tests::{unmap, Rig};
use super::*;
use crate::hw::pte::{LeafFlags, MemLocation};
use proptest::prelude::*;
use simgpu::mmu::{Access, FaultReason, Mmu as Walker};

const PAGE: u64 = 4096;
const MIB2: u64 = 2 << 20;

#[derive(Debug, Clone)]
enum Kind {
    Unmap,
    Null,
    /// Backing: `(first segment phys, split offset, second segment phys)`, writable.
    Pages(u64, u64, u64, bool),
}

#[derive(Debug, Clone)]
struct Op {
    start: u64,
    len: u64,
    kind: Kind,
}

impl Op {
    fn to_pt(&self) -> PtOp {
        let va = GpuVa(self.start);
        match self.kind {
            Kind::Unmap => PtOp::Unmap { va, len: self.len },
            Kind::Null => PtOp::Map {
                va,
                len: self.len,
                target: MapTarget::Null,
            },
            Kind::Pages(p1, split, p2, writable) => {
                let split = split.min(self.len);
                let mut segments = vec![PhysSeg {
                    addr: PhysAddr(p1),
                    len: split,
                }];
                segments.push(PhysSeg {
                    addr: PhysAddr(p2),
                    len: self.len - split,
                });
                PtOp::Map {
                    va,
                    len: self.len,
                    target: MapTarget::Pages {
                        location: MemLocation::Vram,
                        flags: LeafFlags {
                            writable,
                            ..LeafFlags::default()
                        },
                        segments,
                    },
                }
            }
        }
    }

    /// What the oracle expects at `va` if this op covers it: None = unmapped,
    /// Some((phys, writable, null)).
    fn at(&self, va: u64) -> Option<Option<(u64, bool, bool)>> {
        if va < self.start || va >= self.start + self.len {
            return None;
        }
        let off = va - self.start;
        Some(match self.kind {
            Kind::Unmap => None,
            Kind::Null => Some((0, true, true)),
            Kind::Pages(p1, split, p2, w) => {
                let split = split.min(self.len);
                let pa = if off < split {
                    p1 + off
                } else {
                    p2 + off - split
                };
                Some((pa, w, false))
            }
        })
    }
}

fn expected(ops: &[Op], va: u64) -> Option<(u64, bool, bool)> {
    ops.iter().rev().find_map(|o| o.at(va)).flatten()
}

/// Ops inside `[0, window)` with sizes in units of `unit`, biased to large-page alignment.
fn op(window: u64, unit: u64) -> impl Strategy<Value = Op> {
    let units = window / unit;
    let aligned = prop_oneof![3 => (0..units).prop_map(move |u| u * unit), 1 => (0..window / PAGE).prop_map(|p| p * PAGE)];
    let kind = prop_oneof![
        2 => Just(Kind::Unmap),
        1 => Just(Kind::Null),
        5 => (0u64..64, 0..units * 2, 0u64..64, any::<bool>()).prop_map(move |(a, s, b, w)| {
            // Physical bases are 1 GiB multiples, so alignment follows the VA's.
            Kind::Pages((a << 30) + (1 << 40), s * unit / 2, (b << 30) + (1 << 41), w)
        }),
    ];
    (aligned, 1..=units, kind).prop_map(move |(start, n, kind)| {
        let len = (n * unit).min(window - start).max(PAGE);
        Op { start, len, kind }
    })
}

/// `scratch`: the scratch page's address when the table is in scratch mode.
fn check(
    r: &Rig,
    pt: &PageTable,
    ops: &[Op],
    va: u64,
    w: &mut Walker,
    scratch: Option<u64>,
) -> Result<(), TestCaseError> {
    w.invalidate_all(0);
    let got = r.translate(w, pt, va, Access::Read);
    match (expected(ops, va), got) {
        (None, Err(f)) if scratch.is_none() => {
            prop_assert_eq!(f.reason, FaultReason::NotPresent)
        }
        (None, Ok(t)) if scratch.is_some() => {
            prop_assert_eq!(Some(t.phys & !(PAGE - 1)), scratch, "va {:#x}", va);
            w.invalidate_all(0);
            prop_assert!(r.translate(w, pt, va, Access::Write).is_ok());
        }
        (Some((_, _, true)), Ok(t)) => prop_assert!(t.null, "va {va:#x} not null"),
        (Some((pa, writable, false)), Ok(t)) => {
            prop_assert_eq!(t.phys, pa, "va {:#x}", va);
            prop_assert!(!t.null);
            w.invalidate_all(0);
            let wr = r.translate(w, pt, va, Access::Write);
            prop_assert_eq!(wr.is_ok(), writable, "va {:#x} writable", va);
        }
        (e, g) => prop_assert!(false, "va {va:#x}: expected {e:?}, walker says {g:?}"),
    }
    Ok(())
}

fn run_case(
    window: u64,
    ops: Vec<Vec<Op>>,
    every_page: bool,
    scratch: bool,
) -> Result<(), TestCaseError> {
    let r = Rig::new();
    let failing = Arc::new(FailingPtMemory::new(r.sys_mem(), u64::MAX));
    let cfg = PtConfig {
        scratch,
        ..PtConfig::default()
    };
    let mut pt = PageTable::new(failing.clone() as Arc<dyn PtMemory>, cfg).unwrap();
    let mut w = Walker::new(4);
    let scratch_page = scratch.then(|| {
        r.translate(&mut w, &pt, 1 << 47, Access::Read)
            .unwrap()
            .phys
    });
    let mut applied: Vec<Op> = Vec::new();
    let mut freed = 0;
    for batch in ops {
        let only_unmaps = batch.iter().all(|o| matches!(o.kind, Kind::Unmap));
        // Unmapping must never need memory.
        failing.set_budget(if only_unmaps { 0 } else { u64::MAX });
        let pt_ops: Vec<PtOp> = batch.iter().map(Op::to_pt).collect();
        let c = pt.prepare(&pt_ops).unwrap().commit();
        prop_assert_eq!(pt.stats().pool_misses, 0);
        freed += c.freed.len() as u64;
        applied.extend(batch);
        let points: Vec<u64> = if every_page {
            (0..window / PAGE).map(|p| p * PAGE).collect()
        } else {
            applied
                .iter()
                .flat_map(|o| {
                    [
                        o.start,
                        o.start + o.len - PAGE,
                        o.start + o.len,
                        (o.start + o.len / 2) & !(PAGE - 1),
                    ]
                })
                .filter(|&v| v < window)
                .collect()
        };
        for va in points {
            check(&r, &pt, &applied, va, &mut w, scratch_page)?;
        }
    }
    failing.set_budget(0);
    let last = pt.prepare(&[unmap(0, window)]).unwrap().commit();
    freed += last.freed.len() as u64;
    let fixed = if scratch { 5 } else { 1 };
    prop_assert_eq!(
        pt.stats().tables - freed,
        fixed,
        "only the root (and scratch) remain"
    );
    prop_assert_eq!(pt.stats().write_errors, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simgpu::testkit::proptest_cases(32)))]

    /// 8 MiB window, 64 KiB units: 4K, 64K and 2M entries, every page checked.
    #[test]
    fn walker_matches_oracle_small_pages(ops in prop::collection::vec(prop::collection::vec(op(4 * MIB2, 64 << 10), 1..4), 1..8)) {
        run_case(4 * MIB2, ops, true, false)?;
    }

    /// 4 GiB window, 2 MiB units: 2M and 1G entries and their demotion, boundaries checked.
    #[test]
    fn walker_matches_oracle_large_pages(ops in prop::collection::vec(prop::collection::vec(op(4 << 30, MIB2), 1..3), 1..5)) {
        run_case(4 << 30, ops, false, false)?;
    }

    /// Scratch mode: unmapped pages read and write the scratch page instead of faulting.
    #[test]
    fn walker_matches_oracle_in_scratch_mode(ops in prop::collection::vec(prop::collection::vec(op(4 * MIB2, 64 << 10), 1..4), 1..6)) {
        run_case(4 * MIB2, ops, true, true)?;
    }
}
