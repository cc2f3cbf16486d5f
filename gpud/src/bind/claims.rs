//! The cross-queue ordering rule of bind jobs: which pending jobs of *other* bind queues a
//! new job must wait for.
//!
//! Owns: [`TableClaims`], per table page the pending jobs that write it (per queue: the
//! newest fence, the entries written, whether the job links the page). Must not: order jobs
//! of one queue (the queue itself runs them in order) or look at the VA tree: the rule is
//! stated in table memory alone.
//!
//! The rule (what Xe does with its range fences): a job waits for a pending job of another
//! queue only if
//! - both write the same entry (their writes must land in commit order, or an older value
//!   would survive behind the shadow's back), or
//! - the new job writes into a table page the pending job links ([`PtCommit::linked`]: a
//!   page it creates or un-hides, written out whole before the pointer to it). Until that
//!   pointer is written no walker reaches the new job's entries, so its fence must not
//!   signal first.
//!
//! Pages a pending job frees need no rule of their own: a freed page is retired with that
//! job's fence (nobody writes it again before it is reused), and a job building a table in
//! the freed slot writes the same parent entry. Two jobs writing different entries of one
//! existing page are independent, which is the bind-execqueues-independent case.
//!
//! [`PtCommit::linked`]: crate::vm::pagetable::PtCommit::linked

use super::queue::BindQueueId;
use crate::sync::Fence;
use crate::types::{PhysAddr, PAGE_SIZE};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::Arc;

/// Entries per table page (one bit each in a claim).
const ENTRIES: usize = 512;

/// A set of entries of one table page.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Slots([u64; ENTRIES / 64]);

impl Slots {
    fn set(&mut self, index: usize) {
        if let Some(w) = self.0.get_mut(index / 64) {
            *w |= 1 << (index % 64);
        }
    }

    fn union(&mut self, other: &Slots) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }

    fn intersects(&self, other: &Slots) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }
}

/// One queue's pending claim on a table page.
struct Claim {
    queue: BindQueueId,
    /// The newest job of `queue` writing the page (the queue runs its jobs in order, so
    /// once this signalled every earlier one did).
    fence: Arc<Fence>,
    slots: Slots,
    /// A pending job of `queue` links the page.
    linked: bool,
}

/// What one job does to one page.
#[derive(Default)]
struct Touch {
    slots: Slots,
    linked: bool,
}

/// Pending claims of bind jobs on the table pages of one VM.
#[derive(Default)]
pub(crate) struct TableClaims {
    pages: HashMap<u64, SmallVec<[Claim; 2]>>,
}

impl TableClaims {
    /// The fences of other queues' pending jobs a job of `queue` must wait for before it
    /// performs `writes` (entry address, value) and links `linked`; records the job (its
    /// `fence`) as a claim on every page it touches.
    pub(crate) fn order(
        &mut self,
        queue: BindQueueId,
        writes: &[(PhysAddr, u64)],
        linked: &[PhysAddr],
        fence: &Arc<Fence>,
    ) -> Vec<Arc<Fence>> {
        self.pages.retain(|_, claims| {
            claims.retain(|c| !c.fence.is_signalled());
            !claims.is_empty()
        });
        let touches = touches(writes, linked);
        let mut deps: Vec<Arc<Fence>> = Vec::new();
        for (page, touch) in touches {
            let claims = self.pages.entry(page).or_default();
            for c in claims.iter().filter(|c| c.queue != queue) {
                let conflict = c.linked || c.slots.intersects(&touch.slots);
                if conflict && !deps.iter().any(|d| Arc::ptr_eq(d, &c.fence)) {
                    deps.push(c.fence.clone());
                }
            }
            match claims.iter_mut().find(|c| c.queue == queue) {
                Some(c) => {
                    c.fence = fence.clone();
                    c.slots.union(&touch.slots);
                    c.linked |= touch.linked;
                }
                None => claims.push(Claim {
                    queue,
                    fence: fence.clone(),
                    slots: touch.slots,
                    linked: touch.linked,
                }),
            }
        }
        deps
    }

    /// Fences of every queue's pending jobs writing or linking one of `pages` (what a zap
    /// of those pages waits for).
    pub(crate) fn pending_on(&self, pages: &[PhysAddr]) -> Vec<Arc<Fence>> {
        let mut out: Vec<Arc<Fence>> = Vec::new();
        for p in pages {
            let Some(claims) = self.pages.get(&(p.get() & !(PAGE_SIZE - 1))) else {
                continue;
            };
            for c in claims.iter().filter(|c| !c.fence.is_signalled()) {
                if !out.iter().any(|f| Arc::ptr_eq(f, &c.fence)) {
                    out.push(c.fence.clone());
                }
            }
        }
        out
    }

    /// Pages with a pending claim (tests).
    #[cfg(test)]
    pub(crate) fn pending_pages(&self) -> usize {
        self.pages
            .values()
            .filter(|cs| cs.iter().any(|c| !c.fence.is_signalled()))
            .count()
    }
}

/// Per page, the entries `writes` set and whether `linked` names it.
fn touches(writes: &[(PhysAddr, u64)], linked: &[PhysAddr]) -> HashMap<u64, Touch> {
    let mut out: HashMap<u64, Touch> = HashMap::new();
    for &(addr, _) in writes {
        let page = addr.get() & !(PAGE_SIZE - 1);
        let index = ((addr.get() - page) / 8) as usize;
        out.entry(page).or_default().slots.set(index);
    }
    for p in linked {
        out.entry(p.get() & !(PAGE_SIZE - 1)).or_default().linked = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::FenceContext;
    use proptest::prelude::*;

    fn fence() -> Arc<Fence> {
        Fence::new(FenceContext::alloc(), 1)
    }

    fn w(page: u64, entry: u64) -> (PhysAddr, u64) {
        (PhysAddr(page * PAGE_SIZE + entry * 8), 1)
    }

    #[test]
    fn different_entries_of_one_page_are_independent() {
        let mut c = TableClaims::default();
        let (a, b) = (fence(), fence());
        assert!(c.order(BindQueueId(1), &[w(5, 1)], &[], &a).is_empty());
        assert!(c.order(BindQueueId(2), &[w(5, 2)], &[], &b).is_empty());
    }

    #[test]
    fn same_entry_orders_across_queues_not_within_one() {
        let mut c = TableClaims::default();
        let (a, b, x) = (fence(), fence(), fence());
        assert!(c.order(BindQueueId(1), &[w(5, 1)], &[], &a).is_empty());
        assert!(c.order(BindQueueId(1), &[w(5, 1)], &[], &x).is_empty());
        let deps = c.order(BindQueueId(2), &[w(5, 1), w(5, 9)], &[], &b);
        assert_eq!(deps.len(), 1);
        assert!(Arc::ptr_eq(&deps[0], &x), "the queue's newest job");
    }

    #[test]
    fn a_page_another_queue_links_orders_any_write_into_it() {
        let mut c = TableClaims::default();
        let (a, b) = (fence(), fence());
        c.order(
            BindQueueId(1),
            &[w(5, 3), w(6, 0)],
            &[PhysAddr(6 * PAGE_SIZE)],
            &a,
        );
        let deps = c.order(BindQueueId(2), &[w(6, 200)], &[], &b);
        assert_eq!(deps.len(), 1);
        assert!(Arc::ptr_eq(&deps[0], &a));
    }

    #[test]
    fn signalled_claims_are_dropped() {
        let mut c = TableClaims::default();
        let (a, b) = (fence(), fence());
        c.order(BindQueueId(1), &[w(6, 0)], &[PhysAddr(6 * PAGE_SIZE)], &a);
        a.signal().unwrap();
        assert!(c.order(BindQueueId(2), &[w(6, 0)], &[], &b).is_empty());
        b.signal().unwrap();
        c.order(BindQueueId(3), &[], &[], &fence());
        assert_eq!(c.pending_pages(), 0);
    }

    /// A job as data: queue, (page, entry) writes, linked pages.
    type Job = (u64, Vec<(u64, u64)>, Vec<u64>);

    proptest! {
        /// Against the rule stated directly over every pending job: the deps name a job of
        /// another queue exactly when that queue has a conflicting pending job, and then
        /// one at least as new as its newest conflicting job (queues run in order).
        #[test]
        fn matches_the_rule(jobs in proptest::collection::vec(
            (1u64..4, proptest::collection::vec((0u64..4, 0u64..8), 0..6),
             proptest::collection::vec(0u64..4, 0..2)), 1..12)) {
            let mut c = TableClaims::default();
            let mut pending: Vec<(Job, Arc<Fence>)> = Vec::new();
            for job in jobs {
                let (q, writes, links) = &job;
                let f = fence();
                let ws: Vec<_> = writes.iter().map(|&(p, e)| w(p, e)).collect();
                let ls: Vec<_> = links.iter().map(|&p| PhysAddr(p * PAGE_SIZE)).collect();
                let got = c.order(BindQueueId(*q), &ws, &ls, &f);
                let touched = |p: u64| writes.iter().any(|w| w.0 == p) || links.contains(&p);
                for oq in 1u64..4 {
                    if oq == *q {
                        continue;
                    }
                    let last = pending.iter().enumerate().rev().find(|(_, ((jq, jw, jl), _))| {
                        *jq == oq
                            && (jw.iter().any(|x| writes.contains(x))
                                || jl.iter().any(|&p| touched(p)))
                    });
                    let ours: Vec<usize> = pending
                        .iter()
                        .enumerate()
                        .filter(|(_, ((jq, _, _), jf))| {
                            *jq == oq && got.iter().any(|g| Arc::ptr_eq(g, jf))
                        })
                        .map(|(i, _)| i)
                        .collect();
                    match last {
                        None => prop_assert!(ours.is_empty(), "queue {} needlessly waited", oq),
                        Some((i, _)) => prop_assert!(
                            ours.iter().any(|&o| o >= i),
                            "queue {}'s conflicting job {} not waited for", oq, i
                        ),
                    }
                }
                prop_assert!(!got.iter().any(|g| Arc::ptr_eq(g, &f)));
                pending.push((job, f));
            }
        }
    }
}
