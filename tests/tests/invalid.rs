//! Invalid input for every call against the live daemon: wrong version, short or oversized
//! args, reserved bytes ≠ 0, truncated payloads, unknown ids and flags, foreign or closed ids
//! → the documented errno, and the daemon still serving after each.

use gpu_scheme::uapi::flags::*;
use gpu_scheme::uapi::*;
use gpu_tests::{sys_bo, Daemon};
use libgpu::errno::*;
use libgpu::{Device, ExecQueue, Syncobj, Vm};

/// Objects the valid requests name.
struct Fixture {
    _daemon: Daemon,
    dev: Device,
    vm: Vm,
    queue: ExecQueue,
    bo: libgpu::Bo,
    so: Syncobj,
}

fn fixture() -> Fixture {
    let daemon = Daemon::start();
    let dev = daemon.device();
    let vm = Vm::create(&dev, VmCreateFlags::empty()).expect("vm");
    let queue = ExecQueue::create(&vm, EngineClass::Copy).expect("queue");
    let bo = sys_bo(&dev, 0x1000);
    let so = Syncobj::create(&dev, true).expect("syncobj");
    Fixture {
        _daemon: daemon,
        dev,
        vm,
        queue,
        bo,
        so,
    }
}

fn raw(dev: &Device, op: u64, bytes: &mut [u8]) -> Result<(), i32> {
    dev.handle()
        .call(bytes, [op, 0, 0])
        .map(|_| ())
        .map_err(|e| match e {
            libgpu::TransportError::Scheme(n) | libgpu::TransportError::Os(n) => n,
            other => panic!("transport failure {other:?}"),
        })
}

fn still_serving(dev: &Device) {
    assert_eq!(dev.query().expect("daemon still serving").va_bits, 48);
}

/// Every malformed framing of `req` is rejected with its errno; the valid one is not
/// rejected for framing (it may still fail on state, never with the framing errnos' cause).
fn check_framing(f: &Fixture, req: &Request) {
    let (op, good) = encode(req);
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("version 2", patch(&good, 0, &2u16.to_le_bytes()), EINVAL),
        ("header pad", patch(&good, 2, &1u16.to_le_bytes()), EINVAL),
        (
            "header reserved",
            patch(&good, 8, &1u64.to_le_bytes()),
            EINVAL,
        ),
        ("args_size 0", patch(&good, 4, &0u32.to_le_bytes()), EINVAL),
        (
            "args_size huge",
            patch(&good, 4, &8192u32.to_le_bytes()),
            EINVAL,
        ),
        ("truncated", good[..good.len() - 1].to_vec(), EINVAL),
        ("trailing byte", [good.clone(), vec![0]].concat(), EINVAL),
        ("empty", Vec::new(), EINVAL),
    ];
    for (what, mut bytes, want) in cases {
        assert_eq!(raw(&f.dev, op, &mut bytes), Err(want), "{req:?}: {what}");
        still_serving(&f.dev);
    }
    // A larger args struct whose extra bytes are non-zero: E2BIG.
    let size = u32::from_le_bytes([good[4], good[5], good[6], good[7]]) as usize;
    let mut bigger = good[..16 + size].to_vec();
    bigger.extend_from_slice(&[1u8; 8]);
    bigger.extend_from_slice(&good[16 + size..]);
    let bigger = patch(&bigger, 4, &((size + 8) as u32).to_le_bytes());
    let mut b = bigger;
    assert_eq!(
        raw(&f.dev, op, &mut b),
        Err(E2BIG),
        "{req:?}: extension bytes"
    );
    still_serving(&f.dev);
}

fn patch(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.len() >= at + with.len() {
        v[at..at + with.len()].copy_from_slice(with);
    }
    v
}

fn map_op(f: &Fixture, addr: u64) -> BindOp {
    BindOp {
        kind: BindOpKind::Map {
            bo: f.bo.id(),
            bo_offset: 0,
        },
        addr,
        range: 0x1000,
        flags: BindFlags::empty(),
        pat_index: 0,
    }
}

macro_rules! framing {
    ($name:ident, |$f:ident| $req:expr) => {
        #[test]
        fn $name() {
            let $f = fixture();
            let req = $req;
            check_framing(&$f, &req);
        }
    };
}

framing!(device_query_framing, |f| Request::DeviceQuery);
framing!(vm_create_framing, |f| Request::VmCreate(
    VmCreateFlags::empty()
));
framing!(vm_destroy_framing, |f| Request::VmDestroy(f.vm.id()));
framing!(bo_create_framing, |f| Request::BoCreate(BoCreateRequest {
    size: 0x1000,
    placement: Placement::SYSTEM,
    flags: BoCreateFlags::empty(),
    vm: None,
}));
framing!(bo_destroy_framing, |f| Request::BoDestroy(f.bo.id()));
framing!(exec_queue_create_framing, |f| Request::ExecQueueCreate {
    vm: f.vm.id(),
    class: EngineClass::Copy,
    priority: QueuePriority::Low,
    batches: Default::default(),
});
framing!(exec_queue_destroy_framing, |f| Request::ExecQueueDestroy(
    f.queue.id()
));
framing!(vm_bind_framing, |f| Request::VmBind(VmBindRequest {
    vm: f.vm.id(),
    queue: None,
    ops: vec![map_op(&f, 0x10_0000)],
    syncs: vec![],
}));
framing!(exec_framing, |f| Request::Exec(ExecRequest {
    queue: f.queue.id(),
    batches: vec![0x10_0000],
    syncs: vec![],
}));
framing!(wait_user_fence_framing, |f| Request::WaitUserFence(
    WaitUserFenceRequest {
        vm: f.vm.id(),
        queue: None,
        addr: 0x10_0000,
        op: WaitOp::Eq,
        value: 0,
        mask: u64::MAX,
        timeout: Timeout::Poll,
    }
));
framing!(syncobj_create_framing, |f| Request::SyncobjCreate {
    signaled: false
});
framing!(syncobj_destroy_framing, |f| Request::SyncobjDestroy(
    f.so.id()
));
framing!(syncobj_wait_framing, |f| Request::SyncobjWait(
    SyncobjWaitRequest {
        points: vec![SyncobjPoint {
            syncobj: f.so.id(),
            point: 0,
        }],
        flags: SyncobjWaitFlags::empty(),
        timeout: Timeout::Poll,
    }
));
framing!(syncobj_signal_framing, |f| Request::SyncobjSignal(vec![
    SyncobjPoint {
        syncobj: f.so.id(),
        point: 0,
    }
]));
framing!(syncobj_query_framing, |f| Request::SyncobjQuery(f.so.id()));
framing!(syncobj_transfer_framing, |f| Request::SyncobjTransfer(
    SyncobjTransferRequest {
        src: SyncobjPoint {
            syncobj: f.so.id(),
            point: 0,
        },
        dst: SyncobjPoint {
            syncobj: f.so.id(),
            point: 5,
        },
        wait_for_submit: false,
    }
));

fn call_err(f: &Fixture, req: &Request) -> i32 {
    let (op, mut bytes) = encode(req);
    let r = raw(&f.dev, op, &mut bytes);
    still_serving(&f.dev);
    r.expect_err("rejected")
}

#[test]
fn unknown_and_closed_ids_are_enoent() {
    let f = fixture();
    assert_eq!(call_err(&f, &Request::VmDestroy(VmId(999))), ENOENT);
    assert_eq!(call_err(&f, &Request::BoDestroy(BoId(999))), ENOENT);
    assert_eq!(call_err(&f, &Request::SyncobjQuery(SyncobjId(999))), ENOENT);
    assert_eq!(
        call_err(&f, &Request::ExecQueueDestroy(QueueId(999))),
        ENOENT
    );
    let so = Syncobj::create(&f.dev, false).expect("so");
    let id = so.id();
    so.destroy().expect("destroy");
    assert_eq!(call_err(&f, &Request::SyncobjQuery(id)), ENOENT);
}

#[test]
fn unknown_flags_and_bad_values_are_einval() {
    let f = fixture();
    let bad_vm = VmCreateFlags::from_bits_retain(1 << 9);
    assert_eq!(call_err(&f, &Request::VmCreate(bad_vm)), EINVAL);
    let bo = |size, placement| {
        Request::BoCreate(BoCreateRequest {
            size,
            placement,
            flags: BoCreateFlags::empty(),
            vm: None,
        })
    };
    assert_eq!(call_err(&f, &bo(0, Placement::SYSTEM)), EINVAL);
    assert_eq!(call_err(&f, &bo(0x1001, Placement::SYSTEM)), EINVAL);
    assert_eq!(call_err(&f, &bo(0x1000, Placement::empty())), EINVAL);
    let mut op = map_op(&f, 0x10_0000);
    op.flags = BindFlags::from_bits_retain(1 << 12);
    let bind = |ops| {
        Request::VmBind(VmBindRequest {
            vm: f.vm.id(),
            queue: None,
            ops,
            syncs: vec![],
        })
    };
    assert_eq!(call_err(&f, &bind(vec![op])), EINVAL);
    let mut mis = map_op(&f, 0x10_0800);
    assert_eq!(call_err(&f, &bind(vec![mis])), EINVAL);
    mis = map_op(&f, u64::MAX - 0xfff);
    assert_eq!(call_err(&f, &bind(vec![mis])), EINVAL, "overflow");
    let exec = Request::Exec(ExecRequest {
        queue: f.queue.id(),
        batches: vec![0x10_0004],
        syncs: vec![],
    });
    assert_eq!(call_err(&f, &exec), EINVAL, "misaligned batch");
}

#[test]
fn wrong_handle_kind_is_ebadf() {
    let f = fixture();
    let boh = f
        .dev
        .handle()
        .dup(&format!("bo/{}", f.bo.id().0))
        .expect("bo handle");
    let (op, mut bytes) = encode(&Request::DeviceQuery);
    let e = boh
        .call(&mut bytes, [op, 0, 0])
        .expect_err("device call on a BO handle");
    assert_eq!(e, libgpu::TransportError::Scheme(EBADF));
    still_serving(&f.dev);
}
