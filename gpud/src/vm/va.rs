//! GPU virtual address ranges and the VA space of one VM.
//!
//! Owns: [`VaRange`] (a non-empty, page-aligned, half-open `[start, end)` range whose end
//! fits in 64 bits) and [`VaSpace`] (the managed window of a VM plus an optional reserved
//! kernel region that no client mapping may intersect). Every range that enters the VM
//! module is checked here once, with checked arithmetic; later code relies on
//! `start < end` and page alignment without re-checking.
//!
//! Must not: know about mappings, buffer objects or page tables.

use crate::types::{GpuVa, RangeError, PAGE_SIZE};
use thiserror::Error;

/// Why a GPU VA range was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VaError {
    /// Overflow or misalignment of the raw numbers.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// A range of length zero.
    #[error("empty range at {start:#x}")]
    Empty { start: u64 },
    /// The range leaves the VM's managed window.
    #[error(
        "range [{start:#x}, {end:#x}) is outside the VA space [{space_start:#x}, {space_end:#x})"
    )]
    OutsideSpace {
        start: u64,
        end: u64,
        space_start: u64,
        space_end: u64,
    },
    /// The range intersects the reserved kernel region.
    #[error("range [{start:#x}, {end:#x}) intersects the reserved region [{res_start:#x}, {res_end:#x})")]
    Reserved {
        start: u64,
        end: u64,
        res_start: u64,
        res_end: u64,
    },
}

/// A non-empty, page-aligned, half-open range `[start, end)` of GPU virtual addresses.
///
/// INVARIANT: `start < end`, both multiples of [`PAGE_SIZE`]; `end` did not overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VaRange {
    start: GpuVa,
    end: GpuVa,
}

fn check_aligned(value: u64) -> Result<(), RangeError> {
    if value % PAGE_SIZE == 0 {
        Ok(())
    } else {
        Err(RangeError::Misaligned {
            value,
            align: PAGE_SIZE,
        })
    }
}

impl VaRange {
    /// `[start, start + len)`, checked for overflow, emptiness and page alignment.
    pub fn new(start: GpuVa, len: u64) -> Result<Self, VaError> {
        check_aligned(start.get())?;
        check_aligned(len)?;
        if len == 0 {
            return Err(VaError::Empty { start: start.get() });
        }
        let end = start.checked_add(len)?;
        Ok(Self { start, end })
    }

    /// `[start, end)`; `end` must be above `start`.
    pub fn from_bounds(start: GpuVa, end: GpuVa) -> Result<Self, VaError> {
        let len = end
            .get()
            .checked_sub(start.get())
            .ok_or(VaError::Empty { start: start.get() })?;
        Self::new(start, len)
    }

    /// First address of the range.
    pub const fn start(self) -> GpuVa {
        self.start
    }

    /// One past the last address of the range.
    pub const fn end(self) -> GpuVa {
        self.end
    }

    /// Length in bytes (never zero).
    pub const fn len(self) -> u64 {
        self.end.0 - self.start.0
    }

    /// Always false: a `VaRange` is never empty (kept for the `len`/`is_empty` pair).
    pub const fn is_empty(self) -> bool {
        false
    }

    /// Number of pages covered.
    pub const fn pages(self) -> u64 {
        self.len() / PAGE_SIZE
    }

    /// Whether `va` lies inside the range.
    pub fn contains(self, va: GpuVa) -> bool {
        self.start <= va && va < self.end
    }

    /// Whether `other` lies completely inside `self`.
    pub fn covers(self, other: VaRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Whether the two ranges share at least one address.
    pub fn overlaps(self, other: VaRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The common part of two ranges, if any.
    pub fn intersection(self, other: VaRange) -> Option<VaRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(VaRange { start, end })
    }
}

impl core::fmt::Display for VaRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.0, self.end.0)
    }
}

/// The managed window of one VM and its reserved kernel region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaSpace {
    window: VaRange,
    reserved: Option<VaRange>,
}

impl VaSpace {
    /// A VA space `[start, start + size)`, optionally with a reserved region that must lie
    /// inside it.
    pub fn new(start: GpuVa, size: u64, reserved: Option<VaRange>) -> Result<Self, VaError> {
        let window = VaRange::new(start, size)?;
        if let Some(res) = reserved {
            if !window.covers(res) {
                return Err(outside(res, window));
            }
        }
        Ok(Self { window, reserved })
    }

    /// The whole managed window.
    pub const fn window(&self) -> VaRange {
        self.window
    }

    /// The reserved kernel region, if any.
    pub const fn reserved(&self) -> Option<VaRange> {
        self.reserved
    }

    /// drm_gpuvm's `range_valid`: inside the window and not touching the reserved region.
    pub fn check(&self, range: VaRange) -> Result<(), VaError> {
        if !self.window.covers(range) {
            return Err(outside(range, self.window));
        }
        match self.reserved {
            Some(res) if res.overlaps(range) => Err(VaError::Reserved {
                start: range.start.0,
                end: range.end.0,
                res_start: res.start.0,
                res_end: res.end.0,
            }),
            _ => Ok(()),
        }
    }

    /// Builds `[start, start + len)` and checks it against this space in one step.
    pub fn range(&self, start: GpuVa, len: u64) -> Result<VaRange, VaError> {
        let range = VaRange::new(start, len)?;
        self.check(range)?;
        Ok(range)
    }
}

fn outside(range: VaRange, window: VaRange) -> VaError {
    VaError::OutsideSpace {
        start: range.start.0,
        end: range.end.0,
        space_start: window.start.0,
        space_end: window.end.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    #[test]
    fn range_rejects_empty_misaligned_and_overflowing() {
        assert_eq!(VaRange::new(GpuVa(P), 0), Err(VaError::Empty { start: P }));
        assert_eq!(
            VaRange::new(GpuVa(1), P),
            Err(VaError::Range(RangeError::Misaligned {
                value: 1,
                align: P
            }))
        );
        assert!(matches!(
            VaRange::new(GpuVa(u64::MAX - P + 1), P),
            Err(VaError::Range(RangeError::Overflow { .. }))
        ));
        let r = VaRange::new(GpuVa(P), 2 * P).unwrap();
        assert_eq!(
            (r.start(), r.end(), r.len(), r.pages()),
            (GpuVa(P), GpuVa(3 * P), 2 * P, 2)
        );
    }

    #[test]
    fn range_set_operations() {
        let a = VaRange::new(GpuVa(0), 4 * P).unwrap();
        let b = VaRange::new(GpuVa(2 * P), 4 * P).unwrap();
        let c = VaRange::new(GpuVa(4 * P), P).unwrap();
        assert!(a.overlaps(b) && !a.overlaps(c));
        assert_eq!(
            a.intersection(b),
            VaRange::from_bounds(GpuVa(2 * P), GpuVa(4 * P)).ok()
        );
        assert_eq!(a.intersection(c), None);
        assert!(a.contains(GpuVa(3 * P)) && !a.contains(GpuVa(4 * P)));
        assert!(b.covers(c) && !a.covers(b));
        assert!(VaRange::from_bounds(GpuVa(2 * P), GpuVa(P)).is_err());
    }

    #[test]
    fn space_checks_window_and_reserved_region() {
        let res = VaRange::new(GpuVa(0x10 * P), 0x10 * P).unwrap();
        let space = VaSpace::new(GpuVa(P), 0x100 * P, Some(res)).unwrap();
        assert!(space.range(GpuVa(P), P).is_ok());
        assert!(space.range(GpuVa(0x20 * P), P).is_ok());
        assert!(matches!(
            space.range(GpuVa(0), P),
            Err(VaError::OutsideSpace { .. })
        ));
        assert!(matches!(
            space.range(GpuVa(0x100 * P), 2 * P),
            Err(VaError::OutsideSpace { .. })
        ));
        assert_eq!(
            space.range(GpuVa(0xf * P), 2 * P),
            Err(VaError::Reserved {
                start: 0xf * P,
                end: 0x11 * P,
                res_start: 0x10 * P,
                res_end: 0x20 * P
            })
        );
        let outside_res = VaRange::new(GpuVa(0x200 * P), P).unwrap();
        assert!(VaSpace::new(GpuVa(0), 0x100 * P, Some(outside_res)).is_err());
    }
}
