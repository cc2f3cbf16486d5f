//! The `pagetable` group: page-table manager and VRAM allocator costs.
//!
//! `map_2m_ns`: CPU time of prepare + commit of one aligned, contiguous 2 MiB bind (upper
//! tables already present); `entries_written_2m`: leaf entries that bind wrote (1);
//! `map_1g_4k_pages_ms`: one bind of 1 GiB backed by 262,144 non-contiguous 4 KiB pages;
//! `invalidations_per_batch`: TLB invalidations issued for a batch of three commits that each
//! remap a valid entry, on a running simgpu (1); `vram_alloc_free_ns`: one 64 KiB VRAM allocation plus its free.

use crate::report::{mean_ns, median_ns, Report};
use gpud::hw::pte::{LeafFlags, MemLocation};
use gpud::hw::sim::dma::HeapDma;
use gpud::hw::sim::platform::HostSim;
use gpud::hw::{DmaMemory, HwCtx, SystemClock};
use gpud::mem::vram::{AllocRequest, VramAllocator};
use gpud::types::{GpuVa, PhysAddr};
use gpud::vm::pagetable::memory::SysPtMemory;
use gpud::vm::pagetable::{MapTarget, PageTable, PhysSeg, PtConfig, PtOp, TlbBatch};
use simgpu::HeapMemory;
use std::sync::Arc;
use std::time::Instant;

const MIB2: u64 = 2 << 20;

fn table(sys_bytes: u64) -> PageTable {
    let dma: Arc<dyn DmaMemory> = Arc::new(HeapDma::new(Arc::new(HeapMemory::new(sys_bytes))));
    match PageTable::new(Arc::new(SysPtMemory::new(dma)), PtConfig::default()) {
        Ok(pt) => pt,
        Err(e) => panic!("page table: {e}"),
    }
}

fn map(va: u64, segments: Vec<PhysSeg>, len: u64) -> PtOp {
    PtOp::Map {
        va: GpuVa(va),
        len,
        target: MapTarget::Pages {
            location: MemLocation::Vram,
            flags: LeafFlags::default(),
            segments,
        },
    }
}

fn run(pt: &mut PageTable, ops: &[PtOp]) -> gpud::vm::pagetable::PtCommit {
    match pt.prepare(ops) {
        Ok(u) => u.commit(),
        Err(e) => panic!("bind: {e}"),
    }
}

fn map_2m(report: &mut Report) {
    let mut pt = table(64 << 20);
    let seg = |pa| {
        vec![PhysSeg {
            addr: PhysAddr(pa),
            len: MIB2,
        }]
    };
    let _ = run(&mut pt, &[map(0, seg(0), MIB2)]);
    let mut samples = Vec::new();
    let mut entries = 0;
    for i in 0..2000u64 {
        let before = pt.stats().leaf_writes;
        let start = Instant::now();
        let _ = run(&mut pt, &[map(MIB2, seg((i % 64) * MIB2), MIB2)]);
        samples.push(start.elapsed().as_nanos() as u64);
        entries = pt.stats().leaf_writes - before;
        let c = run(
            &mut pt,
            &[PtOp::Unmap {
                va: GpuVa(MIB2),
                len: MIB2,
            }],
        );
        pt.retire(c.freed, None, Vec::new());
    }
    report.push("map_2m_ns", median_ns(&mut samples));
    report.push("entries_written_2m", entries);
}

fn map_1g_4k(report: &mut Report) {
    let pages = (1u64 << 30) / 4096;
    let mut samples = Vec::new();
    for _ in 0..3 {
        let mut pt = table(8 << 20);
        let segs: Vec<PhysSeg> = (0..pages)
            .map(|i| PhysSeg {
                addr: PhysAddr((2 * i + 1) * 4096),
                len: 4096,
            })
            .collect();
        let op = map(1 << 30, segs, 1 << 30);
        let start = Instant::now();
        let _ = run(&mut pt, &[op]);
        samples.push(start.elapsed().as_nanos() as u64);
    }
    report.push("map_1g_4k_pages_ms", median_ns(&mut samples) as f64 / 1e6);
}

fn invalidations(report: &mut Report) {
    let h = match HostSim::start(
        simgpu::Config::default(),
        8 << 20,
        Arc::new(SystemClock::new()),
    ) {
        Ok(h) => h,
        Err(e) => panic!("simgpu: {e}"),
    };
    let dma: Arc<dyn DmaMemory> = h.dma.clone();
    let mut pt = match PageTable::new(Arc::new(SysPtMemory::new(dma)), PtConfig::default()) {
        Ok(pt) => pt,
        Err(e) => panic!("page table: {e}"),
    };
    let ctx = HwCtx(1);
    let segs = |page: u64| {
        vec![PhysSeg {
            addr: PhysAddr(page << 12),
            len: 4096,
        }]
    };
    // Filling empty slots needs no invalidation; the batch remaps three valid entries.
    for i in 0..3u64 {
        let _ = run(&mut pt, &[map(i << 21, segs(i), 4096)]);
    }
    let mut batch = TlbBatch::new();
    for i in 0..3u64 {
        batch.add(ctx, run(&mut pt, &[map(i << 21, segs(i + 8), 4096)]));
    }
    if let Err(e) = batch.flush(&h.hw, ctx, &mut pt) {
        panic!("invalidate: {e}");
    }
    report.push("invalidations_per_batch", batch.issued());
}

/// Runs the group.
pub fn pagetable() -> Report {
    let mut report = Report::new("pagetable");
    map_2m(&mut report);
    map_1g_4k(&mut report);
    invalidations(&mut report);
    let mut vram = VramAllocator::new(1 << 30);
    let ns = mean_ns(100_000, || {
        if let Ok(b) = vram.alloc(AllocRequest::scattered(64 << 10)) {
            let _ = vram.free(&b);
        }
    });
    report.push("vram_alloc_free_ns", ns);
    report
}
