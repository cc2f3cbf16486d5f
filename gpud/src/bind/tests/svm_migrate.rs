//! SVM migration with the scripted `FakeMm` as a client that lets gpud take its pages:
//! a GPU fault moves the range to VRAM (the CPU loses the pages), a CPU access brings it back
//! (zap, invalidate, copy, free), VRAM pressure evicts ranges like BOs, address-space changes
//! drop or return the data, and the VM's end gives it back. Every value is checked through
//! the client's own reads; the spinner test has simgpu's freed-page check watch a job that
//! still reaches a range while it leaves VRAM.

use super::rig::*;
use super::userptr::{client_vm, eventually, OWNER};
use crate::bind::migrate::SvmPlacement;
use crate::bind::mirror::RangeInfo;
use crate::bind::{BindOp, Region, VmFlags};
use crate::exec::Job;
use crate::hw::cmd::{CommandStream, SemOp, Width};
use crate::mem::bo::Placement;
use crate::svm::fake::FakeMm;
use crate::types::GpuVa;
use simgpu::mmu::Access;
use simgpu::Location;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

const FAULT: VmFlags = VmFlags::LR_MODE.union(VmFlags::FAULT_MODE);
const M2: u64 = 2 * MIB;
const CPU: u64 = 0x7f00_0000_0000;
const MIRROR: (u64, u64) = (CPU - 512 * MIB, 1 << 30);
/// A BO over part of the mirror, where GPU copies land.
const OUT: u64 = CPU - 256 * MIB;
/// A semaphore BO over part of the mirror.
const SEM: u64 = CPU - 128 * MIB;

/// A device with `vram` bytes of VRAM, a client whose memory gpud may take (migration on)
/// and one fault-mode VM mirroring it.
fn migrating(vram: u64) -> (Rig, Arc<FakeMm>, TestVm) {
    let r = rig_with(vram, 96 * MIB);
    let mm = FakeMm::new(r.dev.dma().clone());
    mm.allow_migration(true);
    r.dev.set_client_mm(OWNER, mm.clone());
    let t = client_vm(&r, FAULT);
    t.bind(&[BindOp::mirror(MIRROR.0, MIRROR.1)]).unwrap();
    (r, mm, t)
}

fn out_bo(r: &Rig, t: &TestVm) -> Arc<crate::mem::bo::Bo> {
    let out = r.sys_bo(K4);
    t.bind(&[BindOp::map(&out, 0, OUT, K4)]).unwrap();
    out
}

fn in_vram(t: &TestVm) -> Vec<u64> {
    t.vm.svm_ranges()
        .into_iter()
        .filter(|r: &RangeInfo| r.in_vram)
        .map(|r| r.start)
        .collect()
}

fn location(r: &Rig, t: &TestVm, va: u64) -> Option<Location> {
    r.translate(&t.vm, va, Access::Read).map(|tr| tr.location)
}

#[test]
fn a_gpu_fault_migrates_to_vram_and_a_cpu_access_brings_it_back() {
    let (r, mm, t) = migrating(16 * MIB);
    let out = out_bo(&r, &t);
    let vram_free = r.stats().vram_free;
    mm.map(CPU, 2 * M2, true);
    mm.write_u64(CPU + 8, 42).unwrap();
    t.copy8(CPU + 8, OUT).unwrap();
    assert_eq!(
        read(&out, 0),
        42,
        "the GPU read the CPU's data, copied into VRAM"
    );
    assert_eq!(in_vram(&t), vec![CPU]);
    assert_eq!(location(&r, &t, CPU + 8), Some(Location::Vram));
    assert!(mm.is_revoked(CPU + 8), "the CPU lost the pages");
    assert_eq!(
        t.vm.svm_vram_bytes(),
        M2,
        "the VRAM is charged to the client"
    );
    assert_eq!(r.stats().vram_free, vram_free - M2);
    eventually("the system pages were released", || mm.pinned() == 0);
    t.store(CPU + 16, 7).unwrap();
    assert_eq!(mm.cpu_faults(), 0);
    // The CPU touches the range: it comes back with the GPU's write.
    assert_eq!(mm.read_u64(CPU + 16).unwrap(), 7);
    assert_eq!(mm.read_u64(CPU + 8).unwrap(), 42);
    assert_eq!(mm.cpu_faults(), 1);
    assert!(!mm.is_revoked(CPU));
    assert!(in_vram(&t).is_empty());
    assert_eq!(location(&r, &t, CPU + 8), None, "the VRAM PTEs were zapped");
    assert_eq!(t.vm.svm_vram_bytes(), 0);
    assert_eq!(r.stats().vram_free, vram_free, "the VRAM was freed");
    let s = t.vm.svm_stats();
    assert_eq!((s.to_vram.load(Relaxed), s.to_ram.load(Relaxed)), (1, 1));
    // The next GPU access migrates it again.
    t.store(CPU + 24, 9).unwrap();
    assert_eq!(in_vram(&t), vec![CPU]);
    mm.write_u64(CPU + 32, 10).unwrap();
    t.copy8(CPU + 32, OUT).unwrap();
    assert_eq!(read(&out, 0), 10);
    assert_eq!(mm.read_u64(CPU + 24).unwrap(), 9);
}

#[test]
fn placement_system_or_a_client_that_cannot_give_pages_stays_in_system_memory() {
    let (r, mm, t) = migrating(16 * MIB);
    t.vm.set_svm_placement(SvmPlacement::System);
    mm.map(CPU, M2, true);
    t.store(CPU, 1).unwrap();
    assert_eq!(location(&r, &t, CPU), Some(Location::System));
    t.vm.set_svm_placement(SvmPlacement::Vram);
    mm.allow_migration(false);
    t.store(CPU + M2 / 2, 2).unwrap();
    mm.map(CPU + M2, M2, true);
    t.store(CPU + M2, 3).unwrap();
    assert!(in_vram(&t).is_empty());
    assert_eq!(mm.read_u64(CPU + M2).unwrap(), 3);
}

#[test]
fn without_vram_to_be_had_the_fault_maps_system_memory() {
    let (r, mm, t) = migrating(8 * MIB);
    // All of VRAM in a BO that never moves.
    let _hog = r.dev.bo_create(8 * MIB, Placement::Vram, None).unwrap();
    mm.map(CPU, M2, true);
    t.store(CPU + 8, 5).unwrap();
    assert_eq!(location(&r, &t, CPU + 8), Some(Location::System));
    assert_eq!(t.vm.svm_stats().vram_fallbacks.load(Relaxed), 1);
    assert_eq!(mm.read_u64(CPU + 8).unwrap(), 5);
    assert_eq!(mm.cpu_faults(), 0);
}

/// SA-evict-malloc: a working set larger than VRAM; ranges migrate in and VRAM pressure
/// evicts the least recently used ones back to system memory; every value the GPU wrote is
/// what the CPU reads.
#[test]
fn vram_pressure_evicts_svm_ranges_and_keeps_every_value() {
    let (r, mm, t) = migrating(8 * MIB);
    let n = 12u64; // 24 MiB of 2 MiB ranges over 8 MiB of VRAM
    mm.map(CPU, n * M2, true);
    for round in 0..2u64 {
        for i in 0..n {
            t.store(CPU + i * M2 + 8 * round, 100 * round + i).unwrap();
        }
    }
    let s = t.vm.svm_stats();
    assert!(
        s.evicted.load(Relaxed) >= n,
        "evicted {}",
        s.evicted.load(Relaxed)
    );
    assert!(t.vm.svm_vram_bytes() <= 8 * MIB);
    // A BO allocation evicts SVM ranges too (the LRU covers both).
    let before = s.evicted.load(Relaxed);
    let bo = r.dev.bo_create(4 * MIB, Placement::Vram, None).unwrap();
    assert!(
        s.evicted.load(Relaxed) > before,
        "the BO took VRAM from SVM ranges"
    );
    for round in 0..2u64 {
        for i in 0..n {
            assert_eq!(
                mm.read_u64(CPU + i * M2 + 8 * round).unwrap(),
                100 * round + i,
                "range {i}, round {round}"
            );
        }
    }
    drop(bo);
    assert_eq!(
        t.vm.svm_vram_bytes(),
        0,
        "every range came back on the CPU's reads"
    );
    assert_eq!(r.stats().vram_free, 8 * MIB);
}

#[test]
fn an_unmap_drops_the_data_and_a_partial_one_gives_the_rest_back() {
    let (r, mm, t) = migrating(16 * MIB);
    mm.map(CPU, 2 * M2, true);
    t.store(CPU + 8, 1).unwrap();
    t.store(CPU + M2 + MIB + 8, 2).unwrap();
    assert_eq!(in_vram(&t), vec![CPU, CPU + M2]);
    let vram_free = r.stats().vram_free;
    mm.unmap(CPU, M2);
    assert_eq!(
        r.stats().vram_free,
        vram_free + M2,
        "the unmapped range's VRAM went"
    );
    mm.unmap(CPU + M2, MIB);
    assert_eq!(
        mm.read_u64(CPU + M2 + MIB + 8).unwrap(),
        2,
        "the half still mapped got its data back"
    );
    assert_eq!(mm.cpu_faults(), 0, "given back without a fault");
    assert_eq!(t.vm.svm_vram_bytes(), 0);
    assert_eq!(r.stats().vram_free, vram_free + 2 * M2);
    assert!(
        t.store(CPU + 8, 3).is_err(),
        "unmapped: the GPU access aborts"
    );
}

#[test]
fn mremap_moves_the_data_in_vram_with_the_pages() {
    let (_r, mm, t) = migrating(16 * MIB);
    mm.map(CPU, M2, true);
    t.store(CPU + 16, 4).unwrap();
    assert_eq!(in_vram(&t), vec![CPU]);
    mm.remap(CPU, M2, CPU + 4 * M2);
    assert_eq!(mm.read_u64(CPU + 4 * M2 + 16).unwrap(), 4, "the data moved");
    t.store(CPU + 4 * M2 + 24, 5).unwrap();
    assert_eq!(mm.read_u64(CPU + 4 * M2 + 24).unwrap(), 5);
    assert!(t.store(CPU, 6).is_err(), "the old address maps nothing now");
}

#[test]
fn a_vm_going_away_gives_the_data_back() {
    let (r, mm, t) = migrating(16 * MIB);
    let vram_free = r.stats().vram_free;
    mm.map(CPU, M2, true);
    t.store(CPU + 8, 8).unwrap();
    assert_eq!(in_vram(&t), vec![CPU]);
    r.dev.vm_destroy(&t.vm);
    assert!(!mm.is_revoked(CPU));
    assert_eq!(mm.read_u64(CPU + 8).unwrap(), 8);
    assert_eq!(mm.cpu_faults(), 0);
    let TestVm { vm, q } = t;
    drop(q);
    drop(vm);
    eventually("the VRAM was freed", || r.stats().vram_free == vram_free);
}

#[test]
fn the_clients_other_vm_takes_the_data_back_through_a_cpu_fault() {
    let (r, mm, t) = migrating(16 * MIB);
    mm.map(CPU, M2, true);
    t.store(CPU + 8, 1).unwrap();
    assert_eq!(in_vram(&t), vec![CPU]);
    let t2 = client_vm(&r, FAULT);
    t2.bind(&[BindOp::mirror(MIRROR.0, MIRROR.1)]).unwrap();
    t2.store(CPU + 16, 2).unwrap();
    assert!(in_vram(&t).is_empty(), "the first VM gave its data back");
    assert_eq!(in_vram(&t2), vec![CPU]);
    assert_eq!(mm.read_u64(CPU + 8).unwrap(), 1);
    assert_eq!(mm.read_u64(CPU + 16).unwrap(), 2);
}

/// Zap, invalidate, then free: a job that already translated the range (its TLB holds
/// the VRAM translation) waits on a semaphore while the CPU takes the range back; when it
/// goes on, its store must fault and be served again, never reach the freed VRAM.
#[test]
fn a_job_still_using_a_range_never_reaches_its_freed_vram() {
    let (r, mm, t) = migrating(16 * MIB);
    let gpu = r.dev.gpu().unwrap().clone();
    gpu.track_freed_pages(true, &[crate::device::KERNEL_CTX.0]);
    let sem = r.sys_bo(K4);
    t.bind(&[BindOp::map(&sem, 0, SEM, K4)]).unwrap();
    mm.map(CPU, M2, true);
    let mut cmds = CommandStream::new();
    cmds.store_qword(GpuVa(CPU + 8), 1)
        .store_qword(GpuVa(SEM + 8), 1)
        .semaphore_wait(GpuVa(SEM), SemOp::Gte, 1, Width::U64)
        .store_qword(GpuVa(CPU + 16), 2)
        .store_qword(GpuVa(SEM + 16), 1);
    let job = t.q.submit(Job::commands(cmds.dwords().to_vec())).unwrap();
    eventually("the job's first store", || read(&sem, 8) == 1);
    assert_eq!(in_vram(&t), vec![CPU]);
    // The CPU takes the range back while the job waits.
    assert_eq!(mm.read_u64(CPU + 8).unwrap(), 1);
    assert!(in_vram(&t).is_empty());
    write(&sem, 0, 1);
    t.wait_dump(&job).unwrap();
    let (hits, count) = gpu.freed_page_violations();
    assert_eq!(count, 0, "GPU accesses to freed memory: {hits:?}");
    assert_eq!(
        mm.read_u64(CPU + 16).unwrap(),
        2,
        "the store was served again"
    );
}

/// PREFETCH of a mirror creates the ranges and maps them in the region ahead of faults:
/// VRAM (migrated), then System (brought back); a client that cannot give its pages gets
/// system ranges whatever the region says.
#[test]
fn prefetch_of_a_mirror_maps_ranges_ahead_of_faults_in_the_region() {
    let (r, mm, t) = migrating(16 * MIB);
    mm.map(CPU, 4 * M2, true);
    mm.write_u64(CPU + 3 * M2 + 8, 33).unwrap();
    t.bind(&[BindOp::prefetch_to(CPU, 4 * M2, Region::Vram)])
        .unwrap();
    assert_eq!(in_vram(&t), vec![CPU, CPU + M2, CPU + 2 * M2, CPU + 3 * M2]);
    assert_eq!(location(&r, &t, CPU + 3 * M2 + 8), Some(Location::Vram));
    let out = r.sys_bo(K4);
    let imm = BindOp::map(&out, 0, OUT, K4).with_flags(crate::bind::BindFlags::IMMEDIATE);
    t.bind(&[imm]).unwrap();
    let faults = t.vm.faults();
    t.copy8(CPU + 3 * M2 + 8, OUT).unwrap();
    assert_eq!(read(&out, 0), 33);
    assert_eq!(
        t.vm.faults(),
        faults,
        "no GPU fault: the range was there already"
    );
    t.store(CPU + M2, 5).unwrap();
    // Back to system memory: the data comes back, the ranges map the CPU's pages.
    t.bind(&[BindOp::prefetch_to(CPU, 2 * M2, Region::System)])
        .unwrap();
    assert_eq!(in_vram(&t), vec![CPU + 2 * M2, CPU + 3 * M2]);
    assert!(!mm.is_revoked(CPU + M2));
    assert_eq!(location(&r, &t, CPU + M2), Some(Location::System));
    assert_eq!(mm.read_u64(CPU + M2).unwrap(), 5);
    assert_eq!(
        mm.cpu_faults(),
        0,
        "given back by the prefetch, not by a fault"
    );
    // A prefetch over unmapped CPU memory is a hint: it succeeds and maps nothing there.
    t.bind(&[BindOp::prefetch_to(CPU + 8 * M2, 2 * M2, Region::Vram)])
        .unwrap();
    assert_eq!(location(&r, &t, CPU + 8 * M2), None);
    mm.allow_migration(false);
    mm.map(CPU + 16 * M2, M2, true);
    t.bind(&[BindOp::prefetch_to(CPU + 16 * M2, M2, Region::Vram)])
        .unwrap();
    assert_eq!(location(&r, &t, CPU + 16 * M2), Some(Location::System));
}
