//! Typed, validated requests: what the decoder yields and the server dispatches.
//!
//! Owns: the request types and the client-local id newtypes. A value of these types has passed
//! every check that needs no driver state (sizes, versions, reserved fields, flags, alignment,
//! overflow, the op/flag table). Must not: hold driver objects (ids are resolved by the server).

use super::flags::{
    BatchFormat, BindFlags, BoCreateFlags, EngineClass, ObjectKind, Placement, QueuePriority,
    Region, SyncobjWaitFlags, VmCreateFlags, WaitOp,
};

macro_rules! client_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u32);

        impl $name {
            /// The raw id.
            pub const fn get(self) -> u32 {
                self.0
            }
        }
    };
}

client_id!(
    /// A VM id, meaningful only inside one client (device handle).
    VmId
);
client_id!(
    /// A BO id, meaningful only inside one client.
    BoId
);
client_id!(
    /// An exec/bind queue id, meaningful only inside one client.
    QueueId
);
client_id!(
    /// A syncobj id, meaningful only inside one client.
    SyncobjId
);

/// A 128-bit export token (unguessable; readable only through the exported handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub [u64; 2]);

/// One validated VM_BIND operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindOp {
    /// What the op does.
    pub kind: BindOpKind,
    /// GPU VA (4 KiB aligned; 0 for UNMAP_ALL).
    pub addr: u64,
    /// Bytes (4 KiB aligned; ≠ 0 except UNMAP_ALL, where it is 0).
    pub range: u64,
    /// READONLY / IMMEDIATE (NULL and CPU_ADDR_MIRROR are folded into `kind`).
    pub flags: BindFlags,
    /// Cache attribute index (checked against the device by the server).
    pub pat_index: u16,
}

/// The op/flag combinations of the Xe table that are legal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindOpKind {
    /// MAP of `bo` at `bo_offset`.
    Map {
        /// The BO.
        bo: BoId,
        /// Offset in the BO (4 KiB aligned).
        bo_offset: u64,
    },
    /// MAP with NULL: sparse range.
    MapNull,
    /// MAP with CPU_ADDR_MIRROR: SVM range.
    MapCpuMirror,
    /// MAP_USERPTR of client memory.
    MapUserptr {
        /// CPU address (4 KiB aligned).
        userptr: u64,
    },
    /// UNMAP of a VA range.
    Unmap,
    /// UNMAP_ALL: every mapping of `bo`.
    UnmapAll {
        /// The BO.
        bo: BoId,
    },
    /// PREFETCH into `region`.
    Prefetch {
        /// Target region.
        region: Region,
    },
}

/// The object of a sync entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// A binary syncobj.
    Syncobj(SyncobjId),
    /// A timeline point (≠ 0).
    Timeline(SyncobjId, u64),
    /// Write `value` at GPU VA `addr` (8-byte aligned) when done. Always a signal.
    UserFence {
        /// GPU VA in the VM of the bind / exec.
        addr: u64,
        /// Value written.
        value: u64,
    },
}

/// One validated sync entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSpec {
    /// The object.
    pub kind: SyncKind,
    /// Signal (out) rather than wait (in).
    pub signal: bool,
}

/// VM_BIND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmBindRequest {
    /// The VM.
    pub vm: VmId,
    /// A bind queue; `None` = the VM's default.
    pub queue: Option<QueueId>,
    /// Operations (possibly none: a pure sync operation).
    pub ops: Vec<BindOp>,
    /// Syncs (at most one user fence).
    pub syncs: Vec<SyncSpec>,
}

/// EXEC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The exec queue.
    pub queue: QueueId,
    /// Batch buffer GPU addresses (none: a pure sync operation).
    pub batches: Vec<u64>,
    /// Syncs (at most one user fence).
    pub syncs: Vec<SyncSpec>,
}

/// BO_CREATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoCreateRequest {
    /// Bytes (non-zero, 4 KiB aligned).
    pub size: u64,
    /// Where it may live (non-empty).
    pub placement: Placement,
    /// Creation flags.
    pub flags: BoCreateFlags,
    /// `Some`: VM-private BO sharing that VM's reservation.
    pub vm: Option<VmId>,
}

/// A timeout as sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Wait until satisfied.
    Forever,
    /// Check once.
    Poll,
    /// Relative nanoseconds from the first time the server sees the request.
    Relative(u64),
    /// Absolute deadline on the device clock, nanoseconds.
    Absolute(u64),
}

/// WAIT_USER_FENCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitUserFenceRequest {
    /// The VM whose address space `addr` is in.
    pub vm: VmId,
    /// A queue whose reset fails the wait with EIO.
    pub queue: Option<QueueId>,
    /// GPU VA (8-byte aligned).
    pub addr: u64,
    /// Comparison.
    pub op: WaitOp,
    /// Value compared.
    pub value: u64,
    /// Mask.
    pub mask: u64,
    /// How long.
    pub timeout: Timeout,
}

/// One (syncobj, point) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncobjPoint {
    /// The syncobj.
    pub syncobj: SyncobjId,
    /// Timeline point, 0 for binary.
    pub point: u64,
}

/// SYNCOBJ_WAIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncobjWaitRequest {
    /// What to wait for (non-empty).
    pub points: Vec<SyncobjPoint>,
    /// WAIT_ALL / WAIT_FOR_SUBMIT (ABSTIME is folded into `timeout`).
    pub flags: SyncobjWaitFlags,
    /// How long.
    pub timeout: Timeout,
}

/// SYNCOBJ_TRANSFER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncobjTransferRequest {
    /// Source.
    pub src: SyncobjPoint,
    /// Destination.
    pub dst: SyncobjPoint,
    /// Wait for the source point to be submitted.
    pub wait_for_submit: bool,
}

/// Every call, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// DEVICE_QUERY.
    DeviceQuery,
    /// VM_CREATE.
    VmCreate(VmCreateFlags),
    /// VM_DESTROY.
    VmDestroy(VmId),
    /// BO_CREATE.
    BoCreate(BoCreateRequest),
    /// BO_DESTROY.
    BoDestroy(BoId),
    /// EXEC_QUEUE_CREATE.
    ExecQueueCreate {
        /// The VM.
        vm: VmId,
        /// Engine class.
        class: EngineClass,
        /// Scheduling priority (normal unless the client asked).
        priority: QueuePriority,
        /// How the queue's batches are encoded (native unless the client asked).
        batches: BatchFormat,
    },
    /// EXEC_QUEUE_DESTROY.
    ExecQueueDestroy(QueueId),
    /// VM_BIND.
    VmBind(VmBindRequest),
    /// EXEC.
    Exec(ExecRequest),
    /// WAIT_USER_FENCE.
    WaitUserFence(WaitUserFenceRequest),
    /// SYNCOBJ_CREATE.
    SyncobjCreate {
        /// Start signalled.
        signaled: bool,
    },
    /// SYNCOBJ_DESTROY.
    SyncobjDestroy(SyncobjId),
    /// SYNCOBJ_WAIT.
    SyncobjWait(SyncobjWaitRequest),
    /// SYNCOBJ_SIGNAL.
    SyncobjSignal(Vec<SyncobjPoint>),
    /// SYNCOBJ_QUERY.
    SyncobjQuery(SyncobjId),
    /// SYNCOBJ_RESET: empty every listed syncobj.
    SyncobjReset(Vec<SyncobjId>),
    /// SYNCOBJ_TRANSFER.
    SyncobjTransfer(SyncobjTransferRequest),
    /// EXPORT_TOKEN.
    ExportToken,
    /// IMPORT; `token` is `None` when the exported handle is named as a second id.
    Import {
        /// Expected kind.
        kind: ObjectKind,
        /// The token.
        token: Option<Token>,
    },
}

/// What a successful call writes back into the args area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to write.
    None,
    /// A new id (VM, BO, queue, syncobj, import).
    NewId(u32),
    /// DEVICE_QUERY's answer.
    DeviceInfo(super::wire::DeviceQueryArgs),
    /// SYNCOBJ_WAIT (any): index of the first signalled element.
    FirstSignaled(u32),
    /// SYNCOBJ_QUERY: the point.
    Point(u64),
    /// EXPORT_TOKEN.
    Token(ObjectKind, Token),
}
