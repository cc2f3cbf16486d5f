//! The one place where errors become errno.
//!
//! Owns: `SchemeError` (every error the server can return: decode errors, driver errors, handle
//! and limit errors) and `SchemeError::errno`, the single mapping to Redox errno values. Must
//! not: be bypassed — the server returns `syscall::Error` only through `From<SchemeError>`.
//! `docs/uapi.md` lists the same table; the tests check every documented row.

use syscall::error::*;
use thiserror::Error;

use crate::driver::DriverError;
use crate::uapi::DecodeError;

/// Which per-client limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Bytes of VRAM charged to the client.
    VramBytes,
    /// Bytes of system memory charged to the client.
    SystemBytes,
    /// CPU mappings of BOs.
    Mappings,
    /// GPU VA mappings.
    GpuMappings,
    /// Binds and jobs in flight.
    InFlight,
    /// Objects (VMs, BOs, queues, syncobjs) in the client's tables.
    Objects,
    /// Derived handles of the client.
    Handles,
    /// Device handles of one process.
    Devices,
    /// Timeline points the client's syncobjs keep alive.
    TimelinePoints,
}

/// Every error the gpu scheme returns.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchemeError {
    /// The payload did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The driver refused.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The handle id is not open in this scheme.
    #[error("no such handle {0}")]
    BadHandle(usize),
    /// The operation does not apply to this kind of handle.
    #[error("handle {id} is a {kind}, not valid for this operation")]
    WrongHandleKind {
        /// The handle.
        id: usize,
        /// What it is.
        kind: &'static str,
    },
    /// A path that names nothing (`openat` / `dup`).
    #[error("no such path {0:?}")]
    BadPath(String),
    /// An object id that is not in the caller's namespace (or was destroyed).
    #[error("no {kind} with id {id} in this client")]
    UnknownObject {
        /// Object kind.
        kind: &'static str,
        /// Id sent.
        id: u32,
    },
    /// VM_BIND / queue creation named a VM id that is not in the caller's namespace (EINVAL, as
    /// Xe's VM_BIND does, unlike other unknown ids).
    #[error("unknown VM {0} in VM_BIND")]
    UnknownBindVm(u32),
    /// A rule that needs object state was broken (EINVAL).
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// A rule that needs object state makes the combination unsupported (EOPNOTSUPP).
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// A per-client limit would be exceeded.
    #[error("limit {limit:?} exceeded: {requested} requested, {limit_value} allowed")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// Amount the call would reach.
        requested: u64,
        /// The limit.
        limit_value: u64,
    },
    /// The object is still in use (EBUSY).
    #[error("busy: {0}")]
    Busy(&'static str),
    /// A blocking call is not satisfied yet: the event loop parks and retries it.
    #[error("would block")]
    WouldBlock,
    /// A wait timed out.
    #[error("timed out")]
    TimedOut,
    /// Not allowed for this caller.
    #[error("permission denied")]
    PermissionDenied,
    /// Needs privilege the caller lacks (uid 0 or the daemon's administrator), as Xe's
    /// high exec-queue priority needs CAP_SYS_NICE (EPERM).
    #[error("not privileged: {0}")]
    NotPrivileged(&'static str),
}

impl SchemeError {
    /// The Redox errno for this error. The only errno mapping in the project.
    pub fn errno(&self) -> i32 {
        match self {
            SchemeError::Decode(d) => decode_errno(d),
            SchemeError::Driver(d) => driver_errno(d),
            SchemeError::BadHandle(_) | SchemeError::WrongHandleKind { .. } => EBADF,
            SchemeError::BadPath(_) | SchemeError::UnknownObject { .. } => ENOENT,
            SchemeError::UnknownBindVm(_) | SchemeError::Invalid(_) => EINVAL,
            SchemeError::NotSupported(_) => EOPNOTSUPP,
            SchemeError::LimitExceeded { limit, .. } => limit_errno(*limit),
            SchemeError::Busy(_) => EBUSY,
            SchemeError::WouldBlock => EWOULDBLOCK,
            SchemeError::TimedOut => ETIME,
            SchemeError::PermissionDenied => EACCES,
            SchemeError::NotPrivileged(_) => EPERM,
        }
    }
}

fn decode_errno(e: &DecodeError) -> i32 {
    match e {
        DecodeError::UnknownOpcode(_) => ENOTTY,
        // As Linux's copy_struct_from_user: a newer client's non-zero extension is E2BIG.
        DecodeError::UnknownExtension { .. } => E2BIG,
        DecodeError::UserFenceNotSupported { .. } => EOPNOTSUPP,
        DecodeError::Truncated { .. }
        | DecodeError::TrailingBytes { .. }
        | DecodeError::BadVersion(_)
        | DecodeError::BadArgsSize { .. }
        | DecodeError::ReservedNonZero { .. }
        | DecodeError::UnknownFlags { .. }
        | DecodeError::BadEnum { .. }
        | DecodeError::Misaligned { .. }
        | DecodeError::Overflow { .. }
        | DecodeError::Zero { .. }
        | DecodeError::TooMany { .. }
        | DecodeError::BadStride { .. }
        | DecodeError::BadBindOp { .. }
        | DecodeError::BadSync { .. }
        | DecodeError::MultipleUserFences
        | DecodeError::BadVmFlags(_) => EINVAL,
    }
}

fn driver_errno(e: &DriverError) -> i32 {
    match e {
        DriverError::Invalid(_) | DriverError::NoFence { .. } => EINVAL,
        DriverError::VmGone => ENOENT,
        DriverError::Busy(_) => EBUSY,
        DriverError::NoSpace { .. } => ENOSPC,
        DriverError::NoMemory => ENOMEM,
        DriverError::Fault { .. } => EFAULT,
        DriverError::NotSupported(_) => EOPNOTSUPP,
        DriverError::Interrupted => EINTR,
        DriverError::DeviceError => EIO,
        DriverError::Canceled => ECANCELED,
        DriverError::RingFull => EWOULDBLOCK,
        DriverError::TooMany(_) => EMFILE,
    }
}

fn limit_errno(limit: Limit) -> i32 {
    match limit {
        // Memory over the client's share is overcommit, as UAPI.md's ENOSPC.
        Limit::VramBytes | Limit::SystemBytes | Limit::GpuMappings | Limit::TimelinePoints => {
            ENOSPC
        }
        Limit::Mappings => ENOMEM,
        // Back-pressure: the client waits for earlier work and retries. Not EWOULDBLOCK, which
        // the event loop would park silently.
        Limit::InFlight => EBUSY,
        Limit::Objects | Limit::Handles | Limit::Devices => EMFILE,
    }
}

impl From<SchemeError> for syscall::Error {
    fn from(e: SchemeError) -> Self {
        syscall::Error::new(e.errno())
    }
}
