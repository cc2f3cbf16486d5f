//! Eviction checked against an LRU oracle, and stressed from several threads.

use super::bo::{Bo, Placement};
use super::manager::{EvictReport, MemError};
use super::shm::MapBudget;
use super::tests::{contents, pattern, rig, shared_rig, Rig, VRAM};
use crate::hw::pte::MemLocation;
use crate::vm::vm_bo::GpuBo;
use proptest::prelude::*;
use rustix::fd::OwnedFd;
use std::sync::Arc;

const UNIT: u64 = 64 << 10;

#[derive(Debug, Clone)]
enum Act {
    Create { units: u64, vram_only: bool },
    Touch(usize),
    Pin(usize),
    Unpin(usize),
    Drop(usize),
    Validate(usize),
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => (prop::sample::select(vec![1u64, 2, 4, 8, 16, 32]), prop::bool::weighted(0.2))
            .prop_map(|(units, vram_only)| Act::Create { units, vram_only }),
        2 => any::<usize>().prop_map(Act::Touch),
        1 => any::<usize>().prop_map(Act::Pin),
        1 => any::<usize>().prop_map(Act::Unpin),
        1 => any::<usize>().prop_map(Act::Drop),
        2 => any::<usize>().prop_map(Act::Validate),
    ]
}

/// The model of one live BO.
struct Model {
    bo: Arc<Bo>,
    seed: u8,
    last_use: u64,
}

/// Candidates (unpinned, migratable, in VRAM) in LRU order, excluding `keep`.
fn candidates(models: &[Model], keep: Option<usize>) -> Vec<u64> {
    let mut c: Vec<(u64, u64)> = models
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            Some(*i) != keep
                && m.bo.placement() == Placement::Migratable
                && m.bo.pin_count() == 0
                && m.bo.location() == Some(MemLocation::Vram)
        })
        .map(|(_, m)| (m.last_use, m.bo.id().0))
        .collect();
    c.sort();
    c.into_iter().map(|(_, id)| id).collect()
}

fn check_evictions(
    before: &[u64],
    report: &EvictReport,
    result_no_space: bool,
    after: &[u64],
) -> Result<(), TestCaseError> {
    let evicted: Vec<u64> = report.evicted.iter().map(|b| b.0).collect();
    prop_assert!(evicted.len() <= before.len());
    prop_assert_eq!(
        &evicted[..],
        &before[..evicted.len()],
        "not least recently used first"
    );
    if result_no_space {
        prop_assert!(after.is_empty(), "NoSpace while {after:?} were evictable");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simgpu::testkit::proptest_cases(24)))]

    #[test]
    fn eviction_follows_lru_and_preserves_every_bo(acts in prop::collection::vec(act(), 1..40)) {
        let r = rig();
        let m = r.manager();
        let mut models: Vec<Model> = Vec::new();
        let mut clock = 1u64;
        let mut seed = 0u8;
        for a in acts {
            let pick = |i: usize| (!models.is_empty()).then(|| i % models.len());
            match a {
                Act::Create { units, vram_only } => {
                    let placement = if vram_only { Placement::Vram } else { Placement::Migratable };
                    let before = candidates(&models, None);
                    let res = m.create_bo(units * UNIT, placement, None);
                    let after = candidates(&models, None);
                    match res {
                        Ok((bo, report)) => {
                            check_evictions(&before, &report, false, &after)?;
                            seed = seed.wrapping_add(1);
                            bo.write(0, &pattern(bo.size() as usize, seed)).unwrap();
                            models.push(Model { bo, seed, last_use: clock });
                            clock += 1;
                        }
                        Err(MemError::NoSpace { .. }) => {
                            prop_assert!(vram_only);
                            prop_assert!(after.is_empty());
                        }
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Act::Touch(i) => if let Some(i) = pick(i) {
                    m.touch(&models[i].bo);
                    models[i].last_use = clock;
                    clock += 1;
                },
                Act::Pin(i) => if let Some(i) = pick(i) { models[i].bo.pin() },
                Act::Unpin(i) => if let Some(i) = pick(i) { models[i].bo.unpin() },
                Act::Drop(i) => if let Some(i) = pick(i) { models.remove(i); },
                Act::Validate(i) => if let Some(i) = pick(i) {
                    let before = candidates(&models, Some(i));
                    let was = models[i].bo.location();
                    let pinned = models[i].bo.pin_count() > 0;
                    let mut report = EvictReport::default();
                    let res = m.validate(&models[i].bo, None, &mut report);
                    let after = candidates(&models, Some(i));
                    // No VRAM to be had: the BO stays in system memory and works from there.
                    let no_space = res == Ok(false)
                        && was == Some(MemLocation::System)
                        && !pinned
                        && models[i].bo.placement() == Placement::Migratable;
                    prop_assert!(res.is_ok(), "{res:?}");
                    check_evictions(&before, &report, no_space, &after)?;
                    if res.is_ok() {
                        models[i].last_use = clock;
                        clock += 1;
                        if pinned {
                            // A pinned BO never moves, not even back to VRAM.
                            prop_assert_eq!(models[i].bo.location(), was);
                        } else if models[i].bo.placement() == Placement::Migratable && !no_space {
                            prop_assert_eq!(models[i].bo.location(), Some(MemLocation::Vram));
                        }
                    }
                },
            }
            for md in &models {
                prop_assert_eq!(contents(&md.bo), pattern(md.bo.size() as usize, md.seed));
            }
            let in_vram: u64 = models.iter().filter(|md| md.bo.location() == Some(MemLocation::Vram)).map(|md| md.bo.size()).sum();
            prop_assert_eq!(r.pools.vram.lock().free_bytes() + in_vram, VRAM);
        }
    }
}

/// Threads create, validate and verify BOs at once while VRAM is too small for all of them:
/// every BO keeps its contents, nothing deadlocks, and VRAM accounting adds up at the end.
#[test]
fn stress_concurrent_eviction_and_validation() {
    stress(rig(), None);
}

/// The same on shared windows, where every third BO is also handed out for a CPU mapping:
/// mapped BOs never move and their memory objects always show their contents, and every
/// live backing has exactly one object at the end.
#[test]
fn stress_concurrent_eviction_and_validation_with_cpu_mappings() {
    let budget = MapBudget::new(1 << 12);
    stress(shared_rig(budget.clone()), Some(&budget));
    assert_eq!(budget.used(), 0, "every object went with its backing");
}

/// With `budget` (a shared rig) every third BO is also CPU-mapped.
fn stress(r: Rig, budget: Option<&Arc<MapBudget>>) {
    let map_some = budget.is_some();
    let m = Arc::new(r.manager());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut mine: Vec<(Arc<Bo>, u8, Option<OwnedFd>)> = Vec::new();
                for i in 0..12u8 {
                    let seed = t * 50 + i;
                    let (bo, _) = m.create_bo(512 << 10, Placement::Migratable, None).unwrap();
                    bo.write(0, &pattern(512 << 10, seed)).unwrap();
                    let fd = (map_some && i % 3 == 0).then(|| bo.cpu_memory().unwrap());
                    let at = fd.as_ref().map(|_| (bo.location(), bo.segments()));
                    mine.push((bo, seed, fd));
                    let (v, _, _) = &mine[(i as usize * 7) % mine.len()];
                    let mut report = EvictReport::default();
                    match m.validate(v, None, &mut report) {
                        Ok(_) | Err(MemError::NoSpace { .. }) => {}
                        Err(e) => panic!("validate: {e}"),
                    }
                    if let (Some(at), Some((bo, _, _))) = (at, mine.last()) {
                        assert_eq!((bo.location(), bo.segments()), at, "a mapped BO moved");
                    }
                    if mine.len() > 6 {
                        mine.remove(0);
                    }
                }
                for (bo, seed, fd) in &mine {
                    let want = pattern(512 << 10, *seed);
                    assert_eq!(contents(bo), want);
                    if let Some(fd) = fd {
                        let mut got = vec![0u8; want.len()];
                        assert_eq!(rustix::io::pread(fd, &mut got, 0).unwrap(), want.len());
                        assert_eq!(got, want, "the mapping shows the BO");
                    }
                }
                mine
            })
        })
        .collect();
    let live: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let in_vram: u64 = live
        .iter()
        .filter(|(bo, _, _)| bo.location() == Some(MemLocation::Vram))
        .map(|(bo, _, _)| bo.size())
        .sum();
    assert_eq!(r.pools.vram.lock().free_bytes() + in_vram, VRAM);
    if let Some(budget) = budget {
        assert_eq!(r.pools.shared_objects(), live.len());
        assert_eq!(
            budget.used(),
            live.len() as u64,
            "one piece per 512 KiB backing"
        );
    }
}
