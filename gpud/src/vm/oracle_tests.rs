//! Differential property tests: random map/unmap/prefetch sequences over several BOs,
//! compared page by page with a dumb oracle (one entry per page), plus the step-count and
//! `keep` rules of every plan, and unwinding random batches.

use super::gpuvm::GpuVm;
use super::mapping::{MappingFlags, MappingSpec};
use super::plan::{Plan, Step};
use super::testutil::{bo, new_vm, r, P};
use super::undo::UndoLog;
use crate::types::GpuVa;
use proptest::prelude::*;
use std::collections::BTreeMap;

const PAGES: u64 = 64;

#[derive(Debug, Clone)]
enum Op {
    /// Map `pages` at `start`; `bo == 0` is a null mapping, else BO `bo` at page `off`.
    Map {
        start: u64,
        pages: u64,
        bo: u64,
        off: u64,
    },
    Unmap {
        start: u64,
        pages: u64,
    },
    Prefetch {
        start: u64,
        pages: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let span = (0..PAGES).prop_flat_map(|s| (Just(s), 1..=(PAGES - s).min(16)));
    prop_oneof![
        4 => (span.clone(), 0u64..4, 0u64..24)
            .prop_map(|((start, pages), bo, off)| Op::Map { start, pages, bo, off }),
        2 => span.clone().prop_map(|(start, pages)| Op::Unmap { start, pages }),
        1 => span.prop_map(|(start, pages)| Op::Prefetch { start, pages }),
    ]
}

/// What one page is mapped to: (BO id or none, page offset in the BO, flags).
type Page = (Option<u64>, u64, MappingFlags);

fn oracle_apply(oracle: &mut BTreeMap<u64, Page>, op: &Op) {
    match *op {
        Op::Map {
            start,
            pages,
            bo,
            off,
        } => {
            for i in 0..pages {
                let page = if bo == 0 {
                    (None, 0, MappingFlags::SPARSE)
                } else {
                    (Some(bo), off + i, MappingFlags::empty())
                };
                oracle.insert(start + i, page);
            }
        }
        Op::Unmap { start, pages } => (start..start + pages).for_each(|p| {
            oracle.remove(&p);
        }),
        Op::Prefetch { .. } => {}
    }
}

fn plan_op(vm: &mut GpuVm, op: &Op) -> (Plan, Option<MappingSpec>) {
    match *op {
        Op::Map {
            start,
            pages,
            bo: 0,
            ..
        } => {
            let req = MappingSpec::sparse(r(start, pages));
            (vm.plan_map(&req).unwrap(), Some(req))
        }
        Op::Map {
            start,
            pages,
            bo: id,
            off,
        } => {
            let b = bo(vm, id);
            let req = MappingSpec::bo(r(start, pages), b, off * P, false).unwrap();
            (vm.plan_map(&req).unwrap(), Some(req))
        }
        Op::Unmap { start, pages } => (vm.plan_unmap(r(start, pages)).unwrap(), None),
        Op::Prefetch { start, pages } => (vm.plan_prefetch(r(start, pages)).unwrap(), None),
    }
}

/// `keep` must hold exactly when the old mapping is BO-backed, by the same BO, and its pages
/// translate to the same BO offsets as the request's.
fn expected_keep(old: &super::mapping::Mapping, req: &MappingSpec) -> bool {
    old.bo_id().is_some()
        && old.bo_id() == req.bo_id()
        && old.offset().wrapping_sub(old.range().start().get())
            == req.offset().wrapping_sub(req.range().start().get())
}

fn check_plan(plan: &Plan, req: Option<&MappingSpec>) -> Result<(), TestCaseError> {
    let (maps, remaps, _, _) = plan.counts();
    let steps = plan.steps();
    match req {
        Some(req) => {
            prop_assert_eq!(maps, 1);
            prop_assert!(remaps <= 2);
            prop_assert!(matches!(steps.last(), Some(Step::Map(_))));
            for (i, s) in steps.iter().enumerate() {
                let (old, keep) = match s {
                    Step::Remap(rm) => {
                        prop_assert!(i == 0 || i + 2 == steps.len(), "remap in the middle");
                        (rm.unmap().old(), rm.unmap().keep())
                    }
                    Step::Unmap(u) => (u.old(), u.keep()),
                    _ => continue,
                };
                prop_assert!(old.range().overlaps(req.range()));
                prop_assert_eq!(keep, expected_keep(old, req));
            }
        }
        None => {
            prop_assert_eq!(maps, 0);
            for s in steps {
                match s {
                    Step::Remap(rm) => prop_assert!(!rm.unmap().keep()),
                    Step::Unmap(u) => prop_assert!(!u.keep()),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn check_pages(vm: &GpuVm, oracle: &BTreeMap<u64, Page>) -> Result<(), TestCaseError> {
    vm.check_invariants().map_err(TestCaseError::fail)?;
    for p in 0..PAGES {
        let got = vm.tree().covering(GpuVa(p * P)).map(|m| {
            let delta = p - m.range().start().get() / P;
            let off = if m.bo_id().is_some() {
                m.offset() / P + delta
            } else {
                0
            };
            (m.bo_id().map(|b| b.0), off, m.flags())
        });
        prop_assert_eq!(got, oracle.get(&p).copied(), "page {}", p);
    }
    Ok(())
}

fn tree_dump(vm: &GpuVm) -> Vec<(u64, u64, Option<u64>, u64, u64)> {
    vm.tree()
        .iter()
        .map(|m| {
            let rg = m.range();
            (
                rg.start().get(),
                rg.end().get(),
                m.bo_id().map(|b| b.0),
                m.offset(),
                m.id().0,
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simgpu::testkit::proptest_cases(256)))]

    #[test]
    fn random_sequences_match_the_page_oracle(ops in proptest::collection::vec(op(), 1..40)) {
        let mut vm = new_vm();
        let mut oracle = BTreeMap::new();
        for op in &ops {
            let (plan, req) = plan_op(&mut vm, op);
            check_plan(&plan, req.as_ref())?;
            vm.apply_plan(plan, &mut UndoLog::new()).unwrap();
            oracle_apply(&mut oracle, op);
            check_pages(&vm, &oracle)?;
        }
    }

    #[test]
    fn unwinding_a_random_batch_restores_the_vm(
        setup in proptest::collection::vec(op(), 0..20),
        batch in proptest::collection::vec(op(), 1..10),
    ) {
        let mut vm = new_vm();
        let mut oracle = BTreeMap::new();
        for op in &setup {
            let (plan, _) = plan_op(&mut vm, op);
            vm.apply_plan(plan, &mut UndoLog::new()).unwrap();
            oracle_apply(&mut oracle, op);
        }
        let before = tree_dump(&vm);
        let next = vm.next_mapping_id();
        let mut log = UndoLog::new();
        // Each op is planned against the tree as the earlier ops of the batch left it.
        for op in &batch {
            let (plan, _) = plan_op(&mut vm, op);
            vm.apply_plan(plan, &mut log).unwrap();
        }
        vm.unwind(log).unwrap();
        prop_assert_eq!(tree_dump(&vm), before);
        prop_assert_eq!(vm.next_mapping_id(), next);
        check_pages(&vm, &oracle)?;
    }

    /// The all-or-nothing bind pattern: the ops of a batch go through step handlers, one of
    /// which fails part-way; unwinding leaves the VM exactly as before the batch.
    #[test]
    fn failing_step_handler_then_unwind_restores_the_vm(
        setup in proptest::collection::vec(op(), 0..20),
        batch in proptest::collection::vec(op(), 1..10),
        fail_at in 0usize..12,
    ) {
        let mut vm = new_vm();
        let mut oracle = BTreeMap::new();
        for op in &setup {
            let (plan, _) = plan_op(&mut vm, op);
            vm.apply_plan(plan, &mut UndoLog::new()).unwrap();
            oracle_apply(&mut oracle, op);
        }
        let before = tree_dump(&vm);
        let mut log = UndoLog::new();
        let mut seen = 0usize;
        let mut failed = false;
        for op in &batch {
            let (plan, _) = plan_op(&mut vm, op);
            let r = vm.apply_with(&plan, &mut log, |_, commit| {
                seen += 1;
                if seen > fail_at {
                    return Err(StepFailed);
                }
                commit.commit().map_err(|_| StepFailed)
            });
            if r.is_err() {
                failed = true;
                break;
            }
        }
        vm.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert_eq!(failed, seen > fail_at);
        vm.unwind(log).unwrap();
        prop_assert_eq!(tree_dump(&vm), before);
        check_pages(&vm, &oracle)?;
    }
}

#[derive(Debug)]
struct StepFailed;

impl From<super::gpuvm::ApplyError> for StepFailed {
    fn from(_: super::gpuvm::ApplyError) -> Self {
        StepFailed
    }
}
