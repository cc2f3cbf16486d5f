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
//!   signal first, or
//! - the new job frees a table page a pending job writes into or links
//!   ([`PtCommit::freed`]). Unmapping a whole 2 MiB (or 1 GiB) slot drops its tables without
//!   writing their entries, so no entry is shared; but the page is retired behind the new
//!   job's fence only, and freed (or reused as another table, maybe of another VM) once that
//!   signalled: the pending job's write would then land in memory it no longer owns. The
//!   same holds for a table a 2 MiB leaf hid and a later unmap of the leaf frees.
//!
//! The converse needs no rule: once a job freed a page, no later job finds it in the
//! shadow, and a job building a table in the freed slot writes the same parent entry. Two
//! jobs writing different entries of one existing page are independent, which is the
//! bind-execqueues-independent case. In VA terms this is Xe's rule (`bind/tests/claims_oracle.rs`
//! checks it against an oracle stated so): jobs of different queues are ordered when they
//! write the same leaf entry or one creates or frees table structure covering what the
//! other writes or creates or frees.
//!
//! [`PtCommit::linked`]: crate::vm::pagetable::PtCommit::linked
//! [`PtCommit::freed`]: crate::vm::pagetable::PtCommit::freed

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
    /// The job frees the page (it writes none of its entries).
    freed: bool,
}

/// What one job does to the table pages, from its commit.
#[derive(Clone, Copy)]
pub(crate) struct Footprint<'a> {
    /// Entry writes (address, value), as the job performs them.
    pub writes: &'a [(PhysAddr, u64)],
    /// Pages the job links ([`crate::vm::pagetable::PtCommit::linked`]).
    pub linked: &'a [PhysAddr],
    /// Pages the job frees ([`crate::vm::pagetable::PtCommit::freed`]).
    pub freed: &'a [PhysAddr],
}

impl<'a> Footprint<'a> {
    /// The footprint of `commit` with its deferred `writes`.
    pub(crate) fn of(
        writes: &'a [(PhysAddr, u64)],
        commit: &'a crate::vm::pagetable::PtCommit,
    ) -> Self {
        Self {
            writes,
            linked: &commit.linked,
            freed: &commit.freed,
        }
    }
}

/// Pending claims of bind jobs on the table pages of one VM.
#[derive(Default)]
pub(crate) struct TableClaims {
    pages: HashMap<u64, SmallVec<[Claim; 2]>>,
}

impl TableClaims {
    /// The fences of other queues' pending jobs a job of `queue` must wait for before it
    /// does `what` (entry writes, linked and freed pages); records the job (its `fence`) as
    /// a claim on every page it writes or links.
    pub(crate) fn order(
        &mut self,
        queue: BindQueueId,
        what: Footprint<'_>,
        fence: &Arc<Fence>,
    ) -> Vec<Arc<Fence>> {
        self.pages.retain(|_, claims| {
            claims.retain(|c| !c.fence.is_signalled());
            !claims.is_empty()
        });
        let touches = touches(what);
        let mut deps: Vec<Arc<Fence>> = Vec::new();
        for (page, touch) in touches {
            let claims = self.pages.entry(page).or_default();
            for c in claims.iter().filter(|c| c.queue != queue) {
                let conflict = touch.freed || c.linked || c.slots.intersects(&touch.slots);
                if conflict && !deps.iter().any(|d| Arc::ptr_eq(d, &c.fence)) {
                    deps.push(c.fence.clone());
                }
            }
            if touch.freed && touch.slots == Slots::default() && !touch.linked {
                // Retired behind `fence`: nothing to claim (no later job finds the page).
                if claims.is_empty() {
                    self.pages.remove(&page);
                }
                continue;
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

/// Per page, the entries the job writes and whether it links or frees the page.
fn touches(what: Footprint<'_>) -> HashMap<u64, Touch> {
    let mut out: HashMap<u64, Touch> = HashMap::new();
    for &(addr, _) in what.writes {
        let page = addr.get() & !(PAGE_SIZE - 1);
        let index = ((addr.get() - page) / 8) as usize;
        out.entry(page).or_default().slots.set(index);
    }
    for p in what.linked {
        out.entry(p.get() & !(PAGE_SIZE - 1)).or_default().linked = true;
    }
    for p in what.freed {
        out.entry(p.get() & !(PAGE_SIZE - 1)).or_default().freed = true;
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

    fn fp<'a>(writes: &'a [(PhysAddr, u64)], linked: &'a [PhysAddr]) -> Footprint<'a> {
        Footprint {
            writes,
            linked,
            freed: &[],
        }
    }

    #[test]
    fn different_entries_of_one_page_are_independent() {
        let mut c = TableClaims::default();
        let (a, b) = (fence(), fence());
        assert!(c.order(BindQueueId(1), fp(&[w(5, 1)], &[]), &a).is_empty());
        assert!(c.order(BindQueueId(2), fp(&[w(5, 2)], &[]), &b).is_empty());
    }

    #[test]
    fn same_entry_orders_across_queues_not_within_one() {
        let mut c = TableClaims::default();
        let (a, b, x) = (fence(), fence(), fence());
        assert!(c.order(BindQueueId(1), fp(&[w(5, 1)], &[]), &a).is_empty());
        assert!(c.order(BindQueueId(1), fp(&[w(5, 1)], &[]), &x).is_empty());
        let deps = c.order(BindQueueId(2), fp(&[w(5, 1), w(5, 9)], &[]), &b);
        assert_eq!(deps.len(), 1);
        assert!(Arc::ptr_eq(&deps[0], &x), "the queue's newest job");
    }

    #[test]
    fn a_page_another_queue_links_orders_any_write_into_it() {
        let mut c = TableClaims::default();
        let (a, b) = (fence(), fence());
        c.order(
            BindQueueId(1),
            fp(&[w(5, 3), w(6, 0)], &[PhysAddr(6 * PAGE_SIZE)]),
            &a,
        );
        let deps = c.order(BindQueueId(2), fp(&[w(6, 200)], &[]), &b);
        assert_eq!(deps.len(), 1);
        assert!(Arc::ptr_eq(&deps[0], &a));
    }

    #[test]
    fn signalled_claims_are_dropped() {
        let mut c = TableClaims::default();
        let (a, b) = (fence(), fence());
        c.order(
            BindQueueId(1),
            fp(&[w(6, 0)], &[PhysAddr(6 * PAGE_SIZE)]),
            &a,
        );
        a.signal().unwrap();
        assert!(c.order(BindQueueId(2), fp(&[w(6, 0)], &[]), &b).is_empty());
        b.signal().unwrap();
        c.order(BindQueueId(3), fp(&[], &[]), &fence());
        assert_eq!(c.pending_pages(), 0);
    }

    /// Unmapping a whole slot frees its table without writing an entry of it: a pending
    /// job of another queue writing into that page is waited for (the page would otherwise
    /// be freed, and maybe reused, before that job's write lands in it).
    #[test]
    fn freeing_a_page_another_queue_writes_orders_after_it() {
        let mut c = TableClaims::default();
        let (a, b, x) = (fence(), fence(), fence());
        c.order(BindQueueId(1), fp(&[w(6, 3)], &[]), &a);
        let frees = [PhysAddr(6 * PAGE_SIZE)];
        let what = Footprint {
            writes: &[w(5, 0)],
            linked: &[],
            freed: &frees,
        };
        let deps = c.order(BindQueueId(2), what, &b);
        assert_eq!(deps.len(), 1);
        assert!(Arc::ptr_eq(&deps[0], &a));
        let own = Footprint {
            writes: &[],
            linked: &[],
            freed: &frees,
        };
        assert!(
            c.order(BindQueueId(1), own, &x).is_empty(),
            "its own queue runs in order"
        );
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
                let got = c.order(BindQueueId(*q), fp(&ws, &ls), &f);
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
