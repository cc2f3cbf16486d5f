//! The driver's kernel queue: a copy-engine exec queue running driver-built command dwords
//! in the kernel context (whose page tables, a linear map of VRAM and system memory, the
//! memory layer builds).
//!
//! Owns: [`KernelQueue`], the implementation side of `gpud::mem`'s `CopyEngine` seam (the
//! trait impl is a one-line forward to [`KernelQueue::submit`]). Must not: build page tables
//! or know what the copies are for.

use super::error::ExecError;
use super::job::Job;
use super::queue::{ExecQueue, FencePage, Priority, QueueConfig, QueueMode};
use super::scheduler::Scheduler;
use crate::hw::{Engine, HwCtx};
use crate::sync::Fence;
use std::sync::Arc;
use std::time::Duration;

/// Kernel jobs are driver work of bounded size: a generous timeout still catches a hang.
pub const KERNEL_JOB_TIMEOUT: Duration = Duration::from_secs(10);

/// The driver-internal copy queue.
pub struct KernelQueue {
    queue: ExecQueue,
}

impl KernelQueue {
    /// Creates the kernel queue on the copy engine in `ctx`, completing through `fence_page`.
    pub fn new(sched: &Scheduler, ctx: HwCtx, fence_page: FencePage) -> Result<Self, ExecError> {
        let queue = sched.create_queue(QueueConfig {
            engine: Engine::Copy,
            ctx,
            fence_page,
            fence_region: None,
            mode: QueueMode::Dma {
                timeout: KERNEL_JOB_TIMEOUT,
            },
            vm: None,
            // Page-table copies and evictions gate client work: they go before it.
            priority: Priority::High,
            owner: None,
            batches: Default::default(),
        })?;
        Ok(Self { queue })
    }

    /// Runs `commands` after `deps`; returns the fence that signals when they completed.
    pub fn submit(&self, commands: &[u32], deps: &[Arc<Fence>]) -> Result<Arc<Fence>, ExecError> {
        self.queue
            .submit(Job::commands(commands.to_vec()).with_deps(deps.iter().cloned()))
    }

    /// The underlying exec queue.
    pub fn queue(&self) -> &ExecQueue {
        &self.queue
    }
}
