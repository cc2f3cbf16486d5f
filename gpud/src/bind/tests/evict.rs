//! Moves of a BO that a job still reaches: zap, invalidate, then free. A job submitted before
//! its BO was bound (so the BO's reservation never carries the job's fence, and the BO is
//! idle to the driver) walks the BO step by step behind a semaphore while the BO is evicted;
//! simgpu's freed-page check must see no GPU access to the freed VRAM, and whoever gets that
//! VRAM next must keep its contents. Also: an allocation never evicts (so never waits for) a
//! BO a job is still using.

use super::rig::*;
use crate::bind::{BindOp, VmFlags};
use crate::exec::Job;
use crate::hw::cmd::{CommandStream, SemOp, Width};
use crate::hw::MemLocation;
use crate::mem::bo::{Bo, Placement};
use crate::mem::manager::MemError;
use crate::sync::Usage;
use crate::types::GpuVa;
use std::sync::Arc;
use std::time::Instant;

const SEM: u64 = 0x1_0000_0000;
const VA: u64 = 0x4_0000_0000;
const STEPS: u64 = 4;
/// Where the job copies what it reads from the BO (in the semaphore's page).
const SEEN: u64 = 0x100;

/// Polls `cond` until it holds (bounded by the rig's patience).
fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Fills `bo` with a recognisable pattern and returns it.
fn fill(bo: &Bo, seed: u8) -> Vec<u8> {
    let data: Vec<u8> = (0..crate::vm::GpuBo::size(bo))
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    bo.write(0, &data).unwrap();
    data
}

fn contents(bo: &Bo) -> Vec<u8> {
    let mut out = vec![0u8; crate::vm::GpuBo::size(bo) as usize];
    bo.read(0, &mut out).unwrap();
    out
}

/// Runs the spinner scenario; `evict` moves `x` out of VRAM and returns a BO allocated
/// after it (in VRAM, so likely on X's old pages), filled with a pattern.
fn spinner_while_evicted(flags: VmFlags, evict: impl FnOnce(&Rig, &Arc<Bo>) -> Arc<Bo>) {
    let r = rig();
    let gpu = r.dev.gpu().unwrap().clone();
    gpu.track_freed_pages(true, &[crate::device::KERNEL_CTX.0]);
    let t = r.vm(flags);
    let sem = r.sys_bo(K4);
    t.bind(&[BindOp::map(&sem, 0, SEM, K4)]).unwrap();
    // Step i: wait for the semaphore to reach i, write i into the BO, read it back out.
    let mut cmds = CommandStream::new();
    for i in 1..=STEPS {
        cmds.semaphore_wait(GpuVa(SEM), SemOp::Gte, i, Width::U64)
            .store_qword(GpuVa(VA + 8 * i), i)
            .copy(GpuVa(VA + 8 * i), GpuVa(SEM + SEEN + 8 * i), 8);
    }
    let job = t.q.submit(Job::commands(cmds.dwords().to_vec())).unwrap();
    let x = r
        .dev
        .bo_create(8 * MIB, Placement::Migratable, None)
        .unwrap();
    t.bind(&[BindOp::map(&x, 0, VA, 8 * MIB)]).unwrap();
    write(&sem, 0, 1);
    until("the job's first step", || read(&sem, SEEN + 8) == 1);
    assert_eq!(read(&x, 8), 1, "the job reaches the BO");
    assert!(
        x.reservation().test_signalled(Usage::Bookkeep),
        "the BO was bound after the job: idle as far as the driver knows"
    );
    let y = evict(&r, &x);
    assert_eq!(x.location(), Some(MemLocation::System));
    let y_data = contents(&y);
    // Let the job run its remaining steps against the moved BO.
    write(&sem, 0, STEPS);
    let outcome = wait(&job);
    let (seen, violations) = gpu.freed_page_violations();
    assert_eq!(
        violations, 0,
        "GPU accesses to freed memory after the eviction: {seen:?}"
    );
    assert!(
        contents(&y) == y_data,
        "the next owner of the VRAM was overwritten"
    );
    for i in 2..=STEPS {
        assert_eq!(
            read(&x, 8 * i),
            0,
            "step {i} reached the BO's old or new pages"
        );
    }
    assert_eq!(read(&x, 8), 1, "the eviction kept the BO's contents");
    if flags.contains(VmFlags::SCRATCH_PAGE) {
        assert_eq!(
            outcome,
            Ok(()),
            "in a scratch VM the steps hit the scratch page"
        );
    } else {
        assert!(outcome.is_err(), "without scratch the next step faults");
    }
}

/// Evicted explicitly (under its reservation), and the VRAM handed to a new BO.
#[test]
fn a_running_job_faults_after_its_bo_is_evicted_and_never_reaches_the_freed_vram() {
    spinner_while_evicted(VmFlags::empty(), |r, x| {
        r.dev.evict(x).unwrap();
        let y = r.dev.bo_create(16 * MIB, Placement::Vram, None).unwrap();
        fill(&y, 7);
        y
    });
}

/// Evicted by another allocation on the request path (the BO is idle to the driver), in a
/// scratch VM: the job's later steps read and write the scratch page.
#[test]
fn a_running_job_hits_scratch_after_an_allocation_evicts_its_bo() {
    spinner_while_evicted(VmFlags::SCRATCH_PAGE, |r, x| {
        let y = r.dev.bo_create(12 * MIB, Placement::Vram, None).unwrap();
        assert_eq!(
            x.location(),
            Some(MemLocation::System),
            "the allocation evicted X"
        );
        fill(&y, 9);
        y
    });
}

/// A BO whose job is still running is no eviction victim: a VRAM allocation that would need
/// it fails at once with `NoSpace` (ENOSPC) instead of waiting for the job, and the BO stays.
#[test]
fn an_allocation_does_not_wait_for_a_busy_bo() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let sem = r.sys_bo(K4);
    let x = r
        .dev
        .bo_create(8 * MIB, Placement::Migratable, None)
        .unwrap();
    t.bind(&[
        BindOp::map(&sem, 0, SEM, K4),
        BindOp::map(&x, 0, VA, 8 * MIB),
    ])
    .unwrap();
    let mut cmds = CommandStream::new();
    cmds.semaphore_wait(GpuVa(SEM), SemOp::Gte, 1, Width::U64)
        .store_qword(GpuVa(VA), 5);
    let job = t.q.submit(Job::commands(cmds.dwords().to_vec())).unwrap();
    assert!(!x.reservation().test_signalled(Usage::Bookkeep));
    let e = r
        .dev
        .bo_create(12 * MIB, Placement::Vram, None)
        .unwrap_err();
    assert!(
        matches!(e, crate::bind::BindError::Mem(MemError::NoSpace { .. })),
        "{e:?}"
    );
    assert_eq!(x.location(), Some(MemLocation::Vram));
    write(&sem, 0, 1);
    wait(&job).unwrap();
    assert_eq!(read(&x, 0), 5);
    // Idle now: the same allocation evicts it.
    let _y = r.dev.bo_create(12 * MIB, Placement::Vram, None).unwrap();
    assert_eq!(x.location(), Some(MemLocation::System));
    assert_eq!(read(&x, 0), 5);
}

/// The 8 MiB case from the hostile-client runs: VRAM holds a busy BO (least recently used, a
/// job still on it) and an idle one. An 8 MiB VRAM-only allocation must evict the idle one.
/// The old eviction took the LRU BO whatever its state, handed its job's fence to the copy
/// and waited 30 s on the calling thread, then failed the allocation with a copy error
/// (ENOMEM on the wire) although evicting the idle BO would have made room at once.
#[test]
fn an_8mib_vram_allocation_evicts_the_idle_bo_behind_a_busy_one() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let sem = r.sys_bo(K4);
    let busy = r
        .dev
        .bo_create(8 * MIB, Placement::Migratable, None)
        .unwrap();
    let idle = r
        .dev
        .bo_create(8 * MIB, Placement::Migratable, None)
        .unwrap();
    write(&idle, 0, 77);
    t.bind(&[
        BindOp::map(&sem, 0, SEM, K4),
        BindOp::map(&busy, 0, VA, 8 * MIB),
    ])
    .unwrap();
    let mut cmds = CommandStream::new();
    cmds.semaphore_wait(GpuVa(SEM), SemOp::Gte, 1, Width::U64)
        .store_qword(GpuVa(VA), 5);
    let job = t.q.submit(Job::commands(cmds.dwords().to_vec())).unwrap();
    let started = Instant::now();
    let y = r.dev.bo_create(8 * MIB, Placement::Vram, None);
    let took = started.elapsed();
    assert!(y.is_ok(), "{:?} after {took:?}", y.err());
    assert_eq!(idle.location(), Some(MemLocation::System));
    assert_eq!(read(&idle, 0), 77);
    assert_eq!(busy.location(), Some(MemLocation::Vram));
    write(&sem, 0, 1);
    wait(&job).unwrap();
    assert_eq!(read(&busy, 0), 5);
}

/// Validation frees the system copy of a BO it moves back to VRAM: another VM whose entries
/// point at that copy (it bound the BO while it was in system memory) is zapped first. Its job,
/// still running on the BO, faults; simgpu sees no access to the freed system pages.
#[test]
fn validation_zaps_other_vms_before_freeing_the_system_copy() {
    let r = rig();
    let gpu = r.dev.gpu().unwrap().clone();
    gpu.track_freed_pages(true, &[crate::device::KERNEL_CTX.0]);
    // VRAM full of a BO that never moves: the migratable BO is created in system memory.
    let filler = r.dev.bo_create(16 * MIB, Placement::Vram, None).unwrap();
    let x = r
        .dev
        .bo_create(8 * MIB, Placement::Migratable, None)
        .unwrap();
    assert_eq!(x.location(), Some(MemLocation::System));
    let t = r.vm(VmFlags::empty());
    let sem = r.sys_bo(K4);
    t.bind(&[BindOp::map(&sem, 0, SEM, K4)]).unwrap();
    let mut cmds = CommandStream::new();
    for i in 1..=STEPS {
        cmds.semaphore_wait(GpuVa(SEM), SemOp::Gte, i, Width::U64)
            .store_qword(GpuVa(VA + 8 * i), i);
    }
    let job = t.q.submit(Job::commands(cmds.dwords().to_vec())).unwrap();
    t.bind(&[BindOp::map(&x, 0, VA, 8 * MIB)]).unwrap();
    write(&sem, 0, 1);
    until("the job's first step", || read(&x, 8) == 1);
    // Room in VRAM again; another VM's validation moves the BO back under its reservation.
    drop(filler);
    let mut exec = crate::sync::Exec::new(crate::sync::ExecFlags::empty());
    exec.run(|e| e.lock_obj(x.reservation())).unwrap();
    let mut report = crate::mem::manager::EvictReport::default();
    let moved = t.vm.core.mm.validate(&x, None, &mut report).unwrap();
    drop(exec);
    assert!(moved);
    assert_eq!(x.location(), Some(MemLocation::Vram));
    write(&sem, 0, STEPS);
    let outcome = wait(&job);
    let (seen, violations) = gpu.freed_page_violations();
    assert_eq!(
        violations, 0,
        "GPU accesses to the freed system copy: {seen:?}"
    );
    assert!(outcome.is_err(), "the job's next step faults");
    assert_eq!((read(&x, 8), read(&x, 16)), (1, 0));
}
