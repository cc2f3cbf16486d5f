//! The bind request vocabulary at driver level: ops, op flags, VM flags, syncs, and the
//! op/flag validation table (drm-semantics §1.6 step 4 and §1.5, as it applies once the
//! scheme has rejected malformed wire input).
//!
//! Owns: [`BindOp`], [`OpKind`], [`BindFlags`], [`VmFlags`], [`BindSync`], [`validate_ops`],
//! [`parse_syncs`]. Must not: touch the VM; everything here is a pure check.

use super::error::BindError;
use crate::mem::bo::Bo;
use crate::sync::{Fence, Syncobj};
use crate::types::{GpuVa, PAGE_SIZE};
use std::sync::Arc;

/// Per-op flags: the uAPI's own type (one table for the wire and the driver).
pub use gpu_scheme::uapi::flags::BindFlags;
/// PREFETCH's target region: the uAPI's own type.
pub use gpu_scheme::uapi::flags::Region;
/// VM-create flags: the uAPI's own type (one table for the wire and the driver).
pub use gpu_scheme::uapi::flags::VmCreateFlags as VmFlags;

/// The create-time rules of VM flags (`gpu_scheme::uapi::rules::vm_flags`).
pub fn check_vm_flags(flags: VmFlags) -> Result<(), BindError> {
    gpu_scheme::uapi::rules::vm_flags(flags).map_err(|reason| BindError::InvalidVmFlags {
        flags: flags.bits(),
        reason,
    })
}

/// The operation of one bind op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Map a BO window (or null / mirror with the flags).
    Map,
    /// Unmap a range.
    Unmap,
    /// Map client memory; comes with the SVM issue.
    MapUserptr,
    /// Unmap every mapping of a BO.
    UnmapAll,
    /// Make a range resident (populate its PTEs on a fault-mode VM).
    Prefetch,
}

impl OpKind {
    /// The uAPI value (`gpu_scheme::uapi::flags::bind_op`).
    pub fn code(self) -> u32 {
        use gpu_scheme::uapi::flags::bind_op;
        match self {
            OpKind::Map => bind_op::MAP,
            OpKind::Unmap => bind_op::UNMAP,
            OpKind::MapUserptr => bind_op::MAP_USERPTR,
            OpKind::UnmapAll => bind_op::UNMAP_ALL,
            OpKind::Prefetch => bind_op::PREFETCH,
        }
    }
}

/// One op of a bind call.
#[derive(Debug, Clone)]
pub struct BindOp {
    /// What to do.
    pub kind: OpKind,
    /// The BO (MAP, UNMAP_ALL).
    pub bo: Option<Arc<Bo>>,
    /// Offset in the BO (MAP) or CPU address (MAP_USERPTR).
    pub offset: u64,
    /// Start of the GPU VA range (0 for UNMAP_ALL).
    pub addr: GpuVa,
    /// Length (0 for UNMAP_ALL).
    pub range: u64,
    /// Flags.
    pub flags: BindFlags,
    /// Cache attributes of the PTEs: an index into `hw::pte::PAT_TABLE` (MAP only).
    pub pat_index: u16,
    /// Where PREFETCH moves memory (PREFETCH only; `Preferred`: where faults would put it).
    pub prefetch_region: Region,
}

impl BindOp {
    /// MAP_USERPTR `[addr, addr + range)` to the client's CPU memory at `cpu`.
    pub fn map_userptr(cpu: u64, addr: u64, range: u64) -> Self {
        Self::new(OpKind::MapUserptr, None, cpu, addr, range)
    }

    /// MAP `[addr, addr + range)` to `bo` from `offset`.
    pub fn map(bo: &Arc<Bo>, offset: u64, addr: u64, range: u64) -> Self {
        Self::new(OpKind::Map, Some(bo.clone()), offset, addr, range)
    }

    /// MAP with NULL: a sparse range.
    pub fn map_null(addr: u64, range: u64) -> Self {
        Self::new(OpKind::Map, None, 0, addr, range).with_flags(BindFlags::NULL)
    }

    /// MAP with CPU_ADDR_MIRROR: `[addr, addr + range)` mirrors the same CPU addresses (SVM).
    pub fn mirror(addr: u64, range: u64) -> Self {
        Self::new(OpKind::Map, None, 0, addr, range).with_flags(BindFlags::CPU_ADDR_MIRROR)
    }

    /// UNMAP `[addr, addr + range)`.
    pub fn unmap(addr: u64, range: u64) -> Self {
        Self::new(OpKind::Unmap, None, 0, addr, range)
    }

    /// UNMAP_ALL of `bo`.
    pub fn unmap_all(bo: &Arc<Bo>) -> Self {
        Self::new(OpKind::UnmapAll, Some(bo.clone()), 0, 0, 0)
    }

    /// PREFETCH `[addr, addr + range)` to where faults would put it.
    pub fn prefetch(addr: u64, range: u64) -> Self {
        Self::new(OpKind::Prefetch, None, 0, addr, range)
    }

    /// PREFETCH `[addr, addr + range)` into `region`.
    pub fn prefetch_to(addr: u64, range: u64, region: Region) -> Self {
        Self {
            prefetch_region: region,
            ..Self::prefetch(addr, range)
        }
    }

    fn new(kind: OpKind, bo: Option<Arc<Bo>>, offset: u64, addr: u64, range: u64) -> Self {
        Self {
            kind,
            bo,
            offset,
            addr: GpuVa(addr),
            range,
            flags: BindFlags::empty(),
            pat_index: 0,
            prefetch_region: Region::Preferred,
        }
    }

    /// Sets the PAT index (cache attributes of the PTEs).
    pub fn with_pat_index(mut self, pat_index: u16) -> Self {
        self.pat_index = pat_index;
        self
    }

    /// Adds flags.
    pub fn with_flags(mut self, flags: BindFlags) -> Self {
        self.flags |= flags;
        self
    }
}

/// One sync entry of a bind call.
#[derive(Debug, Clone)]
pub enum BindSync {
    /// Wait for a binary syncobj's fence (`None`) or a timeline point.
    Wait(Arc<Syncobj>, Option<u64>),
    /// Signal a binary syncobj (`None`: replace its fence) or add a timeline point.
    Signal(Arc<Syncobj>, Option<u64>),
    /// Write `value` at the 8-byte aligned `va` of this VM once the bind completed.
    UserFence {
        /// GPU VA inside a BO mapping of the VM.
        va: GpuVa,
        /// Value written.
        value: u64,
    },
}

/// The syncs of a call after parsing.
#[derive(Debug, Default)]
pub struct ParsedSyncs {
    /// Fences to wait for.
    pub wait: Vec<Arc<Fence>>,
    /// Syncobjs to signal (point for timelines).
    pub signal: Vec<(Arc<Syncobj>, Option<u64>)>,
    /// The user fence.
    pub user_fence: Option<(GpuVa, u64)>,
}

impl ParsedSyncs {
    /// Whether the call is asynchronous (any sync given).
    pub fn is_async(&self) -> bool {
        !self.wait.is_empty() || !self.signal.is_empty() || self.user_fence.is_some()
    }
}

/// Parses syncs (§1.5): timeline point 0, unaligned or duplicate user fences are invalid;
/// dma-fence out-syncs on an LR VM and user fences on a zero-op bind are not supported; a wait
/// with no fence is invalid.
pub fn parse_syncs(syncs: &[BindSync], lr: bool, num_ops: usize) -> Result<ParsedSyncs, BindError> {
    let mut out = ParsedSyncs::default();
    for (index, sync) in syncs.iter().enumerate() {
        match sync {
            BindSync::Wait(_, Some(0)) | BindSync::Signal(_, Some(0)) => {
                return Err(BindError::InvalidSync {
                    index,
                    reason: "timeline point 0",
                })
            }
            BindSync::Wait(obj, point) => {
                let fence = obj
                    .find_fence(point.unwrap_or(0))
                    .map_err(|source| BindError::SyncMissing { index, source })?;
                out.wait.push(fence);
            }
            BindSync::Signal(_, _) if lr => {
                return Err(BindError::SyncNotSupported {
                    index,
                    reason: "dma-fence out-sync on a long-running VM",
                })
            }
            BindSync::Signal(obj, point) => out.signal.push((obj.clone(), *point)),
            BindSync::UserFence { .. } if num_ops == 0 => {
                return Err(BindError::SyncNotSupported {
                    index,
                    reason: "user fence on a bind with no ops",
                })
            }
            BindSync::UserFence { va, .. } if va.get() % 8 != 0 => {
                return Err(BindError::InvalidSync {
                    index,
                    reason: "user fence address not 8-byte aligned",
                })
            }
            BindSync::UserFence { .. } if out.user_fence.is_some() => {
                return Err(BindError::InvalidSync {
                    index,
                    reason: "more than one user fence",
                })
            }
            BindSync::UserFence { va, value } => out.user_fence = Some((*va, *value)),
        }
    }
    Ok(out)
}

/// The op/flag table. `fault_vm`: the VM is in fault mode.
pub fn validate_ops(ops: &[BindOp], fault_vm: bool) -> Result<(), BindError> {
    for (index, op) in ops.iter().enumerate() {
        validate_op(op, fault_vm).map_err(|reason| BindError::InvalidOp { index, reason })?;
    }
    Ok(())
}

fn validate_op(op: &BindOp, fault_vm: bool) -> Result<(), &'static str> {
    if op.flags.contains(BindFlags::CPU_ADDR_MIRROR) && !fault_vm {
        return Err("CPU_ADDR_MIRROR on a VM without FAULT_MODE");
    }
    gpu_scheme::uapi::rules::bind_op_shape(gpu_scheme::uapi::rules::BindOpShape {
        op: op.kind.code(),
        flags: op.flags,
        bo: op.bo.is_some(),
        offset: op.offset != 0,
        range: op.addr.get() != 0 || op.range != 0,
    })?;
    if op.kind == OpKind::UnmapAll {
        return Ok(());
    }
    if op.offset % PAGE_SIZE != 0 || op.addr.get() % PAGE_SIZE != 0 || op.range % PAGE_SIZE != 0 {
        return Err("offset, address or range not 4 KiB aligned");
    }
    if op.range == 0 {
        return Err("zero range");
    }
    if crate::hw::pte::CacheMode::from_pat_index(op.pat_index).is_none() {
        return Err("pat_index beyond the PAT table");
    }
    Ok(())
}
