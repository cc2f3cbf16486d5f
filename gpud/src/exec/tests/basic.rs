//! Ordering, dependencies, completion, user fences, out-syncs, the kernel queue and
//! hardware-queue accounting.

use super::harness::*;
use crate::exec::{ErrorKind, ExecError, Job, KernelQueue, OutSync};
use crate::hw::cmd::CommandStream;
use crate::hw::Engine;
use crate::sync::{CompareOp, Fence, FenceContext, FenceFault, Syncobj, UserFence};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;

#[test]
fn jobs_of_one_queue_run_and_signal_in_order() {
    let rig = Rig::new(1);
    let q = rig.queue(0, Engine::Copy, NEVER);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut fences = Vec::new();
    for k in 1..=40u64 {
        // Each job checks that the previous one ran: it stores k only after seeing k - 1.
        let job = Job::commands(wait_then_store(0, k - 1, 0, k));
        let f = q.submit(job).unwrap();
        let o = order.clone();
        f.on_signal(move |f| o.lock().push(f.seqno()));
        fences.push(f);
    }
    for f in &fences {
        assert_eq!(wait(f), Ok(()));
    }
    // The waiter may wake before the signalling thread ran the last callback.
    let deadline = Instant::now() + PATIENCE;
    while order.lock().len() < 40 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(rig.read(0, 0), 40);
    let order = order.lock().clone();
    assert_eq!(order, (1..=40).collect::<Vec<u64>>());
}

#[test]
fn a_queue_blocked_on_a_dependency_does_not_block_another() {
    let rig = Rig::new(2);
    let blocked = rig.queue(0, Engine::Copy, NEVER);
    let free = rig.queue(1, Engine::Copy, NEVER);
    let gate = Fence::new(FenceContext::alloc(), 1);
    let b = blocked
        .submit(Job::commands(store(0, 7)).with_deps([gate.clone()]))
        .unwrap();
    let f = free.submit(Job::commands(store(0, 9))).unwrap();
    assert_eq!(wait(&f), Ok(()));
    assert_eq!(rig.read(1, 0), 9);
    assert!(!b.is_signalled(), "ran before its dependency signalled");
    assert_eq!(rig.read(0, 0), 0);
    gate.signal().unwrap();
    assert_eq!(wait(&b), Ok(()));
    assert_eq!(rig.read(0, 0), 7);
}

#[test]
fn a_job_waits_for_a_job_of_another_queue_and_engine() {
    let rig = Rig::new(1);
    let producer = rig.queue(0, Engine::Copy, NEVER);
    let consumer = rig.queue(0, Engine::Compute, NEVER);
    let gate = Fence::new(FenceContext::alloc(), 1);
    let p = producer
        .submit(Job::commands(store(0, 5)).with_deps([gate.clone()]))
        .unwrap();
    // The consumer copies what the producer wrote; run early, it would copy 0.
    let mut copy = CommandStream::new();
    copy.copy(data(0), data(8), 8);
    let c = consumer
        .submit(Job::commands(copy.dwords().to_vec()).with_deps([p.clone()]))
        .unwrap();
    gate.signal().unwrap();
    assert_eq!(wait(&c), Ok(()));
    assert!(p.is_signalled());
    assert_eq!(rig.read(0, 8), 5);
}

#[test]
fn a_failed_dependency_fails_the_job_without_running_it_and_keeps_order() {
    let rig = Rig::new(1);
    let q = rig.queue(0, Engine::Copy, NEVER);
    let bad = Fence::new(FenceContext::alloc(), 1);
    let a = q
        .submit(Job::commands(store(0, 1)).with_deps([bad.clone()]))
        .unwrap();
    let b = q.submit(Job::commands(store(8, 2))).unwrap();
    bad.set_error(FenceFault::Failed(9)).unwrap();
    bad.signal().unwrap();
    assert_eq!(wait(&a), Err(FenceFault::Failed(9)));
    assert_eq!(wait(&b), Ok(()));
    assert_eq!(rig.read(0, 0), 0, "the failed job's payload ran");
    assert_eq!(rig.read(0, 8), 2);
}

#[test]
fn batch_jobs_run_from_the_vm_and_write_their_user_fence() {
    let rig = Rig::new(1);
    let q = rig.queue(0, Engine::Compute, NEVER);
    let mut batch = CommandStream::new();
    batch.store_qword(data(8), 0xBA7C).batch_end();
    let batch_off = 4096;
    rig.hw
        .dma()
        .write(rig.data_pa(0, batch_off), &batch.to_bytes())
        .unwrap();
    let job = Job::batch(data(batch_off), batch.len() as u32).with_user_fence(data(16), 77);
    let f = q.submit(job).unwrap();
    assert_eq!(wait(&f), Ok(()));
    assert_eq!(rig.read(0, 8), 0xBA7C);
    assert_eq!(rig.read(0, 16), 77);
}

#[test]
fn a_cpu_user_fence_waiter_is_woken_by_the_completion_interrupt() {
    let rig = Rig::new(1);
    let q = rig.queue(0, Engine::Copy, NEVER);
    // The job holds on the GPU until the CPU releases it, so the waiter really sleeps.
    let job = Job::commands(wait_then_store(0, 1, 8, 1)).with_user_fence(data(24), 42);
    let f = q.submit(job).unwrap();
    let wq = rig.sched.user_fence_queue();
    let result = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let mem = DataMemory { rig: &rig, ctx: 0 };
            UserFence::new(data(24), CompareOp::Gte, 42).wait(
                &mem,
                &wq,
                Some(Instant::now() + PATIENCE),
            )
        });
        rig.write(0, 0, 1);
        waiter.join().unwrap()
    });
    assert_eq!(result.unwrap(), 42);
    assert_eq!(wait(&f), Ok(()));
}

#[test]
fn out_syncs_receive_the_job_fence() {
    let rig = Rig::new(1);
    let q = rig.queue(0, Engine::Copy, NEVER);
    let (bin, tl) = (Syncobj::new(), Syncobj::new());
    let job = Job::commands(store(0, 1))
        .with_out_sync(OutSync::Binary(bin.clone()))
        .with_out_sync(OutSync::Timeline(tl.clone(), 3));
    let f = q.submit(job).unwrap();
    assert!(Arc::ptr_eq(&bin.fence().unwrap(), &f));
    assert_eq!(tl.last_submitted_point(), 3);
    assert_eq!(wait(&f), Ok(()));
    assert!(bin.is_signalled());
    assert_eq!(wait(&tl.find_fence(3).unwrap()), Ok(()));
}

#[test]
fn sync_only_jobs_order_after_their_dependencies() {
    let rig = Rig::new(1);
    let q = rig.queue(0, Engine::Copy, NEVER);
    let gate = Fence::new(FenceContext::alloc(), 1);
    let f = q
        .submit(Job::sync_only().with_deps([gate.clone()]))
        .unwrap();
    assert!(!f.is_signalled());
    gate.signal().unwrap();
    assert_eq!(wait(&f), Ok(()));
}

#[test]
fn the_kernel_queue_copies_after_its_dependencies() {
    let rig = Rig::new(1);
    let kq = KernelQueue::new(
        &rig.sched,
        Rig::ctx(0),
        rig.config(0, Engine::Copy, crate::exec::QueueMode::LongRunning)
            .fence_page,
    )
    .unwrap();
    rig.write(0, 0, 0xC0FFEE);
    let gate = Fence::new(FenceContext::alloc(), 1);
    let mut copy = CommandStream::new();
    copy.copy(data(0), data(64), 8);
    let f = kq
        .submit(copy.dwords(), std::slice::from_ref(&gate))
        .unwrap();
    assert!(!f.is_signalled());
    gate.signal().unwrap();
    assert_eq!(wait(&f), Ok(()));
    assert_eq!(rig.read(0, 64), 0xC0FFEE);
}

#[test]
fn more_exec_queues_than_hardware_queues_all_run() {
    let rig = Rig::new(1);
    let per_engine = rig.hw.info().queues_per_engine as usize;
    let queues: Vec<_> = (0..3 * per_engine)
        .map(|_| rig.queue(0, Engine::Compute, NEVER))
        .collect();
    // Every queue holds a job on the GPU until the CPU releases them all.
    let held: Vec<_> = queues
        .iter()
        .map(|q| {
            q.submit(Job::commands(wait_then_store(0, 1, 8, 1)))
                .unwrap()
        })
        .collect();
    let stores: Vec<_> = queues
        .iter()
        .enumerate()
        .map(|(i, q)| {
            q.submit(Job::commands(store(16 + 8 * i as u64, i as u64 + 1)))
                .unwrap()
        })
        .collect();
    rig.write(0, 0, 1);
    for f in held.iter().chain(&stores) {
        assert_eq!(wait(f), Ok(()));
    }
    for i in 0..queues.len() {
        assert_eq!(rig.read(0, 16 + 8 * i as u64), i as u64 + 1);
    }
}

#[test]
fn dropping_a_queue_cancels_its_waiting_jobs() {
    let rig = Rig::new(1);
    let q = rig.queue(0, Engine::Copy, NEVER);
    let gate = Fence::new(FenceContext::alloc(), 1);
    let f = q
        .submit(Job::commands(store(0, 1)).with_deps([gate.clone()]))
        .unwrap();
    drop(q);
    assert_eq!(wait(&f), Err(FenceFault::Canceled));
    gate.signal().unwrap();
}

#[test]
fn oversized_and_malformed_jobs_are_refused() {
    let rig = Rig::new(1);
    let q = rig.queue(0, Engine::Copy, NEVER);
    let huge = vec![0u32; 1 << 20];
    let err = q.submit(Job::commands(huge)).unwrap_err();
    assert!(matches!(err, ExecError::JobTooLarge { .. }));
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let err = q.submit(Job::batch(data(0), 0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}

#[test]
fn queues_outliving_the_scheduler_fail_their_jobs_and_refuse_new_ones() {
    let rig = Rig::new(1);
    let q = rig.queue(0, Engine::Copy, NEVER);
    let gate = Fence::new(FenceContext::alloc(), 1);
    let f = q
        .submit(Job::commands(store(0, 1)).with_deps([gate.clone()]))
        .unwrap();
    drop(rig);
    assert_eq!(wait(&f), Err(FenceFault::DeviceLost));
    let err = q.submit(Job::commands(store(0, 1))).unwrap_err();
    assert!(matches!(err, ExecError::DeviceLost { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Cancelled);
}
