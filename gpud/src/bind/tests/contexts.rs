//! Hardware contexts assigned at schedule time (`exec/contexts.rs`): more VMs than the device
//! has contexts all run their jobs; a context taken from an idle VM is flushed, so the thief
//! never translates with the victim's entries and the victim, running again, sees its own
//! memory; a fault-mode VM faults and is served on the context it got after losing its old
//! one; many threads binding and running on few contexts stay correct (lock-order checker on
//! in debug builds).

use super::rig::*;
use super::userptr::eventually;
use crate::bind::{BindOp, VmFlags};
use crate::device::{Device, DeviceConfig};
use crate::hw::cmd::{CommandStream, SemOp, Width};
use crate::hw::FakeClock;
use crate::types::GpuVa;
use std::sync::Arc;
use std::time::Duration;

const VA: u64 = 0x4_0000_0000;
const OUT: u64 = 0x4_1000_0000;

/// A rig whose device has `contexts` contexts (the kernel's included: `contexts - 1` for VMs).
fn rig_ctx(contexts: u32) -> Rig {
    let clock = Arc::new(FakeClock::new());
    let dev = Device::new(DeviceConfig {
        vram_size: 16 * MIB,
        sys_size: 48 * MIB,
        contexts,
        clock: clock.clone(),
        job_timeout: Duration::from_secs(3600),
        ..DeviceConfig::default()
    })
    .unwrap();
    Rig { dev, clock }
}

/// Twelve VMs on three contexts each submit a job held on the GPU by a semaphore: VM_CREATE
/// never fails, three jobs get a context and run, the others wait queued (not refused);
/// once the semaphore opens every job runs, on contexts taken from VMs that went idle, and
/// writes its own BO.
#[test]
fn more_vms_running_jobs_than_contexts_all_complete() {
    const VMS: u64 = 12;
    let r = rig_ctx(4);
    let sem = r.sys_bo(K4);
    let vms: Vec<_> = (0..VMS)
        .map(|_| {
            let t = r.vm(VmFlags::empty());
            let out = r.bo(K4);
            t.bind(&[BindOp::map(&sem, 0, VA, K4), BindOp::map(&out, 0, OUT, K4)])
                .unwrap();
            (t, out)
        })
        .collect();
    let jobs: Vec<_> = vms
        .iter()
        .enumerate()
        .map(|(i, (t, _))| {
            let mut c = CommandStream::new();
            c.semaphore_wait(GpuVa(VA), SemOp::Gte, 1, Width::U64)
                .store_qword(GpuVa(OUT), 0x100 + i as u64);
            t.q.submit(crate::exec::Job::commands(c.dwords().to_vec()))
                .expect("a job waits for a context, it is not refused")
        })
        .collect();
    // Three jobs hold the three contexts on the GPU; the rest wait in the scheduler.
    let deadline = std::time::Instant::now() + PATIENCE;
    while r.dev.context_stats().busy < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let held = r.dev.context_stats();
    assert_eq!((held.contexts, held.busy, held.assigned), (3, 3, 3));
    assert!(jobs.iter().all(|j| !j.is_signalled()));
    write(&sem, 0, 1);
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(wait(j), Ok(()), "job of VM {i}");
    }
    for (i, (_, out)) in vms.iter().enumerate() {
        assert_eq!(read(out, 0), 0x100 + i as u64, "VM {i} wrote its own BO");
    }
    let s = r.dev.context_stats();
    assert!(
        s.steals >= VMS - 3,
        "contexts were taken from idle VMs: {s:?}"
    );
    drop(vms);
    assert_eq!(r.dev.contexts_in_use(), 0, "every VM gave its context back");
}

/// One context for VMs: A reads its secret at `VA` (the translation is cached in the
/// context's TLB); B maps its own BO at `VA` and runs on the context taken from A: it reads
/// its own value, never A's through a stale entry; A runs again (taking the context back)
/// and reads its secret, never B's value.
#[test]
fn a_stolen_context_never_shows_the_victims_memory() {
    let r = rig_ctx(2);
    let (a, b) = (r.vm(VmFlags::empty()), r.vm(VmFlags::empty()));
    let (secret, out_a) = (r.bo(K4), r.bo(K4));
    let (theirs, out_b) = (r.bo(K4), r.bo(K4));
    write(&secret, 0, 0x5ec2e7);
    write(&theirs, 0, 0xb0b);
    a.bind(&[
        BindOp::map(&secret, 0, VA, K4),
        BindOp::map(&out_a, 0, OUT, K4),
    ])
    .unwrap();
    b.bind(&[
        BindOp::map(&theirs, 0, VA, K4),
        BindOp::map(&out_b, 0, OUT, K4),
    ])
    .unwrap();
    a.copy8(VA, OUT).unwrap();
    assert_eq!(read(&out_a, 0), 0x5ec2e7);
    let ctx = a.vm.ctx().expect("A holds the only context");
    b.copy8(VA, OUT).unwrap();
    assert_eq!(b.vm.ctx(), Some(ctx), "B runs on the context taken from A");
    assert_eq!(a.vm.ctx(), None, "A lost its context");
    assert_eq!(
        read(&out_b, 0),
        0xb0b,
        "B read A's memory through a stale entry"
    );
    a.copy8(VA, OUT + 8).unwrap();
    assert_eq!(a.vm.ctx(), Some(ctx));
    assert_eq!(
        read(&out_a, 8),
        0x5ec2e7,
        "A read B's memory after taking it back"
    );
    assert!(r.dev.context_stats().steals >= 2);
}

/// A fault-mode VM whose context was taken by another VM runs again on a context it gets
/// back: its new accesses fault, the fault worker finds it by that context and populates
/// them, and its job completes.
#[test]
fn a_fault_mode_vm_faults_after_its_context_was_stolen() {
    const FAULT: VmFlags = VmFlags::LR_MODE.union(VmFlags::FAULT_MODE);
    let r = rig_ctx(2);
    let f = r.vm(FAULT);
    let other = r.vm(VmFlags::empty());
    let (bo, mine) = (r.bo(4 * K4), r.bo(K4));
    f.bind(&[BindOp::map(&bo, 0, VA, 4 * K4)]).unwrap();
    other.bind(&[BindOp::map(&mine, 0, VA, K4)]).unwrap();
    f.store(VA, 1).unwrap();
    assert!(f.vm.ctx().is_some());
    other.store(VA, 2).unwrap();
    assert_eq!(f.vm.ctx(), None, "the fault-mode VM lost its context");
    // A mapping the first fault did not populate.
    f.bind(&[BindOp::map(&bo, 2 * K4, VA + MIB, 2 * K4)])
        .unwrap();
    let faults = f.vm.faults();
    f.store(VA + MIB, 3).unwrap();
    assert!(f.vm.faults() > faults, "the new access faulted");
    assert_eq!((read(&bo, 0), read(&bo, 2 * K4)), (1, 3));
    assert_eq!(read(&mine, 0), 2);
    assert!(!f.vm.is_banned() && !other.vm.is_banned());
}

/// A fault record still unread when its queue left the hardware and its context went to
/// another VM belongs to the old owner: the fault worker drops it instead of serving it
/// against the new owner (here a plain VM, whose context the worker's abort put in error,
/// banning its queue).
#[test]
fn a_fault_record_read_after_a_steal_is_not_served_against_the_new_owner() {
    const FAULT: VmFlags = VmFlags::LR_MODE.union(VmFlags::FAULT_MODE);
    let r = rig_ctx(3);
    let (c, a) = (r.vm(FAULT), r.vm(FAULT));
    let b = r.vm(VmFlags::empty());
    let (cbo, abo, bbo, sem) = (r.bo(2 * K4), r.bo(K4), r.bo(K4), r.sys_bo(K4));
    let sem_va = VA + MIB;
    c.bind(&[
        BindOp::map(&cbo, 0, VA, 2 * K4),
        BindOp::map(&sem, 0, sem_va, K4),
    ])
    .unwrap();
    a.bind(&[BindOp::map(&abo, 0, VA, K4)]).unwrap();
    b.bind(&[BindOp::map(&bbo, 0, VA, K4)]).unwrap();
    c.store(sem_va, 0).unwrap(); // the semaphore is populated
    let gpu = r.dev.gpu().expect("simgpu").clone();
    let submit = |t: &TestVm, cmds: &mut CommandStream| {
        let job = crate::exec::Job::commands(cmds.dwords().to_vec());
        t.q.submit(job).unwrap()
    };
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        // C's job waits for the semaphore, then faults; the fault worker takes the fault
        // and blocks on C's VM lock, held by this thread meanwhile.
        let c1 = submit(
            &c,
            CommandStream::new()
                .semaphore_wait(GpuVa(sem_va), SemOp::Gte, 1, Width::U64)
                .store_qword(GpuVa(VA), 1),
        );
        let cvm = c.vm.clone();
        s.spawn(move || {
            let _held = cvm.lock.read();
            let _ = held_tx.send(());
            let _ = hold_rx.recv();
        });
        held_rx.recv().unwrap();
        let faults = c.vm.faults();
        write(&sem, 0, 1);
        eventually("the worker took C's fault", || c.vm.faults() > faults);
        // A faults; its record waits unread behind C's.
        let raised = gpu.counters().faults;
        let a1 = submit(&a, CommandStream::new().store_qword(GpuVa(VA), 2));
        eventually("A's fault was raised", || gpu.counters().faults > raised);
        let taken = a.vm.ctx().expect("A holds a context");
        // A's queue leaves the hardware (its stalled job is cancelled); B takes its context.
        a.q.kill();
        assert!(wait(&a1).is_err(), "A's job was cancelled");
        b.store(VA, 3).unwrap();
        assert_eq!(
            b.vm.ctx(),
            Some(taken),
            "B runs on the context taken from A"
        );
        hold_tx.send(()).unwrap();
        wait(&c1).unwrap();
    });
    // C faults again: its record comes after A's, so A's was read once this job completes.
    c.store(VA + K4, 4).unwrap();
    assert_eq!(b.vm.faults(), 0, "A's fault was served against B");
    b.store(VA, 5).unwrap();
    assert!(
        !b.vm.is_banned() && !b.q.is_banned(),
        "B was aborted for A's fault"
    );
    assert_eq!((read(&bbo, 0), read(&cbo, 0), read(&cbo, K4)), (5, 1, 4));
}

/// Four threads, each with two VMs, bind, run and unbind in a loop on three contexts (every
/// job may need a context another VM holds): every value lands where its own VM put it.
#[test]
fn many_threads_on_few_contexts_stay_correct() {
    const ROUNDS: u64 = 40;
    let r = rig_ctx(4);
    std::thread::scope(|s| {
        for thread in 0..4u64 {
            let r = &r;
            s.spawn(move || {
                let vms: Vec<_> = (0..2).map(|_| r.vm(VmFlags::empty())).collect();
                let bos: Vec<_> = (0..2).map(|_| r.bo(K4)).collect();
                for round in 0..ROUNDS {
                    for (i, (t, bo)) in vms.iter().zip(&bos).enumerate() {
                        let va = VA + (round % 4) * 0x10_0000;
                        t.bind(&[BindOp::map(bo, 0, va, K4)]).unwrap();
                        let v = (thread << 32) | (round << 8) | i as u64;
                        t.store(va + 8 * (round % 8), v).unwrap();
                        assert_eq!(read(bo, 8 * (round % 8)), v, "thread {thread} VM {i}");
                        t.bind(&[BindOp::unmap(va, K4)]).unwrap();
                    }
                }
            });
        }
    });
    assert_eq!(r.dev.contexts_in_use(), 0, "every VM gave its context back");
}
