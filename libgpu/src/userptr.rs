//! userptr on the Linux host: making ranges of this process's memory GPU-visible, so that
//! MAP_USERPTR of them (`BindBuilder::map_userptr`) reaches exactly the pages the process
//! uses.
//!
//! Owns: the device's userfaultfd (created once per `Device`, at the first registration, and
//! handed to gpud with MM_FD), registering ranges with it for events, and MM_FD REGION for
//! each memfd-backed range. Must not: bind anything (`BindBuilder` does) or keep track of
//! what gpud maps.
//!
//! gpud reaches a client's memory through memfds, never through private anonymous pages
//! (another process cannot share those). Two ways in:
//! - [`Device::userptr_adopt`]: ordinary (e.g. `mmap`-anonymous, `aligned_alloc`) memory is
//!   moved, with the caller's consent, onto a new memfd at the same address (contents
//!   preserved), then registered. The range becomes shared memory excluded from `fork`
//!   (`MADV_DONTFORK`): see `docs/libgpu.md`.
//! - [`Device::userptr_register_memfd`]: memory that already is a `MAP_SHARED` mapping of a
//!   memfd is registered as it is.
//!
//! Either way gpud registers the range with the device's userfaultfd, so it learns when the
//! process unmaps, moves (mremap) or drops (madvise) it and takes the GPU's view away before
//! the CPU's change can be observed through the GPU.
//!
//! The process keeps no copy of its userfaultfd: once gpud holds the only one, gpud exiting
//! releases it (the registrations go with it), whereas a copy left here would make every
//! later munmap of a registered range wait for a reader that no longer exists.

use std::os::fd::{AsFd, BorrowedFd};

use gpu_scheme::host::{adopt, uffd};
use gpu_scheme::uapi::mm::{encode_mm_fd, MmFdRequest};

use crate::device::Device;
use crate::error::{Call, Error, Result, TransportError};

/// How the device's userfaultfd was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserptrMode {
    /// Full mode (`/dev/userfaultfd` or a privileged process).
    Full,
    /// `UFFD_USER_MODE_ONLY` (an unprivileged process without `/dev/userfaultfd` access).
    /// Enough for events; see `docs/serve.md` for what full mode adds.
    UserModeOnly,
}

/// The device's userfaultfd, handed to gpud (which keeps the only descriptor).
pub(crate) struct ClientMm {
    mode: UserptrMode,
}

fn os(e: rustix::io::Errno) -> Error {
    Error::new(Call::Userptr, TransportError::Os(e.raw_os_error()))
}

impl Device {
    /// Moves `[addr, addr + len)` (page aligned) of this process onto a new memfd at the same
    /// address, contents preserved, and makes it GPU-visible: MAP_USERPTR of any part of it
    /// then maps the same pages the process reads and writes. Errors: `EINVAL` unaligned or
    /// empty, `EFAULT` not mapped (nothing changed), and gpud's answers to MM_FD
    /// (`docs/uapi.md`).
    ///
    /// # Safety
    ///
    /// The range must be private memory of this process that no other thread accesses during
    /// the call (a write between the copy and the remap would be lost); its mapping is
    /// replaced by a shared one that a `fork` child does not inherit.
    pub unsafe fn userptr_adopt(&self, addr: u64, len: u64) -> Result<()> {
        // SAFETY: the caller's contract is `adopt`'s.
        let memfd = unsafe { adopt::adopt(addr, len) }.map_err(os)?;
        self.userptr_register_memfd(memfd.as_fd(), addr, len, 0)
    }

    /// Makes `[addr, addr + len)`, which this process maps `MAP_SHARED` from `memfd` at file
    /// offset `offset`, GPU-visible. The memfd must be sealed against shrinking
    /// (`F_SEAL_SHRINK`): gpud maps its pages and refuses a file that could be cut under it.
    /// A range already registered through another `Device` fails with `EBUSY`.
    pub fn userptr_register_memfd(
        &self,
        memfd: BorrowedFd<'_>,
        addr: u64,
        len: u64,
        offset: u64,
    ) -> Result<()> {
        let mut mm = self.inner.mm.lock().unwrap_or_else(|e| e.into_inner());
        if mm.is_none() {
            *mm = Some(self.attach_mm()?);
        }
        drop(mm);
        let payload = encode_mm_fd(&MmFdRequest::Region {
            va: addr,
            len,
            offset,
        });
        self.inner
            .handle
            .send_mm_fd(&payload, memfd)
            .map_err(|e| Error::new(Call::Userptr, e))
    }

    /// How this device's userfaultfd was created (`None` before the first registration).
    pub fn userptr_mode(&self) -> Option<UserptrMode> {
        let mm = self.inner.mm.lock().unwrap_or_else(|e| e.into_inner());
        mm.as_ref().map(|m| m.mode)
    }

    /// Creates this process's userfaultfd for the device and hands it to gpud.
    fn attach_mm(&self) -> Result<ClientMm> {
        let created = uffd::create(uffd::EVENT_FEATURES).map_err(os)?;
        let payload = encode_mm_fd(&MmFdRequest::Userfaultfd {
            full_mode: created.full_mode,
        });
        self.inner
            .handle
            .send_mm_fd(&payload, created.fd.as_fd())
            .map_err(|e| Error::new(Call::Userptr, e))?;
        let mode = if created.full_mode {
            UserptrMode::Full
        } else {
            UserptrMode::UserModeOnly
        };
        // `created.fd` closes here: gpud holds the only descriptor now.
        Ok(ClientMm { mode })
    }
}
