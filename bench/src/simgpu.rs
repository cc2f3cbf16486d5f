//! `gpu-bench simgpu`: command-processor throughput and MMU translation cost of the device
//! model.
//!
//! Owns: the simgpu benchmark group. Must not: assert on timings; it only reports them.

use crate::report::{mean_ns, Report};
use simgpu::mmu::{Access, Memories, Mmu, PtRoot};
use simgpu::regs;
use simgpu::testkit::{enc, Rig, PAGE};
use simgpu::{HeapMemory, Location, ENGINE_COPY};
use std::hint::black_box;
use std::time::Instant;

const VA: u64 = 0x100_0000;
/// Commands per submission (fits the 64 KiB test ring with room to spare).
const CHUNK: u32 = 2000;
const ROUNDS: u32 = 50;

/// Commands per second for `cmd` submitted in chunks, in step mode or thread mode.
fn throughput(cmd: &[u32], threaded: bool) -> f64 {
    let mut rig = Rig::new(8 << 20);
    rig.context(0, false);
    rig.map_new_sys(0, VA, 64 * PAGE);
    rig.queue(ENGINE_COPY, 0, 0);
    let chunk: Vec<u32> = (0..CHUNK).flat_map(|_| cmd.iter().copied()).collect();
    if threaded {
        rig.gpu.start();
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        rig.submit(ENGINE_COPY, 0, &chunk);
        if threaded {
            while rig.qreg(ENGINE_COPY, 0, regs::Q_HEAD) != rig.qreg(ENGINE_COPY, 0, regs::Q_TAIL) {
                std::thread::yield_now();
            }
        } else {
            rig.gpu.run_until_idle();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    rig.gpu.stop();
    f64::from(CHUNK * ROUNDS) / secs
}

/// Bytes per second of 1 MiB COPY commands.
fn copy_bandwidth() -> f64 {
    let mut rig = Rig::new(8 << 20);
    rig.context(0, false);
    let len = 1u64 << 20;
    rig.map_new_sys(0, VA, 2 * len);
    rig.queue(ENGINE_COPY, 0, 0);
    let start = Instant::now();
    for _ in 0..20 {
        rig.submit(ENGINE_COPY, 0, &enc::copy(VA, VA + len, len));
        rig.gpu.run_until_idle();
    }
    (20 * len) as f64 / start.elapsed().as_secs_f64()
}

/// Nanoseconds per translation: TLB hit, and TLB miss (a full 4-level walk).
fn translation_cost() -> (f64, f64) {
    let mut rig = Rig::new(1 << 20);
    let root = rig.context(0, false);
    rig.map_new_sys(0, VA, 2 * PAGE);
    let vram = HeapMemory::new(4096);
    let mems = Memories {
        sys: &*rig.sys,
        vram: &vram,
    };
    let r = PtRoot {
        addr: root,
        location: Location::System,
    };
    let mut hit = Mmu::new(16);
    let hit_ns = mean_ns(1_000_000, || {
        black_box(
            hit.translate(mems, 0, r, black_box(VA + 8), Access::Read)
                .ok(),
        );
    });
    // A one-entry TLB and two alternating pages: every lookup walks.
    let mut miss = Mmu::new(1);
    let mut flip = 0u64;
    let miss_ns = mean_ns(1_000_000, || {
        flip ^= PAGE;
        black_box(
            miss.translate(mems, 0, r, black_box(VA + flip), Access::Read)
                .ok(),
        );
    });
    (hit_ns, miss_ns)
}

/// The group.
pub fn simgpu() -> Report {
    let mut r = Report::new("simgpu");
    r.push("noop_cmds_per_s_step", throughput(&enc::noop(), false));
    r.push(
        "store_dword_cmds_per_s_step",
        throughput(&enc::store_dword(VA, 1), false),
    );
    r.push(
        "store_dword_cmds_per_s_thread",
        throughput(&enc::store_dword(VA, 1), true),
    );
    r.push("copy_1mib_bytes_per_s", copy_bandwidth());
    let (hit, miss) = translation_cost();
    r.push("mmu_tlb_hit_ns", hit);
    r.push("mmu_tlb_miss_walk_ns", miss);
    r
}
