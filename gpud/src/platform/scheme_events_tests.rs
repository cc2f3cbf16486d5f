//! The Redox event loop driving the real `gpu` scheme server (over the scheme crate's fake
//! driver): blocking calls park and unpark, cancellations reach the server, and the timer
//! armed for the earliest deadline turns an expired wait into ETIME.

use super::*;
use crate::platform::event_loop::EventLoop;
use crate::platform::sys::{EventWait, WakeSource};
use crate::platform::testing::{self as t, FakeIrq, FakeQueue, FakeSocket};
use gpu_scheme::testing::FakeDriver;
use gpu_scheme::uapi::flags::SyncobjWaitFlags;
use gpu_scheme::uapi::request::{Request, SyncobjId, SyncobjPoint, SyncobjWaitRequest, Timeout};
use gpu_scheme::uapi::wire::SyncobjCreateArgs;
use gpu_scheme::uapi::{encode, read_args};
use gpu_scheme::Limits;
use redox_scheme::scheme::SchemeSync;
use syscall::error::{EINTR, ETIME};
use syscall::schemev2::CqeOpcode;

type Events = SchemeEvents<fn(&FakeDriver) -> IrqOutcome>;
type Loop = EventLoop<FakeSocket, FakeIrq, GpuScheme<FakeDriver>, Events>;

fn handled(_: &FakeDriver) -> IrqOutcome {
    IrqOutcome::Handled
}

struct Harness {
    l: Loop,
    driver: FakeDriver,
    dev: usize,
    tag: u32,
}

impl Harness {
    fn new() -> Self {
        let driver = FakeDriver::new();
        let mut scheme = GpuScheme::new(driver.clone(), Limits::default());
        let root = scheme.scheme_root().expect("root");
        let events: Events = SchemeEvents::new(handled);
        let l = EventLoop::new(FakeSocket::default(), FakeIrq::default(), scheme, events);
        let mut h = Self {
            l,
            driver,
            dev: 0,
            tag: 100,
        };
        h.l.socket_mut()
            .incoming
            .push_back(t::openat(1, root, "card0", 0));
        h.wake(WakeSource::Scheme);
        h.dev = h.answer(1).expect("card0 opens");
        h
    }

    fn wake(&mut self, source: WakeSource) {
        self.l.on_wake(source).expect("loop wake");
    }

    /// The regular answer to request `tag`, if one was written.
    fn answer(&mut self, tag: u32) -> Option<usize> {
        self.result(tag).map(|r| r.expect("request succeeded"))
    }

    fn result(&mut self, tag: u32) -> Option<Result<usize, i32>> {
        let regular = CqeOpcode::RespondRegular as u8;
        let written = &self.l.socket_mut().written;
        written
            .iter()
            .find(|c| c.flags == regular && c.tag == tag)
            .map(t::result)
    }

    /// Queues a call on the device handle and returns its tag and payload.
    fn call(&mut self, req: &Request) -> (u32, t::Payload) {
        self.tag += 1;
        let (opcode, bytes) = encode(req);
        let (request, payload) = t::call(self.tag, self.dev, bytes, [opcode, 0, 0]);
        self.l.socket_mut().incoming.push_back(request);
        (self.tag, payload)
    }

    fn syncobj(&mut self) -> u32 {
        let (tag, payload) = self.call(&Request::SyncobjCreate { signaled: false });
        self.wake(WakeSource::Scheme);
        assert_eq!(self.answer(tag), Some(0));
        read_args::<SyncobjCreateArgs>(&payload.bytes())
            .expect("reply args")
            .syncobj_id
    }

    fn wait(&mut self, syncobj: u32, timeout: Timeout) -> u32 {
        let req = Request::SyncobjWait(SyncobjWaitRequest {
            points: vec![SyncobjPoint {
                syncobj: SyncobjId(syncobj),
                point: 0,
            }],
            flags: SyncobjWaitFlags::WAIT_FOR_SUBMIT,
            timeout,
        });
        self.call(&req).0
    }
}

#[test]
fn a_blocking_wait_parks_in_the_loop_and_the_server() {
    let mut h = Harness::new();
    let s = h.syncobj();
    let tag = h.wait(s, Timeout::Forever);
    h.wake(WakeSource::Scheme);
    assert_eq!(
        h.result(tag),
        None,
        "not answered while the syncobj has no fence"
    );
    assert_eq!(h.l.parked_len(), 1);
    assert_eq!(h.l.scheme_mut().parked_count(), 1);
    assert_eq!(h.l.next_deadline(), None, "no timeout, no timer");
}

#[test]
fn signalling_the_syncobj_unparks_the_wait_on_the_next_wake() {
    let mut h = Harness::new();
    let s = h.syncobj();
    let tag = h.wait(s, Timeout::Forever);
    h.wake(WakeSource::Scheme);
    let (signal, _) = h.call(&Request::SyncobjSignal(vec![SyncobjPoint {
        syncobj: SyncobjId(s),
        point: 0,
    }]));
    h.wake(WakeSource::Scheme);
    assert_eq!(h.answer(signal), Some(0));
    h.wake(WakeSource::Irq);
    assert_eq!(h.result(tag), Some(Ok(0)), "the parked wait completed");
    assert_eq!(h.l.scheme_mut().parked_count(), 0);
}

#[test]
fn a_cancelled_wait_is_answered_eintr_and_forgotten_by_the_server() {
    let mut h = Harness::new();
    let s = h.syncobj();
    let tag = h.wait(s, Timeout::Relative(5_000_000_000));
    h.wake(WakeSource::Scheme);
    assert_eq!(h.l.scheme_mut().parked_count(), 1);
    h.l.socket_mut().incoming.push_back(t::cancel(tag));
    h.wake(WakeSource::Scheme);
    assert_eq!(h.result(tag), Some(Err(EINTR)));
    assert_eq!(h.l.parked_len(), 0);
    assert_eq!(
        h.l.scheme_mut().parked_count(),
        0,
        "server state dropped with the request"
    );
}

#[test]
fn the_timer_is_armed_for_the_earliest_deadline_and_expiry_answers_etime() {
    let mut h = Harness::new();
    let s = h.syncobj();
    let long = h.wait(s, Timeout::Relative(9_000_000));
    let short = h.wait(s, Timeout::Relative(2_000_000));
    h.wake(WakeSource::Scheme);
    assert_eq!(h.l.next_deadline(), Some(Duration::from_millis(2)));

    h.driver.advance(2_500_000);
    h.wake(WakeSource::Timer);
    assert_eq!(h.result(short), Some(Err(ETIME)));
    assert_eq!(h.result(long), None, "the later deadline has not passed");
    assert_eq!(h.l.next_deadline(), Some(Duration::from_micros(6_500)));
}

#[test]
fn run_arms_the_queue_timer_before_each_wait() {
    let mut h = Harness::new();
    let s = h.syncobj();
    h.wait(s, Timeout::Relative(1_000_000));
    let mut queue = FakeQueue::default();
    queue.wakes.extend([WakeSource::Scheme]);
    // The fake queue ends `run` with EPIPE once its script is exhausted.
    assert!(h.l.run(&mut queue).is_err());
    assert_eq!(queue.armed.first(), Some(&Some(Duration::from_millis(1))));
    assert!(queue.arm_timer(None).is_ok());
}

#[test]
fn a_parked_poll_bounds_the_timer_while_requests_wait() {
    let driver = FakeDriver::new();
    let mut scheme = GpuScheme::new(driver.clone(), Limits::default());
    let root = scheme.scheme_root().expect("root");
    let poll = Duration::from_millis(3);
    let events: Events =
        SchemeEvents::new(handled as fn(&FakeDriver) -> IrqOutcome).with_parked_poll(poll);
    let l = EventLoop::new(FakeSocket::default(), FakeIrq::default(), scheme, events);
    let mut h = Harness {
        l,
        driver,
        dev: 0,
        tag: 100,
    };
    h.l.socket_mut()
        .incoming
        .push_back(t::openat(1, root, "card0", 0));
    h.wake(WakeSource::Scheme);
    h.dev = h.answer(1).expect("card0 opens");
    assert_eq!(h.l.next_deadline(), None, "nothing parked: no timer");
    let s = h.syncobj();
    h.wait(s, Timeout::Forever);
    h.wake(WakeSource::Scheme);
    assert_eq!(h.l.next_deadline(), Some(poll), "no deadline: the poll");
    h.wait(s, Timeout::Relative(1_000_000));
    h.wake(WakeSource::Scheme);
    assert_eq!(
        h.l.next_deadline(),
        Some(Duration::from_millis(1)),
        "an earlier deadline wins"
    );
}
