//! The VM_BIND builder: map / unmap / unmap-all / null / userptr / mirror / prefetch ops with
//! per-op flags, an optional bind queue, and waits, signals and a user fence.
//!
//! Owns: turning builder calls into exactly one `VmBindRequest` (the request the scheme's
//! decoder yields for the bytes sent) and submitting it. Must not: validate what the server
//! validates (alignment, ranges, the op table): a malformed bind gets the server's errno. It
//! only rejects what the server could not see: objects of another device or VM, and a flag
//! modifier with no op to apply to (`Call::Local`, `EINVAL`).

use gpu_scheme::uapi::flags::{BindFlags, EngineClass, Region};
use gpu_scheme::uapi::{BindOp, BindOpKind, QueueId, Request, VmBindRequest};

use crate::bo::Bo;
use crate::error::{Call, Error, Result};
use crate::queue::ExecQueue;
use crate::syncobj::Syncobj;
use crate::syncs::SyncList;
use crate::vm::Vm;

/// A VM_BIND being built (`Vm::bind`). Ops run in order, all or nothing. Without syncs
/// `submit` returns once the page tables are updated; with syncs it returns after validation
/// and the work completes in queue order.
#[must_use = "a bind does nothing until `submit`"]
pub struct BindBuilder<'a> {
    vm: &'a Vm,
    queue: Option<QueueId>,
    ops: Vec<BindOp>,
    syncs: SyncList,
}

impl<'a> BindBuilder<'a> {
    pub(crate) fn new(vm: &'a Vm) -> Self {
        BindBuilder {
            vm,
            queue: None,
            ops: Vec::new(),
            syncs: SyncList::default(),
        }
    }

    fn fail(&mut self) {
        self.syncs.error.get_or_insert(Error::invalid(Call::Local));
    }

    fn op(mut self, kind: BindOpKind, va: u64, range: u64) -> Self {
        self.ops.push(BindOp {
            kind,
            addr: va,
            range,
            flags: BindFlags::empty(),
            pat_index: 0,
        });
        self
    }

    fn own_bo(&mut self, bo: &Bo) {
        if !bo.device().same(self.vm.device()) {
            self.fail();
        }
    }

    /// Map `range` bytes of `bo` from `offset` at GPU VA `va`.
    pub fn map(mut self, bo: &Bo, offset: u64, va: u64, range: u64) -> Self {
        self.own_bo(bo);
        let kind = BindOpKind::Map {
            bo: bo.id(),
            bo_offset: offset,
        };
        self.op(kind, va, range)
    }

    /// Unmap `[va, va + range)` (splitting mappings that straddle its edges).
    pub fn unmap(self, va: u64, range: u64) -> Self {
        self.op(BindOpKind::Unmap, va, range)
    }

    /// Unmap every mapping of `bo` in this VM.
    pub fn unmap_all(mut self, bo: &Bo) -> Self {
        self.own_bo(bo);
        self.op(BindOpKind::UnmapAll { bo: bo.id() }, 0, 0)
    }

    /// A sparse (NULL) range: reads return zero, writes are dropped.
    pub fn map_null(self, va: u64, range: u64) -> Self {
        self.op(BindOpKind::MapNull, va, range)
    }

    /// Map this process's memory at CPU address `cpu_addr` (MAP_USERPTR).
    pub fn map_userptr(self, cpu_addr: u64, va: u64, range: u64) -> Self {
        self.op(BindOpKind::MapUserptr { userptr: cpu_addr }, va, range)
    }

    /// Reserve VA mirroring the CPU address space (SVM; fault-mode VMs).
    pub fn map_cpu_mirror(self, va: u64, range: u64) -> Self {
        self.op(BindOpKind::MapCpuMirror, va, range)
    }

    /// Populate / migrate `[va, va + range)` into `region`.
    pub fn prefetch(self, va: u64, range: u64, region: Region) -> Self {
        self.op(BindOpKind::Prefetch { region }, va, range)
    }

    fn last_op(mut self, f: impl FnOnce(&mut BindOp)) -> Self {
        match self.ops.last_mut() {
            Some(op) => f(op),
            None => self.fail(),
        }
        self
    }

    /// The last op maps read-only.
    pub fn readonly(self) -> Self {
        self.last_op(|op| op.flags |= BindFlags::READONLY)
    }

    /// The last op populates now, even on a fault-mode VM.
    pub fn immediate(self) -> Self {
        self.last_op(|op| op.flags |= BindFlags::IMMEDIATE)
    }

    /// The last op's cache attribute index (`0..DeviceInfo::pat_entries`).
    pub fn pat_index(self, index: u16) -> Self {
        self.last_op(|op| op.pat_index = index)
    }

    /// Run on `queue` (a `VmBind`-class queue of this VM) instead of the VM's default queue.
    pub fn queue(mut self, queue: &ExecQueue) -> Self {
        if !queue.on_vm(self.vm) || queue.class() != EngineClass::VmBind {
            self.fail();
        }
        self.queue = Some(queue.id());
        self
    }

    /// Wait for `obj`'s binary fence first.
    pub fn wait(mut self, obj: &Syncobj) -> Self {
        self.syncs.wait(self.vm.device(), obj, 0);
        self
    }

    /// Wait for timeline `point` of `obj` first.
    pub fn wait_point(mut self, obj: &Syncobj, point: u64) -> Self {
        self.syncs.wait(self.vm.device(), obj, point);
        self
    }

    /// Signal `obj`'s binary fence when done.
    pub fn signal(mut self, obj: &Syncobj) -> Self {
        self.syncs.signal(self.vm.device(), obj, 0);
        self
    }

    /// Signal timeline `point` of `obj` when done.
    pub fn signal_point(mut self, obj: &Syncobj, point: u64) -> Self {
        self.syncs.signal(self.vm.device(), obj, point);
        self
    }

    /// Write `value` at GPU VA `va` of this VM when done (read it through a mapping of the BO
    /// bound there, or wait with `Vm::wait_user_fence`).
    pub fn user_fence(mut self, va: u64, value: u64) -> Self {
        self.syncs.user_fence(va, value);
        self
    }

    /// The request `submit` sends (what the scheme decodes from its bytes).
    pub fn request(&self) -> Result<VmBindRequest> {
        if let Some(e) = &self.syncs.error {
            return Err(e.clone());
        }
        Ok(VmBindRequest {
            vm: self.vm.id(),
            queue: self.queue,
            ops: self.ops.clone(),
            syncs: self.syncs.specs.clone(),
        })
    }

    /// Send the VM_BIND.
    pub fn submit(self) -> Result<()> {
        let req = self.request()?;
        self.vm.device().send(&Request::VmBind(req))
    }
}
