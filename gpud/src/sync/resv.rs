//! Reservation objects (dma-resv): the fences guarding one buffer, each with a usage class.
//!
//! Owns: the fence list of an object, its ww lock, fence-slot reservation and the
//! replacement rules. Invariants:
//! - usages are ordered KERNEL < WRITE < READ < BOOKKEEP; a query "up to usage X" returns the
//!   fences of X and of every lower (stronger) class, so BOOKKEEP means all;
//! - the list changes only under the object's ww lock, and adding needs a slot reserved under
//!   that same lock (reservations are dropped on unlock);
//! - adding replaces, in place and without using a slot, the first entry that is either
//!   signalled or of the same context with a usage no stronger than the new one and a seqno
//!   no later than the new one; otherwise it appends. Re-adding a fence with a stronger usage
//!   appends it again, which is how a fence is promoted (BOOKKEEP → READ); a usage is never
//!   weakened;
//! - containers (arrays, chains) are refused: add their members.
//!
//! Readers (query, test-signalled, wait) need no ww lock: they snapshot the list under a
//! short internal lock. Must not: wait on fences while holding that internal lock.

use super::fence::{wait_all, Fence, FenceError};
use super::shim::{self, Mutex};
use super::ww::{AcquireCtx, WwMutex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// Identifies a reservation object; shared with the VM module, which tells private from
/// external BOs by it.
pub use crate::types::ResvId;

static NEXT_RESV: AtomicU64 = AtomicU64::new(1);

/// How a fence uses the object; the derive order is the dma-resv order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Usage {
    /// Kernel memory management (moves, clears): always waited for.
    Kernel,
    /// Implicitly synchronised writers.
    Write,
    /// Implicitly synchronised readers.
    Read,
    /// No implicit sync: page-table updates, preemption fences, explicit-sync jobs.
    Bookkeep,
}

/// Errors of reservation-object updates.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResvError {
    /// The update needs the object's ww lock, held by the caller's context.
    #[error("reservation object {resv:?} is not locked by this context")]
    NotLocked { resv: ResvId },
    /// A fence was added without a reserved slot.
    #[error("no fence slot reserved on {resv:?} ({entries} entries)")]
    NoSlotReserved { resv: ResvId, entries: usize },
    /// Arrays and chains must be added member by member.
    #[error("container fence {context}:{seqno} cannot be added to {resv:?}")]
    Container {
        resv: ResvId,
        context: u64,
        seqno: u64,
    },
}

#[derive(Debug, Default)]
struct FenceList {
    entries: Vec<(Arc<Fence>, Usage)>,
    /// Free slots reserved under the current lock holder.
    reserved: usize,
}

/// A reservation object.
#[derive(Debug)]
pub struct Resv {
    id: ResvId,
    ww: WwMutex,
    list: Mutex<FenceList>,
}

impl Resv {
    /// An unlocked, empty reservation object.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            id: ResvId(NEXT_RESV.fetch_add(1, Ordering::Relaxed)),
            ww: WwMutex::new(),
            list: Mutex::new(FenceList::default()),
        })
    }

    /// This object's id.
    pub fn id(&self) -> ResvId {
        self.id
    }

    /// The object's ww lock (taken through the exec helper).
    pub fn ww(&self) -> &WwMutex {
        &self.ww
    }

    fn check_locked(&self, ctx: &AcquireCtx) -> Result<(), ResvError> {
        if self.ww.is_owned_by(ctx) {
            Ok(())
        } else {
            Err(ResvError::NotLocked { resv: self.id })
        }
    }

    /// Makes sure `count` more fences can be appended while `ctx` holds the lock.
    pub fn reserve_fences(&self, ctx: &AcquireCtx, count: usize) -> Result<(), ResvError> {
        self.check_locked(ctx)?;
        let mut list = shim::lock(&self.list);
        list.reserved = list.reserved.max(count);
        Ok(())
    }

    /// Adds `fence` with `usage` under the replacement rules (see the module header).
    pub fn add_fence(
        &self,
        ctx: &AcquireCtx,
        fence: Arc<Fence>,
        usage: Usage,
    ) -> Result<(), ResvError> {
        self.check_locked(ctx)?;
        if fence.is_container() {
            return Err(ResvError::Container {
                resv: self.id,
                context: fence.context().get(),
                seqno: fence.seqno(),
            });
        }
        let mut list = shim::lock(&self.list);
        let replaceable = list.entries.iter_mut().find(|(old, old_usage)| {
            (old.context() == fence.context()
                && *old_usage >= usage
                && fence.is_later_or_same(old) == Some(true))
                || old.is_signalled()
        });
        if let Some(entry) = replaceable {
            *entry = (fence, usage);
            return Ok(());
        }
        if list.reserved == 0 {
            return Err(ResvError::NoSlotReserved {
                resv: self.id,
                entries: list.entries.len(),
            });
        }
        list.reserved -= 1;
        list.entries.push((fence, usage));
        Ok(())
    }

    /// Drops slot reservations; called when the holder unlocks.
    pub(crate) fn reset_reservations(&self) {
        shim::lock(&self.list).reserved = 0;
    }

    /// The fences of `usage` and every stronger class.
    pub fn fences(&self, usage: Usage) -> Vec<Arc<Fence>> {
        shim::lock(&self.list)
            .entries
            .iter()
            .filter(|(_, u)| *u <= usage)
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// Every entry with its usage, in list order.
    pub fn entries(&self) -> Vec<(Arc<Fence>, Usage)> {
        shim::lock(&self.list).entries.clone()
    }

    /// Whether every fence up to `usage` has signalled.
    pub fn test_signalled(&self, usage: Usage) -> bool {
        shim::lock(&self.list)
            .entries
            .iter()
            .filter(|(_, u)| *u <= usage)
            .all(|(f, _)| f.is_signalled())
    }

    /// Waits for every fence up to `usage` present now, until `deadline` (`None`: forever).
    pub fn wait(&self, usage: Usage, deadline: Option<Instant>) -> Result<(), FenceError> {
        wait_all(&self.fences(usage), deadline)
    }
}

#[cfg(all(test, not(loom)))]
#[path = "tests/resv.rs"]
mod tests;
