//! Benchmarks of the synchronization core (`gpud::sync`): wake latency, multi-object
//! locking with and without contention, and a few per-operation costs.
//!
//! Owns: the `sync` group. Must not: assert on timings (it only measures).

use crate::report::{mean_ns, median_ns, Report};
use gpud::sync::{
    CompareOp, Exec, ExecFlags, Fence, FenceContext, FenceMemory, Resv, Usage, UserFence, WaitQueue,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const WAKE_SAMPLES: usize = 400;
/// Time given to the waiter to block before the signal.
const SETTLE: Duration = Duration::from_micros(200);

/// The `sync` group.
pub fn run() -> Report {
    let mut r = Report::new("sync");
    r.push("signal_to_wake_ns", signal_to_wake_ns());
    r.push(
        "user_fence_notify_to_wake_ns",
        user_fence_notify_to_wake_ns(),
    );
    r.push("exec_lock_64_uncontended_ns", exec_lock_64_uncontended_ns());
    r.push(
        "exec_lock_contended_ops_per_s",
        exec_lock_contended_ops_per_s(),
    );
    r.push("fence_create_signal_ns", fence_create_signal_ns());
    r.push("resv_add_fence_ns", resv_add_fence_ns());
    r
}

/// Median time from `signal()` on this thread to a waiter blocked in `wait()` running.
fn signal_to_wake_ns() -> u64 {
    let mut samples = Vec::with_capacity(WAKE_SAMPLES);
    for _ in 0..WAKE_SAMPLES {
        let fence = Fence::new(FenceContext::alloc(), 1);
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let fence = fence.clone();
            std::thread::spawn(move || {
                let _ = fence.wait(None);
                let _ = tx.send(Instant::now());
            })
        };
        std::thread::sleep(SETTLE);
        let start = Instant::now();
        let _ = fence.signal();
        if let Ok(woke) = rx.recv() {
            samples.push(woke.saturating_duration_since(start).as_nanos() as u64);
        }
        let _ = waiter.join();
    }
    median_ns(&mut samples)
}

/// A single fence word, as the interrupt path would update it.
struct Word(AtomicU64);

impl FenceMemory for Word {
    type Addr = u64;
    fn read_u64(&self, _addr: u64) -> Option<u64> {
        Some(self.0.load(Ordering::Acquire))
    }
}

/// Median time from write + `notify_all()` to a user-fence waiter running.
fn user_fence_notify_to_wake_ns() -> u64 {
    let mut samples = Vec::with_capacity(WAKE_SAMPLES);
    for _ in 0..WAKE_SAMPLES {
        let word = Arc::new(Word(AtomicU64::new(0)));
        let queue = Arc::new(WaitQueue::new());
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let (word, queue) = (word.clone(), queue.clone());
            std::thread::spawn(move || {
                let _ = UserFence::new(0, CompareOp::Gte, 1).wait(&*word, &queue, None);
                let _ = tx.send(Instant::now());
            })
        };
        std::thread::sleep(SETTLE);
        let start = Instant::now();
        word.0.store(1, Ordering::Release);
        queue.notify_all();
        if let Ok(woke) = rx.recv() {
            samples.push(woke.saturating_duration_since(start).as_nanos() as u64);
        }
        let _ = waiter.join();
    }
    median_ns(&mut samples)
}

/// Mean time to lock 64 free objects through the exec helper and unlock them.
fn exec_lock_64_uncontended_ns() -> f64 {
    let objs: Vec<_> = (0..64).map(|_| Resv::new()).collect();
    mean_ns(20_000, || {
        let mut exec = Exec::new(ExecFlags::empty());
        let _ = exec.run(|exec| objs.iter().try_for_each(|o| exec.prepare_obj(o, 1)));
        drop(exec);
    })
}

/// Exec transactions per second: 4 threads, each locking 8 of 32 shared objects (random,
/// overlapping) and adding a fence to each, for about one second.
fn exec_lock_contended_ops_per_s() -> f64 {
    const THREADS: usize = 4;
    const OBJECTS: usize = 32;
    const SET: usize = 8;
    let objs: Arc<Vec<_>> = Arc::new((0..OBJECTS).map(|_| Resv::new()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (objs, stop) = (objs.clone(), stop.clone());
            std::thread::spawn(move || {
                let context = FenceContext::alloc();
                let mut seed = 0x2545_F491_4F6C_DD1D_u64 ^ (t as u64 + 1);
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let set: Vec<usize> = (0..SET)
                        .map(|_| {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            (seed % OBJECTS as u64) as usize
                        })
                        .collect();
                    let mut exec = Exec::new(ExecFlags::IGNORE_DUPLICATES);
                    let locked = exec
                        .run(|exec| set.iter().try_for_each(|&i| exec.prepare_obj(&objs[i], 1)));
                    if locked.is_ok() {
                        let fence = Fence::new(context, ops + 1);
                        let _ = exec.add_fence_to_all(&fence, Usage::Write);
                        let _ = fence.signal();
                        ops += 1;
                    }
                }
                ops
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    ops as f64 / start.elapsed().as_secs_f64()
}

/// Mean cost of creating and signalling a fence nobody waits on.
fn fence_create_signal_ns() -> f64 {
    let context = FenceContext::alloc();
    let mut seqno = 0;
    mean_ns(200_000, || {
        seqno += 1;
        let _ = Fence::new(context, seqno).signal();
    })
}

/// Mean cost of adding a same-context fence to a locked object (replacement path).
fn resv_add_fence_ns() -> f64 {
    let resv = Resv::new();
    let mut exec = Exec::new(ExecFlags::empty());
    let _ = exec.prepare_obj(&resv, 1);
    let context = FenceContext::alloc();
    let fences: Vec<_> = (1..=200_000).map(|s| Fence::new(context, s)).collect();
    let mut next = fences.iter();
    mean_ns(fences.len() as u64, || {
        if let Some(fence) = next.next() {
            let _ = exec.add_fence(&resv, fence.clone(), Usage::Read);
        }
    })
}
