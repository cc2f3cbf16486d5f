//! `gpud vfio <pci address>`: gpud drives a PCI function through Linux VFIO — the
//! user-space driver model of DPDK/SPDK — and serves the `gpu` scheme over the host
//! transport, so libgpu clients and gpuctl work unchanged. In CI the function is simgpu
//! passed through to a QEMU guest (`simgpu-vfio-user`, `docs/qemu.md`); on a machine with an
//! IOMMU it is any function gpud has a backend for, bound to `vfio-pci`.
//!
//! Owns: the bring-up order on VFIO (open, identify, bus mastering, MSI-X → one eventfd,
//! BARs, DMA chunks at IOVAs from [`IOVA_BASE`], then the platform-independent
//! `pcid_driver::bring_up`), the interrupt thread, the command line. Must not: make
//! syscalls itself (`sys` does) or hold driver logic.

#[allow(unsafe_code)] // VFIO ioctls, BAR and DMA mmaps, udmabuf
pub mod sys;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::host::{HostConfig, HostDaemon};
use super::pcid_driver::{bring_up, Core, IrqRouting, PcidConfig};
use super::sys::BarMapping;
use sys::VfioPci;
use vmm_sys_util::eventfd::EventFd;

/// The first IOVA gpud maps DMA memory at (the bus addresses the device sees). Above 4 GiB,
/// away from where a guest's IOMMU reserves MSI and low ranges.
pub const IOVA_BASE: u64 = 0x1_0000_0000;
/// DMA pool in `gpud vfio`: smaller than `gpud pcid`'s, since every IOMMU mapping of a
/// guest page becomes a message to the device process when the device is vfio-user.
pub const VFIO_DMA_POOL: u64 = 32 << 20;

/// PCI command register bits.
const CMD_MEMORY: u16 = 1 << 1;
const CMD_BUS_MASTER: u16 = 1 << 2;

/// `gpud vfio` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioArgs {
    /// The PCI address (`0000:00:03.0`).
    pub address: String,
    /// Where to serve the scheme (default: the host transport's default socket).
    pub socket: Option<PathBuf>,
    /// DMA pool in bytes.
    pub dma_pool: u64,
}

/// `gpud vfio`: brings the function up and serves until killed.
pub fn run(args: VfioArgs) -> Result<(), String> {
    let pci = VfioPci::open(&args.address)?;
    let id = pci.config_read32(0);
    let (vendor, device) = ((id & 0xffff) as u16, (id >> 16) as u16);
    if (vendor, device) != (simgpu::pci::VENDOR_ID, simgpu::pci::DEVICE_ID) {
        return Err(format!(
            "{}: {vendor:04x}:{device:04x} is not a device gpud has a backend for",
            args.address
        ));
    }
    // Memory decoding and bus mastering: without the latter DMA reads zeros and MSI-X
    // never arrives.
    let cmd = pci.config_read32(4) as u16;
    pci.config_write16(4, cmd | CMD_MEMORY | CMD_BUS_MASTER);
    let eventfd = EventFd::new(0).map_err(|e| format!("eventfd: {e}"))?;
    pci.enable_msix(&eventfd)?;
    let registers = pci.trapped_bar(0).map_err(|e| format!("BAR0: {e}"))?;
    let vram = pci.mapped_bar(2).map_err(|e| format!("BAR2 mmap: {e}"))?;
    let (reg_cost, vram_cost) = (access_cost(&registers, 256), access_cost(&vram, 4096));
    eprintln!(
        "gpud: one BAR0 register read takes {:.1} us (trapped), one BAR2 read {:.0} ns (mapped)",
        reg_cost.as_secs_f64() * 1e6,
        vram_cost.as_secs_f64() * 1e9
    );
    let mut dma = pci.dma(IOVA_BASE);
    let cfg = PcidConfig {
        dma_pool: args.dma_pool,
        ..PcidConfig::default()
    };
    let Core {
        driver,
        irq,
        chunks,
    } = bring_up(registers, Some(vram), &mut dma, IrqRouting::Exclusive, &cfg)?;
    let pool: u64 = chunks.iter().map(|c| c.len).sum();
    eprintln!(
        "gpud: {} up through VFIO: {} DMA chunks ({pool:#x} bytes) at IOVA {IOVA_BASE:#x}",
        args.address,
        chunks.len()
    );
    let driver = driver
        .with_exporter(Arc::new(dma.exporter()?))
        .with_pdev(args.address.clone());
    // The interrupt: every vector signals the one eventfd; the hook marks the causes the
    // device latched for the IRQ dispatcher thread, as `gpud pcid`'s loop does.
    std::thread::Builder::new()
        .name("gpud-vfio-irq".into())
        .spawn(move || {
            let res = sys::irq_loop(eventfd, || {
                let _ = irq.service();
            });
            eprintln!("gpud: the interrupt eventfd failed: {res:?}");
        })
        .map_err(|e| format!("IRQ thread: {e}"))?;
    let mut host = HostConfig::new(args.socket);
    host.device = cfg.device;
    host.device.sys_size = pool;
    let mut daemon = HostDaemon::with_driver(driver, host, "vfio").map_err(|e| e.to_string())?;
    eprintln!(
        "gpud: serving the gpu scheme on {}",
        daemon.socket().display()
    );
    daemon.serve().map_err(|e| e.to_string())
}

/// The mean time of one dword read at offset 0 of `bar`, over `n` reads.
fn access_cost(bar: &impl BarMapping, n: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(bar.read32(0));
    }
    start.elapsed() / n.max(1)
}
