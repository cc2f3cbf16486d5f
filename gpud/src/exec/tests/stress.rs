//! Many jobs on several queues of both engines with random dependencies.

use super::harness::*;
use crate::exec::{ExecQueue, Job};
use crate::hw::Engine;
use crate::sync::{CallbackAdded, Fence, FenceContext};
use parking_lot::Mutex;
use std::sync::Arc;

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

struct Record {
    queue: usize,
    seqno: u64,
    deps_done: bool,
}

#[test]
fn random_dependencies_on_many_queues_all_signal_in_order() {
    const JOBS: usize = 400;
    let rig = Rig::new(2);
    let queues: Vec<ExecQueue> = [
        (0, Engine::Copy),
        (1, Engine::Copy),
        (0, Engine::Compute),
        (1, Engine::Compute),
        (0, Engine::Copy),
    ]
    .iter()
    .map(|&(ctx, e)| rig.queue(ctx, e, NEVER))
    .collect();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut fences: Vec<Arc<Fence>> = Vec::new();
    let mut gates = Vec::new();
    let mut last = vec![0u64; queues.len()];
    for k in 0..JOBS {
        let qi = rng.below(queues.len());
        let mut deps: Vec<Arc<Fence>> = (0..rng.below(3))
            .filter(|_| !fences.is_empty())
            .map(|_| fences[rng.below(fences.len())].clone())
            .collect();
        if rng.below(8) == 0 {
            let gate = Fence::new(FenceContext::alloc(), 1);
            gates.push(gate.clone());
            deps.push(gate);
        }
        let value = k as u64 + 1;
        let job = Job::commands(store(8 * qi as u64, value)).with_deps(deps.clone());
        let f = queues[qi].submit(job).unwrap();
        last[qi] = value;
        let l = log.clone();
        f.on_signal(move |f| {
            let deps_done = deps.iter().all(|d| d.is_signalled());
            l.lock().push(Record {
                queue: qi,
                seqno: f.seqno(),
                deps_done,
            });
        });
        fences.push(f);
        // Release CPU gates now and then, from another thread, while jobs keep coming.
        if k % 50 == 49 {
            let batch: Vec<_> = std::mem::take(&mut gates);
            std::thread::spawn(move || {
                batch.iter().for_each(|g| {
                    let _ = g.signal();
                })
            });
        }
    }
    gates.iter().for_each(|g| {
        let _ = g.signal();
    });
    for f in &fences {
        assert_eq!(wait(f), Ok(()));
    }
    // A waiter may wake before the signalling thread ran the fence's callbacks.
    let deadline = std::time::Instant::now() + PATIENCE;
    while log.lock().len() < JOBS && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let log = log.lock();
    assert_eq!(log.len(), JOBS);
    assert!(
        log.iter().all(|r| r.deps_done),
        "a job completed before a dependency"
    );
    for qi in 0..queues.len() {
        let seqnos: Vec<u64> = log
            .iter()
            .filter(|r| r.queue == qi)
            .map(|r| r.seqno)
            .collect();
        assert!(
            seqnos.windows(2).all(|w| w[0] < w[1]),
            "queue {qi} out of order: {seqnos:?}"
        );
        let ctx = [0, 1, 0, 1, 0][qi];
        // The last job of each queue wrote last (every queue has its own slot).
        if last[qi] != 0 {
            assert_eq!(rig.read(ctx, 8 * qi as u64), last[qi]);
        }
    }
}

#[test]
fn many_threads_submitting_to_shared_queues_keep_per_queue_order() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 100;
    let rig = Rig::new(1);
    let queues: Vec<ExecQueue> = [Engine::Copy, Engine::Compute, Engine::Copy]
        .into_iter()
        .map(|e| rig.queue(0, e, NEVER))
        .collect();
    let recent: Mutex<Vec<Arc<Fence>>> = Mutex::new(Vec::new());
    // (queue, seqno, whether the callback ran from the signal itself). A fence that had
    // already signalled when its callback was added says nothing about signal order: its
    // entry is logged by the submitting thread, racing the scheduler's later signals.
    let signalled: Arc<Mutex<Vec<(usize, u64, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let all: Mutex<Vec<Arc<Fence>>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (queues, recent, signalled, all) = (&queues, &recent, &signalled, &all);
            s.spawn(move || {
                let mut rng = Rng(0x1234_5678 + t as u64);
                for k in 0..PER_THREAD {
                    let qi = rng.below(queues.len());
                    let deps: Vec<Arc<Fence>> = {
                        let r = recent.lock();
                        (0..rng.below(2))
                            .filter(|_| !r.is_empty())
                            .map(|_| r[rng.below(r.len())].clone())
                            .collect()
                    };
                    let slot = 8 * (t * PER_THREAD + k) as u64;
                    let job = Job::commands(store(slot, 1)).with_deps(deps);
                    let f = queues[qi].submit(job).unwrap();
                    let l = signalled.clone();
                    let added =
                        f.add_callback(Box::new(move |f| l.lock().push((qi, f.seqno(), true))));
                    if matches!(added, CallbackAdded::AlreadySignalled) {
                        signalled.lock().push((qi, f.seqno(), false));
                    }
                    let mut r = recent.lock();
                    if r.len() >= 16 {
                        r.remove(0);
                    }
                    r.push(f.clone());
                    all.lock().push(f);
                }
            });
        }
    });
    for f in all.lock().iter() {
        assert_eq!(wait(f), Ok(()));
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    while signalled.lock().len() < THREADS * PER_THREAD && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let log = signalled.lock();
    assert_eq!(log.len(), THREADS * PER_THREAD);
    for qi in 0..queues.len() {
        // Seqnos are dense per queue...
        let mut seqnos: Vec<u64> = log.iter().filter(|r| r.0 == qi).map(|r| r.1).collect();
        seqnos.sort_unstable();
        let want: Vec<u64> = (1..=seqnos.len() as u64).collect();
        assert_eq!(seqnos, want, "queue {qi}");
        // ...and the signals observed as they happened came in seqno order.
        let observed: Vec<u64> = log
            .iter()
            .filter(|r| r.0 == qi && r.2)
            .map(|r| r.1)
            .collect();
        assert!(
            observed.windows(2).all(|w| w[0] < w[1]),
            "queue {qi} signalled out of order: {observed:?}"
        );
    }
    for i in 0..(THREADS * PER_THREAD) as u64 {
        assert_eq!(rig.read(0, 8 * i), 1, "job writing slot {i} did not run");
    }
}
