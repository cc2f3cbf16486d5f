//! Preemption: a per-queue request stops the queue at a command boundary, keeps its
//! position (ring head and batch cursor) and acknowledges with PREEMPT_DONE; the saved
//! state resumes on any hardware queue of the engine.

use simgpu::cmd::sem_op;
use simgpu::regs::{self, irq, q_status};
use simgpu::testkit::{enc, Rig, PAGE};
use simgpu::{PhysMemory, ENGINE_COMPUTE, ENGINE_COPY};
use std::time::{Duration, Instant};

const VA: u64 = 0x100_0000;
const BATCH_VA: u64 = 0x200_0000;
/// The PREEMPT_DONE vector (cause bit n is vector n).
const PREEMPT_VECTOR: u16 = irq::PREEMPT_DONE.trailing_zeros() as u16;

fn rig() -> (Rig, u64) {
    let mut rig = Rig::new(4 << 20);
    rig.context(0, false);
    for q in 0..4 {
        rig.queue(ENGINE_COPY, q, 0);
    }
    let pa = rig.map_new_sys(0, VA, 4 * PAGE);
    (rig, pa)
}

/// Maps a batch of `n` 64-bit ATOMIC_ADDs of 1 on the counter at `VA`; returns its length
/// in dwords.
fn counting_batch(rig: &mut Rig, n: usize) -> u32 {
    let words: Vec<u32> = (0..n).flat_map(|_| enc::atomic_add(VA, 1, true)).collect();
    let bytes = (words.len() as u64 * 4).next_multiple_of(PAGE);
    let pa = rig.map_new_sys(0, BATCH_VA, bytes);
    for (i, w) in words.iter().enumerate() {
        rig.sys.store_u32(pa + 4 * i as u64, *w).unwrap();
    }
    words.len() as u32
}

fn status(rig: &Rig, q: usize) -> u32 {
    rig.qreg(ENGINE_COPY, q, regs::Q_STATUS)
}

#[test]
fn preempt_mid_batch_saves_the_cursor_and_resumes_on_another_queue() {
    let (mut rig, pa) = rig();
    let len = counting_batch(&mut rig, 50);
    rig.submit(ENGINE_COPY, 0, &enc::batch_start(BATCH_VA, len));
    rig.submit(ENGINE_COPY, 0, &enc::store_qword(VA + 8, 7));
    // One step enters the batch, nine retire nine adds.
    for _ in 0..10 {
        rig.gpu.step();
    }
    assert_eq!(rig.sys.load_u64(pa).unwrap(), 9);
    rig.preempt(ENGINE_COPY, 0);
    assert_eq!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_PREEMPT),
        1,
        "request pending"
    );
    rig.gpu.step();
    assert_eq!(rig.irqs.count(PREEMPT_VECTOR), 1);
    assert_eq!(rig.qreg(ENGINE_COPY, 0, regs::Q_PREEMPT), 0);
    assert_eq!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_CTRL),
        0,
        "preemption disables"
    );
    assert_ne!(status(&rig, 0) & q_status::PREEMPTED, 0);
    // The position: head still at the BATCH_START, the cursor after the ninth add.
    assert_eq!(rig.qreg(ENGINE_COPY, 0, regs::Q_HEAD), 0);
    assert_eq!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_BATCH_VA_LO),
        BATCH_VA as u32
    );
    assert_eq!(rig.qreg(ENGINE_COPY, 0, regs::Q_BATCH_POS), 9 * 5);
    assert_eq!(rig.qreg(ENGINE_COPY, 0, regs::Q_BATCH_LEN), len);
    // Stopped means stopped: no command of it retires while preempted.
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u64(pa).unwrap(), 9);

    // Resumed on hardware queue 3, every add ran exactly once and the ring continues.
    rig.move_queue(ENGINE_COPY, 0, 3);
    assert_eq!(status(&rig, 3) & q_status::PREEMPTED, 0);
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u64(pa).unwrap(), 50);
    assert_eq!(rig.sys.load_u64(pa + 8).unwrap(), 7);
    assert_eq!(
        rig.qreg(ENGINE_COPY, 3, regs::Q_HEAD),
        rig.qreg(ENGINE_COPY, 3, regs::Q_TAIL)
    );
    assert_eq!(rig.qreg(ENGINE_COPY, 3, regs::Q_BATCH_LEN), 0);
}

#[test]
fn preemption_does_not_stop_the_other_queues() {
    let (mut rig, pa) = rig();
    let len = counting_batch(&mut rig, 40);
    rig.submit(ENGINE_COPY, 0, &enc::batch_start(BATCH_VA, len));
    rig.submit(ENGINE_COPY, 1, &enc::batch_start(BATCH_VA, len));
    for _ in 0..10 {
        rig.gpu.step();
    }
    rig.preempt(ENGINE_COPY, 0);
    rig.gpu.run_until_idle();
    // Queue 1 ran its 40 adds, queue 0 stopped after the first step of the preemption.
    let stopped = rig.qreg(ENGINE_COPY, 0, regs::Q_BATCH_POS) / 5;
    assert_eq!(rig.sys.load_u64(pa).unwrap(), 40 + u64::from(stopped));
    assert_eq!(
        rig.qreg(ENGINE_COPY, 1, regs::Q_HEAD),
        rig.qreg(ENGINE_COPY, 1, regs::Q_TAIL)
    );
}

#[test]
fn a_semaphore_wait_is_preempted_and_runs_again_on_resume() {
    let (mut rig, pa) = rig();
    rig.submit(ENGINE_COPY, 0, &enc::sem_wait(VA, sem_op::GTE, 1));
    rig.submit(ENGINE_COPY, 0, &enc::store_qword(VA + 8, 5));
    rig.gpu.step();
    assert_ne!(status(&rig, 0) & q_status::SEM_WAIT, 0);
    rig.preempt(ENGINE_COPY, 0);
    rig.gpu.step();
    assert_eq!(rig.irqs.count(PREEMPT_VECTOR), 1);
    let s = status(&rig, 0);
    assert_eq!(s & q_status::SEM_WAIT, 0);
    assert_ne!(s & q_status::PREEMPTED, 0);
    assert_eq!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_HEAD),
        0,
        "the wait did not retire"
    );
    rig.sys.store_u64(pa, 1).unwrap();
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u64(pa + 8).unwrap(), 0, "preempted queue ran");
    rig.move_queue(ENGINE_COPY, 0, 2);
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u64(pa + 8).unwrap(), 5);
}

#[test]
fn an_idle_or_disabled_queue_acknowledges_at_the_next_step() {
    let (rig, _) = rig();
    rig.preempt(ENGINE_COPY, 1);
    rig.gpu.mmio_write32(
        regs::queue_reg(rig.qindex(ENGINE_COPY, 2) as u32, regs::Q_CTRL),
        0,
    );
    rig.preempt(ENGINE_COPY, 2);
    rig.gpu.step();
    assert_eq!(rig.irqs.count(PREEMPT_VECTOR), 1, "one message per step");
    assert_ne!(status(&rig, 1) & q_status::PREEMPTED, 0);
    assert_ne!(status(&rig, 2) & q_status::PREEMPTED, 0);
    assert_eq!(status(&rig, 3) & q_status::PREEMPTED, 0, "not asked");
}

#[test]
fn a_hung_queue_never_acknowledges_and_a_reset_drops_the_request() {
    let (mut rig, _) = rig();
    rig.gpu.inject_hang(ENGINE_COPY, 0);
    rig.submit(ENGINE_COPY, 0, &enc::noop());
    rig.gpu.step();
    assert_ne!(status(&rig, 0) & q_status::HUNG, 0);
    rig.preempt(ENGINE_COPY, 0);
    for _ in 0..100 {
        rig.gpu.step();
    }
    assert_eq!(rig.irqs.count(PREEMPT_VECTOR), 0);
    assert_eq!(rig.qreg(ENGINE_COPY, 0, regs::Q_PREEMPT), 1);
    rig.gpu.mmio_write32(regs::ENGINE_RESET, 1 << ENGINE_COPY);
    rig.gpu.step();
    assert_eq!(rig.qreg(ENGINE_COPY, 0, regs::Q_PREEMPT), 0);
    assert_eq!(rig.irqs.count(PREEMPT_VECTOR), 0);
    assert_eq!(status(&rig, 0) & q_status::PREEMPTED, 0);
}

#[test]
fn a_preemption_request_wakes_the_device_thread() {
    let (mut rig, pa) = rig();
    rig.context(1, false);
    rig.queue(ENGINE_COMPUTE, 0, 0);
    rig.submit(ENGINE_COMPUTE, 0, &enc::sem_wait(VA, sem_op::GTE, 1));
    rig.gpu.start();
    rig.preempt(ENGINE_COMPUTE, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.irqs.count(PREEMPT_VECTOR) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    rig.gpu.stop();
    assert_eq!(rig.irqs.count(PREEMPT_VECTOR), 1);
    assert_ne!(
        rig.qreg(ENGINE_COMPUTE, 0, regs::Q_STATUS) & q_status::PREEMPTED,
        0
    );
    assert_eq!(rig.sys.load_u64(pa).unwrap(), 0);
}
