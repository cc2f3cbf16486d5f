//! `gpuctl top` on a real terminal: run in a tmux pane against a daemon with one client whose
//! job holds a hardware queue of the copy engine and one idle client, the captured screen
//! shows the busy client at that queue's share of the engine (100 % /
//! `drm-engine-capacity-copy`) and the idle one at 0, and `q` quits. Skipped (with a message)
//! only when tmux is not installed (`.ci/run` installs it).

use gpu_tests::{gpuctl, sys_bo, Daemon};
use libgpu::cmd::{Batch, SemOp};
use libgpu::flags::{EngineClass, VmCreateFlags};
use libgpu::{ExecQueue, Vm};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BATCH_VA: u64 = 0x10_0000;
/// Where the busy job's semaphore lives (in its batch BO, after the commands).
const GATE_OFFSET: u64 = 0x800;

/// A private tmux server, killed on drop (with everything it runs).
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start() -> Option<Self> {
        let socket = format!("gpud-top-test-{}", std::process::id());
        let t = Tmux { socket };
        t.run(&["-V"]).status.success().then_some(t)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("tmux {args:?}: {e}"))
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Opens the busy job's gate when dropped, so a failing assertion never leaves a job holding
/// the engine while the daemon shuts down.
struct Gate<'a>(&'a libgpu::BoMap);

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let _ = self.0.write_u64(GATE_OFFSET as usize, 1);
    }
}

/// The table row of `client` on `screen`: its cells.
fn row(screen: &str, client: u64) -> Option<Vec<&str>> {
    let heading = screen.lines().position(|l| l.starts_with("CLIENT"))?;
    screen
        .lines()
        .skip(heading + 1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&client.to_string().as_str()))
}

/// The COPY% cell of `client`'s row.
fn copy_percent(screen: &str, client: u64) -> Option<f64> {
    let heading = screen.lines().find(|l| l.starts_with("CLIENT"))?;
    let col = heading
        .split_whitespace()
        .position(|h| h.starts_with("COPY%"))?;
    row(screen, client)?.get(col)?.parse().ok()
}

fn client_id(dev: &libgpu::Device) -> u64 {
    let text = dev.stats().expect("own stats");
    gpu_tests::stat(&text, "client-id").expect("client-id")
}

#[test]
fn gpuctl_top_in_a_terminal_shows_the_busy_client_busy_and_the_idle_one_idle() {
    let Some(tmux) = Tmux::start() else {
        eprintln!("SKIPPED: tmux is not installed (.ci/run installs it); gpuctl top's pane test did not run");
        return;
    };
    let bin = gpuctl();
    let daemon = Daemon::start_with(|cfg| cfg.device.job_timeout = Duration::from_secs(600));
    // The busy client: one job that holds its copy queue until the gate is opened.
    let busy = daemon.device();
    let vm = Vm::create(&busy, VmCreateFlags::empty()).expect("vm");
    let batch = sys_bo(&busy, 0x1000);
    vm.bind()
        .map(&batch, 0, BATCH_VA, 0x1000)
        .submit()
        .expect("bind");
    let map = batch.mmap().expect("mmap");
    let mut b = Batch::new();
    b.semaphore_wait(BATCH_VA + GATE_OFFSET, SemOp::Ne, 0, true);
    b.batch_end();
    map.write_dwords(0, b.dwords()).expect("batch fits");
    let queue = ExecQueue::create(&vm, EngineClass::Copy).expect("queue");
    let gate = Gate(&map);
    queue.exec(BATCH_VA).submit().expect("exec");
    // The idle client: a VM and a queue, no work.
    let idle = daemon.device();
    let idle_vm = Vm::create(&idle, VmCreateFlags::empty()).expect("vm");
    let idle_queue = ExecQueue::create(&idle_vm, EngineClass::Copy).expect("queue");
    let (busy_id, idle_id) = (client_id(&busy), client_id(&idle));
    // One job holds one of the copy engine's hardware queues: 100 % / capacity, since
    // gpuctl top shows a share of all of the engine's queues.
    let stats = busy.stats().expect("stats");
    let capacity: f64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("drm-engine-capacity-copy: "))
        .and_then(|v| v.parse().ok())
        .expect("drm-engine-capacity-copy");
    let busy_floor = 50.0 / capacity;

    let cmd = format!(
        "{} top --interval 0.5 --socket {}",
        bin.display(),
        daemon.socket().display()
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "30",
        &cmd,
    ]);
    assert!(started.status.success(), "tmux: {started:?}");
    // Two samples at least, then a screen with both rows.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut screen = tmux.capture();
    while Instant::now() < deadline {
        screen = tmux.capture();
        let both = copy_percent(&screen, busy_id).is_some_and(|p| p > busy_floor)
            && copy_percent(&screen, idle_id).is_some();
        if both {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let busy_pct = copy_percent(&screen, busy_id);
    assert!(
        busy_pct.is_some_and(|p| p > busy_floor),
        "busy client {busy_id} not busy:\n{screen}"
    );
    assert_eq!(
        copy_percent(&screen, idle_id),
        Some(0.0),
        "idle client {idle_id}:\n{screen}"
    );
    assert!(screen.contains("q quit"), "{screen}");
    // A key changes the sort column (marked in the heading); `q` quits.
    tmux.run(&["send-keys", "-t", "top", "Right"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tmux.capture().contains("COMPUTE%v") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(tmux.capture().contains("COMPUTE%v"), "{}", tmux.capture());
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!tmux.alive(), "gpuctl top did not quit on q");

    // The one-shot JSON agrees.
    let out = Command::new(&bin)
        .args(["--json", "top", "--interval", "0.3", "--socket"])
        .arg(daemon.socket())
        .output()
        .expect("gpuctl runs");
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let of = |id: u64| {
        j["clients"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["client-id"] == id))
            .map(|c| c["busy-percent"]["copy"].as_f64().unwrap_or(-1.0))
    };
    assert!(of(busy_id).is_some_and(|p| p > busy_floor), "{j:#}");
    assert_eq!(of(idle_id), Some(0.0), "{j:#}");

    drop(gate);
    drop((queue, idle_queue, idle_vm));
}
