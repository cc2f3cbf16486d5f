//! Shared-memory mappings of BOs on the host: the client side of `mmap`.
//!
//! Owns: mapping the memory fd the server passes for a BO handle into the client, volatile
//! access to it, and unmapping on drop. This and `crate::dispatch` are the only modules with
//! `unsafe`. Must not: hand out Rust references into the mapping (other processes and the
//! device write it concurrently), only volatile copies.

#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// A shared mapping of (part of) a BO.
pub struct SharedMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory with no thread affinity; all access is volatile
// through `&self` methods that copy values in and out.
unsafe impl Send for SharedMapping {}
// SAFETY: as above; concurrent volatile accesses are what shared memory is for.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Map `len` bytes of `fd` at `offset`, read-write and shared.
    pub fn map(fd: &OwnedFd, offset: u64, len: usize) -> rustix::io::Result<Self> {
        // SAFETY: a fresh mapping (null hint, no MAP_FIXED) cannot overlap memory Rust owns; the
        // fd is open for the duration of the call; the kernel checks offset and length.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                offset,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(rustix::io::Errno::NOMEM)?;
        Ok(SharedMapping { ptr, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for a successful `map`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapping's first byte, for foreign callers (the C API) that access it directly;
    /// valid until this value drops. Rust code copies through `read`/`write`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn check(&self, offset: usize, n: usize) -> Option<*mut u8> {
        let end = offset.checked_add(n)?;
        // SAFETY: `offset + n <= len`, so the pointer stays inside the mapping.
        (end <= self.len).then(|| unsafe { self.ptr.as_ptr().add(offset) })
    }

    /// Copy bytes out of the mapping; `None` if the range is outside it.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Option<()> {
        let p = self.check(offset, out.len())?;
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: `check` proved `p..p + out.len()` lies in the live mapping.
            *b = unsafe { p.add(i).read_volatile() };
        }
        Some(())
    }

    /// Copy bytes into the mapping; `None` if the range is outside it.
    pub fn write(&self, offset: usize, data: &[u8]) -> Option<()> {
        let p = self.check(offset, data.len())?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `check` proved `p..p + data.len()` lies in the live, writable mapping.
            unsafe { p.add(i).write_volatile(*b) };
        }
        Some(())
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned, and no reference into the
        // mapping can outlive `self` (access is by copy only).
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
