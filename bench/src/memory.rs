//! BO creation cost with and without per-BO shared-memory objects (group `memory`).
//!
//! Keys (median of single create+destroy pairs, 64 KiB BOs, on the driver's `Device`):
//! `bo_create_destroy_sys_pool_ns` (system memory in one shared window, no per-BO object:
//! the host path before per-BO memfds), `bo_create_destroy_sys_shared_ns` (each backing its
//! own memfd bound into the window: today's host path), `bo_create_destroy_vram_heap_ns` /
//! `bo_create_destroy_vram_shared_ns` (the same for VRAM, which includes the copy-engine
//! clear), and `bo_cpu_memory_ns` (handing out a BO's memory object: one dup). End to end
//! through `gpud serve` on a thread and libgpu: `bo_create_destroy_e2e_us` (64 KiB system
//! BO) and `bo_create_mmap_destroy_e2e_us` (the same with one mmap + write + unmap).

use crate::report::{median_ns, Report};
use gpud::device::{Device, DeviceConfig};
use gpud::mem::bo::{Placement, SharedWindows};
use gpud::mem::shm::{MapBudget, ShmPool};
use gpud::platform::host::{HostConfig, HostDaemon};
use libgpu::flags::{BoCreateFlags, Placement as WirePlacement};
use libgpu::{Bo, Device as Client};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

const SIZE: u64 = 64 << 10;

fn config() -> DeviceConfig {
    DeviceConfig {
        vram_size: 64 << 20,
        sys_size: 64 << 20,
        ..DeviceConfig::default()
    }
}

/// The device on a shared window without per-BO objects (the previous host setup).
fn pool_device() -> Option<Device> {
    let pool = Arc::new(ShmPool::new("gpu-bench", config().sys_size).ok()?);
    Device::with_memory(config(), pool).ok()
}

/// The device on shared windows with per-BO objects (`gpud serve`'s setup).
fn shared_device() -> Option<Device> {
    let budget = MapBudget::from_system();
    let windows = SharedWindows {
        sys: Arc::new(ShmPool::with_budget("gpu-bench", config().sys_size, budget.clone()).ok()?),
        vram: Arc::new(ShmPool::with_budget("gpu-bench", config().vram_size, budget).ok()?),
    };
    Device::with_shared(config(), windows).ok()
}

/// Median nanoseconds of one create+destroy of a `placement` BO, over `n` pairs.
fn create_destroy(dev: &Device, placement: Placement, n: usize) -> Option<u64> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let bo = dev.bo_create(SIZE, placement, None).ok()?;
        drop(bo);
        samples.push(t.elapsed().as_nanos() as u64);
    }
    Some(median_ns(&mut samples))
}

/// Median microseconds of `f` over `n` runs.
fn median_us(n: usize, mut f: impl FnMut() -> bool) -> Option<f64> {
    let mut s = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        if !f() {
            return None;
        }
        s.push(t.elapsed().as_nanos() as u64);
    }
    Some(median_ns(&mut s) as f64 / 1000.0)
}

/// The end-to-end keys, against `gpud serve` on a thread (nothing if it cannot start).
fn end_to_end(r: &mut Report) {
    let path = std::env::temp_dir().join(format!("gpu-bench-mem-{}.sock", std::process::id()));
    let Ok(mut daemon) = HostDaemon::start(HostConfig::new(Some(path.clone()))) else {
        return;
    };
    let stop = daemon.stopper();
    let thread = std::thread::spawn(move || daemon.serve());
    if let Ok(dev) = Client::open_at(&path) {
        let create = || Bo::create(&dev, SIZE, WirePlacement::SYSTEM, BoCreateFlags::empty());
        if let Some(us) = median_us(2000, || create().is_ok()) {
            r.push("bo_create_destroy_e2e_us", us);
        }
        let mapped = median_us(2000, || {
            let Ok(bo) = create() else { return false };
            let Ok(map) = bo.mmap() else { return false };
            map.write_u64(0, 1).is_ok()
        });
        if let Some(us) = mapped {
            r.push("bo_create_mmap_destroy_e2e_us", us);
        }
    }
    stop.store(true, Ordering::Release);
    let _ = thread.join();
}

/// The `memory` group.
pub fn memory() -> Report {
    let mut r = Report::new("memory");
    end_to_end(&mut r);
    if let Some(dev) = pool_device() {
        if let Some(ns) = create_destroy(&dev, Placement::System, 4000) {
            r.push("bo_create_destroy_sys_pool_ns", ns);
        }
        if let Some(ns) = create_destroy(&dev, Placement::Vram, 1000) {
            r.push("bo_create_destroy_vram_heap_ns", ns);
        }
    }
    if let Some(dev) = shared_device() {
        if let Some(ns) = create_destroy(&dev, Placement::System, 4000) {
            r.push("bo_create_destroy_sys_shared_ns", ns);
        }
        if let Some(ns) = create_destroy(&dev, Placement::Vram, 1000) {
            r.push("bo_create_destroy_vram_shared_ns", ns);
        }
        if let Ok(bo) = dev.bo_create(SIZE, Placement::System, None) {
            let mut s: Vec<u64> = (0..2000)
                .map(|_| {
                    let t = Instant::now();
                    drop(bo.cpu_memory());
                    t.elapsed().as_nanos() as u64
                })
                .collect();
            r.push("bo_cpu_memory_ns", median_ns(&mut s));
        }
    }
    r
}
