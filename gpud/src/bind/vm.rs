//! The driver's VM object: flags, hardware context, `vm.lock` around the VA tree and page
//! tables, the VM reservation and its vm_bo lists, bind queues, the banned flag, and the
//! exec revalidation step ([`JobVm`]).
//!
//! Owns: [`Vm`], [`VmState`] (what `vm.lock` protects), the table-page claims that order
//! binds of different queues (see `claims.rs`), and the rebind of evicted BOs.
//! Must not: plan or apply binds (see `engine.rs`) or create BOs (the device does).
//!
//! Locking: `vm.lock` (class VmLock) → the VM resv and BO resvs (class Resv, via
//! `sync::Exec`) → the small leaf mutexes here. The `VmBoLists` are the VM reservation's
//! protected state: every change happens with the VM resv held *and* `vm.lock` held for
//! writing (every path that touches them takes both, so the mutex around them is never
//! contended); `lists_locked` checks the resv in debug builds.

use super::claims::{Footprint, TableClaims};
use super::error::BindError;
use super::mapped::MappedRanges;
use super::op::VmFlags;
use super::queue::{run_job, BindJob, BindQueue, BindQueueId, WeakBindQueue};
use super::userptr::{Notifier, USERPTR_RETRIES};
use crate::device::Core;
use crate::exec::{publish_job_fence, JobVm, JobVmError, VmCtx};
use crate::hw::pte::{CacheMode, LeafFlags, VA_BITS};
use crate::hw::{FaultMode, HwCtx};
use crate::mem::bo::Bo;
use crate::mem::manager::EvictReport;
use crate::svm::{ClientMm, ClientPager, MmError, MmTarget};
use crate::sync::{Exec, Fence, LockClass, OrderedMutex, OrderedRwLock, Resv, Usage};
use crate::types::{BoId, GpuVa, PhysAddr, VmId, PAGE_SIZE};
use crate::vm::pagetable::{PageTable, PtConfig, PtOp};
use crate::vm::{
    GpuBo, GpuVm, Mapping, MappingFlags, MappingId, VaRange, VaSpace, VmBo, VmBoLists,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Size of the VA space (`hw::pte::VA_BITS`).
pub const VA_SPACE: u64 = 1 << VA_BITS;
// No VA is reserved: nothing of the driver is mapped in a client VM (fence pages are reached
// through the global GTT), so a client may bind up to the top of the 48-bit space, as in Xe.

/// Everything `vm.lock` protects.
pub struct VmState {
    /// The VA tree and vm_bo registry.
    pub gpuvm: GpuVm,
    /// The BOs with a vm_bo in this VM (the tree names BOs by id only).
    pub bos: HashMap<BoId, Arc<Bo>>,
    /// Per mapping, the fence of the bind that carried a user fence (the EBUSY rule).
    pub ufences: HashMap<MappingId, Arc<Fence>>,
}

impl VmState {
    /// The mapping covering `va`, if any.
    pub fn mapping_at(&self, va: GpuVa) -> Option<&Mapping> {
        let page = GpuVa(va.get() & !(PAGE_SIZE - 1));
        let probe = VaRange::new(page, PAGE_SIZE).ok()?;
        self.gpuvm
            .tree()
            .find_first(probe)
            .filter(|m| m.range().contains(va))
    }

    /// The BO behind `va` and the byte offset of `va` in it, with the mapping (BO-backed
    /// mappings only): the one answer to "which BO backs this VA".
    pub fn backing_at(&self, va: GpuVa) -> Option<(&Arc<Bo>, u64, &Mapping)> {
        let m = self.mapping_at(va)?;
        let bo = self.bos.get(&m.bo_id()?)?;
        Some((bo, m.offset() + (va.get() - m.range().start().get()), m))
    }
}

/// A VM.
pub struct Vm {
    pub(crate) id: VmId,
    pub(crate) flags: VmFlags,
    /// The VM's entry in the context pool: a hardware context is assigned while its work
    /// runs (see `exec/contexts.rs`).
    pub(crate) ctx: Arc<VmCtx>,
    pub(crate) core: Arc<Core>,
    pub(crate) resv: Arc<Resv>,
    pub(crate) lock: OrderedRwLock<VmState>,
    /// The page tables, under their own lock (class NotifierLock, taken after `vm.lock` and
    /// the reservations): a zap needs only this one.
    pub(crate) pt: OrderedMutex<PageTable>,
    /// Which ranges of the tables map which BO (see `mapped.rs`): written and read only with
    /// `pt` held.
    pub(crate) mapped: Mutex<MappedRanges>,
    pub(crate) lists: Mutex<VmBoLists>,
    /// vm_bos of this VM's private BOs evicted by someone else's allocation: moved onto the
    /// evict list by the next path holding the VM resv.
    pub(crate) foreign_evictions: Mutex<Vec<Arc<VmBo>>>,
    pub(crate) banned: Arc<AtomicBool>,
    /// Set by destroy; queued bind jobs see it and cancel.
    pub(crate) closed: Arc<AtomicBool>,
    /// Set once a job of the VM is submitted: from then on its context may cache
    /// translations, and changing a valid entry needs a TLB invalidation.
    pub(crate) ctx_used: Arc<AtomicBool>,
    /// The tree's length as the last bind or teardown left it: read without `vm.lock`, which
    /// a worker may hold across revalidation copies (stats and limits must not wait for it).
    pub(crate) mapping_count: std::sync::atomic::AtomicU64,
    /// Table pages the VM holds (live, cached for reuse, retired until their fence) as the
    /// last commit left them: read without the page-table lock, which a zap holds across its
    /// invalidation (the owner's memory charge must not wait for it).
    pub(crate) table_pages: std::sync::atomic::AtomicU64,
    /// Page faults the device reported for this VM (per-client stats).
    pub(crate) faults: std::sync::atomic::AtomicU64,
    /// Extra bind queues (destroy cancels and waits for their jobs). Weak: a queue the
    /// client destroyed goes once its last job ran.
    pub(crate) queues: Mutex<Vec<WeakBindQueue>>,
    pub(crate) default_queue: BindQueue,
    /// Pending bind jobs' claims on table pages (the cross-queue ordering rule).
    pub(crate) claims: Mutex<TableClaims>,
    /// The owning client's address space (userptr pages), if the VM has an owner.
    pub(crate) pager: Option<Arc<ClientPager>>,
    /// The notifier lock (class MmNotifier, after the reservations and before the page-table
    /// lock): userptr sequences and pages (see `userptr.rs`).
    pub(crate) notifier: OrderedRwLock<Notifier>,
    /// Bytes of client pages the userptrs hold, as the last notifier change left them.
    pub(crate) userptr_bytes: std::sync::atomic::AtomicU64,
    /// How many userptrs wait for revalidation, as the last notifier change left them.
    pub(crate) userptr_invalid: std::sync::atomic::AtomicU64,
    /// SVM counters (see `mirror.rs`).
    pub(crate) svm_stats: super::mirror::SvmStats,
    /// Serialises the VM's SVM migrations (to VRAM, back on CPU fault, eviction) with the
    /// notifier path: taken before the notifier lock (see `migrate.rs`).
    pub(crate) svm_migrate: Mutex<()>,
    /// Where GPU faults place SVM ranges (see `migrate.rs`).
    pub(crate) svm_placement: Mutex<super::migrate::SvmPlacement>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("id", &self.id)
            .field("flags", &self.flags)
            .field("ctx", &self.ctx)
            .finish()
    }
}

impl Vm {
    /// Creates the VM's tables and registers it with the context pool (it holds no
    /// hardware context until a job of it is loaded on a hardware queue).
    pub(crate) fn new(
        core: Arc<Core>,
        id: VmId,
        flags: VmFlags,
        pager: Option<Arc<ClientPager>>,
    ) -> Result<Arc<Self>, BindError> {
        super::op::check_vm_flags(flags)?;
        let resv = Resv::new();
        let space = VaSpace::new(GpuVa(0), VA_SPACE, None)?;
        let config = PtConfig {
            scratch: flags.contains(VmFlags::SCRATCH_PAGE),
            ..PtConfig::default()
        };
        let pt = PageTable::new(core.pt_mem.clone(), config)?;
        let tables = pt.stats().tables;
        let mode = if flags.contains(VmFlags::FAULT_MODE) {
            FaultMode::Recoverable
        } else {
            FaultMode::Fatal
        };
        let ctx = core.ctxs.register(pt.root(), mode);
        let default_queue = BindQueue::new();
        let (banned, closed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let vm = Arc::new(Self {
            id,
            flags,
            ctx,
            core,
            lock: OrderedRwLock::new(
                LockClass::VmLock,
                VmState {
                    gpuvm: GpuVm::new(id, resv.id(), space),
                    bos: HashMap::new(),
                    ufences: HashMap::new(),
                },
            ),
            pt: OrderedMutex::new(LockClass::NotifierLock, pt),
            mapped: Mutex::new(MappedRanges::default()),
            resv,
            lists: Mutex::new(VmBoLists::new(id)),
            foreign_evictions: Mutex::new(Vec::new()),
            banned,
            closed,
            ctx_used: Arc::new(AtomicBool::new(false)),
            mapping_count: std::sync::atomic::AtomicU64::new(0),
            table_pages: std::sync::atomic::AtomicU64::new(tables),
            faults: std::sync::atomic::AtomicU64::new(0),
            queues: Mutex::new(Vec::new()),
            default_queue,
            claims: Mutex::new(TableClaims::default()),
            pager,
            notifier: OrderedRwLock::new(LockClass::MmNotifier, Notifier::default()),
            userptr_bytes: std::sync::atomic::AtomicU64::new(0),
            userptr_invalid: std::sync::atomic::AtomicU64::new(0),
            svm_stats: Default::default(),
            svm_migrate: Mutex::new(()),
            svm_placement: Mutex::new(Default::default()),
        });
        if let Some(p) = &vm.pager {
            let me: std::sync::Weak<dyn MmTarget> = Arc::downgrade(&vm) as std::sync::Weak<Vm>;
            p.add_vm(me);
        }
        Ok(vm)
    }

    /// The address space the VM's userptrs resolve through: its owner's, once registered.
    pub fn client_mm(&self) -> Option<Arc<dyn ClientMm>> {
        self.pager.as_ref().and_then(|p| p.mm())
    }

    /// The VM's id.
    pub fn id(&self) -> VmId {
        self.id
    }

    /// The create flags.
    pub fn flags(&self) -> VmFlags {
        self.flags
    }

    /// The hardware context serving the VM now (`None` while it has none: contexts are
    /// assigned when its jobs run and taken back from idle VMs).
    pub fn ctx(&self) -> Option<HwCtx> {
        self.ctx.current()
    }

    /// Whether the VM holds `ctx` in the assignment with address-space id `asid` (a fault
    /// record's; 0: any).
    pub fn serves(&self, ctx: HwCtx, asid: u16) -> bool {
        self.ctx.serves(ctx, asid)
    }

    /// The VM reservation (shared by VM-private BOs).
    pub fn resv(&self) -> &Arc<Resv> {
        &self.resv
    }

    /// The default bind queue.
    pub fn default_queue(&self) -> &BindQueue {
        &self.default_queue
    }

    /// Whether an async bind failed (later calls report the VM gone).
    pub fn is_banned(&self) -> bool {
        self.banned.load(Ordering::Acquire)
    }

    /// Whether the VM was destroyed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn check_alive(&self) -> Result<(), BindError> {
        if self.is_banned() || self.is_closed() {
            return Err(BindError::VmGone { vm: self.id });
        }
        Ok(())
    }

    /// Destroys the VM with work in flight: refuses new work, cancels queued bind jobs (their
    /// fences and out-syncs signal `Canceled`), waits for running ones and drops every
    /// mapping (releasing the vm_bos and so the BOs, whose memory waits for their fences).
    /// The context and the page tables stay until the last reference to the VM goes: exec
    /// queues hold it until their last job on a ring retired, so a job still running never
    /// walks freed tables or another VM's context.
    pub(crate) fn destroy(&self) {
        for f in self.close() {
            let _ = f.wait(Some(super::queue::BIND_WAIT_LIMIT));
        }
        self.release_tree();
    }

    /// The first half of [`Vm::destroy`], which never waits: closes the VM (new calls fail,
    /// queued bind jobs cancel) and returns the bind queues' last fences still pending. Call
    /// [`Vm::release_tree`] once they signalled.
    pub fn close(&self) -> Vec<Arc<Fence>> {
        self.closed.store(true, Ordering::Release);
        self.live_queues()
            .iter()
            .inspect(|q| q.kick())
            .filter_map(BindQueue::last_fence)
            .filter(|f| !f.is_signalled())
            .collect()
    }

    /// The default queue and the extra ones still alive.
    fn live_queues(&self) -> Vec<BindQueue> {
        let mut queues: Vec<BindQueue> = self
            .queues
            .lock()
            .iter()
            .filter_map(WeakBindQueue::upgrade)
            .collect();
        queues.push(self.default_queue.clone());
        queues
    }

    /// Registers an extra bind queue (forgetting the ones that are gone).
    pub(crate) fn add_queue(&self, queue: &BindQueue) {
        let mut queues = self.queues.lock();
        queues.retain(|q| q.upgrade().is_some());
        queues.push(queue.downgrade());
    }

    /// The second half of [`Vm::destroy`]: empties the tree and drops the VM's hold on its
    /// BOs. Run after the fences [`Vm::close`] returned signalled.
    pub fn release_tree(&self) {
        let mut st = self.lock.write();
        let all = VaRange::new(GpuVa(0), VA_SPACE);
        if let Ok(plan) = all
            .map_err(BindError::from)
            .and_then(|r| Ok(st.gpuvm.plan_unmap(r)?))
        {
            let mut log = crate::vm::UndoLog::new();
            let _ = st.gpuvm.apply_plan(plan, &mut log);
        }
        st.ufences.clear();
        // Data migrated to VRAM goes back to the client's memory first.
        self.svm_release_devmem();
        {
            // The tables keep their entries until the VM goes: so do the pages.
            let mut n = self.notifier.write();
            n.release_all();
            self.note_userptrs(&n);
        }
        let mut lists = self.lists.lock();
        for vb in st.gpuvm.prune_vm_bos(&mut lists) {
            st.bos.remove(&vb.bo_id());
        }
        self.mapping_count.store(0, Ordering::Relaxed);
    }

    /// How many mappings the VM has (as of the last bind), without taking `vm.lock`.
    /// Bytes of page-table pages the VM holds, as its last commit left them.
    pub fn table_bytes(&self) -> u64 {
        self.table_pages.load(Ordering::Relaxed) * PAGE_SIZE
    }

    /// Records the table pages `pt` holds, for [`Vm::table_bytes`].
    pub(crate) fn note_tables(&self, pt: &PageTable) {
        let pages = pt.stats().tables + (pt.cached_pages() + pt.retired_pages()) as u64;
        self.table_pages.store(pages, Ordering::Relaxed);
    }

    pub fn mapping_count(&self) -> u64 {
        self.mapping_count.load(Ordering::Relaxed)
    }

    /// The BO behind `va` and the byte offset of `va` in it (see [`VmState::backing_at`]).
    pub fn backing_at(&self, va: GpuVa) -> Option<(Arc<Bo>, u64)> {
        let st = self.lock.read();
        st.backing_at(va).map(|(bo, off, _)| (bo.clone(), off))
    }

    /// Read access to the page tables (tests, diagnostics).
    pub fn with_pt<R>(&self, f: impl FnOnce(&PageTable) -> R) -> R {
        f(&self.pt.lock())
    }

    /// Read access to the tree (tests, diagnostics, the scheme's queries).
    pub fn with_state<R>(&self, f: impl FnOnce(&VmState) -> R) -> R {
        f(&self.lock.read())
    }

    /// The vm_bo lists; the caller holds the VM resv (checked in debug builds).
    pub(crate) fn lists_locked(&self) -> parking_lot::MutexGuard<'_, VmBoLists> {
        debug_assert!(
            self.resv.ww().is_locked(),
            "VmBoLists touched without the VM reservation"
        );
        self.lists.lock()
    }

    /// Snapshot of the lists (tests): (extobj ids, evict-list ids).
    pub fn lists_snapshot(&self) -> (Vec<BoId>, Vec<BoId>) {
        let l = self.lists.lock();
        let mut ext: Vec<BoId> = l.extobjs().map(|v| v.bo_id()).collect();
        let mut ev: Vec<BoId> = l.evicted().map(|v| v.bo_id()).collect();
        ext.sort_unstable();
        ev.sort_unstable();
        (ext, ev)
    }

    /// Dependencies a job of `queue` doing `what` to the tables must wait for (pending jobs
    /// of other queues, see [`TableClaims`]); records the job's `fence`.
    pub(crate) fn page_deps(
        &self,
        queue: BindQueueId,
        what: Footprint<'_>,
        fence: &Arc<Fence>,
    ) -> Vec<Arc<Fence>> {
        self.claims.lock().order(queue, what, fence)
    }

    /// Writes `ops` into the tables now (prepare, commit, wait for other queues' pending
    /// writes on the same pages, write, invalidate). Used by the exec path's rebind.
    /// `_st`: the caller holds `vm.lock` for writing.
    pub(crate) fn write_now(&self, _st: &mut VmState, ops: &[PtOp]) -> Result<(), BindError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut pt = self.pt.lock();
        let update = pt.prepare(ops)?;
        let (commit, writes) = update.commit_deferred();
        let fence = Fence::new(crate::sync::FenceContext::alloc(), 1);
        let deps = self.page_deps(BindQueueId(0), Footprint::of(&writes, &commit), &fence);
        let job = self.job(deps, writes, commit.invalidate, fence, None, false);
        let fence = job.fence.clone();
        pt.retire(commit.freed, None, vec![fence.clone()]);
        // The job waits for other queues' jobs: not with the page-table lock (a zap).
        drop(pt);
        match run_job(job) {
            None => {
                self.pt.lock().reclaim(&*self.core.mmu);
                Ok(())
            }
            Some(_) => Err(BindError::Timeout {
                what: "page-table rebind",
            }),
        }
    }

    /// The one place a bind job of this VM is built: `writes` into its tables after `deps`,
    /// one invalidation of `invalidate`, the user fence, then `fence`. A `cancellable` job
    /// gives up once the VM is destroyed (queued binds); the others always run (the exec
    /// path's rebind, fault population: their caller waits for them).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn job(
        &self,
        deps: Vec<Arc<Fence>>,
        writes: Vec<(PhysAddr, u64)>,
        invalidate: Option<(GpuVa, u64)>,
        fence: Arc<Fence>,
        user_fence: Option<(Arc<Bo>, u64, u64)>,
        cancellable: bool,
    ) -> BindJob {
        let cancel = if cancellable {
            self.closed.clone()
        } else {
            Arc::new(AtomicBool::new(false))
        };
        self.core.with_copy_path(BindJob {
            deps,
            writes,
            mem: self.core.pt_mem.clone(),
            invalidate,
            mmu: self.core.mmu.clone(),
            ctx: Arc::downgrade(&self.ctx),
            ctx_used: self.ctx_used.clone(),
            user_fence,
            fence,
            banned: self.banned.clone(),
            cancel,
            copy: None,
        })
    }

    /// Rebinds every mapping of `bo` to its current backing.
    fn rebind_bo(&self, st: &mut VmState, bo: &Arc<Bo>) -> Result<(), BindError> {
        let id = GpuBo::id(&**bo);
        let mut ops = Vec::new();
        for m in st.gpuvm.bo_mappings(id) {
            let flags = leaf_flags(m.flags());
            let r = m.range();
            if let Ok(op) = bo.map_op(r.start(), m.offset(), r.len(), flags) {
                ops.push(op);
            }
        }
        if self.flags.contains(VmFlags::FAULT_MODE) {
            // Fault-mode mappings are populated on demand; drop stale PTEs instead.
            ops = st
                .gpuvm
                .bo_mappings(id)
                .map(|m| PtOp::Unmap {
                    va: m.range().start(),
                    len: m.range().len(),
                })
                .collect();
        }
        self.write_now(st, &ops)
    }

    /// The exec path's validation with everything locked: moves flagged extobjs onto the
    /// evict list, validates each evicted BO through the memory manager and rebinds it (also
    /// when it did not move: another VM may have moved it back already), then clears this
    /// VM's flag. Validation can evict other BOs of this VM, so it runs in rounds.
    fn validate_evicted(&self, st: &mut VmState) -> Result<(), JobVmError> {
        let no_mem = |e: String| JobVmError::NoMemory { what: e };
        for _ in 0..8 {
            let todo: Vec<(Arc<VmBo>, Arc<Bo>)> = {
                let mut lists = self.lists_locked();
                for vb in self.foreign_evictions.lock().drain(..) {
                    let _ = lists.evict_local(&vb, true);
                }
                lists.move_evicted_extobjs();
                lists
                    .evicted()
                    .filter(|vb| vb.is_evicted())
                    .filter_map(|vb| Some((vb.clone(), st.bos.get(&vb.bo_id())?.clone())))
                    .collect()
            };
            if todo.is_empty() {
                // Drops list entries whose flag is already clear.
                let _ = self.lists_locked().validate::<()>(|_| Ok(()));
                return Ok(());
            }
            for (vb, bo) in todo {
                let mut report = EvictReport::default();
                let moved = self.core.mm.validate(&bo, Some(&vb), &mut report);
                self.core.route_evictions(report, Some(self));
                moved.map_err(|e| no_mem(e.to_string()))?;
                self.rebind_bo(st, &bo).map_err(|e| no_mem(e.to_string()))?;
                if vb.is_external() {
                    vb.set_evicted(false);
                } else {
                    let _ = self.lists_locked().evict_local(&vb, false);
                }
            }
        }
        Err(no_mem("evictions did not settle".into()))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // No exec queue is left (they hold the VM), and bind jobs hold no reference: cancel
        // the queued ones and wait for them before the tables go.
        self.closed.store(true, Ordering::Release);
        let queues = self.live_queues();
        for q in &queues {
            q.kick();
        }
        for f in queues.iter().filter_map(BindQueue::last_fence) {
            let _ = f.wait(Some(super::queue::BIND_WAIT_LIMIT));
        }
        // No job of the VM is on a ring any more (exec queues hold the VM until then); its
        // context goes back to the pool with the last reference to `ctx`.
    }
}

/// The leaf flags of a mapping: writability and the cache mode its PAT index selects.
pub(crate) fn leaf_flags(flags: MappingFlags) -> LeafFlags {
    LeafFlags {
        writable: !flags.contains(MappingFlags::READ_ONLY),
        cache: CacheMode::from_pat_index(flags.pat_index()).unwrap_or_default(),
    }
}

impl Vm {
    /// Whether the next job's revalidation has BOs to move back (evicted ones on the evict
    /// list, external ones flagged, or evictions other VMs routed here): the preparation
    /// then waits for copies, so a server runs it on a worker.
    pub fn needs_revalidation(&self) -> bool {
        // Invalidated userptrs are resolved again (a platform may page them in).
        let refault = self.flags.contains(VmFlags::FAULT_MODE);
        if !self.foreign_evictions.lock().is_empty() || (!refault && self.has_invalid_userptrs()) {
            return true;
        }
        let lists = self.lists.lock();
        let evicted = lists.evicted().any(|vb| vb.is_evicted());
        evicted || lists.extobjs().any(|vb| vb.is_evicted())
    }
}

impl Vm {
    /// EXEC revalidation of userptrs (not in fault mode, which refaults them): up to
    /// `rounds` times, resolve and rebind the invalid ones, until the notifier lock shows
    /// none invalid. A userptr whose memory cannot be resolved fails the job with EFAULT.
    fn revalidate_userptrs(&self, st: &mut VmState, rounds: u32) -> Result<(), JobVmError> {
        if self.flags.contains(VmFlags::FAULT_MODE) {
            return Ok(());
        }
        for _ in 0..rounds {
            if self.notifier.read().invalid_count() == 0 {
                return Ok(());
            }
            match self.populate_userptrs(st, None) {
                Ok(_) => {}
                Err(BindError::Userptr { va, source }) if source != MmError::Again => {
                    return Err(JobVmError::Fault { va })
                }
                Err(e) => {
                    return Err(JobVmError::NoMemory {
                        what: e.to_string(),
                    })
                }
            }
        }
        if rounds > 1 && self.notifier.read().invalid_count() > 0 {
            return Err(JobVmError::NoMemory {
                what: "userptr revalidation kept racing invalidations".into(),
            });
        }
        Ok(())
    }
}

impl JobVm for Vm {
    fn lock_and_validate(&self, exec: &mut Exec) -> Result<Vec<Arc<Fence>>, JobVmError> {
        if self.is_banned() || self.is_closed() {
            return Err(JobVmError::Banned);
        }
        // Before the job can reach a ring: bind jobs from now on invalidate (see BindJob).
        self.ctx_used.store(true, Ordering::SeqCst);
        let mut st = self.lock.write();
        // Userptr pages are resolved under `vm.lock`, outside the reservations.
        self.revalidate_userptrs(&mut st, 1)?;
        let ext: Vec<Arc<Resv>> = st
            .bos
            .values()
            .filter(|b| !b.is_vm_private())
            .map(|b| b.reservation().clone())
            .collect();
        exec.run(|e| {
            e.prepare_obj(&self.resv, 1)?;
            ext.iter().try_for_each(|r| e.prepare_obj(r, 1))
        })?;
        self.validate_evicted(&mut st)?;
        // The final check, under the notifier lock: an invalidation that raced the rebinds
        // is redone before the job may run.
        self.revalidate_userptrs(&mut st, USERPTR_RETRIES)?;
        Ok(self.resv.fences(Usage::Kernel))
    }

    fn publish(&self, exec: &Exec, fence: &Arc<Fence>) -> Result<(), JobVmError> {
        publish_job_fence(exec, &self.resv, fence)?;
        Ok(())
    }

    fn is_banned(&self) -> bool {
        Vm::is_banned(self) || self.is_closed()
    }

    fn hw_context(&self) -> Option<Arc<VmCtx>> {
        Some(self.ctx.clone())
    }
}
