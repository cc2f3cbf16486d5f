//! Tests of the VM object: undo logs and unwinding, step handlers and tokens, the vm_bo
//! registry (obtain/put/prune) and its interplay with the lists.

use super::gpuvm::{ApplyError, GpuVm};
use super::mapping::{MappingFlags, MappingId, MappingSpec};
use super::plan::Step;
use super::testutil::{bo, layout, map, new_vm, r, spec};
use super::undo::{Applied, UndoLog};
use super::vm_bo::tests::{FakeBo, VM, VM_RESV};
use super::vm_bo::{VmBoError, VmBoLists};
use crate::types::{BoId, GpuVa, ResvId, VmId};
use std::sync::Arc;

type Snapshot = (
    Vec<(MappingId, String)>,
    Vec<(BoId, usize, Vec<GpuVa>)>,
    MappingId,
);

/// Everything observable about a VM: mappings with ids, vm_bo links and refcounts, next id.
fn snapshot(vm: &GpuVm) -> Snapshot {
    let ids: Vec<_> = vm.tree().iter().map(|m| m.id()).collect();
    let maps = ids.into_iter().zip(layout(vm)).collect();
    let bos = vm
        .vm_bos()
        .map(|b| {
            let id = b.bo_id();
            let starts = vm.bo_mappings(id).map(|m| m.range().start()).collect();
            (id, vm.bo_refcount(id).unwrap_or(0), starts)
        })
        .collect();
    (maps, bos, vm.next_mapping_id())
}

#[test]
fn unwind_restores_mappings_ids_links_and_counter_exactly() {
    let mut vm = new_vm();
    let (b1, b2) = (bo(&mut vm, 1), bo(&mut vm, 2));
    map(&mut vm, &spec(0, 8, &b1, 0));
    map(&mut vm, &spec(10, 2, &b2, 4));
    let before = snapshot(&vm);
    let mut log = UndoLog::new();
    for req in [spec(2, 2, &b2, 0), spec(6, 6, &b1, 40), spec(0, 1, &b2, 9)] {
        let plan = vm.plan_map(&req).unwrap();
        vm.apply_plan(plan, &mut log).unwrap();
    }
    let plan = vm.plan_unmap(r(3, 4)).unwrap();
    vm.apply_plan(plan, &mut log).unwrap();
    vm.check_invariants().unwrap();
    assert_ne!(snapshot(&vm), before);
    assert!(!log.is_empty());
    vm.unwind(log).unwrap();
    vm.check_invariants().unwrap();
    assert_eq!(snapshot(&vm), before);
}

#[test]
fn unwind_drops_a_registry_entry_that_linking_created() {
    let mut vm = new_vm();
    let fake = Arc::new(FakeBo {
        id: BoId(7),
        resv: ResvId(5),
        size: 1 << 20,
    });
    let (vb, created) = vm.bo_obtain(fake);
    assert!(created);
    vm.bo_put(BoId(7)).unwrap();
    assert_eq!(vm.prune_vm_bos(&mut VmBoLists::new(VM)).len(), 1);
    assert!(vm.bo_find(BoId(7)).is_none());
    let mut log = UndoLog::new();
    let plan = vm.plan_map(&spec(0, 1, &vb, 0)).unwrap();
    vm.apply_plan(plan, &mut log).unwrap();
    assert_eq!(vm.bo_refcount(BoId(7)), Some(1));
    vm.unwind(log).unwrap();
    assert!(vm.bo_find(BoId(7)).is_none());
    assert!(vm.tree().is_empty());
}

#[test]
fn a_log_belongs_to_one_vm() {
    let mut vm = new_vm();
    let mut other = GpuVm::new(VmId(2), VM_RESV, *vm.space());
    let mut log = UndoLog::new();
    let plan = vm.plan_map(&MappingSpec::sparse(r(0, 1))).unwrap();
    vm.apply_plan(plan, &mut log).unwrap();
    let plan = other.plan_map(&MappingSpec::sparse(r(0, 1))).unwrap();
    assert_eq!(
        other.apply_plan(plan, &mut log),
        Err(ApplyError::ForeignLog { owner: VM })
    );
    assert_eq!(other.unwind(log), Err(ApplyError::ForeignLog { owner: VM }));
    assert!(other.tree().is_empty());
}

#[test]
fn step_handler_sees_each_step_before_it_is_committed() {
    let mut vm = new_vm();
    let b1 = bo(&mut vm, 1);
    map(&mut vm, &spec(0, 3, &b1, 0));
    let plan = vm.plan_map(&MappingSpec::sparse(r(1, 1))).unwrap();
    let mut seen = Vec::new();
    let mut log = UndoLog::new();
    vm.apply_with(&plan, &mut log, |step, commit| {
        let mapped_before = commit.vm().tree().len();
        seen.push((matches!(step, Step::Remap(_)), mapped_before));
        commit.commit()
    })
    .unwrap();
    assert_eq!(seen, [(true, 1), (false, 2)]);
    assert_eq!(vm.tree().len(), 3);
}

#[test]
fn step_handler_cannot_return_a_token_of_another_step() {
    let mut vm = new_vm();
    let mut other = GpuVm::new(VmId(2), VM_RESV, *vm.space());
    let probe = other.plan_map(&MappingSpec::sparse(r(0, 1))).unwrap();
    let plan = vm.plan_map(&MappingSpec::sparse(r(0, 1))).unwrap();
    let err = vm
        .apply_with(
            &plan,
            &mut UndoLog::new(),
            |_, _commit| -> Result<Applied, ApplyError> {
                let step = &probe.steps()[0];
                other.apply(step, &mut UndoLog::new())
            },
        )
        .unwrap_err();
    assert_eq!(err, ApplyError::WrongToken);
    assert!(vm.tree().is_empty());
}

#[test]
fn handler_failure_midway_unwinds_to_the_original_vm() {
    let mut vm = new_vm();
    let b1 = bo(&mut vm, 1);
    map(&mut vm, &spec(0, 4, &b1, 0));
    let before = snapshot(&vm);
    let plan = vm.plan_map(&MappingSpec::sparse(r(1, 2))).unwrap();
    let mut log = UndoLog::new();
    let mut n = 0;
    let r = vm.apply_with(&plan, &mut log, |_, commit| {
        n += 1;
        if n == 2 {
            return Err("no page-table memory");
        }
        commit.commit().map_err(|_| "apply")
    });
    assert_eq!(r, Err("no page-table memory"));
    assert_ne!(snapshot(&vm), before);
    vm.unwind(log).unwrap();
    assert_eq!(snapshot(&vm), before);
}

impl From<ApplyError> for &'static str {
    fn from(_: ApplyError) -> Self {
        "apply"
    }
}

#[test]
fn vm_bo_is_unique_per_bo_and_counts_holds_and_mappings() {
    let mut vm = new_vm();
    let fake = Arc::new(FakeBo {
        id: BoId(3),
        resv: ResvId(9),
        size: 1 << 20,
    });
    let (a, created_a) = vm.bo_obtain(fake.clone());
    let (b, created_b) = vm.bo_obtain(fake);
    assert!(created_a && !created_b && Arc::ptr_eq(&a, &b));
    assert!(a.is_external());
    assert_eq!(vm.bo_refcount(BoId(3)), Some(2));
    map(&mut vm, &spec(0, 1, &a, 0));
    map(&mut vm, &spec(4, 1, &a, 1));
    assert_eq!(vm.bo_refcount(BoId(3)), Some(4));
    vm.bo_put(BoId(3)).unwrap();
    vm.bo_put(BoId(3)).unwrap();
    assert_eq!(
        vm.bo_put(BoId(3)),
        Err(VmBoError::NotHeld {
            bo: BoId(3),
            vm: VM
        })
    );
    assert_eq!(
        vm.bo_put(BoId(8)),
        Err(VmBoError::Unknown {
            bo: BoId(8),
            vm: VM
        })
    );
    let mut lists = VmBoLists::new(VM);
    lists.extobj_add(&a).unwrap();
    assert!(vm.prune_vm_bos(&mut lists).is_empty(), "still mapped");
    let plan = vm.plan_bo_unmap(BoId(3)).unwrap();
    vm.apply_plan(plan, &mut UndoLog::new()).unwrap();
    let pruned = vm.prune_vm_bos(&mut lists);
    assert_eq!(pruned.len(), 1);
    assert!(Arc::ptr_eq(&pruned[0], &a));
    assert!(vm.bo_find(BoId(3)).is_none() && !lists.is_extobj(BoId(3)));
}

#[test]
fn local_and_external_bos_are_told_apart_by_reservation() {
    let vm = new_vm();
    let local = FakeBo {
        id: BoId(1),
        resv: VM_RESV,
        size: 1,
    };
    let ext = FakeBo {
        id: BoId(2),
        resv: ResvId(77),
        size: 1,
    };
    assert!(!vm.is_extobj(&local) && vm.is_extobj(&ext));
}

#[test]
fn invalidated_flag_is_set_and_cleared_in_place() {
    let mut vm = new_vm();
    map(&mut vm, &MappingSpec::sparse(r(2, 2)));
    assert!(vm.set_invalidated(GpuVa(2 * super::testutil::P), true));
    assert!(vm
        .tree()
        .iter()
        .all(|m| m.flags().contains(MappingFlags::INVALIDATED)));
    assert!(vm.set_invalidated(GpuVa(2 * super::testutil::P), false));
    assert!(!vm.set_invalidated(GpuVa(0), true));
    assert_eq!(
        vm.tree().iter().next().map(|m| m.flags()),
        Some(MappingFlags::SPARSE)
    );
}

#[test]
fn plan_made_before_an_invalidation_is_stale() {
    let mut vm = new_vm();
    let b1 = bo(&mut vm, 1);
    map(&mut vm, &spec(0, 4, &b1, 0));
    let plan = vm.plan_map(&spec(1, 1, &b1, 1)).unwrap();
    assert!(vm.set_invalidated(GpuVa(0), true));
    let err = vm.apply_plan(plan, &mut UndoLog::new()).unwrap_err();
    assert!(matches!(err, ApplyError::Stale { .. }), "{err:?}");
    // Re-planned, the surviving pieces keep the INVALIDATED flag.
    let plan = vm.plan_map(&spec(1, 1, &b1, 1)).unwrap();
    vm.apply_plan(plan, &mut UndoLog::new()).unwrap();
    let flags: Vec<_> = vm.tree().iter().map(|m| m.flags()).collect();
    assert_eq!(
        flags,
        [
            MappingFlags::INVALIDATED,
            MappingFlags::empty(),
            MappingFlags::INVALIDATED
        ]
    );
}

#[test]
fn a_fresh_plan_stops_being_fresh_once_the_tree_changes() {
    let mut vm = new_vm();
    let b1 = bo(&mut vm, 1);
    // Planned into free space, then the space is taken: the plan must be re-checked and
    // refused, not trusted.
    let plan = vm.plan_map(&spec(0, 2, &b1, 0)).unwrap();
    map(&mut vm, &spec(1, 4, &b1, 0));
    assert!(matches!(
        vm.apply_plan(plan, &mut UndoLog::new()),
        Err(ApplyError::Overlap(_))
    ));
    // The same holds after an unwind that restored the tree's contents.
    let plan = vm.plan_map(&spec(8, 1, &b1, 0)).unwrap();
    let mut log = UndoLog::new();
    let other = vm.plan_map(&spec(8, 2, &b1, 3)).unwrap();
    vm.apply_plan(other, &mut log).unwrap();
    vm.unwind(log).unwrap();
    vm.apply_plan(plan, &mut UndoLog::new()).unwrap();
    vm.check_invariants().unwrap();
}

#[test]
fn a_plan_is_only_fresh_on_the_vm_that_made_it() {
    // Two VMs that (wrongly) share an id and a generation: B must still check A's plan.
    let mut a = new_vm();
    let mut b = new_vm();
    map(&mut b, &MappingSpec::sparse(r(0, 1)));
    map(&mut a, &MappingSpec::sparse(r(9, 1)));
    let plan = a.plan_map(&MappingSpec::sparse(r(0, 1))).unwrap();
    assert!(matches!(
        b.apply_plan(plan, &mut UndoLog::new()),
        Err(ApplyError::Overlap(_))
    ));
    b.check_invariants().unwrap();
}

#[derive(Debug, Clone)]
enum RegOp {
    Obtain(u64),
    Put(u64),
    Map(u64, u64),
    Unmap(u64),
    Prune,
}

fn reg_op() -> impl proptest::strategy::Strategy<Value = RegOp> {
    use proptest::prelude::*;
    prop_oneof![
        (0u64..4).prop_map(RegOp::Obtain),
        (0u64..4).prop_map(RegOp::Put),
        (0u64..4, 0u64..16).prop_map(|(b, p)| RegOp::Map(b, p)),
        (0u64..16).prop_map(RegOp::Unmap),
        Just(RegOp::Prune),
    ]
}

proptest::proptest! {
    /// The vm_bo registry against counters: refcount = holds + mapped pages, `put` fails
    /// exactly when nothing is held, and pruning drops exactly the unreferenced vm_bos
    /// (and takes them off the lists).
    #[test]
    fn registry_matches_hold_and_mapping_counts(
        ops in proptest::collection::vec(reg_op(), 1..60),
    ) {
        use std::collections::BTreeMap;
        let mut vm = new_vm();
        let mut lists = VmBoLists::new(VM);
        let fakes: Vec<Arc<FakeBo>> = (0..4)
            .map(|i| Arc::new(FakeBo { id: BoId(i), resv: ResvId(10 + i), size: 1 << 30 }))
            .collect();
        // Oracle: holds per BO, owner of each mapped page (1-page mappings only), live BOs.
        let mut holds = [0usize; 4];
        let mut pages: BTreeMap<u64, u64> = BTreeMap::new();
        let mut live = [false; 4];
        for op in &ops {
            match *op {
                RegOp::Obtain(b) => {
                    let (vb, created) = vm.bo_obtain(fakes[b as usize].clone());
                    proptest::prop_assert_eq!(created, !live[b as usize]);
                    lists.extobj_add(&vb).unwrap();
                    holds[b as usize] += 1;
                    live[b as usize] = true;
                }
                RegOp::Put(b) => {
                    let r = vm.bo_put(BoId(b));
                    proptest::prop_assert_eq!(r.is_ok(), holds[b as usize] > 0);
                    holds[b as usize] = holds[b as usize].saturating_sub(1);
                }
                RegOp::Map(b, p) => {
                    // Mapping needs the vm_bo; take a hold for the call and drop it after.
                    let (vb, _) = vm.bo_obtain(fakes[b as usize].clone());
                    live[b as usize] = true;
                    map(&mut vm, &spec(p, 1, &vb, p));
                    vm.bo_put(BoId(b)).unwrap();
                    pages.insert(p, b);
                }
                RegOp::Unmap(p) => {
                    let plan = vm.plan_unmap(r(p, 1)).unwrap();
                    vm.apply_plan(plan, &mut UndoLog::new()).unwrap();
                    pages.remove(&p);
                }
                RegOp::Prune => {
                    let pruned: Vec<u64> =
                        vm.prune_vm_bos(&mut lists).iter().map(|v| v.bo_id().0).collect();
                    let expect: Vec<u64> = (0..4u64)
                        .filter(|&b| {
                            live[b as usize]
                                && holds[b as usize] == 0
                                && !pages.values().any(|&o| o == b)
                        })
                        .collect();
                    for &b in &expect {
                        live[b as usize] = false;
                        proptest::prop_assert!(!lists.is_extobj(BoId(b)));
                    }
                    proptest::prop_assert_eq!(pruned, expect);
                }
            }
            for b in 0..4u64 {
                let mapped = pages.values().filter(|&&o| o == b).count();
                let expect = live[b as usize].then_some(holds[b as usize] + mapped);
                proptest::prop_assert_eq!(vm.bo_refcount(BoId(b)), expect);
            }
            vm.check_invariants().map_err(proptest::test_runner::TestCaseError::fail)?;
        }
    }
}
