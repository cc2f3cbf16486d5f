//! End-to-end benchmarks of several clients at once against the real driver (the daemon
//! that `serve.rs` starts). Reported in the `scheme` group.
//!
//! Keys:
//! - `other_client_rtt_while_blocked_us`: client B's DEVICE_QUERY round trip (median) while
//!   client A, on its own connection, has a synchronous VM_BIND parked behind a GPU job that
//!   spins on a semaphore. The request loop never waits, so this should stay near
//!   `null_call_rtt_us` (target ≤ 2 ×).
//! - `clients_1_bind_pairs_per_s`, `clients_4_bind_pairs_per_s`: synchronous 4 KiB map +
//!   unmap pairs per second summed over 1 and 4 client threads, each with its own connection,
//!   VM and BO, all running for the same window. `clients_4_over_1_ratio` is their ratio: one
//!   client must not be able to serialize the others behind it (target ≥ 0.9 on 2 cores).

use crate::report::{median_ns, Report};
use libgpu::cmd::{Batch, SemOp};
use libgpu::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags};
use libgpu::{Bo, Device, ExecQueue, Syncobj, Vm};
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const PAGE: u64 = 0x1000;
/// How long each client-count run of the bind-pair measurement lasts.
const WINDOW: Duration = Duration::from_secs(1);
/// How long to wait for A's bind to be reported parked before giving up on the key.
const PARK_DEADLINE: Duration = Duration::from_secs(5);

/// Pushes the keys into `r` (a key is left out when its setup failed).
pub fn measure(socket: &Path, r: &mut Report) {
    if let Some(us) = rtt_while_blocked(socket) {
        r.push("other_client_rtt_while_blocked_us", us);
    }
    let one = bind_pairs_per_s(socket, 1);
    let four = bind_pairs_per_s(socket, 4);
    if let (Some(one), Some(four)) = (one, four) {
        r.push("clients_1_bind_pairs_per_s", one);
        r.push("clients_4_bind_pairs_per_s", four);
        r.push("clients_4_over_1_ratio", four / one.max(f64::MIN_POSITIVE));
    }
}

fn sys_bo(dev: &Device, size: u64) -> Option<Bo> {
    Bo::create(dev, size, Placement::SYSTEM, BoCreateFlags::empty()).ok()
}

/// Client A's setup: a compute job spinning until the semaphore BO's first dword is 1, and
/// a bind queue whose first (asynchronous) bind waits for that job.
struct Blocked {
    vm: Vm,
    bind_queue: ExecQueue,
    target: Bo,
    sem: Bo,
    _batch: Bo,
    _queue: ExecQueue,
}

fn blocked_client(dev: &Device) -> Option<Blocked> {
    const SEM_VA: u64 = 0x20_0000;
    const BATCH_VA: u64 = 0x30_0000;
    let vm = Vm::create(dev, VmCreateFlags::empty()).ok()?;
    let (sem, batch, target) = (
        sys_bo(dev, PAGE)?,
        sys_bo(dev, PAGE)?,
        sys_bo(dev, 2 * PAGE)?,
    );
    vm.bind()
        .map(&sem, 0, SEM_VA, PAGE)
        .map(&batch, 0, BATCH_VA, PAGE)
        .submit()
        .ok()?;
    let mut b = Batch::new();
    b.semaphore_wait(SEM_VA, SemOp::Eq, 1, false);
    b.batch_end();
    batch.mmap().ok()?.write_dwords(0, b.dwords()).ok()?;
    let queue = ExecQueue::create(&vm, EngineClass::Compute).ok()?;
    let spun = Syncobj::create(dev, false).ok()?;
    queue.exec(BATCH_VA).signal(&spun).submit().ok()?;
    let bind_queue = ExecQueue::create(&vm, EngineClass::VmBind).ok()?;
    vm.bind()
        .queue(&bind_queue)
        .wait(&spun)
        .map(&target, 0, 0x40_0000, PAGE)
        .submit()
        .ok()?;
    Some(Blocked {
        vm,
        bind_queue,
        target,
        sem,
        _batch: batch,
        _queue: queue,
    })
}

fn parked_waits(dev: &Device) -> u64 {
    dev.stats()
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "device-parked-waits").then(|| v.trim().parse().ok())?
            })
        })
        .unwrap_or(0)
}

/// B's median null-call round trip (µs) while A's synchronous bind is parked.
fn rtt_while_blocked(socket: &Path) -> Option<f64> {
    let (a, b) = (Device::open_at(socket).ok()?, Device::open_at(socket).ok()?);
    let blocked = blocked_client(&a)?;
    std::thread::scope(|s| {
        let parked_bind = s.spawn(|| {
            blocked
                .vm
                .bind()
                .queue(&blocked.bind_queue)
                .map(&blocked.target, PAGE, 0x50_0000, PAGE)
                .submit()
        });
        let deadline = Instant::now() + PARK_DEADLINE;
        while parked_waits(&b) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let measured = (parked_waits(&b) >= 1).then(|| {
            let mut samples: Vec<u64> = (0..5000)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(b.query().is_ok());
                    t.elapsed().as_nanos() as u64
                })
                .collect();
            median_ns(&mut samples) as f64 / 1000.0
        });
        // Still parked at the end: otherwise the spinner timed out under us.
        let still = parked_waits(&b) >= 1;
        let _ = blocked.sem.mmap().map(|m| m.write_dwords(0, &[1]));
        let _ = parked_bind.join();
        measured.filter(|_| still)
    })
}

/// Aggregate synchronous map + unmap pairs per second of `clients` threads, each on its own
/// connection, VM and BO, over [`WINDOW`].
fn bind_pairs_per_s(socket: &Path, clients: usize) -> Option<f64> {
    let setups: Vec<(Device, Vm, Bo)> = (0..clients)
        .map(|_| {
            let dev = Device::open_at(socket).ok()?;
            let vm = Vm::create(&dev, VmCreateFlags::empty()).ok()?;
            let bo = sys_bo(&dev, PAGE)?;
            Some((dev, vm, bo))
        })
        .collect::<Option<_>>()?;
    let start = Barrier::new(clients + 1);
    let counts: Vec<u64> = std::thread::scope(|s| {
        let threads: Vec<_> = setups
            .iter()
            .map(|(_, vm, bo)| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    let end = Instant::now() + WINDOW;
                    let mut pairs = 0u64;
                    while Instant::now() < end {
                        let map = vm.bind().map(bo, 0, 0x10_0000, PAGE).submit();
                        let unmap = vm.bind().unmap(0x10_0000, PAGE).submit();
                        if map.is_err() || unmap.is_err() {
                            return None;
                        }
                        pairs += 1;
                    }
                    Some(pairs)
                })
            })
            .collect();
        start.wait();
        threads
            .into_iter()
            .map(|t| t.join().ok().flatten())
            .collect::<Option<_>>()
    })?;
    Some(counts.iter().sum::<u64>() as f64 / WINDOW.as_secs_f64())
}
