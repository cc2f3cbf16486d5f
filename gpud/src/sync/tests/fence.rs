//! Unit and property tests of `fence.rs`, one test per rule.

use super::*;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};

fn fence() -> Arc<Fence> {
    Fence::new(FenceContext::alloc(), 1)
}

#[test]
fn fence_signals_exactly_once() {
    let f = fence();
    assert_eq!(f.status(), FenceStatus::Pending);
    f.signal().unwrap();
    assert_eq!(
        f.signal(),
        Err(FenceError::AlreadySignalled {
            context: f.context().get(),
            seqno: 1
        })
    );
    assert_eq!(f.status(), FenceStatus::Signalled);
}

#[test]
fn fence_error_only_before_signalling() {
    let f = fence();
    f.set_error(FenceFault::JobTimeout).unwrap();
    assert_eq!(
        f.status(),
        FenceStatus::Pending,
        "error alone does not signal"
    );
    f.signal().unwrap();
    assert_eq!(f.status(), FenceStatus::Failed(FenceFault::JobTimeout));
    assert!(matches!(
        f.set_error(FenceFault::Canceled),
        Err(FenceError::AlreadySignalled { .. })
    ));
    assert_eq!(f.status(), FenceStatus::Failed(FenceFault::JobTimeout));
}

#[test]
fn fence_status_reports_pending_ok_and_error() {
    let ok = fence();
    let bad = fence();
    assert_eq!(ok.status(), FenceStatus::Pending);
    assert!(!ok.is_signalled());
    ok.signal().unwrap();
    bad.set_error(FenceFault::Failed(7)).unwrap();
    bad.signal().unwrap();
    assert_eq!(ok.status(), FenceStatus::Signalled);
    assert_eq!(bad.status(), FenceStatus::Failed(FenceFault::Failed(7)));
    assert_eq!(bad.wait(None), Ok(Err(FenceFault::Failed(7))));
}

#[test]
fn fence_seqnos_compare_only_within_a_context() {
    let ctx = FenceContext::alloc();
    let (a, b) = (Fence::new(ctx, 5), Fence::new(ctx, 9));
    let c = Fence::new(FenceContext::alloc(), 100);
    assert_eq!(b.is_later(&a), Some(true));
    assert_eq!(a.is_later(&b), Some(false));
    assert_eq!(a.is_later_or_same(&a), Some(true));
    assert_eq!(c.is_later(&a), None);
}

#[test]
fn fence_add_callback_to_signalled_fence_says_so() {
    let f = fence();
    f.signal().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let added = f.add_callback(Box::new(move |_| {
        r.fetch_add(1, StdOrdering::SeqCst);
    }));
    assert_eq!(added, CallbackAdded::AlreadySignalled);
    assert_eq!(ran.load(StdOrdering::SeqCst), 0);
    // on_signal runs it at once instead.
    let r = ran.clone();
    assert!(f
        .on_signal(move |_| {
            r.fetch_add(1, StdOrdering::SeqCst);
        })
        .is_none());
    assert_eq!(ran.load(StdOrdering::SeqCst), 1);
}

#[test]
fn fence_callbacks_run_once_outside_the_lock() {
    let f = fence();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let r = ran.clone();
        // Touching the fence from its own callback would deadlock if run under the lock.
        f.add_callback(Box::new(move |fence| {
            assert_eq!(fence.status(), FenceStatus::Signalled);
            assert_eq!(
                fence.add_callback(Box::new(|_| {})),
                CallbackAdded::AlreadySignalled
            );
            r.fetch_add(1, StdOrdering::SeqCst);
        }));
    }
    f.signal().unwrap();
    let _ = f.signal();
    assert_eq!(ran.load(StdOrdering::SeqCst), 3);
}

#[test]
fn fence_removed_callback_never_runs() {
    let f = fence();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let CallbackAdded::Registered(id) = f.add_callback(Box::new(move |_| {
        r.fetch_add(1, StdOrdering::SeqCst);
    })) else {
        panic!("pending fence must accept callbacks");
    };
    assert!(f.remove_callback(id));
    assert!(!f.remove_callback(id));
    f.signal().unwrap();
    assert_eq!(ran.load(StdOrdering::SeqCst), 0);
}

#[test]
fn fence_wait_times_out_on_pending_fence() {
    let f = fence();
    assert_eq!(
        f.wait(Some(Duration::from_millis(2))),
        Err(FenceError::Timeout { pending: 1 })
    );
    let past = Instant::now();
    assert_eq!(
        f.wait_until(Some(past)),
        Err(FenceError::Timeout { pending: 1 })
    );
}

#[test]
fn fence_blocked_waiter_is_woken_by_signal_from_another_thread() {
    let f = fence();
    let waiter = {
        let f = f.clone();
        std::thread::spawn(move || f.wait(None))
    };
    std::thread::sleep(Duration::from_millis(2));
    f.signal().unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(Ok(())));
}

#[test]
fn fence_wait_any_returns_which_signalled() {
    let fences: Vec<_> = (0..4).map(|_| fence()).collect();
    let signaller = {
        let f = fences[2].clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2));
            f.signal().unwrap();
        })
    };
    assert_eq!(wait_any(&fences, None), Ok(2));
    signaller.join().unwrap();
    fences[0].signal().unwrap();
    assert_eq!(wait_any(&fences, None), Ok(0), "lowest signalled index");
}

#[test]
fn fence_wait_any_leaves_no_callbacks_behind() {
    let fences: Vec<_> = (0..3).map(|_| fence()).collect();
    let deadline = Instant::now() + Duration::from_millis(2);
    assert_eq!(
        wait_any(&fences, Some(deadline)),
        Err(FenceError::Timeout { pending: 3 })
    );
    for f in &fences {
        assert!(shim::lock(&f.state).callbacks.is_empty());
    }
}

#[test]
fn fence_wait_any_of_nothing_is_an_error() {
    assert_eq!(wait_any(&[], None), Err(FenceError::EmptyWait));
}

#[test]
fn fence_wait_all_needs_every_fence() {
    let fences: Vec<_> = (0..3).map(|_| fence()).collect();
    fences[0].signal().unwrap();
    fences[2].signal().unwrap();
    let deadline = Instant::now() + Duration::from_millis(2);
    assert_eq!(
        wait_all(&fences, Some(deadline)),
        Err(FenceError::Timeout { pending: 1 })
    );
    fences[1].signal().unwrap();
    assert_eq!(wait_all(&fences, None), Ok(()));
}

#[test]
fn fence_deadline_hint_keeps_the_earliest() {
    let f = fence();
    let now = Instant::now();
    f.set_deadline(now + Duration::from_secs(2));
    f.set_deadline(now + Duration::from_secs(1));
    f.set_deadline(now + Duration::from_secs(3));
    assert_eq!(f.deadline(), Some(now + Duration::from_secs(1)));
}

#[test]
fn fence_stub_is_signalled_and_contexts_are_unique() {
    assert!(Fence::signalled_stub().is_signalled());
    let (a, b) = (FenceContext::alloc(), FenceContext::alloc());
    assert_ne!(a, b);
}

proptest! {
    #[test]
    fn prop_fence_seqno_order_matches_u64_order_within_context(a: u64, b: u64, same: bool) {
        let ctx = FenceContext::alloc();
        let fa = Fence::new(ctx, a);
        let fb = Fence::new(if same { ctx } else { FenceContext::alloc() }, b);
        if same {
            prop_assert_eq!(fa.is_later(&fb), Some(a > b));
            prop_assert_eq!(fa.is_later_or_same(&fb), Some(a >= b));
            // Antisymmetry: never both later than each other.
            prop_assert!(!(fa.is_later(&fb) == Some(true) && fb.is_later(&fa) == Some(true)));
        } else {
            prop_assert_eq!(fa.is_later(&fb), None);
            prop_assert_eq!(fa.is_later_or_same(&fb), None);
        }
    }
}
