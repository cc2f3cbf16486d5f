//! BO creation cost with and without per-BO shared-memory objects (group `memory`).
//!
//! Keys (median of single create+destroy pairs, 64 KiB BOs, on the driver's `Device`):
//! `bo_create_destroy_sys_pool_ns` (system memory in one shared window, no per-BO object:
//! the host path before per-BO memfds), `bo_create_destroy_sys_shared_ns` (each backing its
//! own memfd bound into the window: today's host path), `bo_create_destroy_vram_heap_ns` /
//! `bo_create_destroy_vram_shared_ns` (the same for VRAM, which includes the copy-engine
//! clear), and `bo_cpu_memory_ns` (handing out a BO's memory object: one dup).

use crate::report::{median_ns, Report};
use gpud::device::{Device, DeviceConfig};
use gpud::mem::bo::{Placement, SharedWindows};
use gpud::mem::shm::{MapBudget, ShmPool};
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

/// The `memory` group.
pub fn memory() -> Report {
    let mut r = Report::new("memory");
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
