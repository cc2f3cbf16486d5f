//! The simgpu register map as the driver knows it, declared once as data.
//!
//! Owns: BAR0 offsets, per-block strides and the bit layouts of the registers the driver
//! programs (interrupt causes, context control/status, queue status, fault records), written
//! from the device's manual (`docs/simgpu.md`). Must not: import the device model's own
//! declarations; a test compares the two, as a driver team would against silicon.

use bitfield::bitfield;
use bitflags::bitflags;

/// Identification: vendor id (15:0) and device id (31:16).
pub const ID: u32 = 0x0000;
/// Expected value of [`ID`].
pub const ID_SIMGPU: u32 = 0x0001_7347;
/// Capabilities, see [`Caps`].
pub const CAPS: u32 = 0x0008;
/// Number of contexts.
pub const NUM_CONTEXTS: u32 = 0x000C;
/// VRAM size, low half.
pub const VRAM_SIZE_LO: u32 = 0x0010;
/// Timestamp counter, low half (reading it latches the high half).
pub const TIMESTAMP_LO: u32 = 0x0018;
/// Timestamp counter, high half.
pub const TIMESTAMP_HI: u32 = 0x001C;
/// Interrupt status ([`IrqCauses`]), write 1 to clear.
pub const INT_STATUS: u32 = 0x0020;
/// Interrupt enable mask ([`IrqCauses`]).
pub const INT_MASK: u32 = 0x0024;
/// Global GTT root, low half: bits 31:12 address, bit 1 enable, bit 0 location (1 = VRAM).
pub const GGTT_BASE_LO: u32 = 0x0030;
/// Global GTT root, high half.
pub const GGTT_BASE_HI: u32 = 0x0034;
/// `GGTT_BASE_LO` bit: the GGTT is enabled.
pub const GGTT_ENABLE: u32 = 1 << 1;
/// TLB invalidation: context.
pub const TLB_INV_CTX: u32 = 0x0040;
/// TLB invalidation: start VA, low half (high half at +4).
pub const TLB_INV_START_LO: u32 = 0x0044;
/// TLB invalidation: length, low half (high half at +4).
pub const TLB_INV_LEN_LO: u32 = 0x004C;
/// TLB invalidation: request (bit 0 = full).
pub const TLB_INV_REQ: u32 = 0x0054;
/// Seqno of the last request.
pub const TLB_INV_REQ_SEQNO: u32 = 0x0058;
/// Seqno of the last completed request.
pub const TLB_INV_DONE_SEQNO: u32 = 0x005C;
/// Fault queue base, low half (bit 0 = VRAM).
pub const FQ_BASE_LO: u32 = 0x0060;
/// Fault queue base, high half.
pub const FQ_BASE_HI: u32 = 0x0064;
/// Fault queue size in records.
pub const FQ_SIZE: u32 = 0x0068;
/// Fault queue head (driver).
pub const FQ_HEAD: u32 = 0x006C;
/// Fault queue tail (device).
pub const FQ_TAIL: u32 = 0x0070;
/// Fault reply: context (15:0), abort (bit 16).
pub const FAULT_REPLY: u32 = 0x0074;
/// Fault reply bit: abort instead of retry.
pub const FAULT_REPLY_ABORT: u32 = 1 << 16;
/// Engine reset (bit n = engine n).
pub const ENGINE_RESET: u32 = 0x0080;
/// Guilty context of engine n's last reset at `+ 4 * n`.
pub const RESET_GUILTY_CTX: u32 = 0x0084;
/// "No context" in context-id registers.
pub const NO_CONTEXT: u32 = 0xFFFF_FFFF;
/// Counters: `+ 8 * i` (lo), `+ 4` (hi).
pub const COUNTERS: u32 = 0x0100;
/// Context blocks.
pub const CTX_BASE: u32 = 0x1000;
/// Context block stride.
pub const CTX_STRIDE: u32 = 0x10;
/// Context: page-table root low half (bit 0 = VRAM).
pub const CTX_PT_BASE_LO: u32 = 0x0;
/// Context: page-table root high half.
pub const CTX_PT_BASE_HI: u32 = 0x4;
/// Context: control ([`CtxCtrl`]).
pub const CTX_CTRL: u32 = 0x8;
/// Context: status ([`CtxStatus`]).
pub const CTX_STATUS: u32 = 0xC;
/// Context control bits 31:16: the address-space id echoed in the context's fault records.
pub const CTX_CTRL_ASID_SHIFT: u32 = 16;
/// Queue blocks.
pub const QUEUE_BASE: u32 = 0x2000;
/// Queue block stride.
pub const QUEUE_STRIDE: u32 = 0x40;
/// Queue: ring base low half (bit 0 = VRAM).
pub const Q_RING_BASE_LO: u32 = 0x00;
/// Queue: ring base high half.
pub const Q_RING_BASE_HI: u32 = 0x04;
/// Queue: ring size in bytes.
pub const Q_RING_SIZE: u32 = 0x08;
/// Queue: head byte offset.
pub const Q_HEAD: u32 = 0x0C;
/// Queue: tail byte offset.
pub const Q_TAIL: u32 = 0x10;
/// Queue: doorbell.
pub const Q_DOORBELL: u32 = 0x14;
/// Queue: context id.
pub const Q_CTX: u32 = 0x18;
/// Queue: control (bit 0 = enable).
pub const Q_CTRL: u32 = 0x1C;
/// Queue: status ([`QueueStatus`]).
pub const Q_STATUS: u32 = 0x20;
/// Queue: data of the last USER_INTERRUPT.
pub const Q_USER_DATA: u32 = 0x24;
/// Queue: write bit 0 to request preemption at the next command boundary.
pub const Q_PREEMPT: u32 = 0x28;
/// Queue: batch cursor, start VA low half (saved state; writable while disabled).
pub const Q_BATCH_VA_LO: u32 = 0x2C;
/// Queue: batch cursor, start VA high half.
pub const Q_BATCH_VA_HI: u32 = 0x30;
/// Queue: batch cursor, dwords retired.
pub const Q_BATCH_POS: u32 = 0x34;
/// Queue: batch cursor, length in dwords (0 = no batch; written last on restore).
pub const Q_BATCH_LEN: u32 = 0x38;
/// MSI-X table in BAR0.
pub const MSIX_TABLE: u32 = 0x8000;
/// Bytes per MSI-X entry (addr lo, addr hi, data, control).
pub const MSIX_ENTRY_SIZE: u32 = 16;
/// Offset of the data dword in an MSI-X entry.
pub const MSIX_DATA: u32 = 8;
/// Offset of the vector-control dword in an MSI-X entry.
pub const MSIX_CTRL: u32 = 12;
/// Bytes per fault record.
pub const FAULT_RECORD_SIZE: u64 = 16;

/// Offset of `reg` in context `ctx`'s block.
pub const fn ctx_reg(ctx: u32, reg: u32) -> u32 {
    CTX_BASE + ctx * CTX_STRIDE + reg
}

/// Offset of `reg` in the block of queue `index` (= engine * queues_per_engine + queue).
pub const fn queue_reg(index: u32, reg: u32) -> u32 {
    QUEUE_BASE + index * QUEUE_STRIDE + reg
}

bitflags! {
    /// Interrupt causes (INT_STATUS / INT_MASK); cause bit n is MSI-X vector n.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct IrqCauses: u32 {
        /// USER_INTERRUPT retired on the copy engine.
        const COPY_USER = 1 << 0;
        /// USER_INTERRUPT retired on the compute engine.
        const COMPUTE_USER = 1 << 1;
        /// A fault record was written.
        const FAULT = 1 << 2;
        /// A context went into error.
        const CTX_ERROR = 1 << 3;
        /// An engine reset completed.
        const RESET_DONE = 1 << 4;
        /// A TLB invalidation completed.
        const TLB_INV_DONE = 1 << 5;
        /// A queue acknowledged a preemption request.
        const PREEMPT_DONE = 1 << 6;
    }
}

bitflags! {
    /// Context control register.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CtxCtrl: u32 {
        /// The context may run.
        const ENABLE = 1 << 0;
        /// Faults stall and are queued for the driver (else they kill the context).
        const RECOVERABLE = 1 << 1;
    }
}

bitflags! {
    /// Queue status register.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct QueueStatus: u32 {
        /// Has work.
        const BUSY = 1 << 0;
        /// Stalled on a recoverable fault.
        const FAULTED = 1 << 1;
        /// Stopped by an error.
        const ERROR = 1 << 2;
        /// Hung.
        const HUNG = 1 << 3;
        /// Waiting on a semaphore.
        const SEM_WAIT = 1 << 4;
        /// Stopped by a preemption request.
        const PREEMPTED = 1 << 5;
    }
}

bitfield! {
    /// Capabilities register.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct Caps(u32);
    impl Debug;
    /// Virtual address bits.
    pub u8, va_bits, _: 7, 0;
    /// Supported page sizes (bit 0 = 4K, 1 = 64K, 2 = 2M, 3 = 1G).
    pub u8, page_sizes, _: 11, 8;
    /// Number of engines.
    pub u8, engines, _: 15, 12;
    /// Hardware queues per engine.
    pub u8, queues_per_engine, _: 23, 16;
}

bitfield! {
    /// Context status register.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct CtxStatus(u32);
    impl Debug;
    /// The context is in error (write 1 to clear).
    pub error, _: 0;
    /// Error reason (1 fault, 2 illegal command, 3 DMA, 4 aborted, 5 reset, 6 bad ring).
    pub u8, reason, _: 11, 8;
}

bitfield! {
    /// Info dword of a fault record (bytes 8..12; the VA is bytes 0..8).
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct FaultInfo(u32);
    impl Debug;
    /// Context.
    pub u16, ctx, _: 15, 0;
    /// Access: 0 read, 1 write, 2 atomic, 3 fetch.
    pub u8, access, _: 17, 16;
    /// Reason: 0 not present, 1 read-only, 2 bad entry, 3 DMA error.
    pub u8, reason, _: 19, 18;
    /// Queue within the engine.
    pub u8, queue, _: 23, 20;
    /// Engine.
    pub u8, engine, _: 27, 24;
    /// The context was put in error; no reply is expected.
    pub fatal, _: 30;
    /// The record was written by the device.
    pub valid, _: 31;
}

#[cfg(test)]
mod tests {
    use super::*;
    use simgpu::regs as dev;

    /// The driver's register map agrees with the device manual's declarations.
    #[test]
    fn offsets_match_the_device() {
        let pairs = [
            (ID, dev::ID),
            (CAPS, dev::CAPS),
            (NUM_CONTEXTS, dev::NUM_CONTEXTS),
            (VRAM_SIZE_LO, dev::VRAM_SIZE_LO),
            (TIMESTAMP_LO, dev::TIMESTAMP_LO),
            (TIMESTAMP_HI, dev::TIMESTAMP_HI),
            (INT_STATUS, dev::INT_STATUS),
            (INT_MASK, dev::INT_MASK),
            (GGTT_BASE_LO, dev::GGTT_BASE_LO),
            (GGTT_BASE_HI, dev::GGTT_BASE_HI),
            (GGTT_ENABLE, dev::GGTT_ENABLE),
            (TLB_INV_CTX, dev::TLB_INV_CTX),
            (TLB_INV_START_LO, dev::TLB_INV_START_LO),
            (TLB_INV_LEN_LO, dev::TLB_INV_LEN_LO),
            (TLB_INV_REQ, dev::TLB_INV_REQ),
            (TLB_INV_REQ_SEQNO, dev::TLB_INV_REQ_SEQNO),
            (TLB_INV_DONE_SEQNO, dev::TLB_INV_DONE_SEQNO),
            (FQ_BASE_LO, dev::FQ_BASE_LO),
            (FQ_BASE_HI, dev::FQ_BASE_HI),
            (FQ_SIZE, dev::FQ_SIZE),
            (FQ_HEAD, dev::FQ_HEAD),
            (FQ_TAIL, dev::FQ_TAIL),
            (FAULT_REPLY, dev::FAULT_REPLY),
            (FAULT_REPLY_ABORT, dev::fault_reply::ABORT),
            (ENGINE_RESET, dev::ENGINE_RESET),
            (RESET_GUILTY_CTX, dev::RESET_GUILTY_CTX),
            (NO_CONTEXT, dev::NO_CONTEXT),
            (COUNTERS, dev::COUNTERS),
            (
                ctx_reg(3, CTX_PT_BASE_LO),
                dev::ctx_reg(3, dev::CTX_PT_BASE_LO),
            ),
            (
                ctx_reg(3, CTX_PT_BASE_HI),
                dev::ctx_reg(3, dev::CTX_PT_BASE_HI),
            ),
            (ctx_reg(3, CTX_CTRL), dev::ctx_reg(3, dev::CTX_CTRL)),
            (ctx_reg(3, CTX_STATUS), dev::ctx_reg(3, dev::CTX_STATUS)),
            (
                queue_reg(9, Q_RING_BASE_LO),
                dev::queue_reg(9, dev::Q_RING_BASE_LO),
            ),
            (
                queue_reg(9, Q_RING_BASE_HI),
                dev::queue_reg(9, dev::Q_RING_BASE_HI),
            ),
            (
                queue_reg(9, Q_RING_SIZE),
                dev::queue_reg(9, dev::Q_RING_SIZE),
            ),
            (queue_reg(9, Q_HEAD), dev::queue_reg(9, dev::Q_HEAD)),
            (queue_reg(9, Q_TAIL), dev::queue_reg(9, dev::Q_TAIL)),
            (queue_reg(9, Q_DOORBELL), dev::queue_reg(9, dev::Q_DOORBELL)),
            (queue_reg(9, Q_CTX), dev::queue_reg(9, dev::Q_CTX)),
            (queue_reg(9, Q_CTRL), dev::queue_reg(9, dev::Q_CTRL)),
            (queue_reg(9, Q_STATUS), dev::queue_reg(9, dev::Q_STATUS)),
            (
                queue_reg(9, Q_USER_DATA),
                dev::queue_reg(9, dev::Q_USER_DATA),
            ),
            (queue_reg(9, Q_PREEMPT), dev::queue_reg(9, dev::Q_PREEMPT)),
            (
                queue_reg(9, Q_BATCH_VA_LO),
                dev::queue_reg(9, dev::Q_BATCH_VA_LO),
            ),
            (
                queue_reg(9, Q_BATCH_VA_HI),
                dev::queue_reg(9, dev::Q_BATCH_VA_HI),
            ),
            (
                queue_reg(9, Q_BATCH_POS),
                dev::queue_reg(9, dev::Q_BATCH_POS),
            ),
            (
                queue_reg(9, Q_BATCH_LEN),
                dev::queue_reg(9, dev::Q_BATCH_LEN),
            ),
            (MSIX_TABLE, dev::MSIX_TABLE),
            (MSIX_ENTRY_SIZE, dev::MSIX_ENTRY_SIZE),
        ];
        for (i, (driver, device)) in pairs.iter().enumerate() {
            assert_eq!(driver, device, "register pair {i}");
        }
        assert_eq!(FAULT_RECORD_SIZE, simgpu::fault::RECORD_SIZE);
        assert_eq!(ID_SIMGPU, 0x0001_7347);
    }

    #[test]
    fn bit_layouts_match_the_device() {
        use dev::{ctx_ctrl, irq, q_status};
        assert_eq!(IrqCauses::COPY_USER.bits(), irq::COPY_USER);
        assert_eq!(IrqCauses::COMPUTE_USER.bits(), irq::COMPUTE_USER);
        assert_eq!(IrqCauses::FAULT.bits(), irq::FAULT);
        assert_eq!(IrqCauses::CTX_ERROR.bits(), irq::CTX_ERROR);
        assert_eq!(IrqCauses::RESET_DONE.bits(), irq::RESET_DONE);
        assert_eq!(IrqCauses::TLB_INV_DONE.bits(), irq::TLB_INV_DONE);
        assert_eq!(IrqCauses::PREEMPT_DONE.bits(), irq::PREEMPT_DONE);
        assert_eq!(IrqCauses::all().bits(), (1 << irq::COUNT) - 1);
        assert_eq!(CtxCtrl::ENABLE.bits(), ctx_ctrl::ENABLE);
        assert_eq!(CtxCtrl::RECOVERABLE.bits(), ctx_ctrl::RECOVERABLE);
        assert_eq!(CTX_CTRL_ASID_SHIFT, ctx_ctrl::ASID_SHIFT);
        let q = [
            (QueueStatus::BUSY, q_status::BUSY),
            (QueueStatus::FAULTED, q_status::FAULTED),
            (QueueStatus::ERROR, q_status::ERROR),
            (QueueStatus::HUNG, q_status::HUNG),
            (QueueStatus::SEM_WAIT, q_status::SEM_WAIT),
            (QueueStatus::PREEMPTED, q_status::PREEMPTED),
        ];
        for (driver, device) in q {
            assert_eq!(driver.bits(), device);
        }
        let s = CtxStatus(
            dev::ctx_status::ERROR
                | (dev::ErrorReason::Aborted as u32) << dev::ctx_status::REASON_SHIFT,
        );
        assert!(s.error());
        assert_eq!(u32::from(s.reason()), dev::ErrorReason::Aborted as u32);
    }

    #[test]
    fn fault_info_decodes_device_records() {
        use simgpu::fault::FaultRecord;
        use simgpu::mmu::{Access, FaultReason};
        let rec = FaultRecord {
            va: 0x1234_5000,
            ctx: 17,
            access: Access::Atomic,
            reason: FaultReason::ReadOnly,
            engine: 1,
            queue: 6,
            fatal: true,
            asid: 0xA51D,
        };
        let bytes = rec.encode();
        let info = FaultInfo(u32::from_le_bytes([
            bytes[8], bytes[9], bytes[10], bytes[11],
        ]));
        assert_eq!(
            (
                info.ctx(),
                info.access(),
                info.reason(),
                info.queue(),
                info.engine()
            ),
            (17, 2, 1, 6, 1)
        );
        assert!(info.fatal() && info.valid());
        assert_eq!(u16::from_le_bytes([bytes[12], bytes[13]]), 0xA51D);
    }
}
