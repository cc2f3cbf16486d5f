//! The multi-process part of `gpud demo`: gpud serves the scheme on simgpu in this process, and
//! client processes (this binary re-executed as `gpud demo-client`) work through libgpu.
//!
//! Owns: the daemon side of the demo ([`run`]) and the two client roles ([`client_main`]):
//! `main` does async binds pipelined with execs ordered by a syncobj timeline, exports a BO and
//! starts `peer`, which imports it and writes it from its own VM. Must not: reach into the
//! daemon from a client; clients see only the socket.

use super::DemoError;
use crate::platform::host::{HostConfig, HostDaemon};
use libgpu::cmd::{Batch, SemOp};
use libgpu::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags};
use libgpu::{token_from_bytes, token_to_bytes, Bo, Device, ExecQueue, Syncobj, Timeout, Vm};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Instant;

const PAGE: u64 = 0x1000;
const DATA_VA: u64 = 0x10_0000;
const BATCH_VA: u64 = 0x40_0000;
const SHARED_VA: u64 = 0x80_0000;
const STEPS: u64 = 4;
const PEER_VALUE: u32 = 0xB0B0_CAFE;

type R<T> = Result<T, String>;

fn fail(what: &str) -> impl Fn(libgpu::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Starts the daemon, runs the `main` client process, stops the daemon.
pub fn run(out: &mut dyn Write) -> Result<(), DemoError> {
    let socket = std::env::temp_dir().join(format!("gpud-demo-{}.sock", std::process::id()));
    let mut daemon = HostDaemon::start(HostConfig::new(Some(socket.clone())))
        .map_err(|e| DemoError::Client(format!("daemon: {e}")))?;
    writeln!(
        out,
        "[mp 1] gpud serves the gpu scheme on {} (simgpu, memfd system memory)",
        socket.display()
    )?;
    let stop = daemon.stopper();
    let server = std::thread::spawn(move || daemon.serve());
    out.flush()?;
    let status = client_command("main", &socket).and_then(|mut c| {
        c.status()
            .map_err(|e| DemoError::Client(format!("spawn: {e}")))
    });
    stop.store(true, Ordering::Release);
    let _ = server.join();
    let status = status?;
    if !status.success() {
        return Err(DemoError::Client(format!("client process: {status}")));
    }
    writeln!(out, "[mp 4] client processes done; gpud stopped")?;
    Ok(())
}

fn client_command(role: &str, socket: &Path) -> Result<Command, DemoError> {
    let exe = std::env::current_exe().map_err(|e| DemoError::Client(e.to_string()))?;
    let mut c = Command::new(exe);
    c.arg("demo-client").arg(role).arg(socket);
    Ok(c)
}

/// `gpud demo-client main|peer|hang|latency SOCKET [TOKEN]`.
pub fn client_main(args: &[String]) -> R<()> {
    let (role, socket) = match args {
        [role, socket, ..] => (role.as_str(), Path::new(socket)),
        _ => return Err("usage: gpud demo-client main|peer|hang|latency SOCKET [TOKEN]".into()),
    };
    let dev = Device::open_at(socket).map_err(fail("open card0"))?;
    match (role, args.get(2)) {
        ("main", _) => main_client(&dev, socket),
        ("peer", Some(token)) => peer_client(&dev, token),
        ("hang", _) => hang_client(&dev),
        ("latency", _) => latency_client(&dev),
        _ => Err(format!("unknown role {role:?}")),
    }
}

fn sys_bo(dev: &Device, size: u64) -> R<Bo> {
    Bo::create(dev, size, Placement::SYSTEM, BoCreateFlags::empty()).map_err(fail("BO_CREATE"))
}

/// Latencies as a client sees them: synchronous one-page binds (a map and an unmap) and
/// execs of a one-dword batch waited on, each the mean of [`LATENCY_ROUNDS`].
fn latency_client(dev: &Device) -> R<()> {
    let pid = std::process::id();
    let vm = Vm::create(dev, VmCreateFlags::empty()).map_err(fail("VM_CREATE"))?;
    let bo = sys_bo(dev, 2 * PAGE)?;
    vm.bind()
        .map(&bo, 0, BATCH_VA, PAGE)
        .submit()
        .map_err(fail("bind"))?;
    let map = bo.mmap().map_err(fail("mmap"))?;
    let mut b = Batch::new();
    b.store_dword(BATCH_VA + 0x800, 1).batch_end();
    map.write_dwords(0, b.dwords()).map_err(|_| "batch space")?;
    let start = Instant::now();
    for _ in 0..LATENCY_ROUNDS {
        vm.bind()
            .map(&bo, PAGE, DATA_VA, PAGE)
            .submit()
            .map_err(fail("bind"))?;
        vm.bind()
            .unmap(DATA_VA, PAGE)
            .submit()
            .map_err(fail("unbind"))?;
    }
    let bind = start.elapsed() / (2 * LATENCY_ROUNDS);
    let queue = ExecQueue::create(&vm, EngineClass::Copy).map_err(fail("queue"))?;
    let done = Syncobj::create(dev, false).map_err(fail("syncobj"))?;
    let start = Instant::now();
    for _ in 0..LATENCY_ROUNDS {
        queue
            .exec(BATCH_VA)
            .signal(&done)
            .submit()
            .map_err(fail("EXEC"))?;
        done.wait(Timeout::Forever).map_err(fail("wait"))?;
    }
    let exec = start.elapsed() / LATENCY_ROUNDS;
    println!(
        "[latency] client {pid}: VM_BIND of one page {:.2} ms, EXEC + wait {:.2} ms (means of {LATENCY_ROUNDS})",
        bind.as_secs_f64() * 1e3,
        exec.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Rounds of each operation [`latency_client`] times.
const LATENCY_ROUNDS: u32 = 20;

/// A hang and its recovery: a batch waiting on a semaphore nobody signals outlives the job
/// timeout; gpud resets the engine and bans the queue; a new queue on the same VM runs.
fn hang_client(dev: &Device) -> R<()> {
    let pid = std::process::id();
    let vm = Vm::create(dev, VmCreateFlags::empty()).map_err(fail("VM_CREATE"))?;
    let bo = sys_bo(dev, 2 * PAGE)?;
    vm.bind()
        .map(&bo, 0, BATCH_VA, 2 * PAGE)
        .submit()
        .map_err(fail("bind"))?;
    let map = bo.mmap().map_err(fail("mmap"))?;
    let sem_va = BATCH_VA + PAGE;
    let mut stuck = Batch::new();
    stuck
        .semaphore_wait(sem_va, SemOp::Eq, 1, false)
        .batch_end();
    map.write_dwords(0, stuck.dwords())
        .map_err(|_| "batch space")?;
    let mut fine = Batch::new();
    fine.store_dword(sem_va + 8, 0x600d).batch_end();
    map.write_dwords(0x100, fine.dwords())
        .map_err(|_| "batch space")?;
    let hung = ExecQueue::create(&vm, EngineClass::Copy).map_err(fail("queue"))?;
    let done = Syncobj::create(dev, false).map_err(fail("syncobj"))?;
    let start = Instant::now();
    hung.exec(BATCH_VA)
        .signal(&done)
        .submit()
        .map_err(fail("EXEC"))?;
    // The fence completes (with an error) once recovery gave up on the job.
    let _ = done.wait(Timeout::Forever);
    let after = start.elapsed();
    if hung.exec(BATCH_VA + 0x100).submit().is_ok() {
        return Err("the hung queue still accepts work".into());
    }
    let fresh = ExecQueue::create(&vm, EngineClass::Copy).map_err(fail("new queue"))?;
    let again = Syncobj::create(dev, false).map_err(fail("syncobj"))?;
    fresh
        .exec(BATCH_VA + 0x100)
        .signal(&again)
        .submit()
        .map_err(fail("EXEC after reset"))?;
    again
        .wait(Timeout::Forever)
        .map_err(fail("wait after reset"))?;
    let v = map.read_u32((PAGE + 8) as usize).map_err(|_| "read")?;
    if v != 0x600d {
        return Err(format!("after the reset the new queue wrote {v:#x}"));
    }
    println!(
        "[hang] client {pid}: a batch waiting forever was reset after {:.1} s and its queue banned; a new queue ran",
        after.as_secs_f64()
    );
    Ok(())
}

/// Pipelined async binds and execs on one timeline, then the shared BO.
fn main_client(dev: &Device, socket: &Path) -> R<()> {
    let pid = std::process::id();
    let vm = Vm::create(dev, VmCreateFlags::empty()).map_err(fail("VM_CREATE"))?;
    let queue = ExecQueue::create(&vm, EngineClass::Copy).map_err(fail("queue"))?;
    let data = sys_bo(dev, STEPS * PAGE)?;
    let batches = sys_bo(dev, PAGE)?;
    vm.bind()
        .map(&batches, 0, BATCH_VA, PAGE)
        .submit()
        .map_err(fail("batch bind"))?;
    let bmap = batches.mmap().map_err(fail("mmap"))?;
    let tl = Syncobj::create(dev, false).map_err(fail("timeline"))?;
    for i in 0..STEPS {
        let mut b = Batch::new();
        b.store_dword(DATA_VA + i * PAGE, 0x1000 + i as u32)
            .batch_end();
        let off = (i * 0x100) as usize;
        bmap.write_dwords(off, b.dwords())
            .map_err(|_| "batch space")?;
        vm.bind()
            .map(&data, i * PAGE, DATA_VA + i * PAGE, PAGE)
            .signal_point(&tl, 2 * i + 1)
            .submit()
            .map_err(fail("async VM_BIND"))?;
        queue
            .exec(BATCH_VA + off as u64)
            .wait_point(&tl, 2 * i + 1)
            .signal_point(&tl, 2 * i + 2)
            .submit()
            .map_err(fail("EXEC"))?;
    }
    println!(
        "[mp 2] client {pid}: {STEPS} async binds pipelined with {STEPS} execs on timeline points 1..={}",
        2 * STEPS
    );
    tl.wait_point(2 * STEPS, Timeout::Forever)
        .map_err(fail("timeline wait"))?;
    let dmap = data.mmap().map_err(fail("mmap"))?;
    for i in 0..STEPS {
        let v = dmap.read_u32((i * PAGE) as usize).map_err(|_| "read")?;
        if v != 0x1000 + i as u32 {
            return Err(format!("page {i}: found {v:#x}"));
        }
    }
    println!(
        "[mp 2] client {pid}: timeline at {}; GPU wrote 0x1000..0x{:x} into every page, read back through mmap",
        tl.query().map_err(fail("query"))?,
        0x1000 + STEPS - 1
    );
    shared_bo(dev, socket)
}

fn shared_bo(dev: &Device, socket: &Path) -> R<()> {
    let shared = sys_bo(dev, PAGE)?;
    // The export handle keeps the token valid until the peer imported it.
    let exported = shared.export().map_err(fail("export"))?;
    let token = exported.token();
    let hex: String = token_to_bytes(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let status = client_command("peer", socket)
        .map_err(|e| e.to_string())?
        .arg(hex)
        .status()
        .map_err(|e| format!("spawn peer: {e}"))?;
    if !status.success() {
        return Err(format!("peer process: {status}"));
    }
    let v = shared
        .mmap()
        .map_err(fail("mmap"))?
        .read_u32(0)
        .map_err(|_| "read")?;
    if v != PEER_VALUE {
        return Err(format!("shared BO: found {v:#x}"));
    }
    println!(
        "[mp 3] client {}: the external BO holds {v:#x}, written by the peer process's GPU job",
        std::process::id()
    );
    Ok(())
}

/// Imports the shared BO into its own VM and writes it with the GPU.
fn peer_client(dev: &Device, hex: &str) -> R<()> {
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2).ok_or("short token")?;
        *b = u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?;
    }
    let bo = Bo::import(dev, token_from_bytes(bytes)).map_err(fail("import"))?;
    let vm = Vm::create(dev, VmCreateFlags::empty()).map_err(fail("VM_CREATE"))?;
    let batch = sys_bo(dev, PAGE)?;
    vm.bind()
        .map(&bo, 0, SHARED_VA, PAGE)
        .map(&batch, 0, BATCH_VA, PAGE)
        .submit()
        .map_err(fail("bind"))?;
    let mut b = Batch::new();
    b.store_dword(SHARED_VA, PEER_VALUE).batch_end();
    let map = batch.mmap().map_err(fail("mmap"))?;
    map.write_dwords(0, b.dwords()).map_err(|_| "batch space")?;
    let queue = ExecQueue::create(&vm, EngineClass::Copy).map_err(fail("queue"))?;
    let done = Syncobj::create(dev, false).map_err(fail("syncobj"))?;
    queue
        .exec(BATCH_VA)
        .signal(&done)
        .submit()
        .map_err(fail("EXEC"))?;
    done.wait(Timeout::Forever).map_err(fail("wait"))?;
    println!(
        "[mp 3] peer {}: imported the external BO, bound it in its own VM, stored {PEER_VALUE:#x}",
        std::process::id()
    );
    Ok(())
}
