//! The hardware the scheduler drives, as one bundle of hardware-layer traits, and the ring
//! factory seam.
//!
//! Owns: [`ExecHw`] (rings, MMU status, engine reset, interrupts, DMA, clock) and the
//! [`RingFactory`] / [`RingQueue`] traits with their simgpu implementation. Must not: encode
//! commands or schedule; it only adapts the hardware layer.

use crate::hw::sim::queue::SimQueue;
use crate::hw::sim::SimHw;
use crate::hw::{
    Clock, DmaMemory, Engine, EngineControl, HwCtx, HwError, HwQueue, Interrupts, Mmu,
};
use std::sync::Arc;

/// A hardware queue the scheduler can also tear down (after an engine reset or when its
/// exec queue goes away).
pub trait RingQueue: HwQueue {
    /// Disables the queue and frees its ring. Only when idle or after a reset.
    fn destroy(self: Box<Self>) -> Result<(), HwError>;
}

impl RingQueue for SimQueue {
    fn destroy(self: Box<Self>) -> Result<(), HwError> {
        SimQueue::destroy(*self)
    }
}

/// Creates hardware queues.
pub trait RingFactory: Send + Sync {
    /// Hardware queues per engine.
    fn queues_per_engine(&self) -> u32;
    /// Programs hardware queue `index` of `engine` for `ctx` with a fresh, empty ring.
    fn create_ring(
        &self,
        engine: Engine,
        index: u32,
        ctx: HwCtx,
        ring_bytes: u32,
    ) -> Result<Box<dyn RingQueue>, HwError>;
}

impl RingFactory for SimHw {
    fn queues_per_engine(&self) -> u32 {
        self.info().queues_per_engine
    }

    fn create_ring(
        &self,
        engine: Engine,
        index: u32,
        ctx: HwCtx,
        ring_bytes: u32,
    ) -> Result<Box<dyn RingQueue>, HwError> {
        Ok(Box::new(self.create_queue(engine, index, ctx, ring_bytes)?))
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
