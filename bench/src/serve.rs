//! End-to-end benchmarks of the real driver behind the host transport: gpud's host platform
//! on a thread, libgpu as the client. Reported in the `scheme` group.
//!
//! Keys: `null_call_rtt_us` (DEVICE_QUERY, the cheapest call, round trip),
//! `bind_map_unmap_rtt_us` (a synchronous 4 KiB map + unmap pair), `overhead_ratio` (bind pair
//! / (2 × null call): what the driver adds beyond IPC) and `array_bind_1000_ops_per_s` (one
//! VM_BIND of 1000 map ops).
//!
//! The pair runs on a VM that has not run a job yet, whose unmaps need no TLB invalidation
//! (docs/bind.md). `bind_map_unmap_rtt_used_vm_us` and `overhead_ratio_used_vm` are the same
//! pair on a VM that ran a job: each unmap then waits for the device's invalidation.
//!
//! The same daemon then serves the several-client keys of `contend.rs`.

use crate::report::{median_ns, Report};
use gpud::platform::host::{HostConfig, HostDaemon};
use libgpu::cmd::Batch;
use libgpu::flags::{BoCreateFlags, EngineClass, Placement, VmCreateFlags};
use libgpu::{Bo, Device, ExecQueue, Syncobj, Timeout, Vm};
use std::sync::atomic::Ordering;
use std::time::Instant;

const PAGE: u64 = 0x1000;

fn sample(n: usize, mut f: impl FnMut()) -> u64 {
    let mut s: Vec<u64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    median_ns(&mut s)
}

/// Pushes the end-to-end keys into `r` (nothing if the daemon cannot start).
pub fn end_to_end(r: &mut Report) {
    let path = std::env::temp_dir().join(format!("gpu-bench-gpud-{}.sock", std::process::id()));
    let Ok(mut daemon) = HostDaemon::start(HostConfig::new(Some(path.clone()))) else {
        return;
    };
    let stop = daemon.stopper();
    let thread = std::thread::spawn(move || daemon.serve());
    if let Ok(dev) = Device::open_at(&path) {
        measure(&dev, r);
    }
    crate::contend::measure(&path, r);
    stop.store(true, Ordering::Release);
    let _ = thread.join();
}

fn measure(dev: &Device, r: &mut Report) {
    let (Ok(vm), Ok(bo), Ok(big)) = (
        Vm::create(dev, VmCreateFlags::empty()),
        Bo::create(dev, PAGE, Placement::SYSTEM, BoCreateFlags::empty()),
        Bo::create(dev, 1000 * PAGE, Placement::SYSTEM, BoCreateFlags::empty()),
    ) else {
        return;
    };
    let null = sample(5000, || {
        std::hint::black_box(dev.query().is_ok());
    });
    let pair = sample(2000, || {
        let _ = vm.bind().map(&bo, 0, 0x10_0000, PAGE).submit();
        let _ = vm.bind().unmap(0x10_0000, PAGE).submit();
    });
    let used_pair = used_vm(dev, &bo).map(|vm| {
        sample(2000, || {
            let _ = vm.bind().map(&bo, 0, 0x10_0000, PAGE).submit();
            let _ = vm.bind().unmap(0x10_0000, PAGE).submit();
        })
    });
    let mut array = Vec::new();
    for _ in 0..10 {
        let mut b = vm.bind();
        for i in 0..1000 {
            b = b.map(&big, i * PAGE, 0x1000_0000 + i * 2 * PAGE, PAGE);
        }
        let t = Instant::now();
        let ok = b.submit().is_ok();
        array.push(t.elapsed().as_nanos() as u64);
        let _ = vm.bind().unmap(0x1000_0000, 2000 * PAGE).submit();
        if !ok {
            return;
        }
    }
    let array_ns = median_ns(&mut array).max(1);
    r.push("null_call_rtt_us", null as f64 / 1000.0);
    r.push("bind_map_unmap_rtt_us", pair as f64 / 1000.0);
    r.push("overhead_ratio", pair as f64 / (2.0 * null.max(1) as f64));
    r.push("array_bind_1000_ops_per_s", 1000.0 * 1e9 / array_ns as f64);
    if let Some(used) = used_pair {
        r.push("bind_map_unmap_rtt_used_vm_us", used as f64 / 1000.0);
        r.push(
            "overhead_ratio_used_vm",
            used as f64 / (2.0 * null.max(1) as f64),
        );
    }
}

/// A VM that has run one job (a batch that only ends), so its context may cache
/// translations.
fn used_vm(dev: &Device, batch: &Bo) -> Option<Vm> {
    const BATCH_VA: u64 = 0x20_0000;
    let vm = Vm::create(dev, VmCreateFlags::empty()).ok()?;
    let queue = ExecQueue::create(&vm, EngineClass::Copy).ok()?;
    let mut b = Batch::new();
    b.batch_end();
    batch.mmap().ok()?.write_dwords(0, b.dwords()).ok()?;
    vm.bind().map(batch, 0, BATCH_VA, PAGE).submit().ok()?;
    let done = Syncobj::create(dev, false).ok()?;
    queue.exec(BATCH_VA).signal(&done).submit().ok()?;
    done.wait(Timeout::Forever).ok()?.then_some(vm)
}
