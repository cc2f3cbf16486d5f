//! CPU access to DMA memory gpud mapped (Redox's memory scheme, Linux VFIO).
//!
//! Owns: [`MappedMemory`], the word-atomic [`PhysMemory`] view of a mapping the device also
//! writes. Must not: create or remove mappings (the platform that made one owns it).

use simgpu::{MemError, PhysMemory};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// CPU access to a DMA buffer mapped into gpud. Words are accessed atomically (the device
/// writes the same memory); byte copies are plain copies of memory the device may also be
/// writing, which yields whatever bytes were there, as for any DMA buffer.
pub struct MappedMemory {
    // INVARIANT: `ptr..ptr + len` is a live mapping for as long as this value is used (the
    // DMA pool is never freed while the driver runs: `DmaMemory::access` contract).
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is process-wide memory; all word accesses are atomic and byte copies
// never create Rust references into it.
unsafe impl Send for MappedMemory {}
// SAFETY: as above: concurrent use goes through atomics or raw copies only.
unsafe impl Sync for MappedMemory {}

impl MappedMemory {
    /// CPU access to `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be a live mapping for as long as the value is used, and never
    /// be accessed through Rust references (the device writes it).
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Self { ptr, len }
    }

    /// A pointer to `[addr, addr + len)`, checked to lie inside the mapping and be aligned
    /// to `align`.
    fn at(&self, addr: u64, len: usize, align: usize) -> Result<*mut u8, MemError> {
        let out = MemError::OutOfRange {
            addr,
            len: len as u64,
            size: self.len as u64,
        };
        let off = usize::try_from(addr).map_err(|_| out)?;
        if off.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(out);
        }
        if off % align != 0 {
            return Err(MemError::Misaligned {
                addr,
                align: align as u64,
            });
        }
        // SAFETY: `off + len <= self.len`, so the pointer stays inside the mapping.
        Ok(unsafe { self.ptr.add(off) })
    }
    fn u32(&self, addr: u64) -> Result<&AtomicU32, MemError> {
        let p = self.at(addr, 4, 4)?.cast::<u32>();
        // SAFETY: aligned, inside the live mapping (INVARIANT), only ever accessed atomically
        // or by raw copies; the reference does not outlive `self`.
        Ok(unsafe { AtomicU32::from_ptr(p) })
    }
    fn u64(&self, addr: u64) -> Result<&AtomicU64, MemError> {
        let p = self.at(addr, 8, 8)?.cast::<u64>();
        // SAFETY: as in `u32`, for an aligned qword.
        Ok(unsafe { AtomicU64::from_ptr(p) })
    }
}

impl PhysMemory for MappedMemory {
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
