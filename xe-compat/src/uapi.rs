//! Linux's DRM and Xe uAPI as this library reads it: the `#[repr(C)]` argument structs of the
//! ioctls it answers, their request numbers and flag values, declared once, as data.
//!
//! Owns: the layouts of `drm/drm.h` (the generic ioctls: VERSION, GET_CAP, GEM_CLOSE, PRIME,
//! SYNCOBJ) and `drm/xe_drm.h` (the Xe ioctls and query results), written from the headers'
//! facts. `tests/layout.rs` checks every size and offset against the system's headers with a C
//! program. Must not: validate or translate (that is `xe.rs` / `drm.rs`).
//!
//! Unions of the headers are plain `u64` fields here: `drm_xe_vm_bind_op::{obj_offset,
//! userptr}`, `drm_xe_sync::{handle, addr}` (the handle is the low 32 bits on this
//! little-endian target) and `drm_xe_vm_bind::{bind, vector_of_binds}` (the pointer is the first
//! 8 bytes of `bind`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `_IOC` direction bits (asm-generic/ioctl.h).
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `DRM_IOCTL_BASE`: the ioctl type of every DRM request.
pub const DRM_IOCTL_TYPE: u64 = b'd' as u64;
/// `DRM_COMMAND_BASE`: the first driver-private ioctl number.
pub const DRM_COMMAND_BASE: u64 = 0x40;

/// The parts of an ioctl request number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoctlNr {
    /// Number within the type.
    pub nr: u64,
    /// Type (`'d'` for DRM).
    pub ty: u64,
    /// Size of the argument struct the caller's header declared.
    pub size: usize,
}

impl IoctlNr {
    /// Split a request number (`_IOC(dir, type, nr, size)`).
    pub fn split(request: u64) -> IoctlNr {
        IoctlNr {
            nr: request & 0xff,
            ty: (request >> 8) & 0xff,
            size: ((request >> 16) & 0x3fff) as usize,
        }
    }
}

/// `DRM_IOWR(nr, T)`.
pub const fn drm_iowr<T>(nr: u64) -> u64 {
    ((IOC_READ | IOC_WRITE) << 30) | ((size_of::<T>() as u64) << 16) | (DRM_IOCTL_TYPE << 8) | nr
}

/// `DRM_IOW(nr, T)`.
pub const fn drm_iow<T>(nr: u64) -> u64 {
    (IOC_WRITE << 30) | ((size_of::<T>() as u64) << 16) | (DRM_IOCTL_TYPE << 8) | nr
}

/// Generic DRM ioctl numbers (`nr` within type `'d'`).
pub mod nr {
    /// DRM_IOCTL_VERSION.
    pub const VERSION: u64 = 0x00;
    /// DRM_IOCTL_GEM_CLOSE.
    pub const GEM_CLOSE: u64 = 0x09;
    /// DRM_IOCTL_GET_CAP.
    pub const GET_CAP: u64 = 0x0c;
    /// DRM_IOCTL_PRIME_HANDLE_TO_FD.
    pub const PRIME_HANDLE_TO_FD: u64 = 0x2d;
    /// DRM_IOCTL_PRIME_FD_TO_HANDLE.
    pub const PRIME_FD_TO_HANDLE: u64 = 0x2e;
    /// DRM_IOCTL_SYNCOBJ_CREATE.
    pub const SYNCOBJ_CREATE: u64 = 0xbf;
    /// DRM_IOCTL_SYNCOBJ_DESTROY.
    pub const SYNCOBJ_DESTROY: u64 = 0xc0;
    /// DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD.
    pub const SYNCOBJ_HANDLE_TO_FD: u64 = 0xc1;
    /// DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE.
    pub const SYNCOBJ_FD_TO_HANDLE: u64 = 0xc2;
    /// DRM_IOCTL_SYNCOBJ_WAIT.
    pub const SYNCOBJ_WAIT: u64 = 0xc3;
    /// DRM_IOCTL_SYNCOBJ_RESET.
    pub const SYNCOBJ_RESET: u64 = 0xc4;
    /// DRM_IOCTL_SYNCOBJ_SIGNAL.
    pub const SYNCOBJ_SIGNAL: u64 = 0xc5;
    /// DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT.
    pub const SYNCOBJ_TIMELINE_WAIT: u64 = 0xca;
    /// DRM_IOCTL_SYNCOBJ_QUERY.
    pub const SYNCOBJ_QUERY: u64 = 0xcb;
    /// DRM_IOCTL_SYNCOBJ_TRANSFER.
    pub const SYNCOBJ_TRANSFER: u64 = 0xcc;
    /// DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL.
    pub const SYNCOBJ_TIMELINE_SIGNAL: u64 = 0xcd;

    /// Xe: DRM_XE_DEVICE_QUERY (+ DRM_COMMAND_BASE).
    pub const XE_DEVICE_QUERY: u64 = super::DRM_COMMAND_BASE;
    /// Xe: DRM_XE_GEM_CREATE.
    pub const XE_GEM_CREATE: u64 = super::DRM_COMMAND_BASE + 0x01;
    /// Xe: DRM_XE_GEM_MMAP_OFFSET.
    pub const XE_GEM_MMAP_OFFSET: u64 = super::DRM_COMMAND_BASE + 0x02;
    /// Xe: DRM_XE_VM_CREATE.
    pub const XE_VM_CREATE: u64 = super::DRM_COMMAND_BASE + 0x03;
    /// Xe: DRM_XE_VM_DESTROY.
    pub const XE_VM_DESTROY: u64 = super::DRM_COMMAND_BASE + 0x04;
    /// Xe: DRM_XE_VM_BIND.
    pub const XE_VM_BIND: u64 = super::DRM_COMMAND_BASE + 0x05;
    /// Xe: DRM_XE_EXEC_QUEUE_CREATE.
    pub const XE_EXEC_QUEUE_CREATE: u64 = super::DRM_COMMAND_BASE + 0x06;
    /// Xe: DRM_XE_EXEC_QUEUE_DESTROY.
    pub const XE_EXEC_QUEUE_DESTROY: u64 = super::DRM_COMMAND_BASE + 0x07;
    /// Xe: DRM_XE_EXEC_QUEUE_GET_PROPERTY.
    pub const XE_EXEC_QUEUE_GET_PROPERTY: u64 = super::DRM_COMMAND_BASE + 0x08;
    /// Xe: DRM_XE_EXEC.
    pub const XE_EXEC: u64 = super::DRM_COMMAND_BASE + 0x09;
    /// Xe: DRM_XE_WAIT_USER_FENCE.
    pub const XE_WAIT_USER_FENCE: u64 = super::DRM_COMMAND_BASE + 0x0a;
}

macro_rules! wire {
    ($($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: $t:ty,)* })*) => {
        $(
            $(#[$m])*
            #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes,
                KnownLayout, Immutable)]
            #[repr(C)]
            pub struct $name { $($(#[$fm])* pub $f: $t,)* }
        )*
    };
}

wire! {
    /// `struct drm_version` (the pointers are the caller's buffers).
    pub struct DrmVersion {
        /// Major version.
        pub version_major: i32,
        /// Minor version.
        pub version_minor: i32,
        /// Patch level.
        pub version_patchlevel: i32,
        /// Padding the C layout has before the `size_t`.
        pub pad: u32,
        /// In: room at `name`; out: length of the name.
        pub name_len: u64,
        /// Buffer for the name.
        pub name: u64,
        /// In: room at `date`; out: its length.
        pub date_len: u64,
        /// Buffer for the date.
        pub date: u64,
        /// In: room at `desc`; out: its length.
        pub desc_len: u64,
        /// Buffer for the description.
        pub desc: u64,
    }

    /// `struct drm_get_cap`.
    pub struct DrmGetCap {
        /// DRM_CAP_*.
        pub capability: u64,
        /// Out: the value.
        pub value: u64,
    }

    /// `struct drm_gem_close`.
    pub struct DrmGemClose {
        /// GEM handle.
        pub handle: u32,
        /// MBZ.
        pub pad: u32,
    }

    /// `struct drm_prime_handle`.
    pub struct DrmPrimeHandle {
        /// GEM handle (out for FD_TO_HANDLE).
        pub handle: u32,
        /// DRM_CLOEXEC / DRM_RDWR (HANDLE_TO_FD).
        pub flags: u32,
        /// The dma-buf fd (out for HANDLE_TO_FD).
        pub fd: i32,
    }

    /// `struct drm_syncobj_create`.
    pub struct DrmSyncobjCreate {
        /// Out: the handle.
        pub handle: u32,
        /// DRM_SYNCOBJ_CREATE_SIGNALED.
        pub flags: u32,
    }

    /// `struct drm_syncobj_destroy`.
    pub struct DrmSyncobjDestroy {
        /// The handle.
        pub handle: u32,
        /// MBZ.
        pub pad: u32,
    }

    /// `struct drm_syncobj_handle` (HANDLE_TO_FD / FD_TO_HANDLE).
    pub struct DrmSyncobjHandle {
        /// The handle (out for FD_TO_HANDLE).
        pub handle: u32,
        /// Sync-file flags.
        pub flags: u32,
        /// The fd (out for HANDLE_TO_FD).
        pub fd: i32,
        /// MBZ.
        pub pad: u32,
    }

    /// `struct drm_syncobj_transfer`.
    pub struct DrmSyncobjTransfer {
        /// Source handle.
        pub src_handle: u32,
        /// Destination handle.
        pub dst_handle: u32,
        /// Source point (0: binary).
        pub src_point: u64,
        /// Destination point (0: binary).
        pub dst_point: u64,
        /// DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT.
        pub flags: u32,
        /// MBZ.
        pub pad: u32,
    }

    /// `struct drm_syncobj_wait` (headers before 6.4 end before `deadline_nsec`).
    pub struct DrmSyncobjWait {
        /// Pointer to `count_handles` u32 handles.
        pub handles: u64,
        /// Absolute CLOCK_MONOTONIC deadline, nanoseconds.
        pub timeout_nsec: i64,
        /// Number of handles.
        pub count_handles: u32,
        /// DRM_SYNCOBJ_WAIT_FLAGS_*.
        pub flags: u32,
        /// Out: first signalled index (wait any).
        pub first_signaled: u32,
        /// MBZ.
        pub pad: u32,
        /// WAIT_DEADLINE's deadline hint.
        pub deadline_nsec: u64,
    }

    /// `struct drm_syncobj_timeline_wait`.
    pub struct DrmSyncobjTimelineWait {
        /// Pointer to u32 handles.
        pub handles: u64,
        /// Pointer to u64 points.
        pub points: u64,
        /// Absolute CLOCK_MONOTONIC deadline, nanoseconds.
        pub timeout_nsec: i64,
        /// Number of handles.
        pub count_handles: u32,
        /// DRM_SYNCOBJ_WAIT_FLAGS_*.
        pub flags: u32,
        /// Out: first signalled index (wait any).
        pub first_signaled: u32,
        /// MBZ.
        pub pad: u32,
        /// WAIT_DEADLINE's deadline hint.
        pub deadline_nsec: u64,
    }

    /// `struct drm_syncobj_array` (RESET, SIGNAL).
    pub struct DrmSyncobjArray {
        /// Pointer to u32 handles.
        pub handles: u64,
        /// Number of handles.
        pub count_handles: u32,
        /// MBZ.
        pub pad: u32,
    }

    /// `struct drm_syncobj_timeline_array` (QUERY, TIMELINE_SIGNAL).
    pub struct DrmSyncobjTimelineArray {
        /// Pointer to u32 handles.
        pub handles: u64,
        /// Pointer to u64 points.
        pub points: u64,
        /// Number of handles.
        pub count_handles: u32,
        /// QUERY: DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED; SIGNAL: MBZ.
        pub flags: u32,
    }

    /// `struct drm_xe_user_extension`.
    pub struct XeUserExtension {
        /// Next extension or 0.
        pub next_extension: u64,
        /// Extension name (per ioctl).
        pub name: u32,
        /// MBZ.
        pub pad: u32,
    }

    /// `struct drm_xe_ext_set_property`.
    pub struct XeExtSetProperty {
        /// The chain link.
        pub base: XeUserExtension,
        /// Property id.
        pub property: u32,
        /// MBZ.
        pub pad: u32,
        /// Value.
        pub value: u64,
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_engine_class_instance`.
    pub struct XeEngineClassInstance {
        /// DRM_XE_ENGINE_CLASS_*.
        pub engine_class: u16,
        /// Instance within the class.
        pub engine_instance: u16,
        /// GT.
        pub gt_id: u16,
        /// MBZ.
        pub pad: u16,
    }

    /// `struct drm_xe_engine`.
    pub struct XeEngine {
        /// The engine.
        pub instance: XeEngineClassInstance,
        /// Reserved.
        pub reserved: [u64; 3],
    }

    /// `struct drm_xe_query_engines` (followed by `num_engines` `XeEngine`).
    pub struct XeQueryEngines {
        /// Number of engines.
        pub num_engines: u32,
        /// MBZ.
        pub pad: u32,
    }

    /// `struct drm_xe_mem_region`.
    pub struct XeMemRegion {
        /// DRM_XE_MEM_REGION_CLASS_*.
        pub mem_class: u16,
        /// Instance: the bit of GEM_CREATE's placement.
        pub instance: u16,
        /// Minimum page size.
        pub min_page_size: u32,
        /// Usable bytes.
        pub total_size: u64,
        /// Used bytes.
        pub used: u64,
        /// CPU-visible bytes.
        pub cpu_visible_size: u64,
        /// CPU-visible used bytes.
        pub cpu_visible_used: u64,
        /// Reserved.
        pub reserved: [u64; 6],
    }

    /// `struct drm_xe_query_mem_regions` (followed by the regions).
    pub struct XeQueryMemRegions {
        /// Number of regions.
        pub num_mem_regions: u32,
        /// MBZ.
        pub pad: u32,
    }

    /// `struct drm_xe_query_config` (followed by `num_params` u64).
    pub struct XeQueryConfig {
        /// Number of parameters.
        pub num_params: u32,
        /// MBZ.
        pub pad: u32,
    }

    /// `struct drm_xe_gt`.
    pub struct XeGt {
        /// DRM_XE_QUERY_GT_TYPE_*.
        pub gt_type: u16,
        /// Tile.
        pub tile_id: u16,
        /// GT id.
        pub gt_id: u16,
        /// MBZ.
        pub pad: [u16; 3],
        /// Timestamp frequency, Hz.
        pub reference_clock: u32,
        /// Mask of near memory-region instances.
        pub near_mem_regions: u64,
        /// Mask of far memory-region instances.
        pub far_mem_regions: u64,
        /// IP major version (GMD_ID platforms).
        pub ip_ver_major: u16,
        /// IP minor version.
        pub ip_ver_minor: u16,
        /// IP revision.
        pub ip_ver_rev: u16,
        /// MBZ.
        pub pad2: u16,
        /// Reserved.
        pub reserved: [u64; 7],
    }

    /// `struct drm_xe_query_gt_list` (followed by the GTs).
    pub struct XeQueryGtList {
        /// Number of GTs.
        pub num_gt: u32,
        /// MBZ.
        pub pad: u32,
    }

    /// `struct drm_xe_device_query`.
    pub struct XeDeviceQuery {
        /// Extension chain.
        pub extensions: u64,
        /// DRM_XE_DEVICE_QUERY_*.
        pub query: u32,
        /// In: room at `data` (0: ask the size); out: the size.
        pub size: u32,
        /// Pointer to the caller's buffer.
        pub data: u64,
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_gem_create`.
    pub struct XeGemCreate {
        /// Extension chain.
        pub extensions: u64,
        /// Bytes.
        pub size: u64,
        /// Mask of memory-region instances.
        pub placement: u32,
        /// DRM_XE_GEM_CREATE_FLAG_*.
        pub flags: u32,
        /// VM whose reservation the BO shares (0: none).
        pub vm_id: u32,
        /// Out: the handle.
        pub handle: u32,
        /// DRM_XE_GEM_CPU_CACHING_*.
        pub cpu_caching: u16,
        /// MBZ.
        pub pad: [u16; 3],
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_gem_mmap_offset`.
    pub struct XeGemMmapOffset {
        /// Extension chain.
        pub extensions: u64,
        /// GEM handle.
        pub handle: u32,
        /// Flags (none known to this header).
        pub flags: u32,
        /// Out: the fake offset to pass to mmap.
        pub offset: u64,
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_vm_create`.
    pub struct XeVmCreate {
        /// Extension chain.
        pub extensions: u64,
        /// DRM_XE_VM_CREATE_FLAG_*.
        pub flags: u32,
        /// Out: the VM id.
        pub vm_id: u32,
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_vm_destroy`.
    pub struct XeVmDestroy {
        /// The VM.
        pub vm_id: u32,
        /// MBZ.
        pub pad: u32,
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_vm_bind_op`.
    pub struct XeVmBindOp {
        /// Extension chain.
        pub extensions: u64,
        /// GEM handle (MAP, UNMAP_ALL).
        pub obj: u32,
        /// PAT index.
        pub pat_index: u16,
        /// MBZ.
        pub pad: u16,
        /// Union: offset in the BO (MAP) or CPU address (MAP_USERPTR).
        pub obj_offset: u64,
        /// Bytes.
        pub range: u64,
        /// GPU VA.
        pub addr: u64,
        /// DRM_XE_VM_BIND_OP_*.
        pub op: u32,
        /// DRM_XE_VM_BIND_FLAG_*.
        pub flags: u32,
        /// PREFETCH: memory-region instance.
        pub prefetch_mem_region_instance: u32,
        /// MBZ.
        pub pad2: u32,
        /// Reserved.
        pub reserved: [u64; 3],
    }

    /// `struct drm_xe_vm_bind`.
    pub struct XeVmBind {
        /// Extension chain.
        pub extensions: u64,
        /// The VM.
        pub vm_id: u32,
        /// Bind queue (0: the VM's default).
        pub exec_queue_id: u32,
        /// MBZ.
        pub pad: u32,
        /// Number of ops.
        pub num_binds: u32,
        /// Union: the op (num_binds == 1) or, in its first 8 bytes, a pointer to the ops.
        pub bind: XeVmBindOp,
        /// MBZ.
        pub pad2: u32,
        /// Number of syncs.
        pub num_syncs: u32,
        /// Pointer to the syncs.
        pub syncs: u64,
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_exec_queue_create`.
    pub struct XeExecQueueCreate {
        /// Extension chain (SET_PROPERTY).
        pub extensions: u64,
        /// Parallel width.
        pub width: u16,
        /// Placements per width slot.
        pub num_placements: u16,
        /// The VM.
        pub vm_id: u32,
        /// Flags (none known to this header).
        pub flags: u32,
        /// Out: the queue id.
        pub exec_queue_id: u32,
        /// Pointer to width × num_placements engine instances.
        pub instances: u64,
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_exec_queue_destroy`.
    pub struct XeExecQueueDestroy {
        /// The queue.
        pub exec_queue_id: u32,
        /// MBZ.
        pub pad: u32,
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_exec_queue_get_property`.
    pub struct XeExecQueueGetProperty {
        /// Extension chain.
        pub extensions: u64,
        /// The queue.
        pub exec_queue_id: u32,
        /// DRM_XE_EXEC_QUEUE_GET_PROPERTY_*.
        pub property: u32,
        /// Out: the value.
        pub value: u64,
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_sync`.
    pub struct XeSync {
        /// Extension chain.
        pub extensions: u64,
        /// DRM_XE_SYNC_TYPE_*.
        pub sync_type: u32,
        /// DRM_XE_SYNC_FLAG_SIGNAL.
        pub flags: u32,
        /// Union: syncobj handle (low 32 bits) or user-fence address.
        pub handle_or_addr: u64,
        /// Timeline point / user-fence value.
        pub timeline_value: u64,
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_exec`.
    pub struct XeExec {
        /// Extension chain.
        pub extensions: u64,
        /// The queue.
        pub exec_queue_id: u32,
        /// Number of syncs.
        pub num_syncs: u32,
        /// Pointer to the syncs.
        pub syncs: u64,
        /// Batch address (width 1) or pointer to `num_batch_buffer` addresses.
        pub address: u64,
        /// Number of batch buffers.
        pub num_batch_buffer: u16,
        /// MBZ.
        pub pad: [u16; 3],
        /// Reserved.
        pub reserved: [u64; 2],
    }

    /// `struct drm_xe_wait_user_fence`.
    pub struct XeWaitUserFence {
        /// Extension chain.
        pub extensions: u64,
        /// CPU address of the u64.
        pub addr: u64,
        /// DRM_XE_UFENCE_WAIT_OP_*.
        pub op: u16,
        /// DRM_XE_UFENCE_WAIT_FLAG_ABSTIME.
        pub flags: u16,
        /// MBZ.
        pub pad: u32,
        /// Compared value.
        pub value: u64,
        /// Mask.
        pub mask: u64,
        /// Nanoseconds (< 0: forever); rewritten with the time left.
        pub timeout: i64,
        /// Queue whose ban fails the wait.
        pub exec_queue_id: u32,
        /// MBZ.
        pub pad2: u32,
        /// Reserved.
        pub reserved: [u64; 2],
    }
}

/// Capability numbers of DRM_IOCTL_GET_CAP answered here.
pub mod cap {
    /// DRM_CAP_PRIME.
    pub const PRIME: u64 = 0x5;
    /// DRM_PRIME_CAP_IMPORT | DRM_PRIME_CAP_EXPORT.
    pub const PRIME_IMPORT_EXPORT: u64 = 0x3;
    /// DRM_CAP_SYNCOBJ.
    pub const SYNCOBJ: u64 = 0x13;
    /// DRM_CAP_SYNCOBJ_TIMELINE.
    pub const SYNCOBJ_TIMELINE: u64 = 0x14;
}

/// Flag and enum values of drm.h's syncobj ioctls.
pub mod syncobj {
    /// DRM_SYNCOBJ_CREATE_SIGNALED.
    pub const CREATE_SIGNALED: u32 = 1 << 0;
    /// DRM_SYNCOBJ_{FD_TO_HANDLE_FLAGS_IMPORT,HANDLE_TO_FD_FLAGS_EXPORT}_SYNC_FILE.
    pub const SYNC_FILE: u32 = 1 << 0;
    /// DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL.
    pub const WAIT_ALL: u32 = 1 << 0;
    /// DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT.
    pub const WAIT_FOR_SUBMIT: u32 = 1 << 1;
    /// DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE.
    pub const WAIT_AVAILABLE: u32 = 1 << 2;
    /// DRM_SYNCOBJ_WAIT_FLAGS_WAIT_DEADLINE.
    pub const WAIT_DEADLINE: u32 = 1 << 3;
    /// DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED.
    pub const QUERY_LAST_SUBMITTED: u32 = 1 << 0;
}

/// Flag and enum values of xe_drm.h.
pub mod xe {
    /// DRM_XE_DEVICE_QUERY_ENGINES.
    pub const QUERY_ENGINES: u32 = 0;
    /// DRM_XE_DEVICE_QUERY_MEM_REGIONS.
    pub const QUERY_MEM_REGIONS: u32 = 1;
    /// DRM_XE_DEVICE_QUERY_CONFIG.
    pub const QUERY_CONFIG: u32 = 2;
    /// DRM_XE_DEVICE_QUERY_GT_LIST.
    pub const QUERY_GT_LIST: u32 = 3;
    /// DRM_XE_DEVICE_QUERY_HWCONFIG.
    pub const QUERY_HWCONFIG: u32 = 4;
    /// DRM_XE_DEVICE_QUERY_GT_TOPOLOGY.
    pub const QUERY_GT_TOPOLOGY: u32 = 5;
    /// DRM_XE_DEVICE_QUERY_ENGINE_CYCLES.
    pub const QUERY_ENGINE_CYCLES: u32 = 6;
    /// DRM_XE_DEVICE_QUERY_UC_FW_VERSION.
    pub const QUERY_UC_FW_VERSION: u32 = 7;
    /// DRM_XE_DEVICE_QUERY_OA_UNITS.
    pub const QUERY_OA_UNITS: u32 = 8;
    /// DRM_XE_DEVICE_QUERY_EU_STALL (Linux 6.15).
    pub const QUERY_EU_STALL: u32 = 10;

    /// DRM_XE_QUERY_CONFIG_* indices.
    pub const CONFIG_REV_AND_DEVICE_ID: usize = 0;
    /// DRM_XE_QUERY_CONFIG_FLAGS.
    pub const CONFIG_FLAGS: usize = 1;
    /// DRM_XE_QUERY_CONFIG_FLAG_HAS_VRAM.
    pub const CONFIG_FLAG_HAS_VRAM: u64 = 1 << 0;
    /// DRM_XE_QUERY_CONFIG_MIN_ALIGNMENT.
    pub const CONFIG_MIN_ALIGNMENT: usize = 2;
    /// DRM_XE_QUERY_CONFIG_VA_BITS.
    pub const CONFIG_VA_BITS: usize = 3;
    /// DRM_XE_QUERY_CONFIG_MAX_EXEC_QUEUE_PRIORITY.
    pub const CONFIG_MAX_EXEC_QUEUE_PRIORITY: usize = 4;
    /// Number of config parameters of this header.
    pub const CONFIG_PARAMS: usize = 5;

    /// DRM_XE_ENGINE_CLASS_COPY.
    pub const ENGINE_CLASS_COPY: u16 = 1;
    /// DRM_XE_ENGINE_CLASS_COMPUTE.
    pub const ENGINE_CLASS_COMPUTE: u16 = 4;
    /// DRM_XE_ENGINE_CLASS_VM_BIND.
    pub const ENGINE_CLASS_VM_BIND: u16 = 5;

    /// DRM_XE_MEM_REGION_CLASS_SYSMEM.
    pub const MEM_CLASS_SYSMEM: u16 = 0;
    /// DRM_XE_MEM_REGION_CLASS_VRAM.
    pub const MEM_CLASS_VRAM: u16 = 1;

    /// DRM_XE_GEM_CREATE_FLAG_DEFER_BACKING.
    pub const GEM_CREATE_DEFER_BACKING: u32 = 1 << 0;
    /// DRM_XE_GEM_CREATE_FLAG_SCANOUT.
    pub const GEM_CREATE_SCANOUT: u32 = 1 << 1;
    /// DRM_XE_GEM_CREATE_FLAG_NEEDS_VISIBLE_VRAM.
    pub const GEM_CREATE_NEEDS_VISIBLE_VRAM: u32 = 1 << 2;
    /// DRM_XE_GEM_CPU_CACHING_WB.
    pub const CPU_CACHING_WB: u16 = 1;
    /// DRM_XE_GEM_CPU_CACHING_WC.
    pub const CPU_CACHING_WC: u16 = 2;

    /// DRM_XE_VM_CREATE_FLAG_SCRATCH_PAGE.
    pub const VM_CREATE_SCRATCH_PAGE: u32 = 1 << 0;
    /// DRM_XE_VM_CREATE_FLAG_LR_MODE.
    pub const VM_CREATE_LR_MODE: u32 = 1 << 1;
    /// DRM_XE_VM_CREATE_FLAG_FAULT_MODE.
    pub const VM_CREATE_FAULT_MODE: u32 = 1 << 2;

    /// DRM_XE_VM_BIND_OP_MAP.
    pub const BIND_OP_MAP: u32 = 0;
    /// DRM_XE_VM_BIND_OP_UNMAP.
    pub const BIND_OP_UNMAP: u32 = 1;
    /// DRM_XE_VM_BIND_OP_MAP_USERPTR.
    pub const BIND_OP_MAP_USERPTR: u32 = 2;
    /// DRM_XE_VM_BIND_OP_UNMAP_ALL.
    pub const BIND_OP_UNMAP_ALL: u32 = 3;
    /// DRM_XE_VM_BIND_OP_PREFETCH.
    pub const BIND_OP_PREFETCH: u32 = 4;
    /// DRM_XE_VM_BIND_FLAG_READONLY.
    pub const BIND_FLAG_READONLY: u32 = 1 << 0;
    /// DRM_XE_VM_BIND_FLAG_IMMEDIATE.
    pub const BIND_FLAG_IMMEDIATE: u32 = 1 << 1;
    /// DRM_XE_VM_BIND_FLAG_NULL.
    pub const BIND_FLAG_NULL: u32 = 1 << 2;
    /// DRM_XE_VM_BIND_FLAG_DUMPABLE.
    pub const BIND_FLAG_DUMPABLE: u32 = 1 << 3;

    /// DRM_XE_EXEC_QUEUE_EXTENSION_SET_PROPERTY.
    pub const EXEC_QUEUE_EXTENSION_SET_PROPERTY: u32 = 0;
    /// DRM_XE_EXEC_QUEUE_SET_PROPERTY_PRIORITY.
    pub const EXEC_QUEUE_PROPERTY_PRIORITY: u32 = 0;
    /// DRM_XE_EXEC_QUEUE_SET_PROPERTY_TIMESLICE.
    pub const EXEC_QUEUE_PROPERTY_TIMESLICE: u32 = 1;
    /// DRM_XE_EXEC_QUEUE_GET_PROPERTY_BAN.
    pub const EXEC_QUEUE_GET_PROPERTY_BAN: u32 = 0;

    /// DRM_XE_SYNC_TYPE_SYNCOBJ.
    pub const SYNC_TYPE_SYNCOBJ: u32 = 0;
    /// DRM_XE_SYNC_TYPE_TIMELINE_SYNCOBJ.
    pub const SYNC_TYPE_TIMELINE_SYNCOBJ: u32 = 1;
    /// DRM_XE_SYNC_TYPE_USER_FENCE.
    pub const SYNC_TYPE_USER_FENCE: u32 = 2;
    /// DRM_XE_SYNC_FLAG_SIGNAL.
    pub const SYNC_FLAG_SIGNAL: u32 = 1 << 0;
    /// DRM_XE_MAX_SYNCS.
    pub const MAX_SYNCS: u32 = 1024;

    /// DRM_XE_UFENCE_WAIT_OP_LTE (the largest op).
    pub const UFENCE_WAIT_OP_LTE: u16 = 5;
    /// DRM_XE_UFENCE_WAIT_FLAG_ABSTIME.
    pub const UFENCE_WAIT_FLAG_ABSTIME: u16 = 1 << 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request numbers built here equal the headers' (values printed by `DRM_IOWR` in C).
    #[test]
    fn request_numbers_match_the_headers() {
        assert_eq!(drm_iowr::<XeDeviceQuery>(nr::XE_DEVICE_QUERY), 0xc028_6440);
        assert_eq!(drm_iow::<XeVmBind>(nr::XE_VM_BIND), 0x4088_6445);
        assert_eq!(drm_iow::<XeExec>(nr::XE_EXEC), 0x4038_6449);
        assert_eq!(
            drm_iowr::<DrmSyncobjCreate>(nr::SYNCOBJ_CREATE),
            0xc008_64bf
        );
        let split = IoctlNr::split(0xc028_6440);
        assert_eq!((split.nr, split.ty, split.size), (0x40, 0x64, 40));
    }
}
