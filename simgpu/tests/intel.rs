//! Intel command mode (docs/simgpu.md §6a) on the engine: each command's effect, the batch
//! cursor across jumps, preemption and faults, an IGT-style spinner, and robustness against
//! arbitrary dwords.

use proptest::prelude::*;
use simgpu::cmd::{self, op};
use simgpu::fault::INFO_VALID;
use simgpu::regs::{self, ctx_status, q_status, ErrorReason};
use simgpu::testkit::{enc, proptest_cases, Rig, PAGE};
use simgpu::{PhysMemory, ENGINE_COMPUTE, ENGINE_COPY};

const VA: u64 = 0x100_0000;
const BATCH_VA: u64 = 0x200_0000;

const MI_NOOP: u32 = 0;
const MI_ARB_CHECK: u32 = 0x0280_0000;
const MI_BATCH_BUFFER_END: u32 = 0x0500_0000;
const MI_STORE_DWORD_IMM: u32 = 0x1000_0002;
const MI_STORE_QWORD_IMM: u32 = 0x1020_0003;
const MI_SEMAPHORE_WAIT: u32 = 0x0E00_0002;
const MI_SEMAPHORE_POLL: u32 = 1 << 15;
const MI_COND_BATCH_BUFFER_END: u32 = 0x1B00_0002;
const MI_DO_COMPARE: u32 = 1 << 21;
const MI_BATCH_BUFFER_START: u32 = 0x1880_0001;
const MI_ATOMIC: u32 = 0x1780_0001;
const MI_ATOMIC_INLINE: u32 = (0x2F << 23) | (1 << 18) | 9;
const MI_LOAD_REGISTER_IMM_1: u32 = 0x1100_0001;
const MI_LOAD_REGISTER_REG: u32 = 0x1500_0001;
const MI_STORE_REGISTER_MEM: u32 = 0x1200_0002;
const MI_LOAD_REGISTER_MEM: u32 = 0x1480_0002;
const CS_MMIO: u32 = 1 << 19;
const LRR_SRC_CS_MMIO: u32 = 1 << 18;
const CTX_TIMESTAMP: u32 = 0x3A8;
const fn gpr(n: u32) -> u32 {
    0x600 + 8 * n
}

fn lo(v: u64) -> u32 {
    v as u32
}
fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}

/// A rig with context 0 (recoverable faults if `recoverable`), copy queues 0..4 and compute
/// queue 0, and 4 data pages at `VA`; returns the data's physical address.
fn rig(recoverable: bool) -> (Rig, u64) {
    let mut rig = Rig::new(4 << 20);
    rig.context(0, recoverable);
    for q in 0..4 {
        rig.queue(ENGINE_COPY, q, 0);
    }
    rig.queue(ENGINE_COMPUTE, 0, 0);
    let pa = rig.map_new_sys(0, VA, 4 * PAGE);
    (rig, pa)
}

/// Maps `dwords` at `BATCH_VA`; returns their length.
fn map_batch(rig: &mut Rig, dwords: &[u32]) -> u32 {
    let bytes = (dwords.len() as u64 * 4).next_multiple_of(PAGE);
    let pa = rig.map_new_sys(0, BATCH_VA, bytes);
    for (i, w) in dwords.iter().enumerate() {
        rig.sys.store_u32(pa + 4 * i as u64, *w).unwrap();
    }
    dwords.len() as u32
}

/// BATCH_START of an Intel batch.
fn intel_start(va: u64, len: u32) -> Vec<u32> {
    vec![
        cmd::header(op::BATCH_START, cmd::FLAG_INTEL),
        lo(va),
        hi(va),
        len,
    ]
}

/// Runs `dwords` as an Intel batch on copy queue 0, then a native STORE_DWORD of 1 at
/// `VA + 0xFFC` (the ring moved on); runs until idle.
fn run(rig: &mut Rig, dwords: &[u32]) {
    let len = map_batch(rig, dwords);
    rig.submit(ENGINE_COPY, 0, &intel_start(BATCH_VA, len));
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA + 0xFFC, 1));
    rig.gpu.run_until_idle();
}

fn illegal(rig: &Rig) -> bool {
    let s = rig.ctx_status(0);
    s & ctx_status::ERROR != 0
        && (s >> ctx_status::REASON_SHIFT) & 0xF == ErrorReason::IllegalCommand as u32
}

#[test]
fn stores_with_canonical_addresses() {
    let (mut rig, pa) = rig(false);
    // The high dword sign-extends bit 47 as IGT's addr_high() does: bits 63:48 are dropped.
    let sext = 0xFFFF_0000 | hi(VA);
    run(
        &mut rig,
        &[
            MI_STORE_DWORD_IMM,
            lo(VA),
            sext,
            0xC0FFEE,
            MI_STORE_QWORD_IMM,
            lo(VA + 8),
            hi(VA),
            0x1111_2222,
            0x3333_4444,
            MI_NOOP,
            MI_BATCH_BUFFER_END,
            MI_STORE_DWORD_IMM,
            lo(VA + 16),
            hi(VA),
            0xDEAD,
        ],
    );
    assert_eq!(rig.sys.load_u32(pa).unwrap(), 0xC0FFEE);
    assert_eq!(rig.sys.load_u64(pa + 8).unwrap(), 0x3333_4444_1111_2222);
    assert_eq!(
        rig.sys.load_u32(pa + 16).unwrap(),
        0,
        "ran past BATCH_BUFFER_END"
    );
    assert_eq!(rig.sys.load_u32(pa + 0xFFC).unwrap(), 1, "the ring went on");
    assert!(!illegal(&rig));
}

#[test]
fn atomics_dword_and_qword() {
    let (mut rig, pa) = rig(false);
    rig.sys.store_u32(pa, 41).unwrap();
    rig.sys.store_u64(pa + 8, u64::MAX).unwrap();
    rig.sys.store_u32(pa + 16, 10).unwrap();
    rig.sys.store_u64(pa + 24, 7).unwrap();
    let inline = |opcode: u32, va: u64, op1: u64, op2: u64| {
        vec![
            MI_ATOMIC_INLINE | (opcode << 8),
            lo(va),
            hi(va),
            lo(op1),
            hi(op1),
            0,
            0,
            lo(op2),
            hi(op2),
            0,
            0,
        ]
    };
    let mut b = vec![
        // IGT's system allocator: MI_ATOMIC | MI_ATOMIC_INC on a dword.
        MI_ATOMIC | (0x05 << 8),
        lo(VA),
        hi(VA),
        // INC8B wraps the qword to zero, DEC twice.
        MI_ATOMIC | (0x25 << 8),
        lo(VA + 8),
        hi(VA + 8),
        MI_ATOMIC | (0x06 << 8),
        lo(VA + 16),
        hi(VA + 16),
        MI_ATOMIC | (0x06 << 8),
        lo(VA + 16),
        hi(VA + 16),
    ];
    b.extend(inline(0x27, VA + 24, 0x1_0000_0000, 0)); // ADD8B
    b.extend(inline(0x07, VA + 16, 100, 0)); // ADD
    b.extend(inline(0x0E, VA, 42, 99)); // CMP_WR: 42 == 42 → 99
    b.extend(inline(0x2E, VA + 24, 1, 5)); // CMP_WR8B: no match, unchanged
    b.push(MI_BATCH_BUFFER_END);
    run(&mut rig, &b);
    assert!(!illegal(&rig));
    assert_eq!(rig.sys.load_u32(pa).unwrap(), 99);
    assert_eq!(rig.sys.load_u64(pa + 8).unwrap(), 0);
    assert_eq!(rig.sys.load_u32(pa + 16).unwrap(), 108);
    assert_eq!(rig.sys.load_u64(pa + 24).unwrap(), 0x1_0000_0007);
}

#[test]
fn registers_load_copy_and_store() {
    let (mut rig, pa) = rig(false);
    rig.sys.store_u32(pa + 32, 0xABCD).unwrap();
    run(
        &mut rig,
        &[
            MI_LOAD_REGISTER_IMM_1 | CS_MMIO,
            gpr(0),
            0x1234_5678,
            MI_LOAD_REGISTER_IMM_1 | CS_MMIO,
            gpr(0) + 4,
            0x9ABC_DEF0,
            MI_LOAD_REGISTER_REG | CS_MMIO | LRR_SRC_CS_MMIO,
            gpr(0) + 4,
            gpr(3),
            MI_STORE_REGISTER_MEM | CS_MMIO,
            gpr(3),
            lo(VA),
            hi(VA),
            MI_STORE_REGISTER_MEM | CS_MMIO,
            gpr(0),
            lo(VA + 4),
            hi(VA),
            // Without CS_MMIO the offset is absolute: the blitter's base is 0x22000.
            MI_LOAD_REGISTER_MEM,
            0x22000 + gpr(5),
            lo(VA + 32),
            hi(VA),
            MI_STORE_REGISTER_MEM,
            0x22000 + gpr(5),
            lo(VA + 8),
            hi(VA),
            // CTX_TIMESTAMP ticks with the device timestamp: two reads differ.
            MI_LOAD_REGISTER_REG | CS_MMIO | LRR_SRC_CS_MMIO,
            CTX_TIMESTAMP,
            gpr(1),
            MI_STORE_REGISTER_MEM | CS_MMIO,
            gpr(1),
            lo(VA + 12),
            hi(VA),
            MI_STORE_REGISTER_MEM | CS_MMIO,
            CTX_TIMESTAMP,
            lo(VA + 16),
            hi(VA),
            MI_BATCH_BUFFER_END,
        ],
    );
    assert!(!illegal(&rig));
    assert_eq!(rig.sys.load_u32(pa).unwrap(), 0x9ABC_DEF0);
    assert_eq!(rig.sys.load_u32(pa + 4).unwrap(), 0x1234_5678);
    assert_eq!(rig.sys.load_u32(pa + 8).unwrap(), 0xABCD);
    let (t0, t1) = (
        rig.sys.load_u32(pa + 12).unwrap(),
        rig.sys.load_u32(pa + 16).unwrap(),
    );
    assert!(t0 > 0 && t1 > t0, "CTX_TIMESTAMP {t0} then {t1}");
}

#[test]
fn unknown_registers_and_timestamp_writes_are_illegal() {
    for bad in [
        vec![MI_LOAD_REGISTER_IMM_1 | CS_MMIO, 0x100, 1],
        vec![MI_LOAD_REGISTER_IMM_1 | CS_MMIO, CTX_TIMESTAMP, 1],
        // The blitter's base on the copy engine; the render base is not its own.
        vec![MI_LOAD_REGISTER_IMM_1, 0x2000 + gpr(0), 1],
    ] {
        let (mut rig, pa) = rig(false);
        let mut b = bad.clone();
        b.extend([MI_STORE_DWORD_IMM, lo(VA), hi(VA), 7, MI_BATCH_BUFFER_END]);
        run(&mut rig, &b);
        assert!(illegal(&rig), "{bad:x?}");
        assert_eq!(rig.sys.load_u32(pa).unwrap(), 0, "{bad:x?}");
    }
}

#[test]
fn a_semaphore_wait_polls_memory() {
    let (mut rig, pa) = rig(false);
    // Wait until the dword at VA == 5 (SAD_EQ_SDD = 4 << 12).
    let len = map_batch(
        &mut rig,
        &[
            MI_SEMAPHORE_WAIT | MI_SEMAPHORE_POLL | (4 << 12),
            5,
            lo(VA),
            hi(VA),
            MI_STORE_DWORD_IMM,
            lo(VA + 4),
            hi(VA),
            1,
            MI_BATCH_BUFFER_END,
        ],
    );
    rig.submit(ENGINE_COPY, 0, &intel_start(BATCH_VA, len));
    rig.gpu.run_until_idle();
    assert_ne!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_STATUS) & q_status::SEM_WAIT,
        0
    );
    rig.sys.store_u32(pa, 4).unwrap();
    rig.gpu.run_until_idle();
    assert_eq!(
        rig.sys.load_u32(pa + 4).unwrap(),
        0,
        "4 != 5 released the wait"
    );
    rig.sys.store_u32(pa, 5).unwrap();
    rig.gpu
        .mmio_write32(regs::queue_reg(0, regs::Q_DOORBELL), 1);
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u32(pa + 4).unwrap(), 1);
}

/// IGT's xe_spin: store `start`, then loop { ARB_CHECK; COND_BB_END while end > 0; jump }.
/// `end` at `VA + 8` starts at 0xffffffff; the CPU writes 0 to end the spinner.
fn spinner() -> Vec<u32> {
    let loop_va = BATCH_VA + 4 * 4;
    vec![
        MI_STORE_DWORD_IMM,
        lo(VA),
        hi(VA),
        0xC0FFEE,
        MI_ARB_CHECK,
        MI_COND_BATCH_BUFFER_END | MI_DO_COMPARE,
        0,
        lo(VA + 8),
        hi(VA + 8),
        MI_BATCH_BUFFER_START | (1 << 8),
        lo(loop_va),
        hi(loop_va),
    ]
}

#[test]
fn an_igt_spinner_runs_until_its_end_dword_is_written() {
    let (mut rig, pa) = rig(false);
    rig.sys.store_u32(pa + 8, 0xFFFF_FFFF).unwrap();
    let len = map_batch(&mut rig, &spinner());
    rig.submit(ENGINE_COPY, 0, &intel_start(BATCH_VA, len));
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA + 12, 1));
    let steps = rig.gpu.run_until_idle_bounded(10_000);
    assert_eq!(steps, 10_000, "the spinner stopped by itself");
    assert_eq!(rig.sys.load_u32(pa).unwrap(), 0xC0FFEE, "started");
    assert_eq!(rig.sys.load_u32(pa + 12).unwrap(), 0);
    // Another queue (here on the other engine) ends it.
    rig.submit(ENGINE_COMPUTE, 0, &enc::store_dword(VA + 8, 0));
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u32(pa + 12).unwrap(), 1, "the ring went on");
    assert!(!illegal(&rig));
    assert_eq!(rig.qreg(ENGINE_COPY, 0, regs::Q_BATCH_LEN), 0);
}

#[test]
fn a_preempted_spinner_resumes_in_intel_mode_after_its_jump() {
    let (mut rig, pa) = rig(false);
    rig.sys.store_u32(pa + 8, 0xFFFF_FFFF).unwrap();
    let len = map_batch(&mut rig, &spinner());
    rig.submit(ENGINE_COPY, 0, &intel_start(BATCH_VA, len));
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA + 12, 1));
    rig.gpu.run_until_idle_bounded(1001);
    rig.preempt(ENGINE_COPY, 0);
    rig.gpu.step();
    assert_ne!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_STATUS) & q_status::PREEMPTED,
        0
    );
    // The cursor: in the loop (a jump re-based it), Intel mode in bit 31 of the length.
    let batch_va = rig.qreg(ENGINE_COPY, 0, regs::Q_BATCH_VA_LO);
    assert_eq!(
        u64::from(batch_va),
        BATCH_VA + 16,
        "the jump moved the cursor"
    );
    assert_eq!(rig.qreg(ENGINE_COPY, 0, regs::Q_BATCH_LEN), len | 1 << 31);
    // Resumed on another hardware queue, it still spins (an Intel batch decoded as simgpu
    // commands would be an illegal command), and ends when told.
    rig.move_queue(ENGINE_COPY, 0, 3);
    assert_eq!(rig.gpu.run_until_idle_bounded(1000), 1000);
    assert!(!illegal(&rig));
    rig.sys.store_u32(pa + 8, 0).unwrap();
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u32(pa + 12).unwrap(), 1);
    assert!(!illegal(&rig));
}

#[test]
fn a_fault_mid_batch_retries_the_command_whole() {
    let (mut rig, pa) = rig(true);
    let fq = rig.fault_queue(8);
    const HOLE: u64 = 0x300_0000;
    run(
        &mut rig,
        &[
            MI_ATOMIC | (0x05 << 8),
            lo(VA),
            hi(VA),
            MI_STORE_QWORD_IMM,
            lo(HOLE),
            hi(HOLE),
            0xAAAA,
            0xBBBB,
            MI_ATOMIC | (0x05 << 8),
            lo(VA + 4),
            hi(VA),
            MI_BATCH_BUFFER_END,
        ],
    );
    assert_ne!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_STATUS) & q_status::FAULTED,
        0
    );
    assert_eq!(rig.sys.load_u64(fq).unwrap(), HOLE);
    assert_ne!(rig.sys.load_u32(fq + 8).unwrap() & INFO_VALID, 0);
    assert_eq!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_BATCH_POS),
        3,
        "stalled on the store"
    );
    assert_eq!(
        (
            rig.sys.load_u32(pa).unwrap(),
            rig.sys.load_u32(pa + 4).unwrap()
        ),
        (1, 0)
    );
    let hole = rig.map_new_sys(0, HOLE, PAGE);
    rig.gpu.mmio_write32(regs::FQ_HEAD, 1);
    rig.gpu.mmio_write32(regs::FAULT_REPLY, 0);
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u64(hole).unwrap(), 0xBBBB_0000_AAAA);
    // The first increment ran once, the last once.
    assert_eq!(
        (
            rig.sys.load_u32(pa).unwrap(),
            rig.sys.load_u32(pa + 4).unwrap()
        ),
        (1, 1)
    );
    assert_eq!(rig.sys.load_u32(pa + 0xFFC).unwrap(), 1);
}

#[test]
fn unsupported_commands_are_illegal() {
    for bad in [
        vec![0x1300_0001, 0, 0],          // MI_FLUSH_DW: outside the subset
        vec![0x7A00_0004, 0, 0, 0, 0, 0], // a 3D command
        vec![MI_STORE_DWORD_IMM | (1 << 22), lo(VA), hi(VA), 1], // GGTT
        vec![MI_BATCH_BUFFER_START | (1 << 22), lo(BATCH_VA), 0], // second-level batch
        vec![MI_COND_BATCH_BUFFER_END, 0, lo(VA), hi(VA)], // no DO_COMPARE
        vec![MI_ATOMIC | (0x07 << 8), lo(VA), hi(VA)], // ADD without inline operand
        vec![MI_STORE_DWORD_IMM, lo(VA) + 2, hi(VA), 1], // misaligned
        vec![MI_STORE_DWORD_IMM, lo(VA)], // cut short by the batch's end
    ] {
        let (mut rig, pa) = rig(false);
        run(&mut rig, &bad);
        assert!(illegal(&rig), "{bad:x?}");
        assert_eq!(rig.sys.load_u32(pa).unwrap(), 0, "{bad:x?}");
    }
}

/// One command of the subset with its declared length right but random flag bits and
/// operands drawn from addresses and registers that exist, or arbitrary dwords.
fn command() -> impl Strategy<Value = Vec<u32>> {
    let ops: Vec<(u32, u32)> = vec![
        (0x00, 1),
        (0x05, 1),
        (0x0A, 1),
        (0x20, 4),
        (0x20, 5),
        (0x1C, 4),
        (0x1C, 5),
        (0x36, 4),
        (0x22, 3),
        (0x22, 5),
        (0x24, 4),
        (0x29, 4),
        (0x2A, 3),
        (0x2F, 3),
        (0x2F, 11),
        (0x31, 3),
    ];
    let operand = prop_oneof![
        (0u32..64).prop_map(|i| lo(VA) + 4 * i),
        (0u32..16).prop_map(|i| lo(BATCH_VA) + 4 * i),
        Just(0u32),
        (0u32..16).prop_map(gpr),
        Just(CTX_TIMESTAMP),
        any::<u32>(),
    ];
    // The flag bits the subset gives meaning to (GGTT, qword/compare, CS_MMIO, inline,
    // poll/predicate, compare ops, return data, PPGTT, resource streamer), a few at a time.
    let bits: Vec<u32> = [22, 21, 19, 18, 16, 15, 14, 13, 12, 10, 8]
        .iter()
        .map(|b| 1 << b)
        .collect();
    (
        prop::sample::select(ops),
        prop::sample::subsequence(bits, 0..3),
        prop::collection::vec(operand, 10),
    )
        .prop_map(|((op, len), flags, operands)| {
            let fixed = op == 0x00 || op == 0x05 || op == 0x0A;
            let low = if fixed { 0 } else { len - 2 };
            // An ATOMIC's inline-data bit follows its length.
            let mut hdr = (op << 23) | flags.iter().fold(0, |a, b| a | b) | low;
            if op == 0x2F {
                hdr = (hdr & !(1 << 18)) | if len == 11 { 1 << 18 } else { 0 };
            }
            std::iter::once(hdr)
                .chain(operands.into_iter().take(len as usize - 1))
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

    /// Arbitrary commands and dwords in Intel mode never panic the device; the batch ends
    /// (or is an illegal command, or faults, or waits) or is still looping after the bound,
    /// and the device keeps serving other queues.
    #[test]
    fn arbitrary_intel_dwords_never_panic(
        words in prop::collection::vec(prop_oneof![
            3 => command(),
            1 => any::<u32>().prop_map(|w| vec![w]),
        ], 1..24).prop_map(|c| c.concat())
    ) {
        let (mut rig, _) = rig(false);
        let len = map_batch(&mut rig, &words);
        rig.submit(ENGINE_COPY, 0, &intel_start(BATCH_VA, len));
        rig.gpu.run_until_idle_bounded(5_000);
        rig.context(1, false);
        rig.queue(ENGINE_COPY, 1, 1);
        let pa = rig.map_new_sys(1, VA, PAGE);
        rig.submit(ENGINE_COPY, 1, &enc::store_dword(VA, 9));
        rig.gpu.run_until_idle_bounded(20_000);
        prop_assert_eq!(rig.sys.load_u32(pa).unwrap(), 9);
    }
}
