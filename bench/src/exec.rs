//! `gpu-bench exec`: the scheduler core on simgpu in thread mode — submit-to-signal latency
//! and job throughput on several queues, independent and chained across queues.
//!
//! Owns: the exec benchmark group. Must not: assert on timings; it only reports them.

use crate::report::{median_ns, Report};
use gpud::demo::pagetable::SimplePageTable;
use gpud::exec::{
    ExecHw, ExecQueue, FencePage, IrqDispatcher, Job, Priority, QueueConfig, QueueMode,
    SchedConfig, Scheduler,
};
use gpud::hw::cmd::{CommandStream, SemOp, Width};
use gpud::hw::pte::{CacheMode, LeafFlags};
use gpud::hw::sim::dma::HeapDma;
use gpud::hw::sim::irq::IrqLatch;
use gpud::hw::sim::platform::SimMmio;
use gpud::hw::sim::SimHw;
use gpud::hw::{DmaMemory, Engine, FaultMode, HwCtx, MemLocation, Mmio, Mmu, SystemClock};
use gpud::sync::Fence;
use gpud::types::{GpuVa, PhysAddr, PAGE_SIZE};
use simgpu::{Config, HeapMemory, SimGpu};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DATA_VA: GpuVa = GpuVa(0x100_0000);
const FENCE_VA: u64 = 0x200_0000;
const CTX: HwCtx = HwCtx(1);
const RW: LeafFlags = LeafFlags {
    writable: true,
    cache: CacheMode::WriteBack,
};

/// A device, one context with a data page, and a scheduler.
struct Bench {
    sched: Scheduler,
    _irq: IrqDispatcher,
    gpu: Arc<SimGpu>,
    dma: Arc<dyn DmaMemory>,
    /// The global GTT, where fence pages are mapped.
    ggtt: SimplePageTable,
    /// Where the context's data page is (the device writes it, the bench reads it).
    data: PhysAddr,
    queues: u64,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.gpu.stop();
    }
}

impl Bench {
    fn new() -> Self {
        let sys = Arc::new(HeapMemory::new(16 << 20));
        let gpu = Arc::new(SimGpu::new(Config::default(), sys.clone()));
        let latch = Arc::new(IrqLatch::default());
        gpu.set_interrupt_sink(latch.clone());
        let dma: Arc<dyn DmaMemory> = Arc::new(HeapDma::new(sys));
        let mmio: Arc<dyn Mmio> = Arc::new(SimMmio(gpu.clone()));
        let hw = SimHw::init(mmio, dma.clone(), latch, Arc::new(SystemClock::new()));
        let hw = Arc::new(hw.expect("simgpu bring-up"));
        gpu.start();
        let ggtt = SimplePageTable::new(dma.clone()).expect("global GTT");
        hw.bind_ggtt(ggtt.root()).expect("bind GGTT");
        let mut pt = SimplePageTable::new(dma.clone()).expect("page table");
        let data = dma.alloc(PAGE_SIZE).expect("data page").addr;
        // The kill benchmark's gate word is read before anything wrote the page.
        dma.write_u64(PhysAddr(data.get() + 8 * GATE_SLOT), 0)
            .expect("clear gate");
        pt.map_4k(DATA_VA, data, MemLocation::System, RW)
            .expect("map");
        hw.bind_context(CTX, pt.root(), FaultMode::Fatal)
            .expect("bind");
        let irq = IrqDispatcher::start(hw.interrupts()).expect("irq thread");
        let sched =
            Scheduler::new(ExecHw::sim(hw), SchedConfig::default(), &irq).expect("scheduler");
        Self {
            sched,
            _irq: irq,
            gpu,
            dma,
            ggtt,
            data,
            queues: 0,
        }
    }

    fn queue(&mut self, engine: Engine) -> ExecQueue {
        self.queues += 1;
        let va = GpuVa(FENCE_VA + self.queues * PAGE_SIZE);
        let pa = self.dma.alloc(PAGE_SIZE).expect("fence page").addr;
        self.ggtt
            .map_4k(va, pa, MemLocation::System, RW)
            .expect("map");
        self.sched
            .create_queue(QueueConfig {
                engine,
                ctx: CTX,
                fence_page: FencePage { va, pa },
                fence_region: None,
                mode: QueueMode::Dma {
                    timeout: Duration::from_secs(60),
                },
                vm: None,
                priority: Priority::Normal,
                owner: None,
                batches: Default::default(),
            })
            .expect("queue")
    }
}

fn store_job(slot: u64, value: u64) -> Job {
    let va = GpuVa(DATA_VA.get() + 8 * slot);
    Job::commands(
        CommandStream::new()
            .store_qword(va, value)
            .dwords()
            .to_vec(),
    )
}

fn wait(f: &Fence) {
    let _ = f.wait(Some(Duration::from_secs(60)));
}

/// Times the process's threads went to sleep so far (voluntary context switches, summed
/// over its threads): each one is a hand-off some other thread has to wake up. `None` where
/// the kernel does not report it.
fn sleeps() -> Option<u64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended
        };
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Thread sleeps per job between two [`sleeps`] readings.
fn per_job(before: Option<u64>, after: Option<u64>, jobs: u64) -> Option<f64> {
    let (b, a) = (before?, after?);
    Some(((a.saturating_sub(b)) as f64 / jobs as f64 * 100.0).round() / 100.0)
}

/// Median nanoseconds from `submit` to the fence signalling, one job at a time, and the
/// thread sleeps (hand-offs) per job.
fn submit_to_signal() -> (u64, Option<f64>) {
    const JOBS: u64 = 2000;
    let mut b = Bench::new();
    let q = b.queue(Engine::Copy);
    let before = sleeps();
    let mut samples: Vec<u64> = (0..JOBS)
        .map(|k| {
            let start = Instant::now();
            let f = q.submit(store_job(0, k)).expect("submit");
            wait(&f);
            start.elapsed().as_nanos() as u64
        })
        .collect();
    let handoffs = per_job(before, sleeps(), JOBS);
    (median_ns(&mut samples), handoffs)
}

/// Jobs per second on `queues` queues (alternating between the engines); `chained`: each job
/// also depends on the previous job, which ran on another queue. With more queues than the
/// engines have hardware queues, the scheduler time-slices them. Also returns the thread
/// sleeps (hand-offs) per job.
fn throughput(queues: usize, chained: bool) -> (f64, Option<f64>) {
    const JOBS: u64 = 8000;
    let mut b = Bench::new();
    let qs: Vec<ExecQueue> = (0..queues)
        .map(|i| {
            b.queue(if i % 2 == 0 {
                Engine::Copy
            } else {
                Engine::Compute
            })
        })
        .collect();
    let before = sleeps();
    let start = Instant::now();
    let mut last: Option<Arc<Fence>> = None;
    let mut fences = Vec::with_capacity(JOBS as usize);
    for k in 0..JOBS {
        let qi = (k % queues as u64) as usize;
        let mut job = store_job(qi as u64, k);
        if let (true, Some(prev)) = (chained, last.clone()) {
            job = job.with_deps([prev]);
        }
        let f = qs[qi].submit(job).expect("submit");
        last = Some(f.clone());
        fences.push(f);
    }
    fences.iter().for_each(|f| wait(f));
    let rate = JOBS as f64 / start.elapsed().as_secs_f64();
    (rate, per_job(before, sleeps(), JOBS))
}

/// Data slots of the kill benchmark: the running job's marker and the word it waits on.
const MARK_SLOT: u64 = 500;
const GATE_SLOT: u64 = 501;

/// Median microseconds from killing a queue whose job is running on the engine (spinning on
/// a semaphore that is never released) to that job's fence failing, which happens only once
/// the queue is off its hardware queue. This is what a client's death costs the engine: the
/// scheme kills every queue of a client that goes away.
fn kill_to_engine_free_us() -> f64 {
    const SAMPLES: usize = 200;
    let mut b = Bench::new();
    let mark = PhysAddr(b.data.get() + 8 * MARK_SLOT);
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        b.dma.write_u64(mark, 0).expect("clear mark");
        let q = b.queue(Engine::Compute);
        let spin = CommandStream::new()
            .store_qword(GpuVa(DATA_VA.get() + 8 * MARK_SLOT), 1)
            .semaphore_wait(
                GpuVa(DATA_VA.get() + 8 * GATE_SLOT),
                SemOp::Ne,
                0,
                Width::U64,
            )
            .dwords()
            .to_vec();
        let f = q.submit(Job::commands(spin)).expect("submit");
        let bound = Instant::now() + Duration::from_secs(10);
        while b.dma.read_u64(mark).expect("mark") != 1 && Instant::now() < bound {
            std::thread::yield_now();
        }
        let start = Instant::now();
        q.kill();
        wait(&f);
        samples.push(start.elapsed().as_nanos() as u64);
    }
    median_ns(&mut samples) as f64 / 1000.0
}

/// The exec group.
pub fn exec() -> Report {
    let mut r = Report::new("exec");
    let (latency, latency_sleeps) = submit_to_signal();
    r.push("submit_to_signal_ns", latency);
    let (four, four_sleeps) = throughput(4, false);
    r.push("jobs_per_s_4_queues", four.round());
    let (many, many_sleeps) = throughput(64, false);
    r.push("jobs_per_s_64_queues", many.round());
    let (chain, chain_sleeps) = throughput(4, true);
    r.push("dep_chain_jobs_per_s", chain.round());
    r.push("kill_to_engine_free_us", kill_to_engine_free_us());
    crate::contexts::push_keys(&mut r);
    // Hand-offs: how often a thread of the process went to sleep per job (each one costs a
    // wake-up later); Linux only.
    for (key, v) in [
        ("submit_to_signal_sleeps_per_job", latency_sleeps),
        ("jobs_4_queues_sleeps_per_job", four_sleeps),
        ("jobs_64_queues_sleeps_per_job", many_sleeps),
        ("dep_chain_sleeps_per_job", chain_sleeps),
    ] {
        if let Some(v) = v {
            r.push(key, v);
        }
    }
    r
}
