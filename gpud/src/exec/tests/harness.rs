//! Test rig: an in-process simgpu in thread mode with a fake clock, the IRQ dispatcher, a
//! scheduler, and test contexts whose page tables map a data area and fence pages.

use crate::demo::pagetable::SimplePageTable;
use crate::exec::{
    ExecHw, ExecQueue, FencePage, IrqDispatcher, Priority, QueueConfig, QueueMode, SchedConfig,
    Scheduler,
};
use crate::hw::cmd::{CommandStream, SemOp, Width};
use crate::hw::pte::{CacheMode, LeafFlags};
use crate::hw::sim::dma::HeapDma;
use crate::hw::sim::irq::IrqLatch;
use crate::hw::sim::platform::SimMmio;
use crate::hw::sim::SimHw;
use crate::hw::{DmaMemory, Engine, FakeClock, FaultMode, HwCtx, MemLocation, Mmio, Mmu};
use crate::sync::{Fence, FenceFault, FenceMemory};
use crate::types::{GpuVa, PhysAddr, PAGE_SIZE};
use parking_lot::Mutex;
use simgpu::{Config, HeapMemory, SimGpu};
use std::sync::Arc;
use std::time::Duration;

/// Where each test context maps its data area.
pub const DATA_VA: GpuVa = GpuVa(0x100_0000);
/// Size of the data area.
pub const DATA_BYTES: u64 = 16 * PAGE_SIZE;
/// Where fence pages are mapped in the global GTT (one page per queue).
const FENCE_VA: u64 = 0x200_0000;
/// An address no test context maps.
pub const UNMAPPED_VA: GpuVa = GpuVa(0x7000_0000);
/// The device's test-only HANG command (opcode 0xFE, length 1).
pub const HANG: u32 = 0x0001_00FE;
/// A wait bound that only matters if the code under test is broken.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// A timeout no test reaches with its fake-clock advances.
pub const NEVER: Duration = Duration::from_secs(1 << 30);

const RW: LeafFlags = LeafFlags {
    writable: true,
    cache: CacheMode::WriteBack,
};

struct TestCtx {
    /// Kept alive: its tables are the context's.
    _pt: SimplePageTable,
    data: PhysAddr,
}

/// The rig. Drop order: scheduler, dispatcher, then the device thread is stopped.
pub struct Rig {
    pub sched: Scheduler,
    /// Kept alive for the scheduler's interrupt handlers.
    _irq: IrqDispatcher,
    pub hw: Arc<SimHw>,
    pub gpu: Arc<SimGpu>,
    pub clock: Arc<FakeClock>,
    ctxs: Mutex<Vec<TestCtx>>,
    /// The global GTT: fence pages, mapped in no test context.
    ggtt: Mutex<SimplePageTable>,
    fence_pages: Mutex<u64>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.gpu.stop();
    }
}

impl Rig {
    /// A device with `contexts` test contexts (HwCtx 1..=contexts), all fault-fatal.
    pub fn new(contexts: u32) -> Self {
        Self::with_config(contexts, SchedConfig::default())
    }

    pub fn with_config(contexts: u32, cfg: SchedConfig) -> Self {
        let sys = Arc::new(HeapMemory::new(16 << 20));
        let gpu = Arc::new(SimGpu::new(Config::default(), sys.clone()));
        let latch = Arc::new(IrqLatch::default());
        gpu.set_interrupt_sink(latch.clone());
        let dma: Arc<dyn DmaMemory> = Arc::new(HeapDma::new(sys));
        let mmio: Arc<dyn Mmio> = Arc::new(SimMmio(gpu.clone()));
        let clock = Arc::new(FakeClock::new());
        let hw = Arc::new(SimHw::init(mmio, dma.clone(), latch, clock.clone()).unwrap());
        gpu.start();
        let ggtt = SimplePageTable::new(dma.clone()).unwrap();
        hw.bind_ggtt(ggtt.root()).unwrap();
        let mut ctxs = Vec::new();
        for i in 0..contexts {
            let mut pt = SimplePageTable::new(dma.clone()).unwrap();
            let data = dma.alloc(DATA_BYTES).unwrap().addr;
            pt.map_range(DATA_VA, data, DATA_BYTES, MemLocation::System, RW)
                .unwrap();
            hw.bind_context(HwCtx(i + 1), pt.root(), FaultMode::Fatal)
                .unwrap();
            ctxs.push(TestCtx { _pt: pt, data });
        }
        let irq = IrqDispatcher::start(hw.interrupts()).unwrap();
        let sched = Scheduler::new(ExecHw::sim(hw.clone()), cfg, &irq).unwrap();
        Self {
            sched,
            _irq: irq,
            hw,
            gpu,
            clock,
            ctxs: Mutex::new(ctxs),
            ggtt: Mutex::new(ggtt),
            fence_pages: Mutex::new(0),
        }
    }

    /// The hardware context of test context `i`.
    pub fn ctx(i: usize) -> HwCtx {
        HwCtx(i as u32 + 1)
    }

    /// Physical address of byte `off` of context `i`'s data area.
    pub fn data_pa(&self, i: usize, off: u64) -> PhysAddr {
        PhysAddr(self.ctxs.lock()[i].data.get() + off)
    }

    /// Reads a u64 of context `i`'s data area.
    pub fn read(&self, i: usize, off: u64) -> u64 {
        self.hw.dma().read_u64(self.data_pa(i, off)).unwrap()
    }

    /// Writes a u64 of context `i`'s data area (as the CPU).
    pub fn write(&self, i: usize, off: u64, v: u64) {
        self.hw.dma().write_u64(self.data_pa(i, off), v).unwrap();
    }

    /// A queue config for context `i`, with a fresh fence page mapped in the global GTT.
    pub fn config(&self, i: usize, engine: Engine, mode: QueueMode) -> QueueConfig {
        let dma = self.hw.dma();
        let page = dma.alloc(PAGE_SIZE).unwrap().addr;
        let va = {
            let mut n = self.fence_pages.lock();
            *n += 1;
            GpuVa(FENCE_VA + *n * PAGE_SIZE)
        };
        self.ggtt
            .lock()
            .map_4k(va, page, MemLocation::System, RW)
            .unwrap();
        QueueConfig {
            engine,
            ctx: Self::ctx(i),
            fence_page: FencePage { va, pa: page },
            fence_region: None,
            mode,
            vm: None,
            priority: Priority::Normal,
            owner: None,
            batches: Default::default(),
        }
    }

    /// A dma-fence queue with `timeout` on context `i`.
    pub fn queue(&self, i: usize, engine: Engine, timeout: Duration) -> ExecQueue {
        let cfg = self.config(i, engine, QueueMode::Dma { timeout });
        self.sched.create_queue(cfg).unwrap()
    }

    /// Advances the fake clock in steps until `fence` signals (bounded); returns its outcome.
    pub fn advance_until(&self, fence: &Fence, step: Duration) -> Result<(), FenceFault> {
        for _ in 0..20_000 {
            if fence.is_signalled() {
                break;
            }
            self.clock.advance(step);
            let _ = fence.wait(Some(Duration::from_millis(2)));
        }
        wait(fence)
    }
}

/// Waits for `fence` (bounded by [`PATIENCE`]) and returns its outcome.
pub fn wait(fence: &Fence) -> Result<(), FenceFault> {
    fence
        .wait(Some(PATIENCE))
        .expect("fence did not signal within the test's patience")
}

/// Address `off` in the data area.
pub fn data(off: u64) -> GpuVa {
    GpuVa(DATA_VA.get() + off)
}

/// Commands: store `v` at data offset `off`.
pub fn store(off: u64, v: u64) -> Vec<u32> {
    CommandStream::new()
        .store_qword(data(off), v)
        .dwords()
        .to_vec()
}

/// Commands: wait until the u64 at data offset `off` is at least `v`, then store `v2` at
/// `off2`.
pub fn wait_then_store(off: u64, v: u64, off2: u64, v2: u64) -> Vec<u32> {
    CommandStream::new()
        .semaphore_wait(data(off), SemOp::Gte, v, Width::U64)
        .store_qword(data(off2), v2)
        .dwords()
        .to_vec()
}

/// A context's data area seen through GPU VAs, for user-fence waits.
pub struct DataMemory<'a> {
    pub rig: &'a Rig,
    pub ctx: usize,
}

impl FenceMemory for DataMemory<'_> {
    type Addr = GpuVa;

    fn read_u64(&self, addr: GpuVa) -> Option<u64> {
        let off = addr.get().checked_sub(DATA_VA.get())?;
        (off + 8 <= DATA_BYTES).then(|| self.rig.read(self.ctx, off))
    }
}
