//! The Redox transport: scheme handles are file descriptors of `/scheme/gpu`.
//!
//! Owns: `openat`/`dup`/`call_rw`/`read`/`mmap` through `libredox`, and the volatile access to
//! a mapped BO. This is libgpu's only module with `unsafe`. Must not: hold policy or interpret
//! payloads. It type-checks on any host (`cargo check -p libgpu --features redox`) but links
//! and runs only on Redox.
//!
//! Readiness: on Redox the kernel asks the scheme for events when the application adds a
//! handle's fd to its event queue (`as_fd`), and delivers them there; `take_events` is not
//! available on this transport.

#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use libredox::call::{self, MmapArgs};
use libredox::flag::{MAP_SHARED, O_CLOEXEC, O_RDWR, PROT_READ, PROT_WRITE};
use libredox::Fd;
use syscall::CallFlags;

use super::{Handle, Mapping};
use crate::error::TransportError;

fn err(e: libredox::error::Error) -> TransportError {
    TransportError::Scheme(e.errno())
}

/// Open `path` (e.g. `/scheme/gpu/card0`): a device handle.
pub fn open(path: &str) -> Result<Box<dyn Handle>, TransportError> {
    let fd = Fd::open(path, O_RDWR | O_CLOEXEC, 0).map_err(err)?;
    Ok(Box::new(RedoxHandle(fd)))
}

/// A handle received as an fd (e.g. by fd passing): wrap it.
pub fn from_fd(fd: OwnedFd) -> Box<dyn Handle> {
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    Box::new(RedoxHandle(Fd::new(raw as usize)))
}

/// A scheme fd.
struct RedoxHandle(Fd);

impl Handle for RedoxHandle {
    fn dup(&self, path: &str) -> Result<Box<dyn Handle>, TransportError> {
        let raw = call::dup(self.0.raw(), path.as_bytes()).map_err(err)?;
        Ok(Box::new(RedoxHandle(Fd::new(raw))))
    }

    fn call(&self, payload: &mut [u8], metadata: [u64; 3]) -> Result<usize, TransportError> {
        self.0
            .call_rw(payload, CallFlags::empty(), &metadata)
            .map_err(err)
    }

    fn read(&self, buf: &mut [u8], _offset: u64) -> Result<usize, TransportError> {
        // Redox reads from the handle's file position; the stats text is read from a fresh
        // position by the caller (`Device::stats` reads once, from the start).
        self.0.read(buf).map_err(err)
    }

    fn mmap(&self, offset: u64, len: usize) -> Result<Box<dyn Mapping>, TransportError> {
        let args = MmapArgs {
            addr: std::ptr::null_mut(),
            length: len,
            prot: PROT_READ | PROT_WRITE,
            flags: MAP_SHARED,
            fd: self.0.raw(),
            offset,
        };
        // SAFETY: a fresh mapping (null hint, no MAP_FIXED) cannot overlap memory Rust owns; the
        // fd is open for the duration of the call; the scheme checks offset and length.
        let ptr = unsafe { call::mmap(args) }.map_err(err)?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(TransportError::BadReply)?;
        Ok(Box::new(RedoxMapping { ptr, len }))
    }

    fn subscribe(&self) -> Result<(), TransportError> {
        // The kernel subscribes (fevent) when the fd is added to an event queue.
        Ok(())
    }

    fn take_events(&self) -> Result<u32, TransportError> {
        Err(TransportError::Unsupported)
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        // Redox fds are small integers; `Fd::open`/`dup` never return one beyond `i32`.
        let raw = i32::try_from(self.0.raw()).unwrap_or(i32::MAX);
        // SAFETY: the fd is open and owned by `self.0`, and the borrow cannot outlive `self`.
        unsafe { BorrowedFd::borrow_raw(raw) }
    }

    fn clone_fd(&self) -> Result<OwnedFd, TransportError> {
        let raw = call::dup(self.0.raw(), b"").map_err(err)?;
        let raw = i32::try_from(raw).map_err(|_| TransportError::BadReply)?;
        // SAFETY: `raw` is a new fd this process just received from `dup` and owns exclusively.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }
}

/// A shared mapping of a BO handle.
struct RedoxMapping {
    // INVARIANT: `ptr..ptr + len` is a live, read-write mapping owned by this value until drop.
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory with no thread affinity; all access is volatile
// copies through `&self`.
unsafe impl Send for RedoxMapping {}
// SAFETY: as above; concurrent volatile accesses are what shared memory is for.
unsafe impl Sync for RedoxMapping {}

impl RedoxMapping {
    fn at(&self, offset: usize, n: usize) -> Option<*mut u8> {
        let end = offset.checked_add(n)?;
        // SAFETY: `offset + n <= len`, so the pointer stays inside the mapping (INVARIANT).
        (end <= self.len).then(|| unsafe { self.ptr.as_ptr().add(offset) })
    }
}

impl Mapping for RedoxMapping {
    fn len(&self) -> usize {
        self.len
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> Option<()> {
        let p = self.at(offset, out.len())?;
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: `at` proved `p..p + out.len()` lies in the live mapping.
            *b = unsafe { p.add(i).read_volatile() };
        }
        Some(())
    }

    fn write(&self, offset: usize, data: &[u8]) -> Option<()> {
        let p = self.at(offset, data.len())?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `at` proved `p..p + data.len()` lies in the live, writable mapping.
            unsafe { p.add(i).write_volatile(*b) };
        }
        Some(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for RedoxMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are what `mmap` returned, and no reference into the mapping can
        // outlive `self` (access is by copy only).
        let _ = unsafe { call::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
