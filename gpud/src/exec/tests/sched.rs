//! Exec queues as software objects: more queues than hardware queues, time slicing,
//! priorities, killing a running queue, hangs handled by preemption, queue limits.

use super::harness::*;
use crate::exec::{ErrorKind, ExecError, ExecQueue, Job, Priority, QueueLimit, SchedConfig};
use crate::hw::cmd::{CommandStream, SemOp, Width};
use crate::hw::{regs, Engine};
use crate::sync::{Fence, FenceFault};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a spinner's batch lives in its context's data area (the counter is at offset 0).
const BATCH_OFF: u64 = 4096;
/// Spin rounds (64-bit ATOMIC_ADDs of the counter) in one spinner batch.
const ROUNDS: u32 = 2000;

/// Writes a batch of [`ROUNDS`] increments of the counter at data offset 0 into context
/// `ctx`'s data area; returns the job that runs it.
fn spin_job(rig: &Rig, ctx: usize) -> Job {
    let mut s = CommandStream::new();
    for _ in 0..ROUNDS {
        s.atomic_add(data(0), 1, Width::U64);
    }
    let words = s.dwords();
    for (i, pair) in words.chunks(2).enumerate() {
        let lo = u64::from(pair[0]);
        let hi = pair.get(1).map_or(0, |&w| u64::from(w));
        rig.write(ctx, BATCH_OFF + 8 * i as u64, lo | (hi << 32));
    }
    Job::batch(data(BATCH_OFF), words.len() as u32)
}

/// A job that holds its queue's engine slot until the u64 at data offset `off` is non-zero.
fn gate_job(off: u64) -> Job {
    Job::commands(
        CommandStream::new()
            .semaphore_wait(data(off), SemOp::Ne, 0, Width::U64)
            .dwords()
            .to_vec(),
    )
}

/// Runs the device in lock-step with the scheduler's clock, so that what each queue gets is
/// counted in device steps per quantum and does not depend on how a loaded machine schedules
/// threads: the device thread is stopped, and each quantum moves the fake clock by one
/// quantum, waits until the scheduler has seen it (and asked the queues that ran it out to
/// stop), lets the device stop them, waits until the scheduler has loaded the next queues,
/// then runs a fixed number of device steps (each gives one command to the next loaded queue
/// of each engine, round-robin). Every wait is gated on an event, bounded by [`PATIENCE`].
struct Lockstep<'a> {
    rig: &'a Rig,
    engine: Engine,
}

impl<'a> Lockstep<'a> {
    /// Stops the device thread; queues created from now on only run in [`Lockstep::quantum`].
    fn new(rig: &'a Rig, engine: Engine) -> Self {
        rig.gpu.stop();
        Self { rig, engine }
    }

    /// Waits until the scheduler thread has run a whole round that started after this call.
    fn scheduler_round(&self) {
        let ticks = self.rig.sched.stats().ticks;
        let bound = Instant::now() + PATIENCE;
        while self.rig.sched.stats().ticks < ticks + 2 && Instant::now() < bound {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Whether every hardware queue of the engine is loaded with no preemption pending.
    fn settled(&self) -> bool {
        let per = self.rig.hw.info().queues_per_engine;
        (0..per).all(|q| {
            let index = self.engine.index() * per + q;
            let reg = |r| self.rig.gpu.mmio_read32(regs::queue_reg(index, r));
            reg(regs::Q_CTRL) & 1 == 1 && reg(regs::Q_PREEMPT) & 1 == 0
        })
    }

    /// Waits until the scheduler has filled every hardware queue of the engine.
    fn until_settled(&self) {
        let bound = Instant::now() + PATIENCE;
        while !self.settled() && Instant::now() < bound {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// One quantum of scheduler time, then `steps` device steps.
    fn quantum(&self, steps: u32) {
        self.until_settled();
        self.rig.clock.advance(SchedConfig::default().quantum);
        self.scheduler_round();
        // The preemptions the scheduler asked for complete at the next command boundary,
        // which is the next step; then the scheduler loads the queues that waited.
        self.rig.gpu.step();
        self.until_settled();
        for _ in 0..steps {
            self.rig.gpu.step();
        }
    }

    /// Hands the device back to its thread (so that kills and cleanup run freely).
    fn finish(self) {
        self.rig.gpu.start();
    }
}

#[test]
fn sixty_four_queues_of_eight_clients_all_complete() {
    let rig = Rig::new(8);
    let mut queues = Vec::new();
    for q in 0..64usize {
        let engine = if q % 2 == 0 {
            Engine::Copy
        } else {
            Engine::Compute
        };
        queues.push((q % 8, q / 8, rig.queue(q % 8, engine, NEVER)));
    }
    // Every queue gets jobs while the others still have theirs in flight; the fake clock
    // never moves, so queues take hardware queues as others go idle.
    let mut fences = Vec::new();
    for round in 0..3u64 {
        for (ctx, slot, q) in &queues {
            let off = (*slot as u64 * 3 + round) * 8;
            let f = q.submit(Job::commands(store(off, 0x1000 + off))).unwrap();
            fences.push((*ctx, off, f));
        }
    }
    for (ctx, off, f) in fences {
        assert_eq!(wait(&f), Ok(()));
        assert_eq!(rig.read(ctx, off), 0x1000 + off);
    }
}

#[test]
fn spinning_queues_each_get_a_fair_share_of_the_engine() {
    const N: usize = 16;
    /// Device steps per quantum: 100 commands for each of the 8 loaded queues.
    const STEPS: u32 = 800;
    let rig = Rig::new(N as u32);
    let lockstep = Lockstep::new(&rig, Engine::Compute);
    let queues: Vec<ExecQueue> = (0..N)
        .map(|i| rig.queue(i, Engine::Compute, NEVER))
        .collect();
    let mut fences = Vec::new();
    // Far more work than the measured window: no queue runs dry during it.
    for (i, q) in queues.iter().enumerate() {
        let job = spin_job(&rig, i);
        for _ in 0..4 {
            fences.push(q.submit(job.clone()).unwrap());
        }
    }
    let counts = || (0..N).map(|i| rig.read(i, 0)).collect::<Vec<_>>();
    // Warm up until every queue has run (bounded: a queue that never runs fails below).
    for _ in 0..16 {
        if counts().iter().all(|&c| c > 0) {
            break;
        }
        lockstep.quantum(STEPS);
    }
    // The measured window: eight quanta of scheduler time.
    let start = counts();
    for _ in 0..8 {
        lockstep.quantum(STEPS);
    }
    let end = counts();
    let got: Vec<u64> = end.iter().zip(&start).map(|(e, s)| e - s).collect();
    let total: u64 = got.iter().sum();
    lockstep.finish();
    assert!(total > 0, "nothing ran in the window");
    for (i, g) in got.iter().enumerate() {
        assert!(
            *g * 2 * N as u64 >= total,
            "queue {i} got {g} of {total} spin rounds, less than 1/(2N): {got:?}"
        );
    }
    for q in &queues {
        q.kill();
    }
    for f in &fences {
        let r = wait(f);
        assert!(r.is_ok() || r == Err(FenceFault::Canceled), "{r:?}");
    }
}

#[test]
fn a_spinning_client_does_not_delay_a_short_job_by_more_than_a_few_quanta() {
    /// Device steps per quantum: 50 commands for each of the 8 loaded queues.
    const STEPS: u32 = 400;
    let rig = Rig::new(2);
    let lockstep = Lockstep::new(&rig, Engine::Compute);
    let per_engine = rig.hw.info().queues_per_engine as usize;
    // The spinner has twice as many busy queues as the engine has hardware queues.
    let spinners: Vec<ExecQueue> = (0..2 * per_engine)
        .map(|_| rig.queue(0, Engine::Compute, NEVER))
        .collect();
    let job = spin_job(&rig, 0);
    for q in &spinners {
        for _ in 0..4 {
            q.submit(job.clone()).unwrap();
        }
    }
    for _ in 0..4 {
        lockstep.quantum(STEPS); // the spinners own the engine
    }
    let normal = rig.queue(1, Engine::Compute, NEVER);
    let f = normal.submit(Job::commands(store(8, 42))).unwrap();
    // Quanta of scheduler time until the short job has run on the device.
    let mut waited = 0;
    while rig.read(1, 8) != 42 && waited < 40 {
        lockstep.quantum(STEPS);
        waited += 1;
    }
    lockstep.finish();
    assert_eq!(rig.read(1, 8), 42, "the short job never ran");
    assert_eq!(wait_bounded(&f), Some(Ok(())));
    assert!(
        waited <= 4,
        "the short job waited {waited} quanta of scheduler time"
    );
    for q in &spinners {
        q.kill();
    }
}

/// Waits up to 10 s (the bound only matters when the code under test is broken).
fn wait_bounded(f: &Fence) -> Option<Result<(), FenceFault>> {
    f.wait(Some(Duration::from_secs(10))).ok()
}

#[test]
fn a_killed_queues_running_job_leaves_the_engine_at_once() {
    let rig = Rig::new(2);
    let victim = rig.queue(0, Engine::Compute, NEVER);
    let other = rig.queue(1, Engine::Compute, NEVER);
    // The victim's job marks that it runs, then spins on the GPU until released (never,
    // here); the next waits.
    let running = victim
        .submit(Job::commands(
            CommandStream::new()
                .store_qword(data(16), 1)
                .semaphore_wait(data(0), SemOp::Ne, 0, Width::U64)
                .dwords()
                .to_vec(),
        ))
        .unwrap();
    let waiting = victim.submit(Job::commands(store(8, 1))).unwrap();
    let held = other.submit(gate_job(0)).unwrap();
    let bound = Instant::now() + PATIENCE;
    while rig.read(0, 16) != 1 && Instant::now() < bound {
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(!running.is_signalled());
    let t0 = Instant::now();
    victim.kill();
    // No clock moves: no timeout can be what removes it.
    assert_eq!(wait_bounded(&running), Some(Err(FenceFault::Canceled)));
    let took = t0.elapsed();
    assert_eq!(wait_bounded(&waiting), Some(Err(FenceFault::Canceled)));
    eprintln!("killed queue's running job off the engine after {took:?}");
    assert_eq!(rig.read(0, 8), 0, "a job of the killed queue ran");
    let err = victim.submit(Job::commands(store(8, 2))).unwrap_err();
    assert!(matches!(err, ExecError::QueueClosed { .. }));
    // Nothing else was touched: no reset, the other queue's job still runs on.
    assert_eq!(rig.sched.stats().resets, 0);
    assert_eq!(rig.sched.stats().kills, 1);
    assert!(!held.is_signalled());
    rig.write(1, 0, 1);
    assert_eq!(wait(&held), Ok(()));
}

#[test]
fn a_timed_out_job_that_stops_on_preemption_is_banned_without_an_engine_reset() {
    // Only the device's answer decides here, not the preemption timeout (the test moves the
    // fake clock in big steps).
    let rig = Rig::with_config(
        2,
        SchedConfig {
            preempt_timeout: NEVER,
            ..SchedConfig::default()
        },
    );
    let guilty = rig.queue(0, Engine::Copy, Duration::from_secs(1));
    let innocent = rig.queue(1, Engine::Copy, NEVER);
    let i = innocent.submit(gate_job(0)).unwrap();
    let g = guilty.submit(gate_job(0)).unwrap();
    assert_eq!(
        rig.advance_until(&g, Duration::from_millis(1500)),
        Err(FenceFault::JobTimeout)
    );
    assert!(guilty.is_banned());
    let stats = rig.sched.stats();
    assert_eq!(
        stats.resets, 0,
        "a job that stops on preemption needs no reset"
    );
    assert_eq!(stats.resubmitted, 0);
    rig.write(1, 0, 1);
    assert_eq!(wait(&i), Ok(()));
}

#[test]
fn a_high_priority_queue_preempts_normal_ones_without_waiting_for_a_quantum() {
    let rig = Rig::new(2);
    let per_engine = rig.hw.info().queues_per_engine as usize;
    let normal: Vec<ExecQueue> = (0..per_engine)
        .map(|_| rig.queue(0, Engine::Compute, NEVER))
        .collect();
    let gates: Vec<Arc<Fence>> = normal
        .iter()
        .map(|q| q.submit(gate_job(0)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(5));
    // A low-priority job does not displace them while the clock stands still...
    let low = rig
        .sched
        .create_queue(rig_config_with(&rig, Priority::Low))
        .unwrap();
    let l = low.submit(Job::commands(store(16, 3))).unwrap();
    // ...a high-priority one does, at once.
    let high = rig
        .sched
        .create_queue(rig_config_with(&rig, Priority::High))
        .unwrap();
    let h = high.submit(Job::commands(store(8, 7))).unwrap();
    assert_eq!(wait_bounded(&h), Some(Ok(())));
    assert_eq!(rig.read(1, 8), 7);
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        !l.is_signalled(),
        "a low-priority job preempted normal ones"
    );
    rig.write(0, 0, 1);
    assert_eq!(wait(&l), Ok(()));
    for g in gates {
        assert_eq!(wait(&g), Ok(()));
    }
}

fn rig_config_with(rig: &Rig, priority: Priority) -> crate::exec::QueueConfig {
    let mut cfg = rig.config(
        1,
        Engine::Compute,
        crate::exec::QueueMode::Dma { timeout: NEVER },
    );
    cfg.priority = priority;
    cfg
}

#[test]
fn queue_creation_fails_only_at_the_owner_or_daemon_limit() {
    let rig = Rig::with_config(
        2,
        SchedConfig {
            max_queues_per_owner: 3,
            max_queues: 6,
            ..SchedConfig::default()
        },
    );
    let owned = |owner| {
        let mut cfg = rig.config(0, Engine::Compute, crate::exec::QueueMode::LongRunning);
        cfg.owner = Some(owner);
        rig.sched.create_queue(cfg)
    };
    // The kernel queue is not part of this rig: six queues fit.
    let mut a: Vec<ExecQueue> = (0..3).map(|_| owned(1).unwrap()).collect();
    let err = owned(1).err().unwrap();
    assert!(matches!(
        err,
        ExecError::TooManyQueues {
            scope: QueueLimit::Owner,
            limit: 3
        }
    ));
    assert_eq!(err.kind(), ErrorKind::TooMany);
    let b: Vec<ExecQueue> = (0..3).map(|_| owned(2).unwrap()).collect();
    let err = owned(3).err().unwrap();
    assert!(matches!(
        err,
        ExecError::TooManyQueues {
            scope: QueueLimit::Device,
            limit: 6
        }
    ));
    // A queue that went away makes room again, and every queue works.
    a.pop();
    let again = owned(1).unwrap();
    for (i, q) in a.iter().chain(&b).chain([&again]).enumerate() {
        let f = q.submit(Job::commands(store(8 * i as u64, 1))).unwrap();
        assert_eq!(wait(&f), Ok(()));
    }
}
