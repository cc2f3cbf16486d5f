//! Intel batches at the driver API level: a queue created with `BatchFormat::Intel` runs
//! IGT's spinner; a spinner that never ends is killed by the job timeout like any hang.

use super::harness::*;
use crate::exec::{ErrorKind, ExecError, Job, QueueMode};
use crate::hw::cmd::BatchFormat;
use crate::hw::Engine;
use crate::sync::FenceFault;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(1);
const STEP: Duration = Duration::from_millis(1500);
/// Where the spinner's batch lives in the data area, and its start/end dwords.
const BATCH: u64 = 0x1000;
const START: u64 = 0x0;
const END: u64 = 0x8;

/// IGT's xe_spin: store 0xc0ffee to `START`, then loop { ARB_CHECK; end the batch unless
/// the dword at `END` > 0; jump back }.
fn spinner() -> Vec<u32> {
    let (start, end, looped) = (data(START).get(), data(END).get(), data(BATCH + 16).get());
    vec![
        0x1000_0002,
        start as u32,
        (start >> 32) as u32,
        0xC0FFEE,
        0x0280_0000,
        0x1B20_0002,
        0,
        end as u32,
        (end >> 32) as u32,
        0x1880_0101,
        looped as u32,
        (looped >> 32) as u32,
    ]
}

fn intel_queue(rig: &Rig, timeout: Duration) -> crate::exec::ExecQueue {
    let mut cfg = rig.config(0, Engine::Copy, QueueMode::Dma { timeout });
    cfg.batches = BatchFormat::Intel;
    rig.sched.create_queue(cfg).unwrap()
}

fn load_spinner(rig: &Rig) -> Job {
    let words = spinner();
    for (i, w) in words.iter().enumerate() {
        rig.hw
            .dma()
            .write_u32(rig.data_pa(0, BATCH + 4 * i as u64), *w)
            .unwrap();
    }
    rig.write(0, END, 0xFFFF_FFFF);
    Job::batch(data(BATCH), 1 << 16)
}

#[test]
fn an_intel_spinner_ends_when_the_cpu_writes_its_end_dword() {
    let rig = Rig::new(1);
    let q = intel_queue(&rig, NEVER);
    let spin = q.submit(load_spinner(&rig)).unwrap();
    let after = q.submit(Job::commands(store(0x10, 7))).unwrap();
    let started = std::time::Instant::now();
    while rig.read(0, START) != 0xC0FFEE {
        assert!(started.elapsed() < PATIENCE, "the spinner never started");
        assert!(!spin.is_signalled(), "the spinner failed before starting");
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20));
    assert!(!spin.is_signalled(), "the spinner ended by itself");
    rig.write(0, END, 0);
    assert_eq!(wait(&spin), Ok(()));
    assert_eq!(wait(&after), Ok(()));
    assert_eq!(rig.read(0, 0x10), 7);
}

#[test]
fn the_job_timeout_kills_an_intel_spinner_that_never_ends() {
    let rig = Rig::new(1);
    let q = intel_queue(&rig, TIMEOUT);
    let spin = q.submit(load_spinner(&rig)).unwrap();
    assert_eq!(rig.advance_until(&spin, STEP), Err(FenceFault::JobTimeout));
    let err = q.submit(Job::commands(store(0x10, 7))).unwrap_err();
    assert!(matches!(err, ExecError::QueueBanned { .. }));
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    // The engine still runs other queues' work.
    let other = rig.queue(0, Engine::Copy, NEVER);
    let f = other.submit(Job::commands(store(0x18, 9))).unwrap();
    assert_eq!(wait(&f), Ok(()));
    assert_eq!(rig.read(0, 0x18), 9);
}
