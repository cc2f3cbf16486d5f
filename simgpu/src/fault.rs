//! The fault queue: record format and the ring of records in driver-allocated memory.
//!
//! Owns: the 16-byte fault record layout (declared once, below) and the FQ_* registers.
//! Must not: decide what a fault does to a context (`device.rs` does).
//!
//! Record layout (little endian):
//! - bytes 0..8: faulting VA.
//! - bytes 8..12: info: bits 15:0 context, 17:16 access, 19:18 reason, 23:20 queue,
//!   27:24 engine, bit 30 fatal (context put in error, no reply expected), bit 31 valid.
//! - bytes 12..14: the context's address-space id when the fault was raised (CTX_CTRL
//!   bits 31:16); bytes 14..16 reserved, zero.

use crate::mem::Location;
use crate::mmu::{Access, FaultReason, Memories};
use crate::regs;
use std::collections::VecDeque;

/// Records that may wait inside the device for room in the queue; later ones are dropped.
pub const MAX_PENDING: usize = 256;
/// Bytes per fault record.
pub const RECORD_SIZE: u64 = 16;
/// Info bits 15:0: context.
pub const INFO_CTX_MASK: u32 = 0xFFFF;
/// Info bits 17:16: access ([`Access`]).
pub const INFO_ACCESS_SHIFT: u32 = 16;
/// Info bits 19:18: reason ([`FaultReason`]).
pub const INFO_REASON_SHIFT: u32 = 18;
/// Info bits 23:20: queue within the engine.
pub const INFO_QUEUE_SHIFT: u32 = 20;
/// Info bits 27:24: engine.
pub const INFO_ENGINE_SHIFT: u32 = 24;
/// Info bit 30: fatal.
pub const INFO_FATAL: u32 = 1 << 30;
/// Info bit 31: valid.
pub const INFO_VALID: u32 = 1 << 31;

/// One fault, as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRecord {
    /// Faulting VA.
    pub va: u64,
    /// Context.
    pub ctx: u32,
    /// Access type.
    pub access: Access,
    /// Reason.
    pub reason: FaultReason,
    /// Engine.
    pub engine: u32,
    /// Queue within the engine.
    pub queue: u32,
    /// The context was put in error instead of stalling.
    pub fatal: bool,
    /// The context's address-space id when the fault was raised.
    pub asid: u16,
}

impl FaultRecord {
    /// The 16 bytes written to the fault queue.
    pub fn encode(&self) -> [u8; RECORD_SIZE as usize] {
        let info = (self.ctx & INFO_CTX_MASK)
            | ((self.access as u32) << INFO_ACCESS_SHIFT)
            | ((self.reason as u32) << INFO_REASON_SHIFT)
            | ((self.queue & 0xF) << INFO_QUEUE_SHIFT)
            | ((self.engine & 0xF) << INFO_ENGINE_SHIFT)
            | if self.fatal { INFO_FATAL } else { 0 }
            | INFO_VALID;
        let mut out = [0u8; RECORD_SIZE as usize];
        // PANIC: constant ranges inside the 16-byte record.
        out[0..8].copy_from_slice(&self.va.to_le_bytes());
        out[8..12].copy_from_slice(&info.to_le_bytes());
        out[12..14].copy_from_slice(&self.asid.to_le_bytes());
        out
    }
}

/// FQ_* registers plus records waiting for room in the queue.
#[derive(Default)]
pub struct FaultQueue {
    base_lo: u32,
    base_hi: u32,
    size: u32,
    head: u32,
    tail: u32,
    /// Records not yet written (queue full or not configured).
    pub pending: VecDeque<FaultRecord>,
}

impl FaultQueue {
    /// Register read.
    pub fn read(&self, offset: u32) -> u32 {
        match offset {
            regs::FQ_BASE_LO => self.base_lo,
            regs::FQ_BASE_HI => self.base_hi,
            regs::FQ_SIZE => self.size,
            regs::FQ_HEAD => self.head,
            regs::FQ_TAIL => self.tail,
            _ => 0,
        }
    }

    /// Register write. Reprogramming the base or size empties the queue.
    pub fn write(&mut self, offset: u32, value: u32) {
        match offset {
            regs::FQ_BASE_LO => self.base_lo = value & !0xE,
            regs::FQ_BASE_HI => self.base_hi = value,
            regs::FQ_SIZE => {
                self.size = if value.is_power_of_two() { value } else { 0 };
                self.head = 0;
                self.tail = 0;
            }
            regs::FQ_HEAD => self.head = value & self.size.wrapping_sub(1),
            _ => {}
        }
    }

    fn full(&self) -> bool {
        self.size == 0 || (self.tail.wrapping_add(1) & (self.size - 1)) == self.head
    }

    /// Writes as many pending records as fit; returns whether any was written.
    pub fn flush(&mut self, mems: Memories<'_>) -> bool {
        let base = (u64::from(self.base_hi) << 32) | u64::from(self.base_lo & !0xF);
        let location = if self.base_lo & 1 != 0 {
            Location::Vram
        } else {
            Location::System
        };
        let mut wrote = false;
        while !self.full() {
            let Some(record) = self.pending.front() else {
                break;
            };
            let addr = base.checked_add(u64::from(self.tail) * RECORD_SIZE);
            let written =
                addr.is_some_and(|a| mems.at(location).write(a, &record.encode()).is_ok());
            if !written {
                // The driver gave a bad queue address: drop the record rather than loop.
                self.pending.pop_front();
                continue;
            }
            self.pending.pop_front();
            self.tail = (self.tail + 1) & (self.size - 1);
            wrote = true;
        }
        wrote
    }
}
