//! The driver's hardware abstraction.
//!
//! Owns: small traits per engine (MMU base + TLB invalidation, ring/doorbell, interrupts,
//! fault queue, DMA memory, engine reset, clock), the hardware formats they use (register
//! map [`regs`], PTE layout [`pte`], command encoding [`cmd`]) and their implementations
//! ([`sim`] drives simgpu through registers, DMA memory and interrupts only). Must not: know
//! about VMs, buffer objects or clients; it programs hardware and nothing else.

pub mod clock;
pub mod cmd;
pub mod pte;
pub mod regs;
pub mod sim;

use crate::types::{GpuVa, PhysAddr};
pub use clock::{Clock, Deadline, FakeClock, SystemClock};
pub use pte::MemLocation;
pub use regs::{CtxStatus, IrqCauses, QueueStatus};
use std::time::Duration;
use thiserror::Error;

/// A hardware context id (one page-table root and fault mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HwCtx(pub u32);

/// An engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// The copy engine (engine 0).
    Copy,
    /// The compute engine (engine 1).
    Compute,
}

impl Engine {
    /// The engine's hardware index.
    pub const fn index(self) -> u32 {
        match self {
            Engine::Copy => 0,
            Engine::Compute => 1,
        }
    }
}

/// Errors of the hardware layer, carrying the offending values.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HwError {
    /// The device at the BAR is not a simgpu (or not responding).
    #[error("unexpected device id {found:#010x}")]
    WrongDevice { found: u32 },
    /// A context id beyond the device's contexts.
    #[error("context {ctx} out of range (device has {count})")]
    BadContext { ctx: u32, count: u32 },
    /// A queue index beyond the device's queues.
    #[error("queue {queue} out of range (engine has {count})")]
    BadQueue { queue: u32, count: u32 },
    /// DMA memory could not satisfy an allocation.
    #[error("out of DMA memory: wanted {bytes:#x} bytes")]
    OutOfDma { bytes: u64 },
    /// A DMA access outside allocated memory.
    #[error("DMA access {addr:#x}+{len:#x} out of range")]
    DmaRange { addr: u64, len: u64 },
    /// Freeing memory that was not allocated.
    #[error("DMA free of unallocated region {addr:#x}+{len:#x}")]
    BadFree { addr: u64, len: u64 },
    /// A ring has no room for the submission.
    #[error("ring full: need {need} bytes, {free} free")]
    RingFull { need: u64, free: u64 },
    /// A size parameter was invalid (not a power of two, too small or too large).
    #[error("invalid size {size:#x} for {what}")]
    BadSize { what: &'static str, size: u64 },
    /// A wait gave up.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        what: &'static str,
        waited: Duration,
    },
    /// A page-table entry could not be encoded.
    #[error(transparent)]
    Pte(#[from] pte::PteError),
}

/// Register access to BAR0 (32-bit; 64-bit registers are lo/hi pairs).
pub trait Mmio: Send + Sync {
    /// Reads the register at `offset`.
    fn read32(&self, offset: u32) -> u32;
    /// Writes the register at `offset`.
    fn write32(&self, offset: u32, value: u32);

    /// Writes a 64-bit value as lo (at `offset`) then hi (at `offset + 4`).
    fn write64(&self, offset: u32, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// A region of DMA memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DmaRegion {
    /// Device-visible physical address (page-aligned).
    pub addr: PhysAddr,
    /// Length in bytes (a multiple of the page size).
    pub len: u64,
}

/// System memory the device can reach by DMA. Accesses are atomic per word, because the
/// device may write the same memory at the same time.
pub trait DmaMemory: Send + Sync {
    /// Allocates zeroed, page-aligned memory.
    fn alloc(&self, bytes: u64) -> Result<DmaRegion, HwError>;
    /// Allocates page-aligned memory that may hold a previous user's bytes, for a caller that
    /// covers the whole range with fresh zeroed memory before anyone can read it (a BO
    /// backing's own shared-memory object, `mem::pools`). Defaults to [`DmaMemory::alloc`].
    fn alloc_uncleared(&self, bytes: u64) -> Result<DmaRegion, HwError> {
        self.alloc(bytes)
    }
    /// Frees a region returned by `alloc`. The caller guarantees the device no longer uses it
    /// (its fences signalled and TLB invalidated).
    fn free(&self, region: DmaRegion) -> Result<(), HwError>;
    /// Reads bytes.
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), HwError>;
    /// Writes bytes.
    fn write(&self, addr: PhysAddr, data: &[u8]) -> Result<(), HwError>;
    /// Reads an aligned u32 atomically.
    fn read_u32(&self, addr: PhysAddr) -> Result<u32, HwError>;
    /// Writes an aligned u32 atomically.
    fn write_u32(&self, addr: PhysAddr, value: u32) -> Result<(), HwError>;
    /// Reads an aligned u64 atomically.
    fn read_u64(&self, addr: PhysAddr) -> Result<u64, HwError>;
    /// Writes an aligned u64 atomically.
    fn write_u64(&self, addr: PhysAddr, value: u64) -> Result<(), HwError>;
}

/// CPU access to VRAM through the BAR2 aperture. Offsets are VRAM physical addresses.
/// Accesses are atomic per word, because the device may write the same memory at once.
pub trait VramAperture: Send + Sync {
    /// VRAM size in bytes.
    fn size(&self) -> u64;
    /// Reads bytes at VRAM offset `addr`.
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), HwError>;
    /// Writes bytes at VRAM offset `addr`.
    fn write(&self, addr: PhysAddr, data: &[u8]) -> Result<(), HwError>;
    /// Reads an aligned u64 atomically.
    fn read_u64(&self, addr: PhysAddr) -> Result<u64, HwError>;
    /// Writes an aligned u64 atomically.
    fn write_u64(&self, addr: PhysAddr, value: u64) -> Result<(), HwError>;
}

/// A page-table root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtRoot {
    /// Address of the level-3 table.
    pub addr: PhysAddr,
    /// Its memory.
    pub location: MemLocation,
}

/// How faults of a context are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Faults stall the queue and go to the fault queue for a retry/abort reply.
    Recoverable,
    /// Faults put the context in error.
    Fatal,
}

/// A queued TLB invalidation; wait for it with [`Mmu::wait_invalidation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an invalidation is only effective once waited for"]
pub struct TlbInvalidation {
    /// Device seqno of the request.
    pub seqno: u32,
}

/// Context setup and address translation control.
pub trait Mmu: Send + Sync {
    /// Programs context `ctx` with a page-table root and fault mode, and enables it (with
    /// address-space id 0).
    fn bind_context(&self, ctx: HwCtx, root: PtRoot, mode: FaultMode) -> Result<(), HwError> {
        self.bind_context_as(ctx, root, mode, 0)
    }
    /// [`Mmu::bind_context`] with address-space id `asid`, which the device copies into
    /// every fault record of the context ([`Fault::asid`]): a record raised before the
    /// context was given to another address space is told apart from the new owner's.
    fn bind_context_as(
        &self,
        ctx: HwCtx,
        root: PtRoot,
        mode: FaultMode,
        asid: u16,
    ) -> Result<(), HwError>;
    /// Disables context `ctx`.
    fn unbind_context(&self, ctx: HwCtx) -> Result<(), HwError>;
    /// Reads the context status.
    fn context_status(&self, ctx: HwCtx) -> Result<CtxStatus, HwError>;
    /// Clears the context's error so its queues may run again.
    fn clear_context_error(&self, ctx: HwCtx) -> Result<(), HwError>;
    /// Queues an invalidation of `range` (or all) of `ctx`'s translations.
    fn invalidate(
        &self,
        ctx: HwCtx,
        range: Option<(GpuVa, u64)>,
    ) -> Result<TlbInvalidation, HwError>;
    /// Whether the invalidation completed.
    fn invalidation_done(&self, inv: TlbInvalidation) -> bool;
    /// Waits until the invalidation completed.
    fn wait_invalidation(&self, inv: TlbInvalidation, timeout: Duration) -> Result<(), HwError>;
}

/// One hardware queue: ring writes, doorbell, head.
pub trait HwQueue: Send {
    /// Appends `dwords` to the ring and rings the doorbell. All or nothing.
    fn submit(&mut self, dwords: &[u32]) -> Result<(), HwError>;
    /// The device's read position (byte offset).
    fn head(&self) -> u32;
    /// The driver's write position (byte offset).
    fn tail(&self) -> u32;
    /// Queue status.
    fn status(&self) -> QueueStatus;
    /// Data of the last USER_INTERRUPT this queue executed.
    fn user_data(&self) -> u32;
}

/// Interrupt delivery as the driver sees it.
pub trait Interrupts: Send + Sync {
    /// Enables delivery of `causes` (others stay latched in the status only).
    fn enable(&self, causes: IrqCauses);
    /// A counter of delivered interrupts; pass it to [`Interrupts::wait`].
    fn epoch(&self) -> u64;
    /// Waits until an interrupt of `causes` is delivered after `since`; returns the causes
    /// delivered. Callers check their condition after taking the epoch, then wait, so a
    /// wake-up between the check and the wait is never lost.
    fn wait(&self, since: u64, causes: IrqCauses, timeout: Duration) -> Result<IrqCauses, HwError>;
    /// Reads the latched status.
    fn status(&self) -> IrqCauses;
    /// Acknowledges (clears) latched causes.
    fn ack(&self, causes: IrqCauses);
    /// Calls `watcher` with the fired causes right where an interrupt of `causes` is
    /// delivered (the device's interrupt sink, or the platform's IRQ hook), without a hand-off
    /// to a dispatch thread. A watcher only wakes someone; it must not block. Returns false
    /// (the default) where the platform cannot: callers then wait for the causes instead.
    fn watch(&self, causes: IrqCauses, watcher: IrqWatcher) -> bool {
        let _ = (causes, watcher);
        false
    }
}

/// A callback run where interrupts are delivered (see [`Interrupts::watch`]).
pub type IrqWatcher = std::sync::Arc<dyn Fn(IrqCauses) + Send + Sync>;

/// A fault reported by the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Faulting address.
    pub va: GpuVa,
    /// Context.
    pub ctx: HwCtx,
    /// Raw access type (0 read, 1 write, 2 atomic, 3 fetch).
    pub access: u8,
    /// Raw reason (0 not present, 1 read-only, 2 bad entry, 3 DMA).
    pub reason: u8,
    /// Engine index.
    pub engine: u8,
    /// Queue within the engine.
    pub queue: u8,
    /// The context was already put in error; no reply is expected.
    pub fatal: bool,
    /// The address-space id the context had when the fault was raised
    /// ([`Mmu::bind_context_as`]; 0 for a context bound without one).
    pub asid: u16,
}

/// The driver's answer to a recoverable fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultReply {
    /// The PTEs were fixed: re-execute the faulting command.
    Retry,
    /// Kill the context.
    Abort,
}

/// The fault queue.
pub trait FaultQueue: Send {
    /// The next unread fault record.
    fn pop(&mut self) -> Option<Fault>;
    /// Replies to the faults of `ctx`.
    fn reply(&self, ctx: HwCtx, reply: FaultReply);
}

/// Engine reset.
pub trait EngineControl: Send + Sync {
    /// Resets `engine`: stops its queues, drops in-flight work. Returns the context that was
    /// running the hung command, if any.
    fn reset(&self, engine: Engine, timeout: Duration) -> Result<Option<HwCtx>, HwError>;
}

/// Waits until `cond` holds, sleeping on `causes` interrupts in between.
pub fn wait_until(
    irq: &dyn Interrupts,
    clock: &dyn Clock,
    causes: IrqCauses,
    timeout: Duration,
    what: &'static str,
    mut cond: impl FnMut() -> bool,
) -> Result<(), HwError> {
    let start = clock.now();
    let deadline = Deadline::after(clock, timeout);
    loop {
        let epoch = irq.epoch();
        if cond() {
            return Ok(());
        }
        let Some(slice) = deadline.slice(clock) else {
            return Err(HwError::Timeout {
                what,
                waited: clock.now().saturating_sub(start),
            });
        };
        // A slice timing out is not an error: the loop re-checks the condition and deadline.
        let _ = irq.wait(epoch, causes, slice);
    }
}
