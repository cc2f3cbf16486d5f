//! Adapters from the capabilities pcid hands over (the [`sys`](super::sys) traits) to the
//! hardware layer's seams: BAR0 → [`Mmio`], BAR2 → VRAM [`PhysMemory`], one contiguous DMA
//! chunks → the DMA page pool, and the one CPU interrupt → the [`IrqLatch`] the dispatcher
//! thread waits on.
//!
//! Owns: [`BarMmio`] (bounds-failed accesses are counted and logged, never a panic; a
//! failed read returns all-ones like an aborted PCI read), [`BarMemory`], [`alloc_dma_pool`]
//! (halving the request until the memory scheme can give a contiguous chunk),
//! [`program_msix`] (every used MSI-X entry raises the platform's one message) and
//! [`StatusIrq`] (the event loop's IRQ hook: reads INT_STATUS, marks those causes).
//! Must not: make syscalls or hold policy about the device beyond its register interface.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use simgpu::{MemError, PhysMemory};

use super::event_loop::IrqOutcome;
use super::sys::{BarMapping, DmaBuffer, DmaMemory, MsiMessage, SysError};
use crate::hw::regs::{self, IrqCauses};
use crate::hw::sim::dma::HeapDma;
use crate::hw::sim::irq::{IrqLatch, VECTORS_USED};
use crate::hw::Mmio;

/// Bounds faults logged per mapping; later ones are only counted.
const LOGGED_FAULTS: u64 = 8;

/// BAR0 as the hardware layer's register interface.
pub struct BarMmio<B> {
    bar: Mutex<B>,
    faults: AtomicU64,
}

impl<B: BarMapping> BarMmio<B> {
    /// Wraps a mapped register BAR.
    pub fn new(bar: B) -> Self {
        Self {
            bar: Mutex::new(bar),
            faults: AtomicU64::new(0),
        }
    }

    /// Accesses the mapping refused (outside it or misaligned).
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// Mapped length in bytes.
    pub fn len(&self) -> u64 {
        self.bar.lock().len()
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fault(&self, what: &str, offset: u32) {
        let n = self.faults.fetch_add(1, Ordering::Relaxed);
        if n < LOGGED_FAULTS {
            let len = self.len();
            tracing::error!("BAR0 {what} at {offset:#x} refused (mapping of {len:#x} bytes)");
        }
    }
}

impl<B: BarMapping> Mmio for BarMmio<B> {
    fn read32(&self, offset: u32) -> u32 {
        let value = self.bar.lock().read32(u64::from(offset));
        value.unwrap_or_else(|| {
            self.fault("read", offset);
            u32::MAX
        })
    }

    fn write32(&self, offset: u32, value: u32) {
        if !self.bar.lock().write32(u64::from(offset), value) {
            self.fault("write", offset);
        }
    }
}

/// BAR2 (the VRAM aperture) as the memory manager's CPU view of VRAM. Words go through the
/// mapping's 32/64-bit accesses; bytes of partial words are read-modify-written, and the
/// read-modify-write atomics are atomic only against other users of this adapter (the
/// driver never uses them on VRAM; the device does its atomics itself).
pub struct BarMemory<B> {
    bar: Mutex<B>,
    size: u64,
}

impl<B: BarMapping> BarMemory<B> {
    /// Wraps a mapped VRAM BAR, exposing its first `size` bytes (at most the mapping).
    pub fn new(bar: B, size: u64) -> Self {
        let size = size.min(bar.len());
        Self {
            bar: Mutex::new(bar),
            size,
        }
    }

    fn check(&self, addr: u64, len: usize, align: u64) -> Result<(), MemError> {
        let out = MemError::OutOfRange {
            addr,
            len: len as u64,
            size: self.size,
        };
        let end = addr.checked_add(len as u64).ok_or(out)?;
        if end > self.size {
            return Err(out);
        }
        if addr % align != 0 {
            return Err(MemError::Misaligned { addr, align });
        }
        Ok(())
    }

    fn refused(&self, addr: u64, len: u64) -> MemError {
        MemError::OutOfRange {
            addr,
            len,
            size: self.size,
        }
    }
}

/// The dword containing byte `at`, and `at`'s position in it.
fn word_of(at: u64) -> (u64, usize) {
    (at & !3, (at & 3) as usize)
}

impl<B: BarMapping> PhysMemory for BarMemory<B> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check(addr, buf.len(), 1)?;
        let bar = self.bar.lock();
        let mut done = 0usize;
        for chunk in split_words(addr, buf.len()) {
            let (word, skip) = word_of(chunk.0);
            let bytes = bar.read32(word).ok_or(self.refused(word, 4))?.to_le_bytes();
            let src = bytes.get(skip..skip + chunk.1);
            let dst = buf.get_mut(done..done + chunk.1);
            if let (Some(src), Some(dst)) = (src, dst) {
                dst.copy_from_slice(src);
            }
            done += chunk.1;
        }
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.check(addr, data.len(), 1)?;
        let mut bar = self.bar.lock();
        let mut done = 0usize;
        for (at, n) in split_words(addr, data.len()) {
            let (word, skip) = word_of(at);
            let mut bytes = if n == 4 {
                [0; 4]
            } else {
                bar.read32(word).ok_or(self.refused(word, 4))?.to_le_bytes()
            };
            if let (Some(dst), Some(src)) =
                (bytes.get_mut(skip..skip + n), data.get(done..done + n))
            {
                dst.copy_from_slice(src);
            }
            if !bar.write32(word, u32::from_le_bytes(bytes)) {
                return Err(self.refused(word, 4));
            }
            done += n;
        }
        Ok(())
    }

    fn load_u32(&self, addr: u64) -> Result<u32, MemError> {
        self.check(addr, 4, 4)?;
        self.bar.lock().read32(addr).ok_or(self.refused(addr, 4))
    }

    fn store_u32(&self, addr: u64, value: u32) -> Result<(), MemError> {
        self.check(addr, 4, 4)?;
        let ok = self.bar.lock().write32(addr, value);
        ok.then_some(()).ok_or(self.refused(addr, 4))
    }

    fn load_u64(&self, addr: u64) -> Result<u64, MemError> {
        self.check(addr, 8, 8)?;
        self.bar.lock().read64(addr).ok_or(self.refused(addr, 8))
    }

    fn store_u64(&self, addr: u64, value: u64) -> Result<(), MemError> {
        self.check(addr, 8, 8)?;
        let ok = self.bar.lock().write64(addr, value);
        ok.then_some(()).ok_or(self.refused(addr, 8))
    }

    fn fetch_add_u32(&self, addr: u64, value: u32) -> Result<u32, MemError> {
        self.rmw32(addr, |old| Some(old.wrapping_add(value)))
            .map(|(old, _)| old)
    }

    fn fetch_add_u64(&self, addr: u64, value: u64) -> Result<u64, MemError> {
        self.rmw64(addr, |old| Some(old.wrapping_add(value)))
            .map(|(old, _)| old)
    }

    fn compare_exchange_u32(
        &self,
        addr: u64,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, MemError> {
        let (old, stored) = self.rmw32(addr, |old| (old == current).then_some(new))?;
        Ok(if stored { Ok(old) } else { Err(old) })
    }

    fn compare_exchange_u64(
        &self,
        addr: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError> {
        let (old, stored) = self.rmw64(addr, |old| (old == current).then_some(new))?;
        Ok(if stored { Ok(old) } else { Err(old) })
    }
}

impl<B: BarMapping> BarMemory<B> {
    /// Reads, computes and (if `f` says so) writes a dword under the mapping's lock.
    fn rmw32(
        &self,
        addr: u64,
        f: impl FnOnce(u32) -> Option<u32>,
    ) -> Result<(u32, bool), MemError> {
        self.check(addr, 4, 4)?;
        let mut bar = self.bar.lock();
        let old = bar.read32(addr).ok_or(self.refused(addr, 4))?;
        match f(old) {
            Some(new) if !bar.write32(addr, new) => Err(self.refused(addr, 4)),
            Some(_) => Ok((old, true)),
            None => Ok((old, false)),
        }
    }

    /// Like `rmw32`, for a qword.
    fn rmw64(
        &self,
        addr: u64,
        f: impl FnOnce(u64) -> Option<u64>,
    ) -> Result<(u64, bool), MemError> {
        self.check(addr, 8, 8)?;
        let mut bar = self.bar.lock();
        let old = bar.read64(addr).ok_or(self.refused(addr, 8))?;
        match f(old) {
            Some(new) if !bar.write64(addr, new) => Err(self.refused(addr, 8)),
            Some(_) => Ok((old, true)),
            None => Ok((old, false)),
        }
    }
}

/// Splits `[addr, addr + len)` into pieces that each stay inside one dword.
fn split_words(addr: u64, len: usize) -> impl Iterator<Item = (u64, usize)> {
    let end = addr.saturating_add(len as u64);
    let mut at = addr;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let n = (4 - (at & 3)).min(end - at);
        let piece = (at, n as usize);
        at += n;
        Some(piece)
    })
}

/// The smallest chunk [`alloc_dma_pool`] asks for after halving.
pub const DMA_MIN_CHUNK: u64 = 64 << 10;

/// Allocates the driver's DMA pool: about `want` bytes of zeroed memory in physically
/// contiguous chunks of `chunk` bytes (halved while the memory scheme refuses, down to
/// [`DMA_MIN_CHUNK`]), stopping early when even that is refused; fails, returning what it
/// got, if less than `min` bytes came together. Returns the buffers (never freed: the pool
/// lives as long as the driver) and the page allocator over them, whose regions carry the
/// buffers' physical addresses and never span two buffers.
pub fn alloc_dma_pool<D: DmaMemory>(
    dma: &mut D,
    want: u64,
    min: u64,
    chunk: u64,
) -> Result<(Vec<DmaBuffer>, Arc<HeapDma>), SysError> {
    let mut size = chunk.min(want).max(DMA_MIN_CHUNK);
    let mut bufs: Vec<DmaBuffer> = Vec::new();
    let mut total = 0u64;
    let mut refused = None;
    while total < want {
        match dma.alloc_zeroed(size) {
            Ok(buf) => {
                total = total.saturating_add(buf.len);
                bufs.push(buf);
            }
            Err(e) => {
                refused = Some(e);
                if size / 2 < DMA_MIN_CHUNK {
                    break;
                }
                size /= 2;
            }
        }
    }
    let pool = if total >= min.max(1) {
        pool_over(dma, &bufs)
    } else {
        Err(refused.unwrap_or(SysError::new(syscall::ENOMEM)))
    };
    match pool {
        Ok(pool) => Ok((bufs, pool)),
        Err(e) => {
            for buf in bufs {
                let _ = dma.free(buf);
            }
            Err(e)
        }
    }
}

/// The page allocator over `bufs` (CPU access through the memory scheme's mappings).
fn pool_over<D: DmaMemory>(dma: &D, bufs: &[DmaBuffer]) -> Result<Arc<HeapDma>, SysError> {
    let mut chunks = Vec::with_capacity(bufs.len());
    for buf in bufs {
        chunks.push((dma.access(buf)?, buf.phys));
    }
    // Overlapping buffers would be a memory-scheme bug; refuse rather than alias.
    let pool = HeapDma::with_segments(chunks).ok_or(SysError::new(syscall::EINVAL))?;
    Ok(Arc::new(pool))
}

/// Why the MSI-X table could not be programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("MSI-X entry {entry} reads back {found:#x} at +{field:#x}, expected {expected:#x}")]
pub struct MsixProgramError {
    /// Entry index.
    pub entry: u32,
    /// Field offset in the entry.
    pub field: u32,
    /// What was written.
    pub expected: u32,
    /// What the device holds.
    pub found: u32,
}

/// Points every MSI-X entry the device uses (one per cause) at the platform's one message
/// and unmasks it, then reads each entry back. The device's per-cause vectors all become
/// the one CPU vector; the IRQ hook tells the causes apart by INT_STATUS.
pub fn program_msix(mmio: &dyn Mmio, message: MsiMessage) -> Result<(), MsixProgramError> {
    let fields = [
        (0, message.addr as u32),
        (4, (message.addr >> 32) as u32),
        (regs::MSIX_DATA, message.data),
        (regs::MSIX_CTRL, 0),
    ];
    for entry in 0..VECTORS_USED {
        let at = regs::MSIX_TABLE + entry * regs::MSIX_ENTRY_SIZE;
        // Masked while its message is incomplete, so a half-written entry never fires.
        mmio.write32(at + regs::MSIX_CTRL, 1);
        for (field, value) in fields {
            mmio.write32(at + field, value);
        }
        for (field, expected) in fields {
            let found = mmio.read32(at + field);
            if found != expected {
                return Err(MsixProgramError {
                    entry,
                    field,
                    expected,
                    found,
                });
            }
        }
    }
    Ok(())
}

/// The event loop's IRQ hook: on the one CPU interrupt, read which causes the device latched
/// and mark them in the latch, so the `IrqDispatcher` thread (waiting on the latch) does the
/// work. Runs on the loop thread; never blocks.
pub struct StatusIrq {
    mmio: Arc<dyn Mmio>,
    latch: Arc<IrqLatch>,
    /// MSI/MSI-X: the vector is this device's alone. INTx: the line may be shared, so an
    /// interrupt with no enabled cause latched is someone else's.
    exclusive: bool,
    calls: AtomicU64,
    marked: AtomicU32,
}

impl StatusIrq {
    /// A hook over the device's registers and latch.
    pub fn new(mmio: Arc<dyn Mmio>, latch: Arc<IrqLatch>, exclusive: bool) -> Self {
        Self {
            mmio,
            latch,
            exclusive,
            calls: AtomicU64::new(0),
            marked: AtomicU32::new(0),
        }
    }

    /// Services one interrupt: marks the enabled causes latched in INT_STATUS.
    pub fn service(&self) -> IrqOutcome {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let status = IrqCauses::from_bits_truncate(self.mmio.read32(regs::INT_STATUS));
        let enabled = IrqCauses::from_bits_truncate(self.mmio.read32(regs::INT_MASK));
        let causes = status & enabled;
        self.latch.mark(causes);
        self.marked.fetch_or(causes.bits(), Ordering::Relaxed);
        // Nobody acknowledges TLB_INV_DONE (its waiters read the done seqno register), so
        // it would stay latched and make every later shared-line interrupt look like ours.
        if causes.contains(IrqCauses::TLB_INV_DONE) {
            self.mmio
                .write32(regs::INT_STATUS, IrqCauses::TLB_INV_DONE.bits());
        }
        if self.exclusive || !causes.is_empty() {
            IrqOutcome::Handled
        } else {
            IrqOutcome::NotMine
        }
    }

    /// Interrupts serviced.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Every cause marked so far.
    pub fn marked(&self) -> IrqCauses {
        IrqCauses::from_bits_truncate(self.marked.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
#[path = "device_hw_tests.rs"]
mod tests;
