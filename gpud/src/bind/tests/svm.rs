//! CPU-address mirrors (SVM) on the `svm` seam, with the scripted `FakeMm` as the client's
//! address space: mirror binds (fault-mode only, no PTEs, BO mappings over a mirror and the
//! mirror back over them, EBUSY while ranges are GPU-mapped), ranges created on GPU fault
//! with the largest chunk that fits, the fault path, and CPU-side changes (a GPU access
//! after a change never reaches the old page; a partial unmap destroys the whole range).

use super::rig::*;
use super::userptr::{client, client_vm, eventually, gpu_page, OWNER};
use crate::bind::mirror::RangeInfo;
use crate::bind::{BindOp, ErrorClass, VmFlags};
use crate::svm::fake::FakeMm;
use std::sync::Arc;

const FAULT: VmFlags = VmFlags::LR_MODE.union(VmFlags::FAULT_MODE);
const M2: u64 = 2 * MIB;
const K64: u64 = 64 << 10;
/// A 2 MiB-aligned CPU address (the GPU VA of a mirror is the CPU address).
const CPU: u64 = 0x7f00_0000_0000;
/// The mirror: 1 GiB around `CPU`.
const MIRROR: (u64, u64) = (CPU - 512 * MIB, 1 << 30);

fn mirrored() -> (Rig, Arc<FakeMm>, TestVm) {
    let (r, mm) = client();
    let t = client_vm(&r, FAULT);
    t.bind(&[BindOp::mirror(MIRROR.0, MIRROR.1)]).unwrap();
    (r, mm, t)
}

fn ranges(t: &TestVm) -> Vec<(u64, u64, bool)> {
    t.vm.svm_ranges()
        .into_iter()
        .map(
            |RangeInfo {
                 start, len, mapped, ..
             }| (start, len, mapped),
        )
        .collect()
}

#[test]
fn a_mirror_needs_a_fault_mode_vm_and_writes_no_ptes() {
    let (r, mm) = client();
    let lr = client_vm(&r, VmFlags::LR_MODE);
    let e = lr.bind(&[BindOp::mirror(MIRROR.0, MIRROR.1)]).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Invalid, "{e}");
    let t = client_vm(&r, FAULT);
    mm.map(CPU, M2, true);
    t.bind(&[BindOp::mirror(MIRROR.0, MIRROR.1)]).unwrap();
    assert_eq!(gpu_page(&r, &t, CPU), None, "no PTEs at bind");
    assert!(ranges(&t).is_empty());
    assert_eq!(mm.get_pages_calls(), 0, "nothing resolved at bind");
}

#[test]
fn a_gpu_access_faults_in_the_clients_page() {
    let (r, mm, t) = mirrored();
    mm.map(CPU, 2 * M2, true);
    mm.write_u64(CPU + 8, 42).unwrap();
    let out = out_bo_in_mirror(&r, &t);
    t.copy8(CPU + 8, OUT).unwrap();
    assert_eq!(
        read(&out, 0),
        42,
        "the GPU read the CPU's value at its CPU address"
    );
    t.store(CPU + M2 + 16, 7).unwrap();
    assert_eq!(
        mm.read_u64(CPU + M2 + 16).unwrap(),
        7,
        "the CPU sees the GPU's write"
    );
    // Two 2 MiB ranges, each the fault address's aligned chunk, mapped to the CPU's pages.
    assert_eq!(ranges(&t), vec![(CPU, M2, true), (CPU + M2, M2, true)]);
    assert_eq!(
        gpu_page(&r, &t, CPU + M2 + 5 * K4),
        Some(mm.phys_of(CPU + M2 + 5 * K4).unwrap().get())
    );
    assert_eq!(
        t.vm.svm_stats().faults_by_chunk[0].load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

/// Where the copies land: a BO placed over part of the mirror (a BO mapping may cut it).
const OUT: u64 = CPU - 256 * MIB;

fn out_bo_in_mirror(r: &Rig, t: &TestVm) -> Arc<crate::mem::bo::Bo> {
    let out = r.bo(K4);
    t.bind(&[BindOp::map(&out, 0, OUT, K4)]).unwrap();
    out
}

#[test]
fn chunks_shrink_to_the_cpu_mapping_the_mirror_and_the_neighbours() {
    let (r, mm, t) = mirrored();
    // A 1 MiB CPU mapping: 64 KiB ranges.
    mm.map(CPU, MIB, true);
    t.store(CPU + 3 * K64 + 8, 1).unwrap();
    assert_eq!(ranges(&t), vec![(CPU + 3 * K64, K64, true)]);
    // The mapping grows to 2 MiB: the next fault next to the 64 KiB range cannot take the
    // 2 MiB chunk (it would overlap), but a 64 KiB one.
    mm.map(CPU + MIB, MIB, true);
    t.store(CPU + 8, 2).unwrap();
    assert_eq!(ranges(&t)[0], (CPU, K64, true));
    // An 8 KiB CPU mapping elsewhere: 4 KiB ranges.
    let small = CPU + 8 * M2;
    mm.map(small, 2 * K4, true);
    t.store(small + K4, 3).unwrap();
    assert!(ranges(&t).contains(&(small + K4, K4, true)));
    // A one-page mirror over a large CPU mapping: 4 KiB.
    let t2 = client_vm(&r, FAULT);
    t2.bind(&[BindOp::mirror(CPU + 5 * K64, K4)]).unwrap();
    t2.store(CPU + 5 * K64 + 8, 4).unwrap();
    assert_eq!(ranges(&t2), vec![(CPU + 5 * K64, K4, true)]);
    assert_eq!(mm.read_u64(CPU + 5 * K64 + 8).unwrap(), 4);
}

#[test]
fn without_the_cpu_mappings_bounds_the_pages_decide_the_chunk() {
    let (_r, mm, t) = mirrored();
    mm.hide_mappings(true);
    mm.map(CPU, MIB, true);
    t.store(CPU + 8, 1).unwrap();
    assert_eq!(ranges(&t), vec![(CPU, K64, true)]);
    assert_eq!(mm.read_u64(CPU + 8).unwrap(), 1);
}

#[test]
fn a_fault_outside_any_cpu_mapping_kills_only_that_queue() {
    let (r, mm, t) = mirrored();
    let other = client_vm(&r, FAULT);
    other.bind(&[BindOp::mirror(MIRROR.0, MIRROR.1)]).unwrap();
    mm.map(CPU, K4, true);
    assert!(
        t.store(CPU + M2, 1).is_err(),
        "no CPU mapping: the access aborts"
    );
    assert!(ranges(&t).is_empty());
    assert_eq!(
        t.vm.svm_stats()
            .aborts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The client's other VM goes on.
    other.store(CPU + 8, 5).unwrap();
    assert_eq!(mm.read_u64(CPU + 8).unwrap(), 5);
}

#[test]
fn unmapping_a_mirror_with_gpu_mapped_ranges_is_ebusy() {
    let (r, mm, t) = mirrored();
    mm.map(CPU, M2, true);
    t.store(CPU, 1).unwrap();
    let e = t.bind(&[BindOp::unmap(MIRROR.0, MIRROR.1)]).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Busy, "{e}");
    // A BO over the mapped range cuts the mirror there: EBUSY too; elsewhere it may.
    let bo = r.bo(K4);
    let e = t.bind(&[BindOp::map(&bo, 0, CPU + K4, K4)]).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Busy, "{e}");
    t.bind(&[BindOp::map(&bo, 0, CPU + 4 * M2, K4)]).unwrap();
    t.store(CPU + 4 * M2, 9).unwrap();
    assert_eq!(read(&bo, 0), 9, "the BO mapping over the mirror wins");
    // The mirror re-bound over the BO: the BO mapping goes.
    t.bind(&[BindOp::mirror(CPU + 4 * M2, M2)]).unwrap();
    assert_eq!(gpu_page(&r, &t, CPU + 4 * M2), None);
    // The mirror is intact: the mapped range still works.
    t.store(CPU + 16, 2).unwrap();
    assert_eq!(mm.read_u64(CPU + 16).unwrap(), 2);
    // Once the CPU unmapped the memory, the range is gone and the UNMAP succeeds.
    mm.unmap(CPU, M2);
    t.bind(&[BindOp::unmap(MIRROR.0, MIRROR.1)]).unwrap();
    assert!(ranges(&t).is_empty());
    assert_eq!(t.vm.with_state(|st| st.gpuvm.tree().len()), 0);
    eventually("every page released", || mm.pinned() == 0);
}

/// The fidelity test: a different page at the same CPU address, with new data; the next
/// GPU access reaches the new page. Without the notifier's zap of the SVM range the PTE
/// would still point at the old (still pinned) page.
#[test]
fn after_a_cpu_change_the_gpu_never_reaches_the_old_page() {
    let (r, mm, t) = mirrored();
    let out = out_bo_in_mirror(&r, &t);
    mm.map(CPU, M2, true);
    mm.write_u64(CPU, 1).unwrap();
    t.copy8(CPU, OUT).unwrap();
    assert_eq!(read(&out, 0), 1);
    let old = mm.phys_of(CPU).unwrap();
    // mmap over it: different pages, an Unmap event.
    mm.map(CPU, M2, true);
    mm.write_u64(CPU, 2).unwrap();
    assert_ne!(mm.phys_of(CPU).unwrap(), old);
    assert_ne!(
        gpu_page(&r, &t, CPU),
        Some(old.get()),
        "the old PTE was zapped"
    );
    t.copy8(CPU, OUT).unwrap();
    assert_eq!(read(&out, 0), 2, "the GPU read the new page");
    t.store(CPU + 8, 3).unwrap();
    assert_eq!(
        mm.read_u64(CPU + 8).unwrap(),
        3,
        "the GPU wrote the new page"
    );
    assert_eq!(gpu_page(&r, &t, CPU), Some(mm.phys_of(CPU).unwrap().get()));
    // madvise(DONTNEED) and mremap: the same.
    mm.remove(CPU, K4);
    t.store(CPU + 16, 4).unwrap();
    assert_eq!(mm.read_u64(CPU + 16).unwrap(), 4);
    mm.remap(CPU, M2, CPU + 4 * M2);
    assert_eq!(mm.read_u64(CPU + 4 * M2 + 16).unwrap(), 4, "the data moved");
    t.copy8(CPU + 4 * M2 + 16, OUT).unwrap();
    assert_eq!(read(&out, 0), 4, "the GPU follows the move");
    assert!(t.store(CPU, 5).is_err(), "the old address maps nothing now");
    eventually("only the live ranges' pins remain", || {
        mm.pinned() == ranges(&t).iter().filter(|r| r.2).count()
    });
}

/// SA-partial-munmap-cpu-fault: a partial unmap destroys the whole 2 MiB range (never
/// split); the next fault rebuilds what is still mapped.
#[test]
fn a_partial_unmap_destroys_the_whole_range_and_the_next_fault_rebuilds() {
    let (r, mm, t) = mirrored();
    mm.map(CPU, M2, true);
    t.store(CPU, 11).unwrap();
    assert_eq!(ranges(&t), vec![(CPU, M2, true)]);
    assert_eq!(mm.read_u64(CPU).unwrap(), 11);
    mm.unmap(CPU + MIB, MIB);
    let rs = t.vm.svm_ranges();
    assert!(rs.iter().all(|r| !r.mapped && r.unmapped), "{rs:?}");
    assert_eq!(
        gpu_page(&r, &t, CPU),
        None,
        "the surviving half's PTEs went too"
    );
    eventually("the range's pages were released", || mm.pinned() == 0);
    t.store(CPU + 8, 12).unwrap();
    // Garbage collected first; the surviving 1 MiB takes 64 KiB chunks.
    assert_eq!(ranges(&t), vec![(CPU, K64, true)]);
    assert_eq!(
        (mm.read_u64(CPU).unwrap(), mm.read_u64(CPU + 8).unwrap()),
        (11, 12)
    );
    assert!(
        t.store(CPU + MIB + 8, 1).is_err(),
        "the unmapped half aborts"
    );
}

/// SA-partial-remap-middle-no-cpu-fault: munmap the middle and map new memory there.
#[test]
fn a_remap_in_the_middle_rebuilds_the_range() {
    let (_r, mm, t) = mirrored();
    mm.map(CPU, M2, true);
    t.store(CPU, 1).unwrap();
    mm.unmap(CPU + MIB / 2, MIB);
    mm.map(CPU + MIB / 2, MIB, true);
    t.store(CPU + MIB + MIB / 2 + 8, 2).unwrap();
    t.store(CPU + MIB, 3).unwrap();
    assert_eq!(mm.read_u64(CPU).unwrap(), 1);
    assert_eq!(mm.read_u64(CPU + MIB + MIB / 2 + 8).unwrap(), 2);
    assert_eq!(mm.read_u64(CPU + MIB).unwrap(), 3);
    // The CPU mapping is whole again (adjacent mappings merge): 2 MiB.
    assert_eq!(ranges(&t), vec![(CPU, M2, true)]);
}

#[test]
fn client_exit_releases_every_page() {
    let (r, mm, t) = mirrored();
    mm.map(CPU, 2 * M2, true);
    t.store(CPU, 1).unwrap();
    t.store(CPU + M2, 1).unwrap();
    assert_eq!(mm.pinned(), 2);
    r.dev.forget_owner(OWNER);
    assert!(ranges(&t).iter().all(|r| !r.2));
    assert_eq!(gpu_page(&r, &t, CPU), None);
    eventually("pages released on client exit", || mm.pinned() == 0);
    assert!(t.store(CPU, 2).is_err(), "no address space: abort");
}

/// A CPU thread replacing and unmapping the memory while GPU stores fault on it (the
/// lock-order checker is on in test builds): every store completes or aborts (never
/// hangs), nothing deadlocks, and afterwards exactly the live ranges hold pins and a GPU
/// write reaches the CPU.
#[test]
fn cpu_changes_racing_gpu_faults_settle() {
    let (_r, mm, t) = mirrored();
    mm.map(CPU, 2 * M2, true);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cpu = {
        let (mm, stop) = (mm.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 5_000 {
                match i % 3 {
                    // A different page at the same address, or a dropped page.
                    0 => mm.map(CPU + (i % 7) * K64, K64, true),
                    1 => mm.remove(CPU + M2 + (i % 5) * K4, K4),
                    _ => mm.map(CPU + M2 - K4, 2 * K4, true),
                }
                i += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    // The memory is always mapped: every store is served (retried past the races).
    for i in 0..300u64 {
        let va = CPU + (i * 37 % 1024) * K4 + 8;
        t.store(va, i).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    cpu.join().unwrap();
    let t2 = client_vm(&_r, FAULT);
    t2.bind(&[BindOp::mirror(MIRROR.0, MIRROR.1)]).unwrap();
    t2.store(CPU + 3 * M2 / 2, 77).unwrap();
    assert_eq!(mm.read_u64(CPU + 3 * M2 / 2).unwrap(), 77);
    eventually("pins are the mapped ranges'", || {
        mm.pinned()
            == ranges(&t).iter().filter(|r| r.2).count()
                + ranges(&t2).iter().filter(|r| r.2).count()
    });
}
