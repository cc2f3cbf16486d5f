//! Shared mappings of file descriptors: the VRAM memfd (BAR2) and the guest RAM QEMU hands
//! over in DMA-map messages, seen as simgpu [`PhysMemory`].
//!
//! Owns: `mmap`/`munmap` of one range of an fd and word-atomic access to it. Must not: know
//! about regions, IOVAs or the protocol. The only module of this crate with `unsafe`.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use simgpu::{MemError, PhysMemory};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A zero-filled memfd of `size` bytes.
pub fn memfd(name: &str, size: u64) -> std::io::Result<OwnedFd> {
    let fd = memfd_create(name, MemfdFlags::CLOEXEC)?;
    ftruncate(&fd, size)?;
    Ok(fd)
}

/// `len` bytes of an fd from `offset`, mapped shared and writable. Another process (QEMU,
/// the guest) writes the same memory at any time, so every word access is atomic and byte
/// copies never create Rust references into it.
pub struct Mapping {
    // INVARIANT: `ptr..ptr + len` is a live shared mapping owned by this value until `drop`.
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is process-wide memory; words are accessed atomically, bytes by raw
// copies, never through references.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len).finish()
    }
}

impl Mapping {
    /// Maps `[offset, offset + len)` of `fd` shared, readable and writable.
    pub fn new(fd: impl AsFd, offset: u64, len: u64) -> std::io::Result<Self> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: a fresh shared mapping at an address the kernel picks; it aliases no Rust
        // object and is unmapped exactly once, in `drop`.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                prot,
                MapFlags::SHARED,
                fd,
                offset,
            )
        }?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Mapped bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether nothing is mapped (never: `new` refuses empty mappings).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A pointer to `[addr, addr + len)`, checked to lie inside and be aligned to `align`.
    fn at(&self, addr: u64, len: usize, align: u64) -> Result<*mut u8, MemError> {
        let out = MemError::OutOfRange {
            addr,
            len: len as u64,
            size: self.len as u64,
        };
        let off = usize::try_from(addr).map_err(|_| out)?;
        if off.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(out);
        }
        if addr % align != 0 {
            return Err(MemError::Misaligned { addr, align });
        }
        // SAFETY: `off + len <= self.len`: the pointer stays inside the mapping.
        Ok(unsafe { self.ptr.add(off) })
    }

    fn u32(&self, addr: u64) -> Result<&AtomicU32, MemError> {
        let p = self.at(addr, 4, 4)?.cast::<u32>();
        // SAFETY: aligned, inside the live mapping (INVARIANT), only accessed atomically or
        // by raw copies; the reference does not outlive `self`.
        Ok(unsafe { AtomicU32::from_ptr(p) })
    }

    fn u64(&self, addr: u64) -> Result<&AtomicU64, MemError> {
        let p = self.at(addr, 8, 8)?.cast::<u64>();
        // SAFETY: as in `u32`, for an aligned qword.
        Ok(unsafe { AtomicU64::from_ptr(p) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping (INVARIANT) once; no reference into it survives
        // `self` (accessors borrow `self`).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

impl PhysMemory for Mapping {
    fn size(&self) -> u64 {
        self.len as u64
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let src = self.at(addr, buf.len(), 1)?;
        // SAFETY: `src..src + buf.len()` is inside the mapping and does not overlap `buf`.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let dst = self.at(addr, data.len(), 1)?;
        // SAFETY: `dst..dst + data.len()` is inside the mapping and does not overlap `data`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }
    fn load_u32(&self, addr: u64) -> Result<u32, MemError> {
        Ok(self.u32(addr)?.load(Ordering::SeqCst))
    }
    fn store_u32(&self, addr: u64, value: u32) -> Result<(), MemError> {
        self.u32(addr)?.store(value, Ordering::SeqCst);
        Ok(())
    }
    fn load_u64(&self, addr: u64) -> Result<u64, MemError> {
        Ok(self.u64(addr)?.load(Ordering::SeqCst))
    }
    fn store_u64(&self, addr: u64, value: u64) -> Result<(), MemError> {
        self.u64(addr)?.store(value, Ordering::SeqCst);
        Ok(())
    }
    fn fetch_add_u32(&self, addr: u64, value: u32) -> Result<u32, MemError> {
        Ok(self.u32(addr)?.fetch_add(value, Ordering::SeqCst))
    }
    fn fetch_add_u64(&self, addr: u64, value: u64) -> Result<u64, MemError> {
        Ok(self.u64(addr)?.fetch_add(value, Ordering::SeqCst))
    }
    fn compare_exchange_u32(
        &self,
        addr: u64,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, MemError> {
        let a = self.u32(addr)?;
        Ok(a.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst))
    }
    fn compare_exchange_u64(
        &self,
        addr: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, MemError> {
        let a = self.u64(addr)?;
        Ok(a.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst))
    }
}
