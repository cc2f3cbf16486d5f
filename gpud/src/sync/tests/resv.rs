//! Unit and property tests of `resv.rs`.

use super::*;
use crate::sync::array::{fence_array, ArrayMode};
use crate::sync::fence::FenceContext;
use proptest::prelude::*;
use std::time::Duration;

/// A locked object plus the context holding it.
fn locked() -> (Arc<Resv>, AcquireCtx) {
    let resv = Resv::new();
    let mut ctx = AcquireCtx::new();
    resv.ww().lock(&mut ctx).unwrap();
    (resv, ctx)
}

fn unlock(resv: &Resv, ctx: &mut AcquireCtx) {
    resv.reset_reservations();
    resv.ww().unlock(ctx).unwrap();
}

#[test]
fn resv_add_needs_a_reserved_slot() {
    let (resv, mut ctx) = locked();
    let f = Fence::new(FenceContext::alloc(), 1);
    assert_eq!(
        resv.add_fence(&ctx, f.clone(), Usage::Write),
        Err(ResvError::NoSlotReserved {
            resv: resv.id(),
            entries: 0
        })
    );
    resv.reserve_fences(&ctx, 1).unwrap();
    resv.add_fence(&ctx, f, Usage::Write).unwrap();
    let g = Fence::new(FenceContext::alloc(), 1);
    assert!(matches!(
        resv.add_fence(&ctx, g, Usage::Write),
        Err(ResvError::NoSlotReserved { entries: 1, .. })
    ));
    unlock(&resv, &mut ctx);
}

#[test]
fn resv_add_needs_the_lock() {
    let resv = Resv::new();
    let ctx = AcquireCtx::new();
    assert_eq!(
        resv.reserve_fences(&ctx, 1),
        Err(ResvError::NotLocked { resv: resv.id() })
    );
    let f = Fence::new(FenceContext::alloc(), 1);
    assert_eq!(
        resv.add_fence(&ctx, f, Usage::Read),
        Err(ResvError::NotLocked { resv: resv.id() })
    );
}

#[test]
fn resv_same_context_later_seqno_replaces_in_place_without_a_slot() {
    let (resv, mut ctx) = locked();
    let c = FenceContext::alloc();
    resv.reserve_fences(&ctx, 1).unwrap();
    resv.add_fence(&ctx, Fence::new(c, 1), Usage::Read).unwrap();
    // No slot left, yet the later fence of the same context replaces the entry.
    resv.add_fence(&ctx, Fence::new(c, 2), Usage::Read).unwrap();
    let entries = resv.entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0.seqno(), 2);
    unlock(&resv, &mut ctx);
}

#[test]
fn resv_earlier_seqno_does_not_replace() {
    let (resv, mut ctx) = locked();
    let c = FenceContext::alloc();
    resv.reserve_fences(&ctx, 2).unwrap();
    resv.add_fence(&ctx, Fence::new(c, 5), Usage::Write)
        .unwrap();
    resv.add_fence(&ctx, Fence::new(c, 3), Usage::Write)
        .unwrap();
    assert_eq!(resv.entries().len(), 2);
    unlock(&resv, &mut ctx);
}

#[test]
fn resv_replacement_never_weakens_usage() {
    let (resv, mut ctx) = locked();
    let c = FenceContext::alloc();
    resv.reserve_fences(&ctx, 2).unwrap();
    resv.add_fence(&ctx, Fence::new(c, 1), Usage::Write)
        .unwrap();
    resv.add_fence(&ctx, Fence::new(c, 2), Usage::Read).unwrap();
    let usages: Vec<_> = resv.entries().iter().map(|(_, u)| *u).collect();
    assert_eq!(usages, vec![Usage::Write, Usage::Read], "WRITE entry kept");
    unlock(&resv, &mut ctx);
}

#[test]
fn resv_readd_promotes_bookkeep_to_read() {
    let (resv, mut ctx) = locked();
    let f = Fence::new(FenceContext::alloc(), 1);
    resv.reserve_fences(&ctx, 1).unwrap();
    resv.add_fence(&ctx, f.clone(), Usage::Bookkeep).unwrap();
    assert!(resv.fences(Usage::Read).is_empty());
    resv.add_fence(&ctx, f, Usage::Read).unwrap();
    assert_eq!(resv.fences(Usage::Read).len(), 1);
    assert_eq!(resv.entries().len(), 1);
    unlock(&resv, &mut ctx);
}

#[test]
fn resv_signalled_fences_drop_out_on_add() {
    let (resv, mut ctx) = locked();
    let old = Fence::new(FenceContext::alloc(), 1);
    resv.reserve_fences(&ctx, 1).unwrap();
    resv.add_fence(&ctx, old.clone(), Usage::Kernel).unwrap();
    old.signal().unwrap();
    let new = Fence::new(FenceContext::alloc(), 1);
    resv.add_fence(&ctx, new.clone(), Usage::Bookkeep).unwrap();
    let entries = resv.entries();
    assert_eq!(entries.len(), 1);
    assert!(Arc::ptr_eq(&entries[0].0, &new));
    unlock(&resv, &mut ctx);
}

#[test]
fn resv_query_up_to_usage_includes_stronger_classes() {
    let (resv, mut ctx) = locked();
    resv.reserve_fences(&ctx, 4).unwrap();
    for usage in [Usage::Kernel, Usage::Write, Usage::Read, Usage::Bookkeep] {
        resv.add_fence(&ctx, Fence::new(FenceContext::alloc(), 1), usage)
            .unwrap();
    }
    assert_eq!(resv.fences(Usage::Kernel).len(), 1);
    assert_eq!(resv.fences(Usage::Write).len(), 2);
    assert_eq!(resv.fences(Usage::Read).len(), 3);
    assert_eq!(resv.fences(Usage::Bookkeep).len(), 4);
    unlock(&resv, &mut ctx);
}

#[test]
fn resv_test_signalled_and_wait_by_usage() {
    let (resv, mut ctx) = locked();
    let write = Fence::new(FenceContext::alloc(), 1);
    let book = Fence::new(FenceContext::alloc(), 1);
    resv.reserve_fences(&ctx, 2).unwrap();
    resv.add_fence(&ctx, write.clone(), Usage::Write).unwrap();
    resv.add_fence(&ctx, book.clone(), Usage::Bookkeep).unwrap();
    unlock(&resv, &mut ctx);
    assert!(!resv.test_signalled(Usage::Write));
    write.signal().unwrap();
    assert!(resv.test_signalled(Usage::Read));
    assert!(!resv.test_signalled(Usage::Bookkeep));
    assert_eq!(resv.wait(Usage::Write, None), Ok(()));
    let soon = Instant::now() + Duration::from_millis(2);
    assert_eq!(
        resv.wait(Usage::Bookkeep, Some(soon)),
        Err(FenceError::Timeout { pending: 1 })
    );
}

#[test]
fn resv_refuses_container_fences() {
    let (resv, mut ctx) = locked();
    resv.reserve_fences(&ctx, 1).unwrap();
    let member = Fence::new(FenceContext::alloc(), 1);
    let ctx_id = FenceContext::alloc();
    let array = fence_array(ArrayMode::All, vec![member], ctx_id, 3).unwrap();
    assert_eq!(
        resv.add_fence(&ctx, array, Usage::Read),
        Err(ResvError::Container {
            resv: resv.id(),
            context: ctx_id.get(),
            seqno: 3
        })
    );
    unlock(&resv, &mut ctx);
}

#[test]
fn resv_reservations_are_dropped_on_unlock() {
    let (resv, mut ctx) = locked();
    resv.reserve_fences(&ctx, 3).unwrap();
    unlock(&resv, &mut ctx);
    resv.ww().lock(&mut ctx).unwrap();
    let f = Fence::new(FenceContext::alloc(), 1);
    assert!(matches!(
        resv.add_fence(&ctx, f, Usage::Read),
        Err(ResvError::NoSlotReserved { .. })
    ));
    unlock(&resv, &mut ctx);
}

/// One step of the differential test.
#[derive(Debug, Clone)]
enum Op {
    Add { ctx: usize, seqno: u64, usage: u8 },
    Signal { index: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3, 0u64..6, 0u8..4).prop_map(|(ctx, seqno, usage)| Op::Add { ctx, seqno, usage }),
        1 => (0usize..16).prop_map(|index| Op::Signal { index }),
    ]
}

const USAGES: [Usage; 4] = [Usage::Kernel, Usage::Write, Usage::Read, Usage::Bookkeep];

/// Oracle entry: (context index, seqno, usage, signalled, fence id).
type Model = Vec<(usize, u64, Usage, bool, usize)>;

fn oracle_add(model: &mut Model, ctx: usize, seqno: u64, usage: Usage, id: usize) {
    for entry in model.iter_mut() {
        let same = entry.0 == ctx && entry.2 >= usage && seqno >= entry.1;
        if same || entry.3 {
            *entry = (ctx, seqno, usage, false, id);
            return;
        }
    }
    model.push((ctx, seqno, usage, false, id));
}

proptest! {
    #[test]
    fn prop_resv_replacement_matches_oracle(ops in prop::collection::vec(op(), 1..40)) {
        let (resv, mut ctx) = locked();
        let contexts = [FenceContext::alloc(), FenceContext::alloc(), FenceContext::alloc()];
        let mut created: Vec<Arc<Fence>> = Vec::new();
        let mut model: Model = Vec::new();
        for op in ops {
            match op {
                Op::Add { ctx: c, seqno, usage } => {
                    let fence = Fence::new(contexts[c], seqno);
                    created.push(fence.clone());
                    resv.reserve_fences(&ctx, 1).unwrap();
                    resv.add_fence(&ctx, fence, USAGES[usage as usize]).unwrap();
                    oracle_add(&mut model, c, seqno, USAGES[usage as usize], created.len() - 1);
                }
                Op::Signal { index } => {
                    if let Some(fence) = created.get(index) {
                        let _ = fence.signal();
                        for entry in model.iter_mut().filter(|e| e.4 == index) {
                            entry.3 = true;
                        }
                    }
                }
            }
            let got: Vec<_> = resv.entries().iter().map(|(f, u)| (f.context(), f.seqno(), *u, f.is_signalled())).collect();
            let want: Vec<_> = model.iter().map(|e| (contexts[e.0], e.1, e.2, e.3)).collect();
            prop_assert_eq!(got, want);
            for usage in USAGES {
                let pending = model.iter().any(|e| e.2 <= usage && !e.3);
                prop_assert_eq!(resv.test_signalled(usage), !pending);
            }
        }
        unlock(&resv, &mut ctx);
    }
}
