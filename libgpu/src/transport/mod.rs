//! The transport abstraction: how libgpu reaches the `gpu` scheme.
//!
//! Owns: the `Handle` trait (one scheme handle: dup, call, read, mmap, readiness) and the
//! `Mapping` trait (a CPU mapping of a BO handle), and the constructors of the two transports:
//! the Linux host transport (`host.rs`, a Unix socket served by gpud) and Redox scheme fds
//! (`redox.rs`, feature `redox`). Must not: know the uAPI's layouts (that is `gpu_scheme::uapi`)
//! or object semantics (the object modules).

#[cfg(target_os = "linux")]
pub mod host;
#[cfg(feature = "redox")]
pub mod redox;

use std::os::fd::BorrowedFd;

use crate::error::TransportError;

/// One scheme handle (device, BO or syncobj handle). Closing it is dropping it.
pub trait Handle: Send + Sync {
    /// `dup(self, path)`: a derived handle (`"bo/<id>"`, `"syncobj/<id>"`).
    fn dup(&self, path: &str) -> Result<Box<dyn Handle>, TransportError>;

    /// `call(self, payload, metadata)`: the payload is read and rewritten in place.
    fn call(&self, payload: &mut [u8], metadata: [u64; 3]) -> Result<usize, TransportError>;

    /// `read(self, buf)` from `offset` (the stats text).
    fn read(&self, buf: &mut [u8], offset: u64) -> Result<usize, TransportError>;

    /// `mmap` of `len` bytes at `offset` of a BO handle, shared and read-write.
    fn mmap(&self, offset: u64, len: usize) -> Result<Box<dyn Mapping>, TransportError>;

    /// Ask the scheme to report readiness of this handle (a syncobj handle becomes readable
    /// when signalled). On Redox the kernel subscribes when the fd joins an event queue.
    fn subscribe(&self) -> Result<(), TransportError>;

    /// Readiness bits delivered since the last call, without blocking (`EVENT_READ` = 1).
    fn take_events(&self) -> Result<u32, TransportError>;

    /// The file descriptor behind the handle, to wait for readiness with poll(2) / epoll or a
    /// Redox event queue.
    fn as_fd(&self) -> BorrowedFd<'_>;

    /// A new fd referring to the same handle, to pass to another process.
    fn clone_fd(&self) -> Result<std::os::fd::OwnedFd, TransportError>;

    /// MM_FD on a device handle (host transport): pass `fd`, a descriptor of this process's
    /// memory manager, with `payload` (`gpu_scheme::uapi::mm::encode_mm_fd`). Other transports
    /// have no such request.
    fn send_mm_fd(&self, payload: &[u8], fd: BorrowedFd<'_>) -> Result<(), TransportError> {
        let _ = (payload, fd);
        Err(TransportError::Unsupported)
    }
}

/// A CPU mapping of (part of) a BO. Dropping it unmaps it.
///
/// Access is by copy: other processes and the GPU write the same memory concurrently, so no
/// Rust reference into it is ever handed out.
pub trait Mapping: Send + Sync {
    /// Length in bytes.
    fn len(&self) -> usize;

    /// Whether the mapping is empty (never, for a successful `mmap`).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy bytes out; `None` if `offset..offset + out.len()` is outside the mapping.
    fn read(&self, offset: usize, out: &mut [u8]) -> Option<()>;

    /// Copy bytes in; `None` if `offset..offset + data.len()` is outside the mapping.
    fn write(&self, offset: usize, data: &[u8]) -> Option<()>;

    /// The mapping's first byte, for foreign callers (the C API) that access the memory
    /// directly; valid until the mapping drops. Rust code copies through `read`/`write`.
    fn as_ptr(&self) -> *mut u8;
}
