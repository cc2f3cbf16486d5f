//! All or nothing: one test per fail point. Inject, call a bind that maps a new BO (new
//! vm_bo, new tables), cuts an old mapping and unmaps another, and check that the tree,
//! the page tables (stats, live table count, walker read-back), the vm_bo registry and
//! lists and the memory counters are exactly as before; then the same call succeeds.

use super::rig::*;
use crate::bind::failpoint::FailPoint;
use crate::bind::{BindOp, BindSync, ErrorClass, VmFlags};
use crate::device::MemStats;
use crate::mem::bo::Bo;
use crate::sync::Syncobj;
use crate::types::BoId;
use crate::vm::pagetable::PtStats;
use crate::vm::{GpuBo, MappingFlags};
use simgpu::mmu::Access;
use std::sync::Arc;

const VA: u64 = 0x2_0000_0000;
const FAR: u64 = 0x50_0000_0000;

#[derive(Debug, PartialEq)]
struct Snapshot {
    tree: Vec<(u64, u64, Option<BoId>, u64, MappingFlags, u64)>,
    next_id: u64,
    refcounts: Vec<(BoId, Option<usize>)>,
    lists: (Vec<BoId>, Vec<BoId>),
    pt: PtStats,
    walk: Vec<Option<u64>>,
    mem: MemStats,
}

fn snapshot(r: &Rig, t: &TestVm, bos: &[&Arc<Bo>]) -> Snapshot {
    let (tree, next_id, refcounts, pt) = t.vm.with_state(|st| {
        st.gpuvm.check_invariants().unwrap();
        let tree = st
            .gpuvm
            .tree()
            .iter()
            .map(|m| {
                let r = m.range();
                (
                    r.start().get(),
                    r.end().get(),
                    m.bo_id(),
                    m.offset(),
                    m.flags(),
                    m.id().0,
                )
            })
            .collect();
        let refs = bos
            .iter()
            .map(|b| (b.id(), st.gpuvm.bo_refcount(b.id())))
            .collect();
        (
            tree,
            st.gpuvm.next_mapping_id().0,
            refs,
            t.vm.with_pt(|pt| pt.stats()),
        )
    });
    let probes = [VA, VA + 4 * K4, VA + 12 * K4, VA + MIB, FAR, FAR + 15 * K4];
    let walk = probes
        .iter()
        .map(|&va| r.translate(&t.vm, va, Access::Write).map(|t| t.phys))
        .collect();
    Snapshot {
        tree,
        next_id,
        refcounts,
        lists: t.vm.lists_snapshot(),
        pt,
        walk,
        mem: r.stats(),
    }
}

fn run_point(point: FailPoint, skip: u32) {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (a, b, c) = (r.bo(16 * K4), r.bo(K4), r.bo(16 * K4));
    t.bind(&[
        BindOp::map(&a, 0, VA, 16 * K4),
        BindOp::map(&b, 0, VA + MIB, K4),
    ])
    .unwrap();
    let before = snapshot(&r, &t, &[&a, &b, &c]);
    let out = Syncobj::new();
    let ops = [
        BindOp::map(&c, 0, FAR, 16 * K4),
        BindOp::unmap(VA + 4 * K4, 4 * K4),
        BindOp::unmap(VA + MIB, K4),
    ];
    let syncs = [BindSync::Signal(out.clone(), None)];
    r.dev.fail_points().arm(point, skip);
    let err = t.bind_async(&ops, &syncs).unwrap_err();
    assert!(
        !r.dev.fail_points().is_armed(point),
        "{point:?} was not reached"
    );
    assert!(
        matches!(err.class(), ErrorClass::NoMemory | ErrorClass::NoSpace),
        "{point:?}: {err}"
    );
    assert_eq!(
        snapshot(&r, &t, &[&a, &b, &c]),
        before,
        "{point:?} left a trace"
    );
    assert!(out.fence().is_none(), "no out-sync was signalled");
    // The VM still works, and the same call now succeeds.
    t.store(VA + 4 * K4, 1).unwrap();
    assert_eq!(read(&a, 4 * K4), 1);
    let f = t.bind_async(&ops, &syncs).unwrap();
    wait(&f).unwrap();
    assert!(out.is_signalled());
    t.store(FAR + 15 * K4, 2).unwrap();
    assert_eq!(read(&c, 15 * K4), 2);
    assert!(r.translate(&t.vm, VA + 4 * K4, Access::Read).is_none());
    assert!(r.translate(&t.vm, VA + MIB, Access::Read).is_none());
}

#[test]
fn failpoint_sync_parse() {
    run_point(FailPoint::SyncParse, 0);
}

#[test]
fn failpoint_plan_first_op() {
    run_point(FailPoint::Plan, 0);
}

#[test]
fn failpoint_plan_last_op() {
    run_point(FailPoint::Plan, 2);
}

#[test]
fn failpoint_vm_bo_obtain() {
    run_point(FailPoint::VmBoObtain, 0);
}

#[test]
fn failpoint_resv_lock() {
    run_point(FailPoint::ResvLock, 0);
}

#[test]
fn failpoint_bo_validate() {
    run_point(FailPoint::BoValidate, 0);
}

#[test]
fn failpoint_pt_prepare() {
    run_point(FailPoint::PtPrepare, 0);
}

#[test]
fn failpoint_pt_alloc_first_page() {
    run_point(FailPoint::PtAlloc, 0);
}

#[test]
fn failpoint_pt_alloc_mid_batch() {
    run_point(FailPoint::PtAlloc, 1);
}

#[test]
fn failpoint_job_create() {
    run_point(FailPoint::JobCreate, 0);
}

#[test]
fn every_failpoint_is_covered() {
    // The list above names each point; this keeps it honest when points are added.
    assert_eq!(FailPoint::ALL.len(), 8);
}

/// Unbind never fails for lack of memory: with every table allocation failing, unmaps work.
#[test]
fn unbind_never_allocates() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let a = r.bo(16 * K4);
    t.bind(&[BindOp::map(&a, 0, VA, 16 * K4)]).unwrap();
    for _ in 0..8 {
        r.dev.fail_points().arm(FailPoint::PtAlloc, 0);
    }
    t.bind(&[BindOp::unmap(VA + 3 * K4, 5 * K4), BindOp::unmap(VA, K4)])
        .unwrap();
    t.bind(&[BindOp::unmap_all(&a)]).unwrap();
    assert!(r.dev.fail_points().is_armed(FailPoint::PtAlloc));
    r.dev.fail_points().clear();
    assert_eq!(t.vm.with_state(|st| st.gpuvm.tree().len()), 0);
}
