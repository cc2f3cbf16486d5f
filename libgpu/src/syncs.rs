//! The sync list shared by the VM_BIND and EXEC builders: in-syncs (waits), out-syncs
//! (signals) and the optional user fence.
//!
//! Owns: `SyncList` and the check that every syncobj named belongs to the builder's device.
//! Must not: send anything (the builders do).

use gpu_scheme::uapi::{SyncKind, SyncSpec};

use crate::device::Device;
use crate::error::{Call, Error};
use crate::syncobj::Syncobj;

/// Sync entries being collected by a builder; the first misuse is remembered and reported by
/// `submit`, so builder chains stay infallible.
#[derive(Debug, Default, Clone)]
pub(crate) struct SyncList {
    pub(crate) specs: Vec<SyncSpec>,
    pub(crate) error: Option<Error>,
}

impl SyncList {
    fn push(&mut self, dev: &Device, obj: &Syncobj, point: u64, signal: bool) {
        if !obj.device().same(dev) {
            self.error.get_or_insert(Error::invalid(Call::Local));
            return;
        }
        let kind = match point {
            0 => SyncKind::Syncobj(obj.id()),
            p => SyncKind::Timeline(obj.id(), p),
        };
        self.specs.push(SyncSpec { kind, signal });
    }

    /// Wait for `obj` at `point` (0: its binary fence) before the work starts.
    pub(crate) fn wait(&mut self, dev: &Device, obj: &Syncobj, point: u64) {
        self.push(dev, obj, point, false);
    }

    /// Signal `obj` at `point` (0: its binary fence) when the work completes.
    pub(crate) fn signal(&mut self, dev: &Device, obj: &Syncobj, point: u64) {
        self.push(dev, obj, point, true);
    }

    /// Write `value` at GPU VA `va` of the VM when the work completes.
    pub(crate) fn user_fence(&mut self, va: u64, value: u64) {
        self.specs.push(SyncSpec {
            kind: SyncKind::UserFence { addr: va, value },
            signal: true,
        });
    }
}
