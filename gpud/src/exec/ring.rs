//! The hardware the scheduler drives, as one bundle of hardware-layer traits, and the ring
//! factory seam.
//!
//! Owns: [`ExecHw`] (rings, MMU status, engine reset, interrupts, DMA, clock) and the
//! [`RingFactory`] / [`RingQueue`] traits (software queue rings that load onto hardware
//! queues and are preempted off them) with their simgpu implementation. Must not: encode
//! commands or schedule; it only adapts the hardware layer.

use crate::hw::sim::ring::SimRing;
use crate::hw::sim::SimHw;
use crate::hw::{
    Clock, DmaMemory, Engine, EngineControl, HwCtx, HwError, Interrupts, Mmu, QueueStatus,
};
use std::sync::Arc;

/// A software queue's ring: memory the scheduler writes jobs into, runnable on any hardware
/// queue of its engine. While loaded, the hardware queue runs it; preemption stops it at a
/// command boundary and `save` brings its position back, so it can be loaded again later,
/// on any hardware queue of the engine.
pub trait RingQueue: Send {
    /// Appends `dwords` (all or nothing); rings the doorbell if loaded.
    fn submit(&mut self, dwords: &[u32]) -> Result<(), HwError>;
    /// Programs hardware queue `slot` (disabled, unused) with this ring and enables it.
    fn load(&mut self, slot: u32) -> Result<(), HwError>;
    /// The context the ring runs in from its next load on (only while not loaded).
    fn set_ctx(&mut self, ctx: HwCtx);
    /// The hardware queue it is loaded on.
    fn slot(&self) -> Option<u32>;
    /// Asks the loaded hardware queue to stop at its next command boundary.
    fn request_preempt(&self);
    /// Whether the loaded hardware queue has stopped (preempted or reset).
    fn stopped(&self) -> bool;
    /// Reads the position back from the stopped hardware queue; the ring is unloaded.
    fn save(&mut self);
    /// Unloads the ring if it has nothing left to run; returns whether it is unloaded.
    fn unload_if_idle(&mut self) -> bool;
    /// Whether commands on the ring have not retired yet.
    fn has_work(&self) -> bool;
    /// Status of the loaded hardware queue (empty while not loaded).
    fn status(&self) -> QueueStatus;
    /// Disables the hardware queue (if loaded) and frees the ring. Only when stopped, idle
    /// or unable to run.
    fn destroy(self: Box<Self>) -> Result<(), HwError>;
}

impl RingQueue for SimRing {
    fn submit(&mut self, dwords: &[u32]) -> Result<(), HwError> {
        SimRing::submit(self, dwords)
    }
    fn load(&mut self, slot: u32) -> Result<(), HwError> {
        SimRing::load(self, slot)
    }
    fn set_ctx(&mut self, ctx: HwCtx) {
        SimRing::set_ctx(self, ctx)
    }
    fn slot(&self) -> Option<u32> {
        SimRing::slot(self)
    }
    fn request_preempt(&self) {
        SimRing::request_preempt(self)
    }
    fn stopped(&self) -> bool {
        SimRing::stopped(self)
    }
    fn save(&mut self) {
        SimRing::save(self)
    }
    fn unload_if_idle(&mut self) -> bool {
        SimRing::unload_if_idle(self)
    }
    fn has_work(&self) -> bool {
        SimRing::has_work(self)
    }
    fn status(&self) -> QueueStatus {
        SimRing::status(self)
    }
    fn destroy(self: Box<Self>) -> Result<(), HwError> {
        SimRing::destroy(*self)
    }
}

/// Creates software queue rings.
pub trait RingFactory: Send + Sync {
    /// Hardware queues per engine (how many rings of one engine can be loaded at once).
    fn queues_per_engine(&self) -> u32;
    /// Disables every hardware queue (the scheduler owns them all from its start).
    fn stop_all(&self);
    /// A fresh, empty ring for `ctx` on `engine`, not loaded.
    fn create_ring(
        &self,
        engine: Engine,
        ctx: HwCtx,
        ring_bytes: u32,
    ) -> Result<Box<dyn RingQueue>, HwError>;
}

impl RingFactory for SimHw {
    fn queues_per_engine(&self) -> u32 {
        self.info().queues_per_engine
    }

    fn stop_all(&self) {
        self.stop_all_queues();
    }

    fn create_ring(
        &self,
        engine: Engine,
        ctx: HwCtx,
        ring_bytes: u32,
    ) -> Result<Box<dyn RingQueue>, HwError> {
        Ok(Box::new(SimHw::create_ring(self, engine, ctx, ring_bytes)?))
    }
}

/// Everything the scheduler needs from the hardware layer.
#[derive(Clone)]
pub struct ExecHw {
    /// Hardware queues.
    pub rings: Arc<dyn RingFactory>,
    /// Context status and error clearing.
    pub mmu: Arc<dyn Mmu>,
    /// Engine reset.
    pub engines: Arc<dyn EngineControl>,
    /// Interrupts (for the dispatcher).
    pub irq: Arc<dyn Interrupts>,
    /// Fence pages are read through DMA memory.
    pub dma: Arc<dyn DmaMemory>,
    /// Job timeouts are measured on this clock.
    pub clock: Arc<dyn Clock>,
}

impl ExecHw {
    /// The bundle for a brought-up simgpu.
    pub fn sim(hw: Arc<SimHw>) -> Self {
        Self {
            irq: hw.interrupts(),
            dma: hw.dma(),
            clock: hw.clock(),
            rings: hw.clone(),
            mmu: hw.clone(),
            engines: hw,
        }
    }
}
