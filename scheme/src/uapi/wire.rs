//! The wire layouts of the gpu scheme's `call` payloads, declared once, as data.
//!
//! Owns: every `#[repr(C)]` struct that travels in a `call` payload, their sizes, and the
//! opcode numbers. Must not: validate or interpret values (that is `decode.rs`), or know anything
//! about driver objects.
//!
//! A payload is `CallHeader | args (header.args_size bytes) | arrays…`. All integers are in the
//! machine's native byte order (the scheme is local IPC). Fields named `pad*`/`reserved*` must
//! be zero; fields documented as "out" must be zero on input and are filled in by the server.
//! `docs/uapi.md` documents every layout with offsets; the `layout_sizes` test pins the sizes.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The uAPI version this server speaks. A client sends it in every `CallHeader`.
pub const UAPI_VERSION: u16 = 1;

/// Largest number of sync entries in one VM_BIND or EXEC (as Xe's `DRM_XE_MAX_SYNCS`).
pub const MAX_SYNCS: u32 = 1024;
/// Largest number of bind operations in one VM_BIND.
pub const MAX_BIND_OPS: u32 = 1024;
/// Largest number of batch buffers in one EXEC.
pub const MAX_BATCHES: u32 = 16;
/// Largest number of syncobjs in one SYNCOBJ_WAIT, SYNCOBJ_SIGNAL or SYNCOBJ_RESET.
pub const MAX_SYNCOBJ_POINTS: u32 = 1024;
/// Largest per-element stride a client may send (newer clients send larger elements).
pub const MAX_STRIDE: u32 = 1024;
/// Largest `args_size` a client may send (newer clients send larger args structs).
pub const MAX_ARGS_SIZE: u32 = 4096;

/// The call opcodes (`metadata[0]` of a `call`). Numbers are stable: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Opcode {
    /// Device information: engines, memory regions, VA bits, limits.
    DeviceQuery = 1,
    /// Create a VM.
    VmCreate = 2,
    /// Destroy a VM.
    VmDestroy = 3,
    /// Create a buffer object.
    BoCreate = 4,
    /// Drop the client's id for a buffer object.
    BoDestroy = 5,
    /// Create an exec or bind queue.
    ExecQueueCreate = 6,
    /// Destroy a queue.
    ExecQueueDestroy = 7,
    /// Map/unmap/prefetch ranges of a VM.
    VmBind = 8,
    /// Submit batch buffers to an exec queue.
    Exec = 9,
    /// Wait for a 64-bit value in GPU memory.
    WaitUserFence = 10,
    /// Create a syncobj.
    SyncobjCreate = 11,
    /// Drop the client's id for a syncobj.
    SyncobjDestroy = 12,
    /// Wait for syncobjs / timeline points.
    SyncobjWait = 13,
    /// Signal syncobjs / timeline points from the CPU.
    SyncobjSignal = 14,
    /// Query the last signalled timeline point.
    SyncobjQuery = 15,
    /// Move a fence from one syncobj point to another.
    SyncobjTransfer = 16,
    /// On a BO or syncobj handle: read the export token.
    ExportToken = 17,
    /// On a device handle: import a BO or syncobj by token or by a second handle.
    Import = 18,
    /// Empty syncobjs (DRM's SYNCOBJ_RESET).
    SyncobjReset = 19,
}

impl Opcode {
    /// Every opcode, in numeric order (for tests and docs).
    pub const ALL: [Opcode; 19] = [
        Opcode::DeviceQuery,
        Opcode::VmCreate,
        Opcode::VmDestroy,
        Opcode::BoCreate,
        Opcode::BoDestroy,
        Opcode::ExecQueueCreate,
        Opcode::ExecQueueDestroy,
        Opcode::VmBind,
        Opcode::Exec,
        Opcode::WaitUserFence,
        Opcode::SyncobjCreate,
        Opcode::SyncobjDestroy,
        Opcode::SyncobjWait,
        Opcode::SyncobjSignal,
        Opcode::SyncobjQuery,
        Opcode::SyncobjTransfer,
        Opcode::ExportToken,
        Opcode::Import,
        Opcode::SyncobjReset,
    ];

    /// The opcode for a raw `metadata[0]`, if it is one.
    pub fn from_raw(raw: u64) -> Option<Opcode> {
        Opcode::ALL.iter().copied().find(|op| *op as u64 == raw)
    }

    /// Size of the args struct this server knows for the opcode.
    pub const fn args_size(self) -> usize {
        match self {
            Opcode::DeviceQuery => size_of::<DeviceQueryArgs>(),
            Opcode::VmCreate => size_of::<VmCreateArgs>(),
            Opcode::VmDestroy | Opcode::BoDestroy | Opcode::ExecQueueDestroy => size_of::<IdArgs>(),
            Opcode::SyncobjDestroy => size_of::<IdArgs>(),
            Opcode::BoCreate => size_of::<BoCreateArgs>(),
            Opcode::ExecQueueCreate => size_of::<ExecQueueCreateArgs>(),
            Opcode::VmBind => size_of::<VmBindArgs>(),
            Opcode::Exec => size_of::<ExecArgs>(),
            Opcode::WaitUserFence => size_of::<WaitUserFenceArgs>(),
            Opcode::SyncobjCreate => size_of::<SyncobjCreateArgs>(),
            Opcode::SyncobjWait => size_of::<SyncobjWaitArgs>(),
            Opcode::SyncobjSignal => size_of::<SyncobjSignalArgs>(),
            Opcode::SyncobjQuery => size_of::<SyncobjQueryArgs>(),
            Opcode::SyncobjTransfer => size_of::<SyncobjTransferArgs>(),
            Opcode::ExportToken => size_of::<ExportTokenArgs>(),
            Opcode::Import => size_of::<ImportArgs>(),
            Opcode::SyncobjReset => size_of::<SyncobjResetArgs>(),
        }
    }
}

/// Leads every payload.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CallHeader {
    /// Must be `UAPI_VERSION`.
    pub version: u16,
    /// Must be zero.
    pub pad: u16,
    /// Bytes of the args struct that follows. At least the size this server knows; bytes beyond
    /// it (sent by a newer client) must be zero.
    pub args_size: u32,
    /// Must be zero.
    pub reserved: u64,
}

/// DEVICE_QUERY: every field is out.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DeviceQueryArgs {
    /// Bits of GPU virtual address.
    pub va_bits: u32,
    /// Bit per supported engine class (`1 << ENGINE_CLASS_*`).
    pub engine_mask: u32,
    /// Bit per supported page size (`1 << log2(size)`).
    pub page_sizes: u64,
    /// System memory the device may use, bytes.
    pub sys_size: u64,
    /// System memory free, bytes.
    pub sys_free: u64,
    /// VRAM size, bytes (0: no VRAM).
    pub vram_size: u64,
    /// VRAM free, bytes.
    pub vram_free: u64,
    /// Start of the VA range reserved by the kernel-side driver.
    pub reserved_va_start: u64,
    /// Length of the reserved VA range.
    pub reserved_va_len: u64,
    /// Number of PAT (cache attribute) indices.
    pub pat_entries: u32,
    /// Per-client limit on objects (VMs + BOs + queues + syncobjs).
    pub max_objects: u32,
    /// Per-client limit on VRAM bytes.
    pub limit_vram: u64,
    /// Per-client limit on system-memory bytes.
    pub limit_sys: u64,
    /// Per-client limit on CPU mappings of BOs.
    pub max_mappings: u32,
    /// Per-client limit on in-flight binds and jobs.
    pub max_in_flight: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// VM_CREATE.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VmCreateArgs {
    /// `VM_CREATE_*` flags.
    pub flags: u32,
    /// Out: the new VM's id in this client.
    pub vm_id: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// VM_DESTROY, BO_DESTROY, EXEC_QUEUE_DESTROY, SYNCOBJ_DESTROY: one id.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct IdArgs {
    /// The object's id in this client.
    pub id: u32,
    /// Must be zero.
    pub pad: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// BO_CREATE.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BoCreateArgs {
    /// Bytes; a non-zero multiple of 4 KiB.
    pub size: u64,
    /// `PLACEMENT_*` mask; non-zero.
    pub placement: u32,
    /// `BO_CREATE_*` flags.
    pub flags: u32,
    /// 0: external BO; else the VM whose reservation this VM-private BO shares.
    pub vm_id: u32,
    /// Out: the new BO's id in this client.
    pub bo_id: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// EXEC_QUEUE_CREATE.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ExecQueueCreateArgs {
    /// The VM the queue runs in.
    pub vm_id: u32,
    /// `ENGINE_CLASS_*`.
    pub engine_class: u16,
    /// `ExecQueueCreateFlags`.
    pub flags: u16,
    /// Out: the new queue's id in this client.
    pub queue_id: u32,
    /// With `ExecQueueCreateFlags::PRIORITY`: `QueuePriority` (0 low, 1 normal, 2 high);
    /// without it, zero.
    pub priority: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// VM_BIND. Followed by `num_ops` × `op_stride` bytes of `BindOpWire`, then `num_syncs` ×
/// `sync_stride` bytes of `SyncWire`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VmBindArgs {
    /// The VM.
    pub vm_id: u32,
    /// 0: the VM's default bind queue; else a bind-class queue of the same VM.
    pub queue_id: u32,
    /// Number of bind ops (0: a pure sync operation).
    pub num_ops: u32,
    /// Bytes per op element (≥ size of `BindOpWire`, multiple of 8).
    pub op_stride: u32,
    /// Number of syncs.
    pub num_syncs: u32,
    /// Bytes per sync element (≥ size of `SyncWire`, multiple of 8).
    pub sync_stride: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// One VM_BIND operation.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BindOpWire {
    /// `BIND_OP_*`.
    pub op: u32,
    /// `BIND_FLAG_*`.
    pub flags: u32,
    /// BO id (MAP, UNMAP_ALL); 0 otherwise.
    pub bo_id: u32,
    /// Cache attribute index (< `pat_entries`).
    pub pat_index: u16,
    /// Must be zero.
    pub pad: u16,
    /// BO offset (MAP with a BO) or CPU address (MAP_USERPTR); 0 otherwise.
    pub obj_offset: u64,
    /// GPU virtual address.
    pub addr: u64,
    /// Bytes.
    pub range: u64,
    /// Region for PREFETCH (`REGION_*`); 0 otherwise.
    pub prefetch_region: u32,
    /// Must be zero.
    pub pad2: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// One sync entry of VM_BIND or EXEC.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SyncWire {
    /// `SYNC_TYPE_*`.
    pub sync_type: u32,
    /// `SYNC_FLAG_*`.
    pub flags: u32,
    /// Syncobj id (SYNCOBJ, TIMELINE_SYNCOBJ); 0 for USER_FENCE.
    pub handle: u32,
    /// Must be zero.
    pub pad: u32,
    /// USER_FENCE: GPU VA (8-byte aligned) in the VM of the bind/exec; 0 otherwise.
    pub addr: u64,
    /// TIMELINE_SYNCOBJ: the point (≠ 0); USER_FENCE: the value written; SYNCOBJ: 0.
    pub value: u64,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// EXEC. Followed by `num_batches` u64 GPU addresses, then `num_syncs` × `sync_stride` bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ExecArgs {
    /// The exec queue.
    pub queue_id: u32,
    /// Number of batch addresses (0: a pure sync operation).
    pub num_batches: u32,
    /// Number of syncs.
    pub num_syncs: u32,
    /// Bytes per sync element.
    pub sync_stride: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// WAIT_USER_FENCE.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct WaitUserFenceArgs {
    /// The VM whose address space `addr` is in.
    pub vm_id: u32,
    /// 0, or an exec queue whose reset makes the wait fail with EIO.
    pub queue_id: u32,
    /// GPU VA of the 64-bit value; 8-byte aligned.
    pub addr: u64,
    /// `WAIT_OP_*`.
    pub op: u16,
    /// `WAIT_FLAG_*`.
    pub flags: u16,
    /// Must be zero.
    pub pad: u32,
    /// Compared with `(*addr & mask)`.
    pub value: u64,
    /// Mask applied to both sides.
    pub mask: u64,
    /// Nanoseconds; < 0 forever, 0 one check; with ABSTIME a deadline on the device clock.
    pub timeout_ns: i64,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// SYNCOBJ_CREATE.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SyncobjCreateArgs {
    /// `SYNCOBJ_CREATE_*`.
    pub flags: u32,
    /// Out: the new syncobj's id in this client.
    pub syncobj_id: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// One (syncobj, point) element of SYNCOBJ_WAIT / SYNCOBJ_SIGNAL.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SyncobjPointWire {
    /// Syncobj id.
    pub syncobj_id: u32,
    /// Must be zero.
    pub pad: u32,
    /// Timeline point; 0 for binary use.
    pub point: u64,
}

/// SYNCOBJ_WAIT. Followed by `count` × `stride` bytes of `SyncobjPointWire`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SyncobjWaitArgs {
    /// Number of elements (≥ 1).
    pub count: u32,
    /// Bytes per element.
    pub stride: u32,
    /// `SYNCOBJ_WAIT_*`.
    pub flags: u32,
    /// Out: index of the first signalled element (WAIT_ANY).
    pub first_signaled: u32,
    /// Nanoseconds; < 0 forever, 0 one check; with ABSTIME a deadline on the device clock.
    pub timeout_ns: i64,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// SYNCOBJ_SIGNAL. Followed by `count` × `stride` bytes of `SyncobjPointWire`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SyncobjSignalArgs {
    /// Number of elements (≥ 1).
    pub count: u32,
    /// Bytes per element.
    pub stride: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// SYNCOBJ_RESET. Followed by `count` × `stride` bytes of `SyncobjPointWire`, each with
/// `point` zero (a reset empties the whole syncobj, binary or timeline).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SyncobjResetArgs {
    /// Number of elements (≥ 1).
    pub count: u32,
    /// Bytes per element.
    pub stride: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// SYNCOBJ_QUERY.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SyncobjQueryArgs {
    /// Syncobj id.
    pub syncobj_id: u32,
    /// Must be zero.
    pub pad: u32,
    /// Out: last signalled timeline point (binary: 1 if signalled, else 0).
    pub point: u64,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// SYNCOBJ_TRANSFER.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SyncobjTransferArgs {
    /// Source syncobj.
    pub src_id: u32,
    /// Destination syncobj.
    pub dst_id: u32,
    /// Source point (0: binary).
    pub src_point: u64,
    /// Destination point (0: binary).
    pub dst_point: u64,
    /// `SYNCOBJ_WAIT_FOR_SUBMIT` only.
    pub flags: u32,
    /// Must be zero.
    pub pad: u32,
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// EXPORT_TOKEN (on a BO or syncobj handle): every field is out.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ExportTokenArgs {
    /// Out: `OBJECT_KIND_*`.
    pub kind: u32,
    /// Must be zero.
    pub pad: u32,
    /// Out: the 128-bit token.
    pub token: [u64; 2],
    /// Must be zero.
    pub reserved: [u64; 2],
}

/// IMPORT (on a device handle).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ImportArgs {
    /// `OBJECT_KIND_*` expected.
    pub kind: u32,
    /// Out: the object's id in the importing client.
    pub id: u32,
    /// The token; all zero when the exported handle is named as a second id.
    pub token: [u64; 2],
    /// Must be zero.
    pub reserved: [u64; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented sizes (docs/uapi.md) must not drift.
    #[test]
    fn layout_sizes() {
        assert_eq!(size_of::<CallHeader>(), 16);
        assert_eq!(size_of::<DeviceQueryArgs>(), 112);
        assert_eq!(size_of::<VmCreateArgs>(), 24);
        assert_eq!(size_of::<IdArgs>(), 24);
        assert_eq!(size_of::<BoCreateArgs>(), 40);
        assert_eq!(size_of::<ExecQueueCreateArgs>(), 32);
        assert_eq!(size_of::<VmBindArgs>(), 40);
        assert_eq!(size_of::<BindOpWire>(), 64);
        assert_eq!(size_of::<SyncWire>(), 48);
        assert_eq!(size_of::<ExecArgs>(), 32);
        assert_eq!(size_of::<WaitUserFenceArgs>(), 64);
        assert_eq!(size_of::<SyncobjCreateArgs>(), 24);
        assert_eq!(size_of::<SyncobjPointWire>(), 16);
        assert_eq!(size_of::<SyncobjWaitArgs>(), 40);
        assert_eq!(size_of::<SyncobjSignalArgs>(), 24);
        assert_eq!(size_of::<SyncobjResetArgs>(), 24);
        assert_eq!(size_of::<SyncobjQueryArgs>(), 32);
        assert_eq!(size_of::<SyncobjTransferArgs>(), 48);
        assert_eq!(size_of::<ExportTokenArgs>(), 40);
        assert_eq!(size_of::<ImportArgs>(), 40);
    }

    /// Offsets docs/uapi.md tables give; a reordering of fields must update the docs.
    #[test]
    fn documented_offsets() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(CallHeader, args_size), 4);
        assert_eq!(offset_of!(DeviceQueryArgs, pat_entries), 64);
        assert_eq!(offset_of!(DeviceQueryArgs, limit_vram), 72);
        assert_eq!(offset_of!(DeviceQueryArgs, max_in_flight), 92);
        assert_eq!(offset_of!(BoCreateArgs, bo_id), 20);
        assert_eq!(offset_of!(ExecQueueCreateArgs, queue_id), 8);
        assert_eq!(offset_of!(VmBindArgs, sync_stride), 20);
        assert_eq!(offset_of!(BindOpWire, pat_index), 12);
        assert_eq!(offset_of!(BindOpWire, obj_offset), 16);
        assert_eq!(offset_of!(BindOpWire, prefetch_region), 40);
        assert_eq!(offset_of!(SyncWire, addr), 16);
        assert_eq!(offset_of!(SyncWire, value), 24);
        assert_eq!(offset_of!(ExecArgs, sync_stride), 12);
        assert_eq!(offset_of!(WaitUserFenceArgs, op), 16);
        assert_eq!(offset_of!(WaitUserFenceArgs, timeout_ns), 40);
        assert_eq!(offset_of!(SyncobjWaitArgs, first_signaled), 12);
        assert_eq!(offset_of!(SyncobjWaitArgs, timeout_ns), 16);
        assert_eq!(offset_of!(SyncobjQueryArgs, point), 8);
        assert_eq!(offset_of!(SyncobjTransferArgs, flags), 24);
        assert_eq!(offset_of!(ExportTokenArgs, token), 8);
        assert_eq!(offset_of!(ImportArgs, token), 8);
    }

    #[test]
    fn opcodes_round_trip_and_reject_unknown() {
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_raw(op as u64), Some(op));
        }
        assert_eq!(Opcode::from_raw(0), None);
        assert_eq!(Opcode::from_raw(20), None);
        assert_eq!(Opcode::from_raw(u64::MAX), None);
    }
}
