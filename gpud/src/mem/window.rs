//! The CPU window: where gpud's own address space shows the memories BOs live in, so a
//! scheme `mmap_prep` can answer with an address whose frames the kernel then shares with
//! the client (Redox: `Grant::borrow_fmap`).
//!
//! Owns: [`CpuWindow`] (the DMA pool's chunks as `cpu + phys + len`, and the BAR2 mapping's
//! base and length) and the arithmetic from a BO backing's physical segments to one CPU
//! address ([`CpuWindow::backing_addr`]). A range is CPU-mappable as one address only if it
//! lies in one physically contiguous run of the backing *and* in one window chunk.
//! Must not: make syscalls (the platform builds the window from what it mapped), pin or
//! track mappings (the driver does), or know about clients.

use crate::hw::pte::MemLocation;
use crate::types::{CpuVa, PhysAddr, PAGE_SIZE};
use crate::vm::pagetable::PhysSeg;
use thiserror::Error;

/// One physically contiguous piece of system memory gpud has mapped (a DMA pool chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowChunk {
    /// Where gpud sees its first byte.
    pub cpu: CpuVa,
    /// Its physical (bus) address: what system BO backings carry.
    pub phys: PhysAddr,
    /// Length in bytes.
    pub len: u64,
}

/// Why a range has no single CPU address (or a window is malformed).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowError {
    /// The range crosses a gap between physically discontiguous pieces of the backing.
    #[error("BO range {offset:#x}+{len:#x} is not one contiguous range of its backing")]
    NotContiguous {
        /// Offset in the BO.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// The range lies outside the BO's backing.
    #[error("BO range {offset:#x}+{len:#x} outside the backing of {size:#x} bytes")]
    OutsideBo {
        /// Offset in the BO.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Backing bytes.
        size: u64,
    },
    /// No window chunk (or the VRAM window) holds the whole physical range.
    #[error("{location:?} range {addr:#x}+{len:#x} is not inside one window chunk")]
    NotInWindow {
        /// Which memory.
        location: MemLocation,
        /// Physical address (VRAM offset).
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// A chunk or offset not page-aligned, empty, or whose end overflows.
    #[error("window piece at {addr:#x}+{len:#x} is empty, unaligned or overflows")]
    BadPiece {
        /// Address.
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// Two chunks overlap (physically or in gpud's address space).
    #[error("window chunks at phys {a:#x} and {b:#x} overlap")]
    Overlap {
        /// First chunk's physical address.
        a: u64,
        /// Second chunk's physical address.
        b: u64,
    },
}

/// Where gpud sees system memory and VRAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuWindow {
    /// Sorted by physical address, non-overlapping.
    sys: Vec<WindowChunk>,
    /// The VRAM aperture's base and the VRAM bytes it shows (VRAM offset 0 at `base`).
    vram: Option<(CpuVa, u64)>,
}

fn piece_ok(addr: u64, len: u64) -> bool {
    len != 0 && addr % PAGE_SIZE == 0 && len % PAGE_SIZE == 0 && addr.checked_add(len).is_some()
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

impl CpuWindow {
    /// A window over `sys` chunks and the VRAM aperture `vram` (`base`, bytes of VRAM it
    /// shows). Chunks must be page-aligned, non-empty and overlap neither physically nor in
    /// gpud's address space (an overlap would hand one client another's frames).
    pub fn new(sys: Vec<WindowChunk>, vram: Option<(CpuVa, u64)>) -> Result<Self, WindowError> {
        for c in &sys {
            for (addr, len) in [(c.cpu.get(), c.len), (c.phys.get(), c.len)] {
                if !piece_ok(addr, len) {
                    return Err(WindowError::BadPiece { addr, len });
                }
            }
        }
        if let Some((base, len)) = vram {
            if !piece_ok(base.get(), len) {
                return Err(WindowError::BadPiece {
                    addr: base.get(),
                    len,
                });
            }
        }
        for (i, a) in sys.iter().enumerate() {
            for b in sys.iter().skip(i + 1) {
                let phys = overlaps((a.phys.get(), a.len), (b.phys.get(), b.len));
                let cpu = overlaps((a.cpu.get(), a.len), (b.cpu.get(), b.len));
                if phys || cpu {
                    return Err(WindowError::Overlap {
                        a: a.phys.get(),
                        b: b.phys.get(),
                    });
                }
            }
        }
        let mut sys = sys;
        sys.sort_by_key(|c| c.phys);
        Ok(Self { sys, vram })
    }

    /// The system-memory chunks, by physical address.
    pub fn chunks(&self) -> &[WindowChunk] {
        &self.sys
    }

    /// The VRAM aperture: base and bytes.
    pub fn vram(&self) -> Option<(CpuVa, u64)> {
        self.vram
    }

    /// Where gpud sees system memory `[phys, phys + len)`: only if one chunk holds it all.
    pub fn sys_addr(&self, phys: PhysAddr, len: u64) -> Result<CpuVa, WindowError> {
        let outside = WindowError::NotInWindow {
            location: MemLocation::System,
            addr: phys.get(),
            len,
        };
        let end = phys.get().checked_add(len).ok_or(outside.clone())?;
        let chunk = self
            .sys
            .iter()
            .find(|c| c.phys.get() <= phys.get() && end <= c.phys.get() + c.len)
            .ok_or(outside)?;
        Ok(CpuVa(chunk.cpu.get() + (phys.get() - chunk.phys.get())))
    }

    /// Where gpud sees VRAM `[offset, offset + len)` through the aperture.
    pub fn vram_addr(&self, offset: u64, len: u64) -> Result<CpuVa, WindowError> {
        let outside = WindowError::NotInWindow {
            location: MemLocation::Vram,
            addr: offset,
            len,
        };
        match self.vram {
            Some((base, size)) if offset.checked_add(len).is_some_and(|e| e <= size) => {
                Ok(CpuVa(base.get() + offset))
            }
            _ => Err(outside),
        }
    }

    /// Where gpud sees bytes `[offset, offset + len)` of a backing in `location` made of
    /// `segments` (in BO order). Both `offset` and the answer are page-aligned when the
    /// segments are; the range must lie in one physically contiguous run of segments.
    pub fn backing_addr(
        &self,
        location: MemLocation,
        segments: &[PhysSeg],
        offset: u64,
        len: u64,
    ) -> Result<CpuVa, WindowError> {
        let phys = contiguous_phys(segments, offset, len)?;
        match location {
            MemLocation::System => self.sys_addr(phys, len),
            MemLocation::Vram => self.vram_addr(phys.get(), len),
        }
    }
}

/// The physical address of BO byte `offset`, if `[offset, offset + len)` lies in one
/// physically contiguous run of `segments` (adjacent segments whose addresses follow on).
pub fn contiguous_phys(
    segments: &[PhysSeg],
    offset: u64,
    len: u64,
) -> Result<PhysAddr, WindowError> {
    let size: u64 = segments.iter().map(|s| s.len).sum();
    let end = offset.checked_add(len).filter(|&e| e <= size && len != 0);
    let end = end.ok_or(WindowError::OutsideBo { offset, len, size })?;
    let mut pos = 0u64;
    // The run being followed: its physical start and the BO offset it starts at.
    let mut run: Option<(u64, u64)> = None;
    let mut next_phys = None;
    for seg in segments {
        let seg_end = pos + seg.len;
        if Some(seg.addr.get()) != next_phys {
            run = None;
        }
        if run.is_none() && seg_end > offset {
            if pos > offset {
                // The segment holding `offset` ended a run before the range did.
                return Err(WindowError::NotContiguous { offset, len });
            }
            run = Some((seg.addr.get(), pos));
        }
        if let (Some((phys, start)), true) = (run, seg_end >= end) {
            return Ok(PhysAddr(phys + (offset - start)));
        }
        next_phys = seg.addr.get().checked_add(seg.len);
        pos = seg_end;
    }
    Err(WindowError::NotContiguous { offset, len })
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
