//! Stress of the cross-queue ordering rule: threads binding on their own bind queues of one
//! VM, into shared table pages and private regions they empty whole, with the lock-order
//! checker on (every debug build): no deadlock, no inversion, and the tables end exactly as
//! each thread's last binds say.

use super::rig::*;
use crate::bind::{BindOp, BindSync, VmFlags};
use crate::sync::Syncobj;
use simgpu::mmu::Access;
use std::sync::Arc;

const THREADS: u64 = 3;
const OPS: usize = 1500;
/// Shared 2 MiB regions (every thread writes its own entries of their leaf tables), then one
/// private region per thread.
const SHARED: u64 = 3;
const SLOTS: u64 = 4;
const BASE: u64 = 0x4000_0000;

/// The VA of `slot` of thread `k` in `region` (shared regions interleave the threads' pages).
fn va(k: u64, region: u64, slot: u64) -> u64 {
    if region < SHARED {
        BASE + region * 2 * MIB + (slot * THREADS + k) * K4
    } else {
        BASE + (SHARED + k) * 2 * MIB + slot * K4
    }
}

/// Per slot of one thread: the index of the BO mapped there, if any.
type Slots = Vec<Option<usize>>;

fn one_thread(r: &Rig, t: &TestVm, k: u64) -> (Vec<Arc<crate::mem::bo::Bo>>, Slots) {
    let q = r.dev.bind_queue_create(&t.vm).unwrap();
    let bos: Vec<_> = (0..SLOTS).map(|_| r.bo(K4)).collect();
    let mut state: Slots = vec![None; ((SHARED + 1) * SLOTS) as usize];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (k + 1);
    let mut last = None;
    for i in 0..OPS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let region = rng % (SHARED + 1);
        let slot = (rng >> 8) % SLOTS;
        let b = ((rng >> 16) % SLOTS) as usize;
        let idx = (region * SLOTS + slot) as usize;
        let op = if region == SHARED && (rng >> 24) % 4 == 0 {
            // Empty the private region whole: its leaf table is dropped unwritten.
            for s in 0..SLOTS {
                state[(SHARED * SLOTS + s) as usize] = None;
            }
            BindOp::unmap(va(k, SHARED, 0), 2 * MIB)
        } else if state[idx].is_some() && (rng >> 24) % 2 == 0 {
            state[idx] = None;
            BindOp::unmap(va(k, region, slot), K4)
        } else {
            state[idx] = Some(b);
            BindOp::map(&bos[b], 0, va(k, region, slot), K4)
        };
        let out = BindSync::Signal(Syncobj::new(), None);
        let f = t.vm.bind(Some(&q), &[op], &[out]).unwrap();
        if i % 32 == 31 {
            wait(&f).unwrap();
        }
        last = Some(f);
    }
    if let Some(f) = last {
        wait(&f).unwrap();
    }
    (bos, state)
}

#[test]
fn stress_bind_queues_sharing_table_pages() {
    let r = Arc::new(rig());
    let t = Arc::new(r.vm(VmFlags::empty()));
    let threads: Vec<_> = (0..THREADS)
        .map(|k| {
            let (r, t) = (r.clone(), t.clone());
            std::thread::spawn(move || one_thread(&r, &t, k))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    for (k, (bos, state)) in results.iter().enumerate() {
        for region in 0..=SHARED {
            for slot in 0..SLOTS {
                let a = va(k as u64, region, slot);
                let got = r.translate(&t.vm, a, Access::Read).map(|x| x.phys);
                let want = state[(region * SLOTS + slot) as usize].map(|b| bo_pa(&bos[b], 0));
                assert_eq!(got, want, "thread {k}, VA {a:#x}");
            }
        }
    }
    // And through the GPU: a store through a mapping left at the end reaches its BO.
    let (bos, state) = &results[0];
    if let Some((idx, b)) = state
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.map(|b| (i, b)))
    {
        let (region, slot) = (idx as u64 / SLOTS, idx as u64 % SLOTS);
        t.store(va(0, region, slot) + 8, 0x5eed).unwrap();
        assert_eq!(read(&bos[b], 8), 0x5eed);
    }
}
