//! `gpu-bench svm`: SVM (CPU-address mirrors) at the driver level — gpud's device on simgpu in
//! thread mode, the scripted `FakeMm` as the client's address space (the host's pager cannot
//! migrate yet, see `docs/svm.md`), jobs on a compute queue of a fault-mode VM.
//!
//! Owns: the svm benchmark group: first-fault latency of 4 KiB / 64 KiB / 2 MiB ranges in
//! system memory and with migration to VRAM, migration bandwidth both ways, the CPU's
//! fault-back latency, PREFETCH of 64 MiB. Must not: assert on timings; it only reports them.

use crate::report::{median_ns, Report};
use gpud::bind::migrate::SvmPlacement;
use gpud::bind::{BindOp, Region, Vm, VmFlags};
use gpud::device::{Device, DeviceConfig};
use gpud::exec::{ExecQueue, Job};
use gpud::hw::cmd::CommandStream;
use gpud::hw::Engine;
use gpud::svm::fake::FakeMm;
use gpud::types::GpuVa;
use std::sync::Arc;
use std::time::{Duration, Instant};

const OWNER: u64 = 1;
const MIB: u64 = 1 << 20;
/// Where the benchmark's CPU memory lives (2 MiB aligned); the mirror covers 1 GiB there.
const CPU: u64 = 0x7f00_0000_0000;
const MIRROR: u64 = 1 << 30;
const SAMPLES: u64 = 24;
const PATIENCE: Duration = Duration::from_secs(60);

struct Bench {
    q: ExecQueue,
    vm: Arc<Vm>,
    mm: Arc<FakeMm>,
    /// Dropped last: the queue and the VM go first.
    _dev: Device,
}

impl Bench {
    fn new(migrate: bool) -> Self {
        let dev = Device::new(DeviceConfig {
            vram_size: 256 * MIB,
            sys_size: 512 * MIB,
            ..DeviceConfig::default()
        })
        .expect("device");
        let mm = FakeMm::new(dev.dma().clone());
        mm.allow_migration(migrate);
        dev.set_client_mm(OWNER, mm.clone());
        let vm = dev
            .vm_create_for(VmFlags::LR_MODE | VmFlags::FAULT_MODE, Some(OWNER))
            .expect("vm");
        let q = dev.exec_queue_create(&vm, Engine::Compute).expect("queue");
        vm.bind(None, &[BindOp::mirror(CPU, MIRROR)], &[])
            .expect("mirror");
        Self {
            q,
            vm,
            mm,
            _dev: dev,
        }
    }

    /// A GPU store at `va`, waited for: nanoseconds from submission to completion.
    fn store(&self, va: u64, v: u64) -> u64 {
        let cmds = CommandStream::new()
            .store_qword(GpuVa(va), v)
            .dwords()
            .to_vec();
        let t = Instant::now();
        let fence = self.q.submit(Job::commands(cmds)).expect("submit");
        match fence.wait(Some(PATIENCE)) {
            Ok(Ok(())) => {}
            other => panic!("svm bench: store at {va:#x} did not complete: {other:?}"),
        }
        t.elapsed().as_nanos() as u64
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn mib_per_s(bytes: u64, ns: u64) -> f64 {
    bytes as f64 / MIB as f64 / (ns.max(1) as f64 / 1e9)
}

/// Median first-fault latency of `size`-byte ranges (a CPU mapping of exactly `size`, so the
/// range is the mapping), and of a store to an already mapped range.
fn first_fault(b: &Bench, size: u64) -> (u64, u64) {
    let (mut first, mut warm) = (Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        let at = CPU + i * 2 * MIB;
        b.mm.map(at, size, true);
        first.push(b.store(at + 8, i));
        warm.push(b.store(at + 16, i));
        b.mm.unmap(at, size);
    }
    (median_ns(&mut first), median_ns(&mut warm))
}

/// Median time of a CPU read that faults a migrated 2 MiB range back (zap, copy, supply).
fn fault_back(b: &Bench) -> u64 {
    let mut samples = Vec::new();
    for i in 0..SAMPLES {
        let at = CPU + i * 2 * MIB;
        b.mm.map(at, 2 * MIB, true);
        b.store(at + 8, i);
        let t = Instant::now();
        let v = b.mm.read_u64(at + 8).expect("CPU read");
        samples.push(t.elapsed().as_nanos() as u64);
        assert_eq!(v, i, "svm bench: the data came back");
        b.mm.unmap(at, 2 * MIB);
    }
    median_ns(&mut samples)
}

/// PREFETCH of `len` bytes into `region`: nanoseconds until the bind's fence signalled.
fn prefetch(b: &Bench, len: u64, region: Region) -> u64 {
    let at = CPU + 256 * MIB;
    b.mm.map(at, len, true);
    let op = BindOp::prefetch_to(at, len, region);
    let t = Instant::now();
    b.vm.bind(None, &[op], &[]).expect("prefetch");
    let ns = t.elapsed().as_nanos() as u64;
    b.mm.unmap(at, len);
    ns
}

pub fn svm() -> Report {
    let mut r = Report::new("svm");
    let sys = Bench::new(false);
    for (name, size) in [("4k", 4096), ("64k", 64 << 10), ("2m", 2 * MIB)] {
        let (first, warm) = first_fault(&sys, size);
        r.push(&format!("first_fault_{name}_sys_us"), us(first));
        if size == 4096 {
            r.push("store_mapped_us", us(warm));
        }
    }
    drop(sys);
    let vram = Bench::new(true);
    let mut fault_2m_vram = 0;
    for (name, size) in [("4k", 4096), ("64k", 64 << 10), ("2m", 2 * MIB)] {
        let (first, _) = first_fault(&vram, size);
        r.push(&format!("first_fault_{name}_vram_us"), us(first));
        fault_2m_vram = first;
    }
    r.push(
        "migrate_to_vram_2m_mib_per_s",
        mib_per_s(2 * MIB, fault_2m_vram),
    );
    let back = fault_back(&vram);
    r.push("cpu_fault_back_2m_us", us(back));
    r.push("migrate_to_ram_2m_mib_per_s", mib_per_s(2 * MIB, back));
    let pf = prefetch(&vram, 64 * MIB, Region::Vram);
    r.push("prefetch_64m_vram_us", us(pf));
    r.push("prefetch_64m_vram_mib_per_s", mib_per_s(64 * MIB, pf));
    vram.vm.set_svm_placement(SvmPlacement::System);
    let pf = prefetch(&vram, 64 * MIB, Region::System);
    r.push("prefetch_64m_sys_us", us(pf));
    drop(vram);
    r
}
