//! The one error type of libgpu: which call failed and the errno the scheme (or the transport)
//! answered.
//!
//! Owns: `Error`, `Call` (the operation that failed) and `TransportError` (what a transport
//! reports before libgpu knows which call it was serving). Must not: map errno values to
//! meanings beyond the documented helpers; the scheme's errno table (`docs/uapi.md`) is the
//! reference.

use gpu_scheme::uapi::Opcode;
use thiserror::Error;

pub use syscall::error::{
    E2BIG, EBADF, EBUSY, ECANCELED, EFAULT, EINTR, EINVAL, EIO, EMFILE, ENOENT, ENOMEM, ENOSPC,
    ENOTTY, EOPNOTSUPP, EPERM, ETIME, EWOULDBLOCK,
};

/// The operation of a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// Connecting to the scheme (host socket or scheme root).
    Connect,
    /// `openat` of a device path.
    Open,
    /// `dup` of a BO or syncobj handle.
    Dup,
    /// A `call` with this opcode.
    Op(Opcode),
    /// `read` of the stats text.
    Read,
    /// `mmap` of a BO handle.
    Mmap,
    /// Subscribing to or collecting readiness events.
    Event,
    /// A check libgpu makes before sending (e.g. an object of another device).
    Local,
    /// Making memory GPU-visible for userptr (moving it onto a memfd, the userfaultfd,
    /// MM_FD).
    Userptr,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Op(op) => write!(f, "{op:?}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// What went wrong below the call level.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    /// The scheme answered with this (Redox) errno.
    #[error("scheme error {0}")]
    Scheme(i32),
    /// The transport itself failed with this OS errno (server gone, socket error).
    #[error("transport error {0}")]
    Os(i32),
    /// The reply did not have the expected shape.
    #[error("malformed reply")]
    BadReply,
    /// The transport cannot do this (e.g. collecting events on Redox, where the kernel delivers
    /// them to the application's event queue).
    #[error("not supported by this transport")]
    Unsupported,
}

/// A failed libgpu call: the operation and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{call}: {source}")]
pub struct Error {
    /// The operation that failed.
    pub call: Call,
    /// Why.
    #[source]
    pub source: TransportError,
}

impl Error {
    /// An error of `call` from the transport's answer.
    pub fn new(call: Call, source: TransportError) -> Self {
        Error { call, source }
    }

    /// A locally detected invalid argument (reported as `EINVAL`).
    pub fn invalid(call: Call) -> Self {
        Error::new(call, TransportError::Scheme(EINVAL))
    }

    /// The errno: the scheme's (Redox numbering, `docs/uapi.md`), else the OS errno of a
    /// transport failure, `EIO` for a malformed reply, `EOPNOTSUPP` for an unsupported operation.
    pub fn errno(&self) -> i32 {
        match self.source {
            TransportError::Scheme(e) | TransportError::Os(e) => e,
            TransportError::BadReply => EIO,
            TransportError::Unsupported => EOPNOTSUPP,
        }
    }

    /// Whether the scheme itself answered with `errno` (as opposed to a transport failure).
    pub fn is_scheme(&self, errno: i32) -> bool {
        self.source == TransportError::Scheme(errno)
    }
}

/// Attach the call to a transport result.
pub(crate) trait Context<T> {
    /// The result with `call` named in its error.
    fn during(self, call: Call) -> Result<T, Error>;
}

impl<T> Context<T> for Result<T, TransportError> {
    fn during(self, call: Call) -> Result<T, Error> {
        self.map_err(|e| Error::new(call, e))
    }
}

/// libgpu's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
