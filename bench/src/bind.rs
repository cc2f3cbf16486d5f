//! `gpu-bench bind`: the VM_BIND engine on a simulated device — array binds of 1 000 4 KiB
//! MAP ops and the matching UNMAP ops (driver side: planning, locking, table preparation,
//! commit, entry writes, one invalidation), a synchronous map+unmap pair, and whether a bind
//! on an unblocked queue completes while another queue waits.
//!
//! Owns: the bind benchmark group. Must not: assert on timings; it only reports them.

use crate::report::{median_ns, Report};
use gpud::bind::{BindOp, BindSync, VmFlags};
use gpud::device::{Device, DeviceConfig};
use gpud::mem::bo::Placement;
use gpud::sync::{Fence, FenceContext, Syncobj};
use std::time::{Duration, Instant};

const OPS: u64 = 1000;
const K4: u64 = 4096;
const BASE: u64 = 0x10_0000_0000;
const ROUNDS: usize = 15;

/// The group.
pub fn bind() -> Report {
    let mut report = Report::new("bind");
    let Ok(dev) = Device::new(DeviceConfig::default()) else {
        report.push("error", "device bring-up failed");
        return report;
    };
    let (Ok(vm), Ok(bo)) = (
        dev.vm_create(VmFlags::empty()),
        dev.bo_create(OPS * K4, Placement::Vram, None),
    ) else {
        report.push("error", "VM or BO creation failed");
        return report;
    };
    let maps: Vec<BindOp> = (0..OPS)
        .map(|i| BindOp::map(&bo, i * K4, BASE + i * 2 * K4, K4))
        .collect();
    let unmaps: Vec<BindOp> = (0..OPS)
        .map(|i| BindOp::unmap(BASE + i * 2 * K4, K4))
        .collect();
    let (mut map_ns, mut unmap_ns) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let ok = vm.bind(None, &maps, &[]).is_ok();
        map_ns.push(t.elapsed().as_nanos() as u64);
        let t = Instant::now();
        let ok = ok && vm.bind(None, &unmaps, &[]).is_ok();
        unmap_ns.push(t.elapsed().as_nanos() as u64);
        if !ok {
            report.push("error", "array bind failed");
            return report;
        }
    }
    let per_s = |ns: u64| (OPS as f64 * 1e9 / ns.max(1) as f64).round();
    report.push("array_map_4k_ops_per_s", per_s(median_ns(&mut map_ns)));
    report.push("array_unmap_4k_ops_per_s", per_s(median_ns(&mut unmap_ns)));
    let mut pair = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let _ = vm.bind(None, &[BindOp::map(&bo, 0, BASE, K4)], &[]);
        let _ = vm.bind(None, &[BindOp::unmap(BASE, K4)], &[]);
        pair.push(t.elapsed().as_nanos() as u64);
    }
    report.push("sync_bind_4k_us", median_ns(&mut pair) as f64 / 1000.0);
    report.push(
        "async_bind_independent_queue_blocked",
        independent_blocked(&dev),
    );
    report
}

/// Queue 1 waits on a gate; a bind on queue 2 writing another entry of the same leaf table
/// page (IGT's bind-execqueues-independent layout) must still complete.
fn independent_blocked(dev: &Device) -> bool {
    let run = || -> Option<bool> {
        let vm = dev.vm_create(VmFlags::empty()).ok()?;
        let bo = dev.bo_create(2 * K4, Placement::Vram, None).ok()?;
        let (a, b) = (BASE, BASE + 2 * K4);
        vm.bind(
            None,
            &[BindOp::map(&bo, 0, a, K4), BindOp::map(&bo, 0, b, K4)],
            &[],
        )
        .ok()?;
        let q2 = dev.bind_queue_create(&vm).ok()?;
        let gate = Fence::new(FenceContext::alloc(), 1);
        let s = Syncobj::new();
        s.replace_fence(Some(gate.clone()));
        let blocked = vm
            .bind(
                None,
                &[BindOp::map(&bo, K4, a + K4, K4)],
                &[BindSync::Wait(s, None)],
            )
            .ok()?;
        let out = Syncobj::new();
        let free = vm
            .bind(
                Some(&q2),
                &[BindOp::map(&bo, K4, b + K4, K4)],
                &[BindSync::Signal(out, None)],
            )
            .ok()?;
        let done = matches!(free.wait(Some(Duration::from_secs(10))), Ok(Ok(())));
        let still_blocked = !blocked.is_signalled();
        let _ = gate.signal();
        let _ = blocked.wait(Some(Duration::from_secs(10)));
        Some(!(done && still_blocked))
    };
    run().unwrap_or(true)
}
