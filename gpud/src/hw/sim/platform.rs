//! Host glue: an in-process simgpu with heap system memory, wired to the hardware layer.
//!
//! Owns: creating the device model, the [`Mmio`] adapter onto its BAR0, the DMA memory over
//! the shared system memory, registering the interrupt latch, and the device's run mode.
//! Must not: program device registers (that is [`SimHw`]'s job); this is the "platform" that
//! on Redox would be pcid, BAR mappings and IRQ handles.

use super::dma::HeapDma;
use super::irq::IrqLatch;
use super::SimHw;
use crate::hw::{Clock, HwError, Mmio};
use simgpu::{Config, HeapMemory, SimGpu};
use std::sync::Arc;

/// BAR0 of an in-process simgpu.
pub struct SimMmio(pub Arc<SimGpu>);

impl Mmio for SimMmio {
    fn read32(&self, offset: u32) -> u32 {
        self.0.mmio_read32(offset)
    }

    fn write32(&self, offset: u32, value: u32) {
        self.0.mmio_write32(offset, value);
    }
}

/// An in-process device and the driver's hardware layer on top of it.
pub struct HostSim {
    /// The device model (for the platform: run mode, PCI config space, BAR2).
    pub gpu: Arc<SimGpu>,
    /// The host's DMA memory.
    pub dma: Arc<HeapDma>,
    /// The brought-up hardware layer.
    pub hw: SimHw,
}

impl HostSim {
    /// Creates a device with `sys_bytes` of system memory, brings it up and starts its
    /// free-running thread.
    pub fn start(cfg: Config, sys_bytes: u64, clock: Arc<dyn Clock>) -> Result<Self, HwError> {
        let sys = Arc::new(HeapMemory::new(sys_bytes));
        let gpu = Arc::new(SimGpu::new(cfg, sys.clone()));
        let latch = Arc::new(IrqLatch::default());
        gpu.set_interrupt_sink(latch.clone());
        let dma = Arc::new(HeapDma::new(sys));
        let mmio: Arc<dyn Mmio> = Arc::new(SimMmio(gpu.clone()));
        let hw = SimHw::init(mmio, dma.clone(), latch, clock)?;
        gpu.start();
        Ok(Self { gpu, dma, hw })
    }
}

impl Drop for HostSim {
    fn drop(&mut self) {
        self.gpu.stop();
    }
}
