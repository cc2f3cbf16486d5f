//! `ExecQueue`: an exec queue (copy / compute engine) or an extra bind queue of a VM, and the
//! EXEC builder.
//!
//! Owns: EXEC_QUEUE_CREATE / EXEC_QUEUE_DESTROY, `ExecBuilder` (batches + syncs → one EXEC),
//! and user-fence waits that name the queue (failing with `EIO` if it is reset). Must not:
//! encode commands (that is `cmd.rs`) or validate what the server validates.

use std::sync::Arc;

use gpu_scheme::uapi::flags::{BatchFormat, EngineClass, QueuePriority, WaitOp};
use gpu_scheme::uapi::wire::ExecQueueCreateArgs;
use gpu_scheme::uapi::{ExecRequest, QueueId, Request, Timeout};

use crate::error::Result;
use crate::syncobj::Syncobj;
use crate::syncs::SyncList;
use crate::vm::{wait_user_fence_on, Vm, VmRef};

/// How to create an exec queue beyond its VM and engine class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueOptions {
    /// Scheduling priority (`High` needs privilege).
    pub priority: QueuePriority,
    /// How the queue's batches are encoded: `Intel` runs Intel MI_* command streams (copy
    /// and compute queues only).
    pub batches: BatchFormat,
}

/// A queue on a VM. Holds the VM alive; dropping it destroys the queue (after which the VM may
/// be destroyed).
pub struct ExecQueue {
    vm: Arc<VmRef>,
    id: QueueId,
    class: EngineClass,
    live: bool,
}

impl std::fmt::Debug for ExecQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecQueue")
            .field("id", &self.id)
            .field("class", &self.class)
            .finish()
    }
}

impl ExecQueue {
    /// EXEC_QUEUE_CREATE on `vm` for an engine `class` (`Copy`, `Compute`, or `VmBind` for an
    /// extra in-order bind queue), at normal priority.
    pub fn create(vm: &Vm, class: EngineClass) -> Result<ExecQueue> {
        Self::create_with_priority(vm, class, QueuePriority::Normal)
    }

    /// EXEC_QUEUE_CREATE at `priority`. `High` needs privilege (`EPERM` otherwise); bind
    /// queues take only `Normal` (`EINVAL`).
    pub fn create_with_priority(
        vm: &Vm,
        class: EngineClass,
        priority: QueuePriority,
    ) -> Result<ExecQueue> {
        let options = QueueOptions {
            priority,
            ..QueueOptions::default()
        };
        Self::create_with(vm, class, options)
    }

    /// EXEC_QUEUE_CREATE with `options`. Bind queues take only the defaults (`EINVAL`).
    pub fn create_with(vm: &Vm, class: EngineClass, options: QueueOptions) -> Result<ExecQueue> {
        let req = Request::ExecQueueCreate {
            vm: vm.id(),
            class,
            priority: options.priority,
            batches: options.batches,
        };
        let args: ExecQueueCreateArgs = vm.device().request(&req)?;
        Ok(ExecQueue {
            vm: Arc::clone(&vm.inner),
            id: QueueId(args.queue_id),
            class,
            live: true,
        })
    }

    /// The id in this client.
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// The engine class.
    pub fn class(&self) -> EngineClass {
        self.class
    }

    /// Whether the queue is on `vm`.
    pub fn on_vm(&self, vm: &Vm) -> bool {
        Arc::ptr_eq(&self.vm, &vm.inner)
    }

    /// Start an EXEC of the batch at GPU VA `batch_va` (8-byte aligned; its commands end with
    /// BATCH_END or its declared length).
    pub fn exec(&self, batch_va: u64) -> ExecBuilder<'_> {
        ExecBuilder {
            queue: self,
            batches: vec![batch_va],
            syncs: SyncList::default(),
        }
    }

    /// Start an EXEC with no batch: a pure sync operation (waits, then signals).
    pub fn sync_only(&self) -> ExecBuilder<'_> {
        ExecBuilder {
            queue: self,
            batches: Vec::new(),
            syncs: SyncList::default(),
        }
    }

    /// WAIT_USER_FENCE in this queue's VM; fails with `EIO` if the queue is reset meanwhile.
    /// `Ok(false)` when the timeout expired.
    pub fn wait_user_fence(
        &self,
        va: u64,
        op: WaitOp,
        value: u64,
        mask: u64,
        timeout: Timeout,
    ) -> Result<bool> {
        wait_user_fence_on(&self.vm, Some(self.id), va, op, value, mask, timeout)
    }

    /// EXEC_QUEUE_DESTROY now, reporting errors (dropping does the same, silently).
    pub fn destroy(mut self) -> Result<()> {
        self.vm.dev.send(&Request::ExecQueueDestroy(self.id))?;
        self.live = false;
        Ok(())
    }
}

impl Drop for ExecQueue {
    fn drop(&mut self) {
        if self.live {
            // Errors cannot be reported from drop; `destroy` reports them.
            let _ = self.vm.dev.send(&Request::ExecQueueDestroy(self.id));
        }
    }
}

/// An EXEC being built (`ExecQueue::exec`).
#[must_use = "an exec does nothing until `submit`"]
pub struct ExecBuilder<'a> {
    queue: &'a ExecQueue,
    batches: Vec<u64>,
    syncs: SyncList,
}

impl ExecBuilder<'_> {
    /// Run another batch after the previous ones (at most 16 per EXEC).
    pub fn batch(mut self, batch_va: u64) -> Self {
        self.batches.push(batch_va);
        self
    }

    /// Wait for `obj`'s binary fence first.
    pub fn wait(mut self, obj: &Syncobj) -> Self {
        self.syncs.wait(&self.queue.vm.dev, obj, 0);
        self
    }

    /// Wait for timeline `point` of `obj` first.
    pub fn wait_point(mut self, obj: &Syncobj, point: u64) -> Self {
        self.syncs.wait(&self.queue.vm.dev, obj, point);
        self
    }

    /// Signal `obj`'s binary fence when the batches complete.
    pub fn signal(mut self, obj: &Syncobj) -> Self {
        self.syncs.signal(&self.queue.vm.dev, obj, 0);
        self
    }

    /// Signal timeline `point` of `obj` when the batches complete.
    pub fn signal_point(mut self, obj: &Syncobj, point: u64) -> Self {
        self.syncs.signal(&self.queue.vm.dev, obj, point);
        self
    }

    /// Write `value` at GPU VA `va` of the queue's VM when the batches complete.
    pub fn user_fence(mut self, va: u64, value: u64) -> Self {
        self.syncs.user_fence(va, value);
        self
    }

    /// The request `submit` sends.
    pub fn request(&self) -> Result<ExecRequest> {
        if let Some(e) = &self.syncs.error {
            return Err(e.clone());
        }
        Ok(ExecRequest {
            queue: self.queue.id,
            batches: self.batches.clone(),
            syncs: self.syncs.specs.clone(),
        })
    }

    /// Send the EXEC.
    pub fn submit(self) -> Result<()> {
        let req = self.request()?;
        self.queue.vm.dev.send(&Request::Exec(req))
    }
}
