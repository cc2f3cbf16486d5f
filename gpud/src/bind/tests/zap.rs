//! The notifier-safe zap: PTEs cleared in place and the TLB invalidated (proved through
//! simgpu's stale TLB: a GPU access after the zap must not reach the old backing), part of a
//! 2 MiB page, waiting for pending binds on the range, running while `vm.lock` is held, and
//! concurrently with binds and faults on one VM (the lock-order checker is on in tests).

use super::rig::*;
use crate::bind::{BindFlags, BindOp, BindSync, VmFlags};
use crate::sync::{Fence, FenceContext, Syncobj};
use crate::types::GpuVa;
use simgpu::mmu::Access;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const VA: u64 = 0x2_0000_0000;
const OUT: u64 = 0x4_0000_0000;
const FAULT: VmFlags = VmFlags::LR_MODE.union(VmFlags::FAULT_MODE);

/// In a scratch VM, GPU accesses after the zap hit the scratch page, never the BO whose
/// translations the TLB cached before it. Without the invalidation the stores land in the BO.
#[test]
fn a_zapped_range_leaves_the_ptes_and_the_tlb() {
    let r = rig();
    let t = r.vm(VmFlags::SCRATCH_PAGE);
    let (bo, out) = (r.bo(4 * K4), r.bo(K4));
    t.bind(&[
        BindOp::map(&bo, 0, VA, 4 * K4),
        BindOp::map(&out, 0, OUT, K4),
    ])
    .unwrap();
    write(&bo, 0, 42);
    // Reads and writes through the range: its translations are now cached.
    t.copy8(VA, OUT).unwrap();
    t.store(VA + 8, 1).unwrap();
    t.store(VA + 3 * K4, 1).unwrap();
    assert_eq!((read(&out, 0), read(&bo, 8)), (42, 1));
    t.vm.zap(VA, 4 * K4).unwrap();
    let tr = r.translate(&t.vm, VA, Access::Write).unwrap();
    assert_ne!(tr.phys, bo_pa(&bo, 0), "the walker still finds the BO");
    t.store(VA + 8, 2).unwrap();
    t.store(VA + 3 * K4, 2).unwrap();
    assert_eq!(
        (read(&bo, 8), read(&bo, 3 * K4)),
        (1, 1),
        "a GPU write after the zap reached the zapped BO"
    );
    // Only the PTEs went: the mapping is still there, and the other mapping untouched.
    assert!(t.vm.backing_at(GpuVa(VA)).is_some());
    t.copy8(OUT, OUT + 8).unwrap();
    assert_eq!(read(&out, 8), 42);
}

/// Without scratch pages an access after the zap faults.
#[test]
fn an_access_after_the_zap_faults() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(K4);
    t.bind(&[BindOp::map(&bo, 0, VA, K4)]).unwrap();
    t.store(VA, 1).unwrap();
    t.vm.zap(VA, K4).unwrap();
    assert!(t.store(VA + 8, 2).is_err(), "the store faults");
    assert_eq!(read(&bo, 8), 0);
}

/// Zapping one 4 KiB page of a 2 MiB page demotes it in place (its hidden table is written
/// out): the rest of the 2 MiB still translates to the same memory.
#[test]
fn zapping_part_of_a_2m_page_keeps_the_rest() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(2 * MIB);
    let va = 0x8000_0000;
    t.bind(&[BindOp::map(&bo, 0, va, 2 * MIB)]).unwrap();
    let tables = t.vm.with_pt(|pt| pt.stats().tables);
    t.vm.zap(va + 5 * K4, K4).unwrap();
    assert!(r.translate(&t.vm, va + 5 * K4, Access::Read).is_none());
    for p in [0, 4, 6, 511] {
        let tr = r.translate(&t.vm, va + p * K4, Access::Read).unwrap();
        assert_eq!(tr.phys, bo_pa(&bo, p * K4), "page {p}");
    }
    assert_eq!(
        t.vm.with_pt(|pt| pt.stats().tables),
        tables,
        "a zap allocates or frees no table"
    );
    // A rebind of the range makes it whole again.
    t.bind(&[BindOp::map(&bo, 0, va, 2 * MIB)]).unwrap();
    t.store(va + 5 * K4, 7).unwrap();
    assert_eq!(read(&bo, 5 * K4), 7);
}

/// A zap runs while another thread holds `vm.lock` (a bind waiting for the very memory the
/// notifier invalidates would): it takes only the page-table lock.
#[test]
fn a_zap_does_not_need_vm_lock() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(K4);
    t.bind(&[BindOp::map(&bo, 0, VA, K4)]).unwrap();
    let vm = t.vm.clone();
    let guard = t.vm.lock.write();
    let zap = std::thread::spawn(move || vm.zap(VA, K4));
    let done = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        zap.is_finished()
    });
    drop(guard);
    assert!(done, "the zap waited for vm.lock");
    zap.join().unwrap().unwrap();
    assert!(r.translate(&t.vm, VA, Access::Read).is_none());
}

/// A bind job committed before the zap but still pending would write its entries back after
/// the zap: the zap waits for it.
#[test]
fn a_zap_waits_for_a_pending_bind_on_the_range() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(2 * K4);
    t.bind(&[BindOp::map(&bo, 0, VA, K4)]).unwrap();
    let gate = Fence::new(FenceContext::alloc(), 1);
    let s = Syncobj::new();
    s.replace_fence(Some(gate.clone()));
    let pending = t
        .bind_async(
            &[BindOp::map(&bo, K4, VA + K4, K4)],
            &[BindSync::Wait(s, None)],
        )
        .unwrap();
    let vm = t.vm.clone();
    let zap = std::thread::spawn(move || vm.zap(VA, 2 * K4));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!zap.is_finished(), "the zap ran before the pending bind");
    gate.signal().unwrap();
    zap.join().unwrap().unwrap();
    assert!(pending.is_signalled());
    assert!(r.translate(&t.vm, VA + K4, Access::Read).is_none());
}

/// Zaps racing binds, unbinds and GPU faults on one fault-mode VM: nothing deadlocks or
/// trips the lock-order checker, every GPU store lands in its BO (a zapped page faults back
/// in), and a range zapped last stays empty until the next fault.
#[test]
fn zaps_race_binds_and_faults() {
    let r = rig();
    let t = r.vm(FAULT);
    let (a, b) = (r.bo(4 * K4), r.bo(16 * K4));
    t.bind(&[BindOp::map(&b, 0, VA, 16 * K4)]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let binder = {
        let (vm, a, stop) = (t.vm.clone(), a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                let map = BindOp::map(&a, 0, OUT, 4 * K4).with_flags(BindFlags::IMMEDIATE);
                vm.bind(None, &[map], &[]).unwrap();
                vm.bind(None, &[BindOp::unmap(OUT, 4 * K4)], &[]).unwrap();
                n += 1;
            }
        })
    };
    let zapper = {
        let (vm, stop) = (t.vm.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                vm.zap(VA + (n % 16) * K4, K4).unwrap();
                vm.zap(OUT, 4 * K4).unwrap();
                n += 1;
            }
        })
    };
    for i in 0..40u64 {
        let page = i % 16;
        t.store(VA + page * K4 + 8 * (i / 16), 1000 + i).unwrap();
        assert_eq!(read(&b, page * K4 + 8 * (i / 16)), 1000 + i, "store {i}");
    }
    stop.store(true, Ordering::Relaxed);
    binder.join().unwrap();
    zapper.join().unwrap();
    t.vm.zap(VA, 16 * K4).unwrap();
    assert!(r.translate(&t.vm, VA, Access::Read).is_none());
    t.store(VA + 8, 5).unwrap();
    assert_eq!(read(&b, 8), 5, "the fault repopulated after the last zap");
}
