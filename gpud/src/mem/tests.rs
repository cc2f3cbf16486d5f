//! Memory tests on a step-mode simgpu: a fake copy engine runs real copy jobs in the kernel
//! context (whose linear map the page-table manager built), BOs are evicted and validated
//! through it, and page-table updates go through both the CPU and the copy engine.

use super::bo::{Backing, Bo, Placement, Pools, SharedWindows};
use super::copy::{
    commit_update, CopyEngine, CopyError, KernelMap, PtUpdatePath, KERNEL_SYS_BASE,
    KERNEL_VRAM_BASE,
};
use super::manager::{EvictReport, MemError, MemoryManager};
use super::shm::{MapBudget, ShmPool};
use super::vram::VramAllocator;
use crate::hw::cmd::CommandStream;
use crate::hw::pte::{LeafFlags, MemLocation};
use crate::hw::sim::dma::HeapDma;
use crate::hw::sim::irq::IrqLatch;
use crate::hw::sim::platform::SimMmio;
use crate::hw::sim::queue::SimQueue;
use crate::hw::sim::SimHw;
use crate::hw::{DmaMemory, DmaRegion, Engine, FaultMode, HwCtx, HwQueue, Mmio, Mmu, SystemClock};
use crate::sync::{Fence, FenceContext};
use crate::types::{GpuVa, PhysAddr, PAGE_SIZE};
use crate::vm::pagetable::memory::SysPtMemory;
use crate::vm::pagetable::{PageTable, PtConfig, PtOp};
use crate::vm::vm_bo::{GpuBo, VmBo};
use parking_lot::Mutex;
use simgpu::mmu::{Access, Memories, Mmu as Walker, PtRoot as DevRoot};
use simgpu::{HeapMemory, Location, PhysMemory, SimGpu};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(super) const VRAM: u64 = 4 << 20;
const SYS: u64 = 32 << 20;
const KCTX: HwCtx = HwCtx(0);
const RW: LeafFlags = LeafFlags {
    writable: true,
    cache: crate::hw::pte::CacheMode::WriteBack,
};

/// A copy engine that runs each job on a step-mode device: the commands go into a batch in
/// system memory, the ring runs the batch then writes a seqno, the test thread steps the
/// device until idle, and the fence signals if the seqno landed. Records every call.
pub(super) struct StepCopyEngine {
    gpu: Arc<SimGpu>,
    dma: Arc<dyn DmaMemory>,
    queue: Mutex<SimQueue>,
    seqno_page: DmaRegion,
    seq: AtomicU64,
    fctx: FenceContext,
    calls: Mutex<Vec<(usize, Vec<Arc<Fence>>)>>,
}

impl CopyEngine for StepCopyEngine {
    fn submit(&self, commands: &[u32], deps: &[Arc<Fence>]) -> Result<Arc<Fence>, CopyError> {
        self.calls.lock().push((commands.len(), deps.to_vec()));
        if deps.iter().any(|d| !d.is_signalled()) {
            return Err(CopyError::Refused {
                reason: "dependency pending".into(),
            });
        }
        let err = |e: crate::hw::HwError| CopyError::Failed {
            reason: e.to_string(),
        };
        let bytes = ((commands.len() as u64 * 4).div_ceil(PAGE_SIZE) * PAGE_SIZE).max(PAGE_SIZE);
        let batch = self.dma.alloc(bytes).map_err(err)?;
        let raw: Vec<u8> = commands.iter().flat_map(|d| d.to_le_bytes()).collect();
        self.dma.write(batch.addr, &raw).map_err(err)?;
        let seq = {
            // Seqnos are taken in ring order, so a later job's seqno implies this one's.
            let mut queue = self.queue.lock();
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let mut ring = CommandStream::new();
            ring.batch_start(
                KernelMap::va(MemLocation::System, batch.addr),
                commands.len() as u32,
            )
            .store_qword(
                KernelMap::va(MemLocation::System, self.seqno_page.addr),
                seq,
            );
            queue.submit(ring.dwords()).map_err(err)?;
            seq
        };
        self.gpu.run_until_idle();
        self.dma.free(batch).map_err(err)?;
        let done = self.dma.read_u64(self.seqno_page.addr).map_err(err)?;
        if done < seq {
            return Err(CopyError::Failed {
                reason: format!("seqno {done} after job {seq}"),
            });
        }
        let fence = Fence::new(self.fctx, seq);
        fence.signal().map_err(|e| CopyError::Failed {
            reason: e.to_string(),
        })?;
        Ok(fence)
    }
}

pub(super) struct Rig {
    pub(super) gpu: Arc<SimGpu>,
    hw: SimHw,
    sys: Arc<dyn PhysMemory>,
    pub(super) dma: Arc<HeapDma>,
    pub(super) engine: Arc<StepCopyEngine>,
    _kmap: KernelMap,
    pub(super) pools: Arc<Pools>,
}

pub(super) fn rig() -> Rig {
    rig_on(None)
}

/// A rig whose system memory and VRAM are shared windows drawing on `budget`: every BO
/// backing gets its own memory object.
pub(super) fn shared_rig(budget: Arc<MapBudget>) -> Rig {
    let windows = SharedWindows {
        sys: Arc::new(ShmPool::with_budget("gpud-test", SYS, budget.clone()).unwrap()),
        vram: Arc::new(ShmPool::with_budget("gpud-test", VRAM, budget).unwrap()),
    };
    rig_on(Some(windows))
}

fn rig_on(shared: Option<SharedWindows>) -> Rig {
    let cfg = simgpu::Config {
        vram_size: VRAM,
        ..simgpu::Config::default()
    };
    let (sys, gpu): (Arc<dyn PhysMemory>, _) = match &shared {
        Some(w) => (
            w.sys.clone(),
            SimGpu::with_vram(cfg, w.sys.clone(), w.vram.clone()),
        ),
        None => {
            let sys = Arc::new(HeapMemory::new(SYS));
            (sys.clone(), SimGpu::new(cfg, sys))
        }
    };
    let gpu = Arc::new(gpu);
    let latch = Arc::new(IrqLatch::default());
    gpu.set_interrupt_sink(latch.clone());
    let dma = Arc::new(HeapDma::new(sys.clone()));
    let mmio: Arc<dyn Mmio> = Arc::new(SimMmio(gpu.clone()));
    let hw = SimHw::init(mmio, dma.clone(), latch, Arc::new(SystemClock::new())).unwrap();
    let kmap = KernelMap::new(Arc::new(SysPtMemory::new(dma.clone())), VRAM, SYS).unwrap();
    hw.bind_context(KCTX, kmap.page_table().root(), FaultMode::Fatal)
        .unwrap();
    let queue = hw.create_queue(Engine::Copy, 0, KCTX, 4096).unwrap();
    let seqno_page = dma.alloc(PAGE_SIZE).unwrap();
    let engine = Arc::new(StepCopyEngine {
        gpu: gpu.clone(),
        dma: dma.clone(),
        queue: Mutex::new(queue),
        seqno_page,
        seq: AtomicU64::new(0),
        fctx: FenceContext::alloc(),
        calls: Mutex::new(Vec::new()),
    });
    let vram = Arc::new(Mutex::new(VramAllocator::new(VRAM)));
    let pools = Pools::with_sharing(vram, gpu.vram(), dma.clone(), shared);
    Rig {
        gpu,
        hw,
        sys,
        dma,
        engine,
        _kmap: kmap,
        pools,
    }
}

impl Rig {
    pub(super) fn manager(&self) -> MemoryManager {
        MemoryManager::new(self.pools.clone(), self.engine.clone())
    }

    fn walk(&self, pt: &PageTable, va: u64) -> Option<(u64, Location)> {
        let root = pt.root();
        let root = DevRoot {
            addr: root.addr.get(),
            location: if root.location == MemLocation::Vram {
                Location::Vram
            } else {
                Location::System
            },
        };
        let vram = self.gpu.vram();
        let mems = Memories {
            sys: &*self.sys,
            vram: &*vram,
        };
        Walker::new(16)
            .translate(mems, 0, root, va, Access::Read)
            .ok()
            .map(|t| (t.phys, t.location))
    }
}

pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub(super) fn contents(bo: &Bo) -> Vec<u8> {
    let mut buf = vec![0; bo.size() as usize];
    bo.read(0, &mut buf).unwrap();
    buf
}

#[test]
fn kernel_map_is_linear_with_large_pages() {
    let r = rig();
    let pt = r._kmap.page_table();
    assert_eq!(
        r.walk(pt, KERNEL_VRAM_BASE + 0x12_3458),
        Some((0x12_3458, Location::Vram))
    );
    assert_eq!(
        r.walk(pt, KERNEL_SYS_BASE + SYS - 8),
        Some((SYS - 8, Location::System))
    );
    assert_eq!(r.walk(pt, KERNEL_SYS_BASE + SYS), None);
    // Two 2 MiB VRAM leaves and sixteen system leaves, no level-0 entry written.
    assert_eq!(pt.stats().leaf_writes, 2 + 16);
}

#[test]
fn copy_engine_job_copies_between_vram_and_system() {
    let r = rig();
    let src = r.dma.alloc(PAGE_SIZE).unwrap();
    r.dma.write(src.addr, &pattern(4096, 7)).unwrap();
    let mut s = CommandStream::new();
    super::copy::copy_commands(
        &mut s,
        (MemLocation::System, src.addr),
        (MemLocation::Vram, PhysAddr(0x3000)),
        PAGE_SIZE,
    );
    let fence = r.engine.submit(s.dwords(), &[]).unwrap();
    assert!(fence.is_signalled());
    let mut buf = vec![0; 4096];
    r.gpu.vram().read(0x3000, &mut buf).unwrap();
    assert_eq!(buf, pattern(4096, 7));
}

#[test]
fn vram_exhaustion_is_a_typed_no_space_error() {
    let r = rig();
    let m = r.manager();
    assert!(
        matches!(m.create_bo(2 * VRAM, Placement::Vram, None), Err(MemError::NoSpace { requested, .. }) if requested == 2 * VRAM)
    );
    let (a, _) = m.create_bo(VRAM / 2, Placement::Migratable, None).unwrap();
    let (_b, _) = m.create_bo(VRAM / 2, Placement::Vram, None).unwrap();
    a.pin();
    // Everything in VRAM is pinned or VRAM-only: nothing to evict.
    let e = m.create_bo(PAGE_SIZE, Placement::Vram, None).unwrap_err();
    assert_eq!(
        e,
        MemError::NoSpace {
            requested: PAGE_SIZE,
            free: 0
        }
    );
    assert_eq!(a.location(), Some(MemLocation::Vram));
    // A migratable request falls back to system memory instead.
    let (c, _) = m.create_bo(PAGE_SIZE, Placement::Migratable, None).unwrap();
    assert_eq!(c.location(), Some(MemLocation::System));
    assert!(matches!(
        m.create_bo(123, Placement::System, None),
        Err(MemError::InvalidSize { size: 123 })
    ));
    assert!(matches!(
        m.create_bo(2 * SYS, Placement::System, None),
        Err(MemError::NoMemory { .. })
    ));
}

#[test]
fn eviction_and_validation_round_trip_preserves_contents_and_rebinds() {
    let r = rig();
    let m = r.manager();
    let half = VRAM / 2;
    let (a, _) = m.create_bo(half, Placement::Migratable, None).unwrap();
    let (b, _) = m.create_bo(half, Placement::Migratable, None).unwrap();
    a.write(0, &pattern(half as usize, 1)).unwrap();
    b.write(0, &pattern(half as usize, 2)).unwrap();
    let vm_bo = Arc::new(VmBo::new(
        crate::types::VmId(1),
        crate::sync::ResvId(999),
        a.clone(),
    ));
    a.register_vm_bo(&vm_bo);
    // A user VM maps A.
    let mut pt = PageTable::new(
        Arc::new(SysPtMemory::new(r.dma.clone())),
        PtConfig::default(),
    )
    .unwrap();
    let va = 0x4000_0000;
    let _ = pt
        .prepare(&[a.map_op(GpuVa(va), 0, half, RW).unwrap()])
        .unwrap()
        .commit();
    assert_eq!(r.walk(&pt, va).map(|t| t.1), Some(Location::Vram));
    m.touch(&b);
    // A third BO needs room: A is least recently used, so A goes.
    let (_c, report) = m.create_bo(half, Placement::Vram, None).unwrap();
    assert_eq!(report.evicted, vec![a.id()]);
    assert!(vm_bo.is_evicted());
    assert_eq!(a.location(), Some(MemLocation::System));
    assert_eq!(contents(&a), pattern(half as usize, 1));
    // Validation moves it back (evicting B now) and the rebind points at the new pages.
    let mut report = EvictReport::default();
    assert!(m.validate(&a, Some(&vm_bo), &mut report).unwrap());
    assert_eq!(report.evicted, vec![b.id()]);
    assert!(!vm_bo.is_evicted(), "the validating VM rebinds at once");
    assert_eq!(a.location(), Some(MemLocation::Vram));
    assert_eq!(contents(&a), pattern(half as usize, 1));
    assert_eq!(contents(&b), pattern(half as usize, 2));
    let _ = pt
        .prepare(&[a.map_op(GpuVa(va), 0, half, RW).unwrap()])
        .unwrap()
        .commit();
    let first = a.segments()[0].addr.get();
    assert_eq!(r.walk(&pt, va), Some((first, Location::Vram)));
    // Every move went through the copy engine.
    assert!(r.engine.calls.lock().len() >= 2);
}

/// Regression: validation once cleared every VM's evicted flag, leaving other VMs with PTEs
/// pointing at the freed pages (found by the bind engine's concurrency stress test).
#[test]
fn validation_by_one_vm_leaves_the_other_vms_flagged_for_rebind() {
    let r = rig();
    let m = r.manager();
    let (a, _) = m.create_bo(VRAM / 2, Placement::Migratable, None).unwrap();
    let vm_bo = |vm: u64| {
        let v = Arc::new(VmBo::new(
            crate::types::VmId(vm),
            crate::sync::ResvId(900 + vm),
            a.clone(),
        ));
        a.register_vm_bo(&v);
        v
    };
    let (mine, theirs) = (vm_bo(1), vm_bo(2));
    let mut report = EvictReport::default();
    m.evict(&a, &mut report).unwrap();
    assert!(mine.is_evicted() && theirs.is_evicted());
    assert!(m.validate(&a, Some(&mine), &mut report).unwrap());
    assert!(!mine.is_evicted(), "the validating VM rebinds at once");
    assert!(
        theirs.is_evicted(),
        "the other VM's PTEs still point at the old pages"
    );
    // Validating again without a move changes no flag.
    assert!(!m.validate(&a, Some(&theirs), &mut report).unwrap());
    assert!(theirs.is_evicted());
}

/// An allocation evicts only what it can take without waiting: a pinned BO, a BO with a job
/// still running (an unsignalled fence) and a BO whose reservation someone holds (an EXEC
/// validating it, a bind mapping it) are skipped, and with nothing else to evict the
/// allocation fails at once with `NoSpace`, no copy submitted. (The old code handed the
/// busy BO's fence to the copy and waited for it on the calling thread.)
#[test]
fn eviction_skips_busy_held_and_pinned_bos_and_never_waits() {
    let r = rig();
    let m = r.manager();
    let half = VRAM / 2;
    let (a, _) = m.create_bo(half, Placement::Migratable, None).unwrap();
    let (b, _) = m.create_bo(half, Placement::Migratable, None).unwrap();
    a.pin();
    // B is younger but A is pinned: B goes.
    let (_c, report) = m.create_bo(PAGE_SIZE, Placement::Vram, None).unwrap();
    assert_eq!(report.evicted, vec![b.id()]);
    assert_eq!(a.location(), Some(MemLocation::Vram));
    // A job still running on A: A is not a victim, and nothing is waited for.
    a.unpin();
    let job = Fence::new(FenceContext::alloc(), 1);
    {
        let mut ctx = crate::sync::AcquireCtx::new();
        a.reservation().ww().lock(&mut ctx).unwrap();
        a.reservation().reserve_fences(&ctx, 1).unwrap();
        a.reservation()
            .add_fence(&ctx, job.clone(), crate::sync::Usage::Write)
            .unwrap();
        a.reservation().ww().unlock(&mut ctx).unwrap();
    }
    let free = r.pools.vram.lock().free_bytes();
    let copies = r.engine.calls.lock().len();
    let e = m.create_bo(half, Placement::Vram, None).unwrap_err();
    assert!(matches!(e, MemError::NoSpace { .. }), "{e:?}");
    assert_eq!(r.engine.calls.lock().len(), copies, "no copy was submitted");
    assert_eq!(a.location(), Some(MemLocation::Vram));
    assert_eq!(r.pools.vram.lock().free_bytes(), free);
    job.signal().unwrap();
    // Idle now, but its reservation is held (an EXEC about to validate it): skipped too.
    let mut ctx = crate::sync::AcquireCtx::new();
    a.reservation().ww().lock(&mut ctx).unwrap();
    let e = m.create_bo(half, Placement::Vram, None).unwrap_err();
    assert!(matches!(e, MemError::NoSpace { .. }), "{e:?}");
    assert_eq!(a.location(), Some(MemLocation::Vram));
    a.reservation().ww().unlock(&mut ctx).unwrap();
    let (_d, report) = m.create_bo(half, Placement::Vram, None).unwrap();
    assert_eq!(report.evicted, vec![a.id()]);
}

#[test]
fn dropped_bo_keeps_backing_until_its_fences_signal() {
    let r = rig();
    let m = r.manager();
    let (a, _) = m.create_bo(VRAM, Placement::Vram, None).unwrap();
    let job = Fence::new(FenceContext::alloc(), 1);
    let mut ctx = crate::sync::AcquireCtx::new();
    a.reservation().ww().lock(&mut ctx).unwrap();
    a.reservation().reserve_fences(&ctx, 1).unwrap();
    a.reservation()
        .add_fence(&ctx, job.clone(), crate::sync::Usage::Bookkeep)
        .unwrap();
    a.reservation().ww().unlock(&mut ctx).unwrap();
    drop(a);
    assert_eq!(r.pools.zombies(), 1);
    assert_eq!(r.pools.vram.lock().free_bytes(), 0);
    assert_eq!(r.pools.reclaim(), 0);
    job.signal().unwrap();
    assert_eq!(r.pools.reclaim(), 1);
    assert_eq!(r.pools.vram.lock().free_bytes(), VRAM);
}

#[test]
fn page_table_updates_by_cpu_and_copy_engine_agree() {
    let r = rig();
    let mem = Arc::new(SysPtMemory::new(r.dma.clone()));
    let mut cpu_pt = PageTable::new(mem.clone(), PtConfig::default()).unwrap();
    let mut gpu_pt = PageTable::new(mem, PtConfig::default()).unwrap();
    // Scattered 4 KiB pages: 600 entries plus new tables.
    let segs: Vec<_> = (0..600u64)
        .map(|i| crate::vm::pagetable::PhysSeg {
            addr: PhysAddr((i * 2 + 1) * PAGE_SIZE),
            len: PAGE_SIZE,
        })
        .collect();
    let op = PtOp::Map {
        va: GpuVa(0x7f_ffe0_0000),
        len: 600 * PAGE_SIZE,
        target: crate::vm::pagetable::MapTarget::Pages {
            location: MemLocation::Vram,
            flags: RW,
            segments: segs,
        },
    };
    let engine: &dyn CopyEngine = &*r.engine;
    let (_, path) = commit_update(
        cpu_pt.prepare(std::slice::from_ref(&op)).unwrap(),
        Some(engine),
        &[],
        u64::MAX,
    );
    assert!(matches!(path, PtUpdatePath::Cpu));
    let before = gpu_pt.stats();
    let (_, path) = commit_update(gpu_pt.prepare(&[op]).unwrap(), Some(engine), &[], 100);
    let PtUpdatePath::CopyEngine(fence) = path else {
        panic!("expected the copy engine")
    };
    assert!(fence.is_signalled());
    assert_eq!(
        gpu_pt.stats().cpu_writes,
        before.cpu_writes,
        "the CPU wrote nothing"
    );
    assert!(gpu_pt.stats().deferred_writes >= 600);
    for i in [0u64, 1, 255, 256, 511, 512, 599] {
        let va = 0x7f_ffe0_0000 + i * PAGE_SIZE;
        let want = Some(((i * 2 + 1) * PAGE_SIZE, Location::Vram));
        assert_eq!(r.walk(&cpu_pt, va), want);
        assert_eq!(r.walk(&gpu_pt, va), want, "page {i}");
    }
    assert_eq!(r.walk(&gpu_pt, 0x7f_ffe0_0000 + 600 * PAGE_SIZE), None);
    let _ = &r.hw;
}

#[test]
fn bo_cpu_access_and_map_ops_follow_the_backing() {
    let r = rig();
    let m = r.manager();
    let (s, _) = m.create_bo(3 * PAGE_SIZE, Placement::System, None).unwrap();
    s.write(PAGE_SIZE - 2, &[1, 2, 3, 4]).unwrap();
    let region = s.system_region().unwrap();
    assert_eq!(
        r.dma
            .read_u32(PhysAddr(region.addr.get() + PAGE_SIZE))
            .unwrap()
            & 0xFFFF,
        0x0403
    );
    assert!(s.write(3 * PAGE_SIZE - 1, &[0, 0]).is_err());
    let op = s
        .map_op(GpuVa(0x10_0000), PAGE_SIZE, 2 * PAGE_SIZE, RW)
        .unwrap();
    let PtOp::Map {
        target:
            crate::vm::pagetable::MapTarget::Pages {
                segments, location, ..
            },
        ..
    } = op
    else {
        panic!()
    };
    assert_eq!(location, MemLocation::System);
    assert_eq!(
        segments,
        vec![crate::vm::pagetable::PhysSeg {
            addr: PhysAddr(region.addr.get() + PAGE_SIZE),
            len: 2 * PAGE_SIZE
        }]
    );
    assert!(s
        .map_op(GpuVa(0), 2 * PAGE_SIZE, 2 * PAGE_SIZE, RW)
        .is_err());
    let (v, _) = m.create_bo(VRAM, Placement::Vram, None).unwrap();
    assert!(
        matches!(v.state.lock().backing, Some(Backing::Vram(ref b)) if b.iter().all(|b| b.size() >= 2 << 20))
    );
}

/// The whole cycle on the device: a user context writes a migratable BO through its
/// mapping, the BO is evicted and validated, the mapping is rebound and invalidated in one
/// batch, and the next GPU write lands next to the first in the BO's new pages.
#[test]
fn gpu_writes_survive_eviction_validation_and_rebind() {
    let r = rig();
    let m = r.manager();
    let half = VRAM / 2;
    let (a, _) = m.create_bo(half, Placement::Migratable, None).unwrap();
    let mem = Arc::new(SysPtMemory::new(r.dma.clone()));
    let mut pt = PageTable::new(mem, PtConfig::default()).unwrap();
    let va = 0x8000_0000u64;
    let _ = pt
        .prepare(&[a.map_op(GpuVa(va), 0, half, RW).unwrap()])
        .unwrap()
        .commit();
    let ctx = HwCtx(3);
    r.hw.bind_context(ctx, pt.root(), FaultMode::Fatal).unwrap();
    let mut q = r.hw.create_queue(Engine::Copy, 1, ctx, 4096).unwrap();
    let mut s = CommandStream::new();
    s.store_dword(GpuVa(va + 0x10), 0xAAAA_0001);
    q.submit(s.dwords()).unwrap();
    r.gpu.run_until_idle();

    let (_b, report) = m.create_bo(VRAM, Placement::Vram, None).unwrap();
    assert_eq!(report.evicted, vec![a.id()]);
    let old = a.segments();
    drop(_b);
    // A filler takes the old pages, so validation must place A elsewhere and the rebind
    // matters (a stale mapping would write into the filler).
    let (filler, _) = m.create_bo(half, Placement::Vram, None).unwrap();
    let mut report = EvictReport::default();
    assert!(m.validate(&a, None, &mut report).unwrap());
    assert_ne!(a.segments()[0].addr, filler.segments()[0].addr);
    let _ = old;
    let c = pt
        .prepare(&[a.map_op(GpuVa(va), 0, half, RW).unwrap()])
        .unwrap()
        .commit();
    let mut batch = crate::vm::pagetable::TlbBatch::new();
    batch.add(ctx, c);
    let inv = batch.flush(&r.hw, ctx, &mut pt).unwrap().unwrap();
    r.gpu.run_until_idle();
    assert!(r.hw.invalidation_done(inv));

    let mut s = CommandStream::new();
    s.store_dword(GpuVa(va + 0x14), 0xBBBB_0002);
    q.submit(s.dwords()).unwrap();
    r.gpu.run_until_idle();
    let mut got = [0u8; 8];
    a.read(0x10, &mut got).unwrap();
    assert_eq!(got[..4], 0xAAAA_0001u32.to_le_bytes());
    assert_eq!(got[4..], 0xBBBB_0002u32.to_le_bytes());
    assert_eq!(r.hw.context_status(ctx).unwrap().0 & 0xFF, 0, "no fault");
    let mut f = [0u8; 8];
    filler.read(0x10, &mut f).unwrap();
    assert_eq!(f, [0; 8], "nothing landed in the old pages");
}
