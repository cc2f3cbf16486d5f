//! EXEC: exec queues, jobs and the scheduler core that runs them on the hardware rings.
//!
//! Owns: exec queues bound to a hardware context and an engine ([`ExecQueue`]), jobs
//! ([`Job`]), the scheduler thread that writes a job to its ring once every dependency has
//! signalled ([`Scheduler`]), completion through a per-queue fence page and the interrupt
//! dispatcher ([`IrqDispatcher`]), hang recovery (engine reset, banning the guilty queue,
//! resubmitting the innocent ones), context-error isolation, the long-running (LR) rules, the
//! driver's kernel copy queue ([`KernelQueue`]) and the seam to the VM's revalidation step
//! ([`JobVm`]). Must not: build page tables, own buffer objects or know the uAPI wire format;
//! errors become errno in the scheme only. See `docs/exec.md`.

mod busy;
mod contexts;
mod error;
mod irq;
mod job;
mod kernel;
mod queue;
mod recovery;
mod ring;
mod scheduler;
mod slots;
mod vm_hook;

pub use busy::EngineBusy;
pub use contexts::{Acquire, ContextPool, ContextStats, VmCtx};
pub use error::{ErrorKind, ExecError, QueueId, QueueLimit};
pub use irq::{IrqDispatcher, IrqHandler};
pub use job::{Job, OutSync, Payload, UserFenceWrite};
pub use kernel::KernelQueue;
pub use queue::{ExecQueue, FencePage, Priority, QueueConfig, QueueMode, QueueOwner};
pub use ring::{ExecHw, RingFactory, RingQueue};
pub use scheduler::{SchedConfig, SchedStats, Scheduler, DEFAULT_QUANTUM};
pub use vm_hook::{publish_job_fence, JobVm, JobVmError};

#[cfg(test)]
mod tests;
