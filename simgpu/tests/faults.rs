//! Faults (retry, abort, non-recoverable isolation), hangs and engine reset, interrupts,
//! PCI identity, counters, and step mode vs thread mode.

use simgpu::fault::{INFO_FATAL, INFO_VALID};
use simgpu::mmu::{Access, FaultReason};
use simgpu::regs::{self, ctx_status, irq, q_status, ErrorReason};
use simgpu::testkit::{enc, MapFlags, Rig, PAGE};
use simgpu::{pci, PhysMemory, ENGINE_COMPUTE, ENGINE_COPY};
use std::time::{Duration, Instant};

const VA: u64 = 0x100_0000;

fn decode_record(rig: &Rig, base: u64, i: u64) -> (u64, u32) {
    let rec = base + 16 * i;
    (
        rig.sys.load_u64(rec).unwrap(),
        rig.sys.load_u32(rec + 8).unwrap(),
    )
}

#[test]
fn recoverable_fault_stalls_then_retry_completes() {
    let mut rig = Rig::new(2 << 20);
    let fq = rig.fault_queue(8);
    rig.context(3, true);
    rig.queue(ENGINE_COPY, 2, 3);
    rig.submit(ENGINE_COPY, 2, &enc::store_dword(VA + 12, 42));
    rig.gpu.run_until_idle();
    assert_ne!(
        rig.qreg(ENGINE_COPY, 2, regs::Q_STATUS) & q_status::FAULTED,
        0
    );
    assert_eq!(rig.gpu.mmio_read32(regs::FQ_TAIL), 1);
    let (va, info) = decode_record(&rig, fq, 0);
    assert_eq!(va, VA + 12);
    assert_eq!(info & 0xFFFF, 3, "context");
    assert_eq!((info >> 16) & 3, Access::Write as u32);
    assert_eq!((info >> 18) & 3, FaultReason::NotPresent as u32);
    assert_eq!((info >> 20) & 0xF, 2, "queue");
    assert_eq!((info >> 24) & 0xF, ENGINE_COPY as u32);
    assert_eq!(info & (INFO_VALID | INFO_FATAL), INFO_VALID);
    assert_eq!(rig.irqs.count(2), 1, "FAULT vector");

    let pa = rig.map_new_sys(3, VA, PAGE);
    rig.gpu.mmio_write32(regs::FQ_HEAD, 1);
    rig.gpu.mmio_write32(regs::FAULT_REPLY, 3);
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u32(pa + 12).unwrap(), 42);
    assert_eq!(rig.qreg(ENGINE_COPY, 2, regs::Q_STATUS), 0);
    assert_eq!(rig.gpu.counters().faults, 1);
}

#[test]
fn fault_abort_kills_the_context() {
    let mut rig = Rig::new(2 << 20);
    rig.fault_queue(8);
    rig.context(0, true);
    rig.queue(ENGINE_COPY, 0, 0);
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA, 1));
    rig.gpu.run_until_idle();
    assert_eq!(rig.ctx_status(0), 0, "stalled, not dead");
    rig.gpu
        .mmio_write32(regs::FAULT_REPLY, regs::fault_reply::ABORT);
    rig.map_new_sys(0, VA, PAGE);
    rig.gpu.run_until_idle();
    let s = rig.ctx_status(0);
    assert_eq!(
        s,
        ctx_status::ERROR | ((ErrorReason::Aborted as u32) << ctx_status::REASON_SHIFT)
    );
    assert_ne!(
        rig.qreg(ENGINE_COPY, 0, regs::Q_STATUS) & q_status::ERROR,
        0
    );
    assert_eq!(rig.gpu.counters().commands, 0);
}

#[test]
fn non_recoverable_fault_isolates_one_context() {
    let mut rig = Rig::new(2 << 20);
    let fq = rig.fault_queue(8);
    rig.context(0, false);
    rig.context(1, false);
    let pa = rig.map_new_sys(1, VA, PAGE);
    rig.queue(ENGINE_COPY, 0, 0);
    rig.queue(ENGINE_COPY, 1, 1);
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA, 1)); // unmapped in context 0
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA, 2));
    for i in 0..3 {
        rig.submit(ENGINE_COPY, 1, &enc::store_dword(VA + 4 * i, 10 + i as u32));
    }
    rig.gpu.run_until_idle();
    let s = rig.ctx_status(0);
    assert_eq!(
        s,
        ctx_status::ERROR | ((ErrorReason::Fault as u32) << ctx_status::REASON_SHIFT)
    );
    assert_eq!(rig.ctx_status(1), 0);
    assert_eq!(
        rig.read_sys(pa, 12),
        [10, 0, 0, 0, 11, 0, 0, 0, 12, 0, 0, 0]
    );
    let (_, info) = decode_record(&rig, fq, 0);
    assert_ne!(info & INFO_FATAL, 0, "logged as fatal");
    assert_eq!(rig.irqs.count(3), 1, "CTX_ERROR vector");
}

#[test]
fn read_only_page_write_faults_and_fetch_faults_report_access() {
    let mut rig = Rig::new(2 << 20);
    let fq = rig.fault_queue(8);
    rig.context(0, true);
    let pa = rig.alloc_sys(PAGE, PAGE);
    let ro = MapFlags {
        writable: false,
        ..MapFlags::SYS_RW
    };
    rig.map(0, VA, pa, 0, ro);
    rig.queue(ENGINE_COPY, 0, 0);
    rig.queue(ENGINE_COMPUTE, 0, 0);
    rig.submit(ENGINE_COPY, 0, &enc::atomic_add(VA, 1, false));
    rig.submit(ENGINE_COMPUTE, 0, &enc::batch_start(0x7700_0000, 4));
    rig.gpu.run_until_idle();
    let mut seen: Vec<(u64, u32, u32)> = (0..2)
        .map(|i| {
            let (va, info) = decode_record(&rig, fq, i);
            (va, (info >> 16) & 3, (info >> 18) & 3)
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (VA, Access::Atomic as u32, FaultReason::ReadOnly as u32),
            (
                0x7700_0000,
                Access::Fetch as u32,
                FaultReason::NotPresent as u32
            )
        ]
    );
}

#[test]
fn full_fault_queue_holds_records_until_the_driver_consumes() {
    let mut rig = Rig::new(2 << 20);
    rig.fault_queue(2); // one usable slot: head == tail means empty
    for ctx in 0..3 {
        rig.context(ctx, true);
        rig.queue(ENGINE_COPY, ctx as usize, ctx);
        rig.submit(ENGINE_COPY, ctx as usize, &enc::store_dword(VA, 1));
    }
    rig.gpu.run_until_idle();
    assert_eq!(rig.gpu.mmio_read32(regs::FQ_TAIL), 1);
    rig.gpu.mmio_write32(regs::FQ_HEAD, 1);
    rig.gpu.run_until_idle();
    assert_eq!(rig.gpu.mmio_read32(regs::FQ_TAIL), 0);
    rig.gpu.mmio_write32(regs::FQ_HEAD, 0);
    rig.gpu.run_until_idle();
    assert_eq!(rig.gpu.mmio_read32(regs::FQ_TAIL), 1);
    assert_eq!(rig.gpu.counters().faults, 3);
}

#[test]
fn hang_then_engine_reset_reports_the_guilty_context() {
    let mut rig = Rig::new(2 << 20);
    rig.context(4, false);
    rig.context(5, false);
    let pa = rig.map_new_sys(5, VA, PAGE);
    rig.map(4, VA, pa, 0, MapFlags::SYS_RW);
    rig.queue(ENGINE_COPY, 0, 4);
    rig.queue(ENGINE_COPY, 1, 5);
    rig.queue(ENGINE_COMPUTE, 0, 5);
    rig.submit(ENGINE_COPY, 0, &enc::hang());
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA, 1));
    rig.gpu.inject_hang(ENGINE_COPY, 1);
    rig.submit(ENGINE_COPY, 1, &enc::store_dword(VA + 4, 2));
    rig.submit(ENGINE_COMPUTE, 0, &enc::store_dword(VA + 8, 3));
    rig.gpu.run_until_idle();
    assert_ne!(rig.qreg(ENGINE_COPY, 0, regs::Q_STATUS) & q_status::HUNG, 0);
    assert_ne!(rig.qreg(ENGINE_COPY, 1, regs::Q_STATUS) & q_status::HUNG, 0);
    assert_eq!(
        rig.read_sys(pa, 12),
        [0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0],
        "other engine ran"
    );

    rig.gpu.mmio_write32(regs::ENGINE_RESET, 1 << ENGINE_COPY);
    let guilty = rig
        .gpu
        .mmio_read32(regs::RESET_GUILTY_CTX + 4 * ENGINE_COPY as u32);
    assert_eq!(guilty, 4, "first hung queue's context");
    assert_eq!(
        rig.gpu
            .mmio_read32(regs::RESET_GUILTY_CTX + 4 * ENGINE_COMPUTE as u32),
        regs::NO_CONTEXT
    );
    assert_ne!(rig.gpu.mmio_read32(regs::INT_STATUS) & irq::RESET_DONE, 0);
    for ctx in [4, 5] {
        assert_eq!(
            rig.ctx_status(ctx) >> ctx_status::REASON_SHIFT,
            ErrorReason::Reset as u32
        );
    }
    for q in 0..2 {
        let st = rig.qreg(ENGINE_COPY, q, regs::Q_STATUS);
        assert_eq!(st & q_status::HUNG, 0, "queue {q} no longer hung");
        assert_eq!(
            rig.qreg(ENGINE_COPY, q, regs::Q_CTRL),
            0,
            "queue {q} stopped"
        );
    }
    // The driver recovers: clear the error, re-enable, submit again.
    for ctx in [4, 5] {
        rig.gpu
            .mmio_write32(regs::ctx_reg(ctx, regs::CTX_STATUS), ctx_status::ERROR);
    }
    rig.queue(ENGINE_COPY, 0, 4);
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA + 12, 4));
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u32(pa + 12).unwrap(), 4);
}

#[test]
fn masked_vector_is_pending_until_unmasked_and_int_mask_gates_delivery() {
    let mut rig = Rig::new(1 << 20);
    rig.context(0, false);
    rig.queue(ENGINE_COPY, 0, 0);
    let ctrl = regs::MSIX_TABLE + 12; // vector 0 (COPY_USER) control
    rig.gpu.mmio_write32(ctrl, 1);
    rig.submit(ENGINE_COPY, 0, &enc::user_interrupt(1));
    rig.gpu.run_until_idle();
    assert_eq!(rig.irqs.count(0), 0);
    assert_eq!(rig.gpu.mmio_read32(regs::MSIX_PBA) & 1, 1);
    rig.gpu.mmio_write32(ctrl, 0);
    assert_eq!(rig.irqs.count(0), 1);
    assert_eq!(rig.gpu.mmio_read32(regs::MSIX_PBA) & 1, 0);
    rig.gpu.mmio_write32(regs::INT_MASK, 0);
    rig.submit(ENGINE_COPY, 0, &enc::user_interrupt(2));
    rig.gpu.run_until_idle();
    assert_eq!(rig.irqs.count(0), 1, "cause disabled in INT_MASK");
    assert_ne!(
        rig.gpu.mmio_read32(regs::INT_STATUS) & irq::COPY_USER,
        0,
        "status still latched"
    );
}

#[test]
fn pci_identity_bars_and_msix_capability() {
    let rig = Rig::new(1 << 20);
    let cs = rig.gpu.config_space();
    assert_eq!(u16::from_le_bytes([cs[0], cs[1]]), 0x7347);
    assert_eq!(u16::from_le_bytes([cs[2], cs[3]]), 0x0001);
    assert_eq!(
        (cs[0x08], cs[0x09], cs[0x0A], cs[0x0B]),
        (0x01, 0x00, 0x02, 0x03)
    );
    assert_eq!(
        cs[0x10] & 0xF,
        0b0100,
        "BAR0: 64-bit, non-prefetchable memory"
    );
    assert_eq!(cs[0x18] & 0xF, 0b1100, "BAR2: 64-bit, prefetchable memory");
    let cap = usize::from(cs[0x34]);
    assert_eq!(cs[cap], pci::MSIX_CAP_ID);
    assert_eq!(
        u16::from_le_bytes([cs[cap + 2], cs[cap + 3]]) & 0x7FF,
        irq::COUNT as u16 - 1
    );
    assert_eq!(
        u32::from_le_bytes([cs[cap + 4], cs[cap + 5], cs[cap + 6], cs[cap + 7]]),
        regs::MSIX_TABLE
    );
    // BAR sizing: all-ones reads back the size mask.
    for (bar, size) in [
        (0x10u16, regs::BAR0_SIZE),
        (0x18, rig.gpu.config().vram_size),
    ] {
        rig.gpu.config_write32(bar, u32::MAX);
        rig.gpu.config_write32(bar + 4, u32::MAX);
        let lo = u64::from(rig.gpu.config_read32(bar) & !0xF);
        let hi = u64::from(rig.gpu.config_read32(bar + 4));
        assert_eq!(!((hi << 32) | lo) + 1, size);
    }
    rig.gpu
        .config_write32(u16::from(pci::MSIX_CAP_OFFSET), 1 << 31);
    assert_eq!(
        rig.gpu.config_read32(u16::from(pci::MSIX_CAP_OFFSET)) >> 16 & 0x7FF,
        irq::COUNT - 1
    );
    assert_eq!(rig.gpu.mmio_read32(regs::ID), 0x0001_7347);
    assert_eq!(rig.gpu.mmio_read32(regs::CAPS) & 0xFF, 48);
}

#[test]
fn counter_registers_match_the_snapshot() {
    let mut rig = Rig::new(1 << 20);
    rig.context(0, false);
    rig.queue(ENGINE_COPY, 0, 0);
    rig.map_new_sys(0, VA, 2 * PAGE);
    rig.submit(ENGINE_COPY, 0, &enc::copy(VA, VA + PAGE, 100));
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA, 1));
    rig.gpu.run_until_idle();
    let c = rig.gpu.counters();
    let read = |i: u32| {
        u64::from(rig.gpu.mmio_read32(regs::COUNTERS + 8 * i))
            | (u64::from(rig.gpu.mmio_read32(regs::COUNTERS + 8 * i + 4)) << 32)
    };
    let regs_view = [
        c.pte_reads,
        c.tlb_hits,
        c.tlb_misses,
        c.invalidations,
        c.faults,
        c.bytes_copied,
        c.commands,
    ];
    for (i, want) in regs_view.iter().enumerate() {
        assert_eq!(read(i as u32), *want, "counter {i}");
    }
    assert_eq!((c.tlb_misses, c.pte_reads, c.tlb_hits), (2, 8, 1));
    assert_eq!((c.bytes_copied, c.commands), (100, 2));
}

/// A program with two queues, atomics, a semaphore handshake across engines, copies and a
/// batch; returns the memory image it leaves.
fn program(threaded: bool) -> Vec<u8> {
    let mut rig = Rig::new(1 << 20);
    rig.context(0, false);
    let pa = rig.map_new_sys(0, VA, 8 * PAGE);
    for i in 0..1024u64 {
        rig.sys.store_u32(pa + 4 * i, (i * 31) as u32).unwrap();
    }
    let batch: Vec<u8> = [
        enc::atomic_add(VA + 0x7000, 5, false),
        enc::fill(VA + 0x6000, 64, 0xA5A5_0F0F),
    ]
    .concat()
    .iter()
    .flat_map(|d| d.to_le_bytes())
    .collect();
    rig.sys.write(pa + 5 * PAGE, &batch).unwrap();
    rig.queue(ENGINE_COPY, 0, 0);
    rig.queue(ENGINE_COMPUTE, 0, 0);
    if threaded {
        rig.gpu.start();
    }
    rig.submit(
        ENGINE_COMPUTE,
        0,
        &enc::sem_wait(VA + 0x7008, simgpu::cmd::sem_op::EQ, 1),
    );
    rig.submit(
        ENGINE_COMPUTE,
        0,
        &enc::vector_add(VA, VA + PAGE, VA + 2 * PAGE, 1024),
    );
    rig.submit(ENGINE_COMPUTE, 0, &enc::store_qword(VA + 0x7010, 7));
    rig.submit(ENGINE_COPY, 0, &enc::copy(VA, VA + PAGE, PAGE));
    rig.submit(
        ENGINE_COPY,
        0,
        &enc::batch_start(VA + 5 * PAGE, (batch.len() / 4) as u32),
    );
    rig.submit(ENGINE_COPY, 0, &enc::store_qword(VA + 0x7008, 1));
    if threaded {
        let deadline = Instant::now() + Duration::from_secs(20);
        while rig.sys.load_u64(pa + 0x7010).unwrap() != 7 {
            assert!(Instant::now() < deadline, "device thread made no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
        rig.gpu.stop();
    } else {
        rig.gpu.run_until_idle();
    }
    rig.read_sys(pa, 8 * PAGE as usize)
}

#[test]
fn step_mode_and_thread_mode_leave_the_same_memory() {
    let stepped = program(false);
    assert_eq!(
        u64::from_le_bytes(stepped[0x7010..0x7018].try_into().unwrap()),
        7
    );
    assert_eq!(
        u32::from_le_bytes(stepped[0x2004..0x2008].try_into().unwrap()),
        62,
        "a[1] + b[1] = 31 + 31"
    );
    for _ in 0..3 {
        assert!(program(true) == stepped, "thread mode diverged");
    }
}

#[test]
fn pending_fault_records_are_bounded_without_a_fault_queue() {
    let mut rig = Rig::new(2 << 20);
    rig.context(0, false);
    rig.queue(ENGINE_COPY, 0, 0);
    // No fault queue: every fault kills the context; the driver clears it and retries.
    for _ in 0..400 {
        rig.submit(ENGINE_COPY, 0, &enc::store_dword(VA, 1));
        rig.gpu.run_until_idle();
        rig.gpu
            .mmio_write32(regs::ctx_reg(0, regs::CTX_STATUS), ctx_status::ERROR);
    }
    assert_eq!(rig.gpu.counters().faults, 400);
    let fq = rig.fault_queue(512);
    rig.gpu.run_until_idle();
    // The 256 kept records land, then the cleared context re-runs its faulting command once
    // more (it never retired), which adds one record: the other 144 were dropped.
    let tail = rig.gpu.mmio_read32(regs::FQ_TAIL);
    assert_eq!(tail as usize, simgpu::fault::MAX_PENDING + 1);
    assert_eq!(rig.gpu.counters().faults, 401);
    assert_ne!(decode_record(&rig, fq, 0).1 & INFO_VALID, 0);
}
