//! The seam between a job and its VM: the revalidation step that runs before every job.
//!
//! Owns: the [`JobVm`] trait the VM implements and [`publish_job_fence`], the usage rule for
//! the job fence. The order the exec layer keeps, per job: lock the VM resv and every external
//! object (with `sync::Exec`, fence slots reserved) → validate evicted BOs and rebind →
//! arm the job (its fence exists) → publish the fence → queue the job → unlock. Must not:
//! know how BOs are validated; that is the VM's business.

use super::contexts::VmCtx;
use crate::sync::{self, Exec, Fence, Resv, Usage};
use std::sync::Arc;
use thiserror::Error;

/// Errors of the VM's revalidation step.
#[derive(Debug, Error)]
pub enum JobVmError {
    /// Locking failed (duplicate object, resv error).
    #[error(transparent)]
    Lock(#[from] sync::ExecError),
    /// A BO could not be made resident again.
    #[error("revalidation of {what} failed: no memory")]
    NoMemory { what: String },
    /// Client memory behind a userptr could not be resolved again (EFAULT): `va` is its CPU
    /// address.
    #[error("userptr at {va:#x} cannot be revalidated")]
    Fault { va: u64 },
    /// The VM was banned or closed (ECANCELED).
    #[error("the VM was banned")]
    Banned,
}

/// What a VM does around each job of its exec queues.
pub trait JobVm: Send + Sync {
    /// Locks the VM resv and every external object into `exec` (retrying on contention via
    /// `exec.run`), reserving one fence slot on each; validates evicted BOs and rebinds them.
    /// Returns fences the job must wait for: the VM resv's KERNEL fences (moves, clears) and
    /// the rebinds' fences.
    fn lock_and_validate(&self, exec: &mut Exec) -> Result<Vec<Arc<Fence>>, JobVmError>;

    /// Publishes the armed job's fence on the locked objects: BOOKKEEP on the VM resv, WRITE
    /// on external objects (see [`publish_job_fence`]).
    fn publish(&self, exec: &Exec, fence: &Arc<Fence>) -> Result<(), JobVmError>;

    /// The VM's entry in the context pool: its queues get a hardware context each time they
    /// are loaded on a hardware queue (`None`: the queue's fixed `QueueConfig::ctx`).
    fn hw_context(&self) -> Option<Arc<VmCtx>> {
        None
    }

    /// Whether the VM was banned; its queues then refuse jobs.
    fn is_banned(&self) -> bool {
        false
    }
}

/// Adds `fence` to every object `exec` holds: BOOKKEEP on `vm_resv` (no implicit sync
/// inside a VM), WRITE on the others (external objects shared with other clients).
pub fn publish_job_fence(
    exec: &Exec,
    vm_resv: &Arc<Resv>,
    fence: &Arc<Fence>,
) -> Result<(), sync::ExecError> {
    for resv in exec.locked() {
        let usage = if Arc::ptr_eq(resv, vm_resv) {
            Usage::Bookkeep
        } else {
            Usage::Write
        };
        exec.add_fence(resv, fence.clone(), usage)?;
    }
    Ok(())
}
