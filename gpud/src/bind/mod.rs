//! VM_BIND: the driver's VM object and the bind engine (map, unmap, unmap-all, prefetch,
//! null and read-only mappings; all or nothing; bind queues with in/out syncs and user
//! fences) and the VM's exec revalidation step.
//!
//! Files: [`op`] (request vocabulary and validation table), [`error`] (errors and their
//! classes), [`vm`] (the VM object, `JobVm`), `engine` (the bind flow), [`queue`] (bind
//! queues and jobs), `claims` (which jobs of other queues a job waits for), [`failpoint`] (test-only fault injection), [`fault`] (recoverable page faults), [`userptr`] (userptr mappings and the notifier path), [`mirror`] (CPU-address mirrors:
//! SVM ranges on GPU fault), [`migrate`] (SVM ranges to VRAM and back, eviction). See `docs/bind.md`.

mod claims;
pub mod error;
pub mod failpoint;
pub mod fault;
pub mod mapped;
pub mod migrate;
pub mod mirror;
pub mod op;
pub mod queue;
pub mod userptr;
pub mod vm;
pub mod zap;

mod engine;

pub use error::{BindError, ErrorClass};
pub use op::{BindFlags, BindOp, BindSync, OpKind, Region, VmFlags};
pub use queue::{BindQueue, BindQueueId};
pub use vm::{Vm, VmState, VA_SPACE};
pub use zap::ZapError;

#[cfg(test)]
mod tests;
