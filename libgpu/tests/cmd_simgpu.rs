//! Encoded batches run on simgpu: the batch is written into GPU-mapped memory and started from
//! the ring with BATCH_START (through `simgpu::testkit`, a minimal driver), so what the encoder
//! writes is what the device executes.

use libgpu::cmd::{Batch, SemOp};
use simgpu::regs::{self, ctx_status, ErrorReason};
use simgpu::testkit::{enc, Rig, PAGE};
use simgpu::{PhysMemory, ENGINE_COMPUTE, ENGINE_COPY};

const VA: u64 = 0x100_0000;
/// Where batches live in the mapped range.
const BATCH: u64 = VA + 12 * PAGE;

/// A rig with context 0, queue 0 of both engines, and 16 pages mapped at `VA`.
fn rig() -> (Rig, u64) {
    let mut rig = Rig::new(2 << 20);
    rig.context(0, false);
    rig.queue(ENGINE_COPY, 0, 0);
    rig.queue(ENGINE_COMPUTE, 0, 0);
    let pa = rig.map_new_sys(0, VA, 16 * PAGE);
    (rig, pa)
}

/// Write `batch` at `BATCH` and run it on `engine`.
fn run(rig: &mut Rig, pa: u64, engine: usize, batch: &Batch) {
    rig.sys.write(pa + (BATCH - VA), &batch.to_bytes()).unwrap();
    rig.submit(engine, 0, &enc::batch_start(BATCH, batch.len() as u32));
    rig.gpu.run_until_idle();
    assert_eq!(rig.ctx_status(0), 0, "the context raised no error");
}

#[test]
fn stores_copy_fill_and_end() {
    let (mut rig, pa) = rig();
    let mut b = Batch::new();
    b.noop()
        .store_dword(VA, 0xdead_beef)
        .store_qword(VA + 8, u64::MAX - 1)
        .fill(VA + PAGE + 1, 10, 0x4433_2211)
        .copy(VA, VA + 2 * PAGE, 16)
        .batch_end()
        .store_dword(VA + 0x40, 1); // after BATCH_END: never runs
    run(&mut rig, pa, ENGINE_COPY, &b);
    assert_eq!(rig.sys.load_u32(pa).unwrap(), 0xdead_beef);
    assert_eq!(rig.sys.load_u64(pa + 8).unwrap(), u64::MAX - 1);
    assert_eq!(
        rig.read_sys(pa + PAGE, 12),
        [0, 0x11, 0x22, 0x33, 0x44, 0x11, 0x22, 0x33, 0x44, 0x11, 0x22, 0]
    );
    assert_eq!(rig.read_sys(pa + 2 * PAGE, 16), rig.read_sys(pa, 16));
    assert_eq!(rig.sys.load_u32(pa + 0x40).unwrap(), 0);
}

#[test]
fn atomics_and_semaphores() {
    let (mut rig, pa) = rig();
    rig.sys.store_u64(pa, 0xffff_ffff).unwrap();
    rig.sys.store_u64(pa + 8, 0xffff_ffff).unwrap();
    rig.sys.store_u64(pa + 16, 5).unwrap();
    let mut b = Batch::new();
    b.atomic_add32(VA, 1).unwrap();
    b.atomic_add64(VA + 8, 1).unwrap();
    b.cmpxchg64(VA + 16, 5, 6).unwrap();
    b.cmpxchg32(VA + 16, 5, 9).unwrap(); // no match any more: unchanged
    b.semaphore_wait(VA + 16, SemOp::Gte, 6, true)
        .store_dword(VA + 24, 1);
    run(&mut rig, pa, ENGINE_COPY, &b);
    assert_eq!(
        rig.sys.load_u64(pa).unwrap(),
        0,
        "32-bit add wraps in its dword"
    );
    assert_eq!(rig.sys.load_u64(pa + 8).unwrap(), 0x1_0000_0000);
    assert_eq!(rig.sys.load_u64(pa + 16).unwrap(), 6);
    assert_eq!(
        rig.sys.load_u32(pa + 24).unwrap(),
        1,
        "the satisfied wait went on"
    );
}

#[test]
fn timestamp_user_interrupt_and_vector_add_on_compute() {
    let (mut rig, pa) = rig();
    let n = 100u32;
    for i in 0..u64::from(n) {
        rig.sys.store_u32(pa + 4 * PAGE + 4 * i, i as u32).unwrap();
        rig.sys.store_u32(pa + 5 * PAGE + 4 * i, 1000).unwrap();
    }
    let mut b = Batch::new();
    b.noop().timestamp(VA);
    b.vector_add(VA + 4 * PAGE, VA + 5 * PAGE, VA + 6 * PAGE, n)
        .unwrap();
    b.user_interrupt(0x55).batch_end();
    run(&mut rig, pa, ENGINE_COMPUTE, &b);
    assert!(rig.sys.load_u64(pa).unwrap() > 0, "a timestamp was stored");
    for i in [0u64, 1, 99] {
        let got = rig.sys.load_u32(pa + 6 * PAGE + 4 * i).unwrap();
        assert_eq!(got, i as u32 + 1000, "element {i}");
    }
    assert_eq!(rig.qreg(ENGINE_COMPUTE, 0, regs::Q_USER_DATA), 0x55);
    assert_eq!(
        rig.gpu.mmio_read32(regs::INT_STATUS) & regs::irq::COMPUTE_USER,
        regs::irq::COMPUTE_USER
    );
}

#[test]
fn a_compute_batch_on_the_copy_engine_is_illegal() {
    let (mut rig, pa) = rig();
    let mut b = Batch::new();
    b.vector_add(VA, VA, VA, 1).unwrap();
    assert!(b.needs_compute());
    rig.sys.write(pa + (BATCH - VA), &b.to_bytes()).unwrap();
    rig.submit(ENGINE_COPY, 0, &enc::batch_start(BATCH, b.len() as u32));
    rig.gpu.run_until_idle();
    assert_eq!(
        rig.ctx_status(0) >> ctx_status::REASON_SHIFT,
        ErrorReason::IllegalCommand as u32
    );
}
