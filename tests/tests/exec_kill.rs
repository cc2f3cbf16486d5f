//! A client killed while its job runs on the engine: the job is preempted off the engine at
//! once, so the queue and everything it holds (its VM, the BOs mapped there) go away long
//! before any job timeout, and the other clients keep running. End to end: the dying client
//! is a separate process killed with SIGKILL.

use gpu_scheme::uapi::flags::*;
use gpu_tests::{spawn_client, sys_bo, Daemon, Gpu, BATCH_VA, CHILD_ENV};
use libgpu::cmd::{Batch, SemOp};
use libgpu::{Bo, Device};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Where the child's spinning job writes that it runs, and the word it waits on forever.
const MARK_VA: u64 = 0x20_0000;
const GATE_VA: u64 = MARK_VA + 8;

/// Where the child maps 1 MiB of VRAM that only its VM holds once it is dead.
const VRAM_VA: u64 = 0x40_0000;

/// The child: a VM with a system BO and 1 MiB of VRAM, a job that marks the BO and then spins
/// on the GPU until a word that nobody writes changes; prints "spinner-on-engine" once the mark is
/// visible, then waits to be killed.
fn child(dev: &Device) {
    let g = Gpu::new(dev, VmCreateFlags::empty());
    let bo = sys_bo(dev, 0x1000);
    let vram = Bo::create(dev, 1 << 20, Placement::VRAM, BoCreateFlags::empty()).expect("vram");
    g.vm.bind()
        .map(&bo, 0, MARK_VA, 0x1000)
        .map(&vram, 0, VRAM_VA, 1 << 20)
        .submit()
        .expect("bind");
    let mut b = Batch::new();
    b.store_dword(MARK_VA, 1)
        .semaphore_wait(GATE_VA, SemOp::Ne, 0, false)
        .store_dword(MARK_VA, 2)
        .batch_end();
    let map = g.batch_bo().mmap().expect("batch mmap");
    map.write_dwords(0, b.dwords()).expect("batch fits");
    g.queue.exec(BATCH_VA).submit().expect("exec");
    let seen = bo.mmap().expect("bo mmap");
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.read_u32(0).expect("in range") != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(seen.read_u32(0).expect("in range"), 1, "the job started");
    println!("spinner-on-engine");
    // Killed by the parent; the bound only keeps an orphan from living forever.
    std::thread::sleep(Duration::from_secs(60));
}

fn free_memory(dev: &Device) -> (u64, u64) {
    let i = dev.query().expect("query");
    (i.sys_free, i.vram_free)
}

#[test]
fn a_killed_clients_running_job_leaves_the_engine_before_any_timeout() {
    const TEST: &str = "a_killed_clients_running_job_leaves_the_engine_before_any_timeout";
    if let Ok(sock) = std::env::var(CHILD_ENV) {
        let dev = Device::open_at(std::path::Path::new(&sock)).expect("open");
        child(&dev);
        return;
    }
    // No job timeout can be what takes the spinner off the engine within the test's bound.
    let d = Daemon::start_with(|cfg| cfg.device.job_timeout = Duration::from_secs(3600));
    let other = d.device();
    let (g, mine) = gpu_tests::bystander(&other);
    let baseline = free_memory(&other);
    let mut child = spawn_client(TEST, d.socket())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let running = lines.find(|l| l.as_ref().is_ok_and(|l| l.contains("spinner-on-engine")));
    assert!(running.is_some(), "the child's job runs");
    assert_ne!(free_memory(&other), baseline, "the child holds memory");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // The killed queue holds its VM (and the VRAM mapped there) until its job is off the
    // engine: memory back to the baseline means the spinner left the engine.
    let deadline = Instant::now() + Duration::from_secs(30);
    while free_memory(&other) != baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        free_memory(&other),
        baseline,
        "the killed client's spinning job still holds its VM"
    );
    g.store(&[(0x10_0000, 0x5AFE)]);
    let map = mine.mmap().expect("mmap");
    assert_eq!(
        map.read_u32(0).expect("in range"),
        0x5AFE,
        "the other client is unaffected"
    );
}
