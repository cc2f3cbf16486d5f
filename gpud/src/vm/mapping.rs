//! Mapping records: what one GPU VA range is backed by.
//!
//! Owns: [`MappingFlags`], [`MappingSpec`] (a mapping before it is in a tree: range, backing,
//! offset, flags) and [`Mapping`] (a spec with the [`MappingId`] the VM gave it on insert).
//! The constructors are the only way to build a spec, and they enforce the backing rules:
//! - BO-backed: a vm_bo, a page-aligned BO offset, optionally READ_ONLY;
//! - userptr: no BO, the offset is the page-aligned CPU address, USERPTR set;
//! - null/sparse and CPU-mirror: no BO, offset 0;
//! - in every case `offset + len` fits in 64 bits, so the planner's split offsets
//!   (`offset + (piece start - mapping start)`) cannot overflow.
//!
//! Must not: touch the tree, page tables or the BO's memory.

use super::va::VaRange;
use super::vm_bo::VmBo;
use crate::types::{BoId, CpuVa, RangeError, PAGE_SIZE};
use bitflags::bitflags;
use std::sync::Arc;
use thiserror::Error;

/// Why a mapping spec was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MappingError {
    /// The offset is misaligned or `offset + len` overflows.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// The mapped window `[offset, offset + len)` does not lie inside the BO.
    #[error("BO window {offset:#x}+{len:#x} exceeds the BO size {size:#x}")]
    OutsideBo { offset: u64, len: u64, size: u64 },
}

bitflags! {
    /// Attributes of a mapping (drm_gpuva flags plus Xe VMA kinds).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MappingFlags: u32 {
        /// PTEs are written read-only.
        const READ_ONLY = 1 << 0;
        /// Null/sparse mapping: writes dropped, reads zero; no backing store.
        const SPARSE = 1 << 1;
        /// Reserves GPU VA that mirrors the CPU address space (SVM); no PTEs at bind time.
        const CPU_MIRROR = 1 << 2;
        /// Backed by client CPU memory; `offset` is the CPU address of the first page.
        const USERPTR = 1 << 3;
        /// The backing pages were invalidated (userptr notifier); must be rebound before use.
        const INVALIDATED = 1 << 4;
        /// Low bit of the PAT index of the mapping's PTEs (see [`MappingFlags::pat_index`]).
        const PAT_0 = 1 << 8;
        /// High bit of the PAT index.
        const PAT_1 = 1 << 9;
    }
}

impl MappingFlags {
    /// The PAT index the mapping's PTEs carry (`hw::pte::PAT_TABLE`): bits 9:8, so splits
    /// and rebinds keep it with the other flags.
    pub fn pat_index(self) -> u16 {
        ((self.bits() >> 8) & 0b11) as u16
    }

    /// These flags with PAT index `index`; `None` if it does not fit the field.
    pub fn with_pat_index(self, index: u16) -> Option<Self> {
        if index > 0b11 {
            return None;
        }
        let rest = self - (Self::PAT_0 | Self::PAT_1);
        Some(rest | Self::from_bits_retain(u32::from(index) << 8))
    }
}

/// Identifies one mapping inside one VM. Assigned on insert, never reused by that VM (except
/// that an unwind restores the counter, so a rolled-back bind leaves no trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MappingId(pub u64);

/// A mapping request or piece: range, backing and flags, without an id.
#[derive(Debug, Clone)]
pub struct MappingSpec {
    range: VaRange,
    bo: Option<Arc<VmBo>>,
    offset: u64,
    flags: MappingFlags,
}

fn check_offset(offset: u64, len: u64) -> Result<(), RangeError> {
    if offset % PAGE_SIZE != 0 {
        return Err(RangeError::Misaligned {
            value: offset,
            align: PAGE_SIZE,
        });
    }
    offset
        .checked_add(len)
        .map(|_| ())
        .ok_or(RangeError::Overflow { start: offset, len })
}

impl MappingSpec {
    /// `range` backed by `vm_bo` from byte `offset`: page aligned, and the window
    /// `[offset, offset + len)` inside the BO.
    pub fn bo(
        range: VaRange,
        vm_bo: Arc<VmBo>,
        offset: u64,
        read_only: bool,
    ) -> Result<Self, MappingError> {
        check_offset(offset, range.len())?;
        let (len, size) = (range.len(), vm_bo.bo().size());
        if len > size || offset > size - len {
            return Err(MappingError::OutsideBo { offset, len, size });
        }
        let mut flags = MappingFlags::empty();
        flags.set(MappingFlags::READ_ONLY, read_only);
        Ok(Self {
            range,
            bo: Some(vm_bo),
            offset,
            flags,
        })
    }

    /// `range` backed by client CPU memory starting at `cpu`.
    pub fn userptr(range: VaRange, cpu: CpuVa, read_only: bool) -> Result<Self, MappingError> {
        check_offset(cpu.get(), range.len())?;
        let mut flags = MappingFlags::USERPTR;
        flags.set(MappingFlags::READ_ONLY, read_only);
        Ok(Self {
            range,
            bo: None,
            offset: cpu.get(),
            flags,
        })
    }

    /// A null (sparse) mapping.
    pub fn sparse(range: VaRange) -> Self {
        Self::unbacked(range, MappingFlags::SPARSE)
    }

    /// A CPU-address-mirror (SVM) mapping.
    pub fn cpu_mirror(range: VaRange) -> Self {
        Self::unbacked(range, MappingFlags::CPU_MIRROR)
    }

    fn unbacked(range: VaRange, flags: MappingFlags) -> Self {
        Self {
            range,
            bo: None,
            offset: 0,
            flags,
        }
    }

    /// The GPU VA range.
    pub fn range(&self) -> VaRange {
        self.range
    }

    /// The vm_bo backing the range, if BO-backed.
    pub fn vm_bo(&self) -> Option<&Arc<VmBo>> {
        self.bo.as_ref()
    }

    /// The backing BO's id, if BO-backed.
    pub fn bo_id(&self) -> Option<BoId> {
        self.bo.as_ref().map(|b| b.bo_id())
    }

    /// BO offset (BO-backed), CPU address (userptr) or 0.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The flags.
    pub fn flags(&self) -> MappingFlags {
        self.flags
    }

    /// This spec with PTEs of PAT index `index`; `None` if the index does not fit.
    pub fn with_pat_index(mut self, index: u16) -> Option<Self> {
        self.flags = self.flags.with_pat_index(index)?;
        Some(self)
    }

    /// The piece `sub` of this mapping, with the offset advanced by how far `sub` starts
    /// after this mapping's start. `None` if `sub` is not inside `self.range`.
    pub fn slice(&self, sub: VaRange) -> Option<Self> {
        if !self.range.covers(sub) {
            return None;
        }
        let delta = sub.start().get() - self.range.start().get();
        let offset = if self.has_offset() {
            // Cannot overflow: offset + range.len() was checked at construction and
            // delta < range.len().
            self.offset.checked_add(delta)?
        } else {
            self.offset
        };
        Some(Self {
            range: sub,
            bo: self.bo.clone(),
            offset,
            flags: self.flags,
        })
    }

    /// Whether `offset` is meaningful (BO offset or userptr address) and moves with splits.
    fn has_offset(&self) -> bool {
        self.bo.is_some() || self.flags.contains(MappingFlags::USERPTR)
    }

    pub(crate) fn set_flag(&mut self, flag: MappingFlags, on: bool) {
        self.flags.set(flag, on);
    }

    /// Same range, backing object, offset and flags (ids and Arc identity ignored).
    pub fn same_as(&self, other: &Self) -> bool {
        self.range == other.range
            && self.bo_id() == other.bo_id()
            && self.offset == other.offset
            && self.flags == other.flags
    }
}

/// A mapping in a VM's tree.
#[derive(Debug, Clone)]
pub struct Mapping {
    id: MappingId,
    spec: MappingSpec,
}

impl Mapping {
    pub(crate) fn new(id: MappingId, spec: MappingSpec) -> Self {
        Self { id, spec }
    }

    /// The id the VM gave this mapping.
    pub fn id(&self) -> MappingId {
        self.id
    }

    /// Range, backing and flags.
    pub fn spec(&self) -> &MappingSpec {
        &self.spec
    }

    pub(crate) fn spec_mut(&mut self) -> &mut MappingSpec {
        &mut self.spec
    }

    /// The GPU VA range.
    pub fn range(&self) -> VaRange {
        self.spec.range
    }

    /// The backing BO's id, if any.
    pub fn bo_id(&self) -> Option<BoId> {
        self.spec.bo_id()
    }

    /// BO offset, userptr CPU address or 0.
    pub fn offset(&self) -> u64 {
        self.spec.offset
    }

    /// The flags.
    pub fn flags(&self) -> MappingFlags {
        self.spec.flags
    }

    /// Whether `self` is still the mapping a plan saw as `planned`: same id (so same range
    /// and backing, which never change) and same flags (which can, see `set_invalidated`).
    pub(crate) fn is_current(&self, planned: &Mapping) -> bool {
        self.id == planned.id && self.spec.flags == planned.spec.flags
    }

    /// Identical id and contents.
    pub fn same_as(&self, other: &Self) -> bool {
        self.id == other.id && self.spec.same_as(&other.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::super::vm_bo::tests::{vm_bo, VM_RESV};
    use super::*;
    use crate::types::GpuVa;

    const P: u64 = PAGE_SIZE;

    fn r(start_page: u64, pages: u64) -> VaRange {
        VaRange::new(GpuVa(start_page * P), pages * P).unwrap()
    }

    #[test]
    fn constructors_enforce_backing_rules() {
        let b = vm_bo(1, VM_RESV);
        assert!(MappingSpec::bo(r(0, 1), b.clone(), 1, false).is_err());
        assert!(matches!(
            MappingSpec::bo(r(0, 2), b.clone(), u64::MAX - P + 1, false),
            Err(MappingError::Range(RangeError::Overflow { .. }))
        ));
        let small = vm_bo(2, VM_RESV);
        let size = small.bo().size();
        assert!(MappingSpec::bo(r(0, 1), small.clone(), size - P, false).is_ok());
        assert_eq!(
            MappingSpec::bo(r(0, 2), small, size - P, false).err(),
            Some(MappingError::OutsideBo {
                offset: size - P,
                len: 2 * P,
                size
            })
        );
        let s = MappingSpec::bo(r(0, 2), b, 3 * P, true).unwrap();
        assert_eq!(
            (s.bo_id(), s.offset(), s.flags()),
            (Some(BoId(1)), 3 * P, MappingFlags::READ_ONLY)
        );
        let u = MappingSpec::userptr(r(0, 1), CpuVa(5 * P), false).unwrap();
        assert_eq!(
            (u.bo_id(), u.offset(), u.flags()),
            (None, 5 * P, MappingFlags::USERPTR)
        );
        assert_eq!(MappingSpec::sparse(r(0, 1)).flags(), MappingFlags::SPARSE);
        assert_eq!(MappingSpec::cpu_mirror(r(0, 1)).offset(), 0);
    }

    #[test]
    fn slice_moves_offsets_of_bo_and_userptr_only() {
        let b = MappingSpec::bo(r(4, 4), vm_bo(1, VM_RESV), 10 * P, false).unwrap();
        let piece = b.slice(r(6, 2)).unwrap();
        assert_eq!((piece.range(), piece.offset()), (r(6, 2), 12 * P));
        assert!(b.slice(r(7, 2)).is_none());
        let u = MappingSpec::userptr(r(4, 4), CpuVa(100 * P), false).unwrap();
        assert_eq!(u.slice(r(5, 1)).unwrap().offset(), 101 * P);
        let s = MappingSpec::sparse(r(4, 4));
        assert_eq!(s.slice(r(5, 1)).unwrap().offset(), 0);
    }
}
