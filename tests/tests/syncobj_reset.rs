//! SYNCOBJ_RESET end to end, with DRM's rules for waits already parked on the syncobj: a
//! wait for submit on an empty syncobj keeps waiting through a reset and ends with the next
//! fence; a wait that already found a fence keeps waiting on that fence (the reset does not
//! turn it into "no fence"), and ends when it signals.

use gpu_tests::{stat, sys_bo, Daemon, Gpu, BATCH_VA};
use libgpu::cmd::{Batch, SemOp};
use libgpu::errno::EINVAL;
use libgpu::flags::{EngineClass, VmCreateFlags};
use libgpu::{wait_many, Device, ExecQueue, Syncobj, Timeout, WaitMode};
use std::time::{Duration, Instant};

/// GPU VA of the spinner's semaphore.
const SEM_VA: u64 = 0x20_0000;
/// Longest the test waits for the daemon to reach a state.
const STUCK: Duration = Duration::from_secs(20);

/// Waits until the daemon holds `n` parked calls.
fn until_parked(dev: &Device, n: u64) {
    let deadline = Instant::now() + STUCK;
    loop {
        let parked = stat(&dev.stats().expect("stats"), "device-parked-waits");
        if parked == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{n} call(s) parked: {parked:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A second connection of the test and `s` imported into it: a parked call holds back the
/// later requests of its own connection (answers stay in order), so the waiter needs its own.
fn waiter_view(daemon: &Daemon, s: &Syncobj) -> (Device, Syncobj) {
    let dev = daemon.device();
    let token = s.export().expect("export").token();
    let s = Syncobj::import(&dev, token).expect("import");
    (dev, s)
}

#[test]
fn a_parked_wait_for_submit_survives_a_reset_and_ends_with_the_next_fence() {
    let daemon = Daemon::start();
    let dev = daemon.device();
    let s = Syncobj::create(&dev, false).expect("syncobj");
    let waiter = {
        let (dev, s) = waiter_view(&daemon, &s);
        std::thread::spawn(move || {
            let mode = WaitMode {
                all: true,
                for_submit: true,
            };
            wait_many(&dev, &[(&s, 0)], mode, Timeout::Forever)
        })
    };
    until_parked(&dev, 1);
    s.reset().expect("reset");
    s.reset().expect("a reset of an empty syncobj is no error");
    until_parked(&dev, 1);
    assert!(
        !waiter.is_finished(),
        "a reset does not end a wait for submit"
    );
    s.signal().expect("signal");
    let r = waiter.join().expect("waiter");
    assert_eq!(r.expect("the wait ends with the new fence"), Some(0));
}

#[test]
fn a_parked_wait_keeps_the_fence_it_found_across_a_reset() {
    let daemon = Daemon::start();
    let dev = daemon.device();
    let g = Gpu::new(&dev, VmCreateFlags::empty());
    let sem = sys_bo(&dev, 0x1000);
    g.vm.bind()
        .map(&sem, 0, SEM_VA, 0x1000)
        .submit()
        .expect("sem bind");
    let sem_map = sem.mmap().expect("sem mmap");
    let mut b = Batch::new();
    b.semaphore_wait(SEM_VA, SemOp::Eq, 1, false);
    b.batch_end();
    g.batch_bo()
        .mmap()
        .expect("batch mmap")
        .write_dwords(0, b.dwords())
        .expect("batch fits");
    let queue = ExecQueue::create(&g.vm, EngineClass::Compute).expect("queue");
    let s = Syncobj::create(&dev, false).expect("syncobj");
    queue.exec(BATCH_VA).signal(&s).submit().expect("spinner");
    let waiter = {
        let (_dev, s) = waiter_view(&daemon, &s);
        std::thread::spawn(move || s.wait(Timeout::Forever))
    };
    until_parked(&dev, 1);
    s.reset().expect("reset");
    assert_eq!(s.query().expect("query"), 0, "reset: nothing signalled");
    let e = s
        .wait(Timeout::Poll)
        .expect_err("a new wait finds no fence");
    assert_eq!(e.errno(), EINVAL);
    sem_map.write_dwords(0, &[1]).expect("end the spinner");
    let r = waiter.join().expect("waiter");
    assert!(
        r.expect("the parked wait ends on the fence it found"),
        "signalled, not timed out"
    );
    assert_eq!(
        s.query().expect("query"),
        0,
        "the old fence does not come back"
    );
}
