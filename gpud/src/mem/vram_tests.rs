//! Tests of the VRAM buddy allocator: named rules plus a property test against a page-set
//! oracle.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;

fn pages_of(blocks: &[VramBlock]) -> Vec<u64> {
    blocks
        .iter()
        .flat_map(|b| (b.offset..b.end()).step_by(K4 as usize))
        .collect()
}

#[test]
fn fresh_allocator_is_one_block_when_size_is_a_power_of_two() {
    let a = VramAllocator::new(64 << 20);
    let s = a.stats();
    assert_eq!(s.free, 64 << 20);
    assert_eq!(s.largest_free_block, 64 << 20);
    assert_eq!(s.fragmentation_permille(), 0);
    a.check_invariants().unwrap();
}

#[test]
fn non_power_of_two_size_starts_as_maximal_aligned_blocks() {
    let a = VramAllocator::new(12 << 20);
    let s = a.stats();
    assert_eq!(s.largest_free_block, 8 << 20);
    assert_eq!(s.free, 12 << 20);
    a.check_invariants().unwrap();
}

#[test]
fn blocks_are_aligned_to_their_size() {
    let mut a = VramAllocator::new(64 << 20);
    for size in [K4, 3 * K4, 64 << 10, M2 + K4, 5 << 20] {
        for b in a.alloc(AllocRequest::scattered(size)).unwrap() {
            assert_eq!(b.offset % b.size(), 0, "{b:?}");
        }
    }
    a.check_invariants().unwrap();
}

#[test]
fn contiguous_request_trims_the_tail_and_returns_adjacent_blocks() {
    let mut a = VramAllocator::new(64 << 20);
    let blocks = a.alloc(AllocRequest::contiguous(12 * K4)).unwrap();
    let total: u64 = blocks.iter().map(|b| b.size()).sum();
    assert_eq!(total, 12 * K4, "the 16-page block is trimmed to 12 pages");
    for w in blocks.windows(2) {
        assert_eq!(w[0].end(), w[1].offset, "blocks are adjacent");
    }
    assert_eq!(a.free_bytes(), (64 << 20) - 12 * K4);
    a.check_invariants().unwrap();
}

#[test]
fn min_block_gives_blocks_usable_for_large_pages() {
    let mut a = VramAllocator::new(64 << 20);
    let req = AllocRequest {
        size: 3 * M2,
        min_block: M2,
        contiguous: false,
    };
    let blocks = a.alloc(req).unwrap();
    assert!(blocks.iter().all(|b| b.size() >= M2 && b.offset % M2 == 0));
    assert_eq!(blocks.iter().map(|b| b.size()).sum::<u64>(), 3 * M2);
}

#[test]
fn exhaustion_is_a_typed_no_space_error_and_changes_nothing() {
    let mut a = VramAllocator::new(M2);
    let _keep = a.alloc(AllocRequest::scattered(M2 - K4)).unwrap();
    let before = a.stats();
    let err = a.alloc(AllocRequest::scattered(2 * K4)).unwrap_err();
    assert_eq!(
        err,
        VramError::NoSpace {
            requested: 2 * K4,
            free: K4,
            largest: K4
        }
    );
    assert_eq!(a.stats(), before);
    a.check_invariants().unwrap();
}

#[test]
fn contiguous_request_fails_when_only_fragments_are_free() {
    let mut a = VramAllocator::new(16 * K4);
    let all: Vec<_> = (0..16)
        .map(|_| a.alloc(AllocRequest::scattered(K4)).unwrap())
        .collect();
    // Free every other page: 8 free pages, none adjacent.
    for blocks in all.iter().step_by(2) {
        a.free(blocks).unwrap();
    }
    assert_eq!(a.free_bytes(), 8 * K4);
    assert!(matches!(
        a.alloc(AllocRequest::contiguous(2 * K4)),
        Err(VramError::NoSpace { .. })
    ));
    assert_eq!(a.stats().fragmentation_permille(), 875);
    // A scattered request of the same size still succeeds.
    assert_eq!(
        pages_of(&a.alloc(AllocRequest::scattered(2 * K4)).unwrap()).len(),
        2
    );
}

#[test]
fn double_free_is_rejected_without_freeing_anything() {
    let mut a = VramAllocator::new(M2);
    let x = a.alloc(AllocRequest::scattered(K4)).unwrap();
    let y = a.alloc(AllocRequest::scattered(K4)).unwrap();
    a.free(&x).unwrap();
    let free_before = a.free_bytes();
    let both = [x[0], y[0]];
    assert!(matches!(a.free(&both), Err(VramError::NotAllocated { .. })));
    assert_eq!(a.free_bytes(), free_before, "y must not have been freed");
    a.free(&y).unwrap();
}

#[test]
fn invalid_requests_are_rejected() {
    let mut a = VramAllocator::new(M2);
    assert!(matches!(
        a.alloc(AllocRequest::scattered(0)),
        Err(VramError::InvalidRequest { .. })
    ));
    let bad = AllocRequest {
        size: K4,
        min_block: 3 * K4,
        contiguous: false,
    };
    assert!(matches!(
        a.alloc(bad),
        Err(VramError::InvalidRequest { .. })
    ));
    let huge = AllocRequest {
        size: u64::MAX,
        min_block: K4,
        contiguous: true,
    };
    assert!(a.alloc(huge).is_err());
}

#[test]
fn freeing_everything_coalesces_fully() {
    let mut a = VramAllocator::new(12 << 20);
    let initial = a.stats();
    let mut held = Vec::new();
    for size in [K4, 5 * K4, M2, 7 * K4, 3 << 20] {
        held.push(a.alloc(AllocRequest::scattered(size)).unwrap());
        held.push(a.alloc(AllocRequest::contiguous(size)).unwrap());
    }
    for blocks in held.iter().rev() {
        a.free(blocks).unwrap();
    }
    assert_eq!(a.stats(), initial);
}

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        pages: u64,
        min_block_shift: u32,
        contiguous: bool,
    },
    Free {
        index: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..600, 0u32..6, any::<bool>())
            .prop_map(|(pages, min_block_shift, contiguous)| Op::Alloc { pages, min_block_shift, contiguous }),
        2 => any::<usize>().prop_map(|index| Op::Free { index }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simgpu::testkit::proptest_cases(200)))]

    /// Random alloc/free sequences against an oracle set of allocated pages: no overlap, sizes
    /// and alignment as requested, accounting exact, and full coalescing at the end.
    #[test]
    fn random_alloc_free_matches_page_oracle(
        vram_pages in 64u64..2048,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut a = VramAllocator::new(vram_pages * K4);
        let initial = a.stats();
        let mut oracle: BTreeSet<u64> = BTreeSet::new();
        let mut live: Vec<Vec<VramBlock>> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc { pages, min_block_shift, contiguous } => {
                    let min_block = K4 << min_block_shift;
                    let req = AllocRequest { size: pages * K4, min_block, contiguous };
                    let free_before = a.free_bytes();
                    match a.alloc(req) {
                        Ok(blocks) => {
                            let want = (pages * K4).next_multiple_of(min_block);
                            prop_assert_eq!(blocks.iter().map(|b| b.size()).sum::<u64>(), want);
                            for b in &blocks {
                                prop_assert!(b.size() >= min_block && b.offset % b.size() == 0);
                            }
                            if contiguous {
                                for w in blocks.windows(2) {
                                    prop_assert_eq!(w[0].end(), w[1].offset);
                                }
                            }
                            for p in pages_of(&blocks) {
                                prop_assert!(oracle.insert(p), "page {:#x} handed out twice", p);
                            }
                            live.push(blocks);
                        }
                        Err(VramError::NoSpace { .. }) => {
                            prop_assert_eq!(a.free_bytes(), free_before, "failed alloc leaked");
                            if !contiguous && min_block == K4 {
                                prop_assert!(pages * K4 > free_before, "scattered 4K alloc refused with space free");
                            }
                        }
                        Err(e) => prop_assert!(false, "unexpected error {:?}", e),
                    }
                }
                Op::Free { index } => {
                    if live.is_empty() { continue; }
                    let blocks = live.swap_remove(index % live.len());
                    a.free(&blocks).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    for p in pages_of(&blocks) {
                        prop_assert!(oracle.remove(&p));
                    }
                }
            }
            prop_assert_eq!(a.free_bytes(), a.size() - oracle.len() as u64 * K4);
            a.check_invariants().map_err(TestCaseError::fail)?;
        }
        for blocks in live {
            a.free(&blocks).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(a.stats(), initial);
    }
}
