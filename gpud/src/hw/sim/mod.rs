//! The simgpu backend of the hardware layer, driving the device through its registers, DMA
//! memory and interrupts only.
//!
//! Owns: bring-up ([`SimHw::init`]: identify, read capabilities, program interrupts), context
//! programming and TLB invalidation ([`Mmu`]), engine reset ([`EngineControl`]), and
//! constructors for queues and the fault queue. Must not: touch the device model's state
//! directly; everything goes through [`Mmio`], [`DmaMemory`] and the interrupt latch. The
//! host glue that creates an in-process device lives in [`platform`].

pub mod dma;
pub mod fault;
pub mod irq;
pub mod platform;
pub mod queue;
pub mod ring;

use crate::hw::regs::{self, Caps, CtxCtrl, CtxStatus, IrqCauses};
use crate::hw::{
    wait_until, Clock, DmaMemory, Engine, EngineControl, FaultMode, HwCtx, HwError, Interrupts,
    MemLocation, Mmio, Mmu, PtRoot, TlbInvalidation,
};
use crate::types::GpuVa;
use fault::SimFaultQueue;
use irq::{MsixWiring, SimInterrupts};
use parking_lot::Mutex;
use queue::SimQueue;
use std::sync::Arc;
use std::time::Duration;

/// What bring-up learned from the identification registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Virtual address bits.
    pub va_bits: u8,
    /// Number of contexts.
    pub contexts: u32,
    /// Hardware queues per engine.
    pub queues_per_engine: u32,
    /// VRAM size in bytes.
    pub vram_size: u64,
}

/// A brought-up simgpu.
pub struct SimHw {
    mmio: Arc<dyn Mmio>,
    dma: Arc<dyn DmaMemory>,
    irq: Arc<SimInterrupts>,
    clock: Arc<dyn Clock>,
    info: DeviceInfo,
    /// Serializes the multi-register TLB invalidation request sequence.
    inv_lock: Mutex<()>,
}

/// Register polls before a TLB-invalidation wait falls back to the interrupt.
const INVALIDATION_POLLS: u32 = 64;

impl SimHw {
    /// Identifies the device, reads its capabilities, programs MSI-X and enables all causes.
    pub fn init(
        mmio: Arc<dyn Mmio>,
        dma: Arc<dyn DmaMemory>,
        latch: Arc<irq::IrqLatch>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, HwError> {
        Self::init_wired(mmio, dma, latch, clock, MsixWiring::PerCauseVectors)
    }

    /// [`SimHw::init`] with the interrupt wiring chosen by the platform: with
    /// [`MsixWiring::Platform`] the MSI-X table is the platform's and is not written.
    pub fn init_wired(
        mmio: Arc<dyn Mmio>,
        dma: Arc<dyn DmaMemory>,
        latch: Arc<irq::IrqLatch>,
        clock: Arc<dyn Clock>,
        wiring: MsixWiring,
    ) -> Result<Self, HwError> {
        let id = mmio.read32(regs::ID);
        if id != regs::ID_SIMGPU {
            return Err(HwError::WrongDevice { found: id });
        }
        let caps = Caps(mmio.read32(regs::CAPS));
        let info = DeviceInfo {
            va_bits: caps.va_bits(),
            contexts: mmio.read32(regs::NUM_CONTEXTS),
            queues_per_engine: u32::from(caps.queues_per_engine()),
            vram_size: u64::from(mmio.read32(regs::VRAM_SIZE_LO))
                | (u64::from(mmio.read32(regs::VRAM_SIZE_LO + 4)) << 32),
        };
        let irq = Arc::new(SimInterrupts::wired(latch, mmio.clone(), wiring));
        irq.ack(IrqCauses::all());
        irq.enable(IrqCauses::all());
        Ok(Self {
            mmio,
            dma,
            irq,
            clock,
            info,
            inv_lock: Mutex::new(()),
        })
    }

    /// Identification and capabilities.
    pub fn info(&self) -> DeviceInfo {
        self.info
    }

    /// The interrupt interface.
    pub fn interrupts(&self) -> Arc<SimInterrupts> {
        self.irq.clone()
    }

    /// The DMA memory.
    pub fn dma(&self) -> Arc<dyn DmaMemory> {
        self.dma.clone()
    }

    /// The clock waits are measured on.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Creates queue `queue` of `engine` running in `ctx`, with a ring of `ring_bytes`.
    pub fn create_queue(
        &self,
        engine: Engine,
        queue: u32,
        ctx: HwCtx,
        ring_bytes: u32,
    ) -> Result<SimQueue, HwError> {
        self.check_ctx(ctx)?;
        let shape = (engine, queue, self.info.queues_per_engine);
        SimQueue::new(self.mmio.clone(), self.dma.clone(), shape, ctx, ring_bytes)
    }

    /// Disables every hardware queue of every engine (bring-up: a queue left enabled by an
    /// earlier driver instance must not run a stale ring under the new scheduler).
    pub fn stop_all_queues(&self) {
        let per = self.info.queues_per_engine;
        for index in 0..2 * per {
            self.mmio.write32(regs::queue_reg(index, regs::Q_CTRL), 0);
        }
    }

    /// Creates a software queue's ring for `ctx` on `engine`, not loaded on any hardware
    /// queue yet.
    pub fn create_ring(
        &self,
        engine: Engine,
        ctx: HwCtx,
        ring_bytes: u32,
    ) -> Result<ring::SimRing, HwError> {
        self.check_ctx(ctx)?;
        let shape = (engine, self.info.queues_per_engine);
        ring::SimRing::new(self.mmio.clone(), self.dma.clone(), shape, ctx, ring_bytes)
    }

    /// Creates the fault queue with `entries` records.
    pub fn create_fault_queue(&self, entries: u32) -> Result<SimFaultQueue, HwError> {
        SimFaultQueue::new(self.mmio.clone(), self.dma.clone(), entries)
    }

    /// The device timestamp counter.
    pub fn timestamp(&self) -> u64 {
        let lo = self.mmio.read32(regs::TIMESTAMP_LO);
        let hi = self.mmio.read32(regs::TIMESTAMP_HI);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// Reads hardware counter `index` (see the manual's counter table).
    pub fn counter(&self, index: u32) -> u64 {
        let at = regs::COUNTERS + 8 * index;
        u64::from(self.mmio.read32(at)) | (u64::from(self.mmio.read32(at + 4)) << 32)
    }

    /// Points the global GTT (the privileged address space only ring commands reach, see
    /// [`crate::hw::cmd::CommandStream::ggtt_store_qword`]) at `root` and enables it.
    /// Bring-up does this once; the tables behind it must stay valid while the device runs.
    pub fn bind_ggtt(&self, root: PtRoot) -> Result<(), HwError> {
        if !root.addr.is_aligned(4096) {
            return Err(HwError::Pte(crate::hw::pte::PteError::Misaligned {
                addr: root.addr.get(),
                align: 4096,
            }));
        }
        let loc = u32::from(root.location == MemLocation::Vram);
        self.mmio.write32(regs::GGTT_BASE_LO, 0);
        self.mmio
            .write32(regs::GGTT_BASE_HI, (root.addr.get() >> 32) as u32);
        self.mmio.write32(
            regs::GGTT_BASE_LO,
            root.addr.get() as u32 | regs::GGTT_ENABLE | loc,
        );
        Ok(())
    }

    fn check_ctx(&self, ctx: HwCtx) -> Result<(), HwError> {
        if ctx.0 < self.info.contexts {
            Ok(())
        } else {
            Err(HwError::BadContext {
                ctx: ctx.0,
                count: self.info.contexts,
            })
        }
    }

    fn wait_for(
        &self,
        causes: IrqCauses,
        timeout: Duration,
        what: &'static str,
        cond: impl FnMut() -> bool,
    ) -> Result<(), HwError> {
        wait_until(&*self.irq, &*self.clock, causes, timeout, what, cond)
    }
}

impl Mmu for SimHw {
    fn bind_context_as(
        &self,
        ctx: HwCtx,
        root: PtRoot,
        mode: FaultMode,
        asid: u16,
    ) -> Result<(), HwError> {
        self.check_ctx(ctx)?;
        if !root.addr.is_aligned(4096) {
            return Err(HwError::Pte(crate::hw::pte::PteError::Misaligned {
                addr: root.addr.get(),
                align: 4096,
            }));
        }
        let loc = u64::from(root.location == MemLocation::Vram);
        self.mmio.write32(regs::ctx_reg(ctx.0, regs::CTX_CTRL), 0);
        self.mmio.write64(
            regs::ctx_reg(ctx.0, regs::CTX_PT_BASE_LO),
            root.addr.get() | loc,
        );
        let mut ctrl = CtxCtrl::ENABLE;
        if mode == FaultMode::Recoverable {
            ctrl |= CtxCtrl::RECOVERABLE;
        }
        let ctrl = ctrl.bits() | (u32::from(asid) << regs::CTX_CTRL_ASID_SHIFT);
        self.mmio
            .write32(regs::ctx_reg(ctx.0, regs::CTX_CTRL), ctrl);
        Ok(())
    }

    fn unbind_context(&self, ctx: HwCtx) -> Result<(), HwError> {
        self.check_ctx(ctx)?;
        self.mmio.write32(regs::ctx_reg(ctx.0, regs::CTX_CTRL), 0);
        Ok(())
    }

    fn context_status(&self, ctx: HwCtx) -> Result<CtxStatus, HwError> {
        self.check_ctx(ctx)?;
        Ok(CtxStatus(
            self.mmio.read32(regs::ctx_reg(ctx.0, regs::CTX_STATUS)),
        ))
    }

    fn clear_context_error(&self, ctx: HwCtx) -> Result<(), HwError> {
        self.check_ctx(ctx)?;
        self.mmio.write32(regs::ctx_reg(ctx.0, regs::CTX_STATUS), 1);
        Ok(())
    }

    fn invalidate(
        &self,
        ctx: HwCtx,
        range: Option<(GpuVa, u64)>,
    ) -> Result<TlbInvalidation, HwError> {
        self.check_ctx(ctx)?;
        let (start, len) = range.map_or((0, 0), |(va, len)| (va.get(), len));
        let _guard = self.inv_lock.lock();
        self.mmio.write32(regs::TLB_INV_CTX, ctx.0);
        self.mmio.write64(regs::TLB_INV_START_LO, start);
        self.mmio.write64(regs::TLB_INV_LEN_LO, len);
        self.mmio
            .write32(regs::TLB_INV_REQ, u32::from(range.is_none()));
        Ok(TlbInvalidation {
            seqno: self.mmio.read32(regs::TLB_INV_REQ_SEQNO),
        })
    }

    fn invalidation_done(&self, inv: TlbInvalidation) -> bool {
        let done = self.mmio.read32(regs::TLB_INV_DONE_SEQNO);
        // Seqnos wrap: done is at or past inv if the distance is less than half the space.
        done.wrapping_sub(inv.seqno) < 1 << 31
    }

    fn wait_invalidation(&self, inv: TlbInvalidation, timeout: Duration) -> Result<(), HwError> {
        // An invalidation completes within a few device steps, so poll the seqno register a
        // bounded number of times (yielding, so the device thread can run) before sleeping on
        // the interrupt: the sleep costs two thread wake-ups, the poll usually none. Bounded
        // by a count, not by time, so an injected clock cannot turn it into a spin.
        for _ in 0..INVALIDATION_POLLS {
            if self.invalidation_done(inv) {
                return Ok(());
            }
            std::thread::yield_now();
        }
        self.wait_for(IrqCauses::TLB_INV_DONE, timeout, "TLB invalidation", || {
            self.invalidation_done(inv)
        })
    }
}

impl EngineControl for SimHw {
    fn reset(&self, engine: Engine, timeout: Duration) -> Result<Option<HwCtx>, HwError> {
        let epoch = self.irq.epoch();
        self.irq.ack(IrqCauses::RESET_DONE);
        self.mmio.write32(regs::ENGINE_RESET, 1 << engine.index());
        let mut fired = false;
        self.wait_for(IrqCauses::RESET_DONE, timeout, "engine reset", || {
            fired = fired
                || self.irq.epoch() > epoch && self.irq.status().contains(IrqCauses::RESET_DONE);
            fired
        })?;
        self.irq.ack(IrqCauses::RESET_DONE);
        let guilty = self
            .mmio
            .read32(regs::RESET_GUILTY_CTX + 4 * engine.index());
        Ok((guilty != regs::NO_CONTEXT).then_some(HwCtx(guilty)))
    }
}

#[cfg(test)]
mod tests;
