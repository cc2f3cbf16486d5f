//! Flag words and small enumerations of the uAPI, declared once.
//!
//! Owns: every flag bit and enum value that appears in a wire struct. Unknown bits are rejected
//! by the decoder with `from_bits` (never `from_bits_truncate`); the driver uses these types too
//! (`gpud::bind::op`). Must not: validate combinations (that is `rules.rs`).

use bitflags::bitflags;

bitflags! {
    /// `VmCreateArgs::flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct VmCreateFlags: u32 {
        /// Unbound VA reads a scratch page instead of faulting.
        const SCRATCH_PAGE = 1 << 0;
        /// Long-running: no dma-fence (syncobj) out-syncs; user fences only.
        const LR_MODE = 1 << 1;
        /// Recoverable faults, on-demand population. Requires LR_MODE.
        const FAULT_MODE = 1 << 2;
    }
}

bitflags! {
    /// `ExecQueueCreateArgs::flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ExecQueueCreateFlags: u16 {
        /// `priority` holds the queue's priority (without it the queue is normal priority
        /// and `priority` must be zero).
        const PRIORITY = 1 << 0;
        /// The queue's batches are Intel MI_* command streams (docs/simgpu.md §6a), not
        /// simgpu's own encoding. Copy and compute queues only (a bind queue: EINVAL).
        const INTEL_BATCHES = 1 << 1;
    }
}

/// How an exec queue's batches are encoded (`ExecQueueCreateFlags::INTEL_BATCHES`). Fixed at
/// creation: the driver tells the device on every batch start, so a batch cannot pick its
/// own decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BatchFormat {
    /// simgpu's command set (docs/simgpu.md §6).
    #[default]
    Native,
    /// Intel MI_* commands (docs/simgpu.md §6a).
    Intel,
}

bitflags! {
    /// `BoCreateArgs::placement`: where the BO may live.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Placement: u32 {
        /// System memory.
        const SYSTEM = 1 << 0;
        /// Device memory.
        const VRAM = 1 << 1;
    }
}

bitflags! {
    /// `BoCreateArgs::flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct BoCreateFlags: u32 {
        /// A VRAM placement must be CPU-visible (inside the aperture).
        const NEEDS_VISIBLE_VRAM = 1 << 0;
        /// Allocate backing store on first use instead of at creation.
        const DEFER_BACKING = 1 << 1;
    }
}

bitflags! {
    /// `BindOpWire::flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct BindFlags: u32 {
        /// Read-only PTEs.
        const READONLY = 1 << 0;
        /// On a fault-mode VM, populate now instead of on first fault.
        const IMMEDIATE = 1 << 1;
        /// Sparse: reads return zero, writes are dropped. MAP only, no BO.
        const NULL = 1 << 2;
        /// Reserve VA that mirrors the CPU address space (SVM). MAP only, no BO, fault-mode VMs.
        const CPU_ADDR_MIRROR = 1 << 5;
    }
}

bitflags! {
    /// `SyncWire::flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SyncFlags: u32 {
        /// The entry is signalled when the work completes (without it: waited for before).
        const SIGNAL = 1 << 0;
    }
}

bitflags! {
    /// `WaitUserFenceArgs::flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct WaitFlags: u16 {
        /// `timeout_ns` is an absolute deadline on the device clock.
        const ABSTIME = 1 << 0;
    }
}

bitflags! {
    /// `SyncobjCreateArgs::flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SyncobjCreateFlags: u32 {
        /// Create with an already signalled fence.
        const SIGNALED = 1 << 0;
    }
}

bitflags! {
    /// `SyncobjWaitArgs::flags` (and `SyncobjTransferArgs::flags`, WAIT_FOR_SUBMIT only).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SyncobjWaitFlags: u32 {
        /// Wait for all elements (default: any).
        const WAIT_ALL = 1 << 0;
        /// A point with no fence yet is waited for instead of being an error.
        const WAIT_FOR_SUBMIT = 1 << 1;
        /// `timeout_ns` is an absolute deadline on the device clock.
        const ABSTIME = 1 << 2;
    }
}

/// `BindOpWire::op` values.
pub mod bind_op {
    /// Map a BO range (or NULL / CPU_ADDR_MIRROR without a BO).
    pub const MAP: u32 = 0;
    /// Unmap a VA range.
    pub const UNMAP: u32 = 1;
    /// Map client memory by CPU address.
    pub const MAP_USERPTR: u32 = 2;
    /// Unmap every mapping of a BO in the VM.
    pub const UNMAP_ALL: u32 = 3;
    /// Populate / migrate a range.
    pub const PREFETCH: u32 = 4;
}

/// `SyncWire::sync_type` values.
pub mod sync_type {
    /// A binary syncobj.
    pub const SYNCOBJ: u32 = 0;
    /// A timeline syncobj point.
    pub const TIMELINE_SYNCOBJ: u32 = 1;
    /// A 64-bit value written to a GPU VA.
    pub const USER_FENCE: u32 = 2;
}

/// Engine classes (the Xe numbering, so UMDs port easily).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum EngineClass {
    /// Copy engine.
    Copy = 1,
    /// Compute engine.
    Compute = 4,
    /// An extra in-order bind queue of a VM.
    VmBind = 5,
}

impl EngineClass {
    /// The class for a wire value, if this uAPI knows it.
    pub fn from_raw(raw: u16) -> Option<EngineClass> {
        match raw {
            1 => Some(EngineClass::Copy),
            4 => Some(EngineClass::Compute),
            5 => Some(EngineClass::VmBind),
            _ => None,
        }
    }
}

/// Scheduling priority of an exec queue (`ExecQueueCreateArgs::priority`, the values of Xe's
/// exec-queue priority property). High needs privilege.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum QueuePriority {
    /// Background work: runs on hardware queues the others leave free.
    Low = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Latency-sensitive work: preempts normal and low queues at once. Privileged.
    High = 2,
}

impl QueuePriority {
    /// The priority for a wire value, if this uAPI knows it.
    pub fn from_raw(raw: u32) -> Option<QueuePriority> {
        match raw {
            0 => Some(QueuePriority::Low),
            1 => Some(QueuePriority::Normal),
            2 => Some(QueuePriority::High),
            _ => None,
        }
    }
}

/// Memory regions, as named by PREFETCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    /// System memory (wire 0).
    System,
    /// VRAM (wire 1).
    Vram,
    /// The preferred location of the range (wire `u32::MAX`).
    Preferred,
}

impl Region {
    /// Wire value of the preferred-location region.
    pub const PREFERRED_RAW: u32 = u32::MAX;

    /// The region for a wire value.
    pub fn from_raw(raw: u32) -> Option<Region> {
        match raw {
            0 => Some(Region::System),
            1 => Some(Region::Vram),
            Self::PREFERRED_RAW => Some(Region::Preferred),
            _ => None,
        }
    }

    /// The wire value.
    pub fn raw(self) -> u32 {
        match self {
            Region::System => 0,
            Region::Vram => 1,
            Region::Preferred => Self::PREFERRED_RAW,
        }
    }
}

/// WAIT_USER_FENCE comparison: `(*addr & mask) OP (value & mask)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum WaitOp {
    /// ==
    Eq = 0,
    /// !=
    Neq = 1,
    /// >
    Gt = 2,
    /// >=
    Gte = 3,
    /// <
    Lt = 4,
    /// <=
    Lte = 5,
}

impl WaitOp {
    /// The op for a wire value.
    pub fn from_raw(raw: u16) -> Option<WaitOp> {
        [
            Self::Eq,
            Self::Neq,
            Self::Gt,
            Self::Gte,
            Self::Lt,
            Self::Lte,
        ]
        .into_iter()
        .find(|op| *op as u16 == raw)
    }

    /// Whether `current` satisfies the wait for `value` under `mask`.
    pub fn holds(self, current: u64, value: u64, mask: u64) -> bool {
        let (a, b) = (current & mask, value & mask);
        match self {
            WaitOp::Eq => a == b,
            WaitOp::Neq => a != b,
            WaitOp::Gt => a > b,
            WaitOp::Gte => a >= b,
            WaitOp::Lt => a < b,
            WaitOp::Lte => a <= b,
        }
    }
}

/// Kinds of shareable objects (EXPORT_TOKEN / IMPORT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ObjectKind {
    /// A buffer object.
    Bo = 1,
    /// A syncobj.
    Syncobj = 2,
}

impl ObjectKind {
    /// The kind for a wire value.
    pub fn from_raw(raw: u32) -> Option<ObjectKind> {
        match raw {
            1 => Some(ObjectKind::Bo),
            2 => Some(ObjectKind::Syncobj),
            _ => None,
        }
    }
}
