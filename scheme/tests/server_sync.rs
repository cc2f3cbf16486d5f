//! Server tests of synchronisation against the fake driver: parked waits and timeouts, user
//! fences, syncobj readiness events, timeline points.

mod common;

use common::*;
use gpu_scheme::testing::caller;
use gpu_scheme::uapi::flags::*;
use gpu_scheme::uapi::wire::*;
use gpu_scheme::uapi::*;
use redox_scheme::scheme::SchemeSync;
use syscall::error::*;
use syscall::flag::EventFlags;

#[test]
fn blocking_waits_park_and_time_out() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let s = h.syncobj(dev, false);
    let none = SyncobjWaitFlags::empty();
    assert_eq!(
        h.err(dev, &syncobj_wait(&[s], none, Timeout::Poll)),
        EINVAL,
        "no fence"
    );
    assert_eq!(
        h.err(
            dev,
            &syncobj_wait(&[s], SyncobjWaitFlags::WAIT_FOR_SUBMIT, Timeout::Poll)
        ),
        ETIME
    );
    h.call(dev, &bind(vm, vec![], vec![signal(s)])).unwrap();
    let req = syncobj_wait(&[s], none, Timeout::Relative(100));
    assert_eq!(h.err(dev, &req), EWOULDBLOCK);
    assert_eq!(h.s.parked_count(), 1);
    h.driver().advance(60);
    assert_eq!(
        h.err(dev, &req),
        EWOULDBLOCK,
        "retry keeps the first deadline"
    );
    h.driver().advance(60);
    assert_eq!(h.err(dev, &req), ETIME);
    assert_eq!(h.s.parked_count(), 0);
    assert_eq!(h.err(dev, &req), EWOULDBLOCK);
    h.driver().complete_all();
    let p = h.call(dev, &req).unwrap();
    assert_eq!(read_args::<SyncobjWaitArgs>(&p).unwrap().first_signaled, 0);
    assert_eq!(h.s.parked_count(), 0);
    // ANY vs ALL.
    let t = h.syncobj(dev, true);
    let u = h.syncobj(dev, false);
    h.call(dev, &bind(vm, vec![], vec![signal(u)])).unwrap();
    let p = h
        .call(dev, &syncobj_wait(&[u, t], none, Timeout::Poll))
        .unwrap();
    assert_eq!(read_args::<SyncobjWaitArgs>(&p).unwrap().first_signaled, 1);
    assert_eq!(
        h.err(
            dev,
            &syncobj_wait(&[u, t], SyncobjWaitFlags::WAIT_ALL, Timeout::Poll)
        ),
        ETIME
    );
    // Cancellation forgets the parked request.
    assert_eq!(
        h.err(dev, &syncobj_wait(&[u], none, Timeout::Forever)),
        EWOULDBLOCK
    );
    h.s.cancel(caller().id);
    assert_eq!(h.s.parked_count(), 0);
}

#[test]
fn user_fence_waits() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::LR_MODE);
    let q = h.queue(dev, vm, EngineClass::Compute);
    let bo = h.bo(dev, 0x1000, None);
    let fence = SyncSpec {
        kind: SyncKind::UserFence {
            addr: 0x10000,
            value: 7,
        },
        signal: true,
    };
    h.call(dev, &bind(vm, vec![map(bo, 0x10000, 0x1000)], vec![fence]))
        .unwrap();
    let wait = |op, queue, timeout| {
        Request::WaitUserFence(WaitUserFenceRequest {
            vm,
            queue,
            addr: 0x10000,
            op,
            value: 7,
            mask: !0,
            timeout,
        })
    };
    assert_eq!(
        h.err(dev, &wait(WaitOp::Eq, None, Timeout::Absolute(10))),
        EWOULDBLOCK
    );
    h.driver().complete_all();
    assert!(h
        .call(dev, &wait(WaitOp::Eq, None, Timeout::Absolute(10)))
        .is_ok());
    assert!(h.call(dev, &wait(WaitOp::Gte, None, Timeout::Poll)).is_ok());
    assert_eq!(h.err(dev, &wait(WaitOp::Gt, None, Timeout::Poll)), ETIME);
    assert_eq!(
        h.err(dev, &wait(WaitOp::Eq, Some(QueueId(99)), Timeout::Poll)),
        ENOENT
    );
    let other = Request::WaitUserFence(WaitUserFenceRequest {
        vm: VmId(99),
        queue: None,
        addr: 0,
        op: WaitOp::Eq,
        value: 0,
        mask: 0,
        timeout: Timeout::Poll,
    });
    assert_eq!(h.err(dev, &other), ENOENT);
    assert!(h
        .call(dev, &wait(WaitOp::Eq, Some(q), Timeout::Poll))
        .is_ok());
}

#[test]
fn user_fence_wait_on_reset_queue_is_eio() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::LR_MODE);
    let q = h.queue(dev, vm, EngineClass::Compute);
    // The fake numbers objects in creation order: VM 1, queue 2.
    h.driver().reset_queue(&gpu_scheme::testing::FakeQueue(2));
    let req = Request::WaitUserFence(WaitUserFenceRequest {
        vm,
        queue: Some(q),
        addr: 0,
        op: WaitOp::Eq,
        value: 1,
        mask: !0,
        timeout: Timeout::Forever,
    });
    assert_eq!(h.err(dev, &req), EIO);
}

#[test]
fn syncobj_handles_are_pollable() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let s = h.syncobj(dev, false);
    let sh = h.dup(dev, &format!("syncobj/{}", s.0)).unwrap();
    h.call(dev, &bind(vm, vec![], vec![signal(s)])).unwrap();
    assert_eq!(
        h.s.fevent(sh, EventFlags::EVENT_READ, &caller()).unwrap(),
        EventFlags::empty()
    );
    assert!(h.s.ready_events().is_empty());
    h.driver().complete_all();
    assert_eq!(h.s.ready_events(), vec![(sh, EventFlags::EVENT_READ)]);
    assert!(h.s.ready_events().is_empty(), "edge-triggered");
    assert_eq!(
        h.s.fevent(sh, EventFlags::EVENT_READ, &caller()).unwrap(),
        EventFlags::EVENT_READ
    );
    assert_eq!(
        h.s.fevent(9999, EventFlags::EVENT_READ, &caller())
            .unwrap_err()
            .errno,
        EBADF
    );
}

#[test]
fn timeline_points_signal_wait_query_and_transfer() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let t = h.syncobj(dev, false);
    let b = h.syncobj(dev, false);
    let pt = |s, point| SyncobjPoint { syncobj: s, point };
    h.call(dev, &Request::SyncobjSignal(vec![pt(t, 5)]))
        .unwrap();
    let p = h.call(dev, &Request::SyncobjQuery(t)).unwrap();
    assert_eq!(read_args::<SyncobjQueryArgs>(&p).unwrap().point, 5);
    let wait = |point, flags| {
        Request::SyncobjWait(SyncobjWaitRequest {
            points: vec![pt(t, point)],
            flags,
            timeout: Timeout::Poll,
        })
    };
    assert!(
        h.call(dev, &wait(3, SyncobjWaitFlags::empty())).is_ok(),
        "earlier point"
    );
    assert!(h.call(dev, &wait(5, SyncobjWaitFlags::empty())).is_ok());
    assert_eq!(
        h.err(dev, &wait(7, SyncobjWaitFlags::empty())),
        EINVAL,
        "not submitted"
    );
    assert_eq!(
        h.err(dev, &wait(7, SyncobjWaitFlags::WAIT_FOR_SUBMIT)),
        ETIME
    );
    // A bind may wait on a submitted point, not on an unsubmitted one.
    let on = |point| SyncSpec {
        kind: SyncKind::Timeline(t, point),
        signal: false,
    };
    assert!(h.call(dev, &bind(vm, vec![], vec![on(5)])).is_ok());
    assert_eq!(h.err(dev, &bind(vm, vec![], vec![on(9)])), EINVAL);
    // Transfer point 5 into the binary syncobj.
    let tr = |src, wait_for_submit| {
        Request::SyncobjTransfer(SyncobjTransferRequest {
            src: pt(t, src),
            dst: pt(b, 0),
            wait_for_submit,
        })
    };
    assert_eq!(
        h.err(dev, &tr(8, false)),
        EINVAL,
        "source point without fence"
    );
    h.call(dev, &tr(5, false)).unwrap();
    assert!(h
        .call(
            dev,
            &syncobj_wait(&[b], SyncobjWaitFlags::empty(), Timeout::Poll)
        )
        .is_ok());
    assert_eq!(
        h.err(
            dev,
            &Request::SyncobjSignal(vec![pt(t, 6), pt(SyncobjId(99), 1)])
        ),
        ENOENT
    );
    let p = h.call(dev, &Request::SyncobjQuery(t)).unwrap();
    assert_eq!(
        read_args::<SyncobjQueryArgs>(&p).unwrap().point,
        5,
        "nothing signalled by a failed call"
    );
}

/// A call with request tag `tag` (distinct request ids, as a transport gives them).
fn call_tagged(h: &mut Harness, dev: usize, tag: u32, req: &Request) -> Result<Vec<u8>, i32> {
    let (op, mut bytes) = encode(req);
    let ctx = gpu_scheme::dispatch::caller_ctx(0, tag);
    h.s.call(dev, &mut bytes, &[op, 0, 0], &ctx)
        .map(|_| bytes)
        .map_err(|e| e.errno)
}

#[test]
fn a_sync_bind_on_pending_work_parks_until_woken_and_is_not_run_again() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let bo = h.bo(dev, 0x1000, None);
    let woken = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let w = woken.clone();
    h.s.set_wake_hook(std::sync::Arc::new(move || {
        w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    h.driver().park_sync_binds(true);
    let req = bind(vm, vec![map(bo, 0x10000, 0x1000)], vec![]);
    assert_eq!(call_tagged(&mut h, dev, 1, &req), Err(EWOULDBLOCK));
    assert_eq!(h.s.parked_count(), 1);
    let id = gpu_scheme::dispatch::request_id(1);
    h.s.collect_wakeups();
    assert!(!h.s.is_due(Some(dev), id), "nothing signalled: not due");
    assert!(!h.s.has_polled(), "watched, not polled");
    // A later request on the same handle waits behind it (answers stay in order).
    assert_eq!(
        call_tagged(&mut h, dev, 2, &Request::DeviceQuery),
        Err(EWOULDBLOCK)
    );
    let checks = h.driver().pending_checks();
    h.driver().complete_all();
    assert_eq!(
        woken.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "woke the loop"
    );
    h.s.collect_wakeups();
    assert!(h.s.is_due(Some(dev), id));
    assert!(call_tagged(&mut h, dev, 1, &req).is_ok(), "answered");
    assert_eq!(h.driver().pending_checks(), checks + 1, "one re-check");
    assert!(call_tagged(&mut h, dev, 2, &Request::DeviceQuery).is_ok());
    assert_eq!(h.s.parked_count(), 0);
    let binds = h
        .driver()
        .calls()
        .iter()
        .filter(|c| matches!(c, gpu_scheme::testing::Call::VmBind(..)))
        .count();
    assert_eq!(binds, 1, "the retry answered from the committed work");
}

#[test]
fn closing_a_handle_forgets_its_parked_bind() {
    let mut h = Harness::new();
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let bo = h.bo(dev, 0x1000, None);
    h.driver().park_sync_binds(true);
    let req = bind(vm, vec![map(bo, 0x10000, 0x1000)], vec![]);
    assert_eq!(call_tagged(&mut h, dev, 1, &req), Err(EWOULDBLOCK));
    h.s.on_close(dev);
    assert_eq!(h.s.parked_count(), 0);
    h.driver().complete_all();
    h.s.collect_wakeups();
}

#[test]
fn a_wait_the_driver_cannot_watch_is_polled() {
    let mut h = Harness::new();
    let dev = h.open();
    let s = h.syncobj(dev, false);
    let req = syncobj_wait(&[s], SyncobjWaitFlags::WAIT_FOR_SUBMIT, Timeout::Forever);
    assert_eq!(h.err(dev, &req), EWOULDBLOCK);
    assert!(h.s.has_polled());
    assert!(h.s.next_wake_ns().is_some(), "a poll is scheduled");
    assert!(h.s.is_due(Some(dev), caller().id));
}

#[test]
fn syncobj_reset_empties_binary_and_timeline_objects_and_is_all_or_nothing() {
    let mut h = Harness::new();
    let dev = h.open();
    let b = h.syncobj(dev, true);
    let t = h.syncobj(dev, false);
    let pt = |s, point| SyncobjPoint { syncobj: s, point };
    h.call(dev, &Request::SyncobjSignal(vec![pt(t, 5)]))
        .unwrap();
    let query = |h: &mut Harness, s| {
        let p = h.call(dev, &Request::SyncobjQuery(s)).unwrap();
        read_args::<SyncobjQueryArgs>(&p).unwrap().point
    };
    assert_eq!((query(&mut h, b), query(&mut h, t)), (1, 5));
    assert_eq!(
        h.err(dev, &Request::SyncobjReset(vec![b, SyncobjId(99)])),
        ENOENT
    );
    assert_eq!(query(&mut h, b), 1, "a failed reset resets nothing");
    h.call(dev, &Request::SyncobjReset(vec![b, t])).unwrap();
    assert_eq!((query(&mut h, b), query(&mut h, t)), (0, 0));
    let none = SyncobjWaitFlags::empty();
    assert_eq!(
        h.err(dev, &syncobj_wait(&[b], none, Timeout::Poll)),
        EINVAL,
        "a reset binary syncobj has no fence"
    );
    let wait_t = |point, flags| {
        Request::SyncobjWait(SyncobjWaitRequest {
            points: vec![pt(t, point)],
            flags,
            timeout: Timeout::Poll,
        })
    };
    assert_eq!(h.err(dev, &wait_t(3, none)), EINVAL, "points are gone");
    assert_eq!(
        h.err(dev, &wait_t(3, SyncobjWaitFlags::WAIT_FOR_SUBMIT)),
        ETIME
    );
    // The timeline starts over: a point below the old head is a new submission.
    h.call(dev, &Request::SyncobjSignal(vec![pt(t, 2)]))
        .unwrap();
    assert!(h.call(dev, &wait_t(2, none)).is_ok());
}

#[test]
fn an_exec_past_the_in_flight_limit_parks_until_work_completes_and_keeps_call_order() {
    let limits = gpu_scheme::Limits {
        in_flight: 1,
        ..Default::default()
    };
    let mut h = Harness::with_limits(limits);
    let dev = h.open();
    let other = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let q = h.queue(dev, vm, EngineClass::Copy);
    let exec = Request::Exec(ExecRequest {
        queue: q,
        batches: vec![0x1000],
        syncs: vec![],
    });
    assert!(call_tagged(&mut h, dev, 1, &exec).is_ok());
    assert_eq!(call_tagged(&mut h, dev, 2, &exec), Err(EWOULDBLOCK));
    assert_eq!(h.s.parked_count(), 1, "parked, not EBUSY");
    assert_eq!(
        call_tagged(&mut h, dev, 3, &exec),
        Err(EWOULDBLOCK),
        "a later call of the handle waits behind it"
    );
    assert!(
        h.call(other, &Request::DeviceQuery).is_ok(),
        "another client goes on"
    );
    let id = gpu_scheme::dispatch::request_id(2);
    assert_eq!(
        call_tagged(&mut h, dev, 2, &exec),
        Err(EWOULDBLOCK),
        "still full"
    );
    h.driver().complete_all();
    h.s.collect_wakeups();
    assert!(h.s.is_due(Some(dev), id));
    assert_eq!(
        call_tagged(&mut h, dev, 3, &exec),
        Err(EWOULDBLOCK),
        "room freed, but the later exec does not overtake the parked one"
    );
    assert!(
        call_tagged(&mut h, dev, 2, &exec).is_ok(),
        "ran once room freed"
    );
    assert_eq!(
        call_tagged(&mut h, dev, 3, &exec),
        Err(EWOULDBLOCK),
        "the next waits for room in turn"
    );
    h.driver().complete_all();
    assert!(call_tagged(&mut h, dev, 3, &exec).is_ok());
    assert_eq!(h.s.parked_count(), 0);
    let execs = h
        .driver()
        .calls()
        .iter()
        .filter(|c| matches!(c, gpu_scheme::testing::Call::Exec(..)))
        .count();
    assert_eq!(execs, 3, "each exec submitted once");
}

#[test]
fn closing_a_handle_forgets_its_exec_parked_for_capacity() {
    let limits = gpu_scheme::Limits {
        in_flight: 1,
        ..Default::default()
    };
    let mut h = Harness::with_limits(limits);
    let dev = h.open();
    let vm = h.vm(dev, VmCreateFlags::empty());
    let q = h.queue(dev, vm, EngineClass::Copy);
    let exec = Request::Exec(ExecRequest {
        queue: q,
        batches: vec![0x1000],
        syncs: vec![],
    });
    assert!(call_tagged(&mut h, dev, 1, &exec).is_ok());
    assert_eq!(call_tagged(&mut h, dev, 2, &exec), Err(EWOULDBLOCK));
    h.s.on_close(dev);
    assert_eq!(h.s.parked_count(), 0);
    h.driver().complete_all();
    h.s.collect_wakeups();
    let execs = h
        .driver()
        .calls()
        .iter()
        .filter(|c| matches!(c, gpu_scheme::testing::Call::Exec(..)))
        .count();
    assert_eq!(execs, 1, "the parked exec never ran");
}
