//! Several clients against one live daemon: isolation of id namespaces, sharing only through
//! an exported handle (also across processes), client death by SIGKILL in the middle of
//! async binds and execs, and a random-request fuzzer.

use gpu_scheme::uapi::flags::*;
use gpu_scheme::uapi::*;
use gpu_tests::{raw_errno, read_u32, spawn_client, stat, sys_bo, Daemon, Gpu, CHILD_ENV};
use libgpu::errno::*;
use libgpu::{token_from_bytes, token_to_bytes, Bo, Device, Syncobj, Timeout, Vm};
use proptest::prelude::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn client_b_cannot_reach_client_a_objects_by_guessing_ids() {
    let d = Daemon::start();
    let a = d.device();
    let b = d.device();
    let vm = Vm::create(&a, VmCreateFlags::empty()).expect("vm");
    let bo = sys_bo(&a, 0x1000);
    let so = Syncobj::create(&a, false).expect("so");
    for id in 0..8u32 {
        assert_eq!(raw_errno(&b, &Request::VmDestroy(VmId(id))), Err(ENOENT));
        assert_eq!(raw_errno(&b, &Request::BoDestroy(BoId(id))), Err(ENOENT));
        assert_eq!(
            raw_errno(&b, &Request::SyncobjQuery(SyncobjId(id))),
            Err(ENOENT)
        );
        assert!(b.handle().dup(&format!("bo/{id}")).is_err());
    }
    // A's objects are untouched.
    assert!(a.query().is_ok());
    vm.bind()
        .map(&bo, 0, 0x10_0000, 0x1000)
        .submit()
        .expect("A binds");
    assert_eq!(so.query().expect("query"), 0);
}

#[test]
fn sharing_works_through_an_exported_handle() {
    let d = Daemon::start();
    let a = d.device();
    let b = d.device();
    let bo = sys_bo(&a, 0x1000);
    // The token is valid while the exported handle is open: keep it until B imported.
    let exported = bo.export().expect("export");
    let imported = Bo::import(&b, exported.token()).expect("import");
    drop(exported);
    let g = Gpu::new(&b, VmCreateFlags::empty());
    g.vm.bind()
        .map(&imported, 0, 0x10_0000, 0x1000)
        .submit()
        .expect("B binds");
    g.store(&[(0x10_0000, 0xB0B)]);
    assert_eq!(read_u32(&bo, 0), 0xB0B, "A sees B's GPU write");
}

#[test]
fn external_bo_shared_with_a_second_process() {
    if let Ok(sock) = std::env::var(CHILD_ENV) {
        let dev = Device::open_at(std::path::Path::new(&sock)).expect("open");
        let hex = std::env::var("GPU_TESTS_TOKEN").expect("token");
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
        }
        let bo = Bo::import(&dev, token_from_bytes(bytes)).expect("import in child");
        let g = Gpu::new(&dev, VmCreateFlags::empty());
        g.vm.bind()
            .map(&bo, 0, 0x10_0000, 0x1000)
            .submit()
            .expect("bind");
        g.store(&[(0x10_0008, 0xC41D)]);
        return;
    }
    let d = Daemon::start();
    let a = d.device();
    let bo = sys_bo(&a, 0x1000);
    let exported = bo.export().expect("export");
    let hex: String = token_to_bytes(exported.token())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let status = spawn_client("external_bo_shared_with_a_second_process", d.socket())
        .env("GPU_TESTS_TOKEN", hex)
        .status()
        .expect("spawn");
    assert!(status.success());
    assert_eq!(read_u32(&bo, 8), 0xC41D, "the other process wrote our BO");
}

fn free_memory(dev: &Device) -> (u64, u64) {
    let i = dev.query().expect("query");
    (i.sys_free, i.vram_free)
}

#[test]
fn sigkill_mid_async_work_frees_the_clients_resources() {
    if std::env::var(CHILD_ENV).is_ok() {
        let sock = std::env::var(CHILD_ENV).expect("socket");
        let dev = Device::open_at(std::path::Path::new(&sock)).expect("open");
        let g = Gpu::new(&dev, VmCreateFlags::empty());
        let tl = Syncobj::create(&dev, false).expect("timeline");
        let bos: Vec<Bo> = (0..8).map(|_| sys_bo(&dev, 0x10000)).collect();
        let vram = Bo::create(&dev, 1 << 20, Placement::VRAM, BoCreateFlags::empty());
        let _vram = vram.expect("vram bo");
        println!("ready");
        for point in 1.. {
            let bo = &bos[point as usize % bos.len()];
            let va = 0x100_0000 + (point % 64) * 0x10000;
            let _ =
                g.vm.bind()
                    .map(bo, 0, va, 0x10000)
                    .signal_point(&tl, point)
                    .submit();
            let _ = g
                .queue
                .exec(gpu_tests::BATCH_VA)
                .wait_point(&tl, point)
                .submit();
        }
        return;
    }
    let d = Daemon::start();
    let other = d.device();
    let (g, mine) = gpu_tests::bystander(&other);
    let baseline = free_memory(&other);
    let mut child = spawn_client(
        "sigkill_mid_async_work_frees_the_clients_resources",
        d.socket(),
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let ready = lines.find(|l| l.as_ref().is_ok_and(|l| l.contains("ready")));
    assert!(ready.is_some(), "child got ready");
    assert_ne!(free_memory(&other), baseline, "the child holds memory");
    std::thread::sleep(Duration::from_millis(50));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while free_memory(&other) != baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(free_memory(&other), baseline, "memory back to baseline");
    let stats = other.stats().expect("stats");
    assert_eq!(stat(&stats, "device-clients"), Some(1), "{stats}");
    assert_eq!(
        stat(&stats, "clients"),
        Some(1),
        "driver forgot the dead client: {stats}"
    );
    g.store(&[(0x10_0000, 0x5AFE)]);
    assert_eq!(read_u32(&mine, 0), 0x5AFE, "the other client is unaffected");
}

/// One random request over small ids, so that some name live objects.
fn request() -> impl Strategy<Value = Request> {
    let id = 0u32..4;
    let addr = prop_oneof![Just(0x10_0000u64), Just(0x10_0800), any::<u64>()];
    prop_oneof![
        Just(Request::DeviceQuery),
        (0u32..16).prop_map(|f| Request::VmCreate(VmCreateFlags::from_bits_retain(f))),
        id.clone().prop_map(|i| Request::VmDestroy(VmId(i))),
        (0u64..0x3000, 0u32..4).prop_map(|(size, p)| Request::BoCreate(BoCreateRequest {
            size: size & !0xfff,
            placement: Placement::from_bits_retain(p),
            flags: BoCreateFlags::empty(),
            vm: None,
        })),
        id.clone().prop_map(|i| Request::BoDestroy(BoId(i))),
        (
            id.clone(),
            prop_oneof![Just(1u16), Just(4), Just(5)],
            0u32..3
        )
            .prop_map(|(vm, c, p)| Request::ExecQueueCreate {
                vm: VmId(vm),
                class: EngineClass::from_raw(c).unwrap_or(EngineClass::Copy),
                priority: QueuePriority::from_raw(p).unwrap_or_default(),
                batches: Default::default(),
            }),
        (id.clone(), id.clone(), addr.clone(), 0u64..3).prop_map(|(vm, bo, addr, pages)| {
            Request::VmBind(VmBindRequest {
                vm: VmId(vm),
                queue: None,
                ops: vec![BindOp {
                    kind: BindOpKind::Map {
                        bo: BoId(bo),
                        bo_offset: 0,
                    },
                    addr,
                    range: pages * 0x1000,
                    flags: BindFlags::empty(),
                    pat_index: 0,
                }],
                syncs: vec![],
            })
        }),
        (id.clone(), addr).prop_map(|(vm, addr)| Request::VmBind(VmBindRequest {
            vm: VmId(vm),
            queue: None,
            ops: vec![BindOp {
                kind: BindOpKind::Unmap,
                addr,
                range: 0x1000,
                flags: BindFlags::empty(),
                pat_index: 0,
            }],
            syncs: vec![],
        })),
        any::<bool>().prop_map(|signaled| Request::SyncobjCreate { signaled }),
        id.clone().prop_map(|i| Request::SyncobjQuery(SyncobjId(i))),
        (id.clone(), 0u64..3).prop_map(|(i, point)| Request::SyncobjSignal(vec![SyncobjPoint {
            syncobj: SyncobjId(i),
            point
        }])),
        id.prop_map(|i| Request::SyncobjDestroy(SyncobjId(i))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24), ..ProptestConfig::default() })]

    /// Random request sequences never break the daemon: each call answers Ok or an errno,
    /// and the daemon serves a fresh client afterwards.
    #[test]
    fn random_requests_against_the_live_daemon(
        reqs in proptest::collection::vec(request(), 1..40),
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let d = Daemon::start();
        let dev = d.device();
        for req in &reqs {
            let _ = raw_errno(&dev, req);
        }
        let mut junk = garbage.clone();
        for op in 0..20u64 {
            let _ = dev.handle().call(&mut junk, [op, 0, 0]);
            junk.copy_from_slice(&garbage);
        }
        prop_assert!(dev.query().is_ok());
        let fresh = d.device();
        let g = Gpu::new(&fresh, VmCreateFlags::empty());
        let bo = sys_bo(&fresh, 0x1000);
        g.vm.bind().map(&bo, 0, 0x10_0000, 0x1000).submit().expect("bind");
        g.store(&[(0x10_0000, 99)]);
        prop_assert_eq!(read_u32(&bo, 0), 99);
    }
}

#[test]
fn timeline_syncobj_orders_work_across_clients() {
    let d = Daemon::start();
    let a = d.device();
    let b = d.device();
    let tl = Syncobj::create(&a, false).expect("timeline");
    let exported = tl.export().expect("export");
    let shared = Syncobj::import(&b, exported.token()).expect("import");
    drop(exported);
    shared.signal_point(3).expect("B signals point 3");
    assert!(tl.wait_point(3, Timeout::Forever).expect("A waits"));
    assert!(tl.query().expect("query") >= 3);
}

#[test]
fn root_stats_list_every_client_for_gpuctl() {
    let d = Daemon::start();
    let a = d.device();
    let b = d.device();
    let _vm = Vm::create(&a, VmCreateFlags::empty()).expect("vm");
    let _bo = sys_bo(&b, 0x1000);
    let root = gpu_scheme::host::HostHandle::connect(d.socket()).expect("root");
    let mut buf = vec![0u8; 16 << 10];
    let n = root.read(&mut buf, 0).expect("read root stats");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let blocks = text.lines().filter(|l| l.starts_with("client-id:")).count();
    assert_eq!(blocks, 2, "{text}");
    assert!(text.contains("client-vms: 1"));
    // Each block carries the DRM fdinfo keys of its client.
    assert_eq!(text.matches("\ndrm-client-id: ").count(), 2, "{text}");
    assert!(text.contains("client-bos: 1"));
    assert!(text.starts_with("device-clients: 2"));
}

#[test]
fn device_stats_summarize_each_vm_and_leave_the_table_to_the_vm_view() {
    let d = Daemon::start();
    let a = d.device();
    let vm = Vm::create(&a, VmCreateFlags::empty()).expect("vm");
    let bo = sys_bo(&a, 0x2000);
    vm.bind()
        .map(&bo, 0, 0x10_0000, 0x1000)
        .map(&bo, 0x1000, 0x30_0000, 0x1000)
        .submit()
        .expect("bind");
    let text = a.stats().expect("stats");
    let daemon_id = vm.table().expect("view").daemon_id;
    assert!(
        text.contains(&format!("vm-{daemon_id}-mappings: 2")),
        "{text}"
    );
    assert!(
        !text.contains("-map: "),
        "no mapping lines in the stats: {text}"
    );
    // Another client sees the device's totals but nothing about A's VMs.
    let b = d.device();
    let other = b.stats().expect("stats");
    assert!(other.contains("device-clients: "), "{other}");
    assert!(
        !other.contains(&format!("vm-{daemon_id}-")),
        "B sees A's VM: {other}"
    );
}
