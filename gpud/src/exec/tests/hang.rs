//! Hang recovery and context-error isolation.

use super::harness::*;
use crate::exec::{ErrorKind, ExecError, Job};
use crate::hw::{Engine, Mmu};
use crate::sync::{Fence, FenceContext, FenceFault};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(1);
const STEP: Duration = Duration::from_millis(1500);

#[test]
fn a_hang_resets_the_engine_bans_the_guilty_queue_and_resubmits_the_innocent() {
    let rig = Rig::new(2);
    let guilty = rig.queue(0, Engine::Copy, TIMEOUT);
    let innocent = rig.queue(1, Engine::Copy, NEVER);
    // The innocent job holds on the GPU until the CPU releases it: it is on the ring when
    // the engine is reset.
    let i1 = innocent
        .submit(Job::commands(wait_then_store(0, 1, 8, 0xB1)))
        .unwrap();
    let i2 = innocent.submit(Job::commands(store(16, 0xB2))).unwrap();
    let g1 = guilty.submit(Job::commands(store(0, 1))).unwrap();
    assert_eq!(wait(&g1), Ok(()));
    let g2 = guilty.submit(Job::commands(vec![HANG])).unwrap();
    let g3 = guilty.submit(Job::commands(store(8, 3))).unwrap();

    assert_eq!(rig.advance_until(&g2, STEP), Err(FenceFault::JobTimeout));
    assert!(
        wait(&g3).is_err(),
        "a job behind the hang must not complete"
    );
    assert_eq!(rig.read(0, 8), 0);
    let stats = rig.sched.stats();
    assert!(stats.resets >= 1);
    assert!(
        stats.resubmitted >= 1,
        "the innocent job was not resubmitted"
    );

    let err = guilty.submit(Job::commands(store(0, 9))).unwrap_err();
    assert!(matches!(err, ExecError::QueueBanned { .. }));
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(guilty.is_banned());

    assert!(!innocent.is_banned());
    rig.write(1, 0, 1);
    assert_eq!(wait(&i1), Ok(()));
    assert_eq!(wait(&i2), Ok(()));
    assert_eq!((rig.read(1, 8), rig.read(1, 16)), (0xB1, 0xB2));
    // And it keeps working.
    let i3 = innocent.submit(Job::commands(store(24, 0xB3))).unwrap();
    assert_eq!(wait(&i3), Ok(()));
}

#[test]
fn a_queue_sharing_the_guilty_context_keeps_running_after_the_reset() {
    let rig = Rig::new(1);
    let guilty = rig.queue(0, Engine::Copy, TIMEOUT);
    let sibling = rig.queue(0, Engine::Compute, NEVER);
    let g = guilty.submit(Job::commands(vec![HANG])).unwrap();
    assert_eq!(rig.advance_until(&g, STEP), Err(FenceFault::JobTimeout));
    let status = rig.hw.context_status(Rig::ctx(0)).unwrap();
    assert!(
        !status.error(),
        "the reset-guilty context error was not cleared"
    );
    let s = sibling.submit(Job::commands(store(0, 5))).unwrap();
    assert_eq!(wait(&s), Ok(()));
    assert_eq!(rig.read(0, 0), 5);
    // The banned queue's hardware queue was released: a new queue can use the engine.
    let fresh = rig.queue(0, Engine::Copy, NEVER);
    let f = fresh.submit(Job::commands(store(8, 6))).unwrap();
    assert_eq!(wait(&f), Ok(()));
}

#[test]
fn waiting_jobs_of_a_banned_queue_are_cancelled() {
    let rig = Rig::new(1);
    let q = rig.queue(0, Engine::Compute, TIMEOUT);
    let gate = Fence::new(FenceContext::alloc(), 1);
    let hang = q.submit(Job::commands(vec![HANG])).unwrap();
    let waiting = q
        .submit(Job::commands(store(0, 1)).with_deps([gate.clone()]))
        .unwrap();
    assert_eq!(rig.advance_until(&hang, STEP), Err(FenceFault::JobTimeout));
    assert_eq!(wait(&waiting), Err(FenceFault::Canceled));
    gate.signal().unwrap();
    assert_eq!(rig.read(0, 0), 0);
}

#[test]
fn long_running_queues_never_time_out() {
    let rig = Rig::new(1);
    let cfg = rig.config(0, Engine::Copy, crate::exec::QueueMode::LongRunning);
    let q = rig.sched.create_queue(cfg).unwrap();
    let f = q
        .submit(Job::commands(wait_then_store(0, 1, 8, 2)))
        .unwrap();
    for _ in 0..50 {
        rig.clock.advance(Duration::from_secs(3600));
        let _ = f.wait(Some(Duration::from_millis(1)));
    }
    assert!(!f.is_signalled());
    assert_eq!(rig.sched.stats().resets, 0);
    rig.write(0, 0, 1);
    assert_eq!(wait(&f), Ok(()));
    assert_eq!(rig.read(0, 8), 2);
}

#[test]
fn a_fatal_fault_bans_every_queue_of_that_context_and_no_other() {
    let rig = Rig::new(2);
    let faulty = rig.queue(0, Engine::Copy, NEVER);
    let same_vm = rig.queue(0, Engine::Compute, NEVER);
    let other_vm = rig.queue(1, Engine::Copy, NEVER);
    let held = same_vm
        .submit(Job::commands(wait_then_store(0, 1, 8, 1)))
        .unwrap();
    let crash = crate::hw::cmd::CommandStream::new()
        .store_qword(UNMAPPED_VA, 1)
        .dwords()
        .to_vec();
    let f = faulty.submit(Job::commands(crash)).unwrap();
    // Reason 1: page fault in a non-recoverable context.
    assert_eq!(wait(&f), Err(FenceFault::Failed(1)));
    assert_eq!(wait(&held), Err(FenceFault::Failed(1)));
    for q in [&faulty, &same_vm] {
        let err = q.submit(Job::commands(store(0, 1))).unwrap_err();
        assert!(
            matches!(err, ExecError::VmBanned { reason: 1, .. }),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Cancelled);
    }
    let o = other_vm.submit(Job::commands(store(0, 4))).unwrap();
    assert_eq!(wait(&o), Ok(()));
    assert_eq!(rig.read(1, 0), 4);
    assert_eq!(rig.sched.stats().resets, 0);
}

/// A fatal fault bans the queues, not the VM: a queue created on the same context after the
/// error was handled runs. (The error used to stay latched: the new queue was loaded onto a
/// context the device never runs, and its job waited forever.)
#[test]
fn a_new_queue_on_a_faulted_context_runs() {
    let rig = Rig::new(1);
    let faulty = rig.queue(0, Engine::Copy, NEVER);
    let crash = crate::hw::cmd::CommandStream::new()
        .store_qword(UNMAPPED_VA, 1)
        .dwords()
        .to_vec();
    let f = faulty.submit(Job::commands(crash)).unwrap();
    assert_eq!(wait(&f), Err(FenceFault::Failed(1)));
    assert!(faulty.is_banned());
    for (engine, v) in [(Engine::Copy, 0x51), (Engine::Compute, 0x52)] {
        let fresh = rig.queue(0, engine, NEVER);
        let job = fresh.submit(Job::commands(store(0, v))).unwrap();
        let outcome = job
            .wait(Some(Duration::from_secs(10)))
            .expect("a job of a new queue on the faulted context never ran");
        assert_eq!(outcome, Ok(()));
        assert_eq!(rig.read(0, 0), v);
    }
    // The old queue stays banned.
    let err = faulty.submit(Job::commands(store(0, 1))).unwrap_err();
    assert!(
        matches!(err, ExecError::VmBanned { reason: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_job_that_never_finishes_without_hanging_is_timed_out_too() {
    let rig = Rig::new(2);
    let slow = rig.queue(0, Engine::Compute, TIMEOUT);
    let other = rig.queue(1, Engine::Compute, NEVER);
    // Waits on a semaphore nobody releases: the device does not call it hung.
    let stuck = slow
        .submit(Job::commands(wait_then_store(0, 1, 8, 1)))
        .unwrap();
    let o = other.submit(Job::commands(store(0, 2))).unwrap();
    assert_eq!(wait(&o), Ok(()));
    assert_eq!(rig.advance_until(&stuck, STEP), Err(FenceFault::JobTimeout));
    assert!(slow.is_banned());
    assert!(!other.is_banned());
    // The queue's hardware queue is gone: releasing the semaphore changes nothing.
    rig.write(0, 0, 1);
    let o2 = other.submit(Job::commands(store(8, 3))).unwrap();
    assert_eq!(wait(&o2), Ok(()));
    assert_eq!(rig.read(0, 8), 0);
    assert_eq!(rig.read(1, 8), 3);
}

#[test]
fn a_job_depending_on_a_hung_job_fails_with_its_error_and_its_queue_lives_on() {
    let rig = Rig::new(2);
    let guilty = rig.queue(0, Engine::Copy, TIMEOUT);
    let dependent = rig.queue(1, Engine::Compute, NEVER);
    let g = guilty.submit(Job::commands(vec![HANG])).unwrap();
    let d = dependent
        .submit(Job::commands(store(0, 1)).with_deps([g.clone()]))
        .unwrap();
    assert_eq!(rig.advance_until(&g, STEP), Err(FenceFault::JobTimeout));
    assert_eq!(wait(&d), Err(FenceFault::JobTimeout));
    assert_eq!(rig.read(1, 0), 0);
    assert!(!dependent.is_banned());
    let next = dependent.submit(Job::commands(store(8, 2))).unwrap();
    assert_eq!(wait(&next), Ok(()));
}

/// Log lines written while a test runs (a process-wide subscriber: the scheduler logs from
/// its own thread).
fn captured_log() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_ansi(false)
            .with_writer(move || CaptureWriter(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct CaptureWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits (bounded, in real time) until one of simgpu's hardware queues shows HUNG.
fn wait_until_a_queue_is_hung(rig: &Rig) {
    use simgpu::regs::{q_status, queue_reg, Q_STATUS};
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        // Two engines of eight queues each (the rig's default configuration).
        if (0..16).any(|i| rig.gpu.mmio_read32(queue_reg(i, Q_STATUS)) & q_status::HUNG != 0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("no hardware queue ran the HANG command");
}

#[test]
fn a_hang_is_logged_as_an_engine_reset_and_a_banned_queue() {
    let log = captured_log();
    let rig = Rig::new(1);
    let guilty = rig.queue(0, Engine::Copy, TIMEOUT);
    let g = guilty.submit(Job::commands(vec![HANG])).unwrap();
    // The device must have run HANG before the timeout passes: otherwise the timeout
    // preempts a queue that has not started it, and no reset happens (a loaded machine).
    wait_until_a_queue_is_hung(&rig);
    assert_eq!(rig.advance_until(&g, STEP), Err(FenceFault::JobTimeout));
    assert!(guilty.is_banned());
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let has = |words: &[&str]| text.lines().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(
        has(&["WARN", "job hang: resetting the engine", "Copy"]),
        "{text}"
    );
    assert!(
        has(&["WARN", "engine reset", "device_lost=false"]),
        "{text}"
    );
    assert!(has(&["WARN", "exec queue banned", "reason=Hang"]), "{text}");
}
