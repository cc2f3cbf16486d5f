//! Errors of the exec layer and the exec-queue id.
//!
//! Owns: [`ExecError`], whose variants carry the offending values, and [`ErrorKind`], the
//! coarse class the scheme maps to an errno. Must not: know errno numbers.

use super::vm_hook::JobVmError;
use crate::hw::HwError;
use std::fmt;
use thiserror::Error;

/// An exec queue's id (unique per scheduler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub u32);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which exec-queue limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// Queues of one owner (client): `SchedConfig::max_queues_per_owner`.
    Owner,
    /// Queues of the whole daemon: `SchedConfig::max_queues`.
    Device,
}

/// Errors of exec-queue creation and submission.
#[derive(Debug, Error)]
pub enum ExecError {
    /// The queue was banned after one of its jobs hung (ECANCELED).
    #[error("exec queue {queue} was banned after a job hang")]
    QueueBanned { queue: QueueId },
    /// The queue's VM context hit a fatal error (or the VM was banned) (ECANCELED).
    #[error("the VM of exec queue {queue} was banned (context {ctx}, error reason {reason})")]
    VmBanned {
        queue: QueueId,
        ctx: u32,
        reason: u8,
    },
    /// The device stopped answering for this queue (ECANCELED).
    #[error("exec queue {queue} lost its hardware queue")]
    DeviceLost { queue: QueueId },
    /// The queue is being destroyed.
    #[error("exec queue {queue} is closed")]
    QueueClosed { queue: QueueId },
    /// A long-running queue's ring has no room (EWOULDBLOCK).
    #[error("long-running exec queue {queue}: ring full (need {need} dwords, {free} free)")]
    WouldBlock {
        queue: QueueId,
        need: usize,
        free: usize,
    },
    /// Long-running queues signal user fences only (EOPNOTSUPP).
    #[error("long-running exec queue {queue} cannot signal {count} dma-fence out-syncs")]
    LrOutSync { queue: QueueId, count: usize },
    /// The owner or the daemon holds as many exec queues as it may (EMFILE).
    #[error("too many exec queues: the {scope:?} limit is {limit}")]
    TooManyQueues { scope: QueueLimit, limit: u32 },
    /// The job can never fit its ring (EINVAL).
    #[error("job of {dwords} dwords does not fit a ring of {ring_dwords} dwords")]
    JobTooLarge { dwords: usize, ring_dwords: usize },
    /// A malformed job (EINVAL).
    #[error("invalid job: {what} ({value:#x})")]
    BadJob { what: &'static str, value: u64 },
    /// The VM's revalidation step failed.
    #[error(transparent)]
    Vm(#[from] JobVmError),
    /// The hardware layer failed.
    #[error(transparent)]
    Hw(#[from] HwError),
}

/// The class of an [`ExecError`], for the scheme's errno mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Queue reset/banned, VM banned, device lost → ECANCELED.
    Cancelled,
    /// LR ring full → EWOULDBLOCK.
    WouldBlock,
    /// Combination not supported → EOPNOTSUPP.
    NotSupported,
    /// Bad argument → EINVAL.
    Invalid,
    /// Out of hardware queues → EBUSY (no exec error has it since queues became software
    /// objects; kept for the bind layer's mapping).
    Busy,
    /// An exec-queue limit → EMFILE.
    TooMany,
    /// Closed queue → ENOENT.
    NotFound,
    /// Revalidation ran out of memory or hit contention → per the VM error.
    Vm,
    /// Memory for the queue's driver structures (its ring) ran out → ENOMEM: a resource
    /// shortage the client can retry, not a device failure.
    NoMemory,
    /// A device error → EIO.
    Device,
}

impl ExecError {
    /// The coarse class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExecError::QueueBanned { .. }
            | ExecError::VmBanned { .. }
            | ExecError::DeviceLost { .. } => ErrorKind::Cancelled,
            ExecError::WouldBlock { .. } => ErrorKind::WouldBlock,
            ExecError::LrOutSync { .. } => ErrorKind::NotSupported,
            ExecError::JobTooLarge { .. } | ExecError::BadJob { .. } => ErrorKind::Invalid,
            ExecError::TooManyQueues { .. } => ErrorKind::TooMany,
            ExecError::QueueClosed { .. } => ErrorKind::NotFound,
            ExecError::Vm(JobVmError::Banned) => ErrorKind::Cancelled,
            ExecError::Vm(_) => ErrorKind::Vm,
            ExecError::Hw(HwError::OutOfDma { .. }) => ErrorKind::NoMemory,
            ExecError::Hw(_) => ErrorKind::Device,
        }
    }
}
