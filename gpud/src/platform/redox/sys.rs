//! The real Redox implementations of the `platform::sys` traits: every syscall gpud makes.
//!
//! Owns: the pcid channel fd, BAR mappings (`mmap` of the channel with
//! `offset = bir << 61 | memory_type << 59`), irq-scheme handles (`/scheme/irq/cpu-XX/<n>`
//! for MSI/MSI-X vectors, `/scheme/irq/<line>` for INTx), DMA memory from the memory scheme
//! (`zeroed@wb?phys_contiguous` mapped `MAP_PRIVATE` + the `translation` handle), the event
//! queue, the nonblocking scheme socket, `register_sync_scheme`, `setrens` and `INIT_NOTIFY`.
//!
//! Must not: hold policy. Ordering, fallbacks and error handling live in the generic modules
//! and are tested on the host; this file type-checks on Linux (`cargo check --features
//! redox`) but only links and runs on Redox. All `unsafe` of the platform layer is here.

use libredox::call::{self, MmapArgs};
use libredox::flag::{
    MAP_PRIVATE, MAP_SHARED, O_CLOEXEC, O_CREAT, O_NONBLOCK, O_RDWR, PROT_READ, PROT_WRITE,
};
use libredox::Fd;
use redox_scheme::scheme::{register_sync_scheme, SchemeSync};
use redox_scheme::{Request, Response, SignalBehavior, Socket};
use simgpu::PhysMemory;
use std::sync::Arc;
use std::time::Duration;
use syscall::data::TimeSpec;
use syscall::CallFlags;

use crate::platform::mapped::MappedMemory;
use crate::platform::sys::{
    BarMapping, ChannelIo, DmaBuffer, DmaMemory, EventWait, IrqHandle, MemoryType, MsiMessage,
    Platform, SchemeSocket, SysError, WakeSource,
};
use crate::types::{CpuVa, PhysAddr, PAGE_SIZE};

fn lerr(e: libredox::error::Error) -> SysError {
    SysError::new(e.errno())
}

fn page_round(len: u64) -> Result<usize, SysError> {
    let rounded = len
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(SysError::new(syscall::EINVAL))?;
    usize::try_from(rounded).map_err(|_| SysError::new(syscall::EINVAL))
}

/// The pcid channel inherited from pcid-spawner.
pub struct RedoxChannel {
    fd: Fd,
}

impl ChannelIo for RedoxChannel {
    fn write(&mut self, buf: &[u8]) -> Result<usize, SysError> {
        self.fd.write(buf).map_err(lerr)
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SysError> {
        self.fd.read(buf).map_err(lerr)
    }
}

/// A BAR (or part of one) mapped into gpud.
pub struct RedoxBar {
    // INVARIANT: `ptr..ptr + len` is a live mapping owned by this value until `drop`.
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is process-wide memory, not tied to the creating thread; every access
// is a single volatile load or store, and the driver serializes register sequences itself.
unsafe impl Send for RedoxBar {}

impl RedoxBar {
    /// An aligned pointer to `size` bytes at `offset` inside the mapping.
    fn word(&self, offset: u64, size: usize) -> Option<*mut u8> {
        let off = usize::try_from(offset).ok()?;
        let in_bounds = off.checked_add(size).is_some_and(|end| end <= self.len);
        // SAFETY: `off + size <= len`, so the pointer stays inside the mapping (INVARIANT).
        (in_bounds && off % size == 0).then(|| unsafe { self.ptr.add(off) })
    }
    fn dword(&self, offset: u64) -> Option<*mut u32> {
        self.word(offset, 4).map(|p| p.cast::<u32>())
    }
}

impl BarMapping for RedoxBar {
    fn base(&self) -> CpuVa {
        CpuVa(self.ptr as u64)
    }
    fn len(&self) -> u64 {
        self.len as u64
    }
    fn read32(&self, offset: u64) -> Option<u32> {
        let p = self.dword(offset)?;
        // SAFETY: `p` is an aligned dword inside the live mapping; MMIO must be volatile.
        Some(unsafe { p.read_volatile() })
    }
    fn write32(&mut self, offset: u64, value: u32) -> bool {
        match self.dword(offset) {
            // SAFETY: `p` is an aligned dword inside the live mapping; MMIO must be volatile.
            Some(p) => unsafe { p.write_volatile(value) },
            None => return false,
        }
        true
    }
    fn read64(&self, offset: u64) -> Option<u64> {
        let p = self.word(offset, 8)?.cast::<u64>();
        // SAFETY: `p` is an aligned qword inside the live mapping; one volatile 64-bit load
        // (a single bus access on x86_64 and aarch64).
        Some(unsafe { p.read_volatile() })
    }
    fn write64(&mut self, offset: u64, value: u64) -> bool {
        match self.word(offset, 8) {
            // SAFETY: `p` is an aligned qword inside the live mapping; one volatile store.
            Some(p) => unsafe { p.cast::<u64>().write_volatile(value) },
            None => return false,
        }
        true
    }
}

impl Drop for RedoxBar {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map_bar` with this length and nothing else
        // refers to it once its owner is dropped.
        let _ = unsafe { call::munmap(self.ptr.cast(), self.len) };
    }
}

/// An irq-scheme handle.
pub struct RedoxIrq {
    fd: Fd,
}

impl IrqHandle for RedoxIrq {
    fn raw_fd(&self) -> usize {
        self.fd.raw()
    }
    fn read_count(&mut self) -> Result<Option<u64>, SysError> {
        let mut buf = [0u8; 8];
        match self.fd.read(&mut buf).map_err(lerr)? {
            0 => Ok(None),
            8 => Ok(Some(u64::from_ne_bytes(buf))),
            _ => Err(SysError::new(syscall::EIO)),
        }
    }
    fn ack(&mut self, count: u64) -> Result<(), SysError> {
        match self.fd.write(&count.to_ne_bytes()).map_err(lerr)? {
            8 => Ok(()),
            _ => Err(SysError::new(syscall::EIO)),
        }
    }
}

/// The memory scheme handles for DMA (opened before `setrens`; `openat` on them still works
/// in the null namespace).
pub struct RedoxDma {
    root: Fd,
    translation: Fd,
}

impl DmaMemory for RedoxDma {
    fn alloc_zeroed(&mut self, len: u64) -> Result<DmaBuffer, SysError> {
        let length = page_round(len.max(1))?;
        // `MAP_SHARED` with `phys_contiguous` is EOPNOTSUPP: the memory scheme wants private.
        let fd = self
            .root
            .openat("zeroed@wb?phys_contiguous", O_RDWR | O_CLOEXEC, 0)
            .map_err(lerr)?;
        let args = MmapArgs {
            addr: core::ptr::null_mut(),
            length,
            prot: PROT_READ | PROT_WRITE,
            flags: MAP_PRIVATE,
            fd: fd.raw(),
            offset: 0,
        };
        // SAFETY: a fresh anonymous-like mapping at a kernel-chosen address aliases nothing.
        let ptr = unsafe { call::mmap(args) }.map_err(lerr)?;
        let mut virt = (ptr as usize).to_ne_bytes();
        if let Err(e) = call::call_ro(self.translation.raw(), &mut virt, CallFlags::empty(), &[]) {
            // SAFETY: undoing the mapping made just above; nothing refers to it yet.
            let _ = unsafe { call::munmap(ptr, length) };
            return Err(lerr(e));
        }
        Ok(DmaBuffer {
            cpu: CpuVa(ptr as u64),
            phys: PhysAddr(u64::from_ne_bytes(virt)),
            len: length as u64,
        })
    }
    fn free(&mut self, buf: DmaBuffer) -> Result<(), SysError> {
        let len = usize::try_from(buf.len).map_err(|_| SysError::new(syscall::EINVAL))?;
        // SAFETY: the caller hands back a buffer from `alloc_zeroed` that neither the device
        // nor any reference still uses (trait contract).
        unsafe { call::munmap(buf.cpu.0 as *mut (), len) }.map_err(lerr)
    }
    fn access(&self, buf: &DmaBuffer) -> Result<Arc<dyn PhysMemory>, SysError> {
        let len = usize::try_from(buf.len).map_err(|_| SysError::new(syscall::EINVAL))?;
        // SAFETY: `buf` is a live buffer from `alloc_zeroed` (trait contract: kept while the
        // access object is used); `MappedMemory` only uses atomics and raw copies.
        Ok(Arc::new(unsafe {
            MappedMemory::new(buf.cpu.0 as *mut u8, len)
        }))
    }
}

/// The nonblocking scheme socket.
pub struct RedoxSocket {
    socket: Socket,
}

impl SchemeSocket for RedoxSocket {
    fn next_request(&mut self) -> Result<Option<Request>, SysError> {
        Ok(self.socket.next_request(SignalBehavior::Restart)?)
    }
    fn write_response(&mut self, response: Response) -> Result<(), SysError> {
        match self
            .socket
            .write_response(response, SignalBehavior::Restart)?
        {
            true => Ok(()),
            false => Err(SysError::new(syscall::EPIPE)),
        }
    }
    fn raw_fd(&self) -> usize {
        self.socket.inner().raw()
    }
}

/// `user_data` values in the event queue.
const EV_SCHEME: usize = 0;
const EV_IRQ: usize = 1;
const EV_TIMER: usize = 2;
const EV_WAKE: usize = 3;

/// The event queue over {socket, IRQ, monotonic timer, wake pipe}.
pub struct RedoxEvents {
    queue: event::RawEventQueue,
    /// `/scheme/time/<CLOCK_MONOTONIC>`: reading gives the time, writing a `TimeSpec` arms an
    /// event at that time.
    timer: Fd,
    /// The wake source's read end (nonblocking): fence callbacks write a byte to the write
    /// end when a parked request may be answerable.
    wake_rx: Fd,
    /// The write end, shared with the wake hook.
    wake_tx: Arc<Fd>,
}

impl EventWait for RedoxEvents {
    fn wait(&mut self) -> Result<WakeSource, SysError> {
        let ev = self
            .queue
            .next_event()
            .map_err(|e| SysError::new(e.errno()))?;
        Ok(match ev.user_data {
            EV_IRQ => WakeSource::Irq,
            EV_TIMER => WakeSource::Timer,
            EV_WAKE => {
                // Drain every byte written so far (the read end is nonblocking): one wake-up
                // covers them all, the server collects which calls were woken.
                let mut buf = [0u8; 64];
                while matches!(self.wake_rx.read(&mut buf), Ok(n) if n > 0) {}
                WakeSource::Wake
            }
            _ => WakeSource::Scheme,
        })
    }

    fn waker(&self) -> Option<gpu_scheme::wake::WakeHook> {
        let tx = self.wake_tx.clone();
        Some(Arc::new(move || {
            // A full pipe already holds a pending wake-up; nothing is lost by dropping this.
            let _ = tx.write(&[1]);
        }))
    }

    fn arm_timer(&mut self, after: Option<Duration>) -> Result<(), SysError> {
        // The time scheme cannot disarm; an earlier arming that still fires is a spurious
        // wake, which only retries the parked requests.
        let Some(after) = after else { return Ok(()) };
        let mut now = TimeSpec::default();
        self.timer.read(&mut now).map_err(lerr)?;
        let nanos = i64::from(now.tv_nsec) + i64::from(after.subsec_nanos());
        let secs = i64::try_from(after.as_secs()).unwrap_or(i64::MAX / 2);
        let deadline = TimeSpec {
            tv_sec: now
                .tv_sec
                .saturating_add(secs)
                .saturating_add(nanos / 1_000_000_000),
            tv_nsec: (nanos % 1_000_000_000) as i32,
        };
        self.timer.write(&deadline).map(drop).map_err(lerr)
    }
}

/// The Redox process: environment, paths, and namespace.
#[derive(Debug, Default)]
pub struct RedoxPlatform;

/// The x86 local-APIC message for `vector` on CPU `apic_id` (fixed delivery, edge).
fn x86_msi_message(apic_id: u8, vector: u8) -> MsiMessage {
    MsiMessage {
        addr: 0xfee0_0000 | (u64::from(apic_id) << 12),
        data: u32::from(vector),
    }
}

fn read_bsp_apic_id() -> Result<u8, SysError> {
    let fd = Fd::open("/scheme/irq/bsp", O_CLOEXEC, 0).map_err(lerr)?;
    let mut buf = [0u8; 8];
    let n = fd.read(&mut buf).map_err(lerr)?;
    let id = match n {
        8 => u64::from_le_bytes(buf),
        4 => u64::from(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])),
        _ => return Err(SysError::new(syscall::EIO)),
    };
    u8::try_from(id).map_err(|_| SysError::new(syscall::EINVAL))
}

impl Platform for RedoxPlatform {
    type Channel = RedoxChannel;
    type Bar = RedoxBar;
    type Irq = RedoxIrq;
    type Dma = RedoxDma;
    type Socket = RedoxSocket;
    type Events = RedoxEvents;

    fn env_var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn open_channel(&mut self, fd: usize) -> Result<RedoxChannel, SysError> {
        Ok(RedoxChannel { fd: Fd::new(fd) })
    }
    fn map_bar(
        &mut self,
        channel: &RedoxChannel,
        bir: u8,
        size: u64,
        memory_type: MemoryType,
    ) -> Result<RedoxBar, SysError> {
        let len = page_round(size)?;
        let args = MmapArgs {
            addr: core::ptr::null_mut(),
            length: len,
            prot: PROT_READ | PROT_WRITE,
            flags: MAP_SHARED,
            fd: channel.fd.raw(),
            offset: (u64::from(bir) << 61) | ((memory_type as u64) << 59),
        };
        // SAFETY: pcid's mmap_prep hands over the BAR's pages at a kernel-chosen address;
        // the mapping aliases no Rust object and is owned by the returned `RedoxBar`.
        let ptr = unsafe { call::mmap(args) }.map_err(lerr)?;
        Ok(RedoxBar {
            ptr: ptr.cast(),
            len,
        })
    }
    fn alloc_msi_vector(&mut self) -> Result<(RedoxIrq, MsiMessage), SysError> {
        let apic = read_bsp_apic_id()?;
        // Vectors 32..=255 are `cpu-XX/0`..`cpu-XX/223`; creating one claims it. Taken ones
        // fail to create, so the first that succeeds is ours.
        let mut last = SysError::new(syscall::ENOENT);
        for n in 0u8..=223 {
            let path = format!("/scheme/irq/cpu-{apic:02x}/{n}");
            match Fd::open(&path, O_RDWR | O_CREAT | O_CLOEXEC, 0) {
                Ok(fd) => return Ok((RedoxIrq { fd }, x86_msi_message(apic, n + 32))),
                Err(e) => last = lerr(e),
            }
        }
        Err(last)
    }
    fn open_legacy_irq(&mut self, line: u8) -> Result<RedoxIrq, SysError> {
        let fd = Fd::open(&format!("/scheme/irq/{line}"), O_RDWR | O_CLOEXEC, 0).map_err(lerr)?;
        Ok(RedoxIrq { fd })
    }
    fn open_dma(&mut self) -> Result<RedoxDma, SysError> {
        let root = Fd::open("/scheme/memory/scheme-root", O_CLOEXEC, 0).map_err(lerr)?;
        let translation = root
            .openat("translation", O_RDWR | O_CLOEXEC, 0)
            .map_err(lerr)?;
        Ok(RedoxDma { root, translation })
    }
    fn create_socket(&mut self) -> Result<RedoxSocket, SysError> {
        Ok(RedoxSocket {
            socket: Socket::nonblock()?,
        })
    }
    fn create_event_queue(
        &mut self,
        socket: &RedoxSocket,
        irq: &RedoxIrq,
    ) -> Result<RedoxEvents, SysError> {
        let err = |e: libredox_event_error::Error| SysError::new(e.errno());
        let queue = event::RawEventQueue::new().map_err(err)?;
        queue
            .subscribe(socket.raw_fd(), EV_SCHEME, event::EventFlags::READ)
            .map_err(err)?;
        queue
            .subscribe(irq.raw_fd(), EV_IRQ, event::EventFlags::READ)
            .map_err(err)?;
        // Opened before `setrens`, like every other capability.
        let path = format!("/scheme/time/{}", syscall::flag::CLOCK_MONOTONIC);
        let timer = Fd::open(&path, O_RDWR | O_CLOEXEC, 0).map_err(lerr)?;
        queue
            .subscribe(timer.raw(), EV_TIMER, event::EventFlags::READ)
            .map_err(err)?;
        // The wake pipe, made as relibc's `pipe2` does: the pipe scheme's read end, and
        // its write end by `dup(read, "write")`. Nonblocking both ways: the hook runs on
        // fence-signalling threads and must never wait.
        let wake_rx = Fd::open("/scheme/pipe", O_RDWR | O_CLOEXEC | O_NONBLOCK, 0).map_err(lerr)?;
        let wake_tx = Fd::new(wake_rx.dup(b"write").map_err(lerr)?);
        queue
            .subscribe(wake_rx.raw(), EV_WAKE, event::EventFlags::READ)
            .map_err(err)?;
        Ok(RedoxEvents {
            queue,
            timer,
            wake_rx,
            wake_tx: Arc::new(wake_tx),
        })
    }
    fn register_scheme<S: SchemeSync>(
        &mut self,
        socket: &RedoxSocket,
        name: &str,
        scheme: &mut S,
    ) -> Result<(), SysError> {
        Ok(register_sync_scheme(&socket.socket, name, scheme)?)
    }
    fn enter_null_namespace(&mut self) -> Result<(), SysError> {
        call::setrens(0, 0).map(drop).map_err(lerr)
    }
    fn notify_ready(&mut self, fd: usize) -> Result<(), SysError> {
        // Taking ownership closes the pipe after the byte, so the spawner sees it only once.
        let pipe = Fd::new(fd);
        pipe.write(&[0]).map(drop).map_err(lerr)
    }
}

/// redox_event uses libredox 0.2, whose error type differs from the 0.1 one above.
mod libredox_event_error {
    pub use event::libredox::error::Error;
}
