//! The Linux host transport: scheme handles are Unix-socket connections to gpud
//! (`gpu_scheme::host::HostHandle`).
//!
//! Owns: adapting `HostHandle` to the `Handle` trait and `SharedBoMapping` to `Mapping`.
//! Must not: contain framing (that is `gpu_scheme::host`) or unsafe code.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use gpu_scheme::host::{HostError, HostHandle, SharedBoMapping};
use syscall::flag::EventFlags;

use super::{Handle, Mapping};
use crate::error::TransportError;

fn err(e: HostError) -> TransportError {
    match e {
        HostError::Scheme(errno) => TransportError::Scheme(errno),
        HostError::Io(os) => TransportError::Os(os.raw_os_error()),
        HostError::BadReply => TransportError::BadReply,
    }
}

/// Connect to the server socket at `path` and open `card` (e.g. `"card0"`) on its root.
pub fn open_at(path: &Path, card: &str) -> Result<Box<dyn Handle>, (bool, TransportError)> {
    let root = HostHandle::connect(path).map_err(|e| (true, err(e)))?;
    let dev = root.open(card).map_err(|e| (false, err(e)))?;
    Ok(Box::new(HostDevice(Arc::new(dev))))
}

/// A handle received as an fd (e.g. from another process): wrap it.
pub fn from_fd(fd: OwnedFd) -> Box<dyn Handle> {
    Box::new(HostDevice(Arc::new(HostHandle::from_fd(fd))))
}

/// A host scheme handle.
struct HostDevice(Arc<HostHandle>);

impl Handle for HostDevice {
    fn dup(&self, path: &str) -> Result<Box<dyn Handle>, TransportError> {
        let h = self.0.dup(path).map_err(err)?;
        Ok(Box::new(HostDevice(Arc::new(h))))
    }

    fn call(&self, payload: &mut [u8], metadata: [u64; 3]) -> Result<usize, TransportError> {
        self.0.call(payload, metadata).map_err(err)
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<usize, TransportError> {
        self.0.read(buf, offset).map_err(err)
    }

    fn mmap(&self, offset: u64, len: usize) -> Result<Box<dyn Mapping>, TransportError> {
        let map = self.0.mmap_shared(offset, len).map_err(err)?;
        Ok(Box::new(HostMapping(map)))
    }

    fn subscribe(&self) -> Result<(), TransportError> {
        self.0.fevent(EventFlags::EVENT_READ).map_err(err)?;
        Ok(())
    }

    fn take_events(&self) -> Result<u32, TransportError> {
        let bits = self.0.take_events().map_err(err)?.bits();
        Ok(u32::try_from(bits).unwrap_or(u32::MAX))
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn send_mm_fd(&self, payload: &[u8], fd: BorrowedFd<'_>) -> Result<(), TransportError> {
        self.0.send_mm_fd(payload, fd).map_err(err)
    }

    fn clone_fd(&self) -> Result<OwnedFd, TransportError> {
        self.0
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| TransportError::Os(e.raw_os_error().unwrap_or(syscall::error::EIO)))
    }
}

/// A shared-memory mapping of a BO on the host.
struct HostMapping(SharedBoMapping);

impl Mapping for HostMapping {
    fn len(&self) -> usize {
        self.0.memory().len()
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> Option<()> {
        self.0.memory().read(offset, out)
    }

    fn write(&self, offset: usize, data: &[u8]) -> Option<()> {
        self.0.memory().write(offset, data)
    }

    fn as_ptr(&self) -> *mut u8 {
        self.0.memory().as_ptr()
    }
}
