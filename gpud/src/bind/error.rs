//! Errors of the bind engine and the device API, and the error class each maps to.
//!
//! Owns: [`BindError`] (typed, carrying the offending values) and [`ErrorClass`], the class
//! the scheme turns into errno (`DriverError`). Must not: format wire errors or know errno
//! numbers; the scheme does that.

use super::failpoint::Injected;
use crate::exec::ExecError;
use crate::hw::HwError;
use crate::mem::manager::MemError;
use crate::sync::{ExecError as LockError, SyncobjError};
use crate::types::{GpuVa, VmId};
use crate::vm::pagetable::PtError;
use crate::vm::{ApplyError, MappingError, PlanError, VaError};
use thiserror::Error;

/// What kind of failure an error is (the scheme's `DriverError` classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// EINVAL.
    Invalid,
    /// ENOENT: the VM was closed or banned.
    VmGone,
    /// EBUSY.
    Busy,
    /// ENOSPC.
    NoSpace,
    /// ENOMEM.
    NoMemory,
    /// EFAULT.
    Fault,
    /// EOPNOTSUPP.
    NotSupported,
    /// ECANCELED.
    Canceled,
    /// EIO.
    Device,
    /// EMFILE: an object-count limit.
    TooMany,
}

/// Why a bind (or a device call) failed. A failed bind changed nothing.
#[derive(Debug, Error)]
pub enum BindError {
    /// An op breaks the op/flag table (drm-semantics §1.6 step 4).
    #[error("op {index}: {reason}")]
    InvalidOp { index: usize, reason: &'static str },
    /// An invalid VM-create flag combination.
    #[error("invalid VM flags {flags:#x}: {reason}")]
    InvalidVmFlags { flags: u32, reason: &'static str },
    /// A sync entry breaks the sync rules (§1.5).
    #[error("sync {index}: {reason}")]
    InvalidSync { index: usize, reason: &'static str },
    /// A sync entry is not allowed here (LR out-syncs, user fence on a zero-op bind).
    #[error("sync {index} not supported: {reason}")]
    SyncNotSupported { index: usize, reason: &'static str },
    /// A wait sync has no fence at the named point.
    #[error("sync {index}: {source}")]
    SyncMissing {
        index: usize,
        #[source]
        source: SyncobjError,
    },
    /// The range is outside the VA space or touches the reserved region.
    #[error(transparent)]
    Va(#[from] VaError),
    /// The BO window does not fit the BO.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The VM tree refused a step (a bug if ever seen).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The VM is closed or banned.
    #[error("VM {vm:?} is closed or banned")]
    VmGone { vm: VmId },
    /// Unmapping a mapping whose bind user fence has not signalled.
    #[error("mapping at {va:#x} still has an unsignalled bind user fence")]
    Busy { va: GpuVa },
    /// Unmapping or cutting a CPU-address mirror where SVM ranges are still GPU-mapped.
    #[error("CPU-address mirror at {va:#x} still has GPU-mapped SVM ranges")]
    MirrorBusy { va: GpuVa },
    /// Not supported yet or not on this VM (userptr, CPU mirror, ...).
    #[error("not supported: {what}")]
    NotSupported { what: &'static str },
    /// A user-fence address is not mapped writable in the VM.
    #[error("user fence address {va:#x} is not mapped to a BO of the VM")]
    Fault { va: GpuVa },
    /// Locking the reservation objects failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Memory-manager failure (BO validation, creation).
    #[error(transparent)]
    Mem(#[from] MemError),
    /// Page-table preparation failed.
    #[error(transparent)]
    Pt(#[from] PtError),
    /// The device failed (TLB invalidation, context programming).
    #[error(transparent)]
    Hw(#[from] HwError),
    /// Exec-queue creation or submission failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A wait on device work failed or took implausibly long.
    #[error("device work did not complete: {what}")]
    Timeout { what: &'static str },
    /// No free hardware context for another VM.
    #[error("no free hardware context ({count} in use)")]
    NoContext { count: u32 },
    /// Client memory behind a MAP_USERPTR (or its revalidation) could not be resolved, at
    /// CPU address `va`.
    #[error("userptr at {va:#x}: {source}")]
    Userptr {
        va: u64,
        #[source]
        source: crate::svm::MmError,
    },
    /// An injected failure (tests).
    #[error(transparent)]
    Injected(#[from] Injected),
}

impl BindError {
    /// The error's class.
    pub fn class(&self) -> ErrorClass {
        use BindError as E;
        match self {
            E::InvalidOp { .. }
            | E::InvalidVmFlags { .. }
            | E::InvalidSync { .. }
            | E::SyncMissing { .. }
            | E::Va(_)
            | E::Mapping(_)
            | E::Plan(_)
            | E::Apply(_) => ErrorClass::Invalid,
            E::VmGone { .. } => ErrorClass::VmGone,
            E::Busy { .. } | E::MirrorBusy { .. } | E::NoContext { .. } => ErrorClass::Busy,
            E::NotSupported { .. } | E::SyncNotSupported { .. } => ErrorClass::NotSupported,
            E::Fault { .. } => ErrorClass::Fault,
            E::Mem(MemError::NoSpace { .. }) | E::Pt(PtError::NoSpace { .. }) => {
                ErrorClass::NoSpace
            }
            E::Mem(MemError::InvalidSize { .. }) => ErrorClass::Invalid,
            E::Pt(PtError::NoMemory { .. }) | E::Mem(_) | E::Injected(_) => ErrorClass::NoMemory,
            E::Pt(_) => ErrorClass::Invalid,
            E::Lock(_) => ErrorClass::NoMemory,
            E::Exec(e) => match e.kind() {
                crate::exec::ErrorKind::Cancelled => ErrorClass::Canceled,
                crate::exec::ErrorKind::Invalid => ErrorClass::Invalid,
                crate::exec::ErrorKind::Busy => ErrorClass::Busy,
                crate::exec::ErrorKind::NotSupported => ErrorClass::NotSupported,
                crate::exec::ErrorKind::TooMany => ErrorClass::TooMany,
                crate::exec::ErrorKind::Fault => ErrorClass::Fault,
                crate::exec::ErrorKind::NoMemory => ErrorClass::NoMemory,
                _ => ErrorClass::Device,
            },
            // Driver memory (a fence page, a ring, page tables) ran out: a shortage, not a
            // device failure.
            E::Hw(HwError::OutOfDma { .. }) => ErrorClass::NoMemory,
            E::Hw(_) | E::Timeout { .. } => ErrorClass::Device,
            E::Userptr { source, .. } => match source {
                crate::svm::MmError::Again => ErrorClass::Busy,
                crate::svm::MmError::NotSupported => ErrorClass::NotSupported,
                _ => ErrorClass::Fault,
            },
        }
    }
}

impl From<&BindError> for gpu_scheme::driver::DriverError {
    fn from(e: &BindError) -> Self {
        use gpu_scheme::driver::DriverError as D;
        match (e.class(), e) {
            (_, BindError::Fault { va }) => D::Fault { addr: va.get() },
            (ErrorClass::Fault, BindError::Userptr { va, .. }) => D::Fault { addr: *va },
            (
                ErrorClass::Fault,
                BindError::Exec(crate::exec::ExecError::Vm(crate::exec::JobVmError::Fault { va })),
            ) => D::Fault { addr: *va },
            (_, BindError::Mem(MemError::NoSpace { requested, .. })) => {
                D::NoSpace { needed: *requested }
            }
            (_, BindError::Pt(PtError::NoSpace { pages, .. })) => D::NoSpace {
                needed: pages.saturating_mul(crate::types::PAGE_SIZE),
            },
            (_, BindError::InvalidOp { reason, .. })
            | (_, BindError::InvalidSync { reason, .. })
            | (_, BindError::InvalidVmFlags { reason, .. }) => D::Invalid(reason),
            (_, BindError::SyncNotSupported { reason, .. }) => D::NotSupported(reason),
            (_, BindError::NotSupported { what }) => D::NotSupported(what),
            (_, BindError::MirrorBusy { .. }) => {
                D::Busy("CPU-address mirror still has GPU-mapped SVM ranges")
            }
            (ErrorClass::Invalid, _) => D::Invalid("invalid bind argument"),
            (ErrorClass::VmGone, _) => D::VmGone,
            (ErrorClass::Busy, _) => D::Busy("mapping has an unsignalled bind user fence"),
            (ErrorClass::NoSpace, _) => D::NoSpace { needed: 0 },
            (ErrorClass::NoMemory, _) => D::NoMemory,
            (ErrorClass::Fault, _) => D::Fault { addr: 0 },
            (ErrorClass::NotSupported, _) => D::NotSupported("not supported"),
            (ErrorClass::Canceled, _) => D::Canceled,
            (ErrorClass::Device, _) => D::DeviceError,
            (ErrorClass::TooMany, _) => D::TooMany("exec queue limit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpu_scheme::driver::DriverError;

    /// Running out of driver memory (a queue's fence page or ring) is a shortage the client can
    /// retry (ENOMEM), not a device failure (EIO); other hardware errors stay device errors.
    #[test]
    fn out_of_driver_memory_is_no_memory_not_a_device_error() {
        let oom = HwError::OutOfDma { bytes: 4096 };
        for e in [
            BindError::Hw(oom.clone()),
            BindError::Exec(ExecError::Hw(oom)),
        ] {
            assert!(
                matches!(DriverError::from(&e), DriverError::NoMemory),
                "{e:?}"
            );
        }
        let broken = BindError::Hw(HwError::WrongDevice { found: 0 });
        assert!(matches!(
            DriverError::from(&broken),
            DriverError::DeviceError
        ));
    }
}
