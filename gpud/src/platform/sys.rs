//! The seams between gpud and the Redox kernel: one small trait per kind of capability.
//!
//! Owns: the traits that the startup sequence and the event loop are generic over (pcid
//! channel I/O, BAR mappings, IRQ handles, DMA memory, the event queue, the scheme socket and
//! the process-level calls: environment, `setrens`, `INIT_NOTIFY`), and [`SysError`].
//!
//! Must not: make a syscall. The real implementations live in `platform::redox` (behind the
//! `redox` feature); the host tests implement these traits with recording fakes, so every
//! decision around a syscall (ordering, error handling, parking) is tested without Redox.

use redox_scheme::scheme::SchemeSync;
use redox_scheme::{Request, Response};
use thiserror::Error;

use std::sync::Arc;

use simgpu::PhysMemory;

use crate::types::{CpuVa, PhysAddr};

/// A failed platform call, as an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("platform call failed: errno {errno}")]
pub struct SysError {
    /// The errno value (Redox numbering, which matches Linux for the common ones).
    pub errno: i32,
}

impl SysError {
    /// An error with `errno`.
    pub const fn new(errno: i32) -> Self {
        Self { errno }
    }
    /// `EAGAIN`/`EWOULDBLOCK` (one value on Redox).
    pub fn is_would_block(self) -> bool {
        self.errno == syscall::EAGAIN || self.errno == syscall::EWOULDBLOCK
    }
    /// `EINTR`.
    pub fn is_interrupted(self) -> bool {
        self.errno == syscall::EINTR
    }
}

impl From<syscall::Error> for SysError {
    fn from(e: syscall::Error) -> Self {
        Self::new(e.errno)
    }
}

/// Caching of a BAR mapping, encoded into the pcid `mmap` offset (`memory_type << 59`).
/// Values follow pcid's `MemoryType` (re-verify when pcid changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MemoryType {
    /// Cached.
    WriteBack = 0,
    /// Registers: every access reaches the device, in order.
    Uncacheable = 1,
    /// Apertures: writes may be combined.
    WriteCombining = 2,
    /// Device memory (non-x86 platforms).
    DeviceMemory = 3,
}

/// The pcid channel: one `write` per request, replies read as a frame.
pub trait ChannelIo {
    /// Writes a whole request.
    fn write(&mut self, buf: &[u8]) -> Result<usize, SysError>;
    /// Reads up to `buf.len()` bytes of the reply stream.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SysError>;
}

/// A BAR mapped into gpud's address space. Accesses are bounds-checked 32-bit MMIO (64-bit
/// where the platform can do one access). `Send`: the driver's threads share it.
pub trait BarMapping: Send {
    /// Where the mapping starts in gpud's address space.
    fn base(&self) -> CpuVa;
    /// Mapped length in bytes.
    fn len(&self) -> u64;
    /// Whether the mapping is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads the dword at `offset`; `None` when outside the mapping or misaligned.
    fn read32(&self, offset: u64) -> Option<u32>;
    /// Writes the dword at `offset`; `false` when outside the mapping or misaligned.
    fn write32(&mut self, offset: u64, value: u32) -> bool;
    /// Reads the qword at `offset` (8-aligned); `None` when outside or misaligned. The
    /// default is two dword reads (low first), which is not one access: mappings that can
    /// do a single 64-bit access override it.
    fn read64(&self, offset: u64) -> Option<u64> {
        if offset % 8 != 0 {
            return None;
        }
        let lo = self.read32(offset)?;
        let hi = self.read32(offset.checked_add(4)?)?;
        Some(u64::from(lo) | (u64::from(hi) << 32))
    }
    /// Writes the qword at `offset` (8-aligned); `false` when outside or misaligned. The
    /// default is two dword writes (low first) after checking both are in bounds.
    fn write64(&mut self, offset: u64, value: u64) -> bool {
        let Some(hi_at) = offset.checked_add(4) else {
            return false;
        };
        if offset % 8 != 0 || hi_at.checked_add(4).is_none_or(|end| end > self.len()) {
            return false;
        }
        self.write32(offset, value as u32) && self.write32(hi_at, (value >> 32) as u32)
    }
}

/// An interrupt handle from the irq scheme (`/scheme/irq/...`).
pub trait IrqHandle {
    /// The fd to subscribe in the event queue.
    fn raw_fd(&self) -> usize;
    /// The interrupt counter if it moved since the last read (`read` of 8 bytes; 0 bytes
    /// means nothing new).
    fn read_count(&mut self) -> Result<Option<u64>, SysError>;
    /// Acknowledges the interrupt (EOI/unmask) by writing the counter back.
    fn ack(&mut self, count: u64) -> Result<(), SysError>;
}

/// A physically contiguous, zeroed DMA buffer mapped into gpud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaBuffer {
    /// Where gpud sees it.
    pub cpu: CpuVa,
    /// What the device puts on the bus (no IOMMU on Redox: the physical address).
    pub phys: PhysAddr,
    /// Length in bytes (a multiple of the page size).
    pub len: u64,
}

/// DMA-able memory from the memory scheme (`zeroed@wb?phys_contiguous` + `translation`).
pub trait DmaMemory {
    /// Allocates `len` bytes (rounded up to pages) of zeroed, physically contiguous memory.
    fn alloc_zeroed(&mut self, len: u64) -> Result<DmaBuffer, SysError>;
    /// Returns a buffer. The caller guarantees the device no longer accesses it.
    fn free(&mut self, buf: DmaBuffer) -> Result<(), SysError>;
    /// CPU access to the live buffer `buf` (addresses relative to its start, word-atomic).
    /// The caller keeps the buffer allocated while the access object is in use.
    fn access(&self, buf: &DmaBuffer) -> Result<Arc<dyn PhysMemory>, SysError>;
}

/// An MSI/MSI-X message that raises one CPU vector (x86: address `0xFEE0_0000 | apic << 12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address.
    pub addr: u64,
    /// Message data.
    pub data: u32,
}

/// Why the event queue woke gpud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeSource {
    /// The scheme socket has requests.
    Scheme,
    /// The device interrupt fired.
    Irq,
    /// The timer armed with [`EventWait::arm_timer`] expired (a parked wait's deadline).
    Timer,
    /// The wake source: a fence a parked request waits for signalled (written by
    /// [`EventWait::waker`]'s hook on the signalling thread).
    Wake,
}

/// The event queue over {scheme socket, IRQ, timer, wake source}.
pub trait EventWait {
    /// Blocks until one source is ready (a wake-source event is drained before returning).
    fn wait(&mut self) -> Result<WakeSource, SysError>;
    /// A hook any thread may call to make [`EventWait::wait`] return [`WakeSource::Wake`]
    /// (Redox: a byte written to a pipe the queue watches). `None`: the queue has no wake
    /// source, and parked requests are only retried on other events and the timer.
    fn waker(&self) -> Option<gpu_scheme::wake::WakeHook> {
        None
    }
    /// Arms the timer to fire `after` from now (replacing any earlier arming), or disarms it.
    /// Parked requests with a timeout need it: without it a wait whose fence never signals
    /// would only learn of its deadline at the next unrelated event.
    fn arm_timer(&mut self, after: Option<std::time::Duration>) -> Result<(), SysError>;
}

/// The scheme socket (nonblocking): requests in, responses and fevents out.
pub trait SchemeSocket {
    /// The next request; `Ok(None)` when the scheme was unmounted; `Err` with
    /// [`SysError::is_would_block`] when no request is pending.
    fn next_request(&mut self) -> Result<Option<Request>, SysError>;
    /// Writes one response (or an fevent posting).
    fn write_response(&mut self, response: Response) -> Result<(), SysError>;
    /// The fd to subscribe in the event queue.
    fn raw_fd(&self) -> usize;
}

/// Process-level capabilities gpud needs once, at startup.
pub trait Platform {
    /// The pcid channel.
    type Channel: ChannelIo;
    /// A BAR mapping.
    type Bar: BarMapping;
    /// An interrupt handle.
    type Irq: IrqHandle;
    /// The DMA allocator.
    type Dma: DmaMemory;
    /// The scheme socket.
    type Socket: SchemeSocket;
    /// The event queue.
    type Events: EventWait;

    /// An environment variable of the process.
    fn env_var(&self, name: &str) -> Option<String>;
    /// Adopts the inherited pcid channel fd.
    fn open_channel(&mut self, fd: usize) -> Result<Self::Channel, SysError>;
    /// Maps BAR `bir` (of `size` bytes) through the channel.
    fn map_bar(
        &mut self,
        channel: &Self::Channel,
        bir: u8,
        size: u64,
        memory_type: MemoryType,
    ) -> Result<Self::Bar, SysError>;
    /// Allocates one CPU interrupt vector for MSI/MSI-X and returns its handle and message.
    fn alloc_msi_vector(&mut self) -> Result<(Self::Irq, MsiMessage), SysError>;
    /// Opens the legacy INTx line `line`.
    fn open_legacy_irq(&mut self, line: u8) -> Result<Self::Irq, SysError>;
    /// Opens the memory scheme for DMA allocations (usable after `setrens`).
    fn open_dma(&mut self) -> Result<Self::Dma, SysError>;
    /// Creates the nonblocking scheme socket.
    fn create_socket(&mut self) -> Result<Self::Socket, SysError>;
    /// Creates the event queue and subscribes the socket and the IRQ for reading.
    fn create_event_queue(
        &mut self,
        socket: &Self::Socket,
        irq: &Self::Irq,
    ) -> Result<Self::Events, SysError>;
    /// Registers the scheme under `name` (`register_sync_scheme`).
    fn register_scheme<S: SchemeSync>(
        &mut self,
        socket: &Self::Socket,
        name: &str,
        scheme: &mut S,
    ) -> Result<(), SysError>;
    /// Enters the null namespace (`setrens(0, 0)`): no more path opens.
    fn enter_null_namespace(&mut self) -> Result<(), SysError>;
    /// Writes the one readiness byte to the `INIT_NOTIFY` pipe `fd` and closes it.
    fn notify_ready(&mut self, fd: usize) -> Result<(), SysError>;
}
