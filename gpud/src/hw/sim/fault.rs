//! The simgpu fault queue as the driver consumes it: records in DMA memory, head/tail
//! registers, and the reply register.
//!
//! Owns: allocation and programming of the fault queue, decoding records with the driver's
//! own [`FaultInfo`] layout. Must not: fix page tables or decide retry vs abort (the fault
//! handler above does).

use crate::hw::regs::{self, FaultInfo};
use crate::hw::{DmaMemory, DmaRegion, Fault, FaultQueue, FaultReply, HwCtx, HwError, Mmio};
use crate::types::{GpuVa, PhysAddr};
use std::sync::Arc;

/// The device's fault queue.
pub struct SimFaultQueue {
    mmio: Arc<dyn Mmio>,
    dma: Arc<dyn DmaMemory>,
    region: DmaRegion,
    entries: u32,
    head: u32,
}

impl SimFaultQueue {
    /// Allocates `entries` records (a power of two, at least 2) and programs the queue.
    pub fn new(
        mmio: Arc<dyn Mmio>,
        dma: Arc<dyn DmaMemory>,
        entries: u32,
    ) -> Result<Self, HwError> {
        if !entries.is_power_of_two() || entries < 2 {
            return Err(HwError::BadSize {
                what: "fault queue",
                size: u64::from(entries),
            });
        }
        let region = dma.alloc(u64::from(entries) * regs::FAULT_RECORD_SIZE)?;
        mmio.write64(regs::FQ_BASE_LO, region.addr.get());
        mmio.write32(regs::FQ_SIZE, entries);
        Ok(Self {
            mmio,
            dma,
            region,
            entries,
            head: 0,
        })
    }

    fn read_record(&self, index: u32) -> Option<Fault> {
        let at = self.region.addr.get() + u64::from(index) * regs::FAULT_RECORD_SIZE;
        let va = self.dma.read_u64(PhysAddr(at)).ok()?;
        let info = FaultInfo(self.dma.read_u32(PhysAddr(at + 8)).ok()?);
        let asid = self.dma.read_u32(PhysAddr(at + 12)).ok()? as u16;
        info.valid().then_some(Fault {
            va: GpuVa(va),
            ctx: HwCtx(u32::from(info.ctx())),
            access: info.access(),
            reason: info.reason(),
            engine: info.engine(),
            queue: info.queue(),
            fatal: info.fatal(),
            asid,
        })
    }
}

impl FaultQueue for SimFaultQueue {
    fn pop(&mut self) -> Option<Fault> {
        let tail = self.mmio.read32(regs::FQ_TAIL);
        if tail == self.head || tail >= self.entries {
            return None;
        }
        let fault = self.read_record(self.head);
        self.head = (self.head + 1) & (self.entries - 1);
        self.mmio.write32(regs::FQ_HEAD, self.head);
        fault
    }

    fn reply(&self, ctx: HwCtx, reply: FaultReply) {
        let abort = match reply {
            FaultReply::Retry => 0,
            FaultReply::Abort => regs::FAULT_REPLY_ABORT,
        };
        self.mmio
            .write32(regs::FAULT_REPLY, (ctx.0 & 0xFFFF) | abort);
    }
}
