//! A client's batch cannot reach driver memory: fence pages live in the global GTT, which
//! only the ring's own commands reach, so a batch that writes every driver-owned page it could
//! know of neither completes its own job early nor touches another queue's completion. The
//! top 4 GiB of a VM, where fence pages once were mapped (and which was reserved for them), is
//! now the client's like any other VA: the attacker maps its own memory there, and its forged
//! writes land in that memory and nowhere else.

use super::rig::*;
use crate::bind::{BindOp, VmFlags, VA_SPACE};
use crate::exec::Job;
use crate::hw::cmd::{CommandStream, SemOp, Width};
use crate::hw::{Engine, MemLocation};
use crate::mem::copy::KernelMap;
use crate::types::{GpuVa, PhysAddr};

const VA: u64 = 0x8_0000_0000;
/// The data page of the attacker's BO: marker at +0, gate at +8, after-gate at +16.
const DATA: u64 = VA + K4;
/// Where the driver once reserved the top 4 GiB of every VM (its fence pages were there).
const OLD_RESERVED: u64 = VA_SPACE - (1 << 32);
/// Pages of that region the attempts write.
const OLD_PAGES: u64 = 16;
/// A seqno far beyond anything the queues reach.
const FORGED: u64 = u64::MAX / 2;

/// The ways a batch could try to forge a completion.
fn attempts(fence_pas: &[u64]) -> Vec<(&'static str, CommandStream)> {
    // Where a VM's first queue had its fence page when fence pages were mapped in VMs.
    let mut own = CommandStream::new();
    own.store_qword(GpuVa(OLD_RESERVED), FORGED);
    let mut ppgtt = CommandStream::new();
    for i in 0..OLD_PAGES {
        ppgtt.store_qword(GpuVa(OLD_RESERVED + i * K4), FORGED);
    }
    let mut fill = CommandStream::new();
    fill.fill(GpuVa(OLD_RESERVED), OLD_PAGES * K4, 0x7FFF_FFFF);
    let mut ggtt = CommandStream::new();
    for &pa in fence_pas {
        ggtt.ggtt_store_qword(KernelMap::va(MemLocation::System, PhysAddr(pa)), FORGED);
    }
    let mut kernel_va = CommandStream::new();
    for &pa in fence_pas {
        kernel_va.store_qword(KernelMap::va(MemLocation::System, PhysAddr(pa)), FORGED);
    }
    vec![
        ("a store to its own old fence slot", own),
        ("stores to the reserved region", ppgtt),
        ("a fill of the reserved region", fill),
        ("GGTT-flagged stores to every fence page", ggtt),
        ("stores to the fence pages' kernel addresses", kernel_va),
    ]
}

#[test]
fn a_batch_cannot_forge_its_own_or_another_queues_completion() {
    let r = rig();
    let victims: Vec<_> = (0..2).map(|_| r.vm(VmFlags::empty())).collect();
    let victim_bo = r.bo(K4);
    for v in &victims {
        v.bind(&[BindOp::map(&victim_bo, 0, VA, K4)]).unwrap();
    }
    let mut fence_pas: Vec<u64> = victims
        .iter()
        .map(|v| v.q.fence_page().unwrap().pa.get())
        .collect();
    // The attackers' queues are created up front so every fence page is known.
    let attackers: Vec<_> = (0..5).map(|_| r.vm(VmFlags::empty())).collect();
    fence_pas.extend(attackers.iter().map(|a| a.q.fence_page().unwrap().pa.get()));
    for (i, (attacker, (what, forge))) in attackers.iter().zip(attempts(&fence_pas)).enumerate() {
        let bo = r.sys_bo(2 * K4);
        attacker.bind(&[BindOp::map(&bo, 0, VA, 2 * K4)]).unwrap();
        let top = r.sys_bo(OLD_PAGES * K4);
        attacker
            .bind(&[BindOp::map(&top, 0, OLD_RESERVED, OLD_PAGES * K4)])
            .unwrap();
        let mut batch = forge;
        batch
            .store_qword(GpuVa(DATA), 1)
            .semaphore_wait(GpuVa(DATA + 8), SemOp::Eq, 1, Width::U64)
            .store_qword(GpuVa(DATA + 16), 1)
            .batch_end();
        bo.write(0, &batch.to_bytes()).unwrap();
        let fence = attacker
            .q
            .submit(Job::batch(GpuVa(VA), batch.len() as u32))
            .unwrap();
        if i < 3 {
            // Writes to the old reserved region land in the attacker's own BO mapped there:
            // the batch reaches its gate, and its job is not retired while it waits there.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while read(&bo, K4) != 1 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what}: reached the gate"
                );
                std::thread::yield_now();
            }
            assert_ne!(
                read(&top, 0),
                0,
                "{what}: the forged write landed in its BO"
            );
            assert!(
                !fence.is_signalled(),
                "{what}: the job was retired as done while it was still blocked on its gate"
            );
            write(&bo, K4 + 8, 1);
            wait(&fence).expect("the gate opened: the job completes");
            assert_eq!(read(&bo, K4 + 16), 1, "{what}: ran past its gate");
            continue;
        }
        let outcome = wait(&fence);
        assert_eq!(read(&bo, K4 + 8), 0, "the gate never opened");
        assert!(
            outcome.is_err(),
            "{what}: the job was retired as done while it was still blocked on its gate"
        );
        assert_eq!(
            read(&bo, K4),
            0,
            "{what}: the batch ran past its forged writes"
        );
        assert_eq!(read(&top, 0), 0, "{what}: nothing landed in its BO");
    }
    // Every other queue still retires exactly its own jobs.
    for (i, v) in victims.iter().enumerate() {
        v.store(VA + 8 * i as u64, 0x5EC0 + i as u64).unwrap();
        assert_eq!(read(&victim_bo, 8 * i as u64), 0x5EC0 + i as u64);
        let seen = r
            .dev
            .hw()
            .dma()
            .read_u64(v.q.fence_page().unwrap().pa)
            .unwrap();
        assert_eq!(seen, 1, "victim {i}'s fence page holds its own seqno");
    }
}

#[test]
fn exec_queue_churn_leaves_no_memory_behind() {
    let r = rig();
    let vm = r.dev.vm_create(VmFlags::empty()).unwrap();
    let base = r.stats();
    for i in 0..64 {
        let q = r.dev.exec_queue_create(&vm, Engine::Copy).unwrap();
        wait(&q.submit(Job::sync_only()).unwrap()).unwrap();
        drop(q);
        assert_eq!(r.stats(), base, "after {} create/destroy cycles", i + 1);
    }
}
