//! Unit tests of `syncobj.rs`, one per rule.

use super::*;
use crate::sync::fence::FenceContext;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn fence() -> Arc<Fence> {
    Fence::new(FenceContext::alloc(), 1)
}

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(3))
}

fn later(f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(2));
        f();
    })
}

#[test]
fn syncobj_binary_signal_replaces_the_fence() {
    let s = Syncobj::new();
    let (a, b) = (fence(), fence());
    s.replace_fence(Some(a.clone()));
    assert!(Arc::ptr_eq(&s.fence().unwrap(), &a));
    s.replace_fence(Some(b.clone()));
    assert!(Arc::ptr_eq(&s.fence().unwrap(), &b));
    b.signal().unwrap();
    assert!(s.is_signalled(), "only the current fence counts");
}

#[test]
fn syncobj_created_signalled_is_ready_and_reset_empties_it() {
    let s = Syncobj::new_signalled();
    assert_eq!(s.wait(0, WaitFlags::empty(), None), Ok(()));
    s.reset();
    assert!(s.fence().is_none());
    assert_eq!(
        s.wait(0, WaitFlags::empty(), None),
        Err(SyncobjError::NoFence { point: 0 })
    );
}

#[test]
fn syncobj_wait_on_empty_without_wait_for_submit_is_an_error() {
    let s = Syncobj::new();
    assert_eq!(
        s.wait(0, WaitFlags::empty(), None),
        Err(SyncobjError::NoFence { point: 0 })
    );
}

#[test]
fn syncobj_wait_for_submit_waits_until_a_fence_appears() {
    let s = Syncobj::new();
    let f = fence();
    let producer = {
        let (s, f) = (s.clone(), f.clone());
        later(move || {
            s.replace_fence(Some(f.clone()));
            f.signal().unwrap();
        })
    };
    assert_eq!(s.wait(0, WaitFlags::FOR_SUBMIT, None), Ok(()));
    assert!(f.is_signalled());
    producer.join().unwrap();
}

#[test]
fn syncobj_wait_times_out_with_pending_count() {
    let s = Syncobj::new();
    s.replace_fence(Some(fence()));
    assert_eq!(
        s.wait(0, WaitFlags::empty(), soon()),
        Err(SyncobjError::Timeout { pending: 1 })
    );
    let empty = Syncobj::new();
    assert_eq!(
        empty.wait(0, WaitFlags::FOR_SUBMIT, soon()),
        Err(SyncobjError::Timeout { pending: 1 })
    );
}

#[test]
fn syncobj_timeline_wait_point_needs_all_earlier_points() {
    let s = Syncobj::new();
    let (p1, p2) = (fence(), fence());
    s.add_point(1, p1.clone());
    s.add_point(2, p2.clone());
    p2.signal().unwrap();
    assert!(matches!(
        s.wait(2, WaitFlags::empty(), soon()),
        Err(SyncobjError::Timeout { .. })
    ));
    p1.signal().unwrap();
    assert_eq!(s.wait(2, WaitFlags::empty(), None), Ok(()));
    assert_eq!(s.last_submitted_point(), 2);
}

#[test]
fn syncobj_timeline_unsubmitted_point_is_an_error_unless_waiting_for_submit() {
    let s = Syncobj::new();
    s.add_point(1, Fence::signalled_stub());
    assert_eq!(
        s.wait(3, WaitFlags::empty(), None),
        Err(SyncobjError::PointNotSubmitted {
            point: 3,
            last_submitted: 1
        })
    );
    let producer = {
        let s = s.clone();
        later(move || s.add_point(3, Fence::signalled_stub()))
    };
    assert_eq!(s.wait(3, WaitFlags::FOR_SUBMIT, None), Ok(()));
    producer.join().unwrap();
}

#[test]
fn syncobj_wait_available_returns_when_the_point_exists_unsignalled() {
    let s = Syncobj::new();
    let f = fence();
    let producer = {
        let (s, f) = (s.clone(), f.clone());
        later(move || s.add_point(5, f))
    };
    assert_eq!(s.wait(5, WaitFlags::AVAILABLE, None), Ok(()));
    assert!(!f.is_signalled());
    producer.join().unwrap();
}

#[test]
fn syncobj_query_last_signalled_point() {
    let s = Syncobj::new();
    assert_eq!(s.last_signalled_point(), 0);
    let fences: Vec<_> = (0..3).map(|_| fence()).collect();
    for (i, f) in fences.iter().enumerate() {
        s.add_point(10 * (i as u64 + 1), f.clone());
    }
    fences[0].signal().unwrap();
    assert_eq!(s.last_signalled_point(), 10);
    fences[2].signal().unwrap();
    assert_eq!(s.last_signalled_point(), 10);
    fences[1].signal().unwrap();
    assert_eq!(s.last_signalled_point(), 30);
}

#[test]
fn syncobj_collected_point_is_satisfied_by_a_signalled_stub() {
    let s = Syncobj::new();
    let (a, b) = (fence(), fence());
    s.add_point(1, a.clone());
    s.add_point(2, b);
    a.signal().unwrap();
    s.last_signalled_point(); // walks and collects point 1
    let got = s.find_fence(1).unwrap();
    assert!(got.is_signalled());
    assert!(!Arc::ptr_eq(&got, &a));
}

#[test]
fn syncobj_point_zero_on_timeline_is_binary() {
    let s = Syncobj::new();
    let f = fence();
    s.add_point(4, f.clone());
    assert!(!s.find_fence(0).unwrap().is_signalled());
    f.signal().unwrap();
    assert!(s.find_fence(0).unwrap().is_signalled());
    // A binary syncobj has no points beyond 0.
    let b = Syncobj::new();
    b.replace_fence(Some(fence()));
    assert_eq!(
        b.find_fence(1).unwrap_err(),
        SyncobjError::PointNotSubmitted {
            point: 1,
            last_submitted: 0
        }
    );
}

#[test]
fn syncobj_point_after_binary_fence_waits_for_it() {
    let s = Syncobj::new();
    let binary = fence();
    s.replace_fence(Some(binary.clone()));
    s.add_point(1, Fence::signalled_stub());
    assert!(!s.find_fence(1).unwrap().is_signalled());
    binary.signal().unwrap();
    assert!(s.find_fence(1).unwrap().is_signalled());
}

#[test]
fn syncobj_transfer_point_to_point_and_to_binary() {
    let (src, tl, bin) = (Syncobj::new(), Syncobj::new(), Syncobj::new());
    let f = fence();
    src.add_point(7, f.clone());
    Syncobj::transfer(&src, 7, &tl, 3).unwrap();
    Syncobj::transfer(&src, 7, &bin, 0).unwrap();
    assert_eq!(tl.last_submitted_point(), 3);
    assert!(!tl.find_fence(3).unwrap().is_signalled());
    assert!(!bin.is_signalled());
    f.signal().unwrap();
    assert!(tl.find_fence(3).unwrap().is_signalled());
    assert!(bin.is_signalled());
}

#[test]
fn syncobj_transfer_binary_to_point_and_missing_source_fails() {
    let (bin, tl) = (Syncobj::new(), Syncobj::new());
    assert_eq!(
        Syncobj::transfer(&bin, 0, &tl, 1),
        Err(SyncobjError::NoFence { point: 0 })
    );
    let f = fence();
    bin.replace_fence(Some(f.clone()));
    Syncobj::transfer(&bin, 0, &tl, 1).unwrap();
    f.signal().unwrap();
    assert_eq!(tl.wait(1, WaitFlags::empty(), None), Ok(()));
}

#[test]
fn syncobj_wait_any_returns_first_ready_index_and_all_needs_every_one() {
    let objs: Vec<_> = (0..3).map(|_| Syncobj::new()).collect();
    let fences: Vec<_> = (0..3).map(|_| fence()).collect();
    for (s, f) in objs.iter().zip(&fences) {
        s.replace_fence(Some(f.clone()));
    }
    let entries: Vec<(&Syncobj, u64)> = objs.iter().map(|s| (&**s, 0)).collect();
    let signaller = {
        let f = fences[1].clone();
        later(move || f.signal().unwrap())
    };
    assert_eq!(wait_many(&entries, WaitFlags::empty(), None), Ok(1));
    signaller.join().unwrap();
    assert_eq!(
        wait_many(&entries, WaitFlags::ALL, soon()),
        Err(SyncobjError::Timeout { pending: 2 })
    );
    fences[0].signal().unwrap();
    fences[2].signal().unwrap();
    assert_eq!(wait_many(&entries, WaitFlags::ALL, None), Ok(0));
    assert_eq!(
        wait_many(&[], WaitFlags::ALL, None),
        Err(SyncobjError::EmptyWait)
    );
}

#[test]
fn syncobj_wait_leaves_no_listeners_or_callbacks_behind() {
    let s = Syncobj::new();
    let f = fence();
    s.replace_fence(Some(f.clone()));
    let _ = s.wait(0, WaitFlags::empty(), soon());
    assert!(shim::lock(&s.state).listeners.is_empty());
    // The only callback left on the fence is the readiness-hook one.
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    s.add_ready_hook(Arc::new(move || {
        r.fetch_add(1, Ordering::SeqCst);
    }));
    f.signal().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn syncobj_ready_hook_fires_on_signal_and_at_once_when_already_ready() {
    let s = Syncobj::new();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let id = s.add_ready_hook(Arc::new(move || {
        c.fetch_add(1, Ordering::SeqCst);
    }));
    let f = fence();
    s.replace_fence(Some(f.clone()));
    assert_eq!(count.load(Ordering::SeqCst), 0);
    f.signal().unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Installing an already-signalled fence is readiness too.
    s.replace_fence(Some(Fence::signalled_stub()));
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let c = count.clone();
    s.add_ready_hook(Arc::new(move || {
        c.fetch_add(10, Ordering::SeqCst);
    }));
    assert_eq!(count.load(Ordering::SeqCst), 12, "new hook told at once");
    assert!(s.remove_ready_hook(id));
    assert!(!s.remove_ready_hook(id));
    s.replace_fence(Some(Fence::signalled_stub()));
    assert_eq!(
        count.load(Ordering::SeqCst),
        22,
        "removed hook stays silent"
    );
}

#[test]
fn syncobj_stress_timeline_waiters_see_every_point_they_wait_for() {
    const POINTS: u64 = 2_000;
    const WAITERS: u64 = 4;
    let s = Syncobj::new();
    let (fence_tx, fence_rx) = std::sync::mpsc::channel::<Arc<Fence>>();
    // Producer: submits points in order; a separate thread signals them, lagging behind.
    let producer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for point in 1..=POINTS {
                let f = fence();
                s.add_point(point, f.clone());
                fence_tx.send(f).unwrap();
            }
        })
    };
    let signaller = std::thread::spawn(move || {
        for f in fence_rx {
            f.signal().unwrap();
        }
    });
    let waiters: Vec<_> = (0..WAITERS)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut point = 1 + w;
                while point <= POINTS {
                    s.wait(point, WaitFlags::FOR_SUBMIT, None).unwrap();
                    // Waiting for a point means every earlier point has signalled too.
                    assert!(s.last_signalled_point() >= point);
                    point += 1 + (point * 7 + w) % 97;
                }
            })
        })
        .collect();
    producer.join().unwrap();
    signaller.join().unwrap();
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(s.last_signalled_point(), POINTS);
}

#[test]
fn syncobj_timeline_of_signalled_points_keeps_one_node() {
    let s = Syncobj::new();
    for point in 1..=10_000 {
        s.add_point(point, Fence::signalled_stub());
    }
    assert_eq!(s.timeline_points(false), 1);
    assert_eq!(s.timeline_points(true), 1);
    assert_eq!(s.last_signalled_point(), 10_000);
}

#[test]
fn syncobj_timeline_points_count_what_a_pending_point_keeps_alive() {
    let s = Syncobj::new();
    s.add_point(1, Fence::signalled_stub());
    let gate = fence();
    s.add_point(2, gate.clone());
    for point in 3..=102 {
        s.add_point(point, Fence::signalled_stub());
    }
    // Point 1 was collected when point 2 came; every point after the pending one waits for
    // it: all stay linked.
    assert_eq!(s.timeline_points(false), 101);
    assert_eq!(s.timeline_points(true), 101);
    gate.signal().unwrap();
    // Signalled now: the recount collects them; the cheap count is an upper bound until then.
    assert!(s.timeline_points(false) >= 1);
    assert_eq!(s.timeline_points(true), 1);
    s.replace_fence(None);
    assert_eq!(s.timeline_points(false), 0);
}
