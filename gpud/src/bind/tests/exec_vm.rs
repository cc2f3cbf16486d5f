//! The VM's exec revalidation (`JobVm`): evicted external and VM-private BOs are validated
//! and rebound before the next job; job fences are published on the reservations; and the
//! concurrency stress test (4 VMs sharing 8 external BOs, random binds, execs and forced
//! evictions from 4 threads).

use super::rig::*;
use crate::bind::{BindOp, VmFlags};
use crate::exec::Job;
use crate::hw::MemLocation;
use crate::mem::bo::Placement;
use crate::sync::Usage;
use std::sync::Arc;

const VA: u64 = 0x4_0000_0000;

#[test]
fn exec_rebinds_evicted_external_bo() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r
        .dev
        .bo_create(16 * K4, Placement::Migratable, None)
        .unwrap();
    t.bind(&[BindOp::map(&bo, 0, VA, 16 * K4)]).unwrap();
    t.store(VA + 8, 1).unwrap();
    r.dev.evict(&bo).unwrap();
    assert_eq!(bo.location(), Some(MemLocation::System));
    t.store(VA + 16, 2).unwrap();
    assert_eq!(
        bo.location(),
        Some(MemLocation::Vram),
        "validated before the job"
    );
    assert_eq!(
        (read(&bo, 8), read(&bo, 16)),
        (1, 2),
        "contents moved, write landed"
    );
    let tr = r
        .translate(&t.vm, VA + 16, simgpu::mmu::Access::Write)
        .unwrap();
    assert_eq!(tr.phys, bo_pa(&bo, 16), "PTEs follow the new backing");
    assert!(t.vm.lists_snapshot().1.is_empty(), "evict list drained");
}

#[test]
fn exec_rebinds_evicted_private_bo() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r
        .dev
        .bo_create(4 * K4, Placement::Migratable, Some(&t.vm))
        .unwrap();
    t.bind(&[BindOp::map(&bo, 0, VA, 4 * K4)]).unwrap();
    t.store(VA, 5).unwrap();
    r.dev.evict(&bo).unwrap();
    t.store(VA + 8, 6).unwrap();
    assert_eq!(bo.location(), Some(MemLocation::Vram));
    assert_eq!((read(&bo, 0), read(&bo, 8)), (5, 6));
}

#[test]
fn exec_publishes_job_fence_on_vm_and_extobjs() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(K4);
    t.bind(&[BindOp::map(&bo, 0, VA, K4)]).unwrap();
    let f = t.q.submit(Job::sync_only()).unwrap();
    wait(&f).unwrap();
    let on = |resv: &crate::sync::Resv, u: Usage| resv.fences(u).iter().any(|x| Arc::ptr_eq(x, &f));
    assert!(on(t.vm.resv(), Usage::Bookkeep));
    assert!(
        !on(t.vm.resv(), Usage::Write),
        "no implicit sync inside the VM"
    );
    assert!(on(bo.reservation(), Usage::Write));
}

/// ≥ 4 VMs, ≥ 8 shared external BOs, 4 threads, 5 000+ random binds, execs and evictions:
/// no deadlock, no lost write, lock order clean (the checker panics on an inversion).
#[test]
fn stress_vms_sharing_bos() {
    const VMS: usize = 4;
    const BOS: usize = 8;
    const OPS: usize = 1300;
    const SLOTS: u64 = 8;
    let r = Arc::new(rig_with(32 * MIB, 64 * MIB));
    let bos: Vec<_> = (0..BOS)
        .map(|_| {
            r.dev
                .bo_create(16 * K4, Placement::Migratable, None)
                .unwrap()
        })
        .collect();
    let bos = Arc::new(bos);
    let threads: Vec<_> = (0..VMS)
        .map(|k| {
            let (r, bos) = (r.clone(), bos.clone());
            std::thread::spawn(move || {
                let t = r.vm(VmFlags::empty());
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1));
                // slot -> BO index mapped there
                let mut mapped: Vec<Option<usize>> = vec![None; SLOTS as usize];
                let mut value = (k as u64) << 32;
                for _ in 0..OPS {
                    let slot = rng.below(SLOTS);
                    let va = VA + slot * MIB;
                    match rng.below(10) {
                        0..=2 => {
                            let b = rng.below(BOS as u64) as usize;
                            t.bind(&[BindOp::map(&bos[b], 0, va, 16 * K4)]).unwrap();
                            mapped[slot as usize] = Some(b);
                        }
                        3 => {
                            t.bind(&[BindOp::unmap(va, 16 * K4)]).unwrap();
                            mapped[slot as usize] = None;
                        }
                        4 => {
                            let b = rng.below(BOS as u64) as usize;
                            r.dev.evict(&bos[b]).unwrap();
                        }
                        _ => {
                            let Some(b) = mapped[slot as usize] else {
                                continue;
                            };
                            value += 1;
                            // Each VM owns its own words of every BO.
                            let off = (k as u64) * 512 + slot * 8;
                            t.store(va + off, value).unwrap();
                            assert_eq!(read(&bos[b], off), value, "lost write");
                        }
                    }
                }
                t.vm.with_state(|st| st.gpuvm.check_invariants().unwrap());
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
}

/// A small deterministic generator (seeded per thread).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
