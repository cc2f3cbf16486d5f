//! Server tests against the fake driver: handles, errno for state-dependent rules, isolation,
//! teardown, limits, export/import, parking, mmap, events and stats.

mod common;

use common::*;
use gpu_scheme::testing::{caller, Call};
use gpu_scheme::uapi::flags::*;
use gpu_scheme::uapi::wire::*;
use gpu_scheme::uapi::*;
use gpu_scheme::Limits;
use redox_scheme::scheme::SchemeSync;
use syscall::error::*;
use syscall::flag::{MapFlags, MunmapFlags};

#[test]
fn open_paths_and_query() {
    let mut h = Harness::new();
    let dev = h.open();
    assert_eq!(
        opened(h.s.openat(h.root, "card1", 0, 0, &caller())),
        Err(ENOENT)
    );
    assert_eq!(opened(h.s.openat(h.root, "", 0, 0, &caller())), Err(ENOENT));
    assert_eq!(
        opened(h.s.openat(dev, "card0", 0, 0, &caller())),
        Err(EBADF)
    );
    assert_eq!(
        opened(h.s.openat(9999, "card0", 0, 0, &caller())),
        Err(EBADF)
    );
    let p = h.call(dev, &Request::DeviceQuery).unwrap();
    let info = read_args::<DeviceQueryArgs>(&p).unwrap();
    assert_eq!(info.va_bits, 48);
    assert_eq!(info.pat_entries, 4);
    assert_eq!(info.limit_vram, Limits::default().vram_bytes);
}

#[test]
fn wrong_handle_kind_and_closed_handles_are_ebadf() {
    let mut h = Harness::new();
    let dev = h.open();
    let bo = h.bo(dev, 4096, None);
    let boh = h.dup(dev, &format!("bo/{}", bo.0)).unwrap();
    assert_eq!(h.err(h.root, &Request::DeviceQuery), EBADF);
    assert_eq!(
        h.err(boh, &Request::VmCreate(VmCreateFlags::empty())),
        EBADF
    );
    assert_eq!(h.err(dev, &Request::ExportToken), EBADF);
    assert_eq!(h.err(h.root, &Request::ExportToken), EBADF);
    // The handle kind is judged before the payload: garbage on the wrong handle is EBADF.
    let mut junk = [0xffu8; 7];
    assert_eq!(
        h.s.call(h.root, &mut junk, &[1, 0, 0], &caller())
            .unwrap_err()
            .errno,
        EBADF
    );
    assert_eq!(
        h.s.call(boh, &mut junk, &[8, 0, 0], &caller())
            .unwrap_err()
            .errno,
        EBADF
    );
    assert_eq!(
        h.s.call(dev, &mut junk, &[17, 0, 0], &caller())
            .unwrap_err()
            .errno,
        EBADF
    );
    assert_eq!(
        h.s.call(boh, &mut junk, &[17, 0, 0], &caller())
            .unwrap_err()
            .errno,
        EINVAL
    );
    assert_eq!(h.dup(boh, "bo/1"), Err(EBADF));
    assert_eq!(h.dup(h.root, "bo/1"), Err(EBADF));
    h.s.on_close(dev);
    assert_eq!(h.err(dev, &Request::DeviceQuery), EBADF);
    assert_eq!(h.dup(dev, "bo/1"), Err(EBADF));
    // The derived handle outlives the device handle.
    assert!(h.call(boh, &Request::ExportToken).is_ok());
    h.s.on_close(boh);
    assert_eq!(h.err(boh, &Request::ExportToken), EBADF);
    assert_eq!(h.s.client_count(), 0);
}

#[test]
fn dup_paths() {
    let mut h = Harness::new();
    let dev = h.open();
    let s = h.syncobj(dev, false);
    assert!(h.dup(dev, &format!("syncobj/{}", s.0)).is_ok());
    assert_eq!(
        h.dup(dev, &format!("bo/{}", s.0)),
        Err(ENOENT),
        "a syncobj id is not a BO"
    );
    assert_eq!(h.dup(dev, "vm/1"), Err(ENOENT));
    assert_eq!(h.dup(dev, ""), Err(ENOENT));
    assert_eq!(h.dup(dev, "syncobj/99"), Err(ENOENT));
}

#[test]
fn decode_errors_pass_through_with_their_errno() {
    let mut h = Harness::new();
    let dev = h.open();
    let (op, mut bytes) = encode(&Request::DeviceQuery);
    bytes[0] = 9;
    assert_eq!(
        h.s.call(dev, &mut bytes, &[op, 0, 0], &caller())
            .unwrap_err()
            .errno,
        EINVAL
    );
    assert_eq!(
        h.s.call(dev, &mut bytes, &[77, 0, 0], &caller())
            .unwrap_err()
            .errno,
        ENOTTY
    );
    assert_eq!(
        h.s.call(dev, &mut bytes, &[], &caller()).unwrap_err().errno,
        ENOTTY
    );
}

#[test]
fn object_lifecycle_errors() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let q = h.queue(dev, vm, EngineClass::Copy);
    assert_eq!(h.err(dev, &Request::VmDestroy(vm)), EBUSY, "VM with queues");
    // A driver refusal leaves the client's tables unchanged.
    h.driver()
        .fail_next(gpu_scheme::driver::DriverError::Busy("queue running"));
    assert_eq!(h.err(dev, &Request::ExecQueueDestroy(q)), EBUSY);
    assert!(h
        .call(
            dev,
            &Request::Exec(ExecRequest {
                queue: q,
                batches: vec![],
                syncs: vec![]
            })
        )
        .is_ok());
    assert!(h.call(dev, &Request::ExecQueueDestroy(q)).is_ok());
    assert_eq!(h.err(dev, &Request::ExecQueueDestroy(q)), ENOENT);
    h.driver()
        .fail_next(gpu_scheme::driver::DriverError::Busy("VM in use"));
    assert_eq!(h.err(dev, &Request::VmDestroy(vm)), EBUSY);
    assert!(
        h.call(dev, &bind(vm, vec![], vec![])).is_ok(),
        "VM still there"
    );
    assert!(h.call(dev, &Request::VmDestroy(vm)).is_ok());
    assert_eq!(h.err(dev, &Request::VmDestroy(vm)), ENOENT);
    assert_eq!(
        h.err(
            dev,
            &Request::ExecQueueCreate {
                vm,
                class: EngineClass::Copy,
                priority: QueuePriority::Normal,
                batches: BatchFormat::Native,
            }
        ),
        ENOENT
    );
    assert_eq!(h.err(dev, &Request::BoDestroy(BoId(42))), ENOENT);
    assert_eq!(h.err(dev, &Request::SyncobjDestroy(SyncobjId(42))), ENOENT);
    assert_eq!(h.err(dev, &Request::SyncobjQuery(SyncobjId(42))), ENOENT);
    let req = BoCreateRequest {
        size: 4096,
        placement: Placement::VRAM,
        flags: BoCreateFlags::empty(),
        vm: Some(VmId(77)),
    };
    assert_eq!(h.err(dev, &Request::BoCreate(req)), ENOENT);
}

#[test]
fn vm_bind_state_rules() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let lr = h.vm(dev, VmCreateFlags::LR_MODE);
    let fault = h.vm(dev, VmCreateFlags::LR_MODE | VmCreateFlags::FAULT_MODE);
    let bo = h.bo(dev, 0x4000, None);
    let private = h.bo(dev, 0x4000, Some(lr));
    let s = h.syncobj(dev, false);
    let copy = h.queue(dev, vm, EngineClass::Copy);
    let bindq = h.queue(dev, vm, EngineClass::VmBind);
    let bindq_lr = h.queue(dev, lr, EngineClass::VmBind);

    assert!(h
        .call(dev, &bind(vm, vec![map(bo, 0x10000, 0x4000)], vec![]))
        .is_ok());
    assert_eq!(
        h.err(
            dev,
            &bind(VmId(999), vec![map(bo, 0x10000, 0x1000)], vec![])
        ),
        EINVAL,
        "unknown VM"
    );
    assert_eq!(
        h.err(
            dev,
            &bind(vm, vec![map(BoId(999), 0x10000, 0x1000)], vec![])
        ),
        ENOENT,
        "unknown BO"
    );
    assert_eq!(
        h.err(dev, &bind(vm, vec![map(bo, 0x10000, 0x5000)], vec![])),
        EINVAL,
        "beyond BO"
    );
    assert_eq!(
        h.err(dev, &bind(vm, vec![map(private, 0x10000, 0x1000)], vec![])),
        EINVAL,
        "private BO of another VM"
    );
    assert!(h
        .call(dev, &bind(lr, vec![map(private, 0x10000, 0x1000)], vec![]))
        .is_ok());
    assert_eq!(
        h.err(dev, &bind(vm, vec![map(bo, 1 << 48, 0x1000)], vec![])),
        EINVAL,
        "beyond VA"
    );
    assert_eq!(
        h.err(
            dev,
            &bind(vm, vec![map(bo, 0xffff_0000_0000, 0x1000)], vec![])
        ),
        EINVAL,
        "reserved VA"
    );
    let mut pat = map(bo, 0x10000, 0x1000);
    pat.pat_index = 4;
    assert_eq!(
        h.err(dev, &bind(vm, vec![pat], vec![])),
        EINVAL,
        "pat_index"
    );
    let mirror = BindOp {
        kind: BindOpKind::MapCpuMirror,
        ..map(bo, 0x10000, 0x1000)
    };
    assert_eq!(
        h.err(dev, &bind(vm, vec![mirror], vec![])),
        EINVAL,
        "mirror on non-fault VM"
    );
    assert!(h.call(dev, &bind(fault, vec![mirror], vec![])).is_ok());
    assert_eq!(
        h.err(dev, &bind(lr, vec![], vec![signal(s)])),
        EOPNOTSUPP,
        "syncobj out-sync on LR VM"
    );
    assert_eq!(
        h.err(dev, &bind(vm, vec![], vec![wait_on(s)])),
        EINVAL,
        "wait on fence-less syncobj"
    );
    assert_eq!(
        h.err(dev, &bind(vm, vec![], vec![signal(SyncobjId(999))])),
        ENOENT,
        "unknown syncobj"
    );
    let with_queue = |q| {
        Request::VmBind(VmBindRequest {
            vm,
            queue: Some(q),
            ops: vec![],
            syncs: vec![],
        })
    };
    assert_eq!(
        h.err(dev, &with_queue(QueueId(999))),
        ENOENT,
        "unknown bind queue"
    );
    assert_eq!(h.err(dev, &with_queue(copy)), EINVAL, "not a bind queue");
    assert_eq!(
        h.err(dev, &with_queue(bindq_lr)),
        EINVAL,
        "bind queue of another VM"
    );
    assert!(h.call(dev, &with_queue(bindq)).is_ok());
    // Driver errors map through the one table.
    for (e, errno) in [
        (gpu_scheme::driver::DriverError::VmGone, ENOENT),
        (
            gpu_scheme::driver::DriverError::NoSpace { needed: 1 },
            ENOSPC,
        ),
        (gpu_scheme::driver::DriverError::NoMemory, ENOMEM),
        (gpu_scheme::driver::DriverError::Busy("ufence"), EBUSY),
        (gpu_scheme::driver::DriverError::Fault { addr: 0 }, EFAULT),
        (gpu_scheme::driver::DriverError::Interrupted, EINTR),
        (gpu_scheme::driver::DriverError::Canceled, ECANCELED),
    ] {
        h.driver().fail_next(e);
        assert_eq!(
            h.err(dev, &bind(vm, vec![map(bo, 0x20000, 0x1000)], vec![])),
            errno
        );
    }
}

#[test]
fn exec_rules() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let lr = h.vm(dev, VmCreateFlags::LR_MODE);
    let copy = h.queue(dev, vm, EngineClass::Copy);
    let bindq = h.queue(dev, vm, EngineClass::VmBind);
    let lrq = h.queue(dev, lr, EngineClass::Compute);
    let s = h.syncobj(dev, false);
    let exec = |queue, syncs| {
        Request::Exec(ExecRequest {
            queue,
            batches: vec![0x1000],
            syncs,
        })
    };
    assert!(h.call(dev, &exec(copy, vec![signal(s)])).is_ok());
    assert_eq!(h.err(dev, &exec(QueueId(99), vec![])), ENOENT);
    assert_eq!(h.err(dev, &exec(bindq, vec![])), EINVAL);
    assert_eq!(h.err(dev, &exec(lrq, vec![signal(s)])), EOPNOTSUPP);
    h.driver()
        .fail_next(gpu_scheme::driver::DriverError::RingFull);
    assert_eq!(h.err(dev, &exec(lrq, vec![])), EWOULDBLOCK);
    h.driver()
        .fail_next(gpu_scheme::driver::DriverError::Canceled);
    assert_eq!(h.err(dev, &exec(copy, vec![])), ECANCELED);
    let execs = h
        .driver()
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Exec(..)))
        .count();
    assert_eq!(execs, 1, "only the valid exec reached the driver");
}

#[test]
fn clients_cannot_reach_each_others_objects_by_guessing_ids() {
    let mut h = Harness::new();
    let a = h.open();
    let b = h.open();
    let vm = h.vm(a, VmCreateFlags::empty());
    let bo = h.bo(a, 0x1000, None);
    let q = h.queue(a, vm, EngineClass::Copy);
    let s = h.syncobj(a, true);
    let before = h.driver().calls().len();
    for id in 0..8u32 {
        assert_eq!(h.err(b, &bind(VmId(id), vec![], vec![])), EINVAL);
        assert_eq!(h.err(b, &Request::VmDestroy(VmId(id))), ENOENT);
        assert_eq!(h.err(b, &Request::BoDestroy(BoId(id))), ENOENT);
        assert_eq!(h.err(b, &Request::ExecQueueDestroy(QueueId(id))), ENOENT);
        assert_eq!(h.err(b, &Request::SyncobjQuery(SyncobjId(id))), ENOENT);
        assert_eq!(
            h.err(
                b,
                &syncobj_wait(&[SyncobjId(id)], SyncobjWaitFlags::empty(), Timeout::Poll)
            ),
            ENOENT
        );
        assert_eq!(
            h.err(
                b,
                &Request::Exec(ExecRequest {
                    queue: QueueId(id),
                    batches: vec![],
                    syncs: vec![]
                })
            ),
            ENOENT
        );
        assert_eq!(h.dup(b, &format!("bo/{id}")), Err(ENOENT));
        assert_eq!(h.dup(b, &format!("syncobj/{id}")), Err(ENOENT));
    }
    assert_eq!(
        h.driver().calls().len(),
        before,
        "no driver call on behalf of B"
    );
    // A's objects are intact.
    assert!(h
        .call(a, &bind(vm, vec![map(bo, 0x10000, 0x1000)], vec![]))
        .is_ok());
    assert!(h.call(a, &Request::SyncobjQuery(s)).is_ok());
    assert!(h.call(a, &Request::ExecQueueDestroy(q)).is_ok());
}

#[test]
fn on_close_stops_work_then_tears_down() {
    let mut h = Harness::new();
    let a = h.open();
    let other = h.open();
    let vm = h.vm(a, VmCreateFlags::empty());
    let q = h.queue(a, vm, EngineClass::Compute);
    let bo = h.bo(a, 0x1000, None);
    let s = h.syncobj(a, false);
    h.call(
        a,
        &Request::Exec(ExecRequest {
            queue: q,
            batches: vec![0x1000],
            syncs: vec![signal(s)],
        }),
    )
    .unwrap();
    h.call(a, &bind(vm, vec![map(bo, 0x10000, 0x1000)], vec![]))
        .unwrap();
    let _ = h.call(
        a,
        &syncobj_wait(&[s], SyncobjWaitFlags::empty(), Timeout::Forever),
    );
    assert_eq!(h.s.parked_count(), 1);
    let keep = h.open();
    assert_eq!(h.s.client_count(), 3);
    h.s.on_close(a);
    let calls = h.driver().calls();
    let pos = |want: &dyn Fn(&Call) -> bool| calls.iter().position(want).expect("call made");
    let stop = pos(&|c| matches!(c, Call::ClientStop(_)));
    let qd = pos(&|c| matches!(c, Call::QueueDestroy(_)));
    let vd = pos(&|c| matches!(c, Call::VmDestroy(_)));
    assert!(
        stop < qd && qd < vd,
        "stop, then queues, then VMs: {calls:?}"
    );
    assert_eq!(h.s.client_count(), 2);
    assert_eq!(h.s.parked_count(), 0);
    assert_eq!(
        h.driver()
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::ClientStop(_)))
            .count(),
        1
    );
    h.s.on_close(other);
    h.s.on_close(keep);
    assert_eq!(h.s.client_count(), 0);
    assert!(h.read(h.root).contains("device-clients: 0"));
}

#[test]
fn limits_give_clean_errors() {
    let limits = Limits {
        objects: 3,
        vram_bytes: 0x3000,
        system_bytes: 1 << 20,
        mappings: 1,
        in_flight: 1,
        handles: 2,
        gpu_mappings: 2,
        devices_per_process: 2,
        timeline_points: 1 << 16,
    };
    let mut h = Harness::with_limits(limits);
    let dev = h.open();
    let other = h.open();
    // Device handles per process: a third open by the same pid fails, another pid may open.
    let pid = |p| gpu_scheme::dispatch::caller_ctx(p, 0);
    assert_eq!(
        opened(h.s.openat(h.root, DEVICE, 0, 0, &pid(0))),
        Err(EMFILE)
    );
    let third = opened(h.s.openat(h.root, DEVICE, 0, 0, &pid(7))).unwrap();
    h.s.on_close(third);
    assert_eq!(h.try_bo(dev, 0x4000, Placement::VRAM), Err(ENOSPC));
    let bo = h.try_bo(dev, 0x2000, Placement::VRAM).unwrap();
    assert_eq!(h.try_bo(dev, 0x2000, Placement::VRAM), Err(ENOSPC));
    h.call(dev, &Request::BoDestroy(bo)).unwrap();
    let bo = h
        .try_bo(dev, 0x2000, Placement::VRAM | Placement::SYSTEM)
        .unwrap();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let s = h.syncobj(dev, false);
    assert_eq!(
        h.err(dev, &Request::SyncobjCreate { signaled: false }),
        EMFILE,
        "objects"
    );
    // The other client is unaffected.
    assert!(h
        .call(other, &Request::SyncobjCreate { signaled: false })
        .is_ok());
    // In flight: one async bind pending, the second is refused until it completes.
    h.call(dev, &bind(vm, vec![], vec![signal(s)])).unwrap();
    assert_eq!(h.err(dev, &bind(vm, vec![], vec![signal(s)])), EBUSY);
    h.driver().complete_all();
    h.call(dev, &bind(vm, vec![], vec![signal(s)])).unwrap();
    h.driver().complete_all();
    // GPU mappings.
    h.call(
        dev,
        &bind(
            vm,
            vec![map(bo, 0x10000, 0x1000), map(bo, 0x20000, 0x1000)],
            vec![],
        ),
    )
    .unwrap();
    h.driver().complete_all();
    assert_eq!(
        h.err(dev, &bind(vm, vec![map(bo, 0x30000, 0x1000)], vec![])),
        ENOSPC
    );
    // Handles and CPU mappings.
    let h1 = h.dup(dev, &format!("bo/{}", bo.0)).unwrap();
    let _h2 = h.dup(dev, &format!("syncobj/{}", s.0)).unwrap();
    assert_eq!(h.dup(dev, &format!("bo/{}", bo.0)), Err(EMFILE));
    let flags = MapFlags::PROT_READ | MapFlags::MAP_SHARED;
    h.s.mmap_prep(h1, 0, 4096, flags, &caller()).unwrap();
    assert_eq!(
        h.s.mmap_prep(h1, 4096, 4096, flags, &caller())
            .unwrap_err()
            .errno,
        ENOMEM
    );
    h.s.munmap(h1, 0, 4096, MunmapFlags::empty(), &caller())
        .unwrap();
    assert!(h.s.mmap_prep(h1, 4096, 4096, flags, &caller()).is_ok());
    // A derived handle keeps the BO's charge alive after its id is destroyed.
    h.call(dev, &Request::BoDestroy(bo)).unwrap();
    assert_eq!(h.try_bo(dev, 0x2000, Placement::VRAM), Err(ENOSPC));
    h.s.on_close(h1);
    assert!(h.try_bo(dev, 0x2000, Placement::VRAM).is_ok());
}

#[test]
fn export_and_import_by_token_and_by_handle() {
    let mut h = Harness::new();
    let a = h.open();
    let b = h.open();
    let bo = h.bo(a, 0x2000, None);
    let s = h.syncobj(a, false);
    let boh = h.dup(a, &format!("bo/{}", bo.0)).unwrap();
    let sh = h.dup(a, &format!("syncobj/{}", s.0)).unwrap();
    let t_bo = h.token(boh);
    let t_s = h.token(sh);
    assert_ne!(t_bo, t_s);
    assert_ne!(t_bo.0, [0, 0]);

    let import = |kind, token| Request::Import {
        kind,
        token: Some(token),
    };
    assert_eq!(
        h.err(b, &import(ObjectKind::Syncobj, t_bo)),
        ENOENT,
        "kind must match"
    );
    assert_eq!(
        h.err(b, &import(ObjectKind::Bo, Token([1, 2]))),
        ENOENT,
        "guessed token"
    );
    let p = h.call(b, &import(ObjectKind::Bo, t_bo)).unwrap();
    let b_bo = BoId(read_args::<ImportArgs>(&p).unwrap().id);
    let p = h.call(b, &import(ObjectKind::Syncobj, t_s)).unwrap();
    let b_s = SyncobjId(read_args::<ImportArgs>(&p).unwrap().id);

    // The same objects: B maps A's BO and signals A's syncobj.
    let vm = h.vm(b, VmCreateFlags::empty());
    assert!(h
        .call(b, &bind(vm, vec![map(b_bo, 0x10000, 0x2000)], vec![]))
        .is_ok());
    h.call(
        b,
        &Request::SyncobjSignal(vec![SyncobjPoint {
            syncobj: b_s,
            point: 0,
        }]),
    )
    .unwrap();
    let p = h.call(a, &Request::SyncobjQuery(s)).unwrap();
    assert_eq!(read_args::<SyncobjQueryArgs>(&p).unwrap().point, 1);

    // Import by naming the handle (call_multiple_ids), no token.
    let by_handle = Request::Import {
        kind: ObjectKind::Bo,
        token: None,
    };
    assert!(h.call2(b, boh, &by_handle).is_ok());
    assert_eq!(h.call2(b, sh, &by_handle), Err(EBADF), "wrong handle kind");
    assert_eq!(h.call(b, &by_handle), Err(EINVAL), "no token, no handle");
    assert_eq!(
        h.call2(b, boh, &import(ObjectKind::Bo, t_bo)),
        Err(EINVAL),
        "both"
    );
    assert_eq!(h.call2(b, boh, &Request::DeviceQuery), Err(EINVAL));

    // Closing the exported handle revokes the token, not the imports.
    h.s.on_close(boh);
    assert_eq!(h.err(b, &import(ObjectKind::Bo, t_bo)), ENOENT);
    h.s.on_close(a);
    assert!(h
        .call(b, &bind(vm, vec![map(b_bo, 0x40000, 0x1000)], vec![]))
        .is_ok());
}

#[test]
fn bo_mmap_through_derived_handles() {
    let mut h = Harness::new();
    let dev = h.open();
    let bo = h.bo(dev, 0x4000, None);
    let boh = h.dup(dev, &format!("bo/{}", bo.0)).unwrap();
    let f = MapFlags::PROT_READ | MapFlags::PROT_WRITE | MapFlags::MAP_SHARED;
    let addr = h.s.mmap_prep(boh, 0x1000, 0x2000, f, &caller()).unwrap();
    assert_eq!(addr % 4096, 0);
    assert_eq!(
        h.s.mmap_prep(boh, 0x800, 0x1000, f, &caller())
            .unwrap_err()
            .errno,
        EINVAL
    );
    assert_eq!(
        h.s.mmap_prep(boh, 0x3000, 0x2000, f, &caller())
            .unwrap_err()
            .errno,
        EINVAL
    );
    assert_eq!(
        h.s.mmap_prep(boh, u64::MAX - 0xfff, 0x2000, f, &caller())
            .unwrap_err()
            .errno,
        EINVAL
    );
    assert_eq!(
        h.s.mmap_prep(dev, 0, 0x1000, f, &caller())
            .unwrap_err()
            .errno,
        EBADF
    );
    h.s.munmap(boh, 0x1000, 0x2000, MunmapFlags::NEEDS_SYNC, &caller())
        .unwrap();
    let calls = h.driver().calls();
    assert!(calls
        .iter()
        .any(|c| matches!(c, Call::Mmap(_, 0x1000, 0x2000))));
    assert!(calls
        .iter()
        .any(|c| matches!(c, Call::Munmap(_, 0x1000, 0x2000))));
    assert!(h.read(boh).contains("bo-size: 16384"));
}

#[test]
fn stats_text() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let bo = h.bo(dev, 0x2000, None);
    h.call(dev, &bind(vm, vec![map(bo, 0x10000, 0x1000)], vec![]))
        .unwrap();
    let text = h.read(dev);
    for line in [
        "client-vms: 1",
        "client-bos: 1",
        "client-binds: 1",
        "client-memory-vram: 8192 bytes",
        "fake-engine-copy: 0 ns",
        "device-clients: 1",
        "fake-device: simulated",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    for l in text.lines() {
        assert!(l.split_once(": ").is_some(), "{l}");
    }
    let mut buf = [0u8; 4];
    assert_eq!(h.s.read(dev, &mut buf, 0, 0, &caller()).unwrap(), 4);
    assert_eq!(&buf, b"clie");
    assert_eq!(h.s.read(dev, &mut buf, 1 << 40, 0, &caller()).unwrap(), 0);
    // The root gives the device-wide lines, then one block per client (for `gpuctl clients`).
    let root = h.read(h.root);
    assert!(root.starts_with("device-clients: 1"), "{root}");
    assert_eq!(root.matches("client-id:").count(), 1, "{root}");
}

/// The value of `key` in a stats text.
fn stat(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": ")?.parse().ok())
}

#[test]
fn fdinfo_memory_counts_imported_bos_and_marks_shared_ones() {
    // Linux's drm-total-* counts every handle of the file, imports included; drm-shared-*
    // the objects held by more than one file.
    let mut h = Harness::new();
    let a = h.open();
    let b = h.open();
    let shared = h.bo(a, 0x2000, None);
    let _private = h.bo(a, 0x1000, None);
    let boh = h.dup(a, &format!("bo/{}", shared.0)).unwrap();
    let token = h.token(boh);
    let (ta, tb) = (h.read(a), h.read(b));
    assert_eq!(stat(&ta, "drm-total-system"), Some(0x3000), "{ta}");
    assert_eq!(
        stat(&ta, "drm-shared-system"),
        Some(0),
        "exported, not yet imported"
    );
    assert_eq!(stat(&tb, "drm-total-system"), Some(0), "{tb}");

    let import = Request::Import {
        kind: ObjectKind::Bo,
        token: Some(token),
    };
    let p = h.call(b, &import).unwrap();
    let b_bo = BoId(read_args::<ImportArgs>(&p).unwrap().id);
    // Importing twice gives B a second id for the same object: counted once.
    let p = h.call(b, &import).unwrap();
    let b_bo2 = BoId(read_args::<ImportArgs>(&p).unwrap().id);
    let (ta, tb) = (h.read(a), h.read(b));
    assert_eq!(stat(&ta, "drm-total-system"), Some(0x3000), "{ta}");
    assert_eq!(stat(&ta, "drm-shared-system"), Some(0x2000), "{ta}");
    assert_eq!(stat(&tb, "drm-total-system"), Some(0x2000), "{tb}");
    assert_eq!(stat(&tb, "drm-shared-system"), Some(0x2000), "{tb}");
    // The privileged root read gives the same per-client lines.
    let root = h.read(h.root);
    assert_eq!(root.matches("drm-shared-system: 8192").count(), 2, "{root}");

    // Once B drops both ids, A's BO is private again.
    h.call(b, &Request::BoDestroy(b_bo)).unwrap();
    h.call(b, &Request::BoDestroy(b_bo2)).unwrap();
    let (ta, tb) = (h.read(a), h.read(b));
    assert_eq!(stat(&ta, "drm-shared-system"), Some(0), "{ta}");
    assert_eq!(stat(&tb, "drm-total-system"), Some(0), "{tb}");
}

#[test]
fn exec_user_fence_is_written_in_the_queues_vm() {
    // Regression: the fake driver once filed EXEC user fences under the queue id, so
    // WAIT_USER_FENCE on the VM never saw them.
    let mut h = Harness::new();
    let a = h.open();
    let vm = h.vm(a, VmCreateFlags::empty());
    let q = h.queue(a, vm, EngineClass::Compute);
    let fence = SyncSpec {
        kind: SyncKind::UserFence {
            addr: 0x8000,
            value: 7,
        },
        signal: true,
    };
    h.call(
        a,
        &Request::Exec(ExecRequest {
            queue: q,
            batches: vec![0x1000],
            syncs: vec![fence],
        }),
    )
    .unwrap();
    h.driver().complete_all();
    let wait = Request::WaitUserFence(WaitUserFenceRequest {
        vm,
        queue: Some(q),
        addr: 0x8000,
        op: WaitOp::Eq,
        value: 7,
        mask: u64::MAX,
        timeout: Timeout::Poll,
    });
    assert!(
        h.call(a, &wait).is_ok(),
        "the fence value is visible in the VM"
    );
}

/// EXEC_QUEUE_CREATE's priority: low and normal for anyone, high only for uid 0 or the
/// daemon's administrator (EPERM otherwise, as Xe without CAP_SYS_NICE); bind queues have
/// none (EINVAL). The driver gets the priority that was asked for.
#[test]
fn a_high_priority_queue_needs_privilege() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let create = |h: &mut Harness, class, priority, uid: u32| {
        let (op, mut bytes) = encode(&Request::ExecQueueCreate {
            vm,
            class,
            priority,
            batches: BatchFormat::Native,
        });
        let mut ctx = caller();
        ctx.uid = uid;
        h.s.call(dev, &mut bytes, &[op, 0, 0], &ctx)
            .map(|_| ())
            .map_err(|e| e.errno)
    };
    let created = |h: &Harness| {
        h.driver()
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::QueueCreate(_, class, p, _) => Some((class, p)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let (copy, bind) = (EngineClass::Copy, EngineClass::VmBind);
    assert_eq!(create(&mut h, copy, QueuePriority::High, 1000), Err(EPERM));
    assert_eq!(create(&mut h, bind, QueuePriority::Low, 0), Err(EINVAL));
    assert_eq!(created(&h), vec![], "a refused queue reached the driver");
    assert_eq!(create(&mut h, copy, QueuePriority::Low, 1000), Ok(()));
    assert_eq!(create(&mut h, copy, QueuePriority::Normal, 1000), Ok(()));
    assert_eq!(create(&mut h, copy, QueuePriority::High, 0), Ok(()));
    h.s.set_admin_uid(1000);
    assert_eq!(create(&mut h, copy, QueuePriority::High, 1000), Ok(()));
    assert_eq!(
        created(&h),
        vec![
            (copy, QueuePriority::Low),
            (copy, QueuePriority::Normal),
            (copy, QueuePriority::High),
            (copy, QueuePriority::High),
        ]
    );
}

/// INTEL_BATCHES reaches the driver for copy and compute queues; a bind queue runs no
/// batches, so asking for Intel ones is EINVAL and never reaches the driver.
#[test]
fn intel_batches_are_for_exec_queues_only() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let create = |h: &mut Harness, class| {
        let req = Request::ExecQueueCreate {
            vm,
            class,
            priority: QueuePriority::Normal,
            batches: BatchFormat::Intel,
        };
        h.call(dev, &req).map(|_| ())
    };
    assert_eq!(create(&mut h, EngineClass::VmBind), Err(EINVAL));
    assert_eq!(create(&mut h, EngineClass::Copy), Ok(()));
    let created: Vec<_> = h
        .driver()
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::QueueCreate(_, class, _, batches) => Some((class, batches)),
            _ => None,
        })
        .collect();
    assert_eq!(created, vec![(EngineClass::Copy, BatchFormat::Intel)]);
}

/// Memory limits apply to a process across its device handles: a second handle of the same
/// process does not get a second allowance; another process does.
#[test]
fn memory_limits_are_shared_by_a_process_handles() {
    let limits = Limits {
        vram_bytes: 0x3000,
        ..Limits::default()
    };
    let mut h = Harness::with_limits(limits);
    let (dev, same_process) = (h.open(), h.open());
    let pid = |p| gpu_scheme::dispatch::caller_ctx(p, 0);
    let other_process = opened(h.s.openat(h.root, DEVICE, 0, 0, &pid(7))).unwrap();
    let bo = h.try_bo(dev, 0x2000, Placement::VRAM).unwrap();
    assert_eq!(
        h.try_bo(same_process, 0x2000, Placement::VRAM),
        Err(ENOSPC),
        "a second handle of the process must not double its VRAM"
    );
    h.try_bo(other_process, 0x2000, Placement::VRAM)
        .expect("another process has its own share");
    h.call(dev, &Request::BoDestroy(bo)).unwrap();
    h.try_bo(same_process, 0x2000, Placement::VRAM)
        .expect("the refund is the process's too");
}
