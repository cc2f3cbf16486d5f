//! The host transport (Linux): the gpu scheme served on a Unix socket, so that gpud on a plain
//! Linux host runs the same server code that runs on Redox.
//!
//! Owns: the framing (`frame.rs`), the server (`server.rs`), the client (`client.rs`),
//! shared-memory BO mappings (`shm.rs`), and the two halves of userptr on a host: the
//! userfaultfd ABI (`uffd.rs`) and moving client memory onto a memfd (`adopt.rs`). One connection per scheme handle: `open` and `dup`
//! return a new connection (a socketpair end passed with SCM_RIGHTS), so a handle passed to
//! another process keeps working there. Requests go through `crate::dispatch`, i.e. through
//! redox-scheme's `Op::from_sqe_unchecked` and `handle_sync_dont_consume`. Must not: contain
//! scheme logic.

pub mod adopt;
pub mod client;
pub mod frame;
pub mod server;
pub mod shm;
pub mod uffd;

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::driver::{ClientId, DriverError, GpuDriver};
use crate::uapi::mm::MmFdRequest;

pub use client::{BoMapping, HostError, HostHandle, SharedBoMapping};
pub use server::{HostServer, LoopWaker};

/// What the host transport needs beyond `GpuDriver`: BO memory another process can map.
pub trait HostMemory: GpuDriver {
    /// An fd of shared memory backing `bo` (e.g. a memfd) and the file offset of the BO's first
    /// byte in it. Returned fresh (a dup) for each `mmap`.
    fn bo_memory(&self, bo: &Self::Bo) -> Result<(OwnedFd, u64), DriverError>;

    /// MM_FD: `client` hands over a descriptor of its memory manager (`req` says which: its
    /// userfaultfd, or a memfd mapped over a range of its memory), passed with the request.
    /// The driver checks the descriptor itself. Drivers without userptr refuse it.
    fn client_mm_fd(
        &self,
        client: ClientId,
        req: MmFdRequest,
        fd: OwnedFd,
    ) -> Result<(), DriverError> {
        let _ = (client, req, fd);
        Err(DriverError::NotSupported("userptr on this driver"))
    }
}

/// Environment variable that overrides the socket path.
pub const SOCKET_ENV: &str = "GPUD_SOCKET";

/// Where gpud listens on a host: `$GPUD_SOCKET`, else `$XDG_RUNTIME_DIR/gpud.sock`, else
/// `<temp dir>/gpud.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV) {
        return PathBuf::from(p);
    }
    let dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    dir.unwrap_or_else(std::env::temp_dir).join("gpud.sock")
}
