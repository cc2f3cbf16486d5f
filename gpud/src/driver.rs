//! gpud's implementation of the scheme's `GpuDriver` trait on top of [`Device`].
//!
//! Owns: [`Driver`] (resolved scheme calls → device calls, typed device errors → the
//! `DriverError` classes of `docs/uapi.md`), the per-client accounting behind
//! `client_usage` / `client_stop`, the `stats` lines, the host `bo_memory` seam (every
//! BO backing has its own memory object, so a client maps exactly its BO: `fd + 0`), and,
//! when the device has a CPU window (Redox), `bo_mmap` / `bo_munmap` by address through
//! [`CpuMaps`] (a pin and a BO reference per live mapping).
//! Must not: decode wire input or know client ids' namespaces (the scheme resolves them), nor
//! implement binds, scheduling or memory placement (`bind`, `exec`, `mem` do).

use crate::bind::{BindError, BindFlags, BindOp, BindQueue, BindSync, OpKind, Vm, VmFlags};
use crate::device::Device;
use crate::exec::{ExecQueue, Job, OutSync, Priority};
use crate::hw::cmd::BatchFormat;
use crate::hw::pte::{PAT_TABLE, VA_BITS};
use crate::hw::Engine;
use crate::mem::bo::BoError;
use crate::mem::bo::{Bo, Placement};
use crate::mem::cpu_map::{CpuMapError, CpuMaps};
use crate::sync::{Fence, FenceContext, FenceStatus, Syncobj, Usage};
use crate::types::{GpuVa, PAGE_SIZE};
use crate::vm::{GpuBo, MappingFlags};
use gpu_scheme::driver::{
    ClientId, ClientUsage, DeviceInfo, DriverError, GpuDriver, HeldBo, MappingBacking, PointState,
    ResolvedBindOp, ResolvedSync, Submitted, VmMapping, WakeToken,
};
use gpu_scheme::uapi::flags::{
    BatchFormat as WireBatchFormat, BoCreateFlags, EngineClass, Placement as WirePlacement,
    QueuePriority, VmCreateFlags,
};
use gpu_scheme::uapi::request::{BindOpKind, BoCreateRequest};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;
use syscall::flag::MapFlags;

/// Dwords a batch may run before BATCH_END (the batch normally ends earlier at BATCH_END).
pub const BATCH_MAX_DWORDS: u32 = 1 << 16;

/// An exec queue or an extra bind queue, as the scheme holds it.
#[derive(Clone)]
pub enum DriverQueue {
    /// A copy or compute exec queue of a VM.
    Exec {
        /// The queue.
        queue: Arc<ExecQueue>,
        /// Its VM.
        vm: Arc<Vm>,
        /// The fence of its newest job (jobs of a queue complete in order).
        last: Arc<Mutex<Option<Arc<Fence>>>>,
    },
    /// An in-order bind queue of a VM.
    Bind(BindQueue),
}

/// Work a parked call waits for: it is answered when every fence signalled, with
/// `on_fault` if one of them failed (when set), else with the outcome a worker recorded.
#[derive(Clone)]
pub struct DriverPending {
    fences: Vec<Arc<Fence>>,
    on_fault: Option<DriverError>,
    outcome: Option<Outcome>,
}

/// What a worker recorded for a parked call (`None` until it ran).
type Outcome = Arc<Mutex<Option<Result<(), DriverError>>>>;

impl DriverPending {
    /// Done when `fences` signalled; a failed one answers `on_fault` (`None`: failures of
    /// these fences are not the caller's error).
    pub fn fences(fences: Vec<Arc<Fence>>, on_fault: Option<DriverError>) -> Option<Self> {
        let fences: Vec<Arc<Fence>> = fences.into_iter().filter(|f| !f.is_signalled()).collect();
        let failed = on_fault.is_some()
            && fences
                .iter()
                .any(|f| matches!(f.status(), FenceStatus::Failed(_)));
        (!fences.is_empty() || failed).then_some(Self {
            fences,
            on_fault,
            outcome: None,
        })
    }

    fn state(&self) -> Option<Result<(), DriverError>> {
        if self.fences.iter().any(|f| !f.is_signalled()) {
            return None;
        }
        if let Some(e) = &self.on_fault {
            if self
                .fences
                .iter()
                .any(|f| matches!(f.status(), FenceStatus::Failed(_)))
            {
                return Some(Err(e.clone()));
            }
        }
        match &self.outcome {
            Some(o) => Some(o.lock().clone().unwrap_or(Err(DriverError::Interrupted))),
            None => Some(Ok(())),
        }
    }
}

/// Fires `wake` when `fence` signals (at once if it has); `true`.
fn watch_fence(fence: &Fence, wake: WakeToken) -> bool {
    fence.on_signal(move |_| wake.fire());
    true
}

/// What the driver tracks per client.
#[derive(Default)]
struct ClientState {
    vms: Vec<Weak<Vm>>,
    in_flight: Vec<Arc<Fence>>,
    /// Its exec queues, killed when the client stops.
    exec_queues: Vec<Weak<ExecQueue>>,
    /// The BOs it created (their memory and evictions are in its stats).
    bos: Vec<Weak<Bo>>,
    bos_created: u64,
    binds: u64,
    execs: u64,
}

impl ClientState {
    fn prune(&mut self) {
        self.in_flight.retain(|f| !f.is_signalled());
        self.vms.retain(|w| w.strong_count() > 0);
        self.bos.retain(|w| w.strong_count() > 0);
    }
}

/// The driver the scheme serves.
pub struct Driver {
    device: Arc<Device>,
    clients: Arc<Mutex<HashMap<ClientId, ClientState>>>,
    /// Runs EXEC preparations that must move BOs (never on the request thread).
    worker: worker::Worker,
    /// Finishes VM teardown after the VM's running bind jobs (holding the VM until then).
    reaper: worker::Worker,
    /// Fences of worker preparations ("this EXEC was submitted or refused").
    prep_fences: FenceContext,
    prep_seqno: std::sync::atomic::AtomicU64,
    start: Instant,
    sys_size: u64,
    /// Live in-process CPU mappings (only with a CPU window).
    cpu_maps: CpuMaps,
    /// The device's PCI address (`drm-pdev`), when gpud drives a PCI function.
    pdev: Option<String>,
    /// How host clients get BO memory when it is not in shared windows (`gpud vfio`).
    #[cfg(target_os = "linux")]
    exporter: Option<Arc<dyn BoExporter>>,
    /// Each host client's memory manager (its userfaultfd and memfds, MM_FD), also
    /// registered with the device for its VMs' MAP_USERPTR.
    #[cfg(target_os = "linux")]
    mms: Mutex<HashMap<ClientId, Arc<crate::svm::uffd::UffdMm>>>,
    /// Per-client limits of those memory managers.
    #[cfg(target_os = "linux")]
    mm_limits: crate::svm::uffd::MmLimits,
    /// BOs whose memory an exporter handed out: kept allocated and in place while gpud runs,
    /// since a host client's `munmap` is invisible and the fd may outlive the BO handle.
    #[cfg(target_os = "linux")]
    exported: Mutex<HashMap<crate::types::BoId, Arc<Bo>>>,
}

/// Hands host clients an fd of BO memory that is not in shared windows: on `gpud vfio` a
/// udmabuf over exactly the BO's pages of the DMA pool.
#[cfg(target_os = "linux")]
pub trait BoExporter: Send + Sync {
    /// An fd holding `ranges` (gpud CPU addresses and lengths, page-aligned) in order from
    /// the returned file offset, and nothing a client may not see.
    fn export(
        &self,
        ranges: &[(crate::types::CpuVa, u64)],
    ) -> Result<(std::os::fd::OwnedFd, u64), DriverError>;
}

/// The scheme's error for a device error.
pub fn driver_error(e: &BindError) -> DriverError {
    DriverError::from(e)
}

impl Driver {
    /// A driver over `device` with `sys_size` bytes of system memory. BOs can be mapped by
    /// client processes when the device's memories are shared windows
    /// ([`Device::with_shared`]).
    pub fn new(device: Arc<Device>, sys_size: u64) -> Self {
        Self {
            sys_size,
            device,
            clients: Arc::new(Mutex::new(HashMap::new())),
            worker: worker::Worker::new("gpud-prep"),
            reaper: worker::Worker::new("gpud-reaper"),
            prep_fences: FenceContext::alloc(),
            prep_seqno: std::sync::atomic::AtomicU64::new(0),
            start: Instant::now(),
            cpu_maps: CpuMaps::new(),
            pdev: None,
            #[cfg(target_os = "linux")]
            exporter: None,
            #[cfg(target_os = "linux")]
            exported: Mutex::new(HashMap::new()),
            #[cfg(target_os = "linux")]
            mms: Mutex::new(HashMap::new()),
            #[cfg(target_os = "linux")]
            mm_limits: crate::svm::uffd::MmLimits::default(),
        }
    }

    /// Sets the per-client limits of host clients' memory managers (userptr regions).
    #[cfg(target_os = "linux")]
    pub fn with_mm_limits(mut self, limits: crate::svm::uffd::MmLimits) -> Self {
        self.mm_limits = limits;
        self
    }

    /// Host clients whose memory manager gpud holds now (their userfaultfds).
    #[cfg(target_os = "linux")]
    pub fn userptr_clients(&self) -> usize {
        self.mms.lock().len()
    }

    /// The memory manager a host client handed over (MM_FD), if any.
    #[cfg(target_os = "linux")]
    pub fn client_uffd_mm(&self, client: ClientId) -> Option<Arc<crate::svm::uffd::UffdMm>> {
        self.mms.lock().get(&client).cloned()
    }

    /// Names the PCI function the device is (`segment:bus:device.function`, as
    /// `0000:00:04.0`), for the clients' `drm-pdev` stats line.
    pub fn with_pdev(mut self, pdev: String) -> Self {
        self.pdev = Some(pdev);
        self
    }

    /// Hands host clients BO memory through `exporter` when the BO is not in a shared window.
    #[cfg(target_os = "linux")]
    pub fn with_exporter(mut self, exporter: Arc<dyn BoExporter>) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// BOs whose memory was exported (kept until gpud exits).
    #[cfg(target_os = "linux")]
    pub fn exported_bos(&self) -> usize {
        self.exported.lock().len()
    }

    /// An exported fd of `bo`'s memory: the BO is pinned in place and kept for good.
    #[cfg(target_os = "linux")]
    fn export_bo(
        &self,
        exporter: &dyn BoExporter,
        bo: &Arc<Bo>,
    ) -> Result<(std::os::fd::OwnedFd, u64), DriverError> {
        let window = self
            .device
            .cpu_window()
            .ok_or(DriverError::NotSupported("BO mapping without a CPU window"))?;
        let id = GpuBo::id(bo.as_ref());
        let (location, segments) = bo.pin_in_place().map_err(mapping_error)?;
        let ranges: Result<Vec<(crate::types::CpuVa, u64)>, _> = match location {
            crate::hw::MemLocation::System => segments
                .iter()
                .map(|s| window.sys_addr(s.addr, s.len).map(|a| (a, s.len)))
                .collect(),
            crate::hw::MemLocation::Vram => {
                bo.unpin();
                return Err(DriverError::NotSupported(
                    "mapping a VRAM BO through the host transport",
                ));
            }
        };
        let fd = ranges
            .map_err(|_| DriverError::NotSupported("BO memory outside the CPU window"))
            .and_then(|r| exporter.export(&r));
        let mut exported = self.exported.lock();
        if fd.is_err() || exported.contains_key(&id) {
            // One pin per exported BO is enough (it never moves again).
            bo.unpin();
        }
        if fd.is_ok() {
            exported.entry(id).or_insert_with(|| bo.clone());
        }
        fd
    }

    /// The live in-process CPU mappings (Redox `mmap_prep` through the CPU window).
    pub fn cpu_maps(&self) -> &CpuMaps {
        &self.cpu_maps
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    fn with_client<R>(&self, client: ClientId, f: impl FnOnce(&mut ClientState) -> R) -> R {
        let mut map = self.clients.lock();
        let st = map.entry(client).or_default();
        st.prune();
        f(st)
    }

    /// The mapping table of `vm` in VA order, as the scheme's VM view reports it.
    pub fn vm_mappings(vm: &Vm) -> Vec<VmMapping> {
        vm.with_state(|st| {
            st.gpuvm
                .tree()
                .iter()
                .map(|m| {
                    let r = m.range();
                    let f = m.flags();
                    let backing = match m.bo_id() {
                        Some(bo) => MappingBacking::Bo {
                            key: bo.0,
                            offset: m.offset(),
                        },
                        None if f.contains(MappingFlags::USERPTR) => {
                            MappingBacking::Userptr { addr: m.offset() }
                        }
                        None if f.contains(MappingFlags::CPU_MIRROR) => MappingBacking::Mirror,
                        None => MappingBacking::Null,
                    };
                    VmMapping {
                        start: r.start().get(),
                        end: r.start().get().saturating_add(r.len()),
                        backing,
                        read_only: f.contains(MappingFlags::READ_ONLY),
                    }
                })
                .collect()
        })
    }
}

/// The scheduler's priority for a wire priority.
fn batch_format(f: WireBatchFormat) -> BatchFormat {
    match f {
        WireBatchFormat::Native => BatchFormat::Native,
        WireBatchFormat::Intel => BatchFormat::Intel,
    }
}

fn exec_priority(p: QueuePriority) -> Priority {
    match p {
        QueuePriority::Low => Priority::Low,
        QueuePriority::Normal => Priority::Normal,
        QueuePriority::High => Priority::High,
    }
}

fn bind_err(e: BindError) -> DriverError {
    driver_error(&e)
}

fn placement(p: WirePlacement) -> Result<Placement, DriverError> {
    let sys = p.contains(WirePlacement::SYSTEM);
    let vram = p.contains(WirePlacement::VRAM);
    match (sys, vram) {
        (true, true) => Ok(Placement::Migratable),
        (true, false) => Ok(Placement::System),
        (false, true) => Ok(Placement::Vram),
        (false, false) => Err(DriverError::Invalid("empty placement")),
    }
}

/// A scheme bind op as the bind engine's op (the flags are the uAPI's own type: nothing to
/// convert or drop).
fn bind_op(r: &ResolvedBindOp<Arc<Bo>>) -> Result<BindOp, DriverError> {
    let op = &r.op;
    let flags = op.flags;
    let base = |kind, bo: Option<Arc<Bo>>, offset| BindOp {
        kind,
        bo,
        offset,
        addr: GpuVa(op.addr),
        range: op.range,
        flags,
        pat_index: op.pat_index,
        prefetch_region: crate::bind::Region::Preferred,
    };
    Ok(match op.kind {
        BindOpKind::Map { bo_offset, .. } => base(OpKind::Map, r.bo.clone(), bo_offset),
        BindOpKind::MapNull => base(OpKind::Map, None, 0).with_flags(BindFlags::NULL),
        BindOpKind::MapCpuMirror => {
            base(OpKind::Map, None, 0).with_flags(BindFlags::CPU_ADDR_MIRROR)
        }
        BindOpKind::MapUserptr { userptr } => base(OpKind::MapUserptr, None, userptr),
        BindOpKind::Unmap => base(OpKind::Unmap, None, 0),
        BindOpKind::UnmapAll { .. } => base(OpKind::UnmapAll, r.bo.clone(), 0),
        BindOpKind::Prefetch { region } => BindOp {
            prefetch_region: region,
            ..base(OpKind::Prefetch, None, 0)
        },
    })
}

/// Scheme point 0 means "binary"; the bind engine says `None`.
fn point(p: u64) -> Option<u64> {
    (p != 0).then_some(p)
}

fn bind_syncs(syncs: Vec<ResolvedSync<Arc<Syncobj>>>) -> Vec<BindSync> {
    syncs
        .into_iter()
        .map(|s| match s {
            ResolvedSync::Wait(o, p) => BindSync::Wait(o, point(p)),
            ResolvedSync::Signal(o, p) => BindSync::Signal(o, point(p)),
            ResolvedSync::UserFence { addr, value } => BindSync::UserFence {
                va: GpuVa(addr),
                value,
            },
        })
        .collect()
}

/// Builds the exec jobs: waits on the first, signals and the user fence on the last.
fn exec_jobs(
    batches: &[u64],
    syncs: Vec<ResolvedSync<Arc<Syncobj>>>,
    lr: bool,
) -> Result<Vec<Job>, DriverError> {
    let mut jobs: Vec<Job> = batches
        .iter()
        .map(|&va| Job::batch(GpuVa(va), BATCH_MAX_DWORDS))
        .collect();
    if jobs.is_empty() {
        jobs.push(Job::sync_only());
    }
    let mut deps = Vec::new();
    let mut outs = Vec::new();
    let mut ufence = None;
    for s in syncs {
        match s {
            ResolvedSync::Wait(o, p) => deps.push(
                o.find_fence(p)
                    .map_err(|_| DriverError::NoFence { point: p })?,
            ),
            ResolvedSync::Signal(_, _) if lr => {
                return Err(DriverError::NotSupported(
                    "syncobj signal on a long-running VM",
                ))
            }
            ResolvedSync::Signal(o, 0) => outs.push(OutSync::Binary(o)),
            ResolvedSync::Signal(o, p) => outs.push(OutSync::Timeline(o, p)),
            ResolvedSync::UserFence { addr, .. } if addr % 8 != 0 => {
                return Err(DriverError::Invalid(
                    "user fence address not 8-byte aligned",
                ))
            }
            ResolvedSync::UserFence { .. } if ufence.is_some() => {
                return Err(DriverError::Invalid("more than one user fence"))
            }
            ResolvedSync::UserFence { addr, value } => ufence = Some((GpuVa(addr), value)),
        }
    }
    if let Some(first) = jobs.first_mut() {
        first.deps.extend(deps);
    }
    if let Some(last) = jobs.last_mut() {
        last.out_syncs.extend(outs);
        if let Some((va, value)) = ufence {
            *last = std::mem::replace(last, Job::sync_only()).with_user_fence(va, value);
        }
    }
    Ok(jobs)
}

/// The newest job fence of an exec queue.
type LastFence = Arc<Mutex<Option<Arc<Fence>>>>;

/// Submits an EXEC's jobs in order, recording each as the queue's newest; their fences.
fn submit_jobs(
    queue: &ExecQueue,
    last: &LastFence,
    jobs: Vec<Job>,
) -> Result<Vec<Arc<Fence>>, DriverError> {
    let mut fences = Vec::with_capacity(jobs.len());
    for job in jobs {
        let fence = queue
            .submit(job)
            .map_err(|e| bind_err(BindError::Exec(e)))?;
        *last.lock() = Some(fence.clone());
        fences.push(fence);
    }
    Ok(fences)
}

impl Driver {
    /// An EXEC whose VM must move BOs back first: the submission (revalidation, rebinds,
    /// moves, then the jobs) runs on the worker; the call is answered when it is done, with
    /// the same errors an inline submission gives.
    fn exec_on_worker(
        &self,
        client: ClientId,
        (queue, last): (Arc<ExecQueue>, LastFence),
        jobs: Vec<Job>,
    ) -> DriverPending {
        let seq = self
            .prep_seqno
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let done = Fence::new(self.prep_fences, seq);
        let outcome = Arc::new(Mutex::new(None));
        let (d, o, clients) = (done.clone(), outcome.clone(), self.clients.clone());
        self.worker.run(move || {
            let result = submit_jobs(&queue, &last, jobs).map(|fences| {
                if let Some(st) = clients.lock().get_mut(&client) {
                    st.in_flight.extend(fences);
                }
            });
            *o.lock() = Some(result);
            // This worker owns the fence; signalling once cannot fail.
            let _ = d.signal();
        });
        DriverPending {
            fences: vec![done],
            on_fault: None,
            outcome: Some(outcome),
        }
    }
}

/// The BO and offset behind `addr` in `vm`.
fn bo_at(vm: &Vm, addr: u64) -> Result<(Arc<Bo>, u64), DriverError> {
    vm.backing_at(GpuVa(addr))
        .ok_or(DriverError::Fault { addr })
}

impl GpuDriver for Driver {
    type Vm = Arc<Vm>;
    type Bo = Arc<Bo>;
    type Queue = DriverQueue;
    type Syncobj = Arc<Syncobj>;
    type Pending = DriverPending;

    fn device_info(&self) -> DeviceInfo {
        let mem = self.device.mem_stats();
        DeviceInfo {
            va_bits: VA_BITS,
            engine_mask: (1 << EngineClass::Copy as u32) | (1 << EngineClass::Compute as u32),
            page_sizes: PAGE_SIZE | (2 << 20) | (1 << 30),
            sys_size: self.sys_size,
            sys_free: mem.sys_free,
            vram_size: self.device.vram_size(),
            vram_free: mem.vram_free,
            // Nothing is reserved (the fields stay for a driver that needs a range).
            reserved_va_start: 0,
            reserved_va_len: 0,
            pat_entries: PAT_TABLE.len() as u32,
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn client_usage(&self, client: ClientId) -> ClientUsage {
        // The VM trees are read after the client table is released (see docs/serve.md).
        let (in_flight, vms) = self.with_client(client, |st| {
            let vms: Vec<Arc<Vm>> = st.vms.iter().filter_map(Weak::upgrade).collect();
            (st.in_flight.len() as u64, vms)
        });
        #[cfg(target_os = "linux")]
        let pinned = self
            .client_uffd_mm(client)
            .map_or(0, |mm| mm.pinned_bytes());
        #[cfg(not(target_os = "linux"))]
        let pinned = 0;
        ClientUsage {
            in_flight,
            gpu_mappings: vms.iter().map(|vm| vm.mapping_count()).sum(),
            table_bytes: vms.iter().map(|vm| vm.table_bytes()).sum(),
            userptr_bytes: pinned,
        }
    }

    fn client_stop(&self, client: ClientId) {
        // No waiting here: killing the exec queues preempts their running jobs off the engine
        // (their fences fail once they are off; the queue keeps its VM and BOs alive until
        // then), destroying the queues cancels their queued jobs and destroying the VMs
        // cancels queued binds.
        // The client's address space is gone for gpud: its memory manager says so to its
        // VMs (their userptrs are invalid from now on) and releases its userfaultfd.
        #[cfg(target_os = "linux")]
        if let Some(mm) = self.mms.lock().remove(&client) {
            mm.shutdown();
        }
        let st = self.clients.lock().remove(&client);
        for q in st.iter().flat_map(|st| st.exec_queues.iter()) {
            if let Some(q) = q.upgrade() {
                q.kill();
            }
        }
        self.device.forget_owner(client.0);
    }

    fn stats(&self, client: Option<ClientId>) -> Vec<(String, String)> {
        match client {
            Some(c) => {
                let (mut lines, bos, vms) = self.with_client(c, |st| {
                    let lines: Vec<(String, String)> = vec![
                        ("vms".into(), st.vms.len().to_string()),
                        ("bos_created".into(), st.bos_created.to_string()),
                        ("binds".into(), st.binds.to_string()),
                        ("execs".into(), st.execs.to_string()),
                    ];
                    let bos: Vec<Arc<Bo>> = st.bos.iter().filter_map(Weak::upgrade).collect();
                    let vms: Vec<Arc<Vm>> = st.vms.iter().filter_map(Weak::upgrade).collect();
                    (lines, bos, vms)
                });
                // BOs and the scheduler are read after the client table is released.
                let busy = self.device.engine_busy(c.0);
                let device = stats::DeviceLines {
                    pdev: self.pdev.as_deref(),
                    queues_per_engine: self.device.hw().info().queues_per_engine,
                };
                lines.extend(stats::fdinfo_lines(c.0, &device, busy, &bos, &vms));
                #[cfg(target_os = "linux")]
                if let Some(mm) = self.client_uffd_mm(c) {
                    lines.push(("userptr_regions".into(), mm.regions().to_string()));
                    lines.push(("userptr_bytes".into(), mm.pinned_bytes().to_string()));
                    lines.push(("userptr_events".into(), mm.events_read().to_string()));
                }
                lines
            }
            None => {
                let mem = self.device.mem_stats();
                let clients = self.clients.lock().len();
                #[allow(unused_mut)] // extended on Linux only
                let mut lines = vec![
                    ("clients".into(), clients.to_string()),
                    (
                        "contexts_in_use".into(),
                        self.device.contexts_in_use().to_string(),
                    ),
                    (
                        "contexts_busy".into(),
                        self.device.context_stats().busy.to_string(),
                    ),
                    (
                        "context_steals".into(),
                        self.device.context_stats().steals.to_string(),
                    ),
                    ("vram_free".into(), mem.vram_free.to_string()),
                    ("sys_free".into(), mem.sys_free.to_string()),
                    (
                        "pt_copy_jobs".into(),
                        self.device.pt_copy_jobs().to_string(),
                    ),
                ];
                #[cfg(target_os = "linux")]
                lines.push(("userptr_clients".into(), self.userptr_clients().to_string()));
                lines
            }
        }
    }

    fn memory_stats(&self, bos: &[HeldBo<'_, Arc<Bo>>]) -> Vec<(String, String)> {
        stats::memory_lines(bos)
    }

    fn vm_create(&self, client: ClientId, flags: VmCreateFlags) -> Result<Arc<Vm>, DriverError> {
        let vm = self
            .device
            .vm_create_for(flags, Some(client.0))
            .map_err(bind_err)?;
        self.with_client(client, |st| st.vms.push(Arc::downgrade(&vm)));
        Ok(vm)
    }

    fn vm_destroy(&self, vm: &Arc<Vm>) -> Submitted<DriverPending> {
        // Closing cancels queued binds; the tree is released once running bind jobs are done,
        // on the reaper (which holds the VM until then), never here.
        let binds = self.device.vm_close(vm);
        let mut in_flight = binds.clone();
        in_flight.extend(vm.resv().fences(Usage::Bookkeep));
        if binds.is_empty() {
            vm.release_tree();
        } else {
            let vm = vm.clone();
            self.reaper.run(move || {
                for f in binds {
                    let _ = f.wait(Some(crate::bind::queue::BIND_WAIT_LIMIT));
                }
                vm.release_tree();
            });
        }
        // Answered when the VM's work retired; its failures are not the caller's.
        Ok(DriverPending::fences(in_flight, None))
    }

    fn vm_key(&self, vm: &Arc<Vm>) -> u64 {
        vm.id().0
    }

    fn bo_key(&self, bo: &Arc<Bo>) -> u64 {
        GpuBo::id(bo.as_ref()).0
    }

    fn vm_mapping_count(&self, vm: &Arc<Vm>) -> u64 {
        // Never `vm.lock`: the prep worker may hold it across revalidation copies.
        vm.mapping_count()
    }

    fn vm_table(&self, vm: &Arc<Vm>) -> Result<Vec<VmMapping>, DriverError> {
        // A destroyed VM's tree may still hold mappings until its teardown finishes; a view
        // must not show them as live.
        if vm.is_closed() {
            return Err(DriverError::VmGone);
        }
        Ok(Self::vm_mappings(vm))
    }

    fn bo_create(
        &self,
        client: ClientId,
        req: &BoCreateRequest,
        vm: Option<&Arc<Vm>>,
    ) -> Result<Arc<Bo>, DriverError> {
        let visible = req.flags.contains(BoCreateFlags::NEEDS_VISIBLE_VRAM);
        let bo = self
            .device
            .bo_create_with(req.size, placement(req.placement)?, vm, visible)
            .map_err(bind_err)?;
        self.with_client(client, |st| {
            st.bos_created += 1;
            st.bos.push(Arc::downgrade(&bo));
        });
        Ok(bo)
    }

    fn bo_size(&self, bo: &Arc<Bo>) -> u64 {
        GpuBo::size(bo.as_ref())
    }

    fn queue_create(
        &self,
        client: ClientId,
        vm: &Arc<Vm>,
        class: EngineClass,
        priority: QueuePriority,
        batches: WireBatchFormat,
    ) -> Result<DriverQueue, DriverError> {
        let engine = match class {
            EngineClass::VmBind => {
                let q = self.device.bind_queue_create(vm).map_err(bind_err)?;
                return Ok(DriverQueue::Bind(q));
            }
            EngineClass::Copy => Engine::Copy,
            EngineClass::Compute => Engine::Compute,
        };
        let queue = self
            .device
            .exec_queue_create_with(
                vm,
                engine,
                exec_priority(priority),
                Some(client.0),
                batch_format(batches),
            )
            .map_err(bind_err)?;
        let queue = Arc::new(queue);
        self.with_client(client, |st| {
            st.exec_queues.retain(|q| q.strong_count() > 0);
            st.exec_queues.push(Arc::downgrade(&queue));
        });
        Ok(DriverQueue::Exec {
            queue,
            vm: vm.clone(),
            last: Arc::new(Mutex::new(None)),
        })
    }

    fn queue_destroy(&self, queue: &DriverQueue) -> Submitted<DriverPending> {
        // The queue closes when the scheme drops its last clone (queued jobs are cancelled,
        // a running one keeps its VM until it retires); the call is answered then.
        let last = match queue {
            DriverQueue::Exec { last, .. } => last.lock().clone(),
            DriverQueue::Bind(q) => q.last_fence(),
        };
        Ok(DriverPending::fences(last.into_iter().collect(), None))
    }

    fn vm_bind(
        &self,
        client: ClientId,
        vm: &Arc<Vm>,
        queue: Option<&DriverQueue>,
        ops: Vec<ResolvedBindOp<Arc<Bo>>>,
        syncs: Vec<ResolvedSync<Arc<Syncobj>>>,
    ) -> Submitted<DriverPending> {
        let bq = match queue {
            None => None,
            Some(DriverQueue::Bind(q)) => Some(q),
            Some(DriverQueue::Exec { .. }) => {
                return Err(DriverError::Invalid("VM_BIND on an exec queue"))
            }
        };
        let ops = ops.iter().map(bind_op).collect::<Result<Vec<_>, _>>()?;
        let syncs = bind_syncs(syncs);
        let synchronous = syncs.is_empty();
        let fence = vm.bind_nowait(bq, &ops, &syncs).map_err(bind_err)?;
        self.with_client(client, |st| {
            st.binds += 1;
            if !fence.is_signalled() {
                st.in_flight.push(fence.clone());
            }
        });
        // A synchronous bind behind other work is answered when its job ran; a failed job
        // banned the VM, as an inline failure does (ENOENT).
        Ok(synchronous
            .then(|| DriverPending::fences(vec![fence], Some(DriverError::VmGone)))
            .flatten())
    }

    fn exec(
        &self,
        client: ClientId,
        queue: &DriverQueue,
        batches: &[u64],
        syncs: Vec<ResolvedSync<Arc<Syncobj>>>,
    ) -> Submitted<DriverPending> {
        let DriverQueue::Exec { queue, vm, last } = queue else {
            return Err(DriverError::Invalid("EXEC on a bind queue"));
        };
        if batches.iter().any(|&b| b % 8 != 0) {
            return Err(DriverError::Invalid("batch address not 8-byte aligned"));
        }
        let jobs = exec_jobs(batches, syncs, vm.flags().contains(VmFlags::LR_MODE))?;
        self.with_client(client, |st| st.execs += 1);
        if vm.needs_revalidation() {
            let queue = (queue.clone(), last.clone());
            return Ok(Some(self.exec_on_worker(client, queue, jobs)));
        }
        let fences = submit_jobs(queue, last, jobs)?;
        self.with_client(client, |st| st.in_flight.extend(fences));
        Ok(None)
    }

    fn pending_state(&self, pending: &DriverPending) -> Option<Result<(), DriverError>> {
        pending.state()
    }

    fn watch_pending(&self, pending: &DriverPending, wake: WakeToken) -> bool {
        for f in &pending.fences {
            watch_fence(f, wake.clone());
        }
        !pending.fences.is_empty()
    }

    fn watch_syncobj(&self, s: &Arc<Syncobj>, point: u64, wake: WakeToken) -> bool {
        let fence = if point == 0 {
            s.fence()
        } else {
            s.find_fence(point).ok()
        };
        fence.is_some_and(|f| watch_fence(&f, wake))
    }

    fn watch_in_flight(&self, client: ClientId, wake: WakeToken) -> bool {
        // The oldest work still in flight: it is first to complete in the common case; if a
        // later one completes first, the parked EXEC waits a little longer, never forever.
        let oldest = self.with_client(client, |st| st.in_flight.first().cloned());
        oldest.is_some_and(|f| watch_fence(&f, wake))
    }

    fn watch_user_fence(&self, vm: &Arc<Vm>, wake: WakeToken) -> bool {
        // Every bind and exec job of the VM publishes its fence on the VM resv; the value a
        // job's user fence writes is there once that fence signals.
        let fences: Vec<Arc<Fence>> = vm
            .resv()
            .fences(Usage::Bookkeep)
            .into_iter()
            .filter(|f| !f.is_signalled())
            .collect();
        for f in &fences {
            watch_fence(f, wake.clone());
        }
        !fences.is_empty()
    }

    fn user_fence_value(
        &self,
        vm: &Arc<Vm>,
        queue: Option<&DriverQueue>,
        addr: u64,
    ) -> Result<u64, DriverError> {
        if let Some(DriverQueue::Exec { queue, .. }) = queue {
            if queue.is_banned() {
                return Err(DriverError::DeviceError);
            }
        }
        if addr % 8 != 0 {
            return Err(DriverError::Invalid(
                "user fence address not 8-byte aligned",
            ));
        }
        // A fence in client memory (a userptr mapping) is read through the client's pages.
        if let Some(value) = vm.userptr_read_u64(addr) {
            return value.map_err(|_| DriverError::Fault { addr });
        }
        let (bo, offset) = bo_at(vm, addr)?;
        let mut buf = [0u8; 8];
        bo.read(offset, &mut buf)
            .map_err(|_| DriverError::Fault { addr })?;
        Ok(u64::from_le_bytes(buf))
    }

    fn syncobj_create(&self, signaled: bool) -> Result<Arc<Syncobj>, DriverError> {
        Ok(if signaled {
            Syncobj::new_signalled()
        } else {
            Syncobj::new()
        })
    }

    fn syncobj_state(&self, s: &Arc<Syncobj>, point: u64) -> PointState {
        let fence = if point == 0 {
            s.fence()
        } else {
            s.find_fence(point).ok()
        };
        match fence {
            Some(f) if f.is_signalled() => PointState::Signaled,
            Some(_) => PointState::Pending,
            None => PointState::NoFence,
        }
    }

    fn syncobj_signal(&self, s: &Arc<Syncobj>, point: u64) -> Result<(), DriverError> {
        let fence = Fence::signalled_stub();
        if point == 0 {
            s.replace_fence(Some(fence));
        } else {
            s.add_point(point, fence);
        }
        Ok(())
    }

    fn syncobj_points(&self, s: &Arc<Syncobj>, exact: bool) -> u64 {
        s.timeline_points(exact) as u64
    }

    fn syncobj_snapshot(&self, s: &Arc<Syncobj>, point: u64) -> Option<Arc<Syncobj>> {
        let fence = s.find_fence(point).ok()?;
        let snapshot = Syncobj::new();
        snapshot.replace_fence(Some(fence));
        Some(snapshot)
    }

    fn syncobj_reset(&self, s: &Arc<Syncobj>) {
        s.reset();
    }

    fn syncobj_query(&self, s: &Arc<Syncobj>) -> u64 {
        if s.last_submitted_point() == 0 {
            u64::from(s.is_signalled())
        } else {
            s.last_signalled_point()
        }
    }

    fn syncobj_transfer(
        &self,
        src: &Arc<Syncobj>,
        src_point: u64,
        dst: &Arc<Syncobj>,
        dst_point: u64,
    ) -> Result<(), DriverError> {
        let fence = if src_point == 0 {
            src.fence()
        } else {
            src.find_fence(src_point).ok()
        };
        let fence = fence.ok_or(DriverError::NoFence { point: src_point })?;
        if dst_point == 0 {
            dst.replace_fence(Some(fence));
        } else {
            dst.add_point(dst_point, fence);
        }
        Ok(())
    }

    fn bo_mmap(
        &self,
        bo: &Arc<Bo>,
        offset: u64,
        size: usize,
        _flags: MapFlags,
    ) -> Result<usize, DriverError> {
        if let Some(window) = self.device.cpu_window() {
            // In-process: an address in gpud's own mappings, pinned until `bo_munmap`.
            let addr = self
                .cpu_maps
                .map(window, bo, offset, size as u64)
                .map_err(cpu_map_error)?;
            return usize::try_from(addr.get()).map_err(|_| {
                // Not representable: undo the mapping, the scheme will not count it.
                self.cpu_maps.unmap(GpuBo::id(bo.as_ref()));
                DriverError::Fault { addr: addr.get() }
            });
        }
        // The BO's memory object is handed out (on the host the transport then passes
        // `bo_memory`'s fd): from here on the BO does not move (see `mem::bo`). The address is
        // the offset in that object, whose first byte is the BO's.
        drop(bo.cpu_memory().map_err(mapping_error)?);
        usize::try_from(offset).map_err(|_| DriverError::Fault { addr: offset })
    }

    fn bo_munmap(&self, bo: &Arc<Bo>, _offset: u64, _size: usize) -> Result<(), DriverError> {
        // With a window: one counted mapping ends (the scheme calls this once per mapping it
        // counted). Without: the BO stays put, the client may still hold its memory object.
        if self.device.cpu_window().is_some() {
            self.cpu_maps.unmap(GpuBo::id(bo.as_ref()));
        }
        Ok(())
    }
}

/// The scheme's error for a BO range that cannot be mapped by address.
fn cpu_map_error(e: CpuMapError) -> DriverError {
    match e {
        CpuMapError::Range { .. } => DriverError::Invalid("mmap range unaligned or outside the BO"),
        CpuMapError::NotMappable(_) => DriverError::Invalid(
            "BO range not CPU-mappable as one range (create it with NEEDS_VISIBLE_VRAM)",
        ),
        CpuMapError::Bo(_) => DriverError::NoMemory,
    }
}

/// The scheme's error for a BO that cannot be mapped.
fn mapping_error(e: BoError) -> DriverError {
    match e {
        BoError::NotShared => DriverError::NotSupported("BO mapping without shared memory"),
        _ => DriverError::NoMemory,
    }
}

/// The host transport hands a client a BO's memfd (Linux only: Redox maps BOs by address).
#[cfg(target_os = "linux")]
impl gpu_scheme::host::HostMemory for Driver {
    fn bo_memory(&self, bo: &Arc<Bo>) -> Result<(std::os::fd::OwnedFd, u64), DriverError> {
        if let Some(exporter) = &self.exporter {
            // `gpud vfio`: the BO lives in the DMA pool; an fd of exactly its pages.
            return self.export_bo(exporter.as_ref(), bo);
        }
        // The BO's own memfd: exactly its size, offset 0 is its first byte.
        Ok((bo.cpu_memory().map_err(mapping_error)?, 0))
    }

    fn client_mm_fd(
        &self,
        client: ClientId,
        req: gpu_scheme::uapi::mm::MmFdRequest,
        fd: std::os::fd::OwnedFd,
    ) -> Result<(), DriverError> {
        use crate::svm::uffd::UffdMm;
        use gpu_scheme::uapi::mm::MmFdRequest;
        match req {
            MmFdRequest::Userfaultfd { full_mode } => {
                let mut mms = self.mms.lock();
                if mms.contains_key(&client) {
                    return Err(DriverError::Invalid("userfaultfd already handed over"));
                }
                let pools = self.device.pools().clone();
                let mm = UffdMm::new(fd, full_mode, pools, self.mm_limits)
                    .map(Arc::new)
                    .map_err(|e| register_error(e, 0))?;
                self.device.set_client_mm(client.0, mm.clone());
                mms.insert(client, mm);
                Ok(())
            }
            MmFdRequest::Region { va, len, offset } => {
                let mm = self
                    .client_uffd_mm(client)
                    .ok_or(DriverError::Invalid("REGION before USERFAULTFD"))?;
                let range = crate::svm::CpuRange::new(va, len)
                    .map_err(|_| DriverError::Invalid("region range"))?;
                mm.add_region(range, fd, offset)
                    .map_err(|e| register_error(e, va))
            }
        }
    }
}

/// The scheme's error for a refused MM_FD registration (`docs/uapi.md`, MM_FD).
#[cfg(target_os = "linux")]
fn register_error(e: crate::svm::uffd::RegisterError, va: u64) -> DriverError {
    use crate::svm::uffd::RegisterError as R;
    match e {
        R::NotUffd => DriverError::Invalid("not a non-blocking userfaultfd"),
        R::Memfd(why) => DriverError::Invalid(why),
        R::Overlap { .. } => DriverError::Busy("range overlaps a registered region"),
        R::TooMany { .. } => DriverError::TooMany("userptr regions"),
        R::Register(rustix::io::Errno::BUSY) => {
            DriverError::Busy("range registered with another userfaultfd")
        }
        R::Register(_) => DriverError::Fault { addr: va },
        R::Gone => DriverError::Invalid("the client's address space is gone"),
    }
}

#[path = "driver_stats.rs"]
mod stats;
#[path = "driver_worker.rs"]
mod worker;

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
