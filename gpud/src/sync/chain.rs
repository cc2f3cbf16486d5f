//! Fence chains: timeline points, each a node linking a point's fence to all earlier points.
//!
//! Owns: chain nodes, their composite fence (signalled when the point's own fence *and every
//! earlier point* have signalled), find-point, last-signalled-point queries and garbage
//! collection of signalled links. Invariants:
//! - a node's composite fence is a [`FenceKind::Chain`] fence on the chain's context; points
//!   added in increasing order share one context, a non-increasing point starts a new
//!   context and takes seqno `max(prev, point)` (dma_fence_chain_init);
//! - once a node's predecessor has signalled, every earlier point has too, so walks cut the
//!   link ("collect" it); a point older than a collected link is therefore signalled;
//! - an earlier point's failure propagates to every later composite.
//!
//! Must not: hold the link lock while calling into fences (it is an `Internal` lock), or
//! recurse over the chain length (drop and walks are iterative).

use super::array::complete_when_all;
use super::fence::{Fence, FenceContext, FenceKind};
use super::shim::{self, Mutex};
use std::sync::Arc;
use thiserror::Error;

/// Errors of chain lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ChainError {
    /// The requested point is later than every point added so far.
    #[error("timeline point {point} not yet submitted (last submitted {last_submitted})")]
    NotSubmitted { point: u64, last_submitted: u64 },
}

/// One timeline point.
#[derive(Debug)]
pub struct ChainNode {
    seqno: u64,
    prev_seqno: u64,
    point_fence: Arc<Fence>,
    fence: Arc<Fence>,
    /// `None` once collected (the predecessor signalled) or for the first point.
    prev: Mutex<Option<Arc<ChainNode>>>,
}

impl ChainNode {
    /// Appends point `seqno` carrying `fence` after `prev` (the current head, if any).
    pub fn new(prev: Option<Arc<ChainNode>>, fence: Arc<Fence>, seqno: u64) -> Arc<Self> {
        let prev_seqno = prev.as_ref().map_or(0, |p| p.seqno);
        let (context, seqno) = match &prev {
            Some(p) if seqno > p.seqno => (p.fence.context(), seqno),
            _ => (FenceContext::alloc(), seqno.max(prev_seqno)),
        };
        let composite = Fence::with_kind(context, seqno, FenceKind::Chain);
        let mut sources = vec![fence.clone()];
        sources.extend(prev.as_ref().map(|p| p.fence.clone()));
        complete_when_all(&composite, &sources);
        Arc::new(Self {
            seqno,
            prev_seqno,
            point_fence: fence,
            fence: composite,
            prev: Mutex::new(prev),
        })
    }

    /// This node's point.
    pub fn seqno(&self) -> u64 {
        self.seqno
    }

    /// The point of the predecessor when this node was added (0 for the first).
    pub fn prev_seqno(&self) -> u64 {
        self.prev_seqno
    }

    /// The fence of this point alone.
    pub fn point_fence(&self) -> &Arc<Fence> {
        &self.point_fence
    }

    /// The fence that signals when this point and all earlier points have.
    pub fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    /// Whether this point and all earlier points have signalled.
    pub fn is_signalled(&self) -> bool {
        self.fence.is_signalled()
    }

    /// The live predecessor, collecting the link first if the predecessor signalled.
    pub fn prev(&self) -> Option<Arc<ChainNode>> {
        let mut prev = shim::lock(&self.prev);
        if prev.as_ref().is_some_and(|p| p.is_signalled()) {
            *prev = None;
        }
        prev.clone()
    }

    /// The oldest node still covering `point`: `Ok(None)` when that point has signalled and
    /// its node was collected, `NotSubmitted` when `point` is later than this head.
    /// Point 0 returns the head itself.
    pub fn find_point(self: &Arc<Self>, point: u64) -> Result<Option<Arc<ChainNode>>, ChainError> {
        if point == 0 {
            return Ok(Some(self.clone()));
        }
        if self.seqno < point {
            return Err(ChainError::NotSubmitted {
                point,
                last_submitted: self.seqno,
            });
        }
        let mut node = self.clone();
        while node.prev_seqno >= point {
            match node.prev() {
                Some(prev) => node = prev,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    /// The latest point known signalled (0 if none), collecting signalled links on the way.
    pub fn last_signalled_point(self: &Arc<Self>) -> u64 {
        let mut node = self.clone();
        loop {
            if node.is_signalled() {
                return node.seqno;
            }
            match node.prev() {
                Some(prev) => node = prev,
                None => return node.prev_seqno,
            }
        }
    }

    /// Number of nodes still linked from this head (itself included), collecting signalled
    /// links on the way: what the timeline really keeps alive.
    pub fn collect_len(self: &Arc<Self>) -> usize {
        let mut len = 1;
        let mut node = self.clone();
        while let Some(prev) = node.prev() {
            len += 1;
            node = prev;
        }
        len
    }

    /// Number of nodes still linked from this head (itself included).
    pub fn linked_len(self: &Arc<Self>) -> usize {
        let mut len = 1;
        let mut node = self.clone();
        loop {
            let prev = shim::lock(&node.prev).clone();
            let Some(prev) = prev else {
                return len;
            };
            len += 1;
            node = prev;
        }
    }
}

impl Drop for ChainNode {
    fn drop(&mut self) {
        // Unlink iteratively: the default recursive drop of a long chain overflows the stack.
        let mut next = shim::lock(&self.prev).take();
        while let Some(node) = next {
            next = match Arc::try_unwrap(node) {
                Ok(node) => shim::lock(&node.prev).take(),
                Err(_) => None,
            };
        }
    }
}

#[cfg(all(test, not(loom)))]
#[path = "tests/chain.rs"]
mod tests;
