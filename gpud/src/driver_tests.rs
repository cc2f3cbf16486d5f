//! Tests of the driver: error mapping, each call on a real simulated device, GPU writes
//! checked by CPU reads, per-client accounting, and calls through `GpuScheme<Driver>`.

use super::*;
use crate::device::DeviceConfig;
use crate::hw::cmd::CommandStream;
use crate::mem::manager::MemError;
use crate::types::VmId;
use gpu_scheme::uapi::flags::{BindFlags as WireFlags, BoCreateFlags, QueuePriority};
use gpu_scheme::uapi::request::BindOp as WireOp;
use gpu_scheme::uapi::BoId as WireBoId;
use std::time::Duration;

fn driver() -> Driver {
    let cfg = DeviceConfig {
        vram_size: 8 << 20,
        sys_size: 16 << 20,
        contexts: 8,
        ..DeviceConfig::default()
    };
    let dev = Device::new(cfg).expect("device");
    Driver::new(Arc::new(dev), 16 << 20)
}

const C: ClientId = ClientId(1);

fn bo(d: &Driver, size: u64, placement: WirePlacement) -> Arc<Bo> {
    let req = BoCreateRequest {
        size,
        placement,
        flags: BoCreateFlags::empty(),
        vm: None,
    };
    d.bo_create(C, &req, None).expect("bo")
}

fn map(bo: &Arc<Bo>, addr: u64, range: u64) -> ResolvedBindOp<Arc<Bo>> {
    ResolvedBindOp {
        op: WireOp {
            kind: BindOpKind::Map {
                bo: WireBoId(1),
                bo_offset: 0,
            },
            addr,
            range,
            flags: WireFlags::empty(),
            pat_index: 0,
        },
        bo: Some(bo.clone()),
    }
}

fn unmap(addr: u64, range: u64) -> ResolvedBindOp<Arc<Bo>> {
    ResolvedBindOp {
        op: WireOp {
            kind: BindOpKind::Unmap,
            addr,
            range,
            flags: WireFlags::empty(),
            pat_index: 0,
        },
        bo: None,
    }
}

fn wait_signaled(d: &Driver, s: &Arc<Syncobj>, point: u64) {
    let f = if point == 0 {
        s.fence()
    } else {
        s.find_fence(point).ok()
    };
    let f = f.expect("fence attached");
    let _ = f.wait(Some(Duration::from_secs(10))).expect("waits");
    assert_eq!(d.syncobj_state(s, point), PointState::Signaled);
}

#[test]
fn bind_errors_map_to_the_documented_classes() {
    let vm = VmId(3);
    let cases: Vec<(BindError, DriverError)> = vec![
        (
            BindError::InvalidOp {
                index: 0,
                reason: "zero range",
            },
            DriverError::Invalid("zero range"),
        ),
        (BindError::VmGone { vm }, DriverError::VmGone),
        (
            BindError::Fault { va: GpuVa(0x1000) },
            DriverError::Fault { addr: 0x1000 },
        ),
        (
            BindError::NotSupported { what: "userptr" },
            DriverError::NotSupported("userptr"),
        ),
        (
            BindError::Mem(MemError::NoSpace {
                requested: 1 << 30,
                free: 0,
            }),
            DriverError::NoSpace { needed: 1 << 30 },
        ),
    ];
    for (e, want) in cases {
        assert_eq!(driver_error(&e), want, "{e}");
    }
}

#[test]
fn gpu_store_through_a_bound_bo_is_read_back() {
    let d = driver();
    let vm = d.vm_create(C, VmCreateFlags::empty()).expect("vm");
    let b = bo(&d, 0x2000, WirePlacement::SYSTEM);
    d.vm_bind(C, &vm, None, vec![map(&b, 0x10_0000, 0x2000)], vec![])
        .expect("bind");
    let mut cs = CommandStream::new();
    cs.store_dword(GpuVa(0x10_1000), 0xC0FFEE).batch_end();
    b.write(0, &cs.to_bytes()).expect("batch");
    let q = d
        .queue_create(
            C,
            &vm,
            EngineClass::Copy,
            QueuePriority::Normal,
            Default::default(),
        )
        .expect("exec queue");
    let done = d.syncobj_create(false).expect("syncobj");
    d.exec(
        C,
        &q,
        &[0x10_0000],
        vec![ResolvedSync::Signal(done.clone(), 0)],
    )
    .expect("exec");
    wait_signaled(&d, &done, 0);
    let mut word = [0u8; 4];
    b.read(0x1000, &mut word).expect("read");
    assert_eq!(u32::from_le_bytes(word), 0xC0FFEE);
    assert_eq!(
        d.user_fence_value(&vm, Some(&q), 0x10_1000)
            .expect("readable")
            & 0xffff_ffff,
        0xC0FFEE
    );
    assert_eq!(
        d.user_fence_value(&vm, None, 0x20_0000),
        Err(DriverError::Fault { addr: 0x20_0000 })
    );
}

/// WAIT_USER_FENCE's read of a fence in a userptr mapping goes through the client's pages;
/// an unmapped one is EFAULT.
#[test]
fn a_user_fence_in_a_userptr_mapping_is_read_from_client_memory() {
    let d = driver();
    let mm = crate::svm::fake::FakeMm::new(d.device.dma().clone());
    d.device.set_client_mm(C.0, mm.clone());
    let vm = d.vm_create(C, VmCreateFlags::empty()).expect("vm");
    let (cpu, va) = (0x7f00_0000_0000u64, 0x30_0000u64);
    mm.map(cpu, 0x1000, true);
    mm.write_u64(cpu + 0x18, 0xF00D).unwrap();
    vm.bind(
        None,
        &[crate::bind::BindOp::map_userptr(cpu, va, 0x1000)],
        &[],
    )
    .expect("userptr bind");
    assert_eq!(d.user_fence_value(&vm, None, va + 0x18), Ok(0xF00D));
    mm.unmap(cpu, 0x1000);
    assert_eq!(
        d.user_fence_value(&vm, None, va + 0x18),
        Err(DriverError::Fault { addr: va + 0x18 })
    );
}

#[test]
fn async_bind_signals_timeline_point_and_counts_in_flight_until_done() {
    let d = driver();
    let vm = d.vm_create(C, VmCreateFlags::empty()).expect("vm");
    let b = bo(&d, 0x1000, WirePlacement::SYSTEM);
    let tl = d.syncobj_create(false).expect("syncobj");
    assert_eq!(d.syncobj_state(&tl, 5), PointState::NoFence);
    d.vm_bind(
        C,
        &vm,
        None,
        vec![map(&b, 0x4000, 0x1000)],
        vec![ResolvedSync::Signal(tl.clone(), 5)],
    )
    .expect("bind");
    wait_signaled(&d, &tl, 5);
    assert_eq!(d.syncobj_query(&tl), 5);
    let usage = d.client_usage(C);
    assert_eq!(usage.in_flight, 0, "signalled fences are pruned");
    assert_eq!(usage.gpu_mappings, 1);
    d.vm_bind(C, &vm, None, vec![unmap(0x4000, 0x1000)], vec![])
        .expect("unbind");
    assert_eq!(d.client_usage(C).gpu_mappings, 0);
    assert!(Driver::vm_mappings(&vm).is_empty());
}

#[test]
fn invalid_binds_are_einval_class_and_change_nothing() {
    let d = driver();
    let vm = d.vm_create(C, VmCreateFlags::empty()).expect("vm");
    let b = bo(&d, 0x1000, WirePlacement::SYSTEM);
    let before = d.device().mem_stats();
    let too_long = map(&b, 0x4000, 0x2000);
    assert!(matches!(
        d.vm_bind(C, &vm, None, vec![too_long], vec![]),
        Err(DriverError::Invalid(_))
    ));
    let past_the_end = map(&b, crate::bind::VA_SPACE, 0x1000);
    assert!(matches!(
        d.vm_bind(C, &vm, None, vec![past_the_end], vec![]),
        Err(DriverError::Invalid(_))
    ));
    assert_eq!(d.device().mem_stats(), before);
    assert_eq!(d.client_usage(C).gpu_mappings, 0);
    d.vm_destroy(&vm).expect("destroy");
    assert_eq!(
        d.vm_bind(C, &vm, None, vec![map(&b, 0, 0x1000)], vec![])
            .err(),
        Some(DriverError::VmGone)
    );
}

#[test]
fn exec_and_bind_queue_kinds_are_checked() {
    let d = driver();
    let vm = d.vm_create(C, VmCreateFlags::empty()).expect("vm");
    let bq = d
        .queue_create(
            C,
            &vm,
            EngineClass::VmBind,
            QueuePriority::Normal,
            Default::default(),
        )
        .expect("bq");
    let eq = d
        .queue_create(
            C,
            &vm,
            EngineClass::Compute,
            QueuePriority::Normal,
            Default::default(),
        )
        .expect("eq");
    assert!(matches!(
        d.exec(C, &bq, &[0x1000], vec![]),
        Err(DriverError::Invalid(_))
    ));
    assert!(matches!(
        d.vm_bind(C, &vm, Some(&eq), vec![], vec![]),
        Err(DriverError::Invalid(_))
    ));
    assert!(matches!(
        d.exec(C, &eq, &[0x1004], vec![]),
        Err(DriverError::Invalid(_))
    ));
    let lr = d.vm_create(C, VmCreateFlags::LR_MODE).expect("lr vm");
    let lq = d
        .queue_create(
            C,
            &lr,
            EngineClass::Copy,
            QueuePriority::Normal,
            Default::default(),
        )
        .expect("lr queue");
    let s = d.syncobj_create(false).expect("s");
    assert!(matches!(
        d.exec(C, &lq, &[], vec![ResolvedSync::Signal(s, 0)]),
        Err(DriverError::NotSupported(_))
    ));
}

#[test]
fn syncobj_signal_query_transfer() {
    let d = driver();
    let a = d.syncobj_create(false).expect("a");
    let b = d.syncobj_create(true).expect("b");
    assert_eq!(d.syncobj_query(&a), 0);
    assert_eq!(d.syncobj_query(&b), 1);
    assert_eq!(d.syncobj_state(&a, 0), PointState::NoFence);
    d.syncobj_signal(&a, 3).expect("signal point");
    assert_eq!(d.syncobj_query(&a), 3);
    assert_eq!(d.syncobj_state(&a, 3), PointState::Signaled);
    assert_eq!(
        d.syncobj_transfer(&a, 9, &b, 0),
        Err(DriverError::NoFence { point: 9 })
    );
    let c = d.syncobj_create(false).expect("c");
    d.syncobj_transfer(&a, 3, &c, 0).expect("transfer");
    assert_eq!(d.syncobj_state(&c, 0), PointState::Signaled);
}

#[test]
fn client_stop_forgets_the_client_and_destroy_cancels_its_queued_work() {
    let d = driver();
    let vm = d.vm_create(C, VmCreateFlags::empty()).expect("vm");
    let b = bo(&d, 0x1000, WirePlacement::SYSTEM);
    let (gate, s) = (
        d.syncobj_create(false).expect("gate"),
        d.syncobj_create(false).expect("s"),
    );
    let never = crate::sync::Fence::new(crate::sync::FenceContext::alloc(), 1);
    gate.replace_fence(Some(never));
    d.vm_bind(
        C,
        &vm,
        None,
        vec![map(&b, 0x1000, 0x1000)],
        vec![
            ResolvedSync::Wait(gate, 0),
            ResolvedSync::Signal(s.clone(), 0),
        ],
    )
    .expect("bind");
    // The bind waits for a gate nobody will signal: stopping the client must not wait for it.
    d.client_stop(C);
    assert_eq!(d.syncobj_state(&s, 0), PointState::Pending);
    let lines = d.stats(None);
    assert!(lines.contains(&("clients".to_string(), "0".to_string())));
    assert_eq!(d.stats(Some(ClientId(2)))[0].1, "0");
    // The scheme destroys the VM next, which cancels the queued bind.
    d.vm_destroy(&vm).expect("destroy");
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.syncobj_state(&s, 0) == PointState::Pending && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = s.fence().map(|f| f.status());
    assert!(
        matches!(status, Some(crate::sync::FenceStatus::Failed(_))),
        "queued bind not cancelled: {status:?}"
    );
}

#[test]
fn bo_memory_needs_shared_windows_and_gives_each_bo_its_own_object() {
    use crate::mem::bo::SharedWindows;
    use crate::mem::shm::{MapBudget, ShmPool};
    use gpu_scheme::host::HostMemory;
    let d = driver();
    let b = bo(&d, 0x1000, WirePlacement::SYSTEM);
    assert!(matches!(d.bo_memory(&b), Err(DriverError::NotSupported(_))));
    let budget = MapBudget::new(64);
    let windows = SharedWindows {
        sys: Arc::new(ShmPool::with_budget("gpud-test", 16 << 20, budget.clone()).expect("sys")),
        vram: Arc::new(ShmPool::with_budget("gpud-test", 8 << 20, budget).expect("vram")),
    };
    let dev = Device::with_shared(DeviceConfig::default(), windows).expect("device");
    let d = Driver::new(Arc::new(dev), 16 << 20);
    for placement in [WirePlacement::SYSTEM, WirePlacement::VRAM] {
        let b = bo(&d, 0x3000, placement);
        let (fd, offset) = d.bo_memory(&b).expect("exported");
        assert_eq!(offset, 0, "the object starts at the BO's first byte");
        let st = rustix::fs::fstat(&fd).expect("fstat");
        assert_eq!(st.st_size, 0x3000, "exactly the BO, nothing else");
        b.write(0x2ff0, b"last bytes").expect("write");
        let mut buf = [0u8; 10];
        rustix::io::pread(&fd, &mut buf, 0x2ff0).expect("pread");
        assert_eq!(&buf, b"last bytes");
        assert!(b.is_cpu_mapped());
    }
}

#[test]
fn through_the_scheme_device_query_reports_the_device() {
    use gpu_scheme::testing::caller;
    use gpu_scheme::uapi::wire::DeviceQueryArgs;
    use gpu_scheme::uapi::{encode, read_args, Request};
    use gpu_scheme::{GpuScheme, Limits};
    use redox_scheme::scheme::SchemeSync;
    use redox_scheme::OpenResult;
    let mut s = GpuScheme::new(driver(), Limits::default());
    let root = s.scheme_root().expect("root");
    let dev = match s.openat(root, "card0", 0, 0, &caller()) {
        Ok(OpenResult::ThisScheme { number, .. }) => number,
        _ => panic!("open card0"),
    };
    let (op, mut bytes) = encode(&Request::DeviceQuery);
    s.call(dev, &mut bytes, &[op, 0, 0], &caller())
        .expect("query");
    let info = read_args::<DeviceQueryArgs>(&bytes).expect("args");
    assert_eq!(info.va_bits, 48);
    assert_eq!(info.vram_size, 8 << 20);
    assert_eq!(info.sys_size, 16 << 20);
    let (op, mut bytes) = encode(&Request::VmCreate(VmCreateFlags::FAULT_MODE));
    let e = s
        .call(dev, &mut bytes, &[op, 0, 0], &caller())
        .expect_err("FAULT without LR");
    assert_eq!(e.errno, syscall::error::EINVAL);
}

#[test]
fn through_the_scheme_bind_and_error_classes_reach_errno() {
    use gpu_scheme::testing::caller;
    use gpu_scheme::uapi::wire::{BoCreateArgs, VmCreateArgs};
    use gpu_scheme::uapi::{encode, read_args, Request, VmBindRequest, VmId as WireVmId};
    use gpu_scheme::{GpuScheme, Limits};
    use redox_scheme::scheme::SchemeSync;
    use redox_scheme::OpenResult;
    let mut s = GpuScheme::new(driver(), Limits::default());
    let root = s.scheme_root().expect("root");
    let dev = match s.openat(root, "card0", 0, 0, &caller()) {
        Ok(OpenResult::ThisScheme { number, .. }) => number,
        _ => panic!("open card0"),
    };
    let call = |s: &mut GpuScheme<Driver>, req: &Request| {
        let (op, mut bytes) = encode(req);
        s.call(dev, &mut bytes, &[op, 0, 0], &caller())
            .map(|_| bytes)
            .map_err(|e| e.errno)
    };
    let p = call(&mut s, &Request::VmCreate(VmCreateFlags::empty())).expect("vm");
    let vm = WireVmId(read_args::<VmCreateArgs>(&p).expect("args").vm_id);
    let bo_req = |size, placement| {
        Request::BoCreate(BoCreateRequest {
            size,
            placement,
            flags: BoCreateFlags::empty(),
            vm: None,
        })
    };
    let p = call(&mut s, &bo_req(0x1000, WirePlacement::SYSTEM)).expect("bo");
    let bo = WireBoId(read_args::<BoCreateArgs>(&p).expect("args").bo_id);
    let bind = |addr, range| {
        Request::VmBind(VmBindRequest {
            vm,
            queue: None,
            ops: vec![WireOp {
                kind: BindOpKind::Map { bo, bo_offset: 0 },
                addr,
                range,
                flags: WireFlags::empty(),
                pat_index: 0,
            }],
            syncs: vec![],
        })
    };
    call(&mut s, &bind(0x10_0000, 0x1000)).expect("bind");
    assert_eq!(s.driver().client_usage(ClientId(1)).gpu_mappings, 1);
    assert_eq!(
        call(&mut s, &bind(0x20_0000, 0x2000)),
        Err(syscall::error::EINVAL),
        "window past the BO"
    );
    let e = call(&mut s, &bo_req(1 << 30, WirePlacement::VRAM)).expect_err("too big");
    assert!(
        e == syscall::error::ENOSPC || e == syscall::error::ENOMEM,
        "errno {e}"
    );
}

#[test]
fn vm_table_reports_every_mapping_with_daemon_keys_until_destroyed() {
    let d = driver();
    let vm = d.vm_create(C, VmCreateFlags::empty()).expect("vm");
    let b = bo(&d, 0x2000, WirePlacement::SYSTEM);
    let mut ro = map(&b, 0x8000, 0x1000);
    ro.op.flags = WireFlags::READONLY;
    let null = ResolvedBindOp {
        op: WireOp {
            kind: BindOpKind::MapNull,
            ..unmap(0x20_0000, 0x1000).op
        },
        bo: None,
    };
    let ops = vec![null, map(&b, 0x4000, 0x2000), ro];
    d.vm_bind(C, &vm, None, ops, vec![]).expect("bind");
    assert_eq!(d.vm_key(&vm), vm.id().0);
    let key = d.bo_key(&b);
    let row = |start: u64, end: u64, backing, read_only| VmMapping {
        start,
        end,
        backing,
        read_only,
    };
    let bo_at = |offset| MappingBacking::Bo { key, offset };
    assert_eq!(
        d.vm_table(&vm).expect("table"),
        vec![
            row(0x4000, 0x6000, bo_at(0), false),
            row(0x8000, 0x9000, bo_at(0), true),
            row(0x20_0000, 0x20_1000, MappingBacking::Null, false),
        ]
    );
    // The stats' per-VM summary (printed by the scheme) counts without building the table.
    assert_eq!(d.vm_mapping_count(&vm), 3);
    d.vm_destroy(&vm).expect("destroy");
    assert_eq!(d.vm_table(&vm), Err(DriverError::VmGone));
}

/// A scheme bind's `pat_index` reaches the PTE (it used to be dropped here: every PTE was
/// write-back): simgpu's walker reports the cache mode of the PAT entry.
#[test]
fn pat_index_reaches_the_pte() {
    use simgpu::mmu::{Access, Memories, Mmu as Walker, PtRoot as DevRoot};
    let d = driver();
    let vm = d.vm_create(C, VmCreateFlags::empty()).expect("vm");
    let b = bo(&d, 0x4000, WirePlacement::SYSTEM);
    let ops: Vec<_> = (0..4u16)
        .map(|pat| {
            let mut op = map(&b, 0x10_0000 + u64::from(pat) * 0x1000, 0x1000);
            op.op.pat_index = pat;
            op
        })
        .collect();
    d.vm_bind(C, &vm, None, ops, vec![]).expect("bind");
    let gpu = d.device().gpu().expect("simgpu").clone();
    let root = vm.with_pt(|pt| pt.root());
    let root = DevRoot {
        addr: root.addr.get(),
        location: simgpu::Location::System,
    };
    let (sys, vram) = (gpu.sysmem(), gpu.vram());
    let mems = Memories {
        sys: &*sys,
        vram: &*vram,
    };
    // PAT 0 write-back, 1 write-combined, 2 write-through, 3 uncached (simgpu's encoding).
    for (pat, cache) in [(0u64, 0u8), (1, 2), (2, 3), (3, 1)] {
        let t = Walker::new(16)
            .translate(mems, 0, root, 0x10_0000 + pat * 0x1000, Access::Read)
            .expect("mapped");
        assert_eq!(t.cache, cache, "pat_index {pat}");
    }
    let mut bad = map(&b, 0x20_0000, 0x1000);
    bad.op.pat_index = 4;
    assert!(matches!(
        d.vm_bind(C, &vm, None, vec![bad], vec![]),
        Err(DriverError::Invalid(_))
    ));
}

/// The value of `key` among stats lines.
fn stat_of<'a>(lines: &'a [(String, String)], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn client_stats_carry_drm_fdinfo_keys_of_that_client_only() {
    let d = driver();
    let other = ClientId(2);
    let lines = d.stats(Some(C));
    assert_eq!(stat_of(&lines, "drm-driver"), Some("gpud"));
    assert_eq!(stat_of(&lines, "drm-client-id"), Some("1"));
    assert_eq!(stat_of(&lines, "drm-engine-copy"), Some("0 ns"));
    assert_eq!(stat_of(&lines, "drm-engine-compute"), Some("0 ns"));
    let queues = d.device().hw().info().queues_per_engine.to_string();
    assert_eq!(stat_of(&lines, "drm-engine-capacity-copy"), Some(&*queues));
    assert_eq!(
        stat_of(&lines, "drm-engine-capacity-compute"),
        Some(&*queues)
    );
    assert_eq!(stat_of(&lines, "drm-pdev"), None, "no PCI function named");
    assert_eq!(stat_of(&lines, "gpud-faults"), Some("0"));
    assert_eq!(stat_of(&lines, "gpud-evictions"), Some("0"));
    // Another client's lines show none of it.
    let theirs = d.stats(Some(other));
    assert_eq!(stat_of(&theirs, "drm-client-id"), Some("2"));
}

#[test]
fn a_named_pci_function_is_the_drm_pdev_line() {
    let d = driver().with_pdev("0000:00:04.0".into());
    assert_eq!(stat_of(&d.stats(Some(C)), "drm-pdev"), Some("0000:00:04.0"));
}

#[test]
fn memory_lines_count_held_bos_per_region_and_the_shared_ones() {
    let d = driver();
    let vram = bo(&d, 0x4000, WirePlacement::VRAM);
    let sys = bo(&d, 0x3000, WirePlacement::SYSTEM);
    let imported = bo(&d, 0x1000, WirePlacement::SYSTEM);
    let held = [
        HeldBo {
            bo: &vram,
            shared: false,
        },
        HeldBo {
            bo: &sys,
            shared: false,
        },
        HeldBo {
            bo: &imported,
            shared: true,
        },
    ];
    let lines = d.memory_stats(&held);
    assert_eq!(stat_of(&lines, "drm-total-vram"), Some("16384"));
    assert_eq!(stat_of(&lines, "drm-resident-vram"), Some("16384"));
    assert_eq!(stat_of(&lines, "drm-shared-vram"), Some("0"));
    assert_eq!(stat_of(&lines, "drm-total-system"), Some("16384"));
    assert_eq!(stat_of(&lines, "drm-resident-system"), Some("16384"));
    assert_eq!(stat_of(&lines, "drm-shared-system"), Some("4096"));
    assert_eq!(stat_of(&d.memory_stats(&[]), "drm-total-vram"), Some("0"));
}

#[test]
fn a_clients_running_job_shows_in_its_engine_busy_time() {
    let d = driver();
    let vm = d.vm_create(C, VmCreateFlags::empty()).expect("vm");
    let q = d
        .queue_create(
            C,
            &vm,
            EngineClass::Copy,
            QueuePriority::Normal,
            Default::default(),
        )
        .expect("queue");
    let DriverQueue::Exec { queue, .. } = &q else {
        panic!("an exec queue");
    };
    // A job that never finishes on its own: it holds its hardware queue until killed.
    let hang = Job::commands(vec![0x0001_00FE]);
    let fence = queue.submit(hang).expect("submit");
    let busy = |c| {
        let lines = d.stats(Some(c));
        let v = stat_of(&lines, "drm-engine-copy").expect("key").to_string();
        v.strip_suffix(" ns")
            .expect("unit")
            .parse::<u64>()
            .expect("ns")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while busy(C) < 20_000_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        busy(C) >= 20_000_000,
        "a running job's time is not in drm-engine-copy"
    );
    assert_eq!(busy(ClientId(2)), 0);
    d.client_stop(C);
    let _ = fence.wait(Some(Duration::from_secs(30)));
    assert!(
        fence.is_signalled(),
        "the stopped client's job was not taken off"
    );
}
