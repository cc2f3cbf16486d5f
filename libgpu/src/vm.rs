//! `Vm`: a GPU virtual address space of one device, and waits on user fences in it.
//!
//! Owns: VM_CREATE / VM_DESTROY, WAIT_USER_FENCE, and reading the VM's mapping table through
//! a VM view (`dup(device, "vm/<id>")`; the text format is `vm_table.rs`). Queues and VM-private BOs keep the VM
//! alive (they hold its `VmRef`), so dropping the `Vm` before them never leaves them on a
//! destroyed VM; the VM is destroyed when the last of them goes. Must not: build bind requests
//! (that is `bind.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gpu_scheme::uapi::flags::{VmCreateFlags, WaitOp};
use gpu_scheme::uapi::wire::VmCreateArgs;
use gpu_scheme::uapi::{QueueId, Request, Timeout, VmId, WaitUserFenceRequest};

use crate::bind::BindBuilder;
use crate::device::Device;
use crate::error::{Result, ETIME};
use crate::vm_table::{read_table, VmMapping, VmTable};

/// The VM itself, shared by the `Vm` and every queue and private BO on it.
pub(crate) struct VmRef {
    pub(crate) dev: Device,
    pub(crate) id: VmId,
    flags: VmCreateFlags,
    /// Set once VM_DESTROY succeeded, so `Drop` does not destroy again.
    destroyed: AtomicBool,
}

impl Drop for VmRef {
    fn drop(&mut self) {
        if !self.destroyed.load(Ordering::Relaxed) {
            // Errors cannot be reported from drop; `Vm::destroy` reports them.
            let _ = self.dev.send(&Request::VmDestroy(self.id));
        }
    }
}

/// A VM (GPU address space). Dropping it destroys it once its queues and private BOs are gone.
pub struct Vm {
    pub(crate) inner: Arc<VmRef>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("id", &self.inner.id)
            .field("flags", &self.inner.flags)
            .finish()
    }
}

impl Vm {
    /// VM_CREATE with `flags` (`SCRATCH_PAGE`, `LR_MODE`, `FAULT_MODE`).
    pub fn create(dev: &Device, flags: VmCreateFlags) -> Result<Vm> {
        let args: VmCreateArgs = dev.request(&Request::VmCreate(flags))?;
        Ok(Vm {
            inner: Arc::new(VmRef {
                dev: dev.clone(),
                id: VmId(args.vm_id),
                flags,
                destroyed: AtomicBool::new(false),
            }),
        })
    }

    /// The id in this client.
    pub fn id(&self) -> VmId {
        self.inner.id
    }

    /// The flags it was created with.
    pub fn flags(&self) -> VmCreateFlags {
        self.inner.flags
    }

    /// The device it belongs to.
    pub fn device(&self) -> &Device {
        &self.inner.dev
    }

    /// Start a VM_BIND: add ops and syncs, then `submit`.
    pub fn bind(&self) -> BindBuilder<'_> {
        BindBuilder::new(self)
    }

    /// WAIT_USER_FENCE: wait until `(*va & mask) OP (value & mask)` in this VM. `Ok(false)`
    /// when the timeout expired.
    pub fn wait_user_fence(
        &self,
        va: u64,
        op: WaitOp,
        value: u64,
        mask: u64,
        timeout: Timeout,
    ) -> Result<bool> {
        wait_user_fence_on(&self.inner, None, va, op, value, mask, timeout)
    }

    /// The whole mapping table, in VA order, read through a VM view of this VM. BOs are named
    /// by this client's ids (`None` for a BO it no longer names, and for null, userptr and
    /// mirror mappings).
    pub fn mapping_table(&self) -> Result<Vec<VmMapping>> {
        Ok(self.table()?.mappings)
    }

    /// The VM view: header (ids, owner, flags) and every mapping.
    pub fn table(&self) -> Result<VmTable> {
        let view = self.inner.dev.dup(&format!("vm/{}", self.inner.id.0))?;
        read_table(view.as_ref())
    }

    /// VM_DESTROY now, reporting errors (`EBUSY` while queues exist). On error the VM stays
    /// and is destroyed when its last queue or private BO is dropped.
    pub fn destroy(self) -> Result<()> {
        self.inner.dev.send(&Request::VmDestroy(self.inner.id))?;
        self.inner.destroyed.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// WAIT_USER_FENCE in `vm`, failing with `EIO` if `queue` is reset meanwhile.
pub(crate) fn wait_user_fence_on(
    vm: &VmRef,
    queue: Option<QueueId>,
    va: u64,
    op: WaitOp,
    value: u64,
    mask: u64,
    timeout: Timeout,
) -> Result<bool> {
    let req = WaitUserFenceRequest {
        vm: vm.id,
        queue,
        addr: va,
        op,
        value,
        mask,
        timeout,
    };
    match vm.dev.send(&Request::WaitUserFence(req)) {
        Ok(()) => Ok(true),
        Err(e) if e.is_scheme(ETIME) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `wait_user_fence(vm, va, op, value, mask, timeout)`: as `Vm::wait_user_fence`.
pub fn wait_user_fence(
    vm: &Vm,
    va: u64,
    op: WaitOp,
    value: u64,
    mask: u64,
    timeout: Timeout,
) -> Result<bool> {
    vm.wait_user_fence(va, op, value, mask, timeout)
}
