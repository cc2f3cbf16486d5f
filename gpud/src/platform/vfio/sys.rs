//! The Linux VFIO calls of `gpud vfio`: every syscall the VFIO platform makes.
//!
//! Owns: the container/group/device (through `vfio-ioctls`: type-1 IOMMU, the device fd),
//! config-space access and bus mastering, BARs (trapped: `pread`/`pwrite` on the device fd;
//! mapped: `mmap` of the region), DMA memory (one sealed memfd per chunk, mapped into gpud
//! and into the IOMMU at IOVAs gpud chooses), MSI-X through one eventfd, and BO export as a
//! udmabuf over the chunks' memfds. Must not: hold policy (bring-up order lives in
//! `platform::vfio` and `pcid_driver::bring_up`). All `unsafe` of the VFIO platform is here.

use parking_lot::Mutex;
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use simgpu::PhysMemory;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use vfio_bindings::bindings::vfio::{
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP,
};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};
use vmm_sys_util::eventfd::EventFd;

use crate::driver::BoExporter;
use crate::platform::mapped::MappedMemory;
use crate::platform::sys::{BarMapping, DmaBuffer, DmaMemory, SysError};
use crate::types::{CpuVa, PhysAddr, PAGE_SIZE};
use gpu_scheme::driver::DriverError;

fn errno(e: rustix::io::Errno) -> SysError {
    SysError::new(e.raw_os_error())
}

fn io(e: &std::io::Error) -> SysError {
    SysError::new(e.raw_os_error().unwrap_or(syscall::EIO))
}

/// An opened VFIO PCI function: its container (type-1 IOMMU) and device fd.
pub struct VfioPci {
    container: Arc<VfioContainer>,
    device: Arc<VfioDevice>,
}

impl VfioPci {
    /// Opens the function at `/sys/bus/pci/devices/<addr>` (bound to `vfio-pci`): its IOMMU
    /// group into a new container, then the device.
    pub fn open(addr: &str) -> Result<Self, String> {
        let sysfs = Path::new("/sys/bus/pci/devices").join(addr);
        if !sysfs.exists() {
            return Err(format!(
                "no PCI function {addr} ({} missing)",
                sysfs.display()
            ));
        }
        let container =
            Arc::new(VfioContainer::new(None).map_err(|e| format!("/dev/vfio/vfio: {e}"))?);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device = VfioDevice::new(&sysfs, ops, false)
            .map_err(|e| format!("{addr}: {e} (is it bound to vfio-pci, alone in its group?)"))?;
        Ok(Self {
            container,
            device: Arc::new(device),
        })
    }

    /// Reads a config-space dword (all-ones when refused).
    pub fn config_read32(&self, offset: u64) -> u32 {
        let mut b = [0xff; 4];
        self.device
            .region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut b, offset);
        u32::from_le_bytes(b)
    }

    /// Writes a config-space word.
    pub fn config_write16(&self, offset: u64, value: u16) {
        self.device
            .region_write(VFIO_PCI_CONFIG_REGION_INDEX, &value.to_le_bytes(), offset);
    }

    /// Size and flags of region `index`.
    pub fn region(&self, index: u32) -> (u64, u32) {
        (
            self.device.get_region_size(index),
            self.device.get_region_flags(index),
        )
    }

    /// BAR `index` with every access a `pread`/`pwrite` of the device fd (trapped).
    pub fn trapped_bar(&self, index: u32) -> Result<VfioBar, SysError> {
        let size = self.device.get_region_size(index);
        if size == 0 {
            return Err(SysError::new(syscall::ENODEV));
        }
        let file = self.device_file()?;
        Ok(VfioBar::Trapped {
            file,
            offset: self.device.get_region_offset(index),
            len: size,
        })
    }

    /// BAR `index` mapped into gpud (the region must be mmappable).
    pub fn mapped_bar(&self, index: u32) -> Result<VfioBar, SysError> {
        let (size, flags) = self.region(index);
        if size == 0 || flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(SysError::new(syscall::EOPNOTSUPP));
        }
        let len = usize::try_from(size).map_err(|_| SysError::new(syscall::EINVAL))?;
        let file = self.device_file()?;
        let offset = self.device.get_region_offset(index);
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: a fresh shared mapping of the BAR at a kernel-chosen address; it aliases no
        // Rust object and is unmapped once, when the `VfioBar` drops.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                prot,
                MapFlags::SHARED,
                &file,
                offset,
            )
        }
        .map_err(errno)?;
        Ok(VfioBar::Mapped {
            ptr: ptr.cast(),
            len,
        })
    }

    /// A dup of the device fd.
    fn device_file(&self) -> Result<File, SysError> {
        // SAFETY: the fd belongs to `self.device`, which outlives this borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.device.as_raw_fd()) };
        let owned = fd.try_clone_to_owned().map_err(|e| io(&e))?;
        Ok(File::from(owned))
    }

    /// Routes every MSI-X vector of the function to `eventfd`.
    pub fn enable_msix(&self, eventfd: &EventFd) -> Result<(), String> {
        let count = self
            .device
            .get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX)
            .map(|i| i.count)
            .filter(|&c| c > 0)
            .ok_or("the function has no MSI-X")?;
        let fds = vec![eventfd; count as usize];
        self.device
            .enable_msix(fds)
            .map_err(|e| format!("VFIO_DEVICE_SET_IRQS (MSI-X, {count} vectors): {e}"))
    }

    /// DMA memory mapped into this function's IOMMU domain from IOVA `base` up.
    pub fn dma(&self, base: u64) -> VfioDma {
        VfioDma {
            container: self.container.clone(),
            next_iova: base,
            chunks: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// A BAR of the VFIO function.
pub enum VfioBar {
    /// Accessed by `pread`/`pwrite` at `offset` of the device fd (every access reaches the
    /// device, or traps to the hypervisor).
    Trapped {
        /// A dup of the device fd.
        file: File,
        /// The region's offset in the device fd.
        offset: u64,
        /// The BAR's size.
        len: u64,
    },
    /// Mapped into gpud.
    Mapped {
        // INVARIANT: `ptr..ptr + len` is a live shared mapping owned by this value.
        /// Start of the mapping.
        ptr: *mut u8,
        /// Its length.
        len: usize,
    },
}

// SAFETY: the mapping (or the fd) is process-wide, not tied to a thread; accesses are single
// volatile loads/stores or syscalls, and the driver serializes register sequences itself.
unsafe impl Send for VfioBar {}

impl VfioBar {
    fn word(&self, offset: u64, size: u64) -> Option<u64> {
        let in_bounds = offset
            .checked_add(size)
            .is_some_and(|end| end <= self.len());
        (in_bounds && offset % size == 0).then_some(offset)
    }
}

impl BarMapping for VfioBar {
    fn base(&self) -> CpuVa {
        match self {
            Self::Mapped { ptr, .. } => CpuVa(*ptr as u64),
            // Not mapped: no CPU address (the CPU window leaves it out).
            Self::Trapped { .. } => CpuVa(0),
        }
    }
    fn len(&self) -> u64 {
        match self {
            Self::Trapped { len, .. } => *len,
            Self::Mapped { len, .. } => *len as u64,
        }
    }
    fn read32(&self, offset: u64) -> Option<u32> {
        let off = self.word(offset, 4)?;
        match self {
            Self::Trapped { file, offset, .. } => {
                let mut b = [0u8; 4];
                file.read_exact_at(&mut b, offset + off).ok()?;
                Some(u32::from_le_bytes(b))
            }
            Self::Mapped { ptr, .. } => {
                // SAFETY: an aligned dword inside the live mapping (`word` checked it);
                // MMIO must be volatile.
                Some(unsafe { ptr.add(off as usize).cast::<u32>().read_volatile() })
            }
        }
    }
    fn write32(&mut self, offset: u64, value: u32) -> bool {
        let Some(off) = self.word(offset, 4) else {
            return false;
        };
        match self {
            Self::Trapped { file, offset, .. } => file
                .write_all_at(&value.to_le_bytes(), *offset + off)
                .is_ok(),
            Self::Mapped { ptr, .. } => {
                // SAFETY: an aligned dword inside the live mapping; MMIO must be volatile.
                unsafe { ptr.add(off as usize).cast::<u32>().write_volatile(value) };
                true
            }
        }
    }
}

impl Drop for VfioBar {
    fn drop(&mut self) {
        if let Self::Mapped { ptr, len } = self {
            // SAFETY: our own mapping (INVARIANT), unmapped once; nothing refers to it after
            // its owner is dropped.
            let _ = unsafe { munmap(ptr.cast(), *len) };
        }
    }
}

/// One DMA chunk: a sealed memfd, its mapping in gpud and its IOVA.
struct Chunk {
    memfd: OwnedFd,
    cpu: u64,
    iova: u64,
    len: u64,
}

/// DMA memory for the device: each buffer its own memfd, mapped shared into gpud and at the
/// next free IOVA into the IOMMU (`VFIO_IOMMU_MAP_DMA`, which pins its pages).
pub struct VfioDma {
    container: Arc<VfioContainer>,
    next_iova: u64,
    chunks: Arc<Mutex<Vec<Chunk>>>,
}

impl VfioDma {
    /// The exporter of BO memory over these chunks.
    pub fn exporter(&self) -> Result<UdmabufExporter, String> {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/udmabuf")
            .map_err(|e| format!("/dev/udmabuf: {e}"))?;
        Ok(UdmabufExporter {
            dev,
            chunks: self.chunks.clone(),
        })
    }
}

impl DmaMemory for VfioDma {
    fn alloc_zeroed(&mut self, len: u64) -> Result<DmaBuffer, SysError> {
        let len = len
            .max(1)
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(SysError::new(syscall::EINVAL))?;
        let size = usize::try_from(len).map_err(|_| SysError::new(syscall::EINVAL))?;
        let memfd = memfd_create("gpud-dma", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(errno)?;
        ftruncate(&memfd, len).map_err(errno)?;
        // A udmabuf needs the size sealed against shrinking (and the memfd writable).
        fcntl_add_seals(&memfd, SealFlags::SHRINK | SealFlags::GROW).map_err(errno)?;
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: a fresh shared mapping of our own memfd; it aliases no Rust object and is
        // unmapped once, in `free` (or never: the pool lives as long as the driver).
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                size,
                prot,
                MapFlags::SHARED,
                &memfd,
                0,
            )
        }
        .map_err(errno)?;
        let iova = self.next_iova;
        // SAFETY: the range is our own fresh mapping, only ever accessed through atomics and
        // raw copies (`MappedMemory`), and stays mapped until `free` unmaps the IOVA first.
        if let Err(e) = unsafe { self.container.vfio_dma_map(iova, size, ptr.cast()) } {
            // SAFETY: undoing the mapping made above; nothing refers to it.
            let _ = unsafe { munmap(ptr, size) };
            eprintln!("gpud: VFIO_IOMMU_MAP_DMA of {len:#x} bytes at IOVA {iova:#x}: {e}");
            return Err(SysError::new(syscall::ENOMEM));
        }
        self.next_iova = iova + len;
        self.chunks.lock().push(Chunk {
            memfd,
            cpu: ptr as u64,
            iova,
            len,
        });
        Ok(DmaBuffer {
            cpu: CpuVa(ptr as u64),
            phys: PhysAddr(iova),
            len,
        })
    }

    fn free(&mut self, buf: DmaBuffer) -> Result<(), SysError> {
        let size = usize::try_from(buf.len).map_err(|_| SysError::new(syscall::EINVAL))?;
        self.container
            .vfio_dma_unmap(buf.phys.get(), size)
            .map_err(|_| SysError::new(syscall::EINVAL))?;
        self.chunks.lock().retain(|c| c.iova != buf.phys.get());
        // SAFETY: the caller hands back a buffer from `alloc_zeroed` that neither the device
        // (its IOVA is unmapped above) nor any reference still uses (trait contract).
        unsafe { munmap(buf.cpu.0 as *mut _, size) }.map_err(errno)
    }

    fn access(&self, buf: &DmaBuffer) -> Result<Arc<dyn PhysMemory>, SysError> {
        let len = usize::try_from(buf.len).map_err(|_| SysError::new(syscall::EINVAL))?;
        // SAFETY: `buf` is a live chunk mapped by `alloc_zeroed` (trait contract: kept
        // while the access object is used); `MappedMemory` only uses atomics and raw copies.
        Ok(Arc::new(unsafe {
            MappedMemory::new(buf.cpu.0 as *mut u8, len)
        }))
    }
}

/// `struct udmabuf_create_item` (linux/udmabuf.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct UdmabufItem {
    memfd: u32,
    pad: u32,
    offset: u64,
    size: u64,
}

/// `UDMABUF_CREATE_LIST` = `_IOW('u', 0x43, struct udmabuf_create_list)` (8-byte header).
const UDMABUF_CREATE_LIST: u64 = 0x4008_7543;
/// `UDMABUF_FLAGS_CLOEXEC`.
const UDMABUF_FLAGS_CLOEXEC: u32 = 1;
/// The kernel's default `list_limit` of udmabuf items per buffer.
const UDMABUF_MAX_ITEMS: usize = 1024;

/// Hands host clients BO memory as a udmabuf (a dma-buf over exactly the BO's pages of the
/// chunks' memfds): a client can map that BO and nothing else of the pool.
pub struct UdmabufExporter {
    dev: File,
    chunks: Arc<Mutex<Vec<Chunk>>>,
}

impl BoExporter for UdmabufExporter {
    fn export(&self, ranges: &[(CpuVa, u64)]) -> Result<(OwnedFd, u64), DriverError> {
        if ranges.is_empty() || ranges.len() > UDMABUF_MAX_ITEMS {
            return Err(DriverError::NotSupported(
                "BO of too many pieces for a udmabuf",
            ));
        }
        let chunks = self.chunks.lock();
        // The ioctl argument: the header then the items, as u64 words (8-aligned).
        let mut arg: Vec<u64> = Vec::with_capacity(1 + 3 * ranges.len());
        arg.push(u64::from(UDMABUF_FLAGS_CLOEXEC) | ((ranges.len() as u64) << 32));
        for &(cpu, len) in ranges {
            let chunk = chunks
                .iter()
                .find(|c| cpu.0 >= c.cpu && cpu.0.saturating_add(len) <= c.cpu + c.len)
                .ok_or(DriverError::NotSupported("BO memory outside the DMA pool"))?;
            let item = UdmabufItem {
                memfd: chunk.memfd.as_raw_fd() as u32,
                pad: 0,
                offset: cpu.0 - chunk.cpu,
                size: len,
            };
            arg.extend([
                u64::from(item.memfd) | (u64::from(item.pad) << 32),
                item.offset,
                item.size,
            ]);
        }
        // SAFETY: `arg` is a `struct udmabuf_create_list` with `count` items following it,
        // live for the call; the kernel only reads it. The memfds are held by `chunks`.
        let fd = unsafe {
            vmm_sys_util::ioctl::ioctl_with_ptr(&self.dev, UDMABUF_CREATE_LIST as _, arg.as_ptr())
        };
        drop(chunks);
        if fd < 0 {
            eprintln!(
                "gpud: UDMABUF_CREATE_LIST: {}",
                std::io::Error::last_os_error()
            );
            return Err(DriverError::NoMemory);
        }
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        Ok((
            unsafe { <OwnedFd as rustix::fd::FromRawFd>::from_raw_fd(fd) },
            0,
        ))
    }
}

/// Reads the eventfd until it fails, running `on_irq` after every wake-up.
pub fn irq_loop(eventfd: EventFd, mut on_irq: impl FnMut()) -> std::io::Result<()> {
    loop {
        eventfd.read()?;
        on_irq();
    }
}
