//! The Redox [`ClientMm`]: a client's address space as far as the Redox scheme interface lets
//! gpud see it (`docs/redox-pager.md`).
//!
//! Owns: [`SchemeMm`] — the client's CPU mappings of gpu-scheme memory objects (BOs), the
//! device pages behind them, and the events the scheme's messages give: the kernel's `Munmap`
//! for a handle becomes [`MmEvent::Unmap`] of the CPU range it covered, the client's device
//! handle closing becomes [`MmEvent::Gone`]. Must not: make syscalls (the scheme server feeds
//! it), resolve anything that is not a recorded gpu-scheme mapping (that is `Fault`, EFAULT),
//! or claim to page: the kernel gives a scheme no lazy faults, no revoke and no write-protect,
//! so [`MmCaps`] is all false and `revoke_cpu` / `supply` are `NotSupported`.
//!
//! Where the numbers come from: the kernel's `MmapPrep [handle, size, flags, offset]` tells
//! gpud which object range a client maps, but not where; the client reports the address its
//! `mmap` returned (`record_map`). gpud checks only that the handle is the client's and the
//! range lies in the object: a wrong address misleads only that client's own GPU view, since
//! every page it can resolve is one of its own objects' pages, which gpud owns. The kernel's
//! `Munmap [handle, size, flags, offset]` names the object range, not the address; the
//! recorded mappings translate it back (`unmapped`). It arrives after the client's grant is
//! gone, which is safe: the frames are gpud's and stay allocated while a [`PinnedPages`] of
//! them lives.

use crate::svm::{ClientMm, CpuRange, MmCaps, MmError, MmEvent, MmListener, PinnedPages};
use crate::types::{PhysAddr, PAGE_SIZE};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A gpu-scheme memory object (a BO) as [`SchemeMm`] needs it.
pub trait SchemeObject: Send + Sync {
    /// Bytes in the object.
    fn size(&self) -> u64;
    /// The device physical address of each 4 KiB page of `[offset, offset + len)` (both
    /// page-aligned, inside the object), reachable by the device until the returned guard is
    /// dropped (the object cannot move or be freed meanwhile).
    fn pin(&self, offset: u64, len: u64) -> Result<(Vec<PhysAddr>, PinGuard), MmError>;
}

/// What keeps pinned pages reachable; released on drop.
pub type PinGuard = Box<dyn Send + Sync>;

/// A piece of a CPU range: `len` bytes of an object from an offset.
type Piece = (Arc<dyn SchemeObject>, u64, u64);

/// One recorded CPU mapping: `len` bytes of `object` from `offset`, through handle `handle`.
#[derive(Clone)]
struct Mapping {
    len: u64,
    handle: usize,
    offset: u64,
    writable: bool,
    object: Arc<dyn SchemeObject>,
}

#[derive(Default)]
struct State {
    /// CPU start address → mapping; the ranges never overlap.
    maps: BTreeMap<u64, Mapping>,
    /// Bumped by every change, so `get_pages` can tell that it raced one.
    generation: u64,
    gone: bool,
}

/// One Redox client's address space: its mappings of gpu-scheme objects.
#[derive(Default)]
pub struct SchemeMm {
    state: Mutex<State>,
    listener: Mutex<Option<Arc<dyn MmListener>>>,
}

/// What a Redox scheme server can do to client memory (`docs/redox-pager.md`, §1).
pub const REDOX_CAPS: MmCaps = MmCaps {
    lazy_fault: false,
    revoke: false,
    write_protect: false,
    arbitrary_memory: false,
};

impl SchemeMm {
    /// A client with no mappings.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client mapped `range` (the address its `mmap` returned) over `[offset, offset +
    /// range.len())` of `object`, opened as its handle `handle`. `Fault` when the object range
    /// is misaligned or outside the object, or when `range` overlaps a recorded mapping (the
    /// client misreported: the kernel never gives two grants one address); `Gone` after the
    /// client left.
    pub fn record_map(
        &self,
        range: CpuRange,
        handle: usize,
        offset: u64,
        writable: bool,
        object: Arc<dyn SchemeObject>,
    ) -> Result<(), MmError> {
        let fault = MmError::Fault { va: range.start() };
        let end = offset.checked_add(range.len()).ok_or(fault)?;
        if offset % PAGE_SIZE != 0 || end > object.size() {
            return Err(fault);
        }
        let mut st = self.state.lock();
        if st.gone {
            return Err(MmError::Gone);
        }
        let before = st.maps.range(..range.end()).next_back();
        if before.is_some_and(|(&va, m)| va + m.len > range.start()) {
            return Err(fault);
        }
        st.maps.insert(
            range.start(),
            Mapping {
                len: range.len(),
                handle,
                offset,
                writable,
                object,
            },
        );
        st.generation += 1;
        Ok(())
    }

    /// The kernel's `Munmap` for handle `handle`: the client's grant over `[offset, offset +
    /// len)` of the object is gone. Every recorded part of it is dropped (a mapping unmapped
    /// in part keeps the rest) and reported as `Unmap` of its CPU range, after the change.
    pub fn unmapped(&self, handle: usize, offset: u64, len: u64) {
        let end = offset.saturating_add(len);
        let mut events = Vec::new();
        {
            let mut st = self.state.lock();
            let hit: Vec<u64> = st
                .maps
                .iter()
                .filter(|(_, m)| m.handle == handle && m.offset < end && offset < m.offset + m.len)
                .map(|(&va, _)| va)
                .collect();
            for va in hit {
                let Some(m) = st.maps.remove(&va) else {
                    continue;
                };
                // The object range [lo, hi) of this mapping goes; what is left on either side
                // stays recorded.
                let (lo, hi) = (offset.max(m.offset), end.min(m.offset + m.len));
                let cpu_lo = va + (lo - m.offset);
                if lo > m.offset {
                    st.maps.insert(
                        va,
                        Mapping {
                            len: lo - m.offset,
                            ..m.clone()
                        },
                    );
                }
                if hi < m.offset + m.len {
                    st.maps.insert(
                        va + (hi - m.offset),
                        Mapping {
                            len: m.offset + m.len - hi,
                            offset: hi,
                            ..m.clone()
                        },
                    );
                }
                if let Ok(r) = CpuRange::new(cpu_lo, hi - lo) {
                    events.push(MmEvent::Unmap(r));
                }
            }
            if !events.is_empty() {
                st.generation += 1;
            }
        }
        for e in events {
            self.deliver(e);
        }
    }

    /// The client's device handle closed (or its process exited): every mapping is invalid.
    pub fn client_gone(&self) {
        {
            let mut st = self.state.lock();
            if st.gone {
                return;
            }
            st.gone = true;
            st.maps.clear();
            st.generation += 1;
        }
        self.deliver(MmEvent::Gone);
    }

    /// Recorded mappings (for stats and leak checks).
    pub fn mappings(&self) -> usize {
        self.state.lock().maps.len()
    }

    fn deliver(&self, e: MmEvent) {
        // Never with the state lock held: the listener zaps GPU mappings and may ask again.
        let listener = self.listener.lock().clone();
        if let Some(l) = listener {
            l.event(e);
        }
    }

    /// The pieces of `r`: (object, object offset, length) in CPU order, and the generation
    /// they were read at. `Fault` at the first byte no recorded mapping (writable, for
    /// `write`) covers.
    fn pieces(&self, r: CpuRange, write: bool) -> Result<(Vec<Piece>, u64), MmError> {
        let st = self.state.lock();
        if st.gone {
            return Err(MmError::Gone);
        }
        let mut out = Vec::new();
        let mut at = r.start();
        while at < r.end() {
            let (&va, m) = st
                .maps
                .range(..=at)
                .next_back()
                .filter(|(&va, m)| at < va + m.len && (m.writable || !write))
                .ok_or(MmError::Fault { va: at })?;
            let len = r.end().min(va + m.len) - at;
            out.push((m.object.clone(), m.offset + (at - va), len));
            at += len;
        }
        Ok((out, st.generation))
    }
}

impl ClientMm for SchemeMm {
    fn caps(&self) -> MmCaps {
        REDOX_CAPS
    }

    fn get_pages(&self, r: CpuRange, write: bool) -> Result<PinnedPages, MmError> {
        let (pieces, generation) = self.pieces(r, write)?;
        let mut pages = Vec::with_capacity(r.pages() as usize);
        let mut guards: Vec<PinGuard> = Vec::with_capacity(pieces.len());
        for (object, offset, len) in pieces {
            // Pinned outside the state lock: pinning may wait for the object's own lock.
            let (p, guard) = object.pin(offset, len)?;
            if p.len() as u64 != len / PAGE_SIZE {
                return Err(MmError::Fault {
                    va: r.start() + pages.len() as u64 * PAGE_SIZE,
                });
            }
            pages.extend(p);
            guards.push(guard);
        }
        if self.state.lock().generation != generation {
            // A mapping changed while the pages were pinned; its event may already be out.
            return Err(MmError::Again);
        }
        Ok(PinnedPages::new(pages, Box::new(guards)))
    }

    fn set_listener(&self, listener: Arc<dyn MmListener>) {
        *self.listener.lock() = Some(listener);
    }
}

#[cfg(test)]
#[path = "redox_mm_tests.rs"]
mod tests;
