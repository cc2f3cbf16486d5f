//! The cross-queue ordering rule of bind jobs against Xe's, stated in VA terms by an oracle
//! that knows nothing of table pages or physical addresses.
//!
//! Random binds on two or three queues are committed into real page tables (4 KiB pages
//! only, so the oracle can tell which tables exist from the mapped pages alone) and ordered
//! by [`TableClaims`]; every job stays pending. The oracle's rule: jobs of different queues
//! conflict iff they write the same leaf entry, or one creates or frees a table whose span
//! covers a leaf the other writes or a table the other creates or frees. Checked: a job
//! waits directly on another queue only when that queue has a conflicting pending job, and
//! every conflicting pending job of another queue is among what it waits for, directly or
//! through other jobs (its own queue's order included).

use crate::bind::claims::{Footprint, TableClaims};
use crate::bind::queue::BindQueueId;
use crate::hw::pte::{CacheMode, LeafFlags, MemLocation};
use crate::hw::sim::dma::HeapDma;
use crate::sync::{Fence, FenceContext};
use crate::types::{GpuVa, PhysAddr};
use crate::vm::pagetable::memory::SysPtMemory;
use crate::vm::pagetable::{MapTarget, PageTable, PhysSeg, PtConfig, PtOp};
use proptest::prelude::*;
use simgpu::HeapMemory;
use std::collections::BTreeSet;
use std::sync::Arc;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
/// The 2 MiB regions jobs touch: three in the first 1 GiB, one in the next.
const REGIONS: [u64; 4] = [0, M2, 2 * M2, 1 << 30];
/// Spans of one table at levels 0, 1, 2 (the root is never created or freed).
const SPANS: [u64; 3] = [M2, 1 << 30, 1 << 39];

#[derive(Debug, Clone)]
enum Op {
    /// Maps `n` pages from page `p` of a region (fresh physical pages: every entry changes).
    Map(usize, u64, u64),
    /// Unmaps `n` pages from page `p` of a region.
    Unmap(usize, u64, u64),
    /// Unmaps a whole region (its table is dropped without writing its entries).
    UnmapRegion(usize),
}

impl Op {
    fn range(&self) -> (u64, u64) {
        match *self {
            Op::Map(r, p, n) | Op::Unmap(r, p, n) => (REGIONS[r] + p * K4, n * K4),
            Op::UnmapRegion(r) => (REGIONS[r], M2),
        }
    }
}

/// What a job does, in VA terms.
#[derive(Debug, Default)]
struct Foot {
    /// 4 KiB pages whose leaf entry the job writes.
    leaves: BTreeSet<u64>,
    /// Tables the job creates or frees: (first VA, span).
    structure: Vec<(u64, u64)>,
}

impl Foot {
    fn conflicts(&self, other: &Foot) -> bool {
        let covers = |s: &(u64, u64), va: u64| s.0 <= va && va < s.0 + s.1;
        let overlap = |a: &(u64, u64), b: &(u64, u64)| a.0 < b.0 + b.1 && b.0 < a.0 + a.1;
        let under = |x: &Foot, y: &Foot| {
            x.structure.iter().any(|s| {
                y.leaves.iter().any(|&va| covers(s, va))
                    || y.structure.iter().any(|t| overlap(s, t))
            })
        };
        self.leaves.intersection(&other.leaves).next().is_some()
            || under(self, other)
            || under(other, self)
    }
}

/// The oracle's state: the mapped 4 KiB pages; a table exists iff a page under it is mapped.
#[derive(Default)]
struct Model {
    mapped: BTreeSet<u64>,
}

impl Model {
    fn tables(&self) -> BTreeSet<(usize, u64)> {
        let mut out = BTreeSet::new();
        for &va in &self.mapped {
            for (level, span) in SPANS.iter().enumerate() {
                out.insert((level, va & !(span - 1)));
            }
        }
        out
    }

    fn apply(&mut self, op: &Op) -> Foot {
        let before = self.tables();
        let (va, len) = op.range();
        let pages: Vec<u64> = (va..va + len).step_by(K4 as usize).collect();
        let mut foot = Foot::default();
        match op {
            Op::Map(..) => {
                foot.leaves.extend(pages.iter().copied());
                self.mapped.extend(pages);
            }
            Op::Unmap(..) => {
                for p in pages {
                    if self.mapped.remove(&p) {
                        foot.leaves.insert(p);
                    }
                }
            }
            Op::UnmapRegion(..) => {
                for p in pages {
                    self.mapped.remove(&p);
                }
            }
        }
        let after = self.tables();
        foot.structure = before
            .symmetric_difference(&after)
            .map(|&(level, base)| (base, SPANS[level]))
            .collect();
        foot
    }
}

fn pt_op(op: &Op, pa: u64) -> PtOp {
    let (va, len) = op.range();
    match op {
        Op::Map(..) => PtOp::Map {
            va: GpuVa(va),
            len,
            target: MapTarget::Pages {
                location: MemLocation::Vram,
                flags: LeafFlags {
                    writable: true,
                    cache: CacheMode::WriteBack,
                },
                segments: vec![PhysSeg {
                    addr: PhysAddr(pa),
                    len,
                }],
            },
        },
        Op::Unmap(..) | Op::UnmapRegion(..) => PtOp::Unmap { va: GpuVa(va), len },
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize, 0u64..6, 1u64..4).prop_map(|(r, p, n)| Op::Map(r, p, n)),
        2 => (0..4usize, 0u64..6, 1u64..4).prop_map(|(r, p, n)| Op::Unmap(r, p, n)),
        1 => (0..4usize).prop_map(Op::UnmapRegion),
    ]
}

fn jobs() -> impl Strategy<Value = Vec<(u64, Op)>> {
    (2u64..=3).prop_flat_map(|queues| proptest::collection::vec((1..=queues, op()), 1..24))
}

/// Every job index `start` waits for, directly or through others.
fn closure(edges: &[Vec<usize>], start: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<usize> = edges[start].clone();
    while let Some(j) = todo.pop() {
        if seen.insert(j) {
            todo.extend(edges[j].iter().copied());
        }
    }
    seen
}

proptest! {
    #[test]
    fn cross_queue_deps_match_xe_structure_rule(jobs in jobs()) {
        let sys = Arc::new(HeapMemory::new(16 << 20));
        let mem = Arc::new(SysPtMemory::new(Arc::new(HeapDma::new(sys))));
        let config = PtConfig { scratch: false, page_sizes: 1 };
        let mut pt = PageTable::new(mem, config).unwrap();
        let mut claims = TableClaims::default();
        let mut model = Model::default();
        // Per job: queue, footprint, fence, edges (direct deps and the queue's previous job).
        let mut done: Vec<(u64, Foot, Arc<Fence>)> = Vec::new();
        let mut edges: Vec<Vec<usize>> = Vec::new();
        for (k, (queue, op)) in jobs.iter().enumerate() {
            let pa = (1 << 32) + (k as u64) * 16 * K4;
            let update = pt.prepare(&[pt_op(op, pa)]).unwrap();
            let (commit, writes) = update.commit_deferred();
            let fence = Fence::new(FenceContext::alloc(), 1);
            let deps = claims.order(BindQueueId(*queue), Footprint::of(&writes, &commit), &fence);
            let foot = model.apply(op);
            let mut mine: Vec<usize> = Vec::new();
            for d in &deps {
                let j = done.iter().position(|(_, _, f)| Arc::ptr_eq(f, d));
                prop_assert!(j.is_some(), "job {} waits for a fence of no job", k);
                mine.extend(j);
            }
            for &j in &mine {
                let q = done[j].0;
                prop_assert!(q != *queue, "job {} waits on its own queue's job {}", k, j);
                let reason = (0..=j).any(|i| done[i].0 == q && done[i].1.conflicts(&foot));
                prop_assert!(reason, "job {} ({:?}) waits needlessly for queue {}", k, op, q);
            }
            mine.extend(done.iter().rposition(|(q, _, _)| q == queue));
            edges.push(mine);
            let waits = closure(&edges, k);
            for (i, (q, f, _)) in done.iter().enumerate() {
                if q != queue && f.conflicts(&foot) {
                    prop_assert!(
                        waits.contains(&i),
                        "job {} ({:?}, {:?}) does not wait for job {} ({:?}, {:?})",
                        k, op, foot, i, jobs[i].1, f
                    );
                }
            }
            done.push((*queue, foot, fence));
        }
    }
}
