//! Unit and property tests of `chain.rs`.

use super::*;
use crate::sync::fence::{FenceFault, FenceStatus};
use proptest::prelude::*;

fn point_fence() -> Arc<Fence> {
    Fence::new(FenceContext::alloc(), 1)
}

/// Builds a chain of `points`; returns the head and the point fences.
fn chain(points: &[u64]) -> (Arc<ChainNode>, Vec<Arc<Fence>>) {
    let mut head = None;
    let mut fences = Vec::new();
    for &p in points {
        let f = point_fence();
        fences.push(f.clone());
        head = Some(ChainNode::new(head, f, p));
    }
    (head.expect("at least one point"), fences)
}

#[test]
fn chain_point_signals_when_its_fence_and_all_earlier_points_have() {
    let (head, fences) = chain(&[1, 2, 3]);
    fences[2].signal().unwrap();
    assert!(!head.is_signalled(), "earlier points still pending");
    fences[0].signal().unwrap();
    assert!(!head.is_signalled());
    fences[1].signal().unwrap();
    assert!(head.is_signalled());
}

#[test]
fn chain_increasing_points_share_a_context() {
    let (head, _) = chain(&[1, 5]);
    let prev = head.prev().unwrap();
    assert_eq!(head.fence().context(), prev.fence().context());
    assert_eq!((head.seqno(), head.prev_seqno()), (5, 1));
    assert!(head.fence().is_container());
}

#[test]
fn chain_non_increasing_point_gets_new_context_and_max_seqno() {
    let (head, _) = chain(&[7, 3]);
    let prev = head.prev().unwrap();
    assert_ne!(head.fence().context(), prev.fence().context());
    assert_eq!(head.seqno(), 7);
}

#[test]
fn chain_find_point_zero_is_the_head() {
    let (head, _) = chain(&[2, 4]);
    assert!(Arc::ptr_eq(&head.find_point(0).unwrap().unwrap(), &head));
}

#[test]
fn chain_find_point_not_yet_submitted() {
    let (head, _) = chain(&[2, 4]);
    assert_eq!(
        head.find_point(5).unwrap_err(),
        ChainError::NotSubmitted {
            point: 5,
            last_submitted: 4
        }
    );
}

#[test]
fn chain_find_point_returns_oldest_node_covering_the_point() {
    let (head, _) = chain(&[2, 4, 8]);
    assert_eq!(head.find_point(1).unwrap().unwrap().seqno(), 2);
    assert_eq!(head.find_point(3).unwrap().unwrap().seqno(), 4);
    assert_eq!(head.find_point(4).unwrap().unwrap().seqno(), 4);
    assert_eq!(head.find_point(6).unwrap().unwrap().seqno(), 8);
}

#[test]
fn chain_walk_collects_signalled_links() {
    let (head, fences) = chain(&[1, 2, 3, 4]);
    assert_eq!(head.linked_len(), 4);
    fences[0].signal().unwrap();
    fences[1].signal().unwrap();
    // Point 2 signalled, so points 1 and 2 are collected; 1 is satisfied with no node.
    assert_eq!(head.find_point(1).unwrap().map(|n| n.seqno()), None);
    assert_eq!(head.linked_len(), 2);
    assert_eq!(head.last_signalled_point(), 2);
}

#[test]
fn chain_last_signalled_point_follows_the_signalled_prefix() {
    let (head, fences) = chain(&[3, 6, 9]);
    assert_eq!(head.last_signalled_point(), 0);
    fences[1].signal().unwrap();
    assert_eq!(head.last_signalled_point(), 0, "6 waits for 3");
    fences[0].signal().unwrap();
    assert_eq!(head.last_signalled_point(), 6);
    fences[2].signal().unwrap();
    assert_eq!(head.last_signalled_point(), 9);
}

#[test]
fn chain_earlier_failure_propagates_to_later_points() {
    let (head, fences) = chain(&[1, 2]);
    fences[0].set_error(FenceFault::DeviceLost).unwrap();
    fences[0].signal().unwrap();
    fences[1].signal().unwrap();
    assert_eq!(
        head.fence().status(),
        FenceStatus::Failed(FenceFault::DeviceLost)
    );
}

#[test]
fn chain_of_many_points_drops_without_recursion() {
    let mut head = None;
    for p in 1..=200_000u64 {
        head = Some(ChainNode::new(head, Fence::signalled_stub(), p));
    }
    let head = head.unwrap();
    assert_eq!(head.last_signalled_point(), 200_000);
    drop(head);
}

#[test]
fn chain_oldest_point_signalling_last_completes_a_long_chain_without_recursion() {
    let first = point_fence();
    let mut head = ChainNode::new(None, first.clone(), 1);
    for p in 2..=100_000u64 {
        head = ChainNode::new(Some(head), Fence::signalled_stub(), p);
    }
    assert!(!head.is_signalled());
    // Each link's completion triggers the next: this must not nest 100 000 stack frames.
    first.signal().unwrap();
    assert!(head.is_signalled());
    assert_eq!(head.last_signalled_point(), 100_000);
}

/// Oracle: points strictly increasing; `signalled[i]` is point i's own fence.
fn oracle_find(points: &[u64], signalled: &[bool], n: u64) -> Result<Option<u64>, ()> {
    let last = *points.last().unwrap();
    if n > last {
        return Err(());
    }
    // Point 0 means the head.
    let target = if n == 0 { last } else { n };
    let i = points.iter().position(|&p| p >= target).unwrap();
    // The node covering n may be collected only if it is fully signalled.
    let covered_done = signalled[..=i].iter().all(|s| *s);
    Ok(if covered_done { None } else { Some(points[i]) })
}

fn oracle_last_signalled(points: &[u64], signalled: &[bool]) -> u64 {
    let prefix = signalled.iter().take_while(|s| **s).count();
    if prefix == 0 {
        0
    } else {
        points[prefix - 1]
    }
}

proptest! {
    #[test]
    fn prop_chain_find_point_matches_oracle(
        gaps in prop::collection::vec(1u64..4, 1..12),
        signal_mask in prop::collection::vec(any::<bool>(), 12),
        queries in prop::collection::vec(0u64..50, 1..10),
    ) {
        let points: Vec<u64> = gaps.iter().scan(0, |acc, g| { *acc += g; Some(*acc) }).collect();
        let (head, fences) = chain(&points);
        let signalled: Vec<bool> = signal_mask[..points.len()].to_vec();
        for (f, s) in fences.iter().zip(&signalled) {
            if *s {
                f.signal().unwrap();
            }
        }
        prop_assert_eq!(head.last_signalled_point(), oracle_last_signalled(&points, &signalled));
        for n in queries {
            let got = head.find_point(n);
            match oracle_find(&points, &signalled, n) {
                Err(()) => prop_assert!(got.is_err()),
                Ok(None) => {
                    // Collected or still linked: either way, it must be signalled.
                    let node = got.unwrap();
                    prop_assert!(node.is_none_or(|node| node.is_signalled()));
                }
                Ok(Some(seqno)) => {
                    let node = got.unwrap();
                    let node = node.expect("an unsignalled point must be found");
                    prop_assert_eq!(node.seqno(), seqno);
                    prop_assert!(!node.is_signalled());
                }
            }
        }
    }
}
