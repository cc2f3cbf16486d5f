//! Long-running queue rules.

use super::harness::*;
use crate::exec::{ErrorKind, ExecError, Job, OutSync, QueueMode, SchedConfig};
use crate::hw::Engine;
use crate::sync::{Fence, FenceContext, Syncobj};

#[test]
fn long_running_queues_refuse_dma_fence_out_syncs() {
    let rig = Rig::new(1);
    let q = rig
        .sched
        .create_queue(rig.config(0, Engine::Compute, QueueMode::LongRunning))
        .unwrap();
    let job = Job::commands(store(0, 1)).with_out_sync(OutSync::Binary(Syncobj::new()));
    let err = q.submit(job).unwrap_err();
    assert!(matches!(err, ExecError::LrOutSync { count: 1, .. }));
    assert_eq!(err.kind(), ErrorKind::NotSupported);
    // User fences are how LR work reports completion.
    let f = q
        .submit(Job::commands(store(0, 1)).with_user_fence(data(8), 3))
        .unwrap();
    assert_eq!(wait(&f), Ok(()));
    assert_eq!(rig.read(0, 8), 3);
}

#[test]
fn a_full_long_running_ring_would_block_and_drains() {
    // A 256-byte ring holds 63 dwords: five 12-dword jobs fit, the sixth does not.
    let cfg = SchedConfig {
        ring_bytes: 256,
        ..SchedConfig::default()
    };
    let rig = Rig::with_config(1, cfg);
    let q = rig
        .sched
        .create_queue(rig.config(0, Engine::Copy, QueueMode::LongRunning))
        .unwrap();
    let gate = Fence::new(FenceContext::alloc(), 1);
    let mut fences = Vec::new();
    for k in 0..5u64 {
        let job = Job::commands(store(8 * k, k + 1)).with_deps([gate.clone()]);
        fences.push(q.submit(job).unwrap());
    }
    let err = q.submit(Job::commands(store(64, 9))).unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::WouldBlock {
                need: 12,
                free: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    gate.signal().unwrap();
    for f in &fences {
        assert_eq!(wait(f), Ok(()));
    }
    let f = q.submit(Job::commands(store(64, 9))).unwrap();
    assert_eq!(wait(&f), Ok(()));
    assert_eq!(rig.read(0, 64), 9);
}

#[test]
fn dma_fence_queues_queue_jobs_beyond_the_ring() {
    let cfg = SchedConfig {
        ring_bytes: 256,
        ..SchedConfig::default()
    };
    let rig = Rig::with_config(1, cfg);
    let q = rig.queue(0, Engine::Copy, NEVER);
    let fences: Vec<_> = (0..40u64)
        .map(|k| q.submit(Job::commands(store(0, k))).unwrap())
        .collect();
    for f in &fences {
        assert_eq!(wait(f), Ok(()));
    }
    assert_eq!(rig.read(0, 0), 39);
}
