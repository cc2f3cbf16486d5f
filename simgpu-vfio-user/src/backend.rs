//! The vfio-user device: a `SimGpu` behind the regions and interrupts of a VFIO PCI device.
//!
//! Owns: the region table (config space, BAR0 trapped registers, BAR2 VRAM as one sparse
//! mmap area over a memfd), the IRQ table (MSI-X with one eventfd per simgpu vector), and
//! [`SimGpuBackend`], the `vfio_user::ServerBackend` that routes every message to the
//! device. Must not: implement device behaviour (simgpu does) or block on the device.
//!
//! Two things differ from a physical simgpu: QEMU emulates the MSI-X table itself (the
//! guest's table writes never arrive here) and hands over one eventfd per vector, so the
//! backend unmasks simgpu's own table entry of every vector that has an eventfd and masks
//! the others; and system memory is whatever QEMU mapped for DMA ([`GuestMemory`]).

use crate::guest::GuestMemory;
use crate::mapping::{memfd, Mapping};
use parking_lot::Mutex;
use rustix::fd::{AsRawFd, OwnedFd};
use simgpu::{regs, Config, InterruptSink, PhysMemory, SimGpu};
use std::fs::File;
use std::io::{Error, ErrorKind};
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vfio_bindings::bindings::vfio::{
    vfio_region_info, vfio_region_sparse_mmap_area, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_NORESIZE,
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion, SparseArea};

/// MSI-X vectors simgpu raises (one per interrupt cause).
pub const MSIX_VECTORS: u32 = regs::irq::COUNT;
/// Byte size of the config region (simgpu's config space).
pub const CONFIG_SIZE: u64 = simgpu::pci::CONFIG_SIZE as u64;
/// Vector-control word of an MSI-X table entry.
const MSIX_VECTOR_CTRL: u32 = 12;

/// The eventfds QEMU gave for the MSI-X vectors, and delivery counters.
#[derive(Default)]
pub struct Vectors {
    fds: Mutex<Vec<Option<File>>>,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl Vectors {
    /// Interrupts written to an eventfd.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
    /// Interrupts raised for a vector without an eventfd.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Which vectors have an eventfd.
    pub fn wired(&self) -> Vec<bool> {
        self.fds.lock().iter().map(Option::is_some).collect()
    }
}

impl InterruptSink for Vectors {
    fn interrupt(&self, vector: u16, _data: u32) {
        let fds = self.fds.lock();
        match fds.get(usize::from(vector)).and_then(Option::as_ref) {
            Some(fd) => {
                // An eventfd write adds to its counter; it can only fail when the counter
                // would overflow, and then the guest has an interrupt pending anyway.
                let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A simgpu served as a vfio-user PCI device.
pub struct SimGpuBackend {
    cfg: Config,
    gpu: SimGpu,
    guest: Arc<GuestMemory>,
    vram: Arc<Mapping>,
    vram_fd: OwnedFd,
    vectors: Arc<Vectors>,
    resets: u64,
}

fn inval(what: &str) -> Error {
    Error::new(ErrorKind::InvalidInput, what.to_string())
}

/// A little-endian value of `len` (1, 2, 4 or 8) bytes from `data`.
fn le(data: &[u8]) -> u64 {
    data.iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

impl SimGpuBackend {
    /// A device with `cfg` (VRAM size and engine shape), its VRAM in a fresh memfd. The
    /// device thread runs from the start.
    pub fn new(cfg: Config) -> std::io::Result<Self> {
        let cfg = cfg.sanitized();
        let vram_fd = memfd("simgpu-vram", cfg.vram_size)?;
        let vram = Arc::new(Mapping::new(&vram_fd, 0, cfg.vram_size)?);
        let guest = Arc::new(GuestMemory::default());
        let vectors = Arc::new(Vectors {
            fds: Mutex::new((0..MSIX_VECTORS).map(|_| None).collect()),
            ..Vectors::default()
        });
        let gpu = Self::make_gpu(cfg, &guest, &vram, &vectors);
        Ok(Self {
            cfg,
            gpu,
            guest,
            vram,
            vram_fd,
            vectors,
            resets: 0,
        })
    }

    fn make_gpu(
        cfg: Config,
        guest: &Arc<GuestMemory>,
        vram: &Arc<Mapping>,
        vectors: &Arc<Vectors>,
    ) -> SimGpu {
        let sys: Arc<dyn PhysMemory> = guest.clone();
        let vram: Arc<dyn PhysMemory> = vram.clone();
        let gpu = SimGpu::with_vram(cfg, sys, vram);
        gpu.set_interrupt_sink(vectors.clone());
        let wired = vectors.wired();
        for v in 0..MSIX_VECTORS {
            let on = wired.get(v as usize).copied().unwrap_or(false);
            Self::mask(&gpu, v, !on);
        }
        gpu.start();
        gpu
    }

    fn mask(gpu: &SimGpu, vector: u32, masked: bool) {
        let at = regs::MSIX_TABLE + vector * regs::MSIX_ENTRY_SIZE;
        // The message data is the vector number: the eventfd already says which one.
        gpu.mmio_write32(at + 8, vector);
        gpu.mmio_write32(at + MSIX_VECTOR_CTRL, u32::from(masked));
    }

    /// The device (for tests and counters).
    pub fn gpu(&self) -> &SimGpu {
        &self.gpu
    }

    /// The DMA-map table.
    pub fn guest(&self) -> &Arc<GuestMemory> {
        &self.guest
    }

    /// The MSI-X eventfds and counters.
    pub fn vectors(&self) -> &Arc<Vectors> {
        &self.vectors
    }

    /// Device resets served.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// The VFIO regions: config, BAR0 (trapped), BAR2 (the VRAM memfd, mmappable through one
    /// sparse area over the whole BAR — the server only passes the fd for regions with a
    /// sparse area), the rest absent.
    pub fn regions(&self) -> Vec<ServerRegion> {
        (0..VFIO_PCI_NUM_REGIONS)
            .map(|index| {
                let mut info = vfio_region_info {
                    argsz: size_of::<vfio_region_info>() as u32,
                    index,
                    ..Default::default()
                };
                let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
                let mut sparse_areas = Vec::new();
                let mut mmap_fd = None;
                match index {
                    VFIO_PCI_CONFIG_REGION_INDEX => {
                        info.size = CONFIG_SIZE;
                        info.flags = rw;
                    }
                    VFIO_PCI_BAR0_REGION_INDEX => {
                        info.size = regs::BAR0_SIZE;
                        info.flags = rw;
                    }
                    VFIO_PCI_BAR2_REGION_INDEX => {
                        info.size = self.cfg.vram_size;
                        info.flags = rw | VFIO_REGION_INFO_FLAG_MMAP;
                        sparse_areas.push(SparseArea {
                            area: vfio_region_sparse_mmap_area {
                                offset: 0,
                                size: self.cfg.vram_size,
                            },
                        });
                        mmap_fd = Some(self.vram_fd.as_raw_fd());
                    }
                    _ => {}
                }
                ServerRegion {
                    region_info: info,
                    sparse_areas,
                    mmap_fd,
                }
            })
            .collect()
    }

    /// The IRQ indexes: MSI-X only, one eventfd per simgpu vector.
    pub fn irqs() -> Vec<IrqInfo> {
        (0..VFIO_PCI_NUM_IRQS)
            .map(|index| match index {
                VFIO_PCI_MSIX_IRQ_INDEX => IrqInfo {
                    index,
                    flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE,
                    count: MSIX_VECTORS,
                },
                _ => IrqInfo {
                    index,
                    flags: 0,
                    count: 0,
                },
            })
            .collect()
    }

    fn config_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = match u16::try_from(at) {
                Ok(o) if at < CONFIG_SIZE => {
                    (self.gpu.config_read32(o & !3) >> ((o & 3) * 8)) as u8
                }
                _ => 0xff,
            };
        }
    }

    fn config_write(&self, offset: u64, data: &[u8]) {
        // Read-modify-write of the dwords touched; simgpu decides what is writable.
        let mut at = offset;
        let end = offset.saturating_add(data.len() as u64).min(CONFIG_SIZE);
        while at < end {
            let dword = at & !3;
            let Ok(o) = u16::try_from(dword) else { return };
            let mut bytes = self.gpu.config_read32(o).to_le_bytes();
            while at < end && at & !3 == dword {
                if let Some(&b) = data.get((at - offset) as usize) {
                    bytes[(at & 3) as usize] = b;
                }
                at += 1;
            }
            self.gpu.config_write32(o, u32::from_le_bytes(bytes));
        }
    }

    fn bar0_read(&self, offset: u64, data: &mut [u8]) {
        // Registers are dwords; a qword read is two dword reads, low first. Anything else,
        // or outside the BAR, reads all-ones like an aborted PCI read.
        let ok = offset % 4 == 0
            && matches!(data.len(), 4 | 8)
            && offset + data.len() as u64 <= regs::BAR0_SIZE;
        if !ok {
            data.fill(0xff);
            return;
        }
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let v = self.gpu.mmio_read32((offset + 4 * i as u64) as u32);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn bar0_write(&self, offset: u64, data: &[u8]) {
        let ok = offset % 4 == 0
            && matches!(data.len(), 4 | 8)
            && offset + data.len() as u64 <= regs::BAR0_SIZE;
        if !ok {
            return;
        }
        for (i, chunk) in data.chunks(4).enumerate() {
            self.gpu
                .mmio_write32((offset + 4 * i as u64) as u32, le(chunk) as u32);
        }
    }

    fn set_msix(
        &mut self,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> std::io::Result<()> {
        if flags & VFIO_IRQ_SET_ACTION_TRIGGER == 0 {
            // Mask/unmask actions: QEMU masks in its own emulated table; nothing to do.
            return Ok(());
        }
        let end = start.checked_add(count).filter(|&e| e <= MSIX_VECTORS);
        let Some(end) = end else {
            return Err(inval("MSI-X vector range"));
        };
        let mut table = self.vectors.fds.lock();
        if count == 0 && flags & VFIO_IRQ_SET_DATA_NONE != 0 {
            // Disable the whole index.
            table.iter_mut().for_each(|f| *f = None);
        } else if flags & VFIO_IRQ_SET_DATA_EVENTFD != 0 {
            // One fd per vector in order; vectors past the fds QEMU sent (it cannot send -1)
            // lose their eventfd.
            let mut fds = fds.into_iter();
            for v in start..end {
                table[v as usize] = fds.next();
            }
        } else {
            // DATA_NONE with a count: a loopback trigger; DATA_BOOL is refused by the server.
            drop(table);
            for v in start..end {
                self.vectors.interrupt(v as u16, v);
            }
            return Ok(());
        }
        let wired: Vec<bool> = table.iter().map(Option::is_some).collect();
        drop(table);
        for (v, on) in wired.into_iter().enumerate() {
            Self::mask(&self.gpu, v as u32, !on);
        }
        Ok(())
    }
}

impl ServerBackend for SimGpuBackend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
        // Never an error: the server would answer with a bare header the client does not
        // expect for a read. Unknown places read all-ones.
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.config_read(offset, data),
            VFIO_PCI_BAR0_REGION_INDEX => self.bar0_read(offset, data),
            VFIO_PCI_BAR2_REGION_INDEX => {
                if self.vram.read(offset, data).is_err() {
                    data.fill(0xff);
                }
            }
            _ => data.fill(0xff),
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.config_write(offset, data),
            VFIO_PCI_BAR0_REGION_INDEX => self.bar0_write(offset, data),
            VFIO_PCI_BAR2_REGION_INDEX => {
                // Outside VRAM: dropped, like a write to nothing.
                let _ = self.vram.write(offset, data);
            }
            _ => {}
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        _flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        let mem = match fd {
            Some(fd) => Some(Mapping::new(&fd, offset, size)?),
            None => None,
        };
        self.guest
            .map(address, size, mem)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, e))
    }

    fn dma_unmap(&mut self, _flags: DmaUnmapFlags, address: u64, size: u64) -> std::io::Result<()> {
        self.guest
            .unmap(address, size)
            .map(drop)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, e))
    }

    fn reset(&mut self) -> std::io::Result<()> {
        // A function-level reset: a fresh device on the same VRAM and DMA mappings (which
        // belong to the client, not the device). The MSI-X eventfds stay with QEMU's setup.
        self.gpu.stop();
        self.gpu = Self::make_gpu(self.cfg, &self.guest, &self.vram, &self.vectors);
        self.resets += 1;
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> std::io::Result<()> {
        match index {
            VFIO_PCI_MSIX_IRQ_INDEX => self.set_msix(flags, start, count, fds),
            // No INTx or MSI: only "disable" (count 0) is meaningful there.
            _ if count == 0 => Ok(()),
            _ => Err(inval("only MSI-X interrupts")),
        }
    }
}

impl Drop for SimGpuBackend {
    fn drop(&mut self) {
        self.gpu.stop();
    }
}
