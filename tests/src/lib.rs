//! gpu-tests: end-to-end and conformance tests.
//!
//! Owns: the harness the tests in `tests/` share: [`Daemon`] (gpud's host platform serving
//! the scheme on its own socket, on a thread of the test process), [`client_process`] (runs a
//! test body in a separate client process: the test binary re-executed for one test), and
//! [`Gpu`] (a client VM with an exec queue and a batch buffer, to verify mappings by GPU
//! writes and CPU reads through BO mmap). Must not: reach into the daemon from a client body;
//! clients talk to it only through libgpu over the socket.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod cpu_mem;

use gpud::platform::host::{HostConfig, HostDaemon};
use libgpu::cmd::Batch;
use libgpu::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags};
use libgpu::{Bo, BoMap, Device, ExecQueue, Syncobj, Timeout, Vm};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Set in a re-executed client process: the daemon's socket path.
pub const CHILD_ENV: &str = "GPU_TESTS_CLIENT_SOCKET";
/// GPU VA of [`Gpu`]'s batch buffer (far from the VAs the scenarios use).
pub const BATCH_VA: u64 = 0x7f_0000_0000;

/// A daemon serving the scheme on a private socket; stopped and joined on drop.
pub struct Daemon {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Starts gpud's host platform (16 MiB VRAM, 64 MiB system memory) on a fresh socket.
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// [`Daemon::start`] with `adjust` applied to the configuration first.
    pub fn start_with(adjust: impl FnOnce(&mut HostConfig)) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir();
        let socket = dir.join(format!("gpu-tests-{}-{n}.sock", std::process::id()));
        let mut cfg = HostConfig::new(Some(socket.clone()));
        cfg.device.vram_size = 16 << 20;
        cfg.device.sys_size = 64 << 20;
        adjust(&mut cfg);
        let mut daemon = HostDaemon::start(cfg).expect("daemon starts");
        let stop = daemon.stopper();
        let thread = std::thread::spawn(move || daemon.serve().expect("daemon serves"));
        Self {
            socket,
            stop,
            thread: Some(thread),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A new client (device handle) in this process.
    pub fn device(&self) -> Device {
        Device::open_at(&self.socket).expect("open card0")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `body` in a separate client process against a fresh daemon. `test` is the name of
/// the calling test: the test binary is re-executed for exactly that test with
/// [`CHILD_ENV`] set, and there `body` runs and this returns at once.
pub fn client_process(test: &str, body: impl FnOnce(&Device)) {
    if let Ok(sock) = std::env::var(CHILD_ENV) {
        let dev = Device::open_at(Path::new(&sock)).expect("client opens card0");
        body(&dev);
        return;
    }
    let daemon = Daemon::start();
    let status = spawn_client(test, daemon.socket())
        .status()
        .expect("client spawns");
    assert!(
        status.success(),
        "client process of {test} failed: {status}"
    );
    // The daemon still serves after the client.
    assert!(daemon.device().query().is_ok());
}

/// The command that re-executes this test binary as a client for `test`.
pub fn spawn_client(test: &str, socket: &Path) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    // `--include-ignored`: an ignored test run on purpose runs its client body too.
    cmd.args([
        test,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ])
    .env(CHILD_ENV, socket);
    cmd
}

/// A system BO.
pub fn sys_bo(dev: &Device, size: u64) -> Bo {
    Bo::create(dev, size, Placement::SYSTEM, BoCreateFlags::empty()).expect("system BO")
}

/// A bystander client's work: a VM on `dev` and a 4 KiB system BO bound at 0x10_0000, for
/// tests that check another client's misbehaviour leaves it alone.
pub fn bystander(dev: &Device) -> (Gpu, Bo) {
    let g = Gpu::new(dev, VmCreateFlags::empty());
    let mine = sys_bo(dev, 0x1000);
    g.vm.bind()
        .map(&mine, 0, 0x10_0000, 0x1000)
        .submit()
        .expect("bind");
    (g, mine)
}

/// A VM with a copy queue and a mapped batch buffer: runs STORE_DWORD batches.
pub struct Gpu {
    /// The VM.
    pub vm: Vm,
    /// Its copy queue.
    pub queue: ExecQueue,
    batch: Bo,
    map: BoMap,
    done: Syncobj,
}

impl Gpu {
    /// A VM with `flags` on `dev`.
    pub fn new(dev: &Device, flags: VmCreateFlags) -> Self {
        let vm = Vm::create(dev, flags).expect("vm");
        let batch = sys_bo(dev, 0x1000);
        vm.bind()
            .map(&batch, 0, BATCH_VA, 0x1000)
            .submit()
            .expect("batch bind");
        let map = batch.mmap().expect("batch mmap");
        let queue = ExecQueue::create(&vm, EngineClass::Copy).expect("queue");
        let done = Syncobj::create(dev, false).expect("syncobj");
        Self {
            vm,
            queue,
            batch,
            map,
            done,
        }
    }

    /// The batch BO (kept alive with the VM).
    pub fn batch_bo(&self) -> &Bo {
        &self.batch
    }

    /// Runs `dwords` as the batch and waits for it: the wait's result (an error when the job
    /// failed, e.g. timed out and its queue was banned).
    pub fn run_dwords(&self, dwords: &[u32]) -> libgpu::Result<bool> {
        self.map.write_dwords(0, dwords).expect("batch fits");
        self.queue.exec(BATCH_VA).signal(&self.done).submit()?;
        self.done.wait(Timeout::Forever)
    }

    /// Runs one batch storing each `(va, value)`; returns once the GPU finished it.
    pub fn store(&self, writes: &[(u64, u32)]) {
        let mut b = Batch::new();
        for &(va, value) in writes {
            b.store_dword(va, value);
        }
        b.batch_end();
        self.map.write_dwords(0, b.dwords()).expect("batch fits");
        self.queue
            .exec(BATCH_VA)
            .signal(&self.done)
            .submit()
            .expect("exec");
        assert!(self.done.wait(Timeout::Forever).expect("wait"), "batch ran");
    }
}

/// The dword at `offset` of `bo`, read through a CPU mapping.
pub fn read_u32(bo: &Bo, offset: usize) -> u32 {
    bo.mmap().expect("mmap").read_u32(offset).expect("in range")
}

/// Sends `req` as raw wire bytes (no libgpu checks): `Ok` or the errno. A transport failure
/// (the daemon hung up) fails the test.
pub fn raw_errno(dev: &Device, req: &gpu_scheme::uapi::Request) -> Result<(), i32> {
    let (op, mut bytes) = gpu_scheme::uapi::encode(req);
    dev.handle()
        .call(&mut bytes, [op, 0, 0])
        .map(|_| ())
        .map_err(|e| match e {
            libgpu::TransportError::Scheme(n) | libgpu::TransportError::Os(n) => n,
            other => panic!("transport failure on {req:?}: {other:?}"),
        })
}

/// The value of `key` in `key: value` stats text.
pub fn stat(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().parse().ok())?
    })
}

/// gpuctl of this workspace, built (a no-op when up to date) into the target directory this
/// test binary runs from, with the profile tests use, so a stale gpuctl never runs.
pub fn gpuctl() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/<profile dir>/deps/<this test>
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target = profile_dir.parent().expect("target dir");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "--profile",
            "test",
            "-p",
            "libgpu",
            "--bin",
            "gpuctl",
        ])
        .arg("--target-dir")
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building gpuctl failed: {status}");
    profile_dir.join("gpuctl")
}
