//! Exec submission as Xe programs use it: many exec queues beyond simgpu's hardware queues
//! (xe_exec_basic many-execqueues: 16 on the copy engine in one VM, one in each of 16 VMs),
//! and back pressure that parks instead of failing (4096 execs submitted back to back past
//! the 1024-in-flight limit all complete while another client is answered).

use gpu_tests::{read_u32, stat, sys_bo, Daemon};
use libgpu::cmd::{Batch, SemOp};
use libgpu::flags::{EngineClass, VmCreateFlags};
use libgpu::{Bo, BoMap, Device, ExecQueue, Syncobj, Timeout, Vm};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PAGE: u64 = 0x1000;
const QUEUES: usize = 16;
/// Batches (a page each), the semaphore page, the results page.
const BATCH_VA: u64 = 0x100_0000;
const SEM_VA: u64 = 0x200_0000;
const OUT_VA: u64 = 0x300_0000;
/// Longest the test waits for the daemon to reach a state or answer.
const STUCK: Duration = Duration::from_secs(30);

/// A VM with a page of batches per queue, the shared semaphore and results pages mapped.
struct Mem {
    vm: Vm,
    batches: BoMap,
    _batch_bo: Bo,
}

fn vm_with(dev: &Device, sem: &Bo, out: &Bo) -> Mem {
    let vm = Vm::create(dev, VmCreateFlags::empty()).expect("vm");
    let bo = sys_bo(dev, QUEUES as u64 * PAGE);
    vm.bind()
        .map(&bo, 0, BATCH_VA, QUEUES as u64 * PAGE)
        .map(sem, 0, SEM_VA, PAGE)
        .map(out, 0, OUT_VA, PAGE)
        .submit()
        .expect("bind");
    let batches = bo.mmap().expect("batch mmap");
    Mem {
        vm,
        batches,
        _batch_bo: bo,
    }
}

/// Queue `i` runs a batch that waits for the semaphore, then stores `i + 1` at `4 i` of the
/// results page; all are in flight together until the semaphore opens.
fn sixteen_queues_held_at_once(one_vm: bool) {
    let daemon = Daemon::start();
    let dev = daemon.device();
    let sem = sys_bo(&dev, PAGE);
    let out = sys_bo(&dev, PAGE);
    let mems: Vec<Mem> = (0..if one_vm { 1 } else { QUEUES })
        .map(|_| vm_with(&dev, &sem, &out))
        .collect();
    let mut queues = Vec::new();
    let mut done = Vec::new();
    for i in 0..QUEUES {
        let m = &mems[if one_vm { 0 } else { i }];
        let mut b = Batch::new();
        b.semaphore_wait(SEM_VA, SemOp::Eq, 1, false)
            .store_dword(OUT_VA + 4 * i as u64, i as u32 + 1)
            .batch_end();
        let at = i as u64 * PAGE;
        m.batches
            .write_dwords(at as usize, b.dwords())
            .expect("batch fits");
        let q = ExecQueue::create(&m.vm, EngineClass::Copy)
            .unwrap_or_else(|e| panic!("copy exec queue {i}: {e}"));
        let s = Syncobj::create(&dev, false).expect("syncobj");
        q.exec(BATCH_VA + at).signal(&s).submit().expect("exec");
        queues.push(q);
        done.push(s);
    }
    for (i, s) in done.iter().enumerate() {
        assert!(!s.wait(Timeout::Poll).expect("poll"), "job {i} held");
    }
    sem.mmap()
        .expect("sem")
        .write_dwords(0, &[1])
        .expect("open");
    for (i, s) in done.iter().enumerate() {
        assert!(s.wait(Timeout::Forever).expect("wait"), "job {i} done");
        assert_eq!(read_u32(&out, 4 * i), i as u32 + 1, "queue {i} ran");
    }
}

#[test]
fn sixteen_copy_exec_queues_in_one_vm_all_run_at_once() {
    sixteen_queues_held_at_once(true);
}

#[test]
fn sixteen_copy_exec_queues_in_sixteen_vms_all_run_at_once() {
    sixteen_queues_held_at_once(false);
}

/// Runs `f` on a thread; its answer, or `None` if it took longer than [`STUCK`].
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(STUCK).ok()
}

/// xe_exec_basic's many-* submit 1024 execs and more back to back: past the in-flight limit
/// an EXEC parks (as Xe's blocks) instead of failing with EBUSY, and is answered when work
/// completes; meanwhile another client is served. The first job is held on a semaphore until
/// the test sees the EXEC parked; the 4096 execs then park whenever 1024 are in flight.
#[test]
fn execs_past_the_in_flight_limit_park_and_all_complete() {
    const EXECS: u32 = 4096;
    let daemon = Daemon::start();
    let dev = daemon.device();
    let limit = dev.query().expect("query").max_in_flight;
    assert!(EXECS > limit, "the test crosses the limit");
    let sem = sys_bo(&dev, PAGE);
    let out = sys_bo(&dev, PAGE);
    let m = vm_with(&dev, &sem, &out);
    // Batch 0 waits for the semaphore and counts; batch 1 counts.
    let mut gate = Batch::new();
    gate.semaphore_wait(SEM_VA, SemOp::Eq, 1, false);
    let mut count = Batch::new();
    count.atomic_add32(OUT_VA, 1).expect("atomic").batch_end();
    gate.append(&count);
    m.batches.write_dwords(0, gate.dwords()).expect("batch");
    m.batches
        .write_dwords(PAGE as usize, count.dwords())
        .expect("batch");
    let q = ExecQueue::create(&m.vm, EngineClass::Copy).expect("queue");
    let last = Syncobj::create(&dev, false).expect("syncobj");
    // Mapped now: a parked call holds back the later calls of its connection (an mmap too).
    let sem_map = sem.mmap().expect("sem");
    let submitter = std::thread::spawn(move || {
        q.exec(BATCH_VA).submit()?;
        for _ in 1..EXECS - 1 {
            q.exec(BATCH_VA + PAGE).submit()?;
        }
        q.exec(BATCH_VA + PAGE).signal(&last).submit()?;
        last.wait(Timeout::Forever)
    });
    let watcher = daemon.device();
    let deadline = Instant::now() + STUCK;
    while stat(&watcher.stats().expect("stats"), "device-parked-waits") != Some(1) {
        assert!(Instant::now() < deadline, "the EXEC past the limit parked");
        assert!(!submitter.is_finished(), "the submitter ended early");
        std::thread::sleep(Duration::from_millis(1));
    }
    let sock = daemon.socket().to_path_buf();
    let answered = within(move || Device::open_at(&sock).expect("open").query().is_ok());
    assert_eq!(answered, Some(true), "another client is answered meanwhile");
    sem_map.write_dwords(0, &[1]).expect("open");
    let r = submitter.join().expect("submitter");
    assert!(r.expect("every exec accepted"), "the last exec completed");
    assert_eq!(read_u32(&out, 0), EXECS, "every exec ran once");
}
