//! Engine busy time per owner (`busy.rs`): charged to the owner whose job occupies a hardware
//! queue, running jobs included when sampled, killed and hung jobs counted, nothing counted
//! while idle, nothing left behind once the owner is forgotten. Time is the fake clock's, so
//! every bound is exact: busy time is at least the time a job was held on the engine and at
//! most the fake time that passed.

use super::harness::*;
use crate::exec::{ExecQueue, Job, QueueMode};
use crate::hw::cmd::{CommandStream, SemOp, Width};
use crate::hw::Engine;
use crate::sync::{Fence, FenceFault};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEP: Duration = Duration::from_millis(10);

/// A queue of context `ctx` on `engine` charged to `owner`.
fn owned_queue(rig: &Rig, ctx: usize, engine: Engine, owner: u64, timeout: Duration) -> ExecQueue {
    let mut cfg = rig.config(ctx, engine, QueueMode::Dma { timeout });
    cfg.owner = Some(owner);
    rig.sched.create_queue(cfg).unwrap()
}

/// Submits a job that marks data offset 16 and then holds its hardware queue until data
/// offset 0 is non-zero; returns once it runs on the device.
fn held_job(rig: &Rig, ctx: usize, q: &ExecQueue) -> Arc<Fence> {
    let fence = q
        .submit(Job::commands(
            CommandStream::new()
                .store_qword(data(16), 1)
                .semaphore_wait(data(0), SemOp::Ne, 0, Width::U64)
                .dwords()
                .to_vec(),
        ))
        .unwrap();
    let bound = Instant::now() + PATIENCE;
    while rig.read(ctx, 16) != 1 && Instant::now() < bound {
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(rig.read(ctx, 16), 1, "the held job never ran");
    fence
}

/// Moves the fake clock by `by` (a sample reads the clock itself: no scheduler round needed).
fn pass(rig: &Rig, by: Duration) {
    rig.clock.advance(by);
}

#[test]
fn busy_time_goes_to_the_owner_whose_job_runs_and_includes_the_running_job() {
    let rig = Rig::new(2);
    let busy_q = owned_queue(&rig, 0, Engine::Compute, 7, NEVER);
    let idle_q = owned_queue(&rig, 1, Engine::Compute, 8, NEVER);
    let fence = held_job(&rig, 0, &busy_q);
    for _ in 0..5 {
        pass(&rig, STEP);
    }
    // Sampled while the job still runs: its elapsed time is in.
    let running = rig.sched.busy(7);
    assert_eq!(running.compute, 5 * STEP, "the running job's time");
    assert_eq!(running.copy, Duration::ZERO);
    assert_eq!(
        rig.sched.busy(8),
        Default::default(),
        "the idle owner was charged"
    );
    // Retired: the time stays charged (not lost when the job leaves the ring).
    rig.write(0, 0, 1);
    assert_eq!(wait(&fence), Ok(()));
    assert_eq!(rig.sched.busy(7).compute, 5 * STEP);
    // Idle time is not busy time.
    pass(&rig, 10 * STEP);
    pass(&rig, STEP);
    let idle = rig.sched.busy(7);
    assert_eq!(idle.compute, 5 * STEP, "idle time counted");
    assert_eq!(rig.sched.busy(8), Default::default());
    drop(idle_q);
}

#[test]
fn a_killed_jobs_time_is_charged_and_a_forgotten_owner_leaves_nothing() {
    let rig = Rig::new(1);
    let q = owned_queue(&rig, 0, Engine::Copy, 3, NEVER);
    let fence = held_job(&rig, 0, &q);
    for _ in 0..3 {
        pass(&rig, STEP);
    }
    q.kill();
    assert_eq!(wait(&fence), Err(FenceFault::Canceled));
    let busy = rig.sched.busy(3);
    assert_eq!(busy.copy, 3 * STEP, "the killed job's time");
    assert_eq!(busy.compute, Duration::ZERO);
    drop(q);
    rig.sched.forget_owner(3);
    assert_eq!(rig.sched.busy(3), Default::default());
    assert_eq!(
        rig.sched.busy_owners(),
        0,
        "a forgotten owner's entry stayed"
    );
}

#[test]
fn a_hung_jobs_time_is_charged_when_it_is_banned() {
    let rig = Rig::new(1);
    let q = owned_queue(&rig, 0, Engine::Compute, 5, 3 * STEP);
    let fence = held_job(&rig, 0, &q);
    // Preempted for the hang, then banned: the time it held the engine stays charged.
    assert_eq!(rig.advance_until(&fence, STEP), Err(FenceFault::JobTimeout));
    let busy = rig.sched.busy(5);
    assert!(busy.compute > 3 * STEP, "hung job's time lost: {busy:?}");
    assert_eq!(busy.copy, Duration::ZERO);
}
