//! Property test of per-client memory accounting against a simple oracle: BOs are created,
//! destroyed, derived into handles, imported back by token and closed in random order; the
//! charged bytes the server reports and its limit decisions must match the oracle's.

mod common;

use std::collections::BTreeMap;

use common::*;
use gpu_scheme::uapi::flags::*;
use gpu_scheme::uapi::*;
use gpu_scheme::Limits;
use proptest::prelude::*;
use redox_scheme::scheme::SchemeSync;
use syscall::error::*;

#[derive(Debug, Clone)]
enum Op {
    Create(u64),
    Destroy(usize),
    Dup(usize),
    Close(usize),
    ImportBack(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..5).prop_map(Op::Create),
        2 => any::<usize>().prop_map(Op::Destroy),
        2 => any::<usize>().prop_map(Op::Dup),
        2 => any::<usize>().prop_map(Op::Close),
        1 => any::<usize>().prop_map(Op::ImportBack),
    ]
}

/// One created BO as the oracle sees it: charged while any id (the created one or an import)
/// or any derived handle still refers to it.
struct Charge {
    bytes: u64,
    /// Derived handles open on it.
    handles: Vec<usize>,
}

const LIMIT: u64 = 8 * 4096;

fn charged(oracle: &BTreeMap<u32, Charge>, ids: &BTreeMap<u32, u32>) -> u64 {
    let live = |key: &u32, c: &Charge| !c.handles.is_empty() || ids.values().any(|k| k == key);
    oracle
        .iter()
        .filter(|(k, c)| live(k, c))
        .map(|(_, c)| c.bytes)
        .sum()
}

proptest! {
    #[test]
    fn charges_match_the_oracle(ops in prop::collection::vec(op(), 1..50)) {
        let limits = Limits { vram_bytes: LIMIT, ..Limits::default() };
        let mut h = Harness::with_limits(limits);
        let dev = h.open();
        // Charge key (creating BO id) → state; plus every live id → its charge key.
        let mut oracle: BTreeMap<u32, Charge> = BTreeMap::new();
        let mut ids: BTreeMap<u32, u32> = BTreeMap::new();
        let pick = |ids: &BTreeMap<u32, u32>, i: usize| ids.keys().nth(i % ids.len().max(1)).copied();
        for op in ops {
            match op {
                Op::Create(pages) => {
                    let bytes = pages * 4096;
                    let want_ok = charged(&oracle, &ids) + bytes <= LIMIT;
                    match h.try_bo(dev, bytes, Placement::VRAM) {
                        Ok(id) => {
                            prop_assert!(want_ok, "created beyond the limit");
                            oracle.insert(id.0, Charge { bytes, handles: vec![] });
                            ids.insert(id.0, id.0);
                        }
                        Err(e) => {
                            prop_assert_eq!(e, ENOSPC);
                            prop_assert!(!want_ok, "refused within the limit");
                        }
                    }
                }
                Op::Destroy(i) => {
                    let Some(id) = pick(&ids, i) else { continue };
                    h.call(dev, &Request::BoDestroy(BoId(id))).unwrap();
                    ids.remove(&id);
                }
                Op::Dup(i) => {
                    let Some(id) = pick(&ids, i) else { continue };
                    let handle = h.dup(dev, &format!("bo/{id}")).unwrap();
                    oracle.get_mut(&ids[&id]).unwrap().handles.push(handle);
                }
                Op::Close(i) => {
                    let all: Vec<(u32, usize)> = oracle.iter().flat_map(|(k, c)| c.handles.iter().map(|h| (*k, *h))).collect();
                    let Some(&(key, handle)) = all.get(i % all.len().max(1)) else { continue };
                    h.s.on_close(handle);
                    oracle.get_mut(&key).unwrap().handles.retain(|x| *x != handle);
                }
                Op::ImportBack(i) => {
                    let all: Vec<(u32, usize)> = oracle.iter().flat_map(|(k, c)| c.handles.iter().map(|h| (*k, *h))).collect();
                    let Some(&(key, handle)) = all.get(i % all.len().max(1)) else { continue };
                    let token = h.token(handle);
                    let p = h.call(dev, &Request::Import { kind: ObjectKind::Bo, token: Some(token) }).unwrap();
                    let id = read_args::<gpu_scheme::uapi::wire::ImportArgs>(&p).unwrap().id;
                    ids.insert(id, key);
                }
            }
            let text = h.read(dev);
            let line = format!("client-memory-vram: {} bytes", charged(&oracle, &ids));
            prop_assert!(text.contains(&line), "want {} in\n{}", line, text);
        }
    }
}
