//! The host's system-memory pool: one shared-memory object (memfd) mapped into the daemon,
//! which the simulated device reaches by DMA and client processes can map later.
//!
//! Owns: creating, mapping and unmapping the memfd, and word-atomic access to it as
//! simgpu's [`PhysMemory`] (allocation on top is [`crate::hw::sim::dma::HeapDma`], whose
//! regions are contiguous, so one client mmap of `fd + offset` covers a system BO). This is
//! the one module of `mem` with `unsafe`: the mapping and the atomic views of its words.
//! Must not: hand out Rust references or slices to the mapped bytes; the device and clients
//! write them concurrently, so every access is an atomic load or store.
//!
//! Redox gets its system memory from the memory scheme instead; that backend implements the
//! same [`PhysMemory`] + [`SharedMemory`] seam in a later issue.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use simgpu::{MemError, PhysMemory};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use thiserror::Error;

/// The pool could not be created.
#[derive(Debug, Error)]
pub enum ShmError {
    /// Zero or unaligned size.
    #[error("invalid pool size {size:#x}")]
    Size { size: u64 },
    /// The system refused memfd_create, ftruncate or mmap.
    #[error("{what} failed: {source}")]
    Os {
        what: &'static str,
        source: rustix::io::Errno,
    },
}

/// Memory that clients can map: where a physical range lives in a shareable object.
pub trait SharedMemory {
    /// The object (`fd`) and offset of `[addr, addr + len)`, or `None` if out of range.
    fn export(&self, addr: u64, len: u64) -> Option<(BorrowedFd<'_>, u64)>;
}

/// A memfd-backed physical-memory pool.
pub struct ShmPool {
    fd: OwnedFd,
    base: *mut c_void,
    size: u64,
}

// SAFETY: the mapping is shared memory reached only through atomics; the raw pointer is
// just its address, valid until Drop, and never used to form references.
unsafe impl Send for ShmPool {}
// SAFETY: as above; concurrent atomic accesses from any thread are sound.
unsafe impl Sync for ShmPool {}

impl ShmPool {
    /// A zero-filled pool of `size` bytes (a multiple of 4 KiB).
    pub fn new(name: &str, size: u64) -> Result<Self, ShmError> {
        let len = usize::try_from(size).map_err(|_| ShmError::Size { size })?;
        if size == 0 || size % 4096 != 0 {
            return Err(ShmError::Size { size });
        }
        let os = |what| move |source| ShmError::Os { what, source };
        let fd = memfd_create(name, MemfdFlags::CLOEXEC).map_err(os("memfd_create"))?;
        ftruncate(&fd, size).map_err(os("ftruncate"))?;
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: a fresh shared mapping of our own memfd at an address the kernel picks;
        // it aliases no Rust object, and is unmapped exactly once in Drop.
        let base = unsafe { mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, &fd, 0) }
            .map_err(os("mmap"))?;
        Ok(Self { fd, base, size })
    }

    /// The memfd, for passing to clients.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn check(&self, addr: u64, len: u64, align: u64) -> Result<usize, MemError> {
        if addr.checked_add(len).is_none_or(|e| e > self.size) {
            return Err(MemError::OutOfRange {
                addr,
                len,
                size: self.size,
            });
        }
        if align > 1 && addr % align != 0 {
            return Err(MemError::Misaligned { addr, align });
        }
        // PANIC-free: addr < size, and size fitted in usize at creation.
        Ok(addr as usize)
    }

    fn byte(&self, off: usize) -> &AtomicU8 {
        // SAFETY: `off` was bounds-checked against the live mapping; AtomicU8 has alignment
        // 1 and every access to the mapping is atomic, so this view races with nothing.
        unsafe { AtomicU8::from_ptr(self.base.cast::<u8>().add(off)) }
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: bounds- and 4-alignment-checked offset into the page-aligned mapping;
        // all accesses to the mapping are atomic.
        unsafe { AtomicU32::from_ptr(self.base.cast::<u8>().add(off).cast::<u32>()) }
    }

    fn word64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: bounds- and 8-alignment-checked offset into the page-aligned mapping;
        // all accesses to the mapping are atomic.
        unsafe { AtomicU64::from_ptr(self.base.cast::<u8>().add(off).cast::<u64>()) }
    }
}

impl SharedMemory for ShmPool {
    fn export(&self, addr: u64, len: u64) -> Option<(BorrowedFd<'_>, u64)> {
        self.check(addr, len, 1).ok().map(|_| (self.fd(), addr))
    }
}

impl PhysMemory for ShmPool {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let off = self.check(addr, buf.len() as u64, 1)?;
        let mut i = 0;
        while i < buf.len() {
            let at = off + i;
            if let (0, Some(dst)) = (at % 8, buf.get_mut(i..i + 8)) {
                dst.copy_from_slice(&self.word64(at).load(Ordering::Acquire).to_le_bytes());
                i += 8;
            } else {
                if let Some(b) = buf.get_mut(i) {
                    *b = self.byte(at).load(Ordering::Acquire);
                }
                i += 1;
            }
        }
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let off = self.check(addr, data.len() as u64, 1)?;
        let mut i = 0;
        while i < data.len() {
            let at = off + i;
            if let (0, Some(w)) = (at % 8, data.get(i..i + 8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                self.word64(at)
                    .store(u64::from_le_bytes(b), Ordering::Release);
                i += 8;
            } else {
                if let Some(&b) = data.get(i) {
                    self.byte(at).store(b, Ordering::Release);
                }
                i += 1;
            }
        }
        Ok(())
    }

    fn load_u32(&self, addr: u64) -> Result<u32, MemError> {
        let off = self.check(addr, 4, 4)?;
        Ok(self.word32(off).load(Ordering::Acquire))
    }

    fn store_u32(&self, addr: u64, value: u32) -> Result<(), MemError> {
        let off = self.check(addr, 4, 4)?;
        self.word32(off).store(value, Ordering::Release);
        Ok(())
    }

    fn load_u64(&self, addr: u64) -> Result<u64, MemError> {
        let off = self.check(addr, 8, 8)?;
        Ok(self.word64(off).load(Ordering::Acquire))
    }

    fn store_u64(&self, addr: u64, value: u64) -> Result<(), MemError> {
        let off = self.check(addr, 8, 8)?;
        self.word64(off).store(value, Ordering::Release);
        Ok(())
    }

    fn fetch_add_u32(&self, addr: u64, value: u32) -> Result<u32, MemError> {
        let off = self.check(addr, 4, 4)?;
        Ok(self.word32(off).fetch_add(value, Ordering::AcqRel))
    }

    fn fetch_add_u64(&self, addr: u64, value: u64) -> Result<u64, MemError> {
        let off = self.check(addr, 8, 8)?;
        Ok(self.word64(off).fetch_add(value, Ordering::AcqRel))
    }

    fn compare_exchange_u32(
        &self,
        addr: u64,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, MemError> {
        let off = self.check(addr, 4, 4)?;
        Ok(self
            .word32(off)
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire))
    }

    fn compare_exchange_u64(
        &self,
        addr: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError> {
        let off = self.check(addr, 8, 8)?;
        Ok(self
            .word64(off)
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire))
    }
}

impl Drop for ShmPool {
    fn drop(&mut self) {
        // PANIC-free: the size fitted in usize when the mapping was created.
        let len = self.size as usize;
        // SAFETY: the mapping created in `new`, unmapped once; no reference into it exists
        // (accessors return views tied to `&self`, which ends here).
        let _ = unsafe { munmap(self.base, len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::sim::dma::HeapDma;
    use crate::hw::DmaMemory;
    use crate::types::PhysAddr;
    use std::sync::Arc;

    #[test]
    fn bytes_and_atomics_round_trip_and_bounds_are_typed_errors() {
        let p = ShmPool::new("gpud-test", 1 << 16).unwrap();
        p.write(3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).unwrap();
        let mut b = [0u8; 13];
        p.read(2, &mut b).unwrap();
        assert_eq!(b, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0]);
        p.store_u64(8, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(p.load_u32(12).unwrap(), 0x1122_3344);
        assert_eq!(p.fetch_add_u32(16, 5).unwrap(), 0);
        assert_eq!(p.compare_exchange_u64(16, 5, 9).unwrap(), Ok(5));
        assert_eq!(p.compare_exchange_u64(16, 5, 1).unwrap(), Err(9));
        assert_eq!(
            p.load_u64(3),
            Err(MemError::Misaligned { addr: 3, align: 8 })
        );
        assert!(matches!(
            p.read(1 << 16, &mut b),
            Err(MemError::OutOfRange { .. })
        ));
        assert!(matches!(
            ShmPool::new("x", 100),
            Err(ShmError::Size { size: 100 })
        ));
    }

    /// Another mapping of the same object (what a client does with `fd + offset`) sees the
    /// bytes the daemon wrote, and writes from it are seen back.
    #[test]
    fn exported_fd_and_offset_reach_the_same_bytes() {
        let pool = Arc::new(ShmPool::new("gpud-test", 1 << 20).unwrap());
        let dma = HeapDma::new(pool.clone());
        let region = dma.alloc(3 * 4096).unwrap();
        dma.write(region.addr, b"hello, client").unwrap();
        let (fd, off) = pool.export(region.addr.get(), region.len).unwrap();
        let mut buf = [0u8; 13];
        rustix::io::pread(fd, &mut buf, off).unwrap();
        assert_eq!(&buf, b"hello, client");
        rustix::io::pwrite(fd, b"HELLO", off).unwrap();
        let mut back = [0u8; 5];
        dma.read(PhysAddr(region.addr.get()), &mut back).unwrap();
        assert_eq!(&back, b"HELLO");
        assert!(pool.export(1 << 20, 1).is_none());
    }

    /// The device walks page tables kept in the pool and reaches pages in it.
    #[test]
    fn page_tables_in_the_pool_are_walked_by_the_device() {
        use crate::vm::pagetable::memory::SysPtMemory;
        use crate::vm::pagetable::{MapTarget, PageTable, PhysSeg, PtConfig, PtOp};
        let pool = Arc::new(ShmPool::new("gpud-test", 4 << 20).unwrap());
        let dma: Arc<dyn DmaMemory> = Arc::new(HeapDma::new(pool.clone()));
        let mut pt =
            PageTable::new(Arc::new(SysPtMemory::new(dma.clone())), PtConfig::default()).unwrap();
        let page = dma.alloc(4096).unwrap();
        let target = MapTarget::Pages {
            location: crate::hw::MemLocation::System,
            flags: crate::hw::pte::LeafFlags::default(),
            segments: vec![PhysSeg {
                addr: page.addr,
                len: 4096,
            }],
        };
        let op = PtOp::Map {
            va: crate::types::GpuVa(0x5000),
            len: 4096,
            target,
        };
        let _ = pt.prepare(&[op]).unwrap().commit();
        let vram = simgpu::HeapMemory::new(4096);
        let mems = simgpu::mmu::Memories {
            sys: &*pool,
            vram: &vram,
        };
        let root = simgpu::mmu::PtRoot {
            addr: pt.root().addr.get(),
            location: simgpu::Location::System,
        };
        let t = simgpu::mmu::Mmu::new(4)
            .translate(mems, 0, root, 0x5010, simgpu::mmu::Access::Read)
            .unwrap();
        assert_eq!(t.phys, page.addr.get() + 0x10);
    }
}
