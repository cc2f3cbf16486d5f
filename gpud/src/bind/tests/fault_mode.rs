//! Fault-mode VMs: binds without IMMEDIATE create no PTEs and the first GPU access faults
//! them in; IMMEDIATE and PREFETCH populate at once; an access no mapping covers aborts.

use super::rig::*;
use crate::bind::{BindFlags, BindOp, VmFlags};
use simgpu::mmu::Access;

const VA: u64 = 0x5_0000_0000;
const FAULT: VmFlags = VmFlags::LR_MODE.union(VmFlags::FAULT_MODE);

#[test]
fn bind_without_immediate_creates_no_ptes_then_fault_populates() {
    let r = rig();
    let t = r.vm(FAULT);
    let bo = r.bo(4 * K4);
    t.bind(&[BindOp::map(&bo, 0, VA, 4 * K4)]).unwrap();
    assert!(
        r.translate(&t.vm, VA, Access::Write).is_none(),
        "no PTEs yet"
    );
    t.store(VA + 2 * K4 + 8, 31).unwrap();
    assert_eq!(read(&bo, 2 * K4 + 8), 31);
    assert!(
        r.translate(&t.vm, VA, Access::Write).is_some(),
        "the fault populated the VMA"
    );
}

#[test]
fn immediate_and_prefetch_populate_at_bind() {
    let r = rig();
    let t = r.vm(FAULT);
    let bo = r.bo(4 * K4);
    t.bind(&[BindOp::map(&bo, 0, VA, 2 * K4).with_flags(BindFlags::IMMEDIATE)])
        .unwrap();
    assert!(r.translate(&t.vm, VA + K4, Access::Write).is_some());
    t.bind(&[BindOp::map(&bo, 2 * K4, VA + MIB, 2 * K4)])
        .unwrap();
    assert!(r.translate(&t.vm, VA + MIB, Access::Write).is_none());
    t.bind(&[BindOp::prefetch(VA + MIB, 2 * K4)]).unwrap();
    let tr = r.translate(&t.vm, VA + MIB + K4, Access::Write).unwrap();
    assert_eq!(tr.phys, bo_pa(&bo, 3 * K4));
}

#[test]
fn fault_on_unmapped_address_aborts() {
    let r = rig();
    let t = r.vm(FAULT);
    assert!(t.store(0x6_0000_0000, 1).is_err(), "no mapping: abort");
}
