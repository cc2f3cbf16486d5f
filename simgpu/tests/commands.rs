//! Every command of the command set, run through a ring on the copy or compute engine.

use simgpu::cmd::sem_op;
use simgpu::regs::{self, ctx_status, q_status, ErrorReason};
use simgpu::testkit::{enc, MapFlags, Rig, PAGE};
use simgpu::{PhysMemory, ENGINE_COMPUTE, ENGINE_COPY};

const VA: u64 = 0x100_0000;

/// A rig with context 0, queue 0 of both engines, and 16 pages mapped at `VA`.
fn rig() -> (Rig, u64) {
    let mut rig = Rig::new(2 << 20);
    rig.context(0, false);
    rig.queue(ENGINE_COPY, 0, 0);
    rig.queue(ENGINE_COMPUTE, 0, 0);
    let pa = rig.map_new_sys(0, VA, 16 * PAGE);
    (rig, pa)
}

fn run(rig: &mut Rig, engine: usize, cmds: &[Vec<u32>]) {
    for c in cmds {
        rig.submit(engine, 0, c);
    }
    rig.gpu.run_until_idle();
}

#[test]
fn store_dword_and_qword() {
    let (mut rig, pa) = rig();
    run(
        &mut rig,
        ENGINE_COPY,
        &[
            enc::noop(),
            enc::store_dword(VA + 4, 0xDEAD_BEEF),
            enc::store_qword(VA + 8, u64::MAX - 1),
        ],
    );
    assert_eq!(rig.sys.load_u32(pa + 4).unwrap(), 0xDEAD_BEEF);
    assert_eq!(rig.sys.load_u64(pa + 8).unwrap(), u64::MAX - 1);
    assert_eq!(rig.gpu.counters().commands, 3);
    assert_eq!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_HEAD),
        rig.qreg(ENGINE_COPY, 0, regs::Q_TAIL)
    );
}

#[test]
fn copy_spans_pages_and_reaches_vram() {
    let (mut rig, pa) = rig();
    let data: Vec<u8> = (0..3 * PAGE).map(|i| (i * 7 % 251) as u8).collect();
    rig.sys.write(pa + 100, &data).unwrap();
    let vpa = rig.alloc_vram(4 * PAGE, PAGE);
    for i in 0..4 {
        rig.map(
            0,
            0x900_0000 + i * PAGE,
            vpa + i * PAGE,
            0,
            MapFlags::VRAM_RW,
        );
    }
    run(
        &mut rig,
        ENGINE_COPY,
        &[enc::copy(VA + 100, 0x900_0000 + 50, 3 * PAGE)],
    );
    let mut back = vec![0u8; data.len()];
    rig.gpu.vram().read(vpa + 50, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(rig.gpu.counters().bytes_copied, 3 * PAGE);
}

#[test]
fn fill_repeats_the_pattern_from_the_start() {
    let (mut rig, pa) = rig();
    run(&mut rig, ENGINE_COPY, &[enc::fill(VA + 1, 10, 0x4433_2211)]);
    let got = rig.read_sys(pa, 12);
    assert_eq!(
        got,
        [0, 0x11, 0x22, 0x33, 0x44, 0x11, 0x22, 0x33, 0x44, 0x11, 0x22, 0]
    );
}

#[test]
fn atomic_add_32_and_64() {
    let (mut rig, pa) = rig();
    rig.sys.store_u64(pa, 0xFFFF_FFFF).unwrap();
    rig.sys.store_u64(pa + 8, 0xFFFF_FFFF).unwrap();
    run(
        &mut rig,
        ENGINE_COPY,
        &[
            enc::atomic_add(VA, 1, false),
            enc::atomic_add(VA + 8, 1, true),
        ],
    );
    assert_eq!(
        rig.sys.load_u64(pa).unwrap(),
        0,
        "32-bit add wraps within its dword"
    );
    assert_eq!(rig.sys.load_u64(pa + 8).unwrap(), 0x1_0000_0000);
}

#[test]
fn atomic_cmpxchg_stores_only_on_match() {
    let (mut rig, pa) = rig();
    rig.sys.store_u64(pa, 5).unwrap();
    rig.sys.store_u32(pa + 8, 7).unwrap();
    run(
        &mut rig,
        ENGINE_COPY,
        &[
            enc::cmpxchg(VA, 4, 100, true),
            enc::cmpxchg(VA + 8, 7, 9, false),
        ],
    );
    assert_eq!(rig.sys.load_u64(pa).unwrap(), 5);
    assert_eq!(rig.sys.load_u32(pa + 8).unwrap(), 9);
}

#[test]
fn misaligned_atomic_is_an_illegal_command() {
    let (mut rig, _) = rig();
    run(&mut rig, ENGINE_COPY, &[enc::atomic_add(VA + 2, 1, false)]);
    let s = rig.ctx_status(0);
    assert_eq!(s & ctx_status::ERROR, ctx_status::ERROR);
    assert_eq!(
        s >> ctx_status::REASON_SHIFT,
        ErrorReason::IllegalCommand as u32
    );
}

/// A queue blocked on a semaphore does not block another queue of the same engine; it
/// resumes when the value lands (here written by the other queue).
#[test]
fn semaphore_wait_blocks_one_queue_only() {
    let (mut rig, pa) = rig();
    rig.queue(ENGINE_COPY, 1, 0);
    run(
        &mut rig,
        ENGINE_COPY,
        &[
            enc::sem_wait(VA, sem_op::GTE, 2),
            enc::store_dword(VA + 16, 1),
        ],
    );
    assert_ne!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_STATUS) & q_status::SEM_WAIT,
        0
    );
    assert_eq!(rig.sys.load_u32(pa + 16).unwrap(), 0);
    rig.submit(ENGINE_COPY, 1, &enc::store_qword(VA + 24, 9));
    rig.submit(ENGINE_COPY, 1, &enc::store_qword(VA, 2));
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u64(pa + 24).unwrap(), 9);
    assert_eq!(rig.sys.load_u32(pa + 16).unwrap(), 1, "waiter resumed");
    assert_eq!(rig.qreg(ENGINE_COPY, 0, regs::Q_STATUS), 0);
}

#[test]
fn semaphore_ops_compare_as_documented() {
    for (op, mem, value, ok) in [
        (sem_op::EQ, 3, 3, true),
        (sem_op::EQ, 3, 4, false),
        (sem_op::NE, 3, 4, true),
        (sem_op::GTE, 3, 4, false),
        (sem_op::LT, 3, 4, true),
        (7, 0, 0, false),
    ] {
        assert_eq!(
            simgpu::cmd::sem_satisfied(op, mem, value),
            ok,
            "op {op} mem {mem} value {value}"
        );
    }
}

#[test]
fn batch_runs_then_ring_continues_and_batch_end_stops_early() {
    let (mut rig, pa) = rig();
    let mut batch: Vec<u32> = Vec::new();
    batch.extend(enc::store_dword(VA + 0x100, 1));
    batch.extend(enc::store_dword(VA + 0x104, 2));
    batch.extend(enc::batch_end());
    batch.extend(enc::store_dword(VA + 0x108, 3)); // after BATCH_END: never runs
    let bytes: Vec<u8> = batch.iter().flat_map(|d| d.to_le_bytes()).collect();
    rig.sys.write(pa + 2 * PAGE, &bytes).unwrap();
    let len = batch.len() as u32;
    run(
        &mut rig,
        ENGINE_COPY,
        &[
            enc::batch_start(VA + 2 * PAGE, len),
            enc::store_dword(VA + 0x10C, 4),
        ],
    );
    let got: Vec<u32> = (0..4)
        .map(|i| rig.sys.load_u32(pa + 0x100 + 4 * i).unwrap())
        .collect();
    assert_eq!(got, [1, 2, 0, 4]);
}

#[test]
fn nested_batch_start_is_illegal() {
    let (mut rig, pa) = rig();
    let inner = enc::batch_start(VA, 1);
    let bytes: Vec<u8> = inner.iter().flat_map(|d| d.to_le_bytes()).collect();
    rig.sys.write(pa + PAGE, &bytes).unwrap();
    run(&mut rig, ENGINE_COPY, &[enc::batch_start(VA + PAGE, 4)]);
    assert_eq!(
        rig.ctx_status(0) >> ctx_status::REASON_SHIFT,
        ErrorReason::IllegalCommand as u32
    );
}

#[test]
fn user_interrupt_latches_data_and_fires_the_engine_vector() {
    let (mut rig, _) = rig();
    run(&mut rig, ENGINE_COMPUTE, &[enc::user_interrupt(0x55)]);
    assert_eq!(rig.qreg(ENGINE_COMPUTE, 0, regs::Q_USER_DATA), 0x55);
    assert_eq!(rig.irqs.events.lock().as_slice(), &[(1, 0x101)]);
    assert_eq!(
        rig.gpu.mmio_read32(regs::INT_STATUS),
        regs::irq::COMPUTE_USER
    );
    rig.gpu
        .mmio_write32(regs::INT_STATUS, regs::irq::COMPUTE_USER);
    assert_eq!(rig.gpu.mmio_read32(regs::INT_STATUS), 0, "write 1 to clear");
}

#[test]
fn timestamp_stores_the_counter() {
    let (mut rig, pa) = rig();
    run(
        &mut rig,
        ENGINE_COPY,
        &[enc::noop(), enc::noop(), enc::timestamp(VA + 8)],
    );
    let ts = rig.sys.load_u64(pa + 8).unwrap();
    assert!(ts >= 2, "three steps ran before the write: {ts}");
    let now = u64::from(rig.gpu.mmio_read32(regs::TIMESTAMP_LO))
        | (u64::from(rig.gpu.mmio_read32(regs::TIMESTAMP_HI)) << 32);
    assert!(now > ts);
}

#[test]
fn vector_add_on_compute_and_rejected_on_copy() {
    let (mut rig, pa) = rig();
    let n = 3000u32; // spans pages
    for i in 0..u64::from(n) {
        rig.sys.store_u32(pa + 4 * i, i as u32).unwrap();
        rig.sys
            .store_u32(pa + 4 * PAGE + 4 * i, (1000 * i) as u32 + u32::MAX / 2)
            .unwrap();
    }
    run(
        &mut rig,
        ENGINE_COMPUTE,
        &[enc::vector_add(VA, VA + 4 * PAGE, VA + 8 * PAGE, n)],
    );
    for i in [0u64, 1, 1023, 1024, 2999] {
        let want = (i as u32).wrapping_add((1000 * i) as u32 + u32::MAX / 2);
        assert_eq!(
            rig.sys.load_u32(pa + 8 * PAGE + 4 * i).unwrap(),
            want,
            "element {i}"
        );
    }
    assert_eq!(rig.ctx_status(0), 0);
    run(&mut rig, ENGINE_COPY, &[enc::vector_add(VA, VA, VA, 1)]);
    assert_eq!(
        rig.ctx_status(0) >> ctx_status::REASON_SHIFT,
        ErrorReason::IllegalCommand as u32
    );
}

#[test]
fn null_pages_read_zero_and_drop_writes() {
    let (mut rig, pa) = rig();
    let sparse = MapFlags {
        writable: false,
        location: simgpu::Location::System,
        null: true,
    };
    rig.map(0, 0x500_0000, 0, 0, sparse);
    rig.sys.write(pa, &[0xAA; 16]).unwrap();
    run(
        &mut rig,
        ENGINE_COPY,
        &[
            enc::store_dword(0x500_0000, 7),
            enc::copy(0x500_0000, VA, 16),
        ],
    );
    assert_eq!(rig.read_sys(pa, 16), vec![0; 16]);
    assert_eq!(rig.read_sys(0, 8), vec![0; 8], "physical page 0 untouched");
    assert_eq!(rig.ctx_status(0), 0);
}

#[test]
fn unknown_opcode_puts_only_that_context_in_error() {
    let (mut rig, pa) = rig();
    rig.context(1, false);
    rig.map(1, VA, pa, 0, MapFlags::SYS_RW);
    rig.queue(ENGINE_COPY, 1, 1);
    run(
        &mut rig,
        ENGINE_COPY,
        &[vec![0x0001_0077], enc::store_dword(VA, 1)],
    );
    rig.submit(ENGINE_COPY, 1, &enc::store_dword(VA + 4, 2));
    rig.gpu.run_until_idle();
    assert_eq!(
        rig.ctx_status(0) >> ctx_status::REASON_SHIFT,
        ErrorReason::IllegalCommand as u32
    );
    assert_eq!(rig.sys.load_u32(pa).unwrap(), 0, "context 0 stopped");
    assert_eq!(
        rig.sys.load_u32(pa + 4).unwrap(),
        2,
        "context 1 kept running"
    );
    assert_eq!(rig.irqs.count(3), 1, "CTX_ERROR vector");
}

#[test]
fn queues_of_one_engine_interleave_round_robin() {
    let (mut rig, pa) = rig();
    rig.queue(ENGINE_COPY, 1, 0);
    for i in 0..4u32 {
        rig.submit(ENGINE_COPY, 0, &enc::atomic_add(VA, 1, false));
        rig.submit(
            ENGINE_COPY,
            0,
            &enc::store_dword(VA + 8 + 8 * u64::from(i), 0),
        );
        rig.submit(ENGINE_COPY, 1, &enc::atomic_add(VA + 4, 1, false));
    }
    // After 2 steps each queue retired one command.
    rig.gpu.step();
    rig.gpu.step();
    assert_eq!(
        (
            rig.sys.load_u32(pa).unwrap(),
            rig.sys.load_u32(pa + 4).unwrap()
        ),
        (1, 1)
    );
    rig.gpu.run_until_idle();
    assert_eq!(
        (
            rig.sys.load_u32(pa).unwrap(),
            rig.sys.load_u32(pa + 4).unwrap()
        ),
        (4, 4)
    );
}

#[test]
fn ring_wraps_around() {
    let (mut rig, pa) = rig();
    // 64 KiB ring, 16-byte stores: 5000 of them wrap the ring.
    for i in 0..5000u32 {
        rig.submit(
            ENGINE_COPY,
            0,
            &enc::store_dword(VA + 4 * u64::from(i % 16), i),
        );
        if i % 1000 == 999 {
            rig.gpu.run_until_idle();
        }
    }
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u32(pa + 4 * (4999 % 16)).unwrap(), 4999);
    assert_eq!(rig.gpu.counters().commands, 5000);
}

/// With a copy rate of 4 KiB per step, a 64 KiB copy occupies its engine for 16 steps: the
/// next command on that engine waits, the other engine does not, and the bytes are the same.
#[test]
fn cost_model_delays_the_engine_not_the_result() {
    let cfg = simgpu::Config {
        copy_bytes_per_step: 4096,
        ..simgpu::Config::default()
    };
    let mut rig = Rig::with_config(cfg, 2 << 20);
    rig.context(0, false);
    rig.queue(ENGINE_COPY, 0, 0);
    rig.queue(ENGINE_COMPUTE, 0, 0);
    let pa = rig.map_new_sys(0, VA, 40 * PAGE);
    rig.sys.write(pa, &[7u8; 16 * PAGE as usize]).unwrap();
    rig.submit(ENGINE_COPY, 0, &enc::copy(VA, VA + 16 * PAGE, 16 * PAGE));
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA + 32 * PAGE, 1));
    rig.submit(ENGINE_COMPUTE, 0, &enc::store_dword(VA + 32 * PAGE + 4, 2));
    rig.gpu.step(); // copy retires, compute store retires
    assert_eq!(
        rig.read_sys(pa + 16 * PAGE, 4),
        [7; 4],
        "data moved at once"
    );
    assert_eq!(rig.sys.load_u32(pa + 32 * PAGE + 4).unwrap(), 2);
    for _ in 0..15 {
        rig.gpu.step();
    }
    assert_eq!(
        rig.sys.load_u32(pa + 32 * PAGE).unwrap(),
        0,
        "engine still busy"
    );
    rig.gpu.step();
    assert_eq!(rig.sys.load_u32(pa + 32 * PAGE).unwrap(), 1);
}
