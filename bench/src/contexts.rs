//! The `exec` group's hardware-context keys: what it costs when VMs outnumber the device's
//! contexts and the scheduler takes contexts from idle VMs (`gpud/src/exec/contexts.rs`).
//!
//! Owns: `ctx_steal_ns` (two VMs alternating single jobs on one context — every job steals it
//! and waits for the full flush — minus the same on two contexts) and the job throughput of
//! 64 and of 8 VMs on 8 contexts. Must not: assert on timings; it only reports them.

use crate::report::{median_ns, Report};
use gpud::bind::{BindOp, Vm, VmFlags};
use gpud::device::{Device, DeviceConfig};
use gpud::exec::{ExecQueue, Job};
use gpud::hw::cmd::CommandStream;
use gpud::hw::Engine;
use gpud::mem::bo::{Bo, Placement};
use gpud::sync::Fence;
use gpud::types::GpuVa;
use std::sync::Arc;
use std::time::{Duration, Instant};

const VA: u64 = 0x10_0000_0000;
const PATIENCE: Duration = Duration::from_secs(30);

/// A VM with a system BO mapped at `VA` and a copy queue.
struct BenchVm {
    _vm: Arc<Vm>,
    _bo: Arc<Bo>,
    q: ExecQueue,
}

/// A device with `vm_contexts` contexts for VMs (plus the kernel's) and `vms` VMs.
fn setup(vm_contexts: u32, vms: usize) -> Option<(Device, Vec<BenchVm>)> {
    let dev = Device::new(DeviceConfig {
        contexts: vm_contexts + 1,
        ..DeviceConfig::default()
    })
    .ok()?;
    let mut out = Vec::new();
    for _ in 0..vms {
        let vm = dev.vm_create(VmFlags::empty()).ok()?;
        let bo = dev.bo_create(4096, Placement::System, None).ok()?;
        vm.bind(None, &[BindOp::map(&bo, 0, VA, 4096)], &[]).ok()?;
        let q = dev.exec_queue_create(&vm, Engine::Copy).ok()?;
        out.push(BenchVm {
            _vm: vm,
            _bo: bo,
            q,
        });
    }
    Some((dev, out))
}

fn store_job(v: u64) -> Job {
    let mut c = CommandStream::new();
    c.store_qword(GpuVa(VA), v);
    Job::commands(c.dwords().to_vec())
}

fn wait(f: &Fence) -> bool {
    matches!(f.wait(Some(PATIENCE)), Ok(Ok(())))
}

/// Median time of one job submitted and waited for, alternating between two VMs on
/// `contexts` contexts.
fn alternating_ns(contexts: u32) -> Option<(f64, u64)> {
    let (dev, vms) = setup(contexts, 2)?;
    let mut samples = Vec::new();
    for i in 0..2_000u64 {
        let vm = vms.get((i % 2) as usize)?;
        let t = Instant::now();
        let f = vm.q.submit(store_job(i)).ok()?;
        if !wait(&f) {
            return None;
        }
        samples.push(t.elapsed().as_nanos() as u64);
    }
    Some((median_ns(&mut samples) as f64, dev.context_stats().steals))
}

/// Jobs per second: rounds of one job on every one of `vms` VMs at once, on 8 contexts.
fn throughput(vms: usize) -> Option<(f64, u64)> {
    const JOBS: usize = 8_192;
    let (dev, all) = setup(8, vms)?;
    let start = Instant::now();
    let mut last = Vec::new();
    for round in 0..JOBS / vms {
        last.clear();
        for vm in &all {
            last.push(vm.q.submit(store_job(round as u64)).ok()?);
        }
        // Keep every VM's queue short: the next round waits for this one.
        if !last.iter().all(|f| wait(f)) {
            return None;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Some((JOBS as f64 / secs, dev.context_stats().steals))
}

/// Adds the context keys to `r`.
pub fn push_keys(r: &mut Report) {
    match (alternating_ns(1), alternating_ns(2)) {
        (Some((stolen, steals)), Some((kept, _))) => {
            r.push("ctx_steal_ns", (stolen - kept).round());
            r.push("alternating_job_ns_1_ctx", stolen.round());
            r.push("alternating_job_ns_2_ctx", kept.round());
            r.push("alternating_steals_1_ctx", steals as f64);
        }
        _ => {
            r.push("ctx_error", "alternating-VM run failed");
        }
    }
    for (vms, key) in [
        (8, "jobs_per_s_8_vms_8_ctx"),
        (64, "jobs_per_s_64_vms_8_ctx"),
    ] {
        match throughput(vms) {
            Some((per_s, steals)) => {
                r.push(key, per_s.round());
                r.push(&format!("{key}_steals"), steals as f64);
            }
            None => {
                r.push("ctx_error", "throughput run failed");
            }
        }
    }
}
