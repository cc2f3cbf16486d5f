//! The xe_vm scenarios that need no scheme, at the driver API level: every mapping is
//! proved by GPU writes through simgpu read back by the CPU from the BO, every unmap by
//! simgpu's walker finding no translation.

use super::rig::*;
use crate::bind::{BindFlags, BindOp, ErrorClass, VmFlags};
use simgpu::mmu::Access;

const VA: u64 = 0x1_0000_0000;

#[test]
fn bind_once_gpu_write_lands_in_bo() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(64 * K4);
    let f = t.bind(&[BindOp::map(&bo, 0, VA, 64 * K4)]).unwrap();
    assert!(f.is_signalled(), "a sync bind returns with its work done");
    t.store(VA + 0x18, 0xdead_beef).unwrap();
    t.store(VA + 63 * K4, 7).unwrap();
    assert_eq!(read(&bo, 0x18), 0xdead_beef);
    assert_eq!(read(&bo, 63 * K4), 7);
}

#[test]
fn bind_one_bo_many_times() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(4 * K4);
    let ops: Vec<BindOp> = (0..16)
        .map(|i| BindOp::map(&bo, (i % 4) * K4, VA + i * 0x10_0000, K4))
        .collect();
    t.bind(&ops).unwrap();
    for i in 0..16u64 {
        t.store(VA + i * 0x10_0000 + 8 * (i / 4), 100 + i).unwrap();
    }
    for i in 0..16u64 {
        assert_eq!(read(&bo, (i % 4) * K4 + 8 * (i / 4)), 100 + i);
    }
    t.vm.with_state(|st| {
        assert_eq!(st.gpuvm.tree().len(), 16);
        st.gpuvm.check_invariants().unwrap();
    });
}

#[test]
fn partial_unbinds_keep_the_rest() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(16 * K4);
    t.bind(&[BindOp::map(&bo, 0, VA, 16 * K4)]).unwrap();
    // Unmap the middle, then the first page: the rest still translates to the same pages.
    t.bind(&[BindOp::unmap(VA + 4 * K4, 4 * K4), BindOp::unmap(VA, K4)])
        .unwrap();
    for p in 0..16u64 {
        let tr = r.translate(&t.vm, VA + p * K4, Access::Write);
        let hole = p == 0 || (4..8).contains(&p);
        assert_eq!(tr.is_none(), hole, "page {p}");
        if let Some(tr) = tr {
            assert_eq!(tr.phys, bo_pa(&bo, p * K4));
        }
    }
    t.store(VA + 9 * K4, 99).unwrap();
    assert_eq!(read(&bo, 9 * K4), 99);
    assert_eq!(t.vm.with_state(|st| st.gpuvm.tree().len()), 2);
}

#[test]
fn unbind_all_removes_every_mapping_of_the_bo() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (a, b) = (r.bo(4 * K4), r.bo(4 * K4));
    t.bind(&[
        BindOp::map(&a, 0, VA, 4 * K4),
        BindOp::map(&a, 0, VA + MIB, 2 * K4),
        BindOp::map(&b, 0, VA + 2 * MIB, 4 * K4),
    ])
    .unwrap();
    t.bind(&[BindOp::unmap_all(&a)]).unwrap();
    assert!(r.translate(&t.vm, VA, Access::Read).is_none());
    assert!(r.translate(&t.vm, VA + MIB, Access::Read).is_none());
    t.store(VA + 2 * MIB, 5).unwrap();
    assert_eq!(read(&b, 0), 5);
    t.vm.with_state(|st| {
        assert_eq!(st.gpuvm.tree().len(), 1);
        assert!(st.gpuvm.bo_find(crate::vm::GpuBo::id(&*a)).is_none());
    });
    assert_eq!(t.vm.lists_snapshot().0, vec![crate::vm::GpuBo::id(&*b)]);
}

/// munmap-style: unmap a range spanning the end of one mapping and the start of the next.
#[test]
fn munmap_style_unbind_across_mappings() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(32 * K4);
    t.bind(&[
        BindOp::map(&bo, 0, VA, 8 * K4),
        BindOp::map(&bo, 8 * K4, VA + 8 * K4, 8 * K4),
        BindOp::map(&bo, 16 * K4, VA + 16 * K4, 8 * K4),
    ])
    .unwrap();
    t.bind(&[BindOp::unmap(VA + 6 * K4, 12 * K4)]).unwrap();
    for p in 0..24u64 {
        let mapped = r.translate(&t.vm, VA + p * K4, Access::Write).is_some();
        assert_eq!(mapped, !(6..18).contains(&p), "page {p}");
    }
    t.store(VA + 5 * K4, 1).unwrap();
    t.store(VA + 18 * K4, 2).unwrap();
    assert_eq!((read(&bo, 5 * K4), read(&bo, 18 * K4)), (1, 2));
}

/// munmap-style: unmapping the whole range frees the page tables it needed.
#[test]
fn munmap_style_unbind_all_frees_tables() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(8 * K4);
    let before = t.vm.with_pt(|pt| pt.stats().tables);
    t.bind(&[BindOp::map(&bo, 0, 0x40_0000_0000, 8 * K4)])
        .unwrap();
    assert!(t.vm.with_pt(|pt| pt.stats().tables) > before);
    t.bind(&[BindOp::unmap(0x40_0000_0000, 8 * K4)]).unwrap();
    assert_eq!(t.vm.with_pt(|pt| pt.stats().tables), before);
}

/// mmap-style: bind over an existing mapping replaces the middle with another BO.
#[test]
fn mmap_style_bind_over_existing() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (a, b) = (r.bo(16 * K4), r.bo(4 * K4));
    t.bind(&[BindOp::map(&a, 0, VA, 16 * K4)]).unwrap();
    t.bind(&[BindOp::map(&b, 0, VA + 4 * K4, 4 * K4)]).unwrap();
    t.store(VA + 3 * K4, 1).unwrap();
    t.store(VA + 4 * K4, 2).unwrap();
    t.store(VA + 8 * K4, 3).unwrap();
    assert_eq!(read(&a, 3 * K4), 1);
    assert_eq!(read(&b, 0), 2);
    assert_eq!(read(&a, 4 * K4), 0, "the replaced pages of A are untouched");
    assert_eq!(read(&a, 8 * K4), 3);
    assert_eq!(t.vm.with_state(|st| st.gpuvm.tree().len()), 3);
}

/// bind-array: many ops in one call, planned against each other.
#[test]
fn bind_array_ops_see_each_other() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(64 * K4);
    let mut ops: Vec<BindOp> = (0..64)
        .map(|i| BindOp::map(&bo, i * K4, VA + i * K4, K4))
        .collect();
    ops.push(BindOp::unmap(VA + 10 * K4, K4));
    ops.push(BindOp::map(&bo, 0, VA + 10 * K4, K4));
    t.bind(&ops).unwrap();
    t.store(VA + 10 * K4 + 8, 11).unwrap();
    t.store(VA + 63 * K4, 63).unwrap();
    assert_eq!(read(&bo, 8), 11, "page 10 now maps BO page 0");
    assert_eq!(read(&bo, 63 * K4), 63);
}

/// large-binds: 2 MiB-aligned BO maps use large pages; a 1 GiB null bind maps and unmaps.
#[test]
fn large_binds_up_to_1g() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    for size in [2 * MIB, 4 * MIB, 8 * MIB] {
        let bo = r.bo(size);
        let va = 0x80_0000_0000 + size * 4;
        t.bind(&[BindOp::map(&bo, 0, va, size)]).unwrap();
        t.store(va + size - 8, size).unwrap();
        assert_eq!(read(&bo, size - 8), size);
        t.bind(&[BindOp::unmap(va, size)]).unwrap();
        assert!(r.translate(&t.vm, va, Access::Read).is_none());
    }
    let g = 1 << 30;
    t.bind(&[BindOp::map_null(0x100_0000_0000, g)]).unwrap();
    let tr = r
        .translate(&t.vm, 0x100_0000_0000 + g - 8, Access::Write)
        .unwrap();
    assert!(tr.null);
    t.store(0x100_0000_0000 + 12345 * 8, 1).unwrap();
    t.bind(&[BindOp::unmap(0x100_0000_0000, g)]).unwrap();
    assert!(r.translate(&t.vm, 0x100_0000_0000, Access::Read).is_none());
}

/// shared-pte-page: two mappings in the same level-0 table; unmapping one keeps the other.
#[test]
fn shared_pte_page() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let (a, b) = (r.bo(K4), r.bo(K4));
    t.bind(&[BindOp::map(&a, 0, VA, K4), BindOp::map(&b, 0, VA + K4, K4)])
        .unwrap();
    t.bind(&[BindOp::unmap(VA, K4)]).unwrap();
    t.store(VA + K4, 77).unwrap();
    assert_eq!(read(&b, 0), 77);
    assert!(r.translate(&t.vm, VA, Access::Read).is_none());
}

/// scratch: unmapped VAs write the scratch page instead of faulting; a bind overrides it.
#[test]
fn scratch_page_vm() {
    let r = rig();
    let t = r.vm(VmFlags::SCRATCH_PAGE);
    t.store(0x7777_0000, 1).unwrap();
    let bo = r.bo(K4);
    t.bind(&[BindOp::map(&bo, 0, 0x7777_0000, K4)]).unwrap();
    t.store(0x7777_0000, 2).unwrap();
    assert_eq!(read(&bo, 0), 2);
    t.bind(&[BindOp::unmap(0x7777_0000, K4)]).unwrap();
    t.store(0x7777_0000, 3).unwrap();
    assert_eq!(
        read(&bo, 0),
        2,
        "after unbind the scratch page takes the write"
    );
}

/// A write to an unmapped VA of a non-scratch VM faults the context.
#[test]
fn unmapped_write_faults_without_scratch() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    assert!(t.store(0x7777_0000, 1).is_err());
}

#[test]
fn null_binding_reads_zero_and_drops_writes() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(K4);
    write(&bo, 0, 0x55);
    t.bind(&[
        BindOp::map_null(VA, 16 * K4),
        BindOp::map(&bo, 0, VA + MIB, K4),
    ])
    .unwrap();
    t.store(VA + 8, 9).unwrap();
    t.copy8(VA + 8, VA + MIB).unwrap();
    assert_eq!(read(&bo, 0), 0, "null pages read zero");
}

#[test]
fn readonly_binding_refuses_gpu_writes() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(2 * K4);
    write(&bo, 0, 0x1234);
    t.bind(&[
        BindOp::map(&bo, 0, VA, K4).with_flags(BindFlags::READONLY),
        BindOp::map(&bo, K4, VA + K4, K4),
    ])
    .unwrap();
    t.copy8(VA, VA + K4).unwrap();
    assert_eq!(
        read(&bo, K4),
        0x1234,
        "reads through a read-only mapping work"
    );
    assert!(r.translate(&t.vm, VA, Access::Write).is_none());
    assert!(t.store(VA, 1).is_err(), "a write through it faults");
    assert_eq!(read(&bo, 0), 0x1234);
}

#[test]
fn system_memory_bo_binds() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.sys_bo(4 * K4);
    t.bind(&[BindOp::map(&bo, 0, VA, 4 * K4)]).unwrap();
    t.store(VA + 3 * K4, 42).unwrap();
    assert_eq!(read(&bo, 3 * K4), 42);
}

#[test]
fn flag_validation_table() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(4 * K4);
    let cases: Vec<(BindOp, ErrorClass)> = vec![
        (BindOp::map(&bo, 0, VA + 1, K4), ErrorClass::Invalid),
        (BindOp::map(&bo, 0, VA, 0), ErrorClass::Invalid),
        (BindOp::map(&bo, 0, VA, 8 * K4), ErrorClass::Invalid),
        (BindOp::map(&bo, 2 * K4, VA, 4 * K4), ErrorClass::Invalid),
        (BindOp::map(&bo, 123, VA, K4), ErrorClass::Invalid),
        (
            BindOp::map(&bo, 0, VA, K4).with_flags(BindFlags::NULL),
            ErrorClass::Invalid,
        ),
        (
            BindOp::unmap(VA, K4).with_flags(BindFlags::NULL),
            ErrorClass::Invalid,
        ),
        (
            BindOp::map_null(VA, K4).with_flags(BindFlags::CPU_ADDR_MIRROR),
            ErrorClass::Invalid,
        ),
        (
            BindOp {
                addr: crate::types::GpuVa(VA),
                ..BindOp::unmap_all(&bo)
            },
            ErrorClass::Invalid,
        ),
        (
            BindOp {
                bo: Some(bo.clone()),
                ..BindOp::unmap(VA, K4)
            },
            ErrorClass::Invalid,
        ),
        (
            BindOp {
                bo: Some(bo.clone()),
                ..BindOp::prefetch(VA, K4)
            },
            ErrorClass::Invalid,
        ),
        (BindOp::map(&bo, 0, 1 << 48, K4), ErrorClass::Invalid),
        (
            // A VM without an owner has no address space to resolve: EFAULT.
            BindOp::map_userptr(0x10_0000, VA, K4),
            ErrorClass::Fault,
        ),
    ];
    for (i, (op, class)) in cases.into_iter().enumerate() {
        let e = t.bind(&[op]).unwrap_err();
        assert_eq!(e.class(), class, "case {i}: {e}");
    }
    assert_eq!(t.vm.with_state(|st| st.gpuvm.tree().len()), 0);
    // CPU_ADDR_MIRROR on a fault-mode VM is valid but waits for SVM.
    let f = r
        .dev
        .vm_create(VmFlags::LR_MODE | VmFlags::FAULT_MODE)
        .unwrap();
    let e = f
        .bind(
            None,
            &[BindOp::map_null(VA, K4)
                .with_flags(BindFlags::CPU_ADDR_MIRROR)
                .with_flags(BindFlags::empty())],
            &[],
        )
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Invalid, "NULL|MIRROR is invalid");
}

#[test]
fn vm_create_flag_rules() {
    let r = rig();
    for (flags, ok) in [
        (
            VmFlags::SCRATCH_PAGE | VmFlags::FAULT_MODE | VmFlags::LR_MODE,
            false,
        ),
        (VmFlags::FAULT_MODE, false),
        (VmFlags::FAULT_MODE | VmFlags::LR_MODE, true),
        (VmFlags::LR_MODE, true),
        (VmFlags::SCRATCH_PAGE, true),
    ] {
        assert_eq!(r.dev.vm_create(flags).is_ok(), ok, "{flags:?}");
    }
}

/// Two VMs map the same external BO; writes from both land in it.
#[test]
fn external_bo_shared_by_two_vms() {
    let r = rig();
    let (a, b) = (r.vm(VmFlags::empty()), r.vm(VmFlags::empty()));
    let bo = r.bo(K4);
    a.bind(&[BindOp::map(&bo, 0, VA, K4)]).unwrap();
    b.bind(&[BindOp::map(&bo, 0, VA + MIB, K4)]).unwrap();
    a.store(VA, 1).unwrap();
    b.store(VA + MIB + 8, 2).unwrap();
    assert_eq!((read(&bo, 0), read(&bo, 8)), (1, 2));
    assert_eq!(
        a.vm.lists_snapshot().0.len(),
        1,
        "an external BO is an extobj"
    );
}

/// A VM-private BO shares the VM resv and is not an extobj.
#[test]
fn private_bo_is_not_an_extobj() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r
        .dev
        .bo_create(K4, crate::mem::bo::Placement::Vram, Some(&t.vm))
        .unwrap();
    t.bind(&[BindOp::map(&bo, 0, VA, K4)]).unwrap();
    t.store(VA, 3).unwrap();
    assert_eq!(read(&bo, 0), 3);
    assert!(t.vm.lists_snapshot().0.is_empty());
}

/// Large batches go to the copy engine through the kernel queue; the result is the same.
#[test]
fn large_batch_writes_through_the_copy_engine() {
    let clock = std::sync::Arc::new(crate::hw::FakeClock::new());
    let dev = crate::device::Device::new(crate::device::DeviceConfig {
        clock,
        sys_size: 32 * MIB,
        pt_copy_threshold: 16,
        ..crate::device::DeviceConfig::default()
    })
    .unwrap();
    let r = Rig {
        dev,
        clock: std::sync::Arc::new(crate::hw::FakeClock::new()),
    };
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(64 * K4);
    let before = r.dev.pt_copy_jobs();
    t.bind(&[BindOp::map(&bo, 0, VA + K4, 64 * K4)]).unwrap();
    assert!(
        r.dev.pt_copy_jobs() > before,
        "the batch took the copy-engine path"
    );
    for p in [0, 31, 63] {
        let tr = r.translate(&t.vm, VA + K4 + p * K4, Access::Write).unwrap();
        assert_eq!(tr.phys, bo_pa(&bo, p * K4));
    }
    t.store(VA + K4 + 63 * K4, 6).unwrap();
    assert_eq!(read(&bo, 63 * K4), 6);
}

#[test]
fn errors_map_to_driver_error_classes() {
    use gpu_scheme::driver::DriverError as D;
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(K4);
    let e = t.bind(&[BindOp::map(&bo, 0, VA, 2 * K4)]).unwrap_err();
    assert!(matches!(D::from(&e), D::Invalid(_)), "{e}");
    let e =
        t.vm.bind(
            None,
            &[],
            &[crate::bind::BindSync::UserFence {
                va: crate::types::GpuVa(8),
                value: 1,
            }],
        )
        .unwrap_err();
    assert!(matches!(D::from(&e), D::NotSupported(_)), "{e}");
    r.dev.vm_destroy(&t.vm);
    let e = t.bind(&[BindOp::unmap(VA, K4)]).unwrap_err();
    assert_eq!(D::from(&e), D::VmGone);
}

/// A context freed by one VM and handed to the next must not carry the old VM's cached
/// translations: the new VM never mapped `VA`, so reading it faults instead of reaching the
/// old VM's (freed) BO.
#[test]
fn reused_context_starts_with_an_empty_tlb() {
    let r = rig();
    let a = r.vm(VmFlags::empty());
    let secret = r.bo(K4);
    write(&secret, 0, 0x5ec2_e7ed);
    let out = r.bo(K4);
    a.bind(&[
        BindOp::map(&secret, 0, VA, K4),
        BindOp::map(&out, 0, VA + 0x10_0000, K4),
    ])
    .unwrap();
    // The copy walks VA and leaves its translation in the TLB.
    a.copy8(VA, VA + 0x10_0000).unwrap();
    assert_eq!(read(&out, 0), 0x5ec2_e7ed);
    let ctx = a.vm.ctx().expect("a VM that ran a job holds a context");
    r.dev.vm_destroy(&a.vm);
    drop(a);
    let b = r.vm(VmFlags::empty());
    let out_b = r.bo(K4);
    b.bind(&[BindOp::map(&out_b, 0, VA + 0x10_0000, K4)])
        .unwrap();
    b.store(VA + 0x10_0008, 1).unwrap();
    assert_eq!(b.vm.ctx(), Some(ctx), "the freed context is reused");
    assert!(
        b.copy8(VA, VA + 0x10_0000).is_err(),
        "unmapped VA translated"
    );
    assert_ne!(
        read(&out_b, 0),
        0x5ec2_e7ed,
        "read through a stale translation"
    );
}

/// A VM whose context never ran a job has nothing cached: binds and unbinds change entries
/// without a TLB invalidation. Once a job was submitted, every changed valid entry is
/// invalidated again (and the GPU sees the new mapping).
#[test]
fn invalidations_start_with_the_first_job_of_the_vm() {
    use crate::hw::regs;
    let r = rig();
    let requests = || {
        r.dev
            .gpu()
            .expect("simgpu")
            .mmio_read32(regs::TLB_INV_REQ_SEQNO)
    };
    let t = r.vm(VmFlags::empty());
    let (a, b) = (r.bo(K4), r.bo(K4));
    let before = requests();
    for _ in 0..4 {
        t.bind(&[BindOp::map(&a, 0, VA, K4)]).unwrap();
        t.bind(&[BindOp::unmap(VA, K4)]).unwrap();
    }
    assert_eq!(requests(), before, "an unused context was invalidated");
    t.bind(&[BindOp::map(&a, 0, VA, K4)]).unwrap();
    t.store(VA, 1).unwrap();
    // The job's context was flushed when the VM got it: one request.
    assert_eq!(requests(), before + 1, "a new context is flushed once");
    t.bind(&[BindOp::map(&b, 0, VA, K4)]).unwrap();
    assert_eq!(
        requests(),
        before + 2,
        "a remap after a job must invalidate"
    );
    t.store(VA, 2).unwrap();
    assert_eq!((read(&a, 0), read(&b, 0)), (1, 2));
}

/// A system BO made of several pool regions (the pool is fragmented) maps page by page to
/// the right regions: GPU stores to every page land where the CPU reads them.
#[test]
fn scattered_system_bo_binds_and_the_gpu_writes_every_page() {
    let r = rig_with(16 * MIB, 8 * MIB);
    let mut all = Vec::new();
    while let Ok(bo) = r
        .dev
        .bo_create(64 << 10, crate::mem::bo::Placement::System, None)
    {
        all.push(bo);
    }
    let keep: Vec<_> = all.iter().step_by(2).cloned().collect();
    drop(all);
    let t = r.vm(VmFlags::empty());
    let bo = r.sys_bo(4 * (64 << 10));
    assert!(bo.segments().len() >= 2, "{:?}", bo.segments());
    t.bind(&[BindOp::map(&bo, 0, VA, 4 * (64 << 10))]).unwrap();
    for p in 0..64u64 {
        t.store(VA + p * K4 + 8, 0x5000 + p).unwrap();
    }
    for p in 0..64u64 {
        assert_eq!(read(&bo, p * K4 + 8), 0x5000 + p, "page {p}");
    }
    drop(keep);
}

/// The PAT index of a mapping stays with its pieces: after unmapping the middle of an
/// uncached mapping, both remaining pieces still carry the uncached mode in their PTEs.
#[test]
fn pat_index_survives_a_split() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.bo(4 * K4);
    t.bind(&[BindOp::map(&bo, 0, VA, 4 * K4).with_pat_index(3)])
        .unwrap();
    t.bind(&[BindOp::unmap(VA + K4, K4)]).unwrap();
    for p in [0, 2, 3] {
        let tr = r.translate(&t.vm, VA + p * K4, Access::Read).unwrap();
        assert_eq!(tr.cache, 1, "page {p}: uncached");
    }
    let e = t
        .bind(&[BindOp::map(&bo, 0, VA + K4, K4).with_pat_index(4)])
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Invalid);
}

/// xe_vm's bind-one-bo-many-times: one BO mapped at many addresses up to the last page of the
/// 48-bit space (0xffff_ffff_f000), every mapping reaching the same memory. The top 4 GiB
/// used to be reserved for the driver (EINVAL there).
#[test]
fn one_bo_bound_many_times_up_to_the_top_page_of_the_va_space() {
    let r = rig();
    let t = r.vm(VmFlags::empty());
    let bo = r.sys_bo(K4);
    let top = crate::bind::VA_SPACE - K4;
    assert_eq!(top, 0xffff_ffff_f000);
    let vas = [VA, top - (1 << 32), top - 0x10_0000, top];
    for va in vas {
        t.bind(&[BindOp::map(&bo, 0, va, K4)]).unwrap();
    }
    for (i, va) in vas.into_iter().enumerate() {
        t.store(va + 8 * i as u64, 0x70B0 + i as u64).unwrap();
        assert!(r.translate(&t.vm, va, Access::Write).is_some(), "{va:#x}");
    }
    for i in 0..vas.len() as u64 {
        assert_eq!(read(&bo, 8 * i), 0x70B0 + i, "written through mapping {i}");
    }
    t.bind(&[BindOp::unmap(top, K4)]).unwrap();
    assert!(r.translate(&t.vm, top, Access::Read).is_none());
}
