//! The BAR0 register map and the bit layouts of registers, declared once as data.
//!
//! Owns: every register offset, per-block strides and register bit fields, as documented in
//! `docs/simgpu.md`. Must not: hold state or behaviour; the device (`device.rs`) decodes
//! accesses using these declarations.

/// Size of BAR0 (registers + MSI-X table + PBA).
pub const BAR0_SIZE: u64 = 0x1_0000;

/// Identification: vendor id (bits 15:0) and device id (bits 31:16).
pub const ID: u32 = 0x0000;
/// Hardware revision.
pub const REVISION: u32 = 0x0004;
/// Capabilities, see [`caps`].
pub const CAPS: u32 = 0x0008;
/// Number of contexts.
pub const NUM_CONTEXTS: u32 = 0x000C;
/// VRAM size in bytes, low half.
pub const VRAM_SIZE_LO: u32 = 0x0010;
/// VRAM size in bytes, high half.
pub const VRAM_SIZE_HI: u32 = 0x0014;
/// Timestamp counter (device ticks), low half. Reading LO latches HI.
pub const TIMESTAMP_LO: u32 = 0x0018;
/// Timestamp counter, high half (value latched by the last LO read).
pub const TIMESTAMP_HI: u32 = 0x001C;
/// Interrupt cause status, see [`irq`]. Write 1 to clear.
pub const INT_STATUS: u32 = 0x0020;
/// Interrupt cause enable mask (1 = delivered), see [`irq`].
pub const INT_MASK: u32 = 0x0024;
/// Global GTT root, low half: bits 31:12 root table address, bit 1 = enable, bit 0 =
/// location (1 = VRAM). The GGTT is the privileged address space only ring commands reach
/// (see [`crate::cmd::FLAG_GGTT`]).
pub const GGTT_BASE_LO: u32 = 0x0030;
/// Global GTT root, high half (address bits 51:32).
pub const GGTT_BASE_HI: u32 = 0x0034;
/// Bit of `GGTT_BASE_LO`: the GGTT is enabled (else every GGTT access faults).
pub const GGTT_ENABLE: u32 = 1 << 1;
/// The TLB tag of GGTT translations, and the `TLB_INV_CTX` value that invalidates them.
pub const GGTT_CTX: u32 = 0xFFFF;

/// TLB invalidation: target context.
pub const TLB_INV_CTX: u32 = 0x0040;
/// TLB invalidation: range start VA, low half.
pub const TLB_INV_START_LO: u32 = 0x0044;
/// TLB invalidation: range start VA, high half.
pub const TLB_INV_START_HI: u32 = 0x0048;
/// TLB invalidation: range length in bytes, low half.
pub const TLB_INV_LEN_LO: u32 = 0x004C;
/// TLB invalidation: range length, high half.
pub const TLB_INV_LEN_HI: u32 = 0x0050;
/// Write to queue a request: bit 0 = full (all of the context), else the range.
pub const TLB_INV_REQ: u32 = 0x0054;
/// Seqno given to the last queued invalidation request (read-only).
pub const TLB_INV_REQ_SEQNO: u32 = 0x0058;
/// Seqno of the last completed invalidation request (read-only).
pub const TLB_INV_DONE_SEQNO: u32 = 0x005C;

/// Fault queue base physical address, low half; bit 0 = location (1 = VRAM).
pub const FQ_BASE_LO: u32 = 0x0060;
/// Fault queue base, high half.
pub const FQ_BASE_HI: u32 = 0x0064;
/// Fault queue size in records (a power of two; 0 = disabled).
pub const FQ_SIZE: u32 = 0x0068;
/// Fault queue head (record index the driver will read next), written by the driver.
pub const FQ_HEAD: u32 = 0x006C;
/// Fault queue tail (record index the device will write next), read-only.
pub const FQ_TAIL: u32 = 0x0070;
/// Fault reply, see [`fault_reply`].
pub const FAULT_REPLY: u32 = 0x0074;

/// Engine reset: write a mask of engines (bit n = engine n).
pub const ENGINE_RESET: u32 = 0x0080;
/// Guilty context of the last reset of engine n at `RESET_GUILTY_CTX + 4 * n`
/// ([`NO_CONTEXT`] when no context was hung).
pub const RESET_GUILTY_CTX: u32 = 0x0084;
/// Value of a context-id register that names no context.
pub const NO_CONTEXT: u32 = 0xFFFF_FFFF;

/// Counters: counter i at `COUNTERS + 8 * i` (lo) and `+ 4` (hi); see [`counter`].
pub const COUNTERS: u32 = 0x0100;

/// Per-context register blocks start here.
pub const CTX_BASE: u32 = 0x1000;
/// Distance between per-context blocks.
pub const CTX_STRIDE: u32 = 0x10;
/// In a context block: page-table root, low half; bit 0 = location (1 = VRAM).
pub const CTX_PT_BASE_LO: u32 = 0x0;
/// In a context block: page-table root, high half.
pub const CTX_PT_BASE_HI: u32 = 0x4;
/// In a context block: control, see [`ctx_ctrl`].
pub const CTX_CTRL: u32 = 0x8;
/// In a context block: status, see [`ctx_status`]. Write 1 to bit 0 to clear the error.
pub const CTX_STATUS: u32 = 0xC;

/// Per-queue register blocks start here; queue q of engine e is block `e * queues + q`.
pub const QUEUE_BASE: u32 = 0x2000;
/// Distance between per-queue blocks.
pub const QUEUE_STRIDE: u32 = 0x40;
/// In a queue block: ring base physical address, low half; bit 0 = location (1 = VRAM).
pub const Q_RING_BASE_LO: u32 = 0x00;
/// In a queue block: ring base, high half.
pub const Q_RING_BASE_HI: u32 = 0x04;
/// In a queue block: ring size in bytes (a power of two, 64..=16 MiB).
pub const Q_RING_SIZE: u32 = 0x08;
/// In a queue block: head byte offset (next dword the engine reads). Writable while disabled.
pub const Q_HEAD: u32 = 0x0C;
/// In a queue block: tail byte offset (one past the last valid dword), written by the driver.
pub const Q_TAIL: u32 = 0x10;
/// In a queue block: doorbell; any write wakes the engine.
pub const Q_DOORBELL: u32 = 0x14;
/// In a queue block: context id the queue runs in.
pub const Q_CTX: u32 = 0x18;
/// In a queue block: control, bit 0 = enable.
pub const Q_CTRL: u32 = 0x1C;
/// In a queue block: status, see [`q_status`] (read-only).
pub const Q_STATUS: u32 = 0x20;
/// In a queue block: data dword of the last USER_INTERRUPT executed (read-only).
pub const Q_USER_DATA: u32 = 0x24;
/// In a queue block: write bit 0 to request preemption (the queue stops at its next command
/// boundary, saves its position and raises PREEMPT_DONE); reads bit 0 = request pending.
pub const Q_PREEMPT: u32 = 0x28;
/// In a queue block: batch cursor, start VA low half (the batch in flight; saved state after
/// a preemption). Writable while disabled.
pub const Q_BATCH_VA_LO: u32 = 0x2C;
/// In a queue block: batch cursor, start VA high half. Writable while disabled.
pub const Q_BATCH_VA_HI: u32 = 0x30;
/// In a queue block: batch cursor, dwords of the batch already retired. Writable while disabled.
pub const Q_BATCH_POS: u32 = 0x34;
/// In a queue block: batch cursor, batch length in dwords (bits 30:0; 0 = no batch in
/// flight) and its decoder (bit 31: Intel MI_* commands, see `cmd::FLAG_INTEL`). Written
/// last when restoring a cursor. Writable while disabled.
pub const Q_BATCH_LEN: u32 = 0x38;

/// MSI-X table (in BAR0): 16 bytes per vector.
pub const MSIX_TABLE: u32 = 0x8000;
/// MSI-X pending-bit array (in BAR0).
pub const MSIX_PBA: u32 = 0x9000;
/// Bytes per MSI-X table entry: address lo, address hi, data, vector control (bit 0 = masked).
pub const MSIX_ENTRY_SIZE: u32 = 16;

/// Bit fields of [`CAPS`].
pub mod caps {
    /// Bits 7:0: virtual address bits.
    pub const VA_BITS_SHIFT: u32 = 0;
    /// Bits 11:8: supported page sizes (bit 8 = 4K, 9 = 64K, 10 = 2M, 11 = 1G).
    pub const PAGE_SIZES_SHIFT: u32 = 8;
    /// Bits 15:12: number of engines.
    pub const ENGINES_SHIFT: u32 = 12;
    /// Bits 23:16: hardware queues per engine.
    pub const QUEUES_SHIFT: u32 = 16;
}

/// Interrupt causes (bits of [`INT_STATUS`]/[`INT_MASK`]); cause bit n is MSI-X vector n.
pub mod irq {
    /// A USER_INTERRUPT command retired on the copy engine.
    pub const COPY_USER: u32 = 1 << 0;
    /// A USER_INTERRUPT command retired on the compute engine.
    pub const COMPUTE_USER: u32 = 1 << 1;
    /// The fault queue received a record.
    pub const FAULT: u32 = 1 << 2;
    /// A context went into error.
    pub const CTX_ERROR: u32 = 1 << 3;
    /// An engine reset completed.
    pub const RESET_DONE: u32 = 1 << 4;
    /// A TLB invalidation request completed.
    pub const TLB_INV_DONE: u32 = 1 << 5;
    /// A queue acknowledged a preemption request (its STATUS shows PREEMPTED).
    pub const PREEMPT_DONE: u32 = 1 << 6;
    /// Number of causes (= MSI-X vectors).
    pub const COUNT: u32 = 7;
}

/// Bit fields of [`FAULT_REPLY`].
pub mod fault_reply {
    /// Bits 15:0: context id.
    pub const CTX_MASK: u32 = 0xFFFF;
    /// Bit 16: 1 = abort (kill the context), 0 = retry.
    pub const ABORT: u32 = 1 << 16;
}

/// Bit fields of [`CTX_CTRL`].
pub mod ctx_ctrl {
    /// The context may run.
    pub const ENABLE: u32 = 1 << 0;
    /// Faults stall and are reported to the fault queue (else they put the context in error).
    pub const RECOVERABLE: u32 = 1 << 1;
    /// Bits 31:16: the address-space id the driver gives the context, copied into every
    /// fault record the context raises (bytes 12..14), so that a driver reassigning contexts
    /// can tell a record of the previous owner from one of the new owner.
    pub const ASID_SHIFT: u32 = 16;
    /// Mask of the address-space id.
    pub const ASID_MASK: u32 = 0xFFFF << ASID_SHIFT;
}

/// Bit fields of [`CTX_STATUS`].
pub mod ctx_status {
    /// The context is in error; its queues do not run.
    pub const ERROR: u32 = 1 << 0;
    /// Bits 11:8: error reason, see [`crate::regs::ErrorReason`].
    pub const REASON_SHIFT: u32 = 8;
}

/// Bit fields of [`Q_STATUS`].
pub mod q_status {
    /// The queue has work (head != tail or a batch in flight).
    pub const BUSY: u32 = 1 << 0;
    /// Stalled on a recoverable fault, waiting for a reply.
    pub const FAULTED: u32 = 1 << 1;
    /// Stopped: its context is in error or the command was illegal.
    pub const ERROR: u32 = 1 << 2;
    /// Hung (a command never completes) until an engine reset.
    pub const HUNG: u32 = 1 << 3;
    /// Waiting on a SEMAPHORE_WAIT condition.
    pub const SEM_WAIT: u32 = 1 << 4;
    /// Stopped by a preemption request (cleared when the queue is enabled again).
    pub const PREEMPTED: u32 = 1 << 5;
}

/// Why a context is in error (value of `CTX_STATUS` bits 11:8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorReason {
    /// A page fault in a non-recoverable context.
    Fault = 1,
    /// An unknown opcode or malformed command.
    IllegalCommand = 2,
    /// A physical access outside memory.
    Dma = 3,
    /// The driver replied "abort" to a fault.
    Aborted = 4,
    /// The context was running the hung command when its engine was reset.
    Reset = 5,
    /// A ring register was programmed with an invalid value.
    BadRing = 6,
}

/// Counter indices (register `COUNTERS + 8 * i`).
pub mod counter {
    /// Page-table entries read by the walker.
    pub const PTE_READS: u32 = 0;
    /// Translations served by the TLB.
    pub const TLB_HITS: u32 = 1;
    /// Translations that needed a walk.
    pub const TLB_MISSES: u32 = 2;
    /// TLB invalidation requests completed.
    pub const INVALIDATIONS: u32 = 3;
    /// Page faults raised.
    pub const FAULTS: u32 = 4;
    /// Bytes moved by COPY and FILL.
    pub const BYTES_COPIED: u32 = 5;
    /// Commands retired.
    pub const COMMANDS: u32 = 6;
    /// Number of counters.
    pub const COUNT: u32 = 7;
}

/// Offset of register `reg` in the block of context `ctx`.
pub const fn ctx_reg(ctx: u32, reg: u32) -> u32 {
    CTX_BASE + ctx * CTX_STRIDE + reg
}

/// Offset of register `reg` in the block of queue `index` (= engine * queues + queue).
pub const fn queue_reg(index: u32, reg: u32) -> u32 {
    QUEUE_BASE + index * QUEUE_STRIDE + reg
}
