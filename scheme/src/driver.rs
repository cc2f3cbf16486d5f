//! The driver trait: what the scheme server needs from a GPU driver.
//!
//! Owns: `GpuDriver`, the resolved (id-free) argument types it receives, and `DriverError`.
//! The server validates and resolves client ids to driver objects before calling; the driver
//! never sees a client-controlled id and never returns errno (the scheme maps `DriverError`).
//! Must not: know about handles, clients' id namespaces, or wire layouts.
//!
//! Driver objects are cheap clonable references (e.g. `Arc`s): the scheme keeps clones in its
//! per-client tables, and a BO or syncobj imported by another client is the same object.

use syscall::flag::MapFlags;
use thiserror::Error;

use crate::uapi::flags::{BatchFormat, EngineClass, QueuePriority, VmCreateFlags, WaitOp};
use crate::uapi::request::{BindOp, BoCreateRequest};
pub use crate::wake::WakeToken;

/// What a call that may have to wait for GPU work returns: `None` when it is done,
/// `Some(pending)` when its caller must be answered later, once `pending` completes (the
/// server parks the call with EWOULDBLOCK and asks `GpuDriver::pending_state` on every wake).
pub type Submitted<P> = Result<Option<P>, DriverError>;

/// Identifies one client (one device handle) to the driver, for accounting and teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

/// Static device facts the scheme reports in DEVICE_QUERY and uses for validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// Bits of GPU VA.
    pub va_bits: u32,
    /// Bit per engine class (`1 << class`).
    pub engine_mask: u32,
    /// Bit per supported page size.
    pub page_sizes: u64,
    /// System memory usable by the device, bytes.
    pub sys_size: u64,
    /// System memory free, bytes.
    pub sys_free: u64,
    /// VRAM size (0: none).
    pub vram_size: u64,
    /// VRAM free.
    pub vram_free: u64,
    /// Start of the VA range reserved in every VM.
    pub reserved_va_start: u64,
    /// Length of the reserved VA range.
    pub reserved_va_len: u64,
    /// Number of PAT indices.
    pub pat_entries: u32,
}

/// What the driver tracks per client that the scheme's limits need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientUsage {
    /// Binds and jobs submitted and not yet complete.
    pub in_flight: u64,
    /// GPU VA mappings (VMAs) across the client's VMs.
    pub gpu_mappings: u64,
    /// Bytes of page-table pages the client's VMs hold (charged against its system memory).
    pub table_bytes: u64,
    /// Bytes of system memory holding the client's userptr pages for the device (charged
    /// against its system memory too).
    pub userptr_bytes: u64,
}

/// A BO a client holds, for its DRM fdinfo memory lines: each object once, whether the
/// client created it or imported it (Linux counts every GEM handle of the file, imported ones
/// included).
#[derive(Debug)]
pub struct HeldBo<'a, B> {
    /// The BO.
    pub bo: &'a B,
    /// Another client holds it too (it imported this client's BO, or this client imported
    /// another's): Linux's `drm-shared-*` rule, a GEM object with handles in more than one file.
    pub shared: bool,
}

/// A resolved bind operation: the BO id replaced by the driver's BO.
#[derive(Debug, Clone)]
pub struct ResolvedBindOp<B> {
    /// The validated op as sent (its `BoId` is informational only).
    pub op: BindOp,
    /// The BO for MAP / UNMAP_ALL.
    pub bo: Option<B>,
}

/// A resolved sync entry.
#[derive(Debug, Clone)]
pub enum ResolvedSync<S> {
    /// Wait for the syncobj's fence (point 0) or a timeline point before starting.
    Wait(S, u64),
    /// Signal the syncobj (point 0) or attach a timeline point when done.
    Signal(S, u64),
    /// Write `value` at GPU VA `addr` in the VM of the work when done.
    UserFence {
        /// GPU VA.
        addr: u64,
        /// Value.
        value: u64,
    },
}

/// State of a syncobj point, as seen without blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointState {
    /// A fence exists and has signalled.
    Signaled,
    /// A fence exists and has not signalled yet.
    Pending,
    /// No fence is attached to that point (yet).
    NoFence,
}

/// What backs one mapping of a VM's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingBacking {
    /// A BO (`key` as `GpuDriver::bo_key` gives it) from byte `offset`.
    Bo {
        /// The driver's daemon-wide key of the BO.
        key: u64,
        /// Offset in the BO of the first mapped byte.
        offset: u64,
    },
    /// A NULL (sparse) mapping: reads zero, writes dropped.
    Null,
    /// Client CPU memory from CPU address `addr`.
    Userptr {
        /// CPU address of the first page.
        addr: u64,
    },
    /// A CPU_ADDR_MIRROR (SVM) range.
    Mirror,
}

/// One GPU VA mapping of a VM, `[start, end)`, as `GpuDriver::vm_table` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmMapping {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What backs it.
    pub backing: MappingBacking,
    /// PTEs are read-only.
    pub read_only: bool,
}

/// Errors the driver reports; only the scheme turns them into errno.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DriverError {
    /// An argument the driver rejects (EINVAL).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// A VM that was destroyed or banned (ENOENT).
    #[error("VM is closed or banned")]
    VmGone,
    /// Still in use (EBUSY): unsignalled bind user fence, mirror range with GPU mappings, …
    #[error("busy: {0}")]
    Busy(&'static str),
    /// Overcommit (ENOSPC).
    #[error("no space: need {needed} bytes")]
    NoSpace {
        /// Bytes that could not be placed.
        needed: u64,
    },
    /// Out of memory (ENOMEM).
    #[error("out of memory")]
    NoMemory,
    /// Bad client memory (EFAULT).
    #[error("bad address {addr:#x}")]
    Fault {
        /// The address.
        addr: u64,
    },
    /// The combination is not supported (EOPNOTSUPP).
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// Interrupted; the client retries (EINTR).
    #[error("interrupted")]
    Interrupted,
    /// Device error on the queue named in the call (EIO).
    #[error("device error on the queue")]
    DeviceError,
    /// Queue or VM lost (reset / banned) (ECANCELED).
    #[error("queue or VM lost")]
    Canceled,
    /// A long-running queue's ring is full (EWOULDBLOCK: the event loop parks and retries).
    #[error("ring full")]
    RingFull,
    /// A driver-side object limit (EMFILE), e.g. exec queues per client.
    #[error("too many: {0}")]
    TooMany(&'static str),
    /// Waiting on a syncobj point with no fence (EINVAL).
    #[error("no fence at point {point}")]
    NoFence {
        /// The point.
        point: u64,
    },
}

/// The driver the scheme serves. `gpud` implements it; `crate::testing::FakeDriver` is an
/// in-memory implementation for tests.
///
/// Every method is non-blocking: waits are expressed as checks (`syncobj_state`,
/// `user_fence_value`) and the server parks requests that are not satisfied yet.
pub trait GpuDriver {
    /// A VM.
    type Vm: Clone;
    /// A buffer object.
    type Bo: Clone;
    /// An exec or bind queue.
    type Queue: Clone;
    /// A syncobj.
    type Syncobj: Clone + Send + 'static;
    /// Work a parked call waits for (a synchronous bind's job, an EXEC's preparation, a
    /// destroy's in-flight work).
    type Pending: Clone;

    /// Static facts and free memory.
    fn device_info(&self) -> DeviceInfo;
    /// Monotonic device clock, nanoseconds (timeouts are measured on it).
    fn now_ns(&self) -> u64;
    /// Per-client usage the scheme's limits need.
    fn client_usage(&self, client: ClientId) -> ClientUsage;
    /// A client's device handle closed: forget its per-client state before the scheme destroys
    /// its queues and VMs (which cancels its queued work). Runs on the server thread, so it
    /// must not wait for GPU work: a dying client must not stall the others.
    fn client_stop(&self, client: ClientId);
    /// Extra `key: value` stats lines for a client (`None`: device-wide).
    fn stats(&self, client: Option<ClientId>) -> Vec<(String, String)>;
    /// A client's DRM fdinfo memory lines (`drm-total-<region>`, `drm-shared-<region>`,
    /// `drm-resident-<region>`) for the BOs it holds. The scheme knows who holds what (imports
    /// are its business); the driver knows where the memory is.
    fn memory_stats(&self, _bos: &[HeldBo<'_, Self::Bo>]) -> Vec<(String, String)> {
        Vec::new()
    }

    /// VM_CREATE.
    fn vm_create(&self, client: ClientId, flags: VmCreateFlags) -> Result<Self::Vm, DriverError>;
    /// VM_DESTROY (also called on teardown, which ignores the pending part). `Some`: the VM
    /// is closed (new calls on it fail) and the call is answered once its work in flight
    /// retired.
    fn vm_destroy(&self, vm: &Self::Vm) -> Submitted<Self::Pending>;
    /// The VM's daemon-wide id (the one device-wide stats and `gpuctl vm` name); unique among
    /// live VMs.
    fn vm_key(&self, vm: &Self::Vm) -> u64;
    /// The BO's daemon-wide id, to match `MappingBacking::Bo::key`.
    fn bo_key(&self, bo: &Self::Bo) -> u64;
    /// The whole mapping table of `vm`, in VA order. `VmGone` once the VM is destroyed.
    fn vm_table(&self, vm: &Self::Vm) -> Result<Vec<VmMapping>, DriverError>;
    /// How many mappings `vm` has (the stats' per-VM summary). Drivers that can count without
    /// building the table should.
    fn vm_mapping_count(&self, vm: &Self::Vm) -> u64 {
        self.vm_table(vm).map_or(0, |t| t.len() as u64)
    }
    /// BO_CREATE; `vm` is set for VM-private BOs.
    fn bo_create(
        &self,
        client: ClientId,
        req: &BoCreateRequest,
        vm: Option<&Self::Vm>,
    ) -> Result<Self::Bo, DriverError>;
    /// Size of a BO in bytes.
    fn bo_size(&self, bo: &Self::Bo) -> u64;
    /// Exec/bind queue creation. `priority` is normal and `batches` native for bind queues;
    /// the scheme checked the caller's privilege for a high priority.
    fn queue_create(
        &self,
        client: ClientId,
        vm: &Self::Vm,
        class: EngineClass,
        priority: QueuePriority,
        batches: BatchFormat,
    ) -> Result<Self::Queue, DriverError>;
    /// Queue destruction (also called on teardown, which ignores the pending part). `Some`:
    /// answered once the queue's work in flight retired.
    fn queue_destroy(&self, queue: &Self::Queue) -> Submitted<Self::Pending>;

    /// VM_BIND, all or nothing. `Some` for a synchronous bind whose job has not run yet: it
    /// is committed (later binds on the queue order after it) and answered when it ran.
    fn vm_bind(
        &self,
        client: ClientId,
        vm: &Self::Vm,
        queue: Option<&Self::Queue>,
        ops: Vec<ResolvedBindOp<Self::Bo>>,
        syncs: Vec<ResolvedSync<Self::Syncobj>>,
    ) -> Submitted<Self::Pending>;
    /// EXEC. `Some` when the submission needs preparation that waits (BOs to move back): it
    /// runs on a worker and the call is answered when the jobs are queued (or refused).
    fn exec(
        &self,
        client: ClientId,
        queue: &Self::Queue,
        batches: &[u64],
        syncs: Vec<ResolvedSync<Self::Syncobj>>,
    ) -> Submitted<Self::Pending>;

    /// The outcome of pending work: `None` while it runs, then the call's answer.
    fn pending_state(&self, pending: &Self::Pending) -> Option<Result<(), DriverError>>;
    /// Fires `wake` once when `pending` may have completed. `false`: cannot watch it (the
    /// server then re-checks it on a short poll).
    fn watch_pending(&self, pending: &Self::Pending, wake: WakeToken) -> bool {
        let _ = (pending, wake);
        false
    }
    /// Fires `wake` once when the fence at `point` of `s` signals. `false`: nothing to watch
    /// (no fence at that point yet; the server re-checks on a short poll).
    fn watch_syncobj(&self, s: &Self::Syncobj, point: u64, wake: WakeToken) -> bool {
        let _ = (s, point, wake);
        false
    }
    /// Fires `wake` once when some work of `client` in flight completes (an EXEC parked past
    /// the in-flight limit may then go). `false`: nothing to watch (the server polls).
    fn watch_in_flight(&self, client: ClientId, wake: WakeToken) -> bool {
        let _ = (client, wake);
        false
    }
    /// Fires `wake` once when work that could write a user fence in `vm` completes (any job
    /// of the VM). `false`: no such work is pending (the server re-checks on a short poll).
    fn watch_user_fence(&self, vm: &Self::Vm, wake: WakeToken) -> bool {
        let _ = (vm, wake);
        false
    }
    /// Read the 64-bit value at GPU VA `addr` of `vm` for WAIT_USER_FENCE. `queue` is the queue
    /// named in the call: a reset queue yields `DeviceError`.
    fn user_fence_value(
        &self,
        vm: &Self::Vm,
        queue: Option<&Self::Queue>,
        addr: u64,
    ) -> Result<u64, DriverError>;

    /// SYNCOBJ_CREATE.
    fn syncobj_create(&self, signaled: bool) -> Result<Self::Syncobj, DriverError>;
    /// State of a point (0: the binary fence).
    fn syncobj_state(&self, s: &Self::Syncobj, point: u64) -> PointState;
    /// Signal a point (0: replace the binary fence with a signalled one).
    fn syncobj_signal(&self, s: &Self::Syncobj, point: u64) -> Result<(), DriverError>;
    /// Timeline points `s` keeps alive, charged to the clients holding it. `exact`: recount
    /// (may walk the timeline, collecting signalled points); otherwise a cheap upper bound.
    fn syncobj_points(&self, _s: &Self::Syncobj, _exact: bool) -> u64 {
        0
    }
    /// A private syncobj holding the fence `point` of `s` resolves to now (`None`: no fence
    /// there yet). A parked SYNCOBJ_WAIT keeps waiting on the fence it first saw, as DRM's
    /// waiters do, whatever later resets or replacements do to `s`. The default (`None`)
    /// makes waits re-resolve the point at every check.
    fn syncobj_snapshot(&self, s: &Self::Syncobj, point: u64) -> Option<Self::Syncobj> {
        let _ = (s, point);
        None
    }
    /// SYNCOBJ_RESET: drop the fence (a timeline: every point); the syncobj is then as if
    /// just created unsignalled. Waits already parked on it keep DRM's rules (a wait for
    /// submit keeps waiting for the next fence).
    fn syncobj_reset(&self, s: &Self::Syncobj);
    /// Last signalled timeline point (binary: 1 if signalled, else 0).
    fn syncobj_query(&self, s: &Self::Syncobj) -> u64;
    /// Move the fence at `src` to `dst`.
    fn syncobj_transfer(
        &self,
        src: &Self::Syncobj,
        src_point: u64,
        dst: &Self::Syncobj,
        dst_point: u64,
    ) -> Result<(), DriverError>;

    /// CPU mapping of a BO: returns a page-aligned address in the server's address space backing
    /// `size` bytes at `offset` of the BO.
    fn bo_mmap(
        &self,
        bo: &Self::Bo,
        offset: u64,
        size: usize,
        flags: MapFlags,
    ) -> Result<usize, DriverError>;
    /// The client unmapped (part of) a BO mapping.
    fn bo_munmap(&self, bo: &Self::Bo, offset: u64, size: usize) -> Result<(), DriverError>;
}

/// The wait comparison, re-exported for drivers that evaluate user fences themselves.
pub fn user_fence_holds(op: WaitOp, current: u64, value: u64, mask: u64) -> bool {
    op.holds(current, value, mask)
}
