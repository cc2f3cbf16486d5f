//! One client's waiting call never stalls another: a synchronous bind behind a GPU spinner
//! is parked while a second client process opens the device and queries it; the bind is
//! answered when the spinner ends, and fails with ENOENT when the spinner is killed as a hang.
//! The same for EXEC_QUEUE_DESTROY and VM_DESTROY with the spinner running, and for a parked
//! client killed with SIGKILL (its resources come back, the others are unaffected).
//!
//! No wait of the referee is unbounded, and client A ends its spinner itself after a minute:
//! a call answered before the referee saw it parked (a spinner killed early as a hang on a
//! loaded machine) fails the test instead of hanging it. (The destroy scenario once hung:
//! under load the spinner was still queued, not running, when A destroyed its queue, so the
//! job was cancelled and the destroy answered at once; the referee then polled for a parked
//! call without a deadline while A waited forever for a release that never came. The
//! spinner now reports that it runs before A goes on.)
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
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
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
/// How long client A waits for the referee's release before ending its spinner itself.
const ABANDON: Duration = Duration::from_secs(60);

fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

fn client_device() -> Device {
    let sock = std::env::var(CHILD_ENV).expect("socket");
    Device::open_at(Path::new(&sock)).expect("open")
}

/// A batch on `g`'s VM, on a compute queue of its own, spinning on SEMAPHORE_WAIT until the
/// semaphore is 1; returns once it runs on the engine (it stores 1 next to the semaphore
/// first).
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
    b.store_dword(SEM_VA + 4, 1);
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
    // Running, not only queued: a queued job of a destroyed queue is cancelled at once (then
    // a queue destroy would not park; the destroy test once hung on exactly that).
    let deadline = std::time::Instant::now() + STUCK;
    while sem_map.read_u32(4).expect("sem read") != 1 {
        assert!(std::time::Instant::now() < deadline, "the spinner started");
        std::thread::sleep(Duration::from_millis(1));
    }
    Spinner {
        _sem: sem,
        sem_map,
        _queue: queue,
        done,
    }
}

/// Waits (polling) for `path` to exist, then ends the spinner. Gives up after [`ABANDON`]
/// (a referee that failed never writes the file; A must still exit).
fn release_when(path: &Path, s: &Spinner) {
    let deadline = std::time::Instant::now() + ABANDON;
    while !path.exists() && std::time::Instant::now() < deadline {
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

/// Client A, destroy variant: EXEC_QUEUE_DESTROY of the spinner's queue parks until the
/// spinner ends (the running job keeps the VM); VM_DESTROY then finds nothing running.
fn client_a_destroy() {
    let dev = client_device();
    let g = Gpu::new(&dev, VmCreateFlags::empty());
    let s = spinner(&dev, &g);
    let release = PathBuf::from(std::env::var(RELEASE_ENV).expect("release path"));
    let Spinner {
        _sem,
        sem_map,
        _queue,
        done,
    } = s;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !release.exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
            sem_map.write_dwords(0, &[1]).expect("sem write");
        });
        println!("submitting");
        _queue
            .destroy()
            .expect("the parked queue destroy completes");
    });
    assert!(
        done.wait(libgpu::Timeout::Poll).expect("wait"),
        "spinner done"
    );
    let Gpu { vm, queue, .. } = g;
    queue.destroy().expect("copy queue destroy");
    vm.destroy().expect("VM destroy");
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

/// A client process, killed when dropped (a failing referee leaves nothing running), with
/// its stdout lines arriving on a channel (read by a thread, so waiting for one is bounded).
struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Client {
    /// Waits (up to [`STUCK`]) for a line containing `what`; false if it did not come.
    fn printed(&self, what: &str) -> bool {
        let deadline = std::time::Instant::now() + STUCK;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Whether the process still runs.
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Its exit status, if it exited within [`STUCK`].
    fn exit(&mut self) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + STUCK;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(test: &str, d: &Daemon, role: &str, release: Option<&Path>) -> Client {
    let mut cmd = spawn_client(test, d.socket());
    cmd.env(ROLE_ENV, role).stdout(Stdio::piped());
    if let Some(path) = release {
        cmd.env(RELEASE_ENV, path);
    }
    let mut child = cmd.spawn().expect("spawn client");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Client { child, lines }
}

/// Waits (up to [`STUCK`]) until the daemon reports a parked call while `a` still runs. A
/// call that is answered before the referee sees it parked fails the test, never hangs it.
fn wait_parked(d: &Daemon, a: &mut Client) {
    let deadline = std::time::Instant::now() + STUCK;
    loop {
        let n = parked(d).expect("the daemon answers while A's call waits");
        if n >= 1 {
            return;
        }
        assert!(a.running(), "A's call finished without being parked");
        assert!(
            std::time::Instant::now() < deadline,
            "A's call was never seen parked"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Client B runs to completion; false if it did not within [`STUCK`] or failed.
fn run_b(test: &str, d: &Daemon) -> bool {
    let mut b = spawn(test, d, "b", None);
    b.exit().is_some_and(|s| s.success())
}

fn referee(test: &str, d: &Daemon, release: Option<&Path>) {
    let mut a = spawn(test, d, "a", release);
    assert!(a.printed("submitting"), "A reached its call");
    wait_parked(d, &mut a);
    assert!(run_b(test, d), "B's open + DEVICE_QUERY completed");
    // B finished while A's call was parked: A is still waiting for its spinner.
    assert!(a.running(), "A still parked");
    assert_eq!(parked(d), Some(1), "A's call still parked after B");
    if let Some(path) = release {
        std::fs::write(path, b"go").expect("release file");
    }
    let status = a.exit().expect("A finishes");
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

#[test]
fn queue_and_vm_destroy_with_a_running_job_park_while_another_client_is_served() {
    const TEST: &str =
        "queue_and_vm_destroy_with_a_running_job_park_while_another_client_is_served";
    match role().as_deref() {
        Some("a") => return client_a_destroy(),
        Some(_) => return client_b(),
        None => {}
    }
    let d = Daemon::start();
    let baseline = free_memory(&d);
    let release = release_path(TEST);
    referee(TEST, &d, Some(&release));
    let _ = std::fs::remove_file(&release);
    settles(&d, baseline).expect("A's memory back to baseline");
}

/// What a client's resources show up in: free system memory and VRAM, and the hardware
/// contexts held by VMs (`contexts_in_use`, released when a VM's last reference goes).
fn free_memory(d: &Daemon) -> (u64, u64, u64) {
    let dev = d.device();
    let i = dev.query().expect("query");
    let stats = dev.stats().expect("stats");
    let contexts = stat(&stats, "contexts_in_use").expect("contexts_in_use stat");
    (i.sys_free, i.vram_free, contexts)
}

/// Waits (up to [`STUCK`]) for free memory and contexts to return to `baseline` and nothing
/// parked; what it saw last if that did not happen.
fn settles(d: &Daemon, baseline: (u64, u64, u64)) -> Result<(), String> {
    let deadline = std::time::Instant::now() + STUCK;
    loop {
        let (free, n) = (free_memory(d), parked(d));
        if free == baseline && n == Some(0) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "free (sys, vram, contexts) {free:?} (baseline {baseline:?}), parked {n:?}"
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
    let (g, mine) = gpu_tests::bystander(&other);
    let baseline = free_memory(&d);
    let mut a = spawn(TEST, &d, "a", None);
    assert!(a.printed("submitting"), "A reached its call");
    wait_parked(&d, &mut a);
    a.kill();
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
