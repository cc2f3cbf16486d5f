//! Fence arrays: one fence that signals when all (or any) of its member fences have.
//!
//! Owns: building all-of / any-of fences and the "complete when these complete" plumbing the
//! chain reuses. An all-of array fails with the first member error it sees; an any-of array
//! takes the outcome of the member that signalled first. Must not: be added to a reservation
//! object (it is a container: add its members instead, see [`Fence::is_container`]).
//!
//! Member callbacks hold only a weak reference to the array, so an abandoned array whose
//! members never signal does not keep itself alive.

use super::fence::{Fence, FenceContext, FenceKind, FenceStatus};
use super::shim::{AtomicUsize, Ordering};
use std::sync::Arc;
use thiserror::Error;

/// Whether an array waits for all members or for the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayMode {
    /// Signals when every member has signalled.
    All,
    /// Signals when any member has signalled.
    Any,
}

/// Errors of array construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ArrayError {
    /// An any-of array of zero fences would never signal.
    #[error("an any-of fence array needs at least one member")]
    EmptyAny,
}

/// A fence of `context`/`seqno` that signals per `mode` once its `members` have.
pub fn fence_array(
    mode: ArrayMode,
    members: Vec<Arc<Fence>>,
    context: FenceContext,
    seqno: u64,
) -> Result<Arc<Fence>, ArrayError> {
    if mode == ArrayMode::Any && members.is_empty() {
        return Err(ArrayError::EmptyAny);
    }
    let array = Fence::with_kind(context, seqno, FenceKind::Array(members.clone()));
    match mode {
        ArrayMode::All => complete_when_all(&array, &members),
        ArrayMode::Any => complete_when_any(&array, &members),
    }
    Ok(array)
}

/// The error a signalled fence finished with, if any.
fn fault_of(fence: &Fence) -> Option<super::fence::FenceFault> {
    match fence.status() {
        FenceStatus::Failed(fault) => Some(fault),
        _ => None,
    }
}

/// Signals `target` once every fence in `sources` has signalled (at once when empty); the
/// first source error seen becomes `target`'s error.
pub(crate) fn complete_when_all(target: &Arc<Fence>, sources: &[Arc<Fence>]) {
    if sources.is_empty() {
        // Only fails if someone else signalled the fresh target already: nothing to do then.
        let _ = target.complete(None);
        return;
    }
    let remaining = Arc::new(AtomicUsize::new(sources.len()));
    for source in sources {
        let weak = Arc::downgrade(target);
        let remaining = remaining.clone();
        source.on_signal(move |source| {
            let Some(target) = weak.upgrade() else {
                return;
            };
            if let Some(fault) = fault_of(source) {
                // Each source records its error before counting down, so the last count
                // sees every error recorded; a later error keeps the first one.
                let _ = target.set_error_once(fault);
            }
            if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                let _ = target.complete(None);
            }
        });
    }
}

/// Signals `target` with the outcome of whichever source signals first.
fn complete_when_any(target: &Arc<Fence>, sources: &[Arc<Fence>]) {
    for source in sources {
        let weak = Arc::downgrade(target);
        source.on_signal(move |source| {
            if let Some(target) = weak.upgrade() {
                // Losing the race to an earlier member is expected.
                let _ = target.complete(fault_of(source));
            }
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::fence::{FenceFault, FenceStatus};

    fn members(n: usize) -> Vec<Arc<Fence>> {
        (0..n)
            .map(|i| Fence::new(FenceContext::alloc(), i as u64))
            .collect()
    }

    #[test]
    fn array_all_signals_only_after_every_member() {
        let m = members(3);
        let array = fence_array(ArrayMode::All, m.clone(), FenceContext::alloc(), 1).unwrap();
        m[0].signal().unwrap();
        m[2].signal().unwrap();
        assert!(!array.is_signalled());
        m[1].signal().unwrap();
        assert_eq!(array.status(), FenceStatus::Signalled);
    }

    #[test]
    fn array_any_signals_on_the_first_member() {
        let m = members(3);
        let array = fence_array(ArrayMode::Any, m.clone(), FenceContext::alloc(), 1).unwrap();
        assert!(!array.is_signalled());
        m[1].set_error(FenceFault::Canceled).unwrap();
        m[1].signal().unwrap();
        assert_eq!(array.status(), FenceStatus::Failed(FenceFault::Canceled));
        m[0].signal().unwrap();
        assert_eq!(array.status(), FenceStatus::Failed(FenceFault::Canceled));
    }

    #[test]
    fn array_all_fails_with_the_first_member_error() {
        let m = members(3);
        let array = fence_array(ArrayMode::All, m.clone(), FenceContext::alloc(), 1).unwrap();
        m[2].set_error(FenceFault::DeviceLost).unwrap();
        m[2].signal().unwrap();
        m[0].set_error(FenceFault::JobTimeout).unwrap();
        m[0].signal().unwrap();
        m[1].signal().unwrap();
        assert_eq!(array.status(), FenceStatus::Failed(FenceFault::DeviceLost));
    }

    #[test]
    fn array_of_already_signalled_members_is_born_signalled() {
        let m = members(2);
        for f in &m {
            f.signal().unwrap();
        }
        let array = fence_array(ArrayMode::All, m, FenceContext::alloc(), 1).unwrap();
        assert!(array.is_signalled());
    }

    #[test]
    fn array_empty_any_is_an_error_and_empty_all_is_signalled() {
        let ctx = FenceContext::alloc();
        assert_eq!(
            fence_array(ArrayMode::Any, Vec::new(), ctx, 1).unwrap_err(),
            ArrayError::EmptyAny
        );
        assert!(fence_array(ArrayMode::All, Vec::new(), ctx, 1)
            .unwrap()
            .is_signalled());
    }

    #[test]
    fn array_is_a_container_that_lists_its_members() {
        let m = members(2);
        let array = fence_array(ArrayMode::All, m.clone(), FenceContext::alloc(), 1).unwrap();
        assert!(array.is_container());
        let FenceKind::Array(listed) = array.kind() else {
            panic!("array kind expected");
        };
        assert!(listed.iter().zip(&m).all(|(a, b)| Arc::ptr_eq(a, b)));
    }
}
