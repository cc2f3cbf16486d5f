//! The driver core object: brings up the hardware, the memory manager, the interrupt
//! dispatcher, the scheduler, the kernel context with its linear map and copy queue, and
//! hands out VMs, BOs, exec queues and bind queues.
//!
//! Bring-up takes the hardware as seams ([`DeviceHardware`]: registers, DMA memory, VRAM
//! aperture, interrupt latch): [`Device::with_memory`] builds them over an in-process simgpu,
//! `platform::pcid_driver` over the BARs and DMA memory pcid handed over.
//!
//! Owns: [`Device`] (the driver-level API the scheme calls), [`Core`] (what VMs share:
//! MMU, memory manager, page-table memory, fail points, hardware-context slots, the VM
//! registry used to route evictions), and the glue `impl CopyEngine for KernelQueue`.
//! Must not: implement binds (see `bind`) or scheduling (see `exec`).

use crate::bind::failpoint::{FailPoint, FailPoints};
use crate::bind::fault::{FaultWorker, Owner, ReplyGate, VmLookup};
use crate::bind::queue::BindJob;
use crate::bind::{BindError, BindQueue, Vm, VmFlags};
use crate::exec::{
    ContextPool, ContextStats, EngineBusy, ExecError, ExecHw, ExecQueue, FencePage, IrqDispatcher,
    KernelQueue, Priority, QueueConfig, QueueMode, QueueOwner, SchedConfig, Scheduler,
};
use crate::hw::cmd::BatchFormat;
use crate::hw::pte::MemLocation;
use crate::hw::regs::IrqCauses;
use crate::hw::sim::dma::HeapDma;
use crate::hw::sim::irq::{IrqLatch, MsixWiring};
use crate::hw::sim::platform::SimMmio;
use crate::hw::sim::SimHw;
use crate::hw::{Clock, DmaMemory, Engine, FaultMode, HwCtx, Mmio, Mmu, SystemClock};
use crate::mem::bo::{Bo, Placement, Pools, SharedWindows};
use crate::mem::copy::{CopyEngine, CopyError, KernelMap, GPU_PT_UPDATE_THRESHOLD};
use crate::mem::manager::{EvictReport, MemoryManager};
use crate::mem::vram::VramAllocator;
use crate::mem::window::CpuWindow;
use crate::svm::{ClientMm, ClientPager};
use crate::sync::{Exec, ExecFlags, Fence};
use crate::types::{PhysAddr, VmId, PAGE_SIZE};
use crate::vm::pagetable::memory::{PtAllocError, PtMemory, SysPtMemory};
use parking_lot::Mutex;
use simgpu::{HeapMemory, PhysMemory, SimGpu};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The kernel context (linear map, kernel copy queue).
pub const KERNEL_CTX: HwCtx = HwCtx(0);

impl CopyEngine for KernelQueue {
    fn submit(&self, commands: &[u32], deps: &[Arc<Fence>]) -> Result<Arc<Fence>, CopyError> {
        KernelQueue::submit(self, commands, deps).map_err(|e| match e {
            ExecError::WouldBlock { .. } | ExecError::TooManyQueues { .. } => CopyError::Refused {
                reason: e.to_string(),
            },
            other => CopyError::Failed {
                reason: other.to_string(),
            },
        })
    }
}

/// How to bring a device up.
#[derive(Clone)]
pub struct DeviceConfig {
    /// VRAM bytes of the simulated device.
    pub vram_size: u64,
    /// System-memory bytes (DMA pool: system BOs, page tables, rings).
    pub sys_size: u64,
    /// Hardware contexts.
    pub contexts: u32,
    /// The clock hang detection measures with.
    pub clock: Arc<dyn Clock>,
    /// Scheduler options.
    pub sched: SchedConfig,
    /// Job timeout of dma-fence exec queues.
    pub job_timeout: Duration,
    /// Bind batches with more entry writes than this go to the copy engine.
    pub pt_copy_threshold: u64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            vram_size: 16 << 20,
            sys_size: 64 << 20,
            contexts: 64,
            clock: Arc::new(SystemClock::new()),
            sched: SchedConfig::default(),
            job_timeout: Duration::from_secs(5),
            pt_copy_threshold: GPU_PT_UPDATE_THRESHOLD,
        }
    }
}

/// Page-table memory that consults the `PtAlloc` fail point.
struct FailablePtMemory {
    inner: SysPtMemory,
    fail: Arc<FailPoints>,
}

impl PtMemory for FailablePtMemory {
    fn location(&self) -> MemLocation {
        self.inner.location()
    }
    fn zeroed_pages(&self) -> bool {
        self.inner.zeroed_pages()
    }
    fn alloc_page(&self) -> Result<PhysAddr, PtAllocError> {
        self.fail
            .check(FailPoint::PtAlloc)
            .map_err(|_| PtAllocError::NoMemory)?;
        self.inner.alloc_page()
    }
    fn free_page(&self, page: PhysAddr) {
        self.inner.free_page(page)
    }
    fn write_u64(&self, addr: PhysAddr, value: u64) -> bool {
        self.inner.write_u64(addr, value)
    }
    fn read_u64(&self, addr: PhysAddr) -> Option<u64> {
        self.inner.read_u64(addr)
    }
}

/// What every VM of a device shares.
pub struct Core {
    pub(crate) mmu: Arc<dyn Mmu>,
    pub(crate) mm: MemoryManager,
    pub(crate) pt_mem: Arc<dyn PtMemory>,
    pub(crate) fail: Arc<FailPoints>,
    pub(crate) dma: Arc<dyn DmaMemory>,
    /// The hardware contexts, assigned to VMs while their work runs.
    pub(crate) ctxs: Arc<ContextPool>,
    vms: Mutex<HashMap<VmId, Weak<Vm>>>,
    /// The kernel copy queue, for large page-table updates.
    copy: Arc<dyn CopyEngine>,
    pt_copy_threshold: u64,
    /// Bind jobs the copy engine completed (a test and benchmark counter).
    pub(crate) pt_copy_jobs: Arc<AtomicU64>,
    /// Each client's address space (userptr), by owner: registered by the platform
    /// ([`Device::set_client_mm`]), looked up by the client's VMs.
    pagers: Mutex<HashMap<QueueOwner, Arc<ClientPager>>>,
}

impl Core {
    /// Hands vm_bos of VM-private BOs an eviction marked to their VMs (`current` is the VM
    /// whose resv the caller holds; others pick theirs up on their next exec).
    pub(crate) fn route_evictions(&self, report: EvictReport, _current: Option<&Vm>) {
        if report.private_vm_bos.is_empty() {
            return;
        }
        let vms = self.vms.lock();
        for vb in report.private_vm_bos {
            if let Some(vm) = vms.get(&vb.vm()).and_then(Weak::upgrade) {
                vm.foreign_evictions.lock().push(vb);
            }
        }
    }

    /// Sends `job`'s writes to the copy engine when the batch is large.
    pub(crate) fn with_copy_path(&self, mut job: BindJob) -> BindJob {
        if job.writes.len() as u64 > self.pt_copy_threshold {
            job.copy = Some((self.copy.clone(), self.pt_copy_jobs.clone()));
        }
        job
    }

    /// Every live VM.
    pub(crate) fn live_vms(&self) -> Vec<Arc<Vm>> {
        self.vms.lock().values().filter_map(Weak::upgrade).collect()
    }

    /// `owner`'s pager, created on first use.
    pub(crate) fn pager(&self, owner: QueueOwner) -> Arc<ClientPager> {
        self.pagers.lock().entry(owner).or_default().clone()
    }
}

/// Memory counters (every one must be unchanged by a failed bind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemStats {
    /// Free VRAM bytes.
    pub vram_free: u64,
    /// Free system-pool bytes (page tables live here).
    pub sys_free: u64,
}

/// The driver core.
pub struct Device {
    core: Arc<Core>,
    _faults: FaultWorker,
    sched: Scheduler,
    _irq: IrqDispatcher,
    hw: Arc<SimHw>,
    gpu: Option<Arc<SimGpu>>,
    heap: Arc<HeapDma>,
    vram_size: u64,
    pools: Arc<Pools>,
    _kmap: KernelMap,
    next_vm: AtomicU64,
    job_timeout: Duration,
    cpu_window: Option<CpuWindow>,
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(gpu) = &self.gpu {
            gpu.stop();
        }
    }
}

/// The hardware parts a device is brought up on, as seams: an in-process simgpu provides
/// them in [`Device::with_memory`]; on Redox `platform::pcid_driver` builds them from the
/// BARs, DMA memory and interrupt pcid handed over.
pub struct DeviceHardware {
    /// BAR0 registers.
    pub mmio: Arc<dyn Mmio>,
    /// System memory the device reaches (regions carry physical addresses).
    pub dma: Arc<HeapDma>,
    /// CPU access to VRAM (BAR2), addressed by VRAM offset.
    pub vram: Arc<dyn PhysMemory>,
    /// Where interrupt causes are recorded (the simgpu sink, or the platform's IRQ hook).
    pub latch: Arc<IrqLatch>,
    /// Who owns the MSI-X table.
    pub wiring: MsixWiring,
    /// The in-process device, when there is one (stopped when the `Device` drops).
    pub sim: Option<Arc<SimGpu>>,
    /// Bytes of the kernel's linear map of system memory: physical `[0, sys_end)` must
    /// cover every DMA region.
    pub sys_end: u64,
    /// Where gpud's own address space shows the DMA chunks and VRAM (the platform's
    /// mappings), so BOs can be mapped into clients by address (Redox `mmap_prep`). `None`
    /// for an in-process simgpu: host clients map the per-BO memory objects instead.
    pub cpu_window: Option<CpuWindow>,
}

/// The simulated device and the seams over it, on system memory `sys` and VRAM `vram` (heap
/// memory when `None`); not yet started.
fn sim_hardware(
    cfg: &DeviceConfig,
    sys: Arc<dyn PhysMemory>,
    vram: Option<Arc<dyn PhysMemory>>,
) -> DeviceHardware {
    let sim_cfg = simgpu::Config {
        vram_size: cfg.vram_size,
        contexts: cfg.contexts,
        ..simgpu::Config::default()
    };
    let sys_end = sys.size();
    let gpu = Arc::new(match vram {
        Some(vram) => SimGpu::with_vram(sim_cfg, sys.clone(), vram),
        None => SimGpu::new(sim_cfg, sys.clone()),
    });
    let latch = Arc::new(IrqLatch::default());
    gpu.set_interrupt_sink(latch.clone());
    DeviceHardware {
        mmio: Arc::new(SimMmio(gpu.clone())),
        dma: Arc::new(HeapDma::new(sys)),
        vram: gpu.vram(),
        latch,
        wiring: MsixWiring::PerCauseVectors,
        sim: Some(gpu),
        sys_end,
        cpu_window: None,
    }
}

/// What runs the device's work: the kernel context's linear map, the IRQ thread, the
/// scheduler and the kernel copy queue on it.
struct Engines {
    kmap: KernelMap,
    irq: IrqDispatcher,
    sched: Scheduler,
    copy: Arc<dyn CopyEngine>,
}

/// Maps the kernel context and starts the IRQ thread, the scheduler and the kernel queue.
fn start_engines(
    cfg: &DeviceConfig,
    hw: &Arc<SimHw>,
    dma: &Arc<dyn DmaMemory>,
    sys_end: u64,
) -> Result<Engines, BindError> {
    let kmap = KernelMap::new(
        Arc::new(SysPtMemory::new(dma.clone())),
        cfg.vram_size,
        sys_end,
    )?;
    hw.bind_context(KERNEL_CTX, kmap.page_table().root(), FaultMode::Fatal)?;
    // The global GTT, which only ring commands reach, is the kernel's linear map: fence
    // pages are written through it and mapped in no client's page tables.
    hw.bind_ggtt(kmap.page_table().root())?;
    let irq = IrqDispatcher::start(hw.interrupts()).map_err(|_| BindError::Timeout {
        what: "IRQ thread creation",
    })?;
    let sched = Scheduler::new(ExecHw::sim(hw.clone()), cfg.sched, &irq).map_err(|_| {
        BindError::Timeout {
            what: "scheduler thread creation",
        }
    })?;
    let kpage = dma.alloc(PAGE_SIZE)?;
    let copy: Arc<dyn CopyEngine> = Arc::new(KernelQueue::new(
        &sched,
        KERNEL_CTX,
        FencePage {
            va: KernelMap::va(MemLocation::System, kpage.addr),
            pa: kpage.addr,
        },
    )?);
    Ok(Engines {
        kmap,
        irq,
        sched,
        copy,
    })
}

/// What every VM shares: the MMU, the memory manager over `pools`, page-table memory, fail
/// points and the hardware-context slots (slot 0 is the kernel's).
/// Tells the in-process device which backing memory the driver allocates and frees (its
/// freed-page check, off unless a test turns it on with `SimGpu::track_freed_pages`).
fn freed_page_observer(gpu: &Arc<SimGpu>) -> crate::mem::pools::MemObserver {
    let gpu = Arc::downgrade(gpu);
    Arc::new(move |loc, addr: PhysAddr, len, allocated| {
        let Some(gpu) = gpu.upgrade() else { return };
        let loc = match loc {
            MemLocation::System => simgpu::Location::System,
            MemLocation::Vram => simgpu::Location::Vram,
        };
        if allocated {
            gpu.note_allocated(loc, addr.get(), len);
        } else {
            gpu.note_freed(loc, addr.get(), len);
        }
    })
}

fn new_core(
    cfg: &DeviceConfig,
    hw: &Arc<SimHw>,
    copy: &Arc<dyn CopyEngine>,
    pools: &Arc<Pools>,
    dma: Arc<dyn DmaMemory>,
) -> Arc<Core> {
    let fail = Arc::new(FailPoints::default());
    let pt_mem: Arc<dyn PtMemory> = Arc::new(FailablePtMemory {
        inner: SysPtMemory::new(dma.clone()),
        fail: fail.clone(),
    });
    // Never more contexts than the device has; the kernel's is not handed out.
    let count = cfg.contexts.min(hw.info().contexts);
    let mmu: Arc<dyn Mmu> = hw.clone();
    let ctxs = ContextPool::new(mmu, count, &[KERNEL_CTX]);
    let core = Arc::new(Core {
        mmu: hw.clone(),
        mm: MemoryManager::new(pools.clone(), copy.clone()),
        copy: copy.clone(),
        pt_copy_threshold: cfg.pt_copy_threshold,
        pt_copy_jobs: Arc::new(AtomicU64::new(0)),
        pagers: Mutex::new(HashMap::new()),
        pt_mem,
        fail,
        dma,
        ctxs,
        vms: Mutex::new(HashMap::new()),
    });
    // VRAM pressure evicts SVM ranges too (`bind::migrate`).
    let evictor: std::sync::Weak<dyn crate::mem::svm::SvmEvictor> = Arc::downgrade(&core) as _;
    core.mm.set_svm_evictor(evictor);
    core
}

/// The fault worker, woken by the FAULT interrupt, finding VMs by context.
fn start_faults(
    core: &Arc<Core>,
    hw: &SimHw,
    irq: &IrqDispatcher,
) -> Result<FaultWorker, BindError> {
    let weak = Arc::downgrade(core);
    let lookup: VmLookup = Arc::new(move |ctx, asid| {
        let Some(core) = weak.upgrade() else {
            return Owner::Nobody;
        };
        let vms = core.vms.lock();
        let vm = vms
            .values()
            .filter_map(Weak::upgrade)
            .find(|vm| vm.serves(ctx, asid));
        match vm {
            Some(vm) => Owner::Vm(vm),
            None if core.ctxs.if_current(ctx, asid, &mut || ()) => Owner::Nobody,
            None => Owner::Stale,
        }
    });
    let weak = Arc::downgrade(core);
    let gate: ReplyGate = Arc::new(move |ctx, asid, reply| {
        weak.upgrade()
            .is_some_and(|core| core.ctxs.if_current(ctx, asid, reply))
    });
    let queue = Box::new(hw.create_fault_queue(64)?);
    let faults = FaultWorker::start(queue, lookup, gate).map_err(|_| BindError::Timeout {
        what: "fault thread creation",
    })?;
    let wake = faults.waker();
    irq.register(IrqCauses::FAULT, Arc::new(move |_| wake()));
    Ok(faults)
}

impl Device {
    /// Brings up a simulated device in thread mode.
    pub fn new(cfg: DeviceConfig) -> Result<Self, BindError> {
        let sys = Arc::new(HeapMemory::new(cfg.sys_size));
        Self::with_memory(cfg, sys)
    }

    /// Brings up a simulated device in thread mode whose system memory is `sys`;
    /// `cfg.sys_size` is ignored. BOs get no per-BO memory objects: clients cannot map them
    /// (see [`Device::with_shared`]).
    pub fn with_memory(cfg: DeviceConfig, sys: Arc<dyn PhysMemory>) -> Result<Self, BindError> {
        Self::on_memories(cfg, sys, None)
    }

    /// Brings up a simulated device whose system memory and VRAM are the host's shared
    /// windows: every BO backing gets its own memory object a client can map (`cfg.sys_size`
    /// and `cfg.vram_size` are the windows' sizes).
    pub fn with_shared(mut cfg: DeviceConfig, windows: SharedWindows) -> Result<Self, BindError> {
        cfg.vram_size = windows.vram.size();
        Self::on_memories(cfg, windows.sys.clone(), Some(windows))
    }

    fn on_memories(
        cfg: DeviceConfig,
        sys: Arc<dyn PhysMemory>,
        shared: Option<SharedWindows>,
    ) -> Result<Self, BindError> {
        let vram_window = shared
            .as_ref()
            .map(|w| w.vram.clone() as Arc<dyn PhysMemory>);
        let parts = sim_hardware(&cfg, sys, vram_window);
        Self::bring_up(cfg, parts, shared)
    }

    /// Brings up the device behind `parts` (registers, DMA memory, VRAM aperture, interrupt
    /// latch); `cfg.vram_size` must not exceed the aperture, `cfg.sys_size` is ignored. An
    /// in-process simgpu in `parts.sim` is started once the hardware layer programmed it.
    /// BOs get no per-BO memory objects (no host mmap).
    pub fn with_hardware(cfg: DeviceConfig, parts: DeviceHardware) -> Result<Self, BindError> {
        Self::bring_up(cfg, parts, None)
    }

    fn bring_up(
        cfg: DeviceConfig,
        parts: DeviceHardware,
        shared: Option<SharedWindows>,
    ) -> Result<Self, BindError> {
        let DeviceHardware {
            mmio,
            dma: heap,
            vram: aperture,
            latch,
            wiring,
            sim: gpu,
            sys_end,
            cpu_window,
        } = parts;
        let hw = Arc::new(SimHw::init_wired(
            mmio,
            heap.clone(),
            latch,
            cfg.clock.clone(),
            wiring,
        )?);
        if let Some(gpu) = &gpu {
            gpu.start();
        }
        let dma: Arc<dyn DmaMemory> = heap.clone();
        let engines = start_engines(&cfg, &hw, &dma, sys_end)?;
        let vram = Arc::new(Mutex::new(VramAllocator::new(cfg.vram_size)));
        let pools = Pools::with_sharing(vram, aperture, dma.clone(), shared);
        if let Some(gpu) = &gpu {
            pools.set_observer(freed_page_observer(gpu));
        }
        let core = new_core(&cfg, &hw, &engines.copy, &pools, dma);
        let Engines {
            kmap, irq, sched, ..
        } = engines;
        let faults = start_faults(&core, &hw, &irq)?;
        Ok(Self {
            core,
            _faults: faults,
            sched,
            _irq: irq,
            hw,
            gpu,
            heap,
            vram_size: cfg.vram_size,
            pools,
            _kmap: kmap,
            next_vm: AtomicU64::new(1),
            job_timeout: cfg.job_timeout,
            cpu_window,
        })
    }

    /// The fail points (armed by tests).
    pub fn fail_points(&self) -> &FailPoints {
        &self.core.fail
    }

    /// The scheduler (user-fence wait queue, stats).
    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    /// The in-process simulated device (`None` when brought up on platform resources).
    pub fn gpu(&self) -> Option<&Arc<SimGpu>> {
        self.gpu.as_ref()
    }

    /// Where gpud sees system memory and VRAM, when the platform mapped them for clients
    /// (see [`DeviceHardware::cpu_window`]).
    pub fn cpu_window(&self) -> Option<&CpuWindow> {
        self.cpu_window.as_ref()
    }

    /// VRAM bytes the driver manages.
    pub fn vram_size(&self) -> u64 {
        self.vram_size
    }

    /// The hardware layer.
    pub fn hw(&self) -> &Arc<SimHw> {
        &self.hw
    }

    /// Bind jobs whose entry writes the copy engine performed.
    pub fn pt_copy_jobs(&self) -> u64 {
        self.core.pt_copy_jobs.load(Ordering::Relaxed)
    }

    /// Memory counters.
    pub fn mem_stats(&self) -> MemStats {
        // Backings of dropped BOs wait for their fences; the ones now free count as free.
        self.pools.reclaim();
        MemStats {
            vram_free: self.pools.vram.lock().free_bytes(),
            sys_free: self.heap.free_bytes(),
        }
    }

    /// Hardware contexts assigned to VMs now (a VM gets one when a job of it is loaded on a
    /// hardware queue, keeps it while idle until another VM needs it, and gives it back when
    /// its last reference goes): back to its old value once a client's VMs are gone.
    pub fn contexts_in_use(&self) -> usize {
        self.core.ctxs.stats().assigned as usize
    }

    /// The context pool's counters (contexts, assigned, busy, steals).
    pub fn context_stats(&self) -> ContextStats {
        self.core.ctxs.stats()
    }

    /// Creates a VM owned by no client (its MAP_USERPTR finds no address space: EFAULT).
    pub fn vm_create(&self, flags: VmFlags) -> Result<Arc<Vm>, BindError> {
        self.vm_create_for(flags, None)
    }

    /// Creates a VM of `owner`: its userptrs resolve through the address space `owner`
    /// registered ([`Device::set_client_mm`], before or after this call) and its changes
    /// reach the VM.
    pub fn vm_create_for(
        &self,
        flags: VmFlags,
        owner: Option<QueueOwner>,
    ) -> Result<Arc<Vm>, BindError> {
        crate::bind::op::check_vm_flags(flags)?;
        let id = VmId(self.next_vm.fetch_add(1, Ordering::Relaxed));
        let pager = owner.map(|o| self.core.pager(o));
        let vm = Vm::new(self.core.clone(), id, flags, pager)?;
        self.core.vms.lock().insert(id, Arc::downgrade(&vm));
        Ok(vm)
    }

    /// Creates a BO; with `vm` it is private to that VM (shares its reservation).
    pub fn bo_create(
        &self,
        size: u64,
        placement: Placement,
        vm: Option<&Arc<Vm>>,
    ) -> Result<Arc<Bo>, BindError> {
        self.bo_create_with(size, placement, vm, false)
    }

    /// [`Device::bo_create`]; with `contiguous` its VRAM backings are one physically
    /// contiguous range (`NEEDS_VISIBLE_VRAM`: CPU-mappable by address).
    pub fn bo_create_with(
        &self,
        size: u64,
        placement: Placement,
        vm: Option<&Arc<Vm>>,
        contiguous: bool,
    ) -> Result<Arc<Bo>, BindError> {
        let resv = vm.map(|v| v.resv().clone());
        let (bo, report) = self
            .core
            .mm
            .create_bo_with(size, placement, resv, contiguous)?;
        self.core.route_evictions(report, None);
        Ok(bo)
    }

    /// Evicts `bo` to system memory (tests and memory pressure); its VMs rebind it before
    /// their next job.
    pub fn evict(&self, bo: &Arc<Bo>) -> Result<(), BindError> {
        // Moves happen under the BO's reservation, like validation on the exec path.
        let mut exec = Exec::new(ExecFlags::empty());
        exec.run(|e| e.prepare_obj(bo.reservation(), 1))?;
        let mut report = EvictReport::default();
        let res = self.core.mm.evict(bo, &mut report);
        drop(exec);
        self.core.route_evictions(report, None);
        Ok(res?)
    }

    /// Creates a normal-priority exec queue of `vm` on `engine`, charged to no client.
    pub fn exec_queue_create(&self, vm: &Arc<Vm>, engine: Engine) -> Result<ExecQueue, BindError> {
        self.exec_queue_create_with(vm, engine, Priority::Normal, None, BatchFormat::Native)
    }

    /// Creates an exec queue of `vm` on `engine` at `priority`, charged to `owner` (the
    /// per-owner queue limit counts it), whose batches are encoded as `batches`. Its fence
    /// page is reached through the global GTT (the kernel linear map), never through the
    /// VM's page tables.
    pub fn exec_queue_create_with(
        &self,
        vm: &Arc<Vm>,
        engine: Engine,
        priority: Priority,
        owner: Option<QueueOwner>,
        batches: BatchFormat,
    ) -> Result<ExecQueue, BindError> {
        vm.check_alive()?;
        let page = self.core.dma.alloc(PAGE_SIZE)?;
        let va = KernelMap::va(MemLocation::System, page.addr);
        let mode = if vm.flags().contains(VmFlags::LR_MODE) {
            QueueMode::LongRunning
        } else {
            QueueMode::Dma {
                timeout: self.job_timeout,
            }
        };
        let queue = self.sched.create_queue(QueueConfig {
            engine,
            // Unused: the VM hands its queues a pool context each time they are loaded.
            ctx: KERNEL_CTX,
            fence_page: FencePage { va, pa: page.addr },
            fence_region: Some(page),
            mode,
            vm: Some(vm.clone()),
            priority,
            owner,
            batches,
        });
        if queue.is_err() {
            let _ = self.core.dma.free(page);
        }
        Ok(queue?)
    }

    /// `owner`'s engine busy time so far (the scheduler's account, running jobs included).
    pub fn engine_busy(&self, owner: QueueOwner) -> EngineBusy {
        self.sched.busy(owner)
    }

    /// `owner` went away: its busy-time account and its address space go (every VM of it
    /// drops its userptr pages: zap, invalidate, then release).
    pub fn forget_owner(&self, owner: QueueOwner) {
        self.sched.forget_owner(owner);
        let pager = self.core.pagers.lock().remove(&owner);
        if let Some(p) = pager {
            p.forget();
        }
    }

    /// Registers `owner`'s address space (the platform calls this once per client
    /// connection that hands gpud its memory manager): MAP_USERPTR of the owner's VMs
    /// resolves pages through it, and its events reach those VMs' notifier path. A second
    /// registration replaces the first (the VMs drop the pages of the old one).
    pub fn set_client_mm(&self, owner: QueueOwner, mm: Arc<dyn ClientMm>) {
        self.core.pager(owner).set_mm(mm);
    }

    /// The address space `owner` registered, if any (what its VMs' MAP_USERPTR uses).
    pub fn client_mm(&self, owner: QueueOwner) -> Option<Arc<dyn ClientMm>> {
        let pager = self.core.pagers.lock().get(&owner).cloned();
        pager.and_then(|p| p.mm())
    }

    /// The memories BO backings come from (the host's userptr binds client memfds over
    /// places of its system-memory window, `Pools::pin_foreign`).
    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    /// The system memory the device reaches by DMA (test clients' fake address spaces take
    /// their pages from it, see `svm::fake`).
    pub fn dma(&self) -> &Arc<dyn DmaMemory> {
        &self.core.dma
    }

    /// Creates an extra bind queue (in order within itself, independent of other queues).
    pub fn bind_queue_create(&self, vm: &Arc<Vm>) -> Result<BindQueue, BindError> {
        vm.check_alive()?;
        let q = BindQueue::new();
        vm.add_queue(&q);
        Ok(q)
    }

    /// Destroys `vm` (see [`Vm`]'s destroy rules): later calls report it gone.
    pub fn vm_destroy(&self, vm: &Arc<Vm>) {
        vm.destroy();
        self.core.vms.lock().remove(&vm.id());
    }

    /// [`Device::vm_destroy`] without waiting: closes the VM and forgets it, and returns the
    /// bind fences still pending; the caller runs [`Vm::release_tree`] once they signalled.
    pub fn vm_close(&self, vm: &Arc<Vm>) -> Vec<Arc<crate::sync::Fence>> {
        let pending = vm.close();
        self.core.vms.lock().remove(&vm.id());
        pending
    }
}
