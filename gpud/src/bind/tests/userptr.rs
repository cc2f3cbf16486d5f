//! userptr on the `svm` seam, with the scripted `FakeMm` as the client's address space:
//! binds resolve the client's pages (EFAULT otherwise, all or nothing), READONLY, UNMAP,
//! the notifier path (an address-space change zaps and invalidates; a missed invalidation
//! would leave the GPU on the old page), EXEC revalidation, fault-mode refault, two VMs
//! sharing a userptr, release on VM destroy and client exit, and binds racing events.

use super::rig::*;
use crate::bind::{BindFlags, BindOp, ErrorClass, VmFlags};
use crate::exec::{ExecError, Job, JobVmError};
use crate::hw::cmd::CommandStream;
use crate::hw::Engine;
use crate::svm::fake::FakeMm;
use crate::svm::ClientMm;
use crate::types::GpuVa;
use simgpu::mmu::Access;
use std::sync::Arc;

pub const CPU: u64 = 0x7f00_0000_0000;
pub const VA: u64 = 0x3_0000_0000;
pub const OUT: u64 = 0x4_0000_0000;
pub const OWNER: u64 = 7;
const FAULT: VmFlags = VmFlags::LR_MODE.union(VmFlags::FAULT_MODE);

/// A rig whose client `OWNER` registered a fake address space.
pub fn client() -> (Rig, Arc<FakeMm>) {
    let r = rig();
    let mm = FakeMm::new(r.dev.dma().clone());
    r.dev.set_client_mm(OWNER, mm.clone());
    (r, mm)
}

/// A VM of `OWNER` with an exec queue.
pub fn client_vm(r: &Rig, flags: VmFlags) -> TestVm {
    let vm = r.dev.vm_create_for(flags, Some(OWNER)).unwrap();
    let q = r.dev.exec_queue_create(&vm, Engine::Compute).unwrap();
    TestVm { vm, q }
}

/// The device page `va` translates to in `t`'s VM, if any.
pub fn gpu_page(r: &Rig, t: &TestVm, va: u64) -> Option<u64> {
    r.translate(&t.vm, va, Access::Read).map(|tr| tr.phys)
}

/// Waits (bounded) until `f` holds.
pub fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// An OUT BO bound at `OUT` (where GPU copies land).
pub fn out_bo(r: &Rig, t: &TestVm) -> Arc<crate::mem::bo::Bo> {
    let out = r.bo(K4);
    t.bind(&[BindOp::map(&out, 0, OUT, K4)]).unwrap();
    out
}

#[test]
fn the_gpu_reads_and_writes_the_clients_pages() {
    let (r, mm) = client();
    let t = client_vm(&r, VmFlags::empty());
    let out = out_bo(&r, &t);
    mm.map(CPU, 2 * K4, true);
    mm.write_u64(CPU + 8, 42).unwrap();
    t.bind(&[BindOp::map_userptr(CPU, VA, 2 * K4)]).unwrap();
    // The PTEs point at the pages the address space resolved.
    assert_eq!(
        gpu_page(&r, &t, VA + K4),
        Some(mm.phys_of(CPU + K4).unwrap().get())
    );
    t.copy8(VA + 8, OUT).unwrap();
    assert_eq!(read(&out, 0), 42);
    t.store(VA + K4 + 16, 7).unwrap();
    assert_eq!(
        mm.read_u64(CPU + K4 + 16).unwrap(),
        7,
        "a GPU write reaches the client"
    );
    assert_eq!(t.vm.userptr_bytes(), 2 * K4, "the pinned pages are charged");
    assert_eq!(mm.pinned(), 1);
}

#[test]
fn unresolvable_memory_is_efault_and_the_bind_changes_nothing() {
    let (r, mm) = client();
    let t = client_vm(&r, VmFlags::empty());
    let bo = r.bo(K4);
    mm.map(CPU, K4, true);
    // The second page is not mapped: the whole call fails, the BO map included.
    let e = t
        .bind(&[
            BindOp::map(&bo, 0, OUT, K4),
            BindOp::map_userptr(CPU, VA, 2 * K4),
        ])
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Fault, "{e}");
    assert!(t.vm.backing_at(GpuVa(OUT)).is_none());
    assert_eq!(t.vm.with_state(|st| st.gpuvm.tree().len()), 0);
    assert_eq!((mm.pinned(), t.vm.userptr_bytes()), (0, 0));
    // A VM without an owner, and an owner without an address space: EFAULT too.
    let lone = r.vm(VmFlags::empty());
    let e = lone.bind(&[BindOp::map_userptr(CPU, VA, K4)]).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Fault);
    let other = r
        .dev
        .vm_create_for(VmFlags::empty(), Some(OWNER + 1))
        .unwrap();
    let e = other
        .bind(None, &[BindOp::map_userptr(CPU, VA, K4)], &[])
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Fault);
    // A misaligned CPU address is invalid, not a fault.
    let e = t.bind(&[BindOp::map_userptr(CPU + 8, VA, K4)]).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Invalid);
}

#[test]
fn readonly_is_honoured() {
    let (r, mm) = client();
    let t = client_vm(&r, VmFlags::empty());
    let out = out_bo(&r, &t);
    mm.map(CPU, K4, false);
    mm.write_u64(CPU, 5).unwrap();
    // Read-only client memory cannot back a writable mapping.
    let e = t.bind(&[BindOp::map_userptr(CPU, VA, K4)]).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Fault);
    t.bind(&[BindOp::map_userptr(CPU, VA, K4).with_flags(BindFlags::READONLY)])
        .unwrap();
    t.copy8(VA, OUT).unwrap();
    assert_eq!(read(&out, 0), 5);
    assert!(
        t.store(VA, 9).is_err(),
        "a GPU write to a READONLY userptr faults"
    );
    assert_eq!(mm.read_u64(CPU).unwrap(), 5);
}

/// Two MAP_USERPTR ops at the same address in one call: the second wins, and its PTEs point
/// at its own pages (not at the first op's, which are released).
#[test]
fn two_userptr_ops_at_one_address_keep_their_pages_apart() {
    let (r, mm) = client();
    let t = client_vm(&r, VmFlags::empty());
    mm.map(CPU, 2 * K4, true);
    t.bind(&[
        BindOp::map_userptr(CPU, VA, K4),
        BindOp::map_userptr(CPU + K4, VA, K4),
    ])
    .unwrap();
    assert_eq!(
        gpu_page(&r, &t, VA),
        Some(mm.phys_of(CPU + K4).unwrap().get())
    );
    eventually("the first op's pages were released", || mm.pinned() == 1);
}

#[test]
fn unmap_clears_the_ptes_and_releases_the_pages() {
    let (r, mm) = client();
    let t = client_vm(&r, VmFlags::empty());
    mm.map(CPU, 4 * K4, true);
    t.bind(&[BindOp::map_userptr(CPU, VA, 4 * K4)]).unwrap();
    t.store(VA, 1).unwrap();
    // A partial unmap keeps the rest mapped to the same pages.
    t.bind(&[BindOp::unmap(VA + K4, K4)]).unwrap();
    assert_eq!(gpu_page(&r, &t, VA + K4), None);
    assert_eq!(
        gpu_page(&r, &t, VA + 2 * K4),
        Some(mm.phys_of(CPU + 2 * K4).unwrap().get())
    );
    t.store(VA + 3 * K4, 3).unwrap();
    assert_eq!(mm.read_u64(CPU + 3 * K4).unwrap(), 3);
    assert_eq!(t.vm.userptr_bytes(), 3 * K4);
    t.bind(&[BindOp::unmap(VA, 4 * K4)]).unwrap();
    assert_eq!(gpu_page(&r, &t, VA), None);
    assert_eq!(t.vm.userptr_bytes(), 0);
    // Released by the unbind job's fence callback (after its TLB invalidation).
    eventually("the pages were released after the unbind", || {
        mm.pinned() == 0
    });
}

/// The fidelity test: a different page at the same CPU address, with new data; the
/// next GPU read sees the new data. Without the notifier's invalidation the PTE would still
/// point at the old (still pinned) page and the GPU would read the old data.
#[test]
fn a_new_page_at_the_same_address_is_what_the_gpu_reads() {
    let (r, mm) = client();
    let t = client_vm(&r, VmFlags::empty());
    let out = out_bo(&r, &t);
    mm.map(CPU, K4, true);
    mm.write_u64(CPU, 1).unwrap();
    t.bind(&[BindOp::map_userptr(CPU, VA, K4)]).unwrap();
    t.copy8(VA, OUT).unwrap();
    assert_eq!(read(&out, 0), 1);
    let old = mm.phys_of(CPU).unwrap();
    mm.map(CPU, K4, true);
    mm.write_u64(CPU, 2).unwrap();
    assert_ne!(mm.phys_of(CPU).unwrap(), old);
    t.copy8(VA, OUT).unwrap();
    assert_eq!(read(&out, 0), 2, "the GPU read the old page");
    assert_eq!(gpu_page(&r, &t, VA), Some(mm.phys_of(CPU).unwrap().get()));
    assert_eq!(mm.pinned(), 1, "the old page was not released");
}

#[test]
fn unmap_then_exec_without_memory_is_efault_and_remap_revalidates() {
    let (r, mm) = client();
    let t = client_vm(&r, VmFlags::empty());
    let out = out_bo(&r, &t);
    mm.map(CPU, 2 * K4, true);
    t.bind(&[BindOp::map_userptr(CPU, VA, 2 * K4)]).unwrap();
    t.store(VA, 1).unwrap();
    mm.unmap(CPU + K4, K4);
    assert!(t.vm.needs_revalidation());
    let job = Job::commands(
        CommandStream::new()
            .store_qword(GpuVa(OUT), 1)
            .dwords()
            .to_vec(),
    );
    match t.q.submit(job) {
        Err(ExecError::Vm(JobVmError::Fault { va })) => assert_eq!(va, CPU),
        other => panic!("EXEC over an unmapped userptr: {other:?}"),
    }
    // madvise(DONTNEED)-style removal and a remap both revalidate on the next EXEC.
    mm.map(CPU + K4, K4, true);
    mm.write_u64(CPU + K4, 11).unwrap();
    t.copy8(VA + K4, OUT).unwrap();
    assert_eq!(read(&out, 0), 11);
    assert!(!t.vm.needs_revalidation());
    mm.remove(CPU, 2 * K4);
    mm.write_u64(CPU + K4, 12).unwrap();
    t.copy8(VA + K4, OUT).unwrap();
    assert_eq!(read(&out, 0), 12);
    mm.remap(CPU, 2 * K4, CPU + 16 * K4);
    mm.map(CPU, 2 * K4, true);
    mm.write_u64(CPU + K4, 13).unwrap();
    t.copy8(VA + K4, OUT).unwrap();
    assert_eq!(read(&out, 0), 13);
    assert_eq!(mm.pinned(), 1);
}

#[test]
fn a_fault_mode_vm_refaults_userptrs() {
    let (r, mm) = client();
    let t = client_vm(&r, FAULT);
    let out = r.bo(K4);
    t.bind(&[BindOp::map(&out, 0, OUT, K4)]).unwrap();
    mm.map(CPU, K4, true);
    mm.write_u64(CPU, 21).unwrap();
    t.bind(&[BindOp::map_userptr(CPU, VA, K4)]).unwrap();
    assert_eq!(gpu_page(&r, &t, VA), None, "no PTEs before the first fault");
    t.copy8(VA, OUT).unwrap();
    assert_eq!(read(&out, 0), 21);
    let faults = t.vm.faults();
    mm.map(CPU, K4, true);
    mm.write_u64(CPU, 22).unwrap();
    t.copy8(VA, OUT).unwrap();
    assert_eq!(read(&out, 0), 22);
    assert!(t.vm.faults() > faults, "the new page came by a fault");
    mm.unmap(CPU, K4);
    assert!(
        t.copy8(VA, OUT).is_err(),
        "unmapped client memory aborts the fault"
    );
}

#[test]
fn one_userptr_in_two_vms_of_a_client() {
    let (r, mm) = client();
    let (a, b) = (
        client_vm(&r, VmFlags::empty()),
        client_vm(&r, VmFlags::empty()),
    );
    let (oa, ob) = (out_bo(&r, &a), out_bo(&r, &b));
    mm.map(CPU, K4, true);
    mm.write_u64(CPU, 31).unwrap();
    a.bind(&[BindOp::map_userptr(CPU, VA, K4)]).unwrap();
    b.bind(&[BindOp::map_userptr(CPU, VA + MIB, K4)]).unwrap();
    mm.map(CPU, K4, true);
    mm.write_u64(CPU, 32).unwrap();
    assert_eq!(
        (gpu_page(&r, &a, VA), gpu_page(&r, &b, VA + MIB)),
        (None, None)
    );
    a.copy8(VA, OUT).unwrap();
    b.copy8(VA + MIB, OUT).unwrap();
    assert_eq!((read(&oa, 0), read(&ob, 0)), (32, 32));
}

#[test]
fn vm_destroy_and_client_exit_release_the_pages() {
    let (r, mm) = client();
    let t = client_vm(&r, VmFlags::empty());
    mm.map(CPU, 2 * K4, true);
    t.bind(&[BindOp::map_userptr(CPU, VA, K4)]).unwrap();
    t.store(VA, 1).unwrap();
    r.dev.vm_destroy(&t.vm);
    drop(t);
    eventually("a destroyed VM keeps no client page", || mm.pinned() == 0);
    let u = client_vm(&r, VmFlags::empty());
    u.bind(&[BindOp::map_userptr(CPU + K4, VA, K4)]).unwrap();
    u.store(VA, 1).unwrap();
    assert_eq!(mm.pinned(), 1);
    r.dev.forget_owner(OWNER);
    assert_eq!(mm.pinned(), 0, "the client's exit released its pages");
    assert_eq!(gpu_page(&r, &u, VA), None);
    assert!(r.dev.client_mm(OWNER).is_none());
    let e = u
        .bind(&[BindOp::map_userptr(CPU, VA + MIB, K4)])
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Fault);
}

/// An event between resolving a bind's pages and committing them: the bind resolves again
/// and maps the new page. Without the check under the notifier lock the PTE would point at
/// the page the event replaced.
#[test]
fn a_bind_racing_an_event_maps_the_new_page() {
    let (r, mm) = client();
    let t = client_vm(&r, VmFlags::empty());
    mm.map(CPU, K4, true);
    mm.race_next_get_pages(|m| m.map(CPU, K4, true));
    let calls = mm.get_pages_calls();
    t.bind(&[BindOp::map_userptr(CPU, VA, K4)]).unwrap();
    assert_eq!(
        mm.get_pages_calls(),
        calls + 2,
        "the raced bind resolved again"
    );
    assert_eq!(gpu_page(&r, &t, VA), Some(mm.phys_of(CPU).unwrap().get()));
    assert_eq!(mm.pinned(), 1);
    // `Again` from the address space is retried too.
    mm.fail_again(1);
    t.bind(&[BindOp::map_userptr(CPU, VA + MIB, K4)]).unwrap();
    // An event between a revalidation's resolve and its commit: the EXEC resolves again.
    mm.unmap(CPU, K4);
    mm.map(CPU, K4, true);
    mm.race_next_get_pages(|m| {
        m.map(CPU, K4, true);
        let _ = m.write_u64(CPU, 77);
    });
    let out = out_bo(&r, &t);
    t.copy8(VA, OUT).unwrap();
    assert_eq!(read(&out, 0), 77);
    assert_eq!(gpu_page(&r, &t, VA), Some(mm.phys_of(CPU).unwrap().get()));
}

/// WAIT_USER_FENCE on a fence in client memory: read through the userptr's pages (the
/// GPU's writes and the CPU's), through the page the address space has now once an event
/// invalidated it, EFAULT once the memory is gone; `None` outside every userptr.
#[test]
fn a_user_fence_in_userptr_memory_is_read_through_the_clients_pages() {
    use crate::svm::MmError;
    let (r, mm) = client();
    let t = client_vm(&r, VmFlags::empty());
    let fence = VA + K4 + 8;
    mm.map(CPU, 2 * K4, true);
    mm.write_u64(CPU + K4 + 8, 5).unwrap();
    t.bind(&[BindOp::map_userptr(CPU, VA, 2 * K4)]).unwrap();
    assert_eq!(t.vm.userptr_read_u64(fence), Some(Ok(5)));
    t.store(fence, 6).unwrap();
    assert_eq!(t.vm.userptr_read_u64(fence), Some(Ok(6)), "the GPU's write");
    // A new page at the same address: invalidated, read through the page there now.
    mm.map(CPU + K4, K4, true);
    mm.write_u64(CPU + K4 + 8, 7).unwrap();
    assert!(t.vm.has_invalid_userptrs());
    assert_eq!(t.vm.userptr_read_u64(fence), Some(Ok(7)));
    mm.unmap(CPU + K4, K4);
    assert!(matches!(
        t.vm.userptr_read_u64(fence),
        Some(Err(MmError::Fault { .. }))
    ));
    assert_eq!(t.vm.userptr_read_u64(VA + 4 * K4), None, "not a userptr");
    // A fault-mode VM that never populated its userptr reads through the address space.
    let f = client_vm(&r, FAULT);
    mm.write_u64(CPU + 16, 9).unwrap();
    f.bind(&[BindOp::map_userptr(CPU, VA, K4)]).unwrap();
    assert_eq!(f.vm.userptr_read_u64(VA + 16), Some(Ok(9)));
}

#[test]
fn fake_mm_is_a_client_mm() {
    let (r, mm) = client();
    let as_dyn: Arc<dyn ClientMm> = mm.clone();
    assert!(as_dyn.caps().arbitrary_memory);
    assert!(r.dev.client_mm(OWNER).is_some());
}

mod notifier_oracle {
    use crate::bind::userptr::{Notifier, Userptr};
    use crate::svm::{CpuRange, PinnedPages};
    use crate::types::{PhysAddr, PAGE_SIZE};
    use crate::vm::MappingFlags;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    const P: u64 = PAGE_SIZE;

    fn window(pages: u64) -> crate::bind::userptr::PageWindow {
        let addrs = (1..=pages).map(|i| PhysAddr(i * P)).collect();
        crate::bind::userptr::PageWindow::whole(Arc::new(PinnedPages::new(addrs, Box::new(()))))
    }

    /// The oracle's userptr: CPU pages `[a, a + n)` and whether it has pages.
    #[derive(Debug, Clone, Copy)]
    struct Model {
        a: u64,
        n: u64,
        valid: bool,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(simgpu::testkit::proptest_cases(256)))]

        /// Against a page-set oracle: which userptrs an event invalidates (and so zaps),
        /// which resolutions in flight an event races (installing their pages fails), the
        /// invalid count and the pinned bytes.
        #[test]
        fn notifier_bookkeeping_follows_an_oracle(
            ops in prop::collection::vec((0u8..4, 0u64..24, 1u64..5, 0u64..6), 1..120)
        ) {
            let mut n = Notifier::default();
            let mut model: BTreeMap<u64, Model> = BTreeMap::new();
            // (gpu start, cpu, since, raced by an event, stale: its record was replaced)
            let mut flight: Vec<(u64, CpuRange, u64, bool, bool)> = Vec::new();
            for (kind, a, len, slot) in ops {
                let gpu = slot * 64 * P;
                let cpu = CpuRange::new(a * P, len * P).unwrap();
                match kind {
                    0 => {
                        let u = Userptr { len: len * P, cpu, flags: MappingFlags::USERPTR, seq: n.seq(), pages: Some(window(len)) };
                        n.insert(gpu, u);
                        model.insert(gpu, Model { a, n: len, valid: true });
                        // A new record at the same address takes the sequence of now: a
                        // resolution from before an event (any event) no longer fits it.
                        let now = n.seq();
                        for f in flight.iter_mut().filter(|f| f.0 == gpu && f.2 != now) {
                            f.4 = true;
                        }
                    }
                    1 => {
                        let inv = n.invalidate(cpu);
                        let mut want: Vec<u64> = Vec::new();
                        for (g, m) in model.iter_mut() {
                            let overlaps = m.a < a + len && a < m.a + m.n;
                            if overlaps && m.valid {
                                want.push(*g);
                                m.valid = false;
                            }
                        }
                        let mut got: Vec<u64> = inv.zap.iter().map(|z| z.0).collect();
                        got.sort_unstable();
                        prop_assert_eq!(got, want);
                        prop_assert_eq!(inv.pages.len(), inv.zap.len());
                        for f in flight.iter_mut() {
                            f.3 |= f.1.overlaps(cpu);
                        }
                    }
                    2 => {
                        if let Some(m) = model.get(&gpu) {
                            let r = CpuRange::new(m.a * P, m.n * P).unwrap();
                            flight.push((gpu, r, n.seq(), false, false));
                        }
                    }
                    _ => {
                        if flight.is_empty() {
                            continue;
                        }
                        let (g, r, since, raced, stale) = flight.remove(0);
                        prop_assert!(!raced || n.raced(since, r), "a raced resolution passed the check");
                        let current = model.get(&g).is_some_and(|m| m.a * P == r.start() && m.n * P == r.len());
                        let res = n.install(g, r, since, window(r.pages()));
                        prop_assert_eq!(res.is_ok(), current && !raced && !stale, "install of {:#x}", g);
                        if res.is_ok() {
                            if let Some(m) = model.get_mut(&g) { m.valid = true; }
                        }
                    }
                }
                let invalid = model.values().filter(|m| !m.valid).count();
                prop_assert_eq!(n.invalid_count(), invalid);
                let bytes: u64 = model.values().filter(|m| m.valid).map(|m| m.n * P).sum();
                prop_assert_eq!(n.pinned_bytes(), bytes);
            }
        }
    }
}

/// A thread changes the client's mappings in a loop while binds, execs (revalidation) and
/// GPU faults run on two VMs (the lock-order checker is on in tests). Bounded: a fixed
/// number of rounds. Afterwards no invalidation is lost: every userptr page the tables map
/// is the page the address space has now.
#[test]
fn stress_events_against_binds_execs_and_faults() {
    let (r, mm) = client();
    let plain = client_vm(&r, VmFlags::empty());
    let fault = client_vm(&r, FAULT);
    let (po, fo) = (out_bo(&r, &plain), r.bo(K4));
    fault.bind(&[BindOp::map(&fo, 0, OUT, K4)]).unwrap();
    const PAGES: u64 = 8;
    mm.map(CPU, PAGES * K4, true);
    plain
        .bind(&[BindOp::map_userptr(CPU, VA, PAGES * K4)])
        .unwrap();
    fault
        .bind(&[BindOp::map_userptr(CPU, VA, PAGES * K4)])
        .unwrap();
    let rounds = 60;
    std::thread::scope(|s| {
        let mm2 = mm.clone();
        s.spawn(move || {
            for i in 0..rounds {
                let p = (i * 3) % PAGES;
                match i % 4 {
                    0 => mm2.map(CPU + p * K4, K4, true),
                    1 => mm2.remove(CPU + p * K4, K4),
                    2 => {
                        mm2.unmap(CPU + p * K4, K4);
                        mm2.map(CPU + p * K4, K4, true);
                    }
                    _ => {
                        mm2.remap(CPU + p * K4, K4, CPU + 64 * K4);
                        mm2.map(CPU + p * K4, K4, true);
                    }
                }
            }
        });
        let plain = &plain;
        s.spawn(move || {
            for i in 0..rounds {
                let p = i % PAGES;
                // Refused with EFAULT when the page is unmapped at that moment: allowed.
                let _ = plain.try_copy8(VA + p * K4, OUT);
                let slot = VA + 64 * MIB;
                let _ = plain.bind(&[BindOp::map_userptr(CPU + p * K4, slot, K4)]);
                let _ = plain.bind(&[BindOp::unmap(slot, K4)]);
            }
        });
        let fault = &fault;
        s.spawn(move || {
            for i in 0..rounds {
                let _ = fault.try_copy8(VA + (i % PAGES) * K4, OUT);
            }
        });
    });
    // Quiesced: revalidate the plain VM (its next EXEC, on a fresh queue: a job that raced
    // a zap took a GPU fault and may have banned the old one), then compare every PTE.
    let fresh = TestVm {
        vm: plain.vm.clone(),
        q: r.dev.exec_queue_create(&plain.vm, Engine::Compute).unwrap(),
    };
    fresh.copy8(VA, OUT).unwrap();
    let _ = po;
    for p in 0..PAGES {
        let now = mm.phys_of(CPU + p * K4).unwrap().get();
        assert_eq!(
            gpu_page(&r, &plain, VA + p * K4),
            Some(now),
            "plain VM, page {p}"
        );
        if let Some(pa) = gpu_page(&r, &fault, VA + p * K4) {
            assert_eq!(pa, now, "fault-mode VM, page {p}: a stale PTE survived");
        }
    }
    eventually("no pin leaked (one per VM's userptr)", || mm.pinned() <= 2);
}
