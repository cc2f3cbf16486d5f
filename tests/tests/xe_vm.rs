//! The xe_vm conformance scenarios (`../shared/reference/conformance-scenarios.md`), each run
//! through the scheme from a separate client process and verified by GPU stores read back
//! through BO mmap. A store to an unmapped VA of a SCRATCH_PAGE VM lands in the scratch page,
//! so "unmapped" is checked as "the BO did not change".

use gpu_tests::{client_process, read_u32, stat, sys_bo, Gpu};
use libgpu::cmd::{Batch, SemOp};
use libgpu::errno::*;
use libgpu::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags, WaitOp};
use libgpu::{Bo, Device, ExecQueue, Syncobj, Timeout, Vm};

const PAGE: u64 = 0x1000;
const BASE: u64 = 0x10_0000;

macro_rules! scenario {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            client_process(stringify!($name), $body);
        }
    };
}

fn scratch_vm(dev: &Device) -> Gpu {
    Gpu::new(dev, VmCreateFlags::SCRATCH_PAGE)
}

fn gpu_mappings(dev: &Device) -> u64 {
    stat(&dev.stats().expect("stats"), "client-gpu-mappings").unwrap_or(u64::MAX)
}

/// Maps `bo` page by page at `va`, stores `tag + page` in each page through the GPU, checks.
fn store_pages(g: &Gpu, bo: &Bo, va: u64, pages: u64, tag: u32) {
    let writes: Vec<(u64, u32)> = (0..pages)
        .map(|p| (va + p * PAGE, tag + p as u32))
        .collect();
    g.store(&writes);
    for p in 0..pages {
        assert_eq!(
            read_u32(bo, (p * PAGE) as usize),
            tag + p as u32,
            "page {p}"
        );
    }
}

scenario!(bind_once, |dev| {
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, PAGE);
    g.vm.bind().map(&bo, 0, BASE, PAGE).submit().expect("bind");
    store_pages(&g, &bo, BASE, 1, 0xA0);
    g.vm.bind().unmap(BASE, PAGE).submit().expect("unbind");
    g.store(&[(BASE, 0xDEAD)]);
    assert_eq!(
        read_u32(&bo, 0),
        0xA0,
        "unmapped store hit the scratch page"
    );
});

scenario!(bind_one_bo_many_times, |dev| {
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, PAGE);
    for i in 0..16u64 {
        g.vm.bind()
            .map(&bo, 0, BASE + i * 0x10_0000, PAGE)
            .submit()
            .expect("bind");
    }
    let writes: Vec<(u64, u32)> = (0..16u64)
        .map(|i| (BASE + i * 0x10_0000 + i * 4, i as u32 + 1))
        .collect();
    g.store(&writes);
    for i in 0..16u64 {
        assert_eq!(read_u32(&bo, (i * 4) as usize), i as u32 + 1);
    }
});

scenario!(partial_unbinds, |dev| {
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, 4 * PAGE);
    g.vm.bind()
        .map(&bo, 0, BASE, 4 * PAGE)
        .submit()
        .expect("bind");
    g.vm.bind()
        .unmap(BASE + PAGE, PAGE)
        .submit()
        .expect("unbind middle");
    g.store(&[(BASE, 1), (BASE + PAGE, 2), (BASE + 2 * PAGE, 3)]);
    assert_eq!(read_u32(&bo, 0), 1);
    assert_eq!(read_u32(&bo, PAGE as usize), 0, "hole");
    assert_eq!(read_u32(&bo, 2 * PAGE as usize), 3);
});

scenario!(unbind_all_2_vmas, |dev| {
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, PAGE);
    g.vm.bind()
        .map(&bo, 0, BASE, PAGE)
        .map(&bo, 0, 2 * BASE, PAGE)
        .submit()
        .expect("bind");
    let before = gpu_mappings(dev);
    g.vm.bind().unmap_all(&bo).submit().expect("unbind all");
    assert_eq!(gpu_mappings(dev) + 2, before);
    g.store(&[(BASE, 7), (2 * BASE + 4, 8)]);
    assert_eq!((read_u32(&bo, 0), read_u32(&bo, 4)), (0, 0));
});

scenario!(shared_pte_page, |dev| {
    let g = scratch_vm(dev);
    let a = sys_bo(dev, PAGE);
    let b = sys_bo(dev, PAGE);
    g.vm.bind()
        .map(&a, 0, BASE, PAGE)
        .map(&b, 0, BASE + PAGE, PAGE)
        .submit()
        .expect("bind");
    g.vm.bind().unmap(BASE, PAGE).submit().expect("unbind a");
    g.store(&[(BASE, 1), (BASE + PAGE, 2)]);
    assert_eq!(read_u32(&a, 0), 0);
    assert_eq!(
        read_u32(&b, 0),
        2,
        "the neighbour in the same table page survives"
    );
});

/// IGT's address of the first bind in the bind-execqueues-* scenarios.
const IGT_ADDR: u64 = 0x1a_0000;
/// A bound that only matters if the bind queues are not independent (the bug it pins).
const BOUNDED: Timeout = Timeout::Relative(30_000_000_000);

/// A BO whose page holds a batch at 0x100 (the data at 0 is left to the caller).
fn batch_page(dev: &Device, batch: &Batch) -> Bo {
    let bo = sys_bo(dev, PAGE);
    bo.mmap()
        .expect("mmap")
        .write_dwords(0x100, batch.dwords())
        .expect("batch fits");
    bo
}

// bind-execqueues-independent with IGT's addresses: bind at 0x1a0000 and wait; a spinner on
// exec queue 0 (a semaphore on the dword at 0x1a0000); a bind at 0x1a1000 on bind queue 0
// waiting on the spinner; a bind at 0x1a2000 on bind queue 1, then an exec through it on
// exec queue 1. Both binds write entries of the one leaf table page the first bind built:
// queue 1's bind and exec complete while the spinner still runs.
scenario!(bind_execqueues_independent, |dev| {
    let g = scratch_vm(dev);
    let (b0, b1) = (
        ExecQueue::create(&g.vm, EngineClass::VmBind).expect("bind queue 0"),
        ExecQueue::create(&g.vm, EngineClass::VmBind).expect("bind queue 1"),
    );
    let e1 = ExecQueue::create(&g.vm, EngineClass::Compute).expect("exec queue 1");
    let sync = || Syncobj::create(dev, false).expect("syncobj");
    let (spun, s0, s1, x1) = (sync(), sync(), sync(), sync());
    let mut spin = Batch::new();
    spin.semaphore_wait(IGT_ADDR, SemOp::Gte, 1, false)
        .batch_end();
    let cork = batch_page(dev, &spin);
    g.vm.bind()
        .queue(&b0)
        .map(&cork, 0, IGT_ADDR, PAGE)
        .submit()
        .expect("initial bind");
    g.queue
        .exec(IGT_ADDR + 0x100)
        .signal(&spun)
        .submit()
        .expect("spinner");
    let blocked = sys_bo(dev, PAGE);
    g.vm.bind()
        .queue(&b0)
        .map(&blocked, 0, IGT_ADDR + PAGE, PAGE)
        .wait(&spun)
        .signal(&s0)
        .submit()
        .expect("bind queue 0 behind the spinner");
    let mut store = Batch::new();
    store.store_dword(IGT_ADDR + 2 * PAGE, 0xc0ffee).batch_end();
    let free = batch_page(dev, &store);
    g.vm.bind()
        .queue(&b1)
        .map(&free, 0, IGT_ADDR + 2 * PAGE, PAGE)
        .signal(&s1)
        .submit()
        .expect("bind queue 1");
    e1.exec(IGT_ADDR + 2 * PAGE + 0x100)
        .wait(&s1)
        .signal(&x1)
        .submit()
        .expect("exec through bind queue 1");
    assert!(
        s1.wait(BOUNDED).expect("s1"),
        "bind queue 1 waited for queue 0"
    );
    assert!(
        x1.wait(BOUNDED).expect("x1"),
        "the exec through queue 1's bind"
    );
    // Had queue 1 waited for queue 0, both would only have signalled once the spinner
    // ended (here: killed by the job timeout, failing both binds).
    assert!(
        !spun.wait(Timeout::Poll).expect("spinner"),
        "queue 1 completed only after the spinner ended"
    );
    assert!(!s0.wait(Timeout::Poll).expect("s0"), "queue 0 still corked");
    assert_eq!(read_u32(&free, 0), 0xc0ffee);
    cork.mmap()
        .expect("mmap")
        .write_u64(0, 1)
        .expect("end spinner");
    assert!(s0.wait(Timeout::Forever).expect("s0"));
    g.store(&[(IGT_ADDR + PAGE, 7)]);
    assert_eq!(read_u32(&blocked, 0), 7);
});

fn array_bind(dev: &Device, n: u64, rounds: u32) {
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, n * PAGE);
    for round in 0..rounds {
        let mut bind = g.vm.bind();
        for i in 0..n {
            bind = bind.map(&bo, i * PAGE, BASE + i * 2 * PAGE, PAGE);
        }
        bind.submit().expect("array bind");
        let writes: Vec<(u64, u32)> = (0..n)
            .map(|i| (BASE + i * 2 * PAGE, round * 1000 + i as u32))
            .collect();
        g.store(&writes);
        for i in 0..n {
            assert_eq!(read_u32(&bo, (i * PAGE) as usize), round * 1000 + i as u32);
        }
        let mut unbind = g.vm.bind();
        for i in 0..n {
            unbind = unbind.unmap(BASE + i * 2 * PAGE, PAGE);
        }
        unbind.submit().expect("array unbind");
    }
}

scenario!(bind_array_twice, |dev| array_bind(dev, 16, 2));
scenario!(bind_array_many, |dev| array_bind(dev, 128, 3));

fn large(dev: &Device, size: u64, split: bool) {
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, size);
    let va = 0x4000_0000;
    g.vm.bind()
        .map(&bo, 0, va, size)
        .submit()
        .expect("large bind");
    let last = size - PAGE;
    g.store(&[(va, 1), (va + size / 2, 2), (va + last, 3)]);
    assert_eq!(read_u32(&bo, 0), 1);
    assert_eq!(read_u32(&bo, (size / 2) as usize), 2);
    assert_eq!(read_u32(&bo, last as usize), 3);
    if split {
        g.vm.bind()
            .unmap(va, size / 2)
            .submit()
            .expect("split unbind");
        g.store(&[(va + 4, 9), (va + last + 4, 10)]);
        assert_eq!(read_u32(&bo, 4), 0, "front half unmapped");
        assert_eq!(read_u32(&bo, (last + 4) as usize), 10);
    }
    g.vm.bind().unmap(va, size).submit().expect("unbind");
}

scenario!(large_binds_2m, |dev| large(dev, 2 << 20, false));
scenario!(large_binds_4m, |dev| large(dev, 4 << 20, false));
scenario!(large_binds_8m, |dev| large(dev, 8 << 20, false));
scenario!(large_split_binds_2m, |dev| large(dev, 2 << 20, true));
scenario!(large_split_binds_4m, |dev| large(dev, 4 << 20, true));

/// Maps 4 pages, unmaps `[first, first + count)` pages, checks which pages still map.
fn munmap_style(dev: &Device, first: u64, count: u64) {
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, 4 * PAGE);
    g.vm.bind()
        .map(&bo, 0, BASE, 4 * PAGE)
        .submit()
        .expect("bind");
    g.vm.bind()
        .unmap(BASE + first * PAGE, count * PAGE)
        .submit()
        .expect("unbind");
    let writes: Vec<(u64, u32)> = (0..4)
        .map(|p| (BASE + p * PAGE, 0x100 + p as u32))
        .collect();
    g.store(&writes);
    for p in 0..4u64 {
        let unmapped = p >= first && p < first + count;
        let want = if unmapped { 0 } else { 0x100 + p as u32 };
        assert_eq!(read_u32(&bo, (p * PAGE) as usize), want, "page {p}");
    }
}

scenario!(munmap_style_unbind_one_partial, |dev| munmap_style(
    dev, 1, 1
));
scenario!(munmap_style_unbind_front, |dev| munmap_style(dev, 0, 2));
scenario!(munmap_style_unbind_end, |dev| munmap_style(dev, 2, 2));
scenario!(munmap_style_unbind_all, |dev| munmap_style(dev, 0, 4));

/// Maps A over 4 pages, then B over `[first, first + count)`: stores land in B there.
fn mmap_style(dev: &Device, first: u64, count: u64) {
    let g = scratch_vm(dev);
    let a = sys_bo(dev, 4 * PAGE);
    let b = sys_bo(dev, 4 * PAGE);
    g.vm.bind()
        .map(&a, 0, BASE, 4 * PAGE)
        .submit()
        .expect("bind a");
    g.vm.bind()
        .map(&b, first * PAGE, BASE + first * PAGE, count * PAGE)
        .submit()
        .expect("bind b over a");
    let writes: Vec<(u64, u32)> = (0..4)
        .map(|p| (BASE + p * PAGE, 0x200 + p as u32))
        .collect();
    g.store(&writes);
    for p in 0..4u64 {
        let in_b = p >= first && p < first + count;
        let (hit, miss) = if in_b { (&b, &a) } else { (&a, &b) };
        assert_eq!(
            read_u32(hit, (p * PAGE) as usize),
            0x200 + p as u32,
            "page {p}"
        );
        assert_eq!(read_u32(miss, (p * PAGE) as usize), 0, "page {p}");
    }
}

scenario!(mmap_style_bind_one_partial, |dev| mmap_style(dev, 1, 1));
scenario!(mmap_style_bind_front, |dev| mmap_style(dev, 0, 2));
scenario!(mmap_style_bind_end, |dev| mmap_style(dev, 2, 2));
scenario!(mmap_style_bind_all, |dev| mmap_style(dev, 0, 4));

scenario!(invalid_flag_fault_mode_without_lr, |dev| {
    let e = Vm::create(dev, VmCreateFlags::FAULT_MODE).expect_err("FAULT without LR");
    assert_eq!(e.errno(), EINVAL);
    let both = VmCreateFlags::FAULT_MODE | VmCreateFlags::LR_MODE | VmCreateFlags::SCRATCH_PAGE;
    assert_eq!(
        Vm::create(dev, both).expect_err("scratch+fault").errno(),
        EINVAL
    );
});

scenario!(invalid_flag_null_with_bo_and_misaligned, |dev| {
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, 2 * PAGE);
    let e = g.vm.bind().map(&bo, 0, BASE + 8, PAGE).submit();
    assert_eq!(e.expect_err("misaligned").errno(), EINVAL);
    let e = g.vm.bind().map(&bo, 0, BASE, 3 * PAGE).submit();
    assert_eq!(e.expect_err("past the BO").errno(), EINVAL);
    let e = g.vm.bind().unmap(BASE, 0).submit();
    assert_eq!(e.expect_err("zero range").errno(), EINVAL);
    g.vm.bind()
        .map(&bo, 0, BASE, PAGE)
        .submit()
        .expect("still serving");
    store_pages(&g, &bo, BASE, 1, 5);
});

scenario!(invalid_vm_id, |dev| {
    let g = scratch_vm(dev);
    let queue_vm = Vm::create(dev, VmCreateFlags::empty()).expect("vm");
    let other = ExecQueue::create(&queue_vm, EngineClass::VmBind).expect("bind queue");
    let bo = sys_bo(dev, PAGE);
    // A bind queue of another VM does not belong to this VM.
    let e = g.vm.bind().queue(&other).map(&bo, 0, BASE, PAGE).submit();
    assert!(e.is_err());
});

scenario!(scratch, |dev| {
    let g = scratch_vm(dev);
    // Stores to nothing mapped complete (the scratch page takes them) and the VM lives on.
    g.store(&[(0x1234_0000, 1), (0x5678_0000, 2)]);
    let bo = sys_bo(dev, PAGE);
    g.vm.bind()
        .map(&bo, 0, BASE, PAGE)
        .submit()
        .expect("bind after scratch");
    store_pages(&g, &bo, BASE, 1, 77);
});

scenario!(out_of_memory, |dev| {
    let e = Bo::create(dev, 1 << 30, Placement::VRAM, BoCreateFlags::empty());
    let errno = e.expect_err("1 GiB of 16 MiB VRAM").errno();
    assert!(errno == ENOSPC || errno == ENOMEM, "errno {errno}");
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, PAGE);
    g.vm.bind()
        .map(&bo, 0, BASE, PAGE)
        .submit()
        .expect("still serving");
    store_pages(&g, &bo, BASE, 1, 3);
});

scenario!(null_binding, |dev| {
    let g = scratch_vm(dev);
    g.vm.bind()
        .map_null(BASE, 4 * PAGE)
        .submit()
        .expect("null bind");
    g.store(&[(BASE, 1)]);
    let bo = sys_bo(dev, PAGE);
    g.vm.bind()
        .map(&bo, 0, BASE, PAGE)
        .submit()
        .expect("bo over null");
    store_pages(&g, &bo, BASE, 1, 11);
});

scenario!(bind_user_fence_async, |dev| {
    let g = scratch_vm(dev);
    let fence_bo = sys_bo(dev, PAGE);
    let bo = sys_bo(dev, PAGE);
    g.vm.bind()
        .map(&fence_bo, 0, 0x200_0000, PAGE)
        .submit()
        .expect("fence bind");
    g.vm.bind()
        .map(&bo, 0, BASE, PAGE)
        .user_fence(0x200_0000, 0xF00D)
        .submit()
        .expect("bind with user fence");
    let ok =
        g.vm.wait_user_fence(0x200_0000, WaitOp::Eq, 0xF00D, u64::MAX, Timeout::Forever)
            .expect("wait user fence");
    assert!(ok);
    assert_eq!(read_u32(&fence_bo, 0), 0xF00D);
    store_pages(&g, &bo, BASE, 1, 21);
});

scenario!(readonly_binding_is_not_writable_by_user_fence, |dev| {
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, PAGE);
    g.vm.bind()
        .map(&bo, 0, BASE, PAGE)
        .readonly()
        .submit()
        .expect("ro bind");
    let other = sys_bo(dev, PAGE);
    let e =
        g.vm.bind()
            .map(&other, 0, 2 * BASE, PAGE)
            .user_fence(BASE, 1)
            .submit();
    assert_eq!(e.expect_err("user fence on RO").errno(), EFAULT);
});

scenario!(timeline_binds_in_order, |dev| {
    let g = scratch_vm(dev);
    let tl = Syncobj::create(dev, false).expect("timeline");
    let bos: Vec<Bo> = (0..4).map(|_| sys_bo(dev, PAGE)).collect();
    for (i, bo) in bos.iter().enumerate() {
        g.vm.bind()
            .map(bo, 0, BASE + i as u64 * PAGE, PAGE)
            .signal_point(&tl, i as u64 + 1)
            .submit()
            .expect("async bind");
    }
    assert!(tl.wait_point(4, Timeout::Forever).expect("point 4"));
    assert!(tl.query().expect("query") >= 4);
    let writes: Vec<(u64, u32)> = (0..4).map(|i| (BASE + i * PAGE, 40 + i as u32)).collect();
    g.store(&writes);
    for (i, bo) in bos.iter().enumerate() {
        assert_eq!(read_u32(bo, 0), 40 + i as u32);
    }
});

scenario!(large_binds_16m, |dev| large(dev, 16 << 20, false));
scenario!(large_split_binds_8m, |dev| large(dev, 8 << 20, true));

scenario!(unbind_all_many_vmas, |dev| {
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, PAGE);
    let mut bind = g.vm.bind();
    for i in 0..8 {
        bind = bind.map(&bo, 0, BASE + i * 0x10_0000, PAGE);
    }
    bind.submit().expect("bind");
    let before = gpu_mappings(dev);
    g.vm.bind().unmap_all(&bo).submit().expect("unbind all");
    assert_eq!(gpu_mappings(dev) + 8, before);
    g.store(&[(BASE, 7), (BASE + 0x70_0000 + 4, 8)]);
    assert_eq!((read_u32(&bo, 0), read_u32(&bo, 4)), (0, 0));
});

scenario!(rebind_same_range_switches_bo, |dev| {
    let g = scratch_vm(dev);
    let (a, b) = (sys_bo(dev, PAGE), sys_bo(dev, PAGE));
    g.vm.bind().map(&a, 0, BASE, PAGE).submit().expect("bind a");
    store_pages(&g, &a, BASE, 1, 1);
    g.vm.bind().map(&b, 0, BASE, PAGE).submit().expect("bind b");
    store_pages(&g, &b, BASE, 1, 2);
    assert_eq!(read_u32(&a, 0), 1, "a no longer mapped");
});

scenario!(vm_destroy_frees_its_memory, |dev| {
    let before = dev.query().expect("query").sys_free;
    {
        let g = scratch_vm(dev);
        let bo = sys_bo(dev, 64 * PAGE);
        g.vm.bind()
            .map(&bo, 0, BASE, 64 * PAGE)
            .submit()
            .expect("bind");
        store_pages(&g, &bo, BASE, 2, 9);
        assert!(dev.query().expect("query").sys_free < before);
    }
    assert_eq!(dev.query().expect("query").sys_free, before);
});

// xe_vm bind-one-bo-many-times: one BO at many VAs, the last page of the 48-bit space
// (0xffff_ffff_f000) included; DEVICE_QUERY reports no reserved range.
scenario!(bind_one_bo_many_times_up_to_the_top_page, |dev| {
    let info = dev.query().expect("query");
    assert_eq!(info.reserved_va_len, 0, "no VA reserved");
    let g = scratch_vm(dev);
    let bo = sys_bo(dev, PAGE);
    let top = (1u64 << 48) - PAGE;
    assert_eq!(top, 0xffff_ffff_f000);
    let vas = [BASE, top - (1 << 32), top - 0x10_0000, top];
    for va in vas {
        g.vm.bind().map(&bo, 0, va, PAGE).submit().expect("bind");
    }
    let writes: Vec<(u64, u32)> = (0..vas.len())
        .map(|i| (vas[i] + 4 * i as u64, 0x70B0 + i as u32))
        .collect();
    g.store(&writes);
    for i in 0..vas.len() {
        assert_eq!(read_u32(&bo, 4 * i), 0x70B0 + i as u32, "through VA {i}");
    }
    g.vm.bind()
        .unmap(top, PAGE)
        .submit()
        .expect("unbind the top");
});
