//! The memory-manager seam: one client address space as gpud sees it (the OS's
//! memory-manager callbacks), implemented per platform and by a scripted fake.
//!
//! Owns: [`ClientMm`] (what gpud asks of a client's address space: capabilities, the pages
//! behind a CPU range, and — for SVM — taking pages from the CPU side and supplying them),
//! [`PinnedPages`] (device-reachable pages kept reachable until dropped), [`MmEvent`] and
//! [`MmListener`] (what the platform tells gpud about changes of that address space),
//! [`CpuRange`], [`MmCaps`] and [`MmError`].
//!
//! Must not: know about VMs, page tables or sequences. The notifier sequences belong to the
//! core (`svm::notifier`, like Linux's `mmu_interval_notifier`): an implementation resolves
//! pages and reports events; the core decides what an event invalidates. An implementation
//! never calls back into gpud from inside `get_pages` except through its listener, and
//! never while holding a lock the listener could need.
//!
//! Rules for implementations:
//! - `get_pages` resolves (faulting in if the platform can) and returns one device physical
//!   address per 4 KiB page; the pages stay reachable by the device until the returned
//!   [`PinnedPages`] is dropped. gpud drops it only after every GPU PTE to those pages was
//!   zapped and the TLB invalidation retired (the "zap, invalidate, then free" rule).
//! - Events are delivered to the listener in the order the OS produced them. The listener
//!   returns quickly (it never waits for GPU work); the platform's event reader may call it
//!   from its own thread.

use crate::types::{PhysAddr, RangeError, PAGE_SIZE};
use std::sync::Arc;
use thiserror::Error;

/// A page-aligned, non-empty range of a client's CPU address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuRange {
    start: u64,
    len: u64,
}

impl CpuRange {
    /// `[start, start + len)`: both page aligned, `len > 0`, and the end fits in 64 bits.
    pub fn new(start: u64, len: u64) -> Result<Self, RangeError> {
        for value in [start, len] {
            if value % PAGE_SIZE != 0 {
                return Err(RangeError::Misaligned {
                    value,
                    align: PAGE_SIZE,
                });
            }
        }
        if len == 0 {
            return Err(RangeError::Misaligned {
                value: 0,
                align: PAGE_SIZE,
            });
        }
        start
            .checked_add(len)
            .ok_or(RangeError::Overflow { start, len })?;
        Ok(Self { start, len })
    }

    /// First byte.
    pub fn start(self) -> u64 {
        self.start
    }

    /// Length in bytes (a non-zero multiple of the page size).
    pub fn len(self) -> u64 {
        self.len
    }

    /// Never true (kept for the `len`/`is_empty` convention).
    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// One past the last byte (cannot overflow: checked at construction).
    pub fn end(self) -> u64 {
        self.start + self.len
    }

    /// How many 4 KiB pages the range covers.
    pub fn pages(self) -> u64 {
        self.len / PAGE_SIZE
    }

    /// The common part of `self` and `other`, if any.
    pub fn intersect(self, other: CpuRange) -> Option<CpuRange> {
        let (s, e) = (self.start.max(other.start), self.end().min(other.end()));
        (s < e).then(|| CpuRange {
            start: s,
            len: e - s,
        })
    }

    /// Whether the two ranges share a byte.
    pub fn overlaps(self, other: CpuRange) -> bool {
        self.intersect(other).is_some()
    }
}

/// What a platform's memory manager lets gpud do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MmCaps {
    /// CPU faults on registered memory are delivered to gpud (lazy paging, `supply`).
    pub lazy_fault: bool,
    /// gpud can take pages away from the CPU side (`revoke_cpu` with `Revoke::Evict`).
    pub revoke: bool,
    /// gpud can write-protect CPU pages (`revoke_cpu` with `Revoke::WriteProtect`).
    pub write_protect: bool,
    /// Any ordinary client memory can be resolved, not only memory the platform set up for
    /// the GPU (e.g. memfd-backed heaps, gpu-scheme objects).
    pub arbitrary_memory: bool,
}

/// Why a memory-manager call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MmError {
    /// The page at `va` is not mapped, not pageable, or not memory the device can reach (or
    /// not writable for a write request). EFAULT, Xe's answer for invalid userptr memory.
    #[error("client memory at {va:#x} cannot be resolved for the device")]
    Fault { va: u64 },
    /// The address space changed while resolving; the caller retries.
    #[error("the client's address space changed; retry")]
    Again,
    /// The platform cannot do this (see [`MmCaps`]).
    #[error("not supported by this platform's memory manager")]
    NotSupported,
    /// The client's address space is gone (the client exited or closed its connection).
    #[error("the client's address space is gone")]
    Gone,
    /// Any other OS error (errno).
    #[error("memory manager: OS error {0}")]
    Os(i32),
}

/// Pages of a client's memory, resolved to device physical addresses (one per 4 KiB page,
/// in CPU order) and kept reachable by the device until this is dropped.
///
/// INVARIANT: while a `PinnedPages` lives, every address in it reaches the page the client
/// had at that CPU address when it was resolved (or a page it moved to later through the
/// same memory object); gpud drops it only after zapping and invalidating its PTEs.
pub struct PinnedPages {
    pages: Vec<PhysAddr>,
    /// Whatever keeps the pages reachable (window places, frame references); released on drop.
    _guard: Box<dyn Send + Sync>,
}

impl PinnedPages {
    /// Pages kept reachable by `guard` until the returned value is dropped.
    pub fn new(pages: Vec<PhysAddr>, guard: Box<dyn Send + Sync>) -> Self {
        Self {
            pages,
            _guard: guard,
        }
    }

    /// The device physical address of each 4 KiB page, in CPU order.
    pub fn pages(&self) -> &[PhysAddr] {
        &self.pages
    }

    /// Bytes covered.
    pub fn bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE_SIZE
    }
}

impl std::fmt::Debug for PinnedPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedPages")
            .field("pages", &self.pages.len())
            .finish()
    }
}

/// How `revoke_cpu` takes pages from the CPU side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    /// CPU writes fault to gpud; reads go on.
    WriteProtect,
    /// Every CPU access faults to gpud (the pages are taken away, e.g. migrated to VRAM).
    Evict,
}

/// How `supply` answers a CPU fault.
#[derive(Debug, Clone, Copy)]
pub enum Supply<'a> {
    /// Install these bytes (the range's length) as the range's content.
    Copy(&'a [u8]),
    /// Install zero pages.
    Zero,
    /// The content is in place already (e.g. written through gpud's own mapping): wake the
    /// faulting thread.
    Wake,
}

/// One client address space (the memory manager's side of it). One per client connection
/// that registered its memory; shared by every VM of that client.
pub trait ClientMm: Send + Sync {
    /// What this platform can do.
    fn caps(&self) -> MmCaps;

    /// Resolves `r` to pages the device can reach by DMA (for writing if `write`), faulting
    /// them in where the platform can. `Fault` if any page is unmapped, not pageable, not
    /// reachable or (for `write`) not writable; `Again` if the address space changed
    /// meanwhile; `Gone` once the client's address space went away.
    fn get_pages(&self, r: CpuRange, write: bool) -> Result<PinnedPages, MmError>;

    /// Registers the listener events go to (replacing any earlier one).
    fn set_listener(&self, listener: Arc<dyn MmListener>);

    /// The CPU mapping containing `va` (the VMA around it, as far as the platform tracks
    /// it): SVM sizes its ranges by it. `Fault` if nothing is mapped at `va`;
    /// `NotSupported` if the platform cannot tell (the core then probes with `get_pages`).
    fn mapping_at(&self, va: u64) -> Result<CpuRange, MmError> {
        let _ = va;
        Err(MmError::NotSupported)
    }

    /// Takes `r` from the CPU side (SVM migration, exclusive GPU access).
    fn revoke_cpu(&self, r: CpuRange, how: Revoke) -> Result<(), MmError> {
        let _ = (r, how);
        Err(MmError::NotSupported)
    }

    /// Answers a CPU fault on `r` (migrate-to-RAM, first touch).
    fn supply(&self, r: CpuRange, src: Supply<'_>) -> Result<(), MmError> {
        let _ = (r, src);
        Err(MmError::NotSupported)
    }
}

/// A change of a client's address space, as the OS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmEvent {
    /// `munmap` (or an `mmap` over existing memory): the range maps nothing any more. Sent
    /// after the change.
    Unmap(CpuRange),
    /// `mremap`: the pages of `from` now live at `to`. Sent after the change (on Linux an
    /// `Unmap` of `from` follows).
    Remap { from: CpuRange, to: u64 },
    /// `madvise(DONTNEED/REMOVE)`: the pages are dropped; the next CPU access gets new ones.
    /// Sent *before* the pages go.
    Remove(CpuRange),
    /// A CPU access at `va` faulted to gpud (lazy paging / SVM migrate-to-RAM).
    CpuFault { va: u64, write: bool },
    /// The client forked (its registration may not follow into the child).
    Fork,
    /// The address space is gone: every page of it is invalid.
    Gone,
}

/// What the core registers with a [`ClientMm`] to hear its events (the notifier path).
/// `event` returns promptly: it never waits for GPU work, only for a TLB invalidation.
pub trait MmListener: Send + Sync {
    /// Handles one event.
    fn event(&self, e: MmEvent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_page_aligned_non_empty_and_do_not_overflow() {
        assert!(CpuRange::new(0x1000, 0x2000).is_ok());
        assert!(CpuRange::new(0x1001, 0x1000).is_err());
        assert!(CpuRange::new(0x1000, 0x1001).is_err());
        assert!(CpuRange::new(0x1000, 0).is_err());
        assert!(CpuRange::new(u64::MAX - 0xfff, 0x2000).is_err());
        let a = CpuRange::new(0x1000, 0x3000).unwrap();
        let b = CpuRange::new(0x3000, 0x3000).unwrap();
        assert_eq!(a.intersect(b), Some(CpuRange::new(0x3000, 0x1000).unwrap()));
        assert!(!a.overlaps(CpuRange::new(0x4000, 0x1000).unwrap()));
        assert_eq!(a.pages(), 3);
    }
}
