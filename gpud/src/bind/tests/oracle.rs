//! Property test of the bind engine against a page-by-page oracle: random multi-op binds
//! (MAP of two BOs, read-only or not, NULL, UNMAP), some with a random fail point armed.
//! A call fails exactly when its fail point fired, and then the oracle is unchanged; after
//! every call each page's translation (read through simgpu's walker) matches the oracle.

use super::rig::*;
use crate::bind::failpoint::FailPoint;
use crate::bind::{BindFlags, BindOp, VmFlags};
use proptest::prelude::*;
use simgpu::mmu::Access;

const BASE: u64 = 0x6_0000_0000;
const PAGES: u64 = 48;
const BO_PAGES: u64 = 16;

#[derive(Debug, Clone)]
enum Op {
    Map {
        bo: usize,
        off: u64,
        page: u64,
        n: u64,
        ro: bool,
    },
    Null {
        page: u64,
        n: u64,
    },
    Unmap {
        page: u64,
        n: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Page {
    Bo { bo: usize, page: u64, ro: bool },
    Null,
}

fn op() -> impl Strategy<Value = Op> {
    let span = (0..PAGES).prop_flat_map(|p| (Just(p), 1..=(PAGES - p).min(BO_PAGES)));
    prop_oneof![
        3 => (0..2usize, span.clone(), any::<bool>()).prop_flat_map(|(bo, (page, n), ro)| {
            (0..=BO_PAGES - n).prop_map(move |off| Op::Map { bo, off, page, n, ro })
        }),
        1 => span.clone().prop_map(|(page, n)| Op::Null { page, n }),
        2 => span.prop_map(|(page, n)| Op::Unmap { page, n }),
    ]
}

fn call() -> impl Strategy<Value = (Vec<Op>, Option<(usize, u32)>)> {
    (
        prop::collection::vec(op(), 1..4),
        prop::option::weighted(0.3, (0..FailPoint::ALL.len(), 0..3u32)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: simgpu::testkit::proptest_cases(12), ..ProptestConfig::default() })]

    #[test]
    fn binds_match_page_oracle(calls in prop::collection::vec(call(), 1..14)) {
        let r = rig_with(4 * MIB, 16 * MIB);
        let t = r.vm(VmFlags::empty());
        let bos = [r.bo(BO_PAGES * K4), r.sys_bo(BO_PAGES * K4)];
        let mut oracle: Vec<Option<Page>> = vec![None; PAGES as usize];
        for (ops, fail) in calls {
            let bind_ops: Vec<BindOp> = ops
                .iter()
                .map(|o| match *o {
                    Op::Map { bo, off, page, n, ro } => {
                        let op = BindOp::map(&bos[bo], off * K4, BASE + page * K4, n * K4);
                        if ro { op.with_flags(BindFlags::READONLY) } else { op }
                    }
                    Op::Null { page, n } => BindOp::map_null(BASE + page * K4, n * K4),
                    Op::Unmap { page, n } => BindOp::unmap(BASE + page * K4, n * K4),
                })
                .collect();
            let point = fail.map(|(i, skip)| (FailPoint::ALL[i], skip));
            if let Some((p, skip)) = point {
                r.dev.fail_points().arm(p, skip);
            }
            let res = t.bind(&bind_ops);
            let fired = point.is_some_and(|(p, _)| !r.dev.fail_points().is_armed(p));
            r.dev.fail_points().clear();
            prop_assert_eq!(res.is_err(), fired, "{:?}", res.err());
            if res.is_ok() {
                for o in &ops {
                    match *o {
                        Op::Map { bo, off, page, n, ro } => {
                            for i in 0..n {
                                oracle[(page + i) as usize] =
                                    Some(Page::Bo { bo, page: off + i, ro });
                            }
                        }
                        Op::Null { page, n } => {
                            for i in 0..n {
                                oracle[(page + i) as usize] = Some(Page::Null);
                            }
                        }
                        Op::Unmap { page, n } => {
                            for i in 0..n {
                                oracle[(page + i) as usize] = None;
                            }
                        }
                    }
                }
            }
            t.vm.with_state(|st| st.gpuvm.check_invariants()).unwrap();
            for (p, want) in oracle.iter().enumerate() {
                let va = BASE + p as u64 * K4;
                let read = r.translate(&t.vm, va, Access::Read);
                let write = r.translate(&t.vm, va, Access::Write);
                match want {
                    None => prop_assert!(read.is_none(), "page {} should be unmapped", p),
                    Some(Page::Null) => prop_assert!(read.is_some_and(|t| t.null), "page {} null", p),
                    Some(Page::Bo { bo, page, ro }) => {
                        let tr = read.unwrap();
                        prop_assert!(!tr.null);
                        prop_assert_eq!(tr.phys, bo_pa(&bos[*bo], page * K4), "page {}", p);
                        prop_assert_eq!(write.is_none(), *ro, "page {} write permission", p);
                    }
                }
            }
        }
    }
}
