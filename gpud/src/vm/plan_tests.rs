//! Named cases of the planners: the 15 documented drm_gpuvm sm_map diagrams (units are
//! pages; `bo1+10` is BO 1 at page offset 10), then the cases around them (several mappings,
//! unbacked mappings, gaps), sm_unmap, prefetch, bo_unmap and applying plans.

use super::gpuvm::{ApplyError, GpuVm};
use super::mapping::MappingSpec;
use super::plan::{PlanError, Step};
use super::testutil::{bo, describe, layout, map, new_vm, r, spec, P};
use super::undo::UndoLog;
use super::va::{VaError, VaSpace};
use super::vm_bo::tests::VM_RESV;
use crate::types::{BoId, CpuVa, GpuVa, VmId};

/// Sets up `old` mappings of BO 1, maps `req`, checks the plan and the resulting layout.
fn case(old: &[(u64, u64, u64)], req: (u64, u64, u64, u64), steps: &[&str], after: &[&str]) {
    let mut vm = new_vm();
    let b1 = bo(&mut vm, 1);
    for &(s, n, off) in old {
        map(&mut vm, &spec(s, n, &b1, off));
    }
    let (s, n, id, off) = req;
    let b = bo(&mut vm, id);
    let plan = map(&mut vm, &spec(s, n, &b, off));
    assert_eq!(describe(&plan), steps);
    assert_eq!(layout(&vm), after);
}

#[test]
fn case01_identical_mapping_is_unmapped_with_keep_and_mapped_again() {
    case(
        &[(0, 1, 10)],
        (0, 1, 1, 10),
        &["unmap 0..1 keep", "map 0..1 bo1+10"],
        &["0..1 bo1+10"],
    );
}

#[test]
fn case02_identical_but_other_offset_replaces_without_keep() {
    case(
        &[(0, 1, 10)],
        (0, 1, 1, 50),
        &["unmap 0..1", "map 0..1 bo1+50"],
        &["0..1 bo1+50"],
    );
}

#[test]
fn case03_identical_but_other_bo_replaces_without_keep() {
    case(
        &[(0, 1, 10)],
        (0, 1, 2, 10),
        &["unmap 0..1", "map 0..1 bo2+10"],
        &["0..1 bo2+10"],
    );
}

#[test]
fn case04_existing_is_left_aligned_subset_of_request() {
    case(
        &[(0, 1, 10)],
        (0, 2, 1, 10),
        &["unmap 0..1 keep", "map 0..2 bo1+10"],
        &["0..2 bo1+10"],
    );
}

#[test]
fn case05_request_is_left_aligned_subset_with_other_bo() {
    case(
        &[(0, 2, 10)],
        (0, 1, 2, 10),
        &["remap 0..2 next 1..2 bo1+11", "map 0..1 bo2+10"],
        &["0..1 bo2+10", "1..2 bo1+11"],
    );
}

#[test]
fn case06_request_is_left_aligned_subset_with_same_bo_keeps() {
    case(
        &[(0, 2, 10)],
        (0, 1, 1, 10),
        &["remap 0..2 next 1..2 bo1+11 keep", "map 0..1 bo1+10"],
        &["0..1 bo1+10", "1..2 bo1+11"],
    );
}

#[test]
fn case07_request_is_right_aligned_subset_with_other_bo() {
    case(
        &[(0, 2, 10)],
        (1, 1, 2, 50),
        &["remap 0..2 prev 0..1 bo1+10", "map 1..2 bo2+50"],
        &["0..1 bo1+10", "1..2 bo2+50"],
    );
}

#[test]
fn case08_request_is_right_aligned_subset_with_contiguous_offset_keeps() {
    case(
        &[(0, 2, 10)],
        (1, 1, 1, 11),
        &["remap 0..2 prev 0..1 bo1+10 keep", "map 1..2 bo1+11"],
        &["0..1 bo1+10", "1..2 bo1+11"],
    );
}

#[test]
fn case09_request_overlaps_the_end_with_other_bo() {
    case(
        &[(0, 2, 10)],
        (1, 2, 2, 50),
        &["remap 0..2 prev 0..1 bo1+10", "map 1..3 bo2+50"],
        &["0..1 bo1+10", "1..3 bo2+50"],
    );
}

#[test]
fn case10_request_overlaps_the_end_with_contiguous_offset_keeps() {
    case(
        &[(0, 2, 10)],
        (1, 2, 1, 11),
        &["remap 0..2 prev 0..1 bo1+10 keep", "map 1..3 bo1+11"],
        &["0..1 bo1+10", "1..3 bo1+11"],
    );
}

#[test]
fn case11_centered_subset_with_other_bo_splits_in_two() {
    case(
        &[(0, 3, 10)],
        (1, 1, 2, 50),
        &[
            "remap 0..3 prev 0..1 bo1+10 next 2..3 bo1+12",
            "map 1..2 bo2+50",
        ],
        &["0..1 bo1+10", "1..2 bo2+50", "2..3 bo1+12"],
    );
}

#[test]
fn case12_centered_contiguous_subset_keeps() {
    case(
        &[(0, 3, 10)],
        (1, 1, 1, 11),
        &[
            "remap 0..3 prev 0..1 bo1+10 next 2..3 bo1+12 keep",
            "map 1..2 bo1+11",
        ],
        &["0..1 bo1+10", "1..2 bo1+11", "2..3 bo1+12"],
    );
}

#[test]
fn case13_existing_is_right_aligned_subset_of_request() {
    case(
        &[(1, 1, 11)],
        (0, 2, 1, 10),
        &["unmap 1..2 keep", "map 0..2 bo1+10"],
        &["0..2 bo1+10"],
    );
}

#[test]
fn case14_existing_is_centered_subset_of_request() {
    case(
        &[(1, 1, 11)],
        (0, 3, 1, 10),
        &["unmap 1..2 keep", "map 0..3 bo1+10"],
        &["0..3 bo1+10"],
    );
}

#[test]
fn case15_request_overlaps_the_beginning_with_other_bo() {
    case(
        &[(1, 2, 10)],
        (0, 2, 2, 50),
        &["remap 1..3 next 2..3 bo1+11", "map 0..2 bo2+50"],
        &["0..2 bo2+50", "2..3 bo1+11"],
    );
}

#[test]
fn request_spanning_several_mappings_remaps_only_the_ends() {
    let mut vm = new_vm();
    let (b1, b2, b3) = (bo(&mut vm, 1), bo(&mut vm, 2), bo(&mut vm, 3));
    map(&mut vm, &spec(0, 2, &b1, 10));
    map(&mut vm, &spec(2, 1, &b2, 0));
    map(&mut vm, &spec(4, 2, &b1, 20));
    let plan = map(&mut vm, &spec(1, 4, &b3, 0));
    assert_eq!(
        describe(&plan),
        [
            "remap 0..2 prev 0..1 bo1+10",
            "unmap 2..3",
            "remap 4..6 next 5..6 bo1+21",
            "map 1..5 bo3+0"
        ]
    );
    assert_eq!(layout(&vm), ["0..1 bo1+10", "1..5 bo3+0", "5..6 bo1+21"]);
}

#[test]
fn plan_lists_each_touched_vm_bo_once() {
    let mut vm = new_vm();
    let (b1, b2, b3) = (bo(&mut vm, 1), bo(&mut vm, 2), bo(&mut vm, 3));
    map(&mut vm, &spec(0, 2, &b1, 0));
    map(&mut vm, &spec(2, 1, &b2, 0));
    map(&mut vm, &spec(3, 2, &b1, 3));
    map(&mut vm, &MappingSpec::sparse(r(5, 1)));
    let plan = vm.plan_map(&spec(1, 5, &b3, 0)).unwrap();
    let ids: Vec<BoId> = plan.vm_bos().iter().map(|b| b.bo_id()).collect();
    assert_eq!(ids, [BoId(1), BoId(2), BoId(3)]);
    assert!(vm.plan_unmap(r(9, 1)).unwrap().vm_bos().is_empty());
}

#[test]
fn null_mappings_never_keep() {
    let mut vm = new_vm();
    map(&mut vm, &MappingSpec::sparse(r(0, 3)));
    let plan = map(&mut vm, &MappingSpec::sparse(r(1, 1)));
    assert_eq!(
        describe(&plan),
        ["remap 0..3 prev 0..1 null next 2..3 null", "map 1..2 null"]
    );
    let plan = map(&mut vm, &MappingSpec::sparse(r(1, 1)));
    assert_eq!(describe(&plan), ["unmap 1..2", "map 1..2 null"]);
}

#[test]
fn userptr_mappings_never_keep_but_split_offsets_move() {
    let mut vm = new_vm();
    let u = |s, n, cpu| MappingSpec::userptr(r(s, n), CpuVa(cpu * P), false).unwrap();
    map(&mut vm, &u(0, 3, 100));
    let plan = map(&mut vm, &u(1, 1, 101));
    assert_eq!(
        describe(&plan),
        [
            "remap 0..3 prev 0..1 user+100 next 2..3 user+102",
            "map 1..2 user+101"
        ]
    );
}

#[test]
fn neighbours_are_never_merged_or_touched() {
    let mut vm = new_vm();
    let b1 = bo(&mut vm, 1);
    map(&mut vm, &spec(0, 1, &b1, 0));
    map(&mut vm, &spec(2, 1, &b1, 2));
    let plan = map(&mut vm, &spec(1, 1, &b1, 1));
    assert_eq!(describe(&plan), ["map 1..2 bo1+1"]);
    assert_eq!(layout(&vm), ["0..1 bo1+0", "1..2 bo1+1", "2..3 bo1+2"]);
}

#[test]
fn sm_unmap_cuts_both_ends_and_removes_the_inside() {
    let mut vm = new_vm();
    let (b1, b2) = (bo(&mut vm, 1), bo(&mut vm, 2));
    map(&mut vm, &spec(0, 4, &b1, 10));
    map(&mut vm, &spec(4, 1, &b2, 0));
    map(&mut vm, &spec(5, 3, &b1, 30));
    let plan = vm.plan_unmap(r(2, 5)).unwrap();
    assert_eq!(
        describe(&plan),
        [
            "remap 0..4 prev 0..2 bo1+10",
            "unmap 4..5",
            "remap 5..8 next 7..8 bo1+32"
        ]
    );
    assert_eq!(plan.counts(), (0, 2, 1, 0));
    vm.apply_plan(plan, &mut UndoLog::new()).unwrap();
    assert_eq!(layout(&vm), ["0..2 bo1+10", "7..8 bo1+32"]);
    let centred = vm.plan_unmap(r(0, 1)).unwrap();
    assert_eq!(describe(&centred), ["remap 0..2 next 1..2 bo1+11"]);
    assert!(vm.plan_unmap(r(3, 4)).unwrap().is_empty());
}

#[test]
fn remap_hole_is_the_part_no_piece_keeps() {
    let mut vm = new_vm();
    let b1 = bo(&mut vm, 1);
    map(&mut vm, &spec(0, 8, &b1, 0));
    let plan = vm.plan_unmap(r(2, 3)).unwrap();
    let Step::Remap(rm) = &plan.steps()[0] else {
        panic!("expected a remap, got {:?}", describe(&plan));
    };
    assert_eq!(rm.hole(), r(2, 3));
}

#[test]
fn prefetch_yields_one_step_per_overlapping_mapping_without_splitting() {
    let mut vm = new_vm();
    let b1 = bo(&mut vm, 1);
    map(&mut vm, &spec(0, 4, &b1, 0));
    map(&mut vm, &spec(6, 4, &b1, 6));
    let plan = vm.plan_prefetch(r(2, 6)).unwrap();
    assert_eq!(describe(&plan), ["prefetch 0..4", "prefetch 6..10"]);
    let before = layout(&vm);
    vm.apply_plan(plan, &mut UndoLog::new()).unwrap();
    assert_eq!(layout(&vm), before);
}

#[test]
fn bo_unmap_removes_every_mapping_of_that_bo_only() {
    let mut vm = new_vm();
    let (b1, b2) = (bo(&mut vm, 1), bo(&mut vm, 2));
    map(&mut vm, &spec(0, 2, &b1, 0));
    map(&mut vm, &spec(2, 2, &b2, 0));
    map(&mut vm, &spec(8, 1, &b1, 5));
    let plan = vm.plan_bo_unmap(BoId(1)).unwrap();
    assert_eq!(describe(&plan), ["unmap 0..2", "unmap 8..9"]);
    vm.apply_plan(plan, &mut UndoLog::new()).unwrap();
    assert_eq!(layout(&vm), ["2..4 bo2+0"]);
    assert_eq!(vm.bo_mappings(BoId(1)).count(), 0);
    assert!(vm.plan_bo_unmap(BoId(1)).unwrap().is_empty());
    vm.check_invariants().unwrap();
}

#[test]
fn requests_outside_the_space_or_in_the_reserved_region_are_refused() {
    let space = VaSpace::new(GpuVa(0), 64 * P, Some(r(0, 4))).unwrap();
    let mut vm = GpuVm::new(VmId(1), VM_RESV, space);
    let b1 = bo(&mut vm, 1);
    assert!(matches!(
        vm.plan_map(&spec(3, 2, &b1, 0)),
        Err(PlanError::Va(VaError::Reserved { .. }))
    ));
    assert!(matches!(
        vm.plan_map(&spec(63, 2, &b1, 0)),
        Err(PlanError::Va(VaError::OutsideSpace { .. }))
    ));
    assert!(matches!(
        vm.plan_unmap(r(2, 4)),
        Err(PlanError::Va(VaError::Reserved { .. }))
    ));
    assert!(vm.plan_map(&spec(4, 2, &b1, 0)).is_ok());
}

#[test]
fn foreign_vm_bo_is_refused_by_planner_and_apply() {
    let mut other = GpuVm::new(VmId(2), VM_RESV, *new_vm().space());
    let foreign = bo(&mut other, 1);
    let mut vm = new_vm();
    let req = spec(0, 1, &foreign, 0);
    assert_eq!(vm.plan_map(&req).err(), Some(PlanError::ForeignVmBo));
    let plan = other.plan_map(&req).unwrap();
    assert_eq!(
        vm.apply_plan(plan, &mut UndoLog::new()),
        Err(ApplyError::ForeignVmBo {
            bo: BoId(1),
            owner: VmId(2)
        })
    );
    assert!(vm.tree().is_empty());
}

#[test]
fn stale_plan_is_refused_without_changing_the_vm() {
    let mut vm = new_vm();
    let b1 = bo(&mut vm, 1);
    map(&mut vm, &spec(0, 4, &b1, 0));
    let stale = vm.plan_map(&spec(1, 1, &b1, 9)).unwrap();
    map(&mut vm, &spec(0, 4, &b1, 0));
    let before = layout(&vm);
    let err = vm.apply_plan(stale, &mut UndoLog::new()).unwrap_err();
    assert!(matches!(err, ApplyError::Stale { .. }), "{err:?}");
    assert_eq!(layout(&vm), before);
    let overlapping = vm.plan_map(&spec(8, 1, &b1, 0)).unwrap();
    map(&mut vm, &spec(8, 2, &b1, 0));
    assert!(matches!(
        vm.apply_plan(overlapping, &mut UndoLog::new()),
        Err(ApplyError::Overlap(_))
    ));
}
