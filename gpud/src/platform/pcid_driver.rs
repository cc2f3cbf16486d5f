//! The driver factory of `gpud pcid`: turns the capabilities the startup sequence got from
//! pcid into the `gpu` scheme server and its event-loop hooks.
//!
//! Owns: [`bring_up`] (shared with `gpud vfio`) and [`build`] / [`build_with`] — BAR0 → registers, BAR2 → VRAM aperture, one contiguous
//! DMA chunk → the DMA pool, the interrupt mode → MSI-X table programming and the IRQ hook —
//! the CPU window over the chunks' and BAR2's mappings (BO `mmap_prep` answers addresses in
//! them) — then `Device::with_hardware`, the `Driver`, the `GpuScheme` and the
//! `SchemeEvents`. [`PcidConfig`] holds the knobs.
//! Must not: make syscalls (everything arrives in [`DeviceResources`]), so the whole path
//! runs on the host against fakes and an in-process simgpu.

use std::sync::Arc;
use std::time::Duration;

use gpu_scheme::{GpuScheme, Limits};

use super::device_hw::{alloc_dma_pool, program_msix, BarMemory, BarMmio, StatusIrq};
use super::event_loop::IrqOutcome;
use super::interrupts::InterruptMode;
use super::scheme_events::SchemeEvents;
use super::startup::DeviceResources;
use super::sys::{BarMapping, DmaBuffer, DmaMemory, MsiMessage, Platform};
use crate::device::{Device, DeviceConfig, DeviceHardware};
use crate::driver::Driver;
use crate::hw::regs;
use crate::hw::sim::irq::{IrqLatch, MsixWiring};
use crate::hw::Mmio;
use crate::mem::window::{CpuWindow, WindowChunk};
use crate::types::{CpuVa, PAGE_SIZE};

/// DMA pool requested at startup: system BOs, page tables, rings and fence pages all live
/// here, in physically contiguous chunks of [`DMA_CHUNK`] bytes.
pub const DMA_POOL_BYTES: u64 = 64 << 20;
/// The smallest DMA pool gpud starts with.
pub const DMA_POOL_MIN: u64 = 8 << 20;
/// Bytes per physically contiguous chunk: what Redox drivers rely on getting from the memory
/// scheme (its scatter-gather helper uses 4 MiB chunks). A system BO lives in one chunk, so
/// this is also the largest system BO.
pub const DMA_CHUNK: u64 = 4 << 20;
/// How often the loop retries parked waits (see `SchemeEvents::with_parked_poll`).
pub const PARKED_POLL: Duration = Duration::from_millis(1);

/// What `gpud pcid` brings up.
#[derive(Clone)]
pub struct PcidConfig {
    /// Device options (`vram_size` and `sys_size` are replaced by what the device and the
    /// DMA pool really have).
    pub device: DeviceConfig,
    /// Per-client limits of the scheme.
    pub limits: Limits,
    /// DMA pool requested.
    pub dma_pool: u64,
    /// Smallest DMA pool accepted.
    pub dma_pool_min: u64,
    /// Bytes per contiguous chunk.
    pub dma_chunk: u64,
    /// Retry interval of parked requests.
    pub parked_poll: Duration,
}

impl Default for PcidConfig {
    fn default() -> Self {
        Self {
            device: DeviceConfig::default(),
            limits: Limits::default(),
            dma_pool: DMA_POOL_BYTES,
            dma_pool_min: DMA_POOL_MIN,
            dma_chunk: DMA_CHUNK,
            parked_poll: PARKED_POLL,
        }
    }
}

/// The loop's IRQ hook (boxed so the service type can be named).
pub type IrqHook = Box<dyn FnMut(&Driver) -> IrqOutcome>;
/// The event-loop hooks `gpud pcid` runs with.
pub type PcidEvents = SchemeEvents<IrqHook>;

/// What [`build_with`] made, beyond the server and hooks: the IRQ hook's counters and the
/// register adapter, for logs and tests.
pub struct Built {
    /// The scheme server.
    pub scheme: GpuScheme<Driver>,
    /// The loop hooks.
    pub events: PcidEvents,
    /// The IRQ hook (counters).
    pub irq: Arc<StatusIrq>,
    /// The DMA pool's chunks as `(physical address, bytes)`.
    pub dma_pool: Vec<(u64, u64)>,
}

/// [`build_with`] with the default [`PcidConfig`]: the `build` that `platform::redox::run`
/// hands to the startup sequence.
pub fn build<P>(res: DeviceResources<P>) -> Result<(GpuScheme<Driver>, PcidEvents), String>
where
    P: Platform,
    P::Bar: 'static,
    P::Channel: 'static,
    P::Dma: 'static,
{
    build_with(res, PcidConfig::default()).map(|b| (b.scheme, b.events))
}

/// VRAM the device reports, limited to what the BAR2 mapping shows.
fn vram_size(mmio: &dyn Mmio, aperture: u64) -> Result<u64, String> {
    let lo = u64::from(mmio.read32(regs::VRAM_SIZE_LO));
    let hi = u64::from(mmio.read32(regs::VRAM_SIZE_LO + 4));
    let reported = lo | (hi << 32);
    if reported > aperture {
        tracing::warn!("VRAM of {reported:#x} bytes, BAR2 shows {aperture:#x}: using the BAR");
    }
    match reported.min(aperture) {
        0 => Err("the device reports no VRAM".into()),
        n => Ok(n),
    }
}

/// Where gpud sees the DMA chunks and the first `vram` bytes of BAR2 (`bar2`: its base and
/// mapped length), for BO `mmap_prep`. A window the mappings cannot form (unaligned, or
/// overlapping: a platform bug) leaves BO mmap refused rather than unsafe.
fn cpu_window(chunks: &[DmaBuffer], bar2: (CpuVa, u64), vram: u64) -> Option<CpuWindow> {
    let sys = chunks
        .iter()
        .map(|c| WindowChunk {
            cpu: c.cpu,
            phys: c.phys,
            len: c.len,
        })
        .collect();
    // The aperture must show every byte it maps: never more VRAM than the BAR's mapping.
    let shown = vram.min(bar2.1) / PAGE_SIZE * PAGE_SIZE;
    match CpuWindow::new(sys, (shown > 0).then_some((bar2.0, shown))) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("no CPU window for BO mmap ({e}): mmap_prep answers EOPNOTSUPP");
            None
        }
    }
}

/// How the device's interrupts reach gpud, for [`bring_up`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqRouting {
    /// gpud programs every used MSI-X entry with this message (Redox: one CPU vector).
    ProgramMsix(MsiMessage),
    /// The platform routes the device's messages itself (MSI on Redox; VFIO, where the
    /// kernel owns the MSI-X table and signals eventfds): the vector is gpud's alone.
    Exclusive,
    /// A legacy line that may be shared with other devices.
    Shared,
}

/// The driver [`bring_up`] made, before it is served: the scheme server (`gpud pcid`) and
/// the host transport (`gpud vfio`) wrap it.
pub struct Core {
    /// The driver.
    pub driver: Driver,
    /// The status-driven IRQ hook (run it on every device interrupt).
    pub irq: Arc<StatusIrq>,
    /// The DMA pool's buffers.
    pub chunks: Vec<DmaBuffer>,
}

/// Brings the device up on its BARs and DMA memory: registers from `registers` (BAR0),
/// VRAM through `vram` (BAR2), the DMA pool from `dma`, interrupts as `irq` says. Generic
/// over the platform's seams, so `gpud pcid`, `gpud vfio` and the host tests share it.
pub fn bring_up<B, D>(
    registers: B,
    vram: Option<B>,
    dma: &mut D,
    irq: IrqRouting,
    cfg: &PcidConfig,
) -> Result<Core, String>
where
    B: BarMapping + 'static,
    D: DmaMemory,
{
    let mmio: Arc<dyn Mmio> = Arc::new(BarMmio::new(registers));
    let bar2 = vram.ok_or("the function has no VRAM aperture (BAR2)")?;
    let vram = vram_size(&*mmio, bar2.len())?;
    let bar2_view = (bar2.base(), bar2.len());
    let aperture = Arc::new(BarMemory::new(bar2, vram));
    let (chunks, dma) = alloc_dma_pool(dma, cfg.dma_pool, cfg.dma_pool_min, cfg.dma_chunk)
        .map_err(|e| format!("allocating the DMA pool: {e}"))?;
    let pool_bytes: u64 = chunks.iter().map(|c| c.len).sum();
    let sys_end = dma.end().get();
    let window = cpu_window(&chunks, bar2_view, vram);
    let exclusive = match irq {
        IrqRouting::ProgramMsix(message) => {
            program_msix(&*mmio, message).map_err(|e| e.to_string())?;
            true
        }
        IrqRouting::Exclusive => true,
        IrqRouting::Shared => false,
    };
    let latch = Arc::new(IrqLatch::default());
    let device_cfg = DeviceConfig {
        vram_size: vram,
        sys_size: pool_bytes,
        ..cfg.device.clone()
    };
    let parts = DeviceHardware {
        mmio: mmio.clone(),
        dma,
        vram: aperture,
        latch: latch.clone(),
        wiring: MsixWiring::Platform,
        sim: None,
        sys_end,
        cpu_window: window,
    };
    let device = Device::with_hardware(device_cfg, parts).map_err(|e| e.to_string())?;
    Ok(Core {
        driver: Driver::new(Arc::new(device), pool_bytes),
        irq: Arc::new(StatusIrq::new(mmio, latch, exclusive)),
        chunks,
    })
}

/// A PCI address as Linux's `drm-pdev` writes it: `segment:bus:device.function` in hex.
pub fn pdev_name(a: &pcid_config::protocol::PciAddress) -> String {
    format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        a.segment, a.bus, a.device, a.function
    )
}

/// Brings the device up on `res` and returns the scheme server and its loop hooks.
pub fn build_with<P>(mut res: DeviceResources<P>, cfg: PcidConfig) -> Result<Built, String>
where
    P: Platform,
    P::Bar: 'static,
    P::Channel: 'static,
    P::Dma: 'static,
{
    let routing = match res.interrupt {
        InterruptMode::MsiX { message } => IrqRouting::ProgramMsix(message),
        InterruptMode::Msi { .. } => IrqRouting::Exclusive,
        InterruptMode::Legacy { .. } => IrqRouting::Shared,
    };
    let Core {
        driver,
        irq,
        chunks,
    } = bring_up(res.registers, res.vram, &mut res.dma, routing, &cfg)?;
    let driver = driver.with_pdev(pdev_name(&res.args.func.addr));
    let scheme = GpuScheme::new(driver, cfg.limits);
    let hook_irq = irq.clone();
    // The hook owns the pcid channel and the memory-scheme handle: both must stay open
    // while the driver runs (the pool is never returned).
    let (pcid, dma_handle) = (res.pcid, res.dma);
    let hook: IrqHook = Box::new(move |_: &Driver| {
        let _keep = (&pcid, &dma_handle);
        hook_irq.service()
    });
    Ok(Built {
        scheme,
        events: SchemeEvents::new(hook).with_parked_poll(cfg.parked_poll),
        irq,
        dma_pool: chunks.iter().map(|c| (c.phys.get(), c.len)).collect(),
    })
}

#[cfg(test)]
#[path = "pcid_driver_tests.rs"]
mod tests;
