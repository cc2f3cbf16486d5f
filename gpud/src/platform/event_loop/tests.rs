use super::*;
use crate::platform::testing::{self as t, FakeIrq, FakeQueue, FakeSocket, TestEvents, TestScheme};
use proptest::prelude::*;
use syscall::flag::O_NONBLOCK;
use syscall::schemev2::CqeOpcode;

type Loop = EventLoop<FakeSocket, FakeIrq, TestScheme, TestEvents>;

fn new_loop() -> Loop {
    EventLoop::new(
        FakeSocket::default(),
        FakeIrq::default(),
        TestScheme::default(),
        TestEvents::default(),
    )
}

fn push(l: &mut Loop, reqs: impl IntoIterator<Item = redox_scheme::Request>) {
    l.socket_mut().incoming.extend(reqs);
}

/// (tag, result) of regular responses written so far.
fn answers(l: &mut Loop) -> Vec<(u32, Result<usize, i32>)> {
    let regular = CqeOpcode::RespondRegular as u8;
    l.socket_mut()
        .written
        .iter()
        .filter(|c| c.flags == regular)
        .map(|c| (c.tag, t::result(c)))
        .collect()
}

#[test]
fn blocking_read_parks_until_the_irq_then_answers_and_posts_fevent() {
    let mut l = new_loop();
    push(&mut l, [t::openat(1, 0, "card0", 0), t::read(2, 1, 16, 0)]);
    assert_eq!(l.on_wake(WakeSource::Scheme), Ok(Flow::Continue));
    assert_eq!(
        answers(&mut l),
        vec![(1, Ok(1))],
        "open answered, read parked"
    );
    assert_eq!(l.parked_len(), 1);

    l.on_wake(WakeSource::Scheme).expect("wake");
    assert_eq!(l.parked_len(), 1, "still blocked without an IRQ");

    l.socket_mut().written.clear();
    // The IRQ handle reports counter 7: the driver handles it, gpud acks 7.
    set_irq(&mut l, 7);
    l.on_wake(WakeSource::Irq).expect("wake");
    assert_eq!(l.parked_len(), 0);
    let written = &l.socket_mut().written;
    assert_eq!(written.len(), 2);
    assert_eq!((written[0].tag, t::result(&written[0])), (2, Ok(16)));
    let fevent = &written[1];
    assert_eq!(fevent.flags, CqeOpcode::SendFevent as u8);
    assert_eq!(
        (fevent.result, fevent.tag),
        (1, syscall::flag::EventFlags::EVENT_READ.bits() as u32)
    );
    assert_eq!(l.stats().irqs_acked, 1);
    assert_eq!(l.stats().unparked, 1);
    assert_eq!(acked(&mut l), vec![7]);
}

fn set_irq(l: &mut Loop, count: u64) {
    l.irq_mut_for_tests().pending = Some(count);
}

fn acked(l: &mut Loop) -> Vec<u64> {
    l.irq_mut_for_tests().acked.clone()
}

#[test]
fn nonblocking_read_gets_ewouldblock_at_once() {
    let mut l = new_loop();
    push(
        &mut l,
        [
            t::openat(1, 0, "card0", 0),
            t::read(2, 1, 4, O_NONBLOCK as u32),
        ],
    );
    l.on_wake(WakeSource::Scheme).expect("wake");
    assert_eq!(
        answers(&mut l),
        vec![(1, Ok(1)), (2, Err(syscall::EWOULDBLOCK))]
    );
    assert_eq!(l.parked_len(), 0);
}

#[test]
fn cancellation_answers_the_parked_request_with_eintr() {
    let mut l = new_loop();
    push(
        &mut l,
        [
            t::openat(1, 0, "card0", 0),
            t::read(2, 1, 4, 0),
            t::read(3, 1, 4, 0),
        ],
    );
    l.on_wake(WakeSource::Scheme).expect("wake");
    assert_eq!(l.parked_len(), 2);
    push(&mut l, [t::cancel(3), t::cancel(99)]);
    l.on_wake(WakeSource::Scheme).expect("wake");
    assert_eq!(answers(&mut l), vec![(1, Ok(1)), (3, Err(syscall::EINTR))]);
    assert_eq!(
        l.parked_len(),
        1,
        "request 2 still waits; unknown tag 99 is ignored"
    );
    assert_eq!(l.stats().cancelled, 1);
}

#[test]
fn close_sendfd_and_undecodable_requests_reach_their_handlers() {
    let mut l = new_loop();
    push(
        &mut l,
        [
            t::openat(1, 0, "card0", 0),
            t::sendfd(2, 1, 3),
            t::on_close(1),
            t::undecodable(4),
        ],
    );
    l.on_wake(WakeSource::Scheme).expect("wake");
    assert_eq!(
        answers(&mut l),
        vec![(1, Ok(1)), (2, Ok(3)), (4, Err(syscall::ENOSYS))]
    );
    assert_eq!(l.scheme_mut().closed, vec![1]);
}

#[test]
fn errors_from_the_server_are_answered_not_parked() {
    let mut l = new_loop();
    push(
        &mut l,
        [
            t::openat(1, 5, "card0", 0),
            t::openat(2, 0, "nope", 0),
            t::read(3, 9, 4, 0),
        ],
    );
    l.on_wake(WakeSource::Scheme).expect("wake");
    assert_eq!(
        answers(&mut l),
        vec![
            (1, Err(syscall::EACCES)),
            (2, Err(syscall::ENOENT)),
            (3, Err(syscall::EBADF))
        ]
    );
}

#[test]
fn foreign_irq_is_not_acknowledged_and_empty_wake_calls_no_driver() {
    let mut l = new_loop();
    l.events_mut().foreign = true;
    set_irq(&mut l, 3);
    l.on_wake(WakeSource::Irq).expect("wake");
    assert!(acked(&mut l).is_empty());
    assert_eq!(l.stats().irqs_foreign, 1);
    // No new count: the driver is not called at all.
    l.events_mut().foreign = false;
    l.on_wake(WakeSource::Irq).expect("wake");
    assert_eq!(l.events_mut().irqs, 0);
}

#[test]
fn unmount_ends_run_and_write_failures_are_fatal() {
    let mut l = new_loop();
    push(&mut l, [t::openat(1, 0, "card0", 0)]);
    l.socket_mut().eof = true;
    let mut q = FakeQueue::default();
    assert_eq!(l.run(&mut q), Ok(()));
    assert_eq!(answers(&mut l), vec![(1, Ok(1))]);

    let mut l = new_loop();
    l.socket_mut().fail_write = Some(syscall::EPIPE);
    push(&mut l, [t::openat(1, 0, "card0", 0)]);
    assert_eq!(
        l.on_wake(WakeSource::Scheme),
        Err(LoopError::Write(SysError::new(syscall::EPIPE)))
    );
}

#[derive(Debug, Clone)]
enum Step {
    Read { nonblock: bool },
    Cancel(usize),
    Irq,
    Reset,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        any::<bool>().prop_map(|nonblock| Step::Read { nonblock }),
        (0usize..8).prop_map(Step::Cancel),
        Just(Step::Irq),
        Just(Step::Reset),
    ]
}

proptest! {
    /// Oracle: every request gets exactly one answer unless it is still parked; blocking
    /// reads park exactly while the device is not ready; cancelling answers EINTR once.
    #[test]
    fn every_request_is_answered_once(steps in proptest::collection::vec(step(), 1..40)) {
        let mut l = new_loop();
        push(&mut l, [t::openat(1, 0, "card0", 0)]);
        l.on_wake(WakeSource::Scheme).expect("wake");
        let mut next_tag = 10u32;
        let mut tags = Vec::new();
        let mut parked: Vec<u32> = Vec::new();
        let mut expect: std::collections::BTreeMap<u32, Result<usize, i32>> = Default::default();
        expect.insert(1, Ok(1));
        let mut counter = 0u64;
        for s in steps {
            match s {
                Step::Read { nonblock } => {
                    let tag = next_tag;
                    next_tag += 1;
                    tags.push(tag);
                    let flags = if nonblock { O_NONBLOCK as u32 } else { 0 };
                    push(&mut l, [t::read(tag, 1, 8, flags)]);
                    l.on_wake(WakeSource::Scheme).expect("wake");
                    if l.scheme_mut().ready {
                        expect.insert(tag, Ok(8));
                    } else if nonblock {
                        expect.insert(tag, Err(syscall::EWOULDBLOCK));
                    } else {
                        parked.push(tag);
                    }
                }
                Step::Cancel(i) => {
                    let Some(&tag) = tags.get(i) else { continue };
                    push(&mut l, [t::cancel(tag)]);
                    l.on_wake(WakeSource::Scheme).expect("wake");
                    if let Some(p) = parked.iter().position(|&x| x == tag) {
                        parked.remove(p);
                        expect.insert(tag, Err(syscall::EINTR));
                    }
                }
                Step::Irq => {
                    counter += 1;
                    set_irq(&mut l, counter);
                    l.on_wake(WakeSource::Irq).expect("wake");
                    for tag in parked.drain(..) {
                        expect.insert(tag, Ok(8));
                    }
                }
                Step::Reset => l.scheme_mut().ready = false,
            }
            prop_assert_eq!(l.parked_len(), parked.len());
        }
        let got: std::collections::BTreeMap<u32, Result<usize, i32>> = answers(&mut l).into_iter().collect();
        prop_assert_eq!(answers(&mut l).len(), got.len(), "a tag was answered twice");
        prop_assert_eq!(got, expect);
    }
}
