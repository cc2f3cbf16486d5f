//! One client's waiting call never stalls another: a synchronous bind behind a GPU spinner
//! is parked while a second client process opens the device and queries it; the bind is
//! answered when the spinner ends, and fails with ENOENT when the spinner is killed as a hang.
//! The same for a parked client killed with SIGKILL (its resources come back, the others are
//! unaffected).
//!
//! Each test runs three processes: the test (the daemon and the referee), client A (the
//! parked caller) and client B (the bystander). The referee learns that A's call is parked
//! from the daemon's `device-parked-waits` stat, read with a deadline so that a daemon whose
//! loop is stuck fails the test instead of hanging it.

use gpu_tests::{read_u32, spawn_client, stat, sys_bo, Daemon, Gpu, BATCH_VA, CHILD_ENV};
use libgpu::cmd::{Batch, SemOp};
use libgpu::errno::ENOENT;
use libgpu::flags::{EngineClass, VmCreateFlags};
use libgpu::{Bo, BoMap, Device, ExecQueue, Syncobj};
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Which process of a test this is: `a`, `b`, or unset for the referee.
const ROLE_ENV: &str = "GPU_TESTS_NOBLOCK_ROLE";
/// A file whose creation tells client A to end its spinner.
const RELEASE_ENV: &str = "GPU_TESTS_NOBLOCK_RELEASE";
/// GPU VA of the spinner's semaphore.
const SEM_VA: u64 = 0x20_0000;
/// GPU VAs the asynchronous and the synchronous bind map.
const ASYNC_VA: u64 = 0x40_0000;
const SYNC_VA: u64 = 0x50_0000;
/// How long the referee waits for a daemon answer before calling the daemon stuck: far
/// beyond any answer of a loop that does not wait (microseconds), far below a GPU timeout
/// that would unstick a waiting one only by luck.
const STUCK: Duration = Duration::from_secs(20);

fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

fn client_device() -> Device {
    let sock = std::env::var(CHILD_ENV).expect("socket");
    Device::open_at(Path::new(&sock)).expect("open")
}

/// A batch on `g`'s queue-less VM spinning on SEMAPHORE_WAIT until the semaphore is 1.
struct Spinner {
    _sem: Bo,
    sem_map: BoMap,
    _queue: ExecQueue,
    done: Syncobj,
}

fn spinner(dev: &Device, g: &Gpu) -> Spinner {
    let sem = sys_bo(dev, 0x1000);
    g.vm.bind()
        .map(&sem, 0, SEM_VA, 0x1000)
        .submit()
        .expect("sem bind");
    let sem_map = sem.mmap().expect("sem mmap");
    let mut b = Batch::new();
    b.semaphore_wait(SEM_VA, SemOp::Eq, 1, false);
    b.batch_end();
    let batch = g.batch_bo().mmap().expect("batch mmap");
    batch.write_dwords(0, b.dwords()).expect("batch fits");
    let queue = ExecQueue::create(&g.vm, EngineClass::Compute).expect("queue");
    let done = Syncobj::create(dev, false).expect("syncobj");
    queue
        .exec(BATCH_VA)
        .signal(&done)
        .submit()
        .expect("spinner exec");
    Spinner {
        _sem: sem,
        sem_map,
        _queue: queue,
        done,
    }
}

/// Waits (polling) for `path` to exist, then ends the spinner.
fn release_when(path: &Path, s: &Spinner) {
    while !path.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    s.sem_map.write_dwords(0, &[1]).expect("sem write");
}

/// Client A: a spinner, an async bind on a bind queue behind it, then a synchronous bind on
/// the same queue, which parks. `expect`: the errno the synchronous bind fails with, or
/// `None` for success (then the mapping is checked by a GPU store).
fn client_a(expect: Option<i32>) {
    let dev = client_device();
    let g = Gpu::new(&dev, VmCreateFlags::empty());
    let target = sys_bo(&dev, 0x2000);
    let s = spinner(&dev, &g);
    let bq = ExecQueue::create(&g.vm, EngineClass::VmBind).expect("bind queue");
    g.vm.bind()
        .queue(&bq)
        .wait(&s.done)
        .map(&target, 0, ASYNC_VA, 0x1000)
        .submit()
        .expect("async bind");
    let release = std::env::var(RELEASE_ENV).map(PathBuf::from).ok();
    std::thread::scope(|scope| {
        if let Some(path) = &release {
            let s = &s;
            scope.spawn(move || release_when(path, s));
        }
        println!("submitting");
        let r =
            g.vm.bind()
                .queue(&bq)
                .map(&target, 0x1000, SYNC_VA, 0x1000)
                .submit();
        match expect {
            None => {
                r.expect("the parked bind completes");
                g.store(&[(SYNC_VA, 0xB1D), (ASYNC_VA, 0xA5)]);
                assert_eq!(read_u32(&target, 0x1000), 0xB1D, "sync bind mapped");
                assert_eq!(read_u32(&target, 0), 0xA5, "async bind mapped");
            }
            Some(errno) => {
                let e = r.expect_err("the bind behind a killed spinner fails");
                assert_eq!(e.errno(), errno, "{e}");
            }
        }
    });
}

/// Client A, SIGKILL variant: parks a synchronous bind behind a spinner, then waits to be
/// killed.
fn client_a_killed() {
    client_a(None);
}

/// Client B: open and DEVICE_QUERY.
fn client_b() {
    let dev = client_device();
    dev.query().expect("query");
}

/// Runs `f` on a thread; `None` if it has not returned within [`STUCK`].
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(STUCK).ok()
}

/// The daemon's count of parked calls, or `None` if it did not answer within [`STUCK`].
fn parked(d: &Daemon) -> Option<u64> {
    let sock = d.socket().to_path_buf();
    within(move || {
        let dev = Device::open_at(&sock).expect("open");
        stat(&dev.stats().expect("stats"), "device-parked-waits").expect("parked stat")
    })
}

fn spawn(test: &str, d: &Daemon, role: &str, release: Option<&Path>) -> Child {
    let mut cmd = spawn_client(test, d.socket());
    cmd.env(ROLE_ENV, role).stdout(Stdio::piped());
    if let Some(path) = release {
        cmd.env(RELEASE_ENV, path);
    }
    cmd.spawn().expect("spawn client")
}

fn wait_for_line(lines: &mut Lines<BufReader<ChildStdout>>, what: &str) {
    let found = lines.any(|l| l.as_ref().is_ok_and(|l| l.contains(what)));
    assert!(found, "client printed {what:?}");
}

/// Waits until the daemon reports a parked call while `a` still runs.
fn wait_parked(d: &Daemon, a: &mut Child) {
    loop {
        let n = parked(d).expect("the daemon answers while A's call waits");
        if n >= 1 {
            return;
        }
        let exited = a.try_wait().expect("try_wait");
        assert!(exited.is_none(), "A's call finished without being parked");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Client B runs to completion; `None` if it did not within [`STUCK`].
fn run_b(test: &str, d: &Daemon) -> bool {
    let mut b = spawn(test, d, "b", None);
    let status = within(move || b.wait().expect("wait B"));
    status.is_some_and(|s| s.success())
}

fn referee(test: &str, d: &Daemon, release: Option<&Path>) {
    let mut a = spawn(test, d, "a", release);
    let mut lines = BufReader::new(a.stdout.take().expect("stdout")).lines();
    wait_for_line(&mut lines, "submitting");
    wait_parked(d, &mut a);
    assert!(run_b(test, d), "B's open + DEVICE_QUERY completed");
    // B finished while A's bind was parked: A is still waiting for its spinner.
    assert!(a.try_wait().expect("try_wait").is_none(), "A still parked");
    assert_eq!(parked(d), Some(1), "A's bind still parked after B");
    if let Some(path) = release {
        std::fs::write(path, b"go").expect("release file");
    }
    let status = within(move || a.wait().expect("wait A")).expect("A finishes");
    assert!(status.success(), "client A: {status}");
    assert_eq!(parked(d), Some(0), "nothing left parked");
}

fn release_path(test: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{test}-{}.release", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn sync_bind_behind_a_spinner_parks_while_another_client_is_served() {
    const TEST: &str = "sync_bind_behind_a_spinner_parks_while_another_client_is_served";
    match role().as_deref() {
        Some("a") => return client_a(None),
        Some(_) => return client_b(),
        None => {}
    }
    let d = Daemon::start();
    let release = release_path(TEST);
    referee(TEST, &d, Some(&release));
    let _ = std::fs::remove_file(&release);
}

#[test]
fn sync_bind_behind_a_spinner_killed_as_a_hang_fails_with_enoent() {
    const TEST: &str = "sync_bind_behind_a_spinner_killed_as_a_hang_fails_with_enoent";
    match role().as_deref() {
        Some("a") => return client_a(Some(ENOENT)),
        Some(_) => return client_b(),
        None => {}
    }
    // The spinner never ends; the job timeout (5 s) kills it.
    let d = Daemon::start();
    let baseline = free_memory(&d);
    referee(TEST, &d, None);
    settles(&d, baseline).expect("A's memory back to baseline");
}

fn free_memory(d: &Daemon) -> (u64, u64) {
    let i = d.device().query().expect("query");
    (i.sys_free, i.vram_free)
}

/// Waits (up to [`STUCK`]) for free memory to return to `baseline` and nothing parked;
/// what it saw last if that did not happen.
fn settles(d: &Daemon, baseline: (u64, u64)) -> Result<(), String> {
    let deadline = std::time::Instant::now() + STUCK;
    loop {
        let (free, n) = (free_memory(d), parked(d));
        if free == baseline && n == Some(0) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "free {free:?} (baseline {baseline:?}), parked {n:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_parked_client_killed_with_sigkill_is_cleaned_up() {
    const TEST: &str = "a_parked_client_killed_with_sigkill_is_cleaned_up";
    match role().as_deref() {
        Some("a") => return client_a_killed(),
        Some(_) => return client_b(),
        None => {}
    }
    // A short job timeout: the orphaned spinner is killed as a hang, freeing A's memory.
    let d = Daemon::start_with(|c| c.device.job_timeout = Duration::from_secs(3));
    let other = d.device();
    let g = Gpu::new(&other, VmCreateFlags::empty());
    let mine = sys_bo(&other, 0x1000);
    g.vm.bind()
        .map(&mine, 0, 0x10_0000, 0x1000)
        .submit()
        .expect("bind");
    let baseline = free_memory(&d);
    let mut a = spawn(TEST, &d, "a", None);
    let mut lines = BufReader::new(a.stdout.take().expect("stdout")).lines();
    wait_for_line(&mut lines, "submitting");
    wait_parked(&d, &mut a);
    a.kill().expect("SIGKILL");
    let _ = a.wait();
    assert!(run_b(TEST, &d), "B served after A died");
    // The daemon drops A's parked call at once; its memory comes back once the orphaned
    // spinner is killed by the job timeout.
    if let Err(e) = settles(&d, baseline) {
        panic!("{e}\n{}", other.stats().unwrap_or_default());
    }
    // The referee's own short-lived connections close asynchronously: wait for them too.
    let deadline = std::time::Instant::now() + STUCK;
    let mut stats = other.stats().expect("stats");
    while stat(&stats, "device-clients") != Some(1) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        stats = other.stats().expect("stats");
    }
    assert_eq!(stat(&stats, "device-clients"), Some(1), "{stats}");
    g.store(&[(0x10_0000, 0x5AFE)]);
    assert_eq!(read_u32(&mine, 0), 0x5AFE, "the other client is unaffected");
}
