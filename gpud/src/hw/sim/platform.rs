//! Host glue: an in-process simgpu with heap system memory, wired to the hardware layer.
//!
//! Owns: creating the device model, the [`Mmio`] adapter onto its BAR0, the DMA memory over
//! the shared system memory, the BAR2 aperture, registering the interrupt latch, and the
//! device's run mode.
//! Must not: program device registers (that is [`SimHw`]'s job); this is the "platform" that
//! on Redox would be pcid, BAR mappings and IRQ handles.

use super::dma::HeapDma;
use super::irq::IrqLatch;
use super::SimHw;
use crate::hw::{Clock, HwError, Mmio, VramAperture};
use crate::types::PhysAddr;
use simgpu::{Config, HeapMemory, PhysMemory, SimGpu};
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

/// BAR2 of an in-process simgpu: the device's VRAM memory object, mapped by the host.
pub struct SimAperture(pub Arc<dyn PhysMemory>);

impl SimAperture {
    fn err(addr: PhysAddr, len: usize) -> HwError {
        HwError::DmaRange {
            addr: addr.get(),
            len: len as u64,
        }
    }
}

impl VramAperture for SimAperture {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), HwError> {
        let len = buf.len();
        self.0
            .read(addr.get(), buf)
            .map_err(|_| Self::err(addr, len))
    }

    fn write(&self, addr: PhysAddr, data: &[u8]) -> Result<(), HwError> {
        self.0
            .write(addr.get(), data)
            .map_err(|_| Self::err(addr, data.len()))
    }

    fn read_u64(&self, addr: PhysAddr) -> Result<u64, HwError> {
        self.0.load_u64(addr.get()).map_err(|_| Self::err(addr, 8))
    }

    fn write_u64(&self, addr: PhysAddr, value: u64) -> Result<(), HwError> {
        self.0
            .store_u64(addr.get(), value)
            .map_err(|_| Self::err(addr, 8))
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
    /// CPU view of VRAM (BAR2).
    pub vram: Arc<SimAperture>,
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
        let vram = Arc::new(SimAperture(gpu.vram()));
        gpu.start();
        Ok(Self { gpu, dma, hw, vram })
    }
}

impl Drop for HostSim {
    fn drop(&mut self) {
        self.gpu.stop();
    }
}
