//! libgpu end to end over the host transport against the fake driver: objects, errors, BO
//! mappings, binds and execs reaching the driver, syncobj waits and readiness.

#![cfg(target_os = "linux")]

mod common;

use rustix::event::{PollFd, PollFlags, Timespec};

use common::{eventually, stat, Server};
use gpu_scheme::driver::DriverError;
use gpu_scheme::testing::Call as DriverCall;
use libgpu::errno::*;
use libgpu::flags::*;
use libgpu::{wait_many, Bo, Call, Device, ExecQueue, Syncobj, Timeout, Vm, WaitMode};
use libgpu::{TransportError, VmBindRequest};

fn sys_bo(dev: &Device, size: u64) -> Bo {
    Bo::create(dev, size, Placement::SYSTEM, BoCreateFlags::empty()).expect("bo")
}

#[test]
fn query_reports_the_device() {
    let server = Server::start();
    let info = server.device().query().unwrap();
    assert_eq!(info.va_bits, 48);
    assert!(info.has_engine(EngineClass::Copy));
    assert!(info.has_engine(EngineClass::Compute));
    assert!(!info.has_engine(EngineClass::VmBind));
    assert_eq!(info.va_end(), 1 << 48);
    assert_eq!(info.pat_entries, 4);
    assert!(info.max_objects > 0);
}

#[test]
fn objects_are_created_and_destroyed_on_drop_and_explicitly() {
    let server = Server::start();
    let dev = server.device();
    let count = |key: &str| stat(&dev.stats().unwrap(), key).unwrap();
    let vm = Vm::create(&dev, VmCreateFlags::SCRATCH_PAGE).unwrap();
    let q = ExecQueue::create(&vm, EngineClass::Copy).unwrap();
    let bo = sys_bo(&dev, 0x4000);
    let private = Bo::create_private(&vm, 0x1000, Placement::SYSTEM, BoCreateFlags::empty());
    let private = private.unwrap();
    let so = Syncobj::create(&dev, true).unwrap();
    assert!(private.is_private() && !bo.is_private());
    assert_eq!(
        (
            count("client-vms"),
            count("client-bos"),
            count("client-queues")
        ),
        ("1".into(), "2".into(), "1".into())
    );
    assert_eq!(count("client-syncobjs"), "1");
    // The queue holds the VM: dropping the Vm first leaves it alive until the queue goes.
    drop(vm);
    assert_eq!(count("client-vms"), "1");
    q.destroy().unwrap();
    assert_eq!(
        count("client-vms"),
        "1",
        "the private BO still holds the VM"
    );
    drop(private);
    assert_eq!(count("client-vms"), "0");
    bo.destroy().unwrap();
    drop(so);
    assert_eq!(count("client-bos"), "0");
    assert_eq!(count("client-syncobjs"), "0");
    let calls = server.driver.calls();
    assert!(calls.iter().any(|c| matches!(c, DriverCall::VmDestroy(_))));
    assert!(calls
        .iter()
        .any(|c| matches!(c, DriverCall::QueueDestroy(_))));
}

#[test]
fn errors_carry_the_call_and_the_errno() {
    let server = Server::start();
    let dev = server.device();
    let e = Vm::create(&dev, VmCreateFlags::FAULT_MODE).unwrap_err();
    assert_eq!(
        (e.call, e.errno()),
        (Call::Op(libgpu_op("VmCreate")), EINVAL)
    );
    let e = Bo::create(&dev, 0, Placement::SYSTEM, BoCreateFlags::empty()).unwrap_err();
    assert_eq!(e.errno(), EINVAL);
    assert!(e.is_scheme(EINVAL));
    let vm = Vm::create(&dev, VmCreateFlags::empty()).unwrap();
    let q = ExecQueue::create(&vm, EngineClass::Copy).unwrap();
    let bo = sys_bo(&dev, 0x1000);
    // A bind may name a VM_BIND-class queue of its VM, and nothing else.
    let bind_q = ExecQueue::create(&vm, EngineClass::VmBind).unwrap();
    vm.bind()
        .map(&bo, 0, 0x1000, 0x1000)
        .queue(&bind_q)
        .submit()
        .unwrap();
    let e = vm
        .bind()
        .unmap(0x1000, 0x1000)
        .queue(&q)
        .submit()
        .unwrap_err();
    assert_eq!(e.call, Call::Local, "an exec queue is not a bind queue");
    drop(bind_q);
    let e = vm.bind().map(&bo, 0, 0x1001, 0x1000).submit().unwrap_err();
    assert_eq!((e.call, e.errno()), (Call::Op(libgpu_op("VmBind")), EINVAL));
    let e = vm.bind().map(&bo, 0, 0x1000, 0x2000).submit().unwrap_err();
    assert_eq!(e.errno(), EINVAL, "range beyond the BO");
    server.driver.fail_next(DriverError::NoMemory);
    let e = Bo::create(&dev, 0x1000, Placement::SYSTEM, BoCreateFlags::empty()).unwrap_err();
    assert_eq!(e.errno(), ENOMEM);
    let e = vm.destroy().unwrap_err();
    assert_eq!(
        (e.call, e.errno()),
        (Call::Op(libgpu_op("VmDestroy")), EBUSY)
    );
    let e = dev.import_bo(libgpu::Token([1, 2])).unwrap_err();
    assert_eq!(e.errno(), ENOENT);
    drop(q);
    let e = Device::open_at(&server.path.with_extension("missing")).unwrap_err();
    assert_eq!(e.call, Call::Connect);
    assert!(matches!(e.source, TransportError::Os(_)));
}

/// The opcode named `name` (keeps the tests independent of the enum's path).
fn libgpu_op(name: &str) -> gpu_scheme::uapi::Opcode {
    *gpu_scheme::uapi::Opcode::ALL
        .iter()
        .find(|o| format!("{o:?}") == name)
        .unwrap()
}

#[test]
fn objects_of_another_device_are_refused_locally() {
    let server = Server::start();
    let (a, b) = (server.device(), server.device());
    let vm = Vm::create(&a, VmCreateFlags::empty()).unwrap();
    let foreign_bo = sys_bo(&b, 0x1000);
    let foreign_so = Syncobj::create(&b, true).unwrap();
    let e = vm.bind().map(&foreign_bo, 0, 0x1000, 0x1000).submit();
    assert_eq!(e.unwrap_err().call, Call::Local);
    let e = vm.bind().unmap(0x1000, 0x1000).wait(&foreign_so).submit();
    assert_eq!(e.unwrap_err().errno(), EINVAL);
    let e = vm.bind().readonly().submit().unwrap_err();
    assert_eq!(e.call, Call::Local, "a flag with no op to apply to");
    let e = wait_many(&a, &[(&foreign_so, 0)], WaitMode::default(), Timeout::Poll);
    assert_eq!(e.unwrap_err().call, Call::Local);
    assert!(!server
        .driver
        .calls()
        .iter()
        .any(|c| matches!(c, DriverCall::VmBind(..))));
}

#[test]
fn bind_and_exec_reach_the_driver() {
    let server = Server::start();
    let dev = server.device();
    let vm = Vm::create(&dev, VmCreateFlags::empty()).unwrap();
    let bo = sys_bo(&dev, 0x4000);
    let in_fence = Syncobj::create(&dev, true).unwrap();
    let out = Syncobj::create(&dev, false).unwrap();
    let bind = vm
        .bind()
        .map(&bo, 0, 0x10_0000, 0x2000)
        .readonly()
        .map(&bo, 0x2000, 0x20_0000, 0x2000)
        .map_null(0x40_0000, 0x1_0000)
        .wait(&in_fence)
        .signal(&out);
    let req: VmBindRequest = bind.request().unwrap();
    assert_eq!((req.ops.len(), req.syncs.len()), (3, 2));
    bind.submit().unwrap();
    let q = ExecQueue::create(&vm, EngineClass::Copy).unwrap();
    q.exec(0x10_0000)
        .batch(0x10_0800)
        .wait(&out)
        .submit()
        .unwrap();
    let calls = server.driver.calls();
    assert!(calls
        .iter()
        .any(|c| matches!(c, DriverCall::VmBind(_, 3, 2))));
    assert!(calls
        .iter()
        .any(|c| matches!(c, DriverCall::Exec(_, b) if b == &[0x10_0000, 0x10_0800])));
    assert_eq!(
        stat(&dev.stats().unwrap(), "client-gpu-mappings").unwrap(),
        "2"
    );
}

#[test]
fn bo_mapping_reads_and_writes_shared_memory() {
    let server = Server::start();
    let dev = server.device();
    let bo = sys_bo(&dev, 0x2000);
    let a = bo.mmap().unwrap();
    let b = bo.mmap_range(0x1000, 0x1000).unwrap();
    assert_eq!((a.len(), b.len()), (0x2000, 0x1000));
    a.write(0x1008, b"shared").unwrap();
    let mut got = [0u8; 6];
    b.read(8, &mut got).unwrap();
    assert_eq!(&got, b"shared", "two mappings of one BO see the same bytes");
    b.write_u64(0x10, 0x1122_3344_5566_7788).unwrap();
    assert_eq!(a.read_u64(0x1010).unwrap(), 0x1122_3344_5566_7788);
    a.write_dwords(0, &[1, 2]).unwrap();
    assert_eq!(a.read_u32(4).unwrap(), 2);
    let oob = b.read(0xffc, &mut [0u8; 8]).unwrap_err();
    assert_eq!((oob.offset, oob.len, oob.size), (0xffc, 8, 0x1000));
    assert!(
        a.write(usize::MAX, b"x").is_err(),
        "overflowing offsets are refused"
    );
    assert_eq!(
        stat(&dev.stats().unwrap(), "client-cpu-mappings").unwrap(),
        "2"
    );
    let e = bo.mmap_range(0x1000, 0x2000).unwrap_err();
    assert_eq!((e.call, e.errno()), (Call::Mmap, EINVAL));
    drop((a, b));
    assert_eq!(
        stat(&dev.stats().unwrap(), "client-cpu-mappings").unwrap(),
        "0"
    );
}

#[test]
fn syncobj_waits_time_out_and_complete() {
    let server = Server::start();
    let dev = server.device();
    let fresh = Syncobj::create(&dev, false).unwrap();
    let e = fresh.wait(Timeout::Poll).unwrap_err();
    assert_eq!(
        e.errno(),
        EINVAL,
        "a point without fence and no WAIT_FOR_SUBMIT"
    );
    let submit = WaitMode {
        all: false,
        for_submit: true,
    };
    assert_eq!(
        wait_many(&dev, &[(&fresh, 0)], submit, Timeout::Poll).unwrap(),
        None
    );
    // A relative timeout expires on the device clock, measured from the first attempt.
    let dev2 = dev.clone();
    let waiter = std::thread::spawn(move || {
        let so = Syncobj::create(&dev2, false).unwrap();
        let all = WaitMode {
            all: true,
            for_submit: true,
        };
        wait_many(&dev2, &[(&so, 0)], all, Timeout::Relative(1_000_000))
    });
    eventually("the wait parks", || {
        server.driver.advance(100_000);
        waiter.is_finished()
    });
    assert_eq!(waiter.join().unwrap().unwrap(), None);
    // Signalled by work completing.
    let vm = Vm::create(&dev, VmCreateFlags::empty()).unwrap();
    let q = ExecQueue::create(&vm, EngineClass::Compute).unwrap();
    q.exec(0x1000)
        .signal(&fresh)
        .signal_point(&fresh, 3)
        .submit()
        .unwrap();
    assert!(!fresh.wait(Timeout::Poll).unwrap());
    assert_eq!(fresh.query().unwrap(), 0);
    server.driver.complete_all();
    assert!(fresh.wait(Timeout::Forever).unwrap());
    assert!(fresh.wait_point(3, Timeout::Poll).unwrap());
    assert_eq!(fresh.query().unwrap(), 3);
    let first = wait_many(&dev, &[(&fresh, 7), (&fresh, 3)], submit, Timeout::Poll);
    assert_eq!(first.unwrap(), Some(1));
}

#[test]
fn syncobj_signal_query_and_transfer() {
    let server = Server::start();
    let dev = server.device();
    let a = Syncobj::create(&dev, false).unwrap();
    let b = Syncobj::create(&dev, false).unwrap();
    a.signal_point(5).unwrap();
    assert_eq!(a.query().unwrap(), 5);
    a.transfer(5, &b, 0, false).unwrap();
    assert!(b.wait(Timeout::Poll).unwrap());
    let e = a.transfer(9, &b, 0, false).unwrap_err();
    assert_eq!(e.errno(), EINVAL, "no fence at the source point");
    let other = Syncobj::create(&server.device(), false).unwrap();
    assert_eq!(
        a.transfer(5, &other, 1, false).unwrap_err().call,
        Call::Local
    );
}

#[test]
fn user_fence_waits() {
    let server = Server::start();
    let dev = server.device();
    let vm = Vm::create(&dev, VmCreateFlags::LR_MODE).unwrap();
    let bo = sys_bo(&dev, 0x1000);
    vm.bind()
        .map(&bo, 0, 0x10_0000, 0x1000)
        .user_fence(0x10_0000, 7)
        .submit()
        .unwrap();
    let gte = |v| vm.wait_user_fence(0x10_0000, WaitOp::Gte, v, u64::MAX, Timeout::Poll);
    assert!(!gte(7).unwrap());
    server.driver.complete_all();
    assert!(gte(7).unwrap());
    assert!(!gte(8).unwrap());
    let e = vm.wait_user_fence(0x10_0004, WaitOp::Eq, 0, u64::MAX, Timeout::Poll);
    assert_eq!(e.unwrap_err().errno(), EINVAL, "misaligned address");
    let q = ExecQueue::create(&vm, EngineClass::Compute).unwrap();
    let fake_q = gpu_scheme::testing::FakeQueue(last_queue(&server));
    server.driver.reset_queue(&fake_q);
    let e = q.wait_user_fence(0x10_0000, WaitOp::Eq, 99, u64::MAX, Timeout::Poll);
    assert_eq!(e.unwrap_err().errno(), EIO, "the named queue was reset");
    let so = Syncobj::create(&dev, false).unwrap();
    let lr_signal = vm.bind().unmap(0x10_0000, 0x1000).signal(&so);
    assert_eq!(lr_signal.submit().unwrap_err().errno(), EOPNOTSUPP);
}

/// The fake's id of the most recently created queue.
fn last_queue(server: &Server) -> u64 {
    // Fake ids are handed out in order from one counter; the queue was the last object.
    let creates = server.driver.calls();
    let n = creates
        .iter()
        .filter(|c| matches!(c, DriverCall::QueueCreate(..)))
        .count();
    assert_eq!(n, 1);
    let objects = creates
        .iter()
        .filter(|c| {
            matches!(
                c,
                DriverCall::VmCreate(..) | DriverCall::BoCreate(..) | DriverCall::QueueCreate(..)
            )
        })
        .count();
    objects as u64
}

#[test]
fn readiness_reports_a_signalled_syncobj() {
    let server = Server::start();
    let dev = server.device();
    let so = Syncobj::create(&dev, false).unwrap();
    so.subscribe().unwrap();
    assert!(!so.take_ready().unwrap());
    assert_eq!(
        poll_readable(&so, 0),
        0,
        "nothing to read before the signal"
    );
    // Signalled through another client that imported it.
    let other = server.device();
    let exported = so.export().unwrap();
    let theirs = other.import_syncobj(exported.token()).unwrap();
    theirs.signal().unwrap();
    // poll(2) wakes up on the event (10 s bound for a loaded machine; normally immediate).
    assert_eq!(poll_readable(&so, 10_000), 1);
    let mut ready = false;
    eventually("a readiness event", || {
        ready |= so.take_ready().unwrap();
        ready
    });
    assert!(so.wait(Timeout::Poll).unwrap());
}

/// poll(2) on the syncobj's event fd: how many fds are readable within `ms`.
fn poll_readable(so: &Syncobj, ms: i32) -> usize {
    let fd = so.event_fd().unwrap();
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: i64::from(ms / 1000),
        tv_nsec: i64::from(ms % 1000) * 1_000_000,
    };
    rustix::event::poll(&mut fds, Some(&timeout)).unwrap()
}
