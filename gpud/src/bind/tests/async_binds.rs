//! Async binds: bind queues (in order within one, independent across queues unless they
//! write the same entry or a table page a pending bind of the other creates), in/out syncobjs, timeline points, user fences, zero-op binds,
//! the EBUSY rule, LR sync rules and banning after an async failure.

use super::rig::*;
use crate::bind::{BindOp, BindSync, ErrorClass, VmFlags};
use crate::sync::{Fence, FenceContext, FenceFault, Syncobj};
use crate::types::GpuVa;
use simgpu::mmu::Access;
use std::sync::Arc;
use std::time::Duration;

const VA: u64 = 0x3_0000_0000;
const OTHER: u64 = 0x7_0000_0000;

/// A CPU-controlled fence behind a binary syncobj.
fn gate() -> (Arc<Fence>, Arc<Syncobj>) {
    let f = Fence::new(FenceContext::alloc(), 1);
    let s = Syncobj::new();
    s.replace_fence(Some(f.clone()));
    (f, s)
}

fn settle() {
    std::thread::sleep(Duration::from_millis(20));
}

#[test]
fn async_bind_waits_for_in_sync_then_signals_out_sync() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(4 * K4);
    let (g, wait_on) = gate();
    let out = Syncobj::new();
    let f = t
        .bind_async(
            &[BindOp::map(&bo, 0, VA, 4 * K4)],
            &[
                BindSync::Wait(wait_on, None),
                BindSync::Signal(out.clone(), None),
            ],
        )
        .unwrap();
    settle();
    assert!(!f.is_signalled(), "the job waits for its in-sync");
    assert!(Arc::ptr_eq(&out.fence().unwrap(), &f));
    g.signal().unwrap();
    wait(&f).unwrap();
    assert!(out.is_signalled());
    t.store(VA + 8, 5).unwrap();
    assert_eq!(read(&bo, 8), 5);
}

#[test]
fn timeline_out_point_and_in_point() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(K4);
    let tl = Syncobj::new();
    let f = t
        .bind_async(
            &[BindOp::map(&bo, 0, VA, K4)],
            &[BindSync::Signal(tl.clone(), Some(3))],
        )
        .unwrap();
    wait(&f).unwrap();
    assert_eq!(tl.last_submitted_point(), 3);
    // Wait on that point in a later bind; a point never submitted is invalid.
    let f2 = t
        .bind_async(
            &[BindOp::unmap(VA, K4)],
            &[BindSync::Wait(tl.clone(), Some(3))],
        )
        .unwrap();
    wait(&f2).unwrap();
    let e = t
        .bind_async(
            &[BindOp::unmap(VA, K4)],
            &[BindSync::Wait(tl.clone(), Some(9))],
        )
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Invalid);
    let e = t
        .bind_async(&[BindOp::unmap(VA, K4)], &[BindSync::Signal(tl, Some(0))])
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Invalid);
}

#[test]
fn in_order_within_a_queue() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (a, b) = (r.bo(K4), r.bo(K4));
    let (g, s) = gate();
    let f1 = t
        .bind_async(&[BindOp::map(&a, 0, VA, K4)], &[BindSync::Wait(s, None)])
        .unwrap();
    let out = Syncobj::new();
    let f2 = t
        .bind_async(
            &[BindOp::map(&b, 0, OTHER, K4)],
            &[BindSync::Signal(out, None)],
        )
        .unwrap();
    settle();
    assert!(
        !f1.is_signalled() && !f2.is_signalled(),
        "job 2 waits behind job 1"
    );
    g.signal().unwrap();
    wait(&f2).unwrap();
    assert!(f1.is_signalled());
}

/// IGT's addresses for the bind-execqueues-* scenarios: the first bind, then the next pages.
const IGT_ADDR: u64 = 0x1a0000;

/// The cork of the bind-execqueues-* scenarios: the initial bind of `bo` at [`IGT_ADDR`]
/// (waited for), then a spinner on the VM's exec queue that ends when the CPU writes 1 to
/// the first qword of `bo`. Returns the spinner's fence behind a syncobj.
fn cork(t: &TestVm, bo: &Arc<crate::mem::bo::Bo>) -> (Arc<Fence>, Arc<Syncobj>) {
    use crate::hw::cmd::{CommandStream, SemOp, Width};
    wait(&t.bind(&[BindOp::map(bo, 0, IGT_ADDR, K4)]).unwrap()).unwrap();
    let mut c = CommandStream::new();
    c.semaphore_wait(GpuVa(IGT_ADDR), SemOp::Gte, 1, Width::U64);
    let spin =
        t.q.submit(crate::exec::Job::commands(c.dwords().to_vec()))
            .unwrap();
    let s = Syncobj::new();
    s.replace_fence(Some(spin.clone()));
    settle();
    assert!(!spin.is_signalled(), "the spinner runs");
    (spin, s)
}

/// bind-execqueues-independent, with IGT's addresses: bind at 0x1a0000 and wait; a spinner
/// on exec queue 0; a bind at 0x1a1000 on bind queue 0 waiting for the spinner; a bind at
/// 0x1a2000 on bind queue 1 and an exec through it on exec queue 1. Both binds write
/// entries of the same, existing leaf table page and create no table: queue 1's bind and
/// exec complete while the spinner still runs.
#[test]
fn bind_queues_independent() {
    use crate::hw::cmd::CommandStream;
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (bo, b0, b1) = (r.sys_bo(K4), r.bo(K4), r.bo(K4));
    let q1 = r.dev.bind_queue_create(&t.vm).unwrap();
    let e1 = r
        .dev
        .exec_queue_create(&t.vm, crate::hw::Engine::Compute)
        .unwrap();
    let (spin, s) = cork(&t, &bo);
    let blocked = t
        .bind_async(
            &[BindOp::map(&b0, 0, IGT_ADDR + K4, K4)],
            &[BindSync::Wait(s, None)],
        )
        .unwrap();
    let free =
        t.vm.bind(
            Some(&q1),
            &[BindOp::map(&b1, 0, IGT_ADDR + 2 * K4, K4)],
            &[BindSync::Signal(Syncobj::new(), None)],
        )
        .unwrap();
    let mut c = CommandStream::new();
    c.store_qword(GpuVa(IGT_ADDR + 2 * K4 + 8), 0xc0ffee);
    let exec = e1
        .submit(crate::exec::Job::commands(c.dwords().to_vec()).with_deps([free.clone()]))
        .unwrap();
    // A bound that only matters when queue 1 waits for the corked queue 0 (the bug).
    let bounded = |f: &Fence| f.wait(Some(Duration::from_secs(10)));
    assert_eq!(
        bounded(&free),
        Ok(Ok(())),
        "queue 1's bind waited for queue 0"
    );
    assert_eq!(
        bounded(&exec),
        Ok(Ok(())),
        "the exec through queue 1's bind"
    );
    assert_eq!(read(&b1, 8), 0xc0ffee);
    assert!(
        !spin.is_signalled() && !blocked.is_signalled(),
        "queue 0 still corked"
    );
    write(&bo, 0, 1);
    wait(&blocked).unwrap();
    t.store(IGT_ADDR + K4 + 8, 8).unwrap();
    assert_eq!(read(&b0, 8), 8);
}

/// bind-execqueues-conflict, with IGT's addresses: the corked bind on queue 0 maps 2 MiB
/// further (0x3a0000), creating the leaf table page of that region; queue 1's bind at
/// 0x3a1000 writes into that page, so it waits for queue 0's bind (it would otherwise
/// signal before the page it wrote is reachable).
#[test]
fn bind_queues_serialise_on_a_table_page_a_pending_bind_creates() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (bo, b0, b1) = (r.sys_bo(K4), r.bo(K4), r.bo(K4));
    let q1 = r.dev.bind_queue_create(&t.vm).unwrap();
    let (spin, s) = cork(&t, &bo);
    let conflict = IGT_ADDR + (1 << 21);
    let first = t
        .bind_async(
            &[BindOp::map(&b0, 0, conflict, K4)],
            &[BindSync::Wait(s, None)],
        )
        .unwrap();
    let second =
        t.vm.bind(
            Some(&q1),
            &[BindOp::map(&b1, 0, conflict + K4, K4)],
            &[BindSync::Signal(Syncobj::new(), None)],
        )
        .unwrap();
    settle();
    assert!(
        !second.is_signalled(),
        "queue 1's bind writes a table page queue 0's pending bind creates"
    );
    write(&bo, 0, 1);
    wait(&spin).unwrap();
    wait(&second).unwrap();
    assert!(first.is_signalled());
    t.store(conflict + K4 + 8, 9).unwrap();
    t.store(conflict + 8, 7).unwrap();
    assert_eq!((read(&b0, 8), read(&b1, 8)), (7, 9));
}

/// A bind corked on queue 0 maps a whole 2 MiB region with 4 KiB pages, writing every entry
/// of the region's existing leaf table; an unmap of that region on queue 1 then drops the
/// table without writing an entry of it (one unmap op covers the slot). No entry is shared,
/// yet the unmap must wait for the corked bind (Xe: their ranges overlap). Otherwise the
/// table page is freed behind the unmap's fence alone, reused as the table of the next bind,
/// and the corked bind's 512 writes land in that table.
#[test]
fn bind_queues_serialise_on_a_table_page_a_pending_bind_frees() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (bo, bx, by) = (r.sys_bo(K4), r.bo(K4), r.bo(K4));
    let big = r.bo(2 * MIB + K4);
    // An offset whose page is not 2 MiB-aligned: 4 KiB entries, not one 2 MiB leaf.
    let off = if bo_pa(&big, 0) % (2 * MIB) == 0 {
        K4
    } else {
        0
    };
    let q1 = r.dev.bind_queue_create(&t.vm).unwrap();
    let region: u64 = 0x40_0000;
    // The region's leaf table exists (and is done) before the corked bind.
    wait(&t.bind(&[BindOp::map(&bx, 0, region, K4)]).unwrap()).unwrap();
    let (spin, s) = cork(&t, &bo);
    let corked = t
        .bind_async(
            &[BindOp::map(&big, off, region, 2 * MIB)],
            &[BindSync::Wait(s, None)],
        )
        .unwrap();
    let unmap =
        t.vm.bind(
            Some(&q1),
            &[BindOp::unmap(region, 2 * MIB)],
            &[BindSync::Signal(Syncobj::new(), None)],
        )
        .unwrap();
    // Bounded: the fixed code times out here, the bug signals at once (even under load).
    let early = unmap.wait(Some(Duration::from_secs(1))).is_ok();
    // The next table the VM needs: with the bug, maybe the page the unmap freed.
    let next: u64 = 0x80_0000;
    let later =
        t.vm.bind(
            Some(&q1),
            &[BindOp::map(&by, 0, next, K4)],
            &[BindSync::Signal(Syncobj::new(), None)],
        )
        .unwrap();
    write(&bo, 0, 1);
    wait(&spin).unwrap();
    wait(&corked).unwrap();
    wait(&unmap).unwrap();
    wait(&later).unwrap();
    assert!(
        r.translate(&t.vm, next + K4, Access::Read).is_none(),
        "the corked bind wrote into a freed table page"
    );
    assert!(
        !early,
        "the unmap freeing a table page queue 0's pending bind writes did not wait"
    );
    assert!(r.translate(&t.vm, region + K4, Access::Read).is_none());
    t.store(next + 8, 5).unwrap();
    assert_eq!(read(&by, 8), 5);
}

/// Two queues writing the same entry are ordered: an unmap on queue 1 of a range whose
/// map is still pending on queue 0 must not run first (the map would then leave a live
/// entry behind the tree's back).
#[test]
fn bind_queues_serialise_on_a_shared_entry() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (bo, b0) = (r.sys_bo(K4), r.bo(K4));
    let q1 = r.dev.bind_queue_create(&t.vm).unwrap();
    let (_spin, s) = cork(&t, &bo);
    let first = t
        .bind_async(
            &[BindOp::map(&b0, 0, IGT_ADDR + K4, K4)],
            &[BindSync::Wait(s, None)],
        )
        .unwrap();
    let second =
        t.vm.bind(
            Some(&q1),
            &[BindOp::unmap(IGT_ADDR + K4, K4)],
            &[BindSync::Signal(Syncobj::new(), None)],
        )
        .unwrap();
    settle();
    assert!(
        !second.is_signalled(),
        "the unmap waits for the pending map"
    );
    write(&bo, 0, 1);
    wait(&second).unwrap();
    assert!(first.is_signalled());
    assert!(r
        .translate(&t.vm, IGT_ADDR + K4, simgpu::mmu::Access::Read)
        .is_none());
}

#[test]
fn zero_op_bind_is_a_pure_sync() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (g, s) = gate();
    let out = Syncobj::new();
    let f = t
        .bind_async(
            &[],
            &[BindSync::Wait(s, None), BindSync::Signal(out.clone(), None)],
        )
        .unwrap();
    settle();
    assert!(!out.is_signalled());
    g.signal().unwrap();
    wait(&f).unwrap();
    assert!(out.is_signalled());
    // A user fence on a zero-op bind is not supported.
    let e = t
        .bind_async(
            &[],
            &[BindSync::UserFence {
                va: GpuVa(VA),
                value: 1,
            }],
        )
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotSupported);
}

#[test]
fn user_fence_written_after_completion_and_ebusy() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (fb, bo) = (r.bo(K4), r.bo(4 * K4));
    t.bind(&[BindOp::map(&fb, 0, OTHER, K4)]).unwrap();
    let (g, s) = gate();
    let f = t
        .bind_async(
            &[BindOp::map(&bo, 0, VA, 4 * K4)],
            &[
                BindSync::Wait(s, None),
                BindSync::UserFence {
                    va: GpuVa(OTHER + 16),
                    value: 0xfeed,
                },
            ],
        )
        .unwrap();
    settle();
    assert_eq!(read(&fb, 16), 0, "not written before completion");
    let e = t.bind(&[BindOp::unmap(VA + K4, K4)]).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Busy, "{e}");
    g.signal().unwrap();
    wait(&f).unwrap();
    assert_eq!(read(&fb, 16), 0xfeed);
    t.bind(&[BindOp::unmap(VA + K4, K4)]).unwrap();
    // Unaligned and unmapped user-fence addresses are refused.
    let sync = |va| {
        [BindSync::UserFence {
            va: GpuVa(va),
            value: 1,
        }]
    };
    let e = t
        .bind_async(&[BindOp::unmap(VA, K4)], &sync(OTHER + 4))
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Invalid);
    let e = t
        .bind_async(&[BindOp::unmap(VA, K4)], &sync(0x9_0000_0000))
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Fault);
}

#[test]
fn lr_vm_refuses_dma_fence_out_syncs() {
    let r = rig();
    let vm = r.dev.vm_create(VmFlags::LR_MODE).unwrap();
    let bo = r.bo(K4);
    let e = vm
        .bind(
            None,
            &[BindOp::map(&bo, 0, VA, K4)],
            &[BindSync::Signal(Syncobj::new(), None)],
        )
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotSupported);
    vm.bind(None, &[BindOp::map(&bo, 0, VA, K4)], &[]).unwrap();
}

#[test]
fn async_failure_bans_the_vm() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(K4);
    let (g, s) = gate();
    let out = Syncobj::new();
    let f = t
        .bind_async(
            &[BindOp::map(&bo, 0, VA, K4)],
            &[BindSync::Wait(s, None), BindSync::Signal(out.clone(), None)],
        )
        .unwrap();
    g.set_error(FenceFault::Canceled).unwrap();
    g.signal().unwrap();
    assert!(wait(&f).is_err(), "the job failed with its dependency");
    assert!(t.vm.is_banned());
    assert!(out.fence().unwrap().wait(None).unwrap().is_err());
    let e = t.bind(&[BindOp::unmap(VA, K4)]).unwrap_err();
    assert_eq!(e.class(), ErrorClass::VmGone);
    assert!(
        t.q.submit(crate::exec::Job::sync_only()).is_err(),
        "exec refuses too"
    );
}

#[test]
fn vm_destroy_with_work_in_flight_cancels_and_frees() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(4 * K4);
    t.bind(&[BindOp::map(&bo, 0, VA, K4)]).unwrap();
    let (g, s) = gate();
    let out = Syncobj::new();
    let f = t
        .bind_async(
            &[BindOp::map(&bo, K4, VA + K4, K4)],
            &[BindSync::Wait(s, None), BindSync::Signal(out.clone(), None)],
        )
        .unwrap();
    r.dev.vm_destroy(&t.vm);
    assert_eq!(wait(&f), Err(FenceFault::Canceled), "queued job cancelled");
    assert!(
        out.fence().unwrap().wait(None).unwrap().is_err(),
        "pending sync errors"
    );
    assert_eq!(
        t.bind(&[BindOp::unmap(VA, K4)]).unwrap_err().class(),
        ErrorClass::VmGone
    );
    assert!(t.q.submit(crate::exec::Job::sync_only()).is_err());
    assert_eq!(t.vm.with_state(|st| st.gpuvm.tree().len()), 0);
    assert_eq!(Arc::strong_count(&bo), 1, "the VM released the BO");
    g.signal().unwrap();
}

/// Dropping a VM with a bind blocked on a never-signalled in-sync cancels it promptly.
#[test]
fn dropping_a_vm_cancels_blocked_binds() {
    let r = rig();
    let vm = r.dev.vm_create(VmFlags::empty()).unwrap();
    let bo = r.bo(K4);
    let (_g, s) = gate();
    let f = vm
        .bind(
            None,
            &[BindOp::map(&bo, 0, VA, K4)],
            &[BindSync::Wait(s, None)],
        )
        .unwrap();
    drop(vm);
    assert_eq!(wait(&f), Err(FenceFault::Canceled));
}

/// A VM destroyed (and every handle dropped) while one of its jobs still runs on the GPU
/// keeps its context and page tables until that job finished: a new VM must not get the
/// context (the running job would then walk the new VM's tables), and the job still writes
/// its own BO. Once it retired, the context is free again.
#[test]
fn a_destroyed_vm_keeps_its_context_until_its_running_job_retires() {
    use crate::hw::cmd::{CommandStream, SemOp, Width};
    use crate::types::GpuVa;
    let r = rig();
    let a = r.vm(VmFlags::empty());
    let ctx = a.vm.ctx();
    let (sem, out) = (r.sys_bo(K4), r.bo(K4));
    a.bind(&[
        BindOp::map(&sem, 0, VA, K4),
        BindOp::map(&out, 0, VA + 0x10_0000, K4),
    ])
    .unwrap();
    let mut c = CommandStream::new();
    c.semaphore_wait(GpuVa(VA), SemOp::Gte, 1, Width::U64)
        .store_qword(GpuVa(VA + 0x10_0000), 0xa11ce);
    let job =
        a.q.submit(crate::exec::Job::commands(c.dwords().to_vec()))
            .unwrap();
    // The job is on the ring, waiting for the semaphore in memory.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!job.is_signalled());
    r.dev.vm_destroy(&a.vm);
    drop(a);
    let b = r.vm(VmFlags::empty());
    assert_ne!(
        b.vm.ctx(),
        ctx,
        "the running job's context was handed out again"
    );
    write(&sem, 0, 1);
    assert_eq!(wait(&job), Ok(()));
    assert_eq!(read(&out, 0), 0xa11ce, "the job lost its mappings");
    let deadline = std::time::Instant::now() + PATIENCE;
    let c = loop {
        let c = r.vm(VmFlags::empty());
        if c.vm.ctx() == ctx || std::time::Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert_eq!(c.vm.ctx(), ctx, "the context was never released");
}

/// Exec jobs still waiting for a dependency when their VM is destroyed never run: the VM's
/// mappings are gone (the BO they would write may be freed and reused), so they are cancelled
/// once their dependencies signal, in queue order.
#[test]
fn waiting_exec_jobs_of_a_destroyed_vm_are_cancelled() {
    use crate::hw::cmd::CommandStream;
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let out = r.bo(K4);
    t.bind(&[BindOp::map(&out, 0, VA, K4)]).unwrap();
    let gate = Fence::new(FenceContext::alloc(), 1);
    let mut c = CommandStream::new();
    c.store_qword(GpuVa(VA), 0xdead);
    let job =
        t.q.submit(crate::exec::Job::commands(c.dwords().to_vec()).with_deps([gate.clone()]))
            .unwrap();
    r.dev.vm_destroy(&t.vm);
    gate.signal().unwrap();
    assert_eq!(wait(&job), Err(FenceFault::Canceled));
    assert_eq!(read(&out, 0), 0, "a destroyed VM's job ran");
}

/// A VM whose job faulted leaves its context with the error latched (the VM is banned). When
/// that VM is gone and a new VM gets the context, the new VM starts clean: its jobs run, and a
/// later context error of another VM does not ban its queues with the old VM's fault.
/// (Found by the live fuzzer: innocent clients' queues were banned with a `Fault` they never
/// caused.)
#[test]
fn a_reused_context_does_not_inherit_the_previous_vms_fault() {
    use crate::hw::cmd::CommandStream;
    use crate::types::GpuVa;
    let r = rig();
    let a = r.vm(VmFlags::empty());
    let ctx = a.vm.ctx();
    let mut c = CommandStream::new();
    c.store_qword(GpuVa(VA + 0x70_0000), 1); // nothing mapped there: a fault
    let bad =
        a.q.submit(crate::exec::Job::commands(c.dwords().to_vec()))
            .unwrap();
    assert!(wait(&bad).is_err(), "the unmapped store faulted");
    r.dev.vm_destroy(&a.vm);
    drop(a);
    // The faulted VM's context goes to the next VM (the lowest free one).
    let deadline = std::time::Instant::now() + PATIENCE;
    let b = loop {
        let b = r.vm(VmFlags::empty());
        if b.vm.ctx() == ctx || std::time::Instant::now() > deadline {
            break b;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert_eq!(b.vm.ctx(), ctx, "the faulted VM's context was never reused");
    let out = r.bo(K4);
    b.bind(&[BindOp::map(&out, 0, VA, K4)]).unwrap();
    // Another VM faults: the error interrupt makes the driver look at every context.
    let other = r.vm(VmFlags::empty());
    let mut c = CommandStream::new();
    c.store_qword(GpuVa(VA + 0x70_0000), 1);
    let bad = other
        .q
        .submit(crate::exec::Job::commands(c.dwords().to_vec()))
        .unwrap();
    assert!(wait(&bad).is_err());
    let mut c = CommandStream::new();
    c.store_qword(GpuVa(VA), 0xc1ea2);
    let good =
        b.q.submit(crate::exec::Job::commands(c.dwords().to_vec()))
            .unwrap();
    assert_eq!(wait(&good), Ok(()), "the new VM's job ran");
    assert_eq!(read(&out, 0), 0xc1ea2);
    assert!(!b.vm.is_banned());
}
