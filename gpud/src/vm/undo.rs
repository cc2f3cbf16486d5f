//! The undo log of applied steps and the completion token of one applied step.
//!
//! Owns: [`UndoLog`] (what `GpuVm::apply` changed, in order, so `GpuVm::unwind` can restore
//! the VM bit for bit) and [`Applied`] (proof that a step reached the tree).
//!
//! An all-or-nothing bind plans and applies its ops one after the other into one log (each
//! op is planned against the tree as the earlier ops left it); on failure it unwinds the log,
//! on success it drops it. Must not: interpret steps or touch the tree itself.

use super::mapping::{Mapping, MappingId};
use crate::types::{BoId, GpuVa, VmId};
use smallvec::SmallVec;

/// One reversible change.
#[derive(Debug)]
pub(crate) enum UndoEntry {
    /// A mapping was inserted at this start address (unwind: remove it).
    Inserted(GpuVa),
    /// This mapping was removed (unwind: insert it again).
    Removed(Mapping),
    /// Linking a mapping created the VM's registry entry for this BO (unwind: drop it).
    Registered(BoId),
}

/// The changes made by a sequence of applied steps, oldest first.
#[derive(Debug, Default)]
pub struct UndoLog {
    /// The VM the log belongs to (set by the first apply) and its id counter at that time.
    owner: Option<(VmId, MappingId)>,
    /// Inline room for one split (remove, re-insert, insert, insert): a single-op bind
    /// allocates nothing.
    entries: SmallVec<[UndoEntry; 4]>,
}

impl UndoLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of recorded changes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Binds the log to `vm` on first use; returns false if it already belongs to another VM.
    pub(crate) fn begin(&mut self, vm: VmId, next_id: MappingId) -> bool {
        match self.owner {
            None => {
                self.owner = Some((vm, next_id));
                true
            }
            Some((owner, _)) => owner == vm,
        }
    }

    pub(crate) fn owner(&self) -> Option<(VmId, MappingId)> {
        self.owner
    }

    pub(crate) fn push(&mut self, entry: UndoEntry) {
        self.entries.push(entry);
    }

    /// The entries, newest first, consuming the log.
    pub(crate) fn drain_rev(self) -> impl Iterator<Item = UndoEntry> {
        self.entries.into_iter().rev()
    }
}

/// Proof that one step was applied to a VM's tree. Only applying a step makes one, so a step
/// handler that must return it cannot skip the tree update.
#[must_use = "an Applied token proves the tree was updated; return it to the caller"]
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    pub(crate) vm: VmId,
    pub(crate) seq: u64,
}
