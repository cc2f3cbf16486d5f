//! Page-table manager tests: entries are read back through simgpu's own MMU walker (its
//! decoder, not the driver's), large pages are proved by walk counters, and the TLB tests run
//! real commands on a simulated device.

use super::memory::{FailingPtMemory, PtMemory, SysPtMemory};
use super::*;
use crate::hw::cmd::CommandStream;
use crate::hw::pte::{LeafFlags, MemLocation};
use crate::hw::regs::IrqCauses;
use crate::hw::sim::dma::HeapDma;
use crate::hw::sim::platform::HostSim;
use crate::hw::{wait_until, DmaMemory, Engine, FaultMode, HwCtx, HwQueue, SystemClock};
use crate::mem::vram::VramAllocator;
use crate::types::PAGE_SIZE;
use parking_lot::Mutex;
use simgpu::mmu::{Access, FaultReason, Memories, Mmu as Walker, PtRoot as DevRoot};
use simgpu::{HeapMemory, Location, PhysMemory};
use std::time::Duration;

pub(super) const RW: LeafFlags = LeafFlags {
    writable: true,
    cache: crate::hw::pte::CacheMode::WriteBack,
};
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

/// Heap system memory, DMA over it, and VRAM, as the walker sees them.
pub(super) struct Rig {
    pub sys: Arc<HeapMemory>,
    pub vram: Arc<HeapMemory>,
    pub dma: Arc<HeapDma>,
}

impl Rig {
    pub fn new() -> Self {
        let sys = Arc::new(HeapMemory::new(64 << 20));
        let vram = Arc::new(HeapMemory::new(16 << 20));
        let dma = Arc::new(HeapDma::new(sys.clone()));
        Self { sys, vram, dma }
    }

    pub fn sys_mem(&self) -> Arc<dyn PtMemory> {
        Arc::new(SysPtMemory::new(self.dma.clone()))
    }

    pub fn pt(&self, scratch: bool) -> PageTable {
        let cfg = PtConfig {
            scratch,
            ..PtConfig::default()
        };
        PageTable::new(self.sys_mem(), cfg).unwrap()
    }

    /// A fresh walker (empty TLB, zero counters) translating `va` through `pt`.
    pub fn walk(
        &self,
        pt: &PageTable,
        va: u64,
        access: Access,
    ) -> (Result<simgpu::mmu::Translation, simgpu::mmu::MmuFault>, u64) {
        let mut w = Walker::new(64);
        let r = self.translate(&mut w, pt, va, access);
        (r, w.counters.pte_reads)
    }

    pub fn translate(
        &self,
        w: &mut Walker,
        pt: &PageTable,
        va: u64,
        access: Access,
    ) -> Result<simgpu::mmu::Translation, simgpu::mmu::MmuFault> {
        let root = pt.root();
        let root = DevRoot {
            addr: root.addr.get(),
            location: match root.location {
                MemLocation::System => Location::System,
                MemLocation::Vram => Location::Vram,
            },
        };
        let mems = Memories {
            sys: &*self.sys,
            vram: &*self.vram,
        };
        w.translate(mems, 0, root, va, access)
    }
}

pub(super) fn map(va: u64, pa: u64, len: u64, flags: LeafFlags) -> PtOp {
    PtOp::Map {
        va: GpuVa(va),
        len,
        target: MapTarget::Pages {
            location: MemLocation::Vram,
            flags,
            segments: vec![PhysSeg {
                addr: PhysAddr(pa),
                len,
            }],
        },
    }
}

pub(super) fn unmap(va: u64, len: u64) -> PtOp {
    PtOp::Unmap { va: GpuVa(va), len }
}

pub(super) fn run(pt: &mut PageTable, ops: &[PtOp]) -> PtCommit {
    let commit = pt.prepare(ops).unwrap().commit();
    assert_eq!(pt.stats().pool_misses, 0);
    assert_eq!(pt.stats().write_errors, 0);
    commit
}

fn phys(r: &Rig, pt: &PageTable, va: u64) -> Option<u64> {
    r.walk(pt, va, Access::Read).0.ok().map(|t| t.phys)
}

#[test]
fn aligned_contiguous_2m_bind_writes_exactly_one_large_entry() {
    let r = Rig::new();
    let mut pt = r.pt(false);
    // Create the upper tables first so only the bind itself is counted.
    let _ = run(&mut pt, &[map(4 * MIB2, 0, PAGE_SIZE, RW)]);
    let before = pt.stats();
    let _ = run(&mut pt, &[map(2 * MIB2, 6 * MIB2, MIB2, RW)]);
    let after = pt.stats();
    assert_eq!(after.leaf_writes - before.leaf_writes, 1);
    // The device walks three levels (3, 2, 1) and caches one 2 MiB translation.
    let mut w = Walker::new(64);
    let t = r
        .translate(&mut w, &pt, 2 * MIB2 + 0x1234, Access::Read)
        .unwrap();
    assert_eq!(t.phys, 6 * MIB2 + 0x1234);
    assert_eq!(w.counters.pte_reads, 3);
    let t = r
        .translate(&mut w, &pt, 3 * MIB2 - 8, Access::Read)
        .unwrap();
    assert_eq!(t.phys, 7 * MIB2 - 8);
    assert_eq!((w.counters.tlb_hits, w.counters.pte_reads), (1, 3));
}

#[test]
fn a_1g_bind_is_one_level_2_entry_and_64k_runs_get_the_hint() {
    let r = Rig::new();
    let mut pt = r.pt(false);
    let _ = run(&mut pt, &[map(GIB, 3 * GIB, GIB, RW)]);
    let (t, reads) = r.walk(&pt, GIB + 12345 * PAGE_SIZE, Access::Read);
    assert_eq!((t.unwrap().phys, reads), (3 * GIB + 12345 * PAGE_SIZE, 2));
    // 64 KiB aligned and contiguous, but not 2 MiB: sixteen hinted 4K entries.
    let _ = run(&mut pt, &[map(0x1_0000, 0x5_0000, 0x2_0000, RW)]);
    let mut w = Walker::new(64);
    r.translate(&mut w, &pt, 0x1_0000, Access::Read).unwrap();
    let t = r.translate(&mut w, &pt, 0x1_F000, Access::Read).unwrap();
    assert_eq!((t.phys, w.counters.tlb_hits), (0x5_F000, 1));
    // A misaligned physical run gets plain 4K entries (no hit for the neighbour page).
    let _ = run(&mut pt, &[map(0x10_0000, 0x5_1000, 0x1_0000, RW)]);
    let mut w = Walker::new(64);
    r.translate(&mut w, &pt, 0x10_0000, Access::Read).unwrap();
    r.translate(&mut w, &pt, 0x10_1000, Access::Read).unwrap();
    assert_eq!(w.counters.tlb_hits, 0);
}

#[test]
fn splitting_a_2m_mapping_demotes_to_smaller_entries() {
    let r = Rig::new();
    let mut pt = r.pt(false);
    let _ = run(&mut pt, &[map(0, 8 * MIB2, MIB2, RW)]);
    let tables = pt.stats().tables;
    let failing = Arc::new(FailingPtMemory::new(r.sys_mem(), 0));
    // Unmapping needs no memory: the hidden level-0 table already exists.
    let mut pt2 = PageTable::new(failing.clone() as Arc<dyn PtMemory>, PtConfig::default());
    assert!(matches!(pt2, Err(PtError::NoMemory { .. })));
    failing.set_budget(4);
    pt2 = PageTable::new(failing.clone() as Arc<dyn PtMemory>, PtConfig::default());
    let mut pt2 = pt2.unwrap();
    let _ = run(&mut pt2, &[map(0, 8 * MIB2, MIB2, RW)]);
    let _ = run(&mut pt2, &[unmap(0x1_0000, 0x1_0000)]);
    let _ = run(&mut pt, &[unmap(0x1_0000, 0x1_0000)]);
    assert_eq!(pt.stats().tables, tables);
    for pt in [&pt, &pt2] {
        assert_eq!(phys(&r, pt, 0), Some(8 * MIB2));
        assert_eq!(phys(&r, pt, 0xF000), Some(8 * MIB2 + 0xF000));
        assert_eq!(phys(&r, pt, 0x1_0000), None);
        assert_eq!(phys(&r, pt, 0x1_F000), None);
        assert_eq!(phys(&r, pt, 0x2_0000), Some(8 * MIB2 + 0x2_0000));
        assert_eq!(phys(&r, pt, MIB2 - 8), Some(9 * MIB2 - 8));
        // Now a level-0 walk: four reads.
        assert_eq!(r.walk(pt, 0x2_0000, Access::Read).1, 4);
    }
    // Demoting 1 GiB splits into 2 MiB leaves around the hole.
    let _ = run(
        &mut pt,
        &[map(GIB, 2 * GIB, GIB, RW), unmap(GIB + 3 * MIB2, PAGE_SIZE)],
    );
    assert_eq!(phys(&r, &pt, GIB + 3 * MIB2), None);
    assert_eq!(
        phys(&r, &pt, GIB + 3 * MIB2 + PAGE_SIZE),
        Some(2 * GIB + 3 * MIB2 + PAGE_SIZE)
    );
    assert_eq!(r.walk(&pt, GIB + 5 * MIB2, Access::Read).1, 3);
    assert_eq!(phys(&r, &pt, 2 * GIB - 8), Some(3 * GIB - 8));
}

#[test]
fn shared_directory_pages_survive_unmapping_a_neighbour() {
    let r = Rig::new();
    let mut pt = r.pt(false);
    // Two 4K mappings sharing one level-0 table (and every table above it).
    let _ = run(&mut pt, &[map(0x40_0000, 0x10_0000, PAGE_SIZE, RW)]);
    let tables = pt.stats().tables;
    let _ = run(&mut pt, &[map(0x40_1000, 0x20_0000, PAGE_SIZE, RW)]);
    assert_eq!(pt.stats().tables, tables, "the neighbour reuses the tables");
    let c = run(&mut pt, &[unmap(0x40_0000, PAGE_SIZE)]);
    assert!(c.freed.is_empty());
    assert_eq!(phys(&r, &pt, 0x40_1000), Some(0x20_0000));
    assert_eq!(phys(&r, &pt, 0x40_0000), None);
    // The last user frees the level-0, 1 and 2 tables (not the root).
    let c = run(&mut pt, &[unmap(0x40_1000, PAGE_SIZE)]);
    assert_eq!(c.freed.len(), 3);
    assert_eq!(c.invalidate, Some((GpuVa(0x40_1000), PAGE_SIZE)));
    assert_eq!(phys(&r, &pt, 0x40_1000), None);
}

#[test]
fn null_read_only_and_scratch_entries() {
    let r = Rig::new();
    let mut pt = r.pt(false);
    let _ = run(
        &mut pt,
        &[
            PtOp::Map {
                va: GpuVa(0),
                len: MIB2 + PAGE_SIZE,
                target: MapTarget::Null,
            },
            map(4 * MIB2, 0x30_0000, PAGE_SIZE, LeafFlags::default()),
        ],
    );
    let (t, reads) = r.walk(&pt, 0x1000, Access::Write);
    assert!(t.unwrap().null);
    assert_eq!(reads, 3, "null 2 MiB leaf");
    assert!(r.walk(&pt, MIB2, Access::Read).0.unwrap().null);
    assert!(r.walk(&pt, 4 * MIB2, Access::Read).0.is_ok());
    let fault = r.walk(&pt, 4 * MIB2, Access::Write).0.unwrap_err();
    assert_eq!(fault.reason, FaultReason::ReadOnly);
    assert_eq!(
        r.walk(&pt, 8 * MIB2, Access::Read).0.unwrap_err().reason,
        FaultReason::NotPresent
    );

    let mut spt = r.pt(true);
    let scratch = r.walk(&spt, 0x7000_0000, Access::Write).0.unwrap().phys;
    assert_eq!(
        r.walk(&spt, 0x1234_5000, Access::Read).0.unwrap().phys,
        scratch
    );
    let _ = run(&mut spt, &[map(0x1234_5000, 0x40_0000, PAGE_SIZE, RW)]);
    assert_eq!(
        r.walk(&spt, 0x1234_5000, Access::Read).0.unwrap().phys,
        0x40_0000
    );
    assert_eq!(
        r.walk(&spt, 0x1234_6000, Access::Read).0.unwrap().phys,
        scratch
    );
    let c = run(&mut spt, &[unmap(0x1234_5000, PAGE_SIZE)]);
    assert_eq!(c.freed.len(), 3);
    assert_eq!(
        r.walk(&spt, 0x1234_5000, Access::Read).0.unwrap().phys,
        scratch
    );
}

#[test]
fn failed_prepare_changes_nothing_and_unmap_needs_no_memory() {
    let r = Rig::new();
    let failing = Arc::new(FailingPtMemory::new(r.sys_mem(), 1));
    let mut pt = PageTable::new(failing.clone() as Arc<dyn PtMemory>, PtConfig::default()).unwrap();
    let free = r.dma.free_bytes();
    // A fresh 4K map needs three tables; the budget is spent at the first.
    let err = pt.prepare(&[map(0, 0, PAGE_SIZE, RW)]).err();
    assert_eq!(err, Some(PtError::NoMemory { pages: 1 }));
    assert_eq!(
        r.dma.free_bytes(),
        free,
        "partially reserved pages were returned"
    );
    assert_eq!(phys(&r, &pt, 0), None);
    failing.set_budget(4);
    let u = pt.prepare(&[map(0, 0, 2 * MIB2, RW)]).unwrap();
    assert_eq!(u.reserved_tables(), 4);
    let _ = u.commit();
    failing.set_budget(0);
    let u = pt
        .prepare(&[unmap(0x3000, PAGE_SIZE), unmap(MIB2, 2 * MIB2)])
        .unwrap();
    assert_eq!(u.reserved_tables(), 0);
    let _ = u.commit();
    assert_eq!(phys(&r, &pt, 0x4000), Some(0x4000));
    assert_eq!(phys(&r, &pt, MIB2 + 0x4000), None);
    // A dropped update returns its reservation.
    failing.set_budget(10);
    let free = r.dma.free_bytes();
    let u = pt.prepare(&[map(5 * GIB, 0, PAGE_SIZE, RW)]).unwrap();
    assert_eq!(u.reserved_tables(), 2, "the level-2 table is shared");
    drop(u);
    assert_eq!(r.dma.free_bytes(), free);
}

/// A client asking for a sparse range of half the VA space gets a typed error as soon as
/// memory runs out, not after enumerating millions of tables.
#[test]
fn huge_request_fails_at_the_first_refused_page() {
    let r = Rig::new();
    let failing = Arc::new(FailingPtMemory::new(r.sys_mem(), 1));
    let mut pt = PageTable::new(failing.clone() as Arc<dyn PtMemory>, PtConfig::default()).unwrap();
    failing.set_budget(100);
    let free = r.dma.free_bytes();
    let op = PtOp::Map {
        va: GpuVa(0),
        len: 1 << 47,
        target: MapTarget::Null,
    };
    assert_eq!(
        pt.prepare(&[op]).err(),
        Some(PtError::NoMemory { pages: 101 })
    );
    assert_eq!(r.dma.free_bytes(), free);
}

#[test]
fn invalid_requests_are_typed_errors() {
    let r = Rig::new();
    let mut pt = r.pt(false);
    let e = |pt: &mut PageTable, op| pt.prepare(&[op]).err();
    assert_eq!(
        e(&mut pt, unmap(0x123, PAGE_SIZE)),
        Some(PtError::Misaligned {
            what: "VA",
            value: 0x123
        })
    );
    assert_eq!(
        e(&mut pt, unmap(0, 0)),
        Some(PtError::Misaligned {
            what: "length",
            value: 0
        })
    );
    assert_eq!(
        e(&mut pt, unmap(1 << 48, PAGE_SIZE)),
        Some(PtError::OutOfRange {
            va: 1 << 48,
            len: PAGE_SIZE
        })
    );
    assert_eq!(
        e(&mut pt, unmap(!0xFFF_u64, 1 << 20)),
        Some(PtError::OutOfRange {
            va: !0xFFF_u64,
            len: 1 << 20
        })
    );
    assert_eq!(
        e(
            &mut pt,
            PtOp::Map {
                va: GpuVa(0),
                len: 2 * PAGE_SIZE,
                target: MapTarget::Pages {
                    location: MemLocation::Vram,
                    flags: RW,
                    segments: vec![PhysSeg {
                        addr: PhysAddr(0),
                        len: PAGE_SIZE
                    }]
                }
            }
        ),
        Some(PtError::BackingLength {
            len: 2 * PAGE_SIZE,
            backing: PAGE_SIZE
        })
    );
    assert_eq!(
        e(&mut pt, map(0, 1 << 52, PAGE_SIZE, RW)),
        Some(PtError::PhysTooHigh { addr: 1 << 52 })
    );
}

/// New tables on zero-filled memory get only their non-zero entries written, and that is
/// correct even when the pages were dirty before: the DMA allocator zeroes what it hands out.
#[test]
fn new_tables_on_zeroed_pages_write_only_their_entries() {
    let r = Rig::new();
    let dirty: Vec<_> = (0..32).map(|_| r.dma.alloc(PAGE_SIZE).unwrap()).collect();
    for d in &dirty {
        r.sys
            .write(d.addr.get(), &[0xA5; PAGE_SIZE as usize])
            .unwrap();
    }
    for d in dirty {
        r.dma.free(d).unwrap();
    }
    let mut pt = r.pt(false);
    let before = pt.stats();
    let _ = run(&mut pt, &[map(0x40_0000_7000, 0x9000, PAGE_SIZE, RW)]);
    let after = pt.stats();
    // Three new tables: one pointer each from the level above, plus the leaf.
    assert_eq!(after.cpu_writes - before.cpu_writes, 4);
    assert_eq!(after.zero_skips - before.zero_skips, 3 * 512 - 3);
    assert_eq!(phys(&r, &pt, 0x40_0000_7008), Some(0x9008));
    for va in [
        0x40_0000_6000,
        0x40_0000_8000,
        0x40_0020_0000,
        0x40_4000_0000,
    ] {
        let (res, _) = r.walk(&pt, va, Access::Read);
        assert!(
            matches!(res, Err(f) if f.reason == FaultReason::NotPresent),
            "{va:#x}: {res:?}"
        );
    }
}

#[test]
fn vram_tables_are_walked_from_vram() {
    let r = Rig::new();
    // VRAM pages come back with old content: every entry of a VRAM table must be written.
    r.vram
        .write(0, &vec![0xA5; 64 * PAGE_SIZE as usize])
        .unwrap();
    let alloc = Arc::new(Mutex::new(VramAllocator::new(r.vram.size())));
    let aperture: Arc<dyn PhysMemory> = r.vram.clone();
    let mem = super::memory::for_device(r.vram.size(), alloc.clone(), aperture, r.dma.clone());
    assert_eq!(
        super::memory::for_device(0, alloc.clone(), r.vram.clone(), r.dma.clone()).location(),
        MemLocation::System
    );
    let mut pt = PageTable::new(mem, PtConfig::default()).unwrap();
    assert_eq!(pt.root().location, MemLocation::Vram);
    let _ = run(&mut pt, &[map(0x7000, 0x9000, PAGE_SIZE, RW)]);
    assert_eq!(phys(&r, &pt, 0x7008), Some(0x9008));
    assert_eq!(
        phys(&r, &pt, 0x8008),
        None,
        "a dirty VRAM table entry was left unwritten"
    );
    assert_eq!(pt.stats().zero_skips, 0);
    assert_eq!(alloc.lock().free_bytes(), r.vram.size() - 4 * PAGE_SIZE);
}

// --- On a running device -------------------------------------------------------------------

const T: Duration = Duration::from_secs(20);

fn store_and_wait(
    h: &HostSim,
    q: &mut dyn HwQueue,
    va: u64,
    value: u32,
    fence: (u64, PhysAddr),
    seq: u64,
) {
    let mut s = CommandStream::new();
    s.store_dword(GpuVa(va), value)
        .store_qword(GpuVa(fence.0), seq)
        .user_interrupt(seq as u32);
    q.submit(s.dwords()).unwrap();
    let dma = h.hw.dma();
    let irq = h.hw.interrupts();
    wait_until(
        &*irq,
        &SystemClock::new(),
        IrqCauses::COPY_USER,
        T,
        "fence",
        || dma.read_u64(fence.1).is_ok_and(|v| v >= seq),
    )
    .unwrap();
}

/// Remaps a VA from page A to page B; a store lands in A while the TLB is stale (the bug a
/// skipped invalidation causes, visible to the test) and in B once the batch invalidated.
#[test]
fn skipped_invalidation_is_caught_and_the_batch_invalidates_once() {
    let h = HostSim::start(
        simgpu::Config::default(),
        8 << 20,
        Arc::new(SystemClock::new()),
    )
    .unwrap();
    let dma: Arc<dyn DmaMemory> = h.dma.clone();
    let mut pt =
        PageTable::new(Arc::new(SysPtMemory::new(dma.clone())), PtConfig::default()).unwrap();
    let pages = dma.alloc(3 * PAGE_SIZE).unwrap().addr.get();
    let (a, b, f) = (pages, pages + PAGE_SIZE, pages + 2 * PAGE_SIZE);
    let sys = |pa: u64, va: u64| PtOp::Map {
        va: GpuVa(va),
        len: PAGE_SIZE,
        target: MapTarget::Pages {
            location: MemLocation::System,
            flags: RW,
            segments: vec![PhysSeg {
                addr: PhysAddr(pa),
                len: PAGE_SIZE,
            }],
        },
    };
    // Filling invalid entries needs no invalidation: the device never cached these VAs.
    let first = run(&mut pt, &[sys(a, 0x10_0000), sys(f, 0x20_0000)]);
    assert_eq!(first.invalidate, None);
    let ctx = HwCtx(1);
    h.hw.bind_context(ctx, pt.root(), FaultMode::Fatal).unwrap();
    let mut q = h.hw.create_queue(Engine::Copy, 0, ctx, 4096).unwrap();
    let fence = (0x20_0000, PhysAddr(f));
    store_and_wait(&h, &mut q, 0x10_0000, 1, fence, 1);
    assert_eq!(dma.read_u32(PhysAddr(a)).unwrap(), 1);

    // Remap without invalidating: the stale translation still sends the store to A.
    let c = run(&mut pt, &[unmap(0x10_0000, PAGE_SIZE), sys(b, 0x10_0000)]);
    store_and_wait(&h, &mut q, 0x10_0000, 2, fence, 2);
    assert_eq!(
        dma.read_u32(PhysAddr(a)).unwrap(),
        2,
        "stale TLB entry used"
    );
    assert_eq!(dma.read_u32(PhysAddr(b)).unwrap(), 0);

    // The real path: one batched invalidation for both ops, waited for.
    let mut batch = TlbBatch::new();
    batch.add(ctx, c);
    batch.add(ctx, run(&mut pt, &[sys(b, 0x10_0000)]));
    let inv = batch.flush(&h.hw, ctx, &mut pt).unwrap().unwrap();
    assert_eq!(batch.issued(), 1);
    h.hw.wait_invalidation(inv, T).unwrap();
    store_and_wait(&h, &mut q, 0x10_0000, 3, fence, 3);
    assert_eq!(dma.read_u32(PhysAddr(b)).unwrap(), 3);
    assert_eq!(dma.read_u32(PhysAddr(a)).unwrap(), 2);
}

/// Freed table pages wait for the invalidation and the job fences before returning.
#[test]
fn emptied_tables_are_freed_only_after_invalidation_and_fences() {
    let h = HostSim::start(
        simgpu::Config::default(),
        8 << 20,
        Arc::new(SystemClock::new()),
    )
    .unwrap();
    let dma: Arc<dyn DmaMemory> = h.dma.clone();
    let mut pt =
        PageTable::new(Arc::new(SysPtMemory::new(dma.clone())), PtConfig::default()).unwrap();
    let _ = run(&mut pt, &[map(0x40_0000, 0x10_0000, PAGE_SIZE, RW)]);
    let c = run(&mut pt, &[unmap(0x40_0000, PAGE_SIZE)]);
    assert_eq!(c.freed.len(), 3);
    let free = h.dma.free_bytes();
    let ctx = HwCtx(2);
    h.hw.bind_context(ctx, pt.root(), FaultMode::Fatal).unwrap();
    let job = crate::sync::Fence::new(crate::sync::FenceContext::alloc(), 1);
    let inv = h.hw.invalidate(ctx, c.invalidate).unwrap();
    pt.retire(c.freed, Some(inv), vec![job.clone()]);
    h.hw.wait_invalidation(inv, T).unwrap();
    assert_eq!(pt.reclaim(&h.hw), 0, "a job may still walk the tables");
    assert_eq!(h.dma.free_bytes(), free);
    job.signal().unwrap();
    assert_eq!(pt.reclaim(&h.hw), 3);
    // Emptied tables are all zero: kept for the next tables instead of freed.
    assert_eq!((pt.cached_pages(), h.dma.free_bytes()), (3, free));
    assert_eq!(pt.retired_pages(), 0);
}

/// Emptied table pages are reused for new tables (no allocation), whose zero entries are not
/// rewritten, and still translate exactly; a failed batch's pages are freed, never reused.
#[test]
fn emptied_table_pages_are_reused_and_failed_batches_free_theirs() {
    let r = Rig::new();
    let mut pt = r.pt(false);
    let reclaim = |pt: &mut PageTable, c: PtCommit, ok: bool| {
        let f = crate::sync::Fence::new(crate::sync::FenceContext::alloc(), 1);
        if !ok {
            f.set_error(crate::sync::FenceFault::Failed(1)).unwrap();
        }
        f.signal().unwrap();
        pt.retire(c.freed, None, vec![f]);
        pt.reclaim(&NoMmu)
    };
    let _ = run(&mut pt, &[map(0x40_0000_7000, 0x9000, PAGE_SIZE, RW)]);
    let c = run(&mut pt, &[unmap(0x40_0000_7000, PAGE_SIZE)]);
    assert_eq!(reclaim(&mut pt, c, true), 3);
    assert_eq!(pt.cached_pages(), 3);
    let free = r.dma.free_bytes();
    // A different place: the cached pages become its tables.
    let _ = run(&mut pt, &[map(0x80_4020_3000, 0xA000, PAGE_SIZE, RW)]);
    assert_eq!((pt.cached_pages(), r.dma.free_bytes()), (0, free));
    assert_eq!(phys(&r, &pt, 0x80_4020_3010), Some(0xA010));
    for va in [
        0x40_0000_7000,
        0x80_4020_2000,
        0x80_4020_4000,
        0x80_4040_3000,
    ] {
        assert_eq!(phys(&r, &pt, va), None, "{va:#x}");
    }
    let c = run(&mut pt, &[unmap(0x80_4020_3000, PAGE_SIZE)]);
    assert_eq!(reclaim(&mut pt, c, false), 3);
    assert_eq!(pt.cached_pages(), 0, "a failed batch's pages were cached");
    assert_eq!(r.dma.free_bytes(), free + 3 * PAGE_SIZE);
}

#[test]
fn only_changing_a_valid_entry_asks_for_an_invalidation() {
    let r = Rig::new();
    let mut pt = r.pt(false);
    let fresh = run(&mut pt, &[map(0x40_0000, 0x10_0000, 4 * PAGE_SIZE, RW)]);
    assert_eq!(
        fresh.invalidate, None,
        "previously invalid entries cannot be cached"
    );
    let over = run(&mut pt, &[map(0x40_1000, 0x20_0000, PAGE_SIZE, RW)]);
    assert_eq!(over.invalidate, Some((GpuVa(0x40_1000), PAGE_SIZE)));
    let gone = run(&mut pt, &[unmap(0x40_0000, 4 * PAGE_SIZE)]);
    assert_eq!(gone.invalidate, Some((GpuVa(0x40_0000), 4 * PAGE_SIZE)));
    let nothing = run(&mut pt, &[unmap(0x40_0000, 4 * PAGE_SIZE)]);
    assert_eq!(
        nothing.invalidate, None,
        "unmapping an empty range changes nothing"
    );
}

#[test]
fn replacing_scratch_entries_asks_for_an_invalidation() {
    // Scratch translations are valid and may be cached, so a bind over them must flush.
    let r = Rig::new();
    let mut pt = r.pt(true);
    let c = run(&mut pt, &[map(0x40_0000, 0x10_0000, PAGE_SIZE, RW)]);
    assert_eq!(c.invalidate, Some((GpuVa(0x40_0000), PAGE_SIZE)));
}

/// An MMU for `reclaim` of batches that needed no invalidation (never called).
struct NoMmu;

impl crate::hw::Mmu for NoMmu {
    fn bind_context_as(
        &self,
        _: HwCtx,
        _: crate::hw::PtRoot,
        _: FaultMode,
        _: u16,
    ) -> Result<(), crate::hw::HwError> {
        unreachable!("not used by reclaim")
    }
    fn unbind_context(&self, _: HwCtx) -> Result<(), crate::hw::HwError> {
        unreachable!("not used by reclaim")
    }
    fn context_status(&self, _: HwCtx) -> Result<crate::hw::regs::CtxStatus, crate::hw::HwError> {
        unreachable!("not used by reclaim")
    }
    fn clear_context_error(&self, _: HwCtx) -> Result<(), crate::hw::HwError> {
        unreachable!("not used by reclaim")
    }
    fn invalidate(
        &self,
        _: HwCtx,
        _: Option<(GpuVa, u64)>,
    ) -> Result<TlbInvalidation, crate::hw::HwError> {
        unreachable!("not used by reclaim")
    }
    fn invalidation_done(&self, _: TlbInvalidation) -> bool {
        unreachable!("no invalidation was retired")
    }
    fn wait_invalidation(&self, _: TlbInvalidation, _: Duration) -> Result<(), crate::hw::HwError> {
        unreachable!("not used by reclaim")
    }
}

/// `PtCommit::linked` names the tables a commit makes reachable (the cross-queue ordering
/// rule of bind jobs rests on it): new tables, a table a 2 MiB leaf hid once the leaf is
/// demoted, and nothing when only entries of reachable tables change.
#[test]
fn commit_names_the_tables_it_links() {
    let r = Rig::new();
    let mut pt = r.pt(false);
    let c = run(&mut pt, &[map(0x1a_0000, 0, PAGE_SIZE, RW)]);
    assert_eq!(c.linked.len(), 3, "levels 2, 1 and 0 are new");
    let c = run(&mut pt, &[map(0x1a_1000, PAGE_SIZE, PAGE_SIZE, RW)]);
    assert!(c.linked.is_empty(), "an entry of an existing leaf table");
    let c = run(&mut pt, &[map(MIB2, 0, PAGE_SIZE, RW)]);
    assert_eq!(
        c.linked.len(),
        1,
        "a new leaf table in an existing directory"
    );
    let c = run(&mut pt, &[map(4 * MIB2, 0, MIB2, RW)]);
    assert_eq!(c.linked.len(), 0, "a 2 MiB leaf hides its new table");
    let c = run(&mut pt, &[unmap(4 * MIB2, PAGE_SIZE)]);
    assert_eq!(
        c.linked.len(),
        1,
        "demoting the leaf writes out the hidden table"
    );
}
