//! The VM_BIND flow of one call: validate → `vm.lock` → plan and apply every op into one
//! undo log → lock the VM resv and every BO the steps touch → EBUSY check → translate the
//! steps into page-table ops → preallocate (`PageTable::prepare`) → commit the shadow →
//! a bind job with the entry writes (run inline for a synchronous call whose job can run at
//! once on the CPU, queued otherwise).
//!
//! Owns: [`Vm::bind`] and the step → `PtOp` translation. Must not: write table memory before
//! the commit point or keep any change after an error: every failure before the commit
//! unwinds the tree (`GpuVm::unwind`), prunes vm_bos the call created and drops the
//! reserved table pages, so the VM is exactly as before. Unmaps never allocate, so an unbind
//! cannot fail for lack of memory.

use super::claims::Footprint;
use super::error::BindError;
use super::failpoint::FailPoint;
use super::op::{
    parse_syncs, validate_ops, BindFlags, BindOp, BindSync, OpKind, ParsedSyncs, VmFlags,
};
use super::queue::{run_job, BindJob, BindQueue};
use super::userptr::{mm_error, PageWindow, PendingUserptr, USERPTR_RETRIES};
use super::vm::{leaf_flags, Vm, VmState};
use crate::mem::bo::Bo;
use crate::mem::mappings::BoMappings;
use crate::svm::{CpuRange, MmError};
use crate::sync::{Exec, ExecFlags, Fence, FenceFault, Resv, Usage};
use crate::types::{BoId, CpuVa, GpuVa};
use crate::vm::pagetable::{MapTarget, PtOp};
use crate::vm::{GpuBo, MappingFlags, MappingSpec, Plan, Step, UndoLog, VaRange};
use std::collections::HashSet;
use std::sync::{Arc, Weak};

/// One applied step and whether its op asked for PTEs now.
struct Applied {
    step: Step,
    immediate: bool,
}

impl Vm {
    /// Runs one bind call on `queue` (the default queue if `None`). Returns the call's fence:
    /// signalled on return for a synchronous call (no syncs), else signalled when the job
    /// ran. On error nothing changed. A synchronous call whose job has to wait waits here,
    /// after `vm.lock` is released; a server uses [`Vm::bind_nowait`] instead.
    pub fn bind(
        self: &Arc<Self>,
        queue: Option<&BindQueue>,
        ops: &[BindOp],
        syncs: &[BindSync],
    ) -> Result<Arc<Fence>, BindError> {
        let fence = self.bind_nowait(queue, ops, syncs)?;
        if syncs.is_empty() && !fence.is_signalled() {
            if let Ok(Err(fault)) = fence.wait(Some(super::queue::BIND_WAIT_LIMIT)) {
                return Err(sync_failure(self, fault));
            }
        }
        Ok(fence)
    }

    /// [`Vm::bind`] without waiting: a synchronous call whose job cannot run at once on the
    /// CPU (a dependency pending — an earlier job of the queue, a BO move —, a TLB
    /// invalidation to wait for, or writes for the copy engine) is committed and queued like
    /// an asynchronous one, and its fence returned pending. The caller answers the call
    /// when the fence signals; a failed fence means the VM was banned (the same `VmGone` an
    /// inline run returns).
    pub fn bind_nowait(
        self: &Arc<Self>,
        queue: Option<&BindQueue>,
        ops: &[BindOp],
        syncs: &[BindSync],
    ) -> Result<Arc<Fence>, BindError> {
        self.check_alive()?;
        let fail = &self.core.fail;
        let fault_vm = self.flags.contains(VmFlags::FAULT_MODE);
        validate_ops(ops, fault_vm)?;
        fail.check(FailPoint::SyncParse)?;
        let syncs = parse_syncs(syncs, self.flags.contains(VmFlags::LR_MODE), ops.len())?;
        let queue = queue.unwrap_or(&self.default_queue);
        // A userptr whose CPU range an event touched between resolving and committing is
        // resolved again: the whole call is retried from a clean VM.
        let mut attempt = 1;
        loop {
            match self
                .bind_once(ops, &syncs, queue)
                .map(|f| self.prefetch_mirrors(ops, f))
            {
                Err(BindError::Userptr {
                    source: MmError::Again,
                    ..
                }) if attempt < USERPTR_RETRIES => attempt += 1,
                res => return res,
            }
        }
    }

    /// One attempt of [`Vm::bind_nowait`] after validation.
    fn bind_once(
        self: &Arc<Self>,
        ops: &[BindOp],
        syncs: &ParsedSyncs,
        queue: &BindQueue,
    ) -> Result<Arc<Fence>, BindError> {
        let mut guard = self.lock.write();
        self.check_alive()?;
        let st: &mut VmState = &mut guard;
        let mut log = UndoLog::new();
        let mut applied = Vec::new();
        let mut created = Vec::new();
        let mut pending = Vec::new();
        let res = self.plan_all(
            st,
            ops,
            &mut log,
            &mut applied,
            (&mut created, &mut pending),
        );
        let res = res.and_then(|()| {
            let mut exec = Exec::new(ExecFlags::IGNORE_DUPLICATES);
            self.commit_all(st, &applied, (syncs, &mut pending), queue, &mut exec)
        });
        match res {
            Ok(fence) => {
                self.prune(st);
                Ok(fence)
            }
            Err(e) => {
                // The tree goes back bit for bit; vm_bos only this call created are pruned.
                st.gpuvm.unwind(log)?;
                for id in created {
                    let _ = st.gpuvm.bo_put(id);
                }
                self.prune(st);
                Err(e)
            }
        }
    }

    /// Drops vm_bos without mappings or holds, from the registry, the lists and `bos`; records
    /// the tree's length for lock-free readers.
    fn prune(&self, st: &mut VmState) {
        let len = st.gpuvm.tree().len() as u64;
        self.mapping_count
            .store(len, std::sync::atomic::Ordering::Relaxed);
        let mut lists = self.lists.lock();
        for vb in st.gpuvm.prune_vm_bos(&mut lists) {
            st.bos.remove(&vb.bo_id());
        }
    }

    /// Plans and applies every op, each against the tree as the previous ones left it.
    /// `created`: BOs whose vm_bo this call created and still holds.
    fn plan_all(
        self: &Arc<Self>,
        st: &mut VmState,
        ops: &[BindOp],
        log: &mut UndoLog,
        applied: &mut Vec<Applied>,
        (created, pending): (&mut Vec<BoId>, &mut Vec<PendingUserptr>),
    ) -> Result<(), BindError> {
        for op in ops {
            self.core.fail.check(FailPoint::Plan)?;
            let plan = self.plan_op(st, op, created, pending)?;
            let immediate = !self.flags.contains(VmFlags::FAULT_MODE)
                || op.flags.contains(BindFlags::IMMEDIATE)
                || op.kind == OpKind::Prefetch;
            st.gpuvm.apply_with(&plan, log, |step, commit| {
                applied.push(Applied {
                    step: step.clone(),
                    immediate,
                });
                commit.commit().map_err(BindError::from)
            })?;
        }
        // The mappings hold their vm_bos now; release the planning holds.
        for id in created.drain(..) {
            let _ = st.gpuvm.bo_put(id);
        }
        Ok(())
    }

    fn plan_op(
        self: &Arc<Self>,
        st: &mut VmState,
        op: &BindOp,
        created: &mut Vec<BoId>,
        pending: &mut Vec<PendingUserptr>,
    ) -> Result<Plan, BindError> {
        let range = || st.gpuvm.space().range(op.addr, op.range);
        match op.kind {
            OpKind::Map if op.flags.contains(BindFlags::CPU_ADDR_MIRROR) => {
                let spec = MappingSpec::cpu_mirror(range()?);
                Ok(st.gpuvm.plan_map(&spec)?)
            }
            OpKind::Map if op.flags.contains(BindFlags::NULL) => {
                let spec = MappingSpec::sparse(range()?);
                Ok(st.gpuvm.plan_map(&spec)?)
            }
            OpKind::Map => {
                let Some(bo) = &op.bo else {
                    return Err(BindError::InvalidOp {
                        index: 0,
                        reason: "MAP without a BO",
                    });
                };
                let range = range()?;
                self.core.fail.check(FailPoint::VmBoObtain)?;
                let vm_bo = self.obtain(st, bo, created);
                let spec = MappingSpec::bo(
                    range,
                    vm_bo,
                    op.offset,
                    op.flags.contains(BindFlags::READONLY),
                )?
                .with_pat_index(op.pat_index)
                .ok_or(BindError::InvalidOp {
                    index: 0,
                    reason: "pat_index beyond the PAT table",
                })?;
                Ok(st.gpuvm.plan_map(&spec)?)
            }
            OpKind::Unmap => Ok(st.gpuvm.plan_unmap(range()?)?),
            OpKind::Prefetch => Ok(st.gpuvm.plan_prefetch(range()?)?),
            OpKind::UnmapAll => match &op.bo {
                Some(bo) => Ok(st.gpuvm.plan_bo_unmap(GpuBo::id(&**bo))?),
                None => Ok(Plan::default()),
            },
            OpKind::MapUserptr => {
                let range = range()?;
                let read_only = op.flags.contains(BindFlags::READONLY);
                let cpu = CpuRange::new(op.offset, op.range).map_err(|_| BindError::InvalidOp {
                    index: 0,
                    reason: "userptr range not page aligned or overflowing",
                })?;
                let spec = MappingSpec::userptr(range, CpuVa(op.offset), read_only)?
                    .with_pat_index(op.pat_index)
                    .ok_or(BindError::InvalidOp {
                        index: 0,
                        reason: "pat_index beyond the PAT table",
                    })?;
                pending.push(self.resolve_userptr(range.start().get(), cpu, read_only)?);
                Ok(st.gpuvm.plan_map(&spec)?)
            }
        }
    }

    /// The vm_bo of `bo`, created (and registered with the BO and the lists) if new. A hold
    /// is taken; new ones are recorded in `created` so the caller releases it. The BO learns
    /// of this VM's tables, so a move of it zaps them first.
    fn obtain(
        self: &Arc<Self>,
        st: &mut VmState,
        bo: &Arc<Bo>,
        created: &mut Vec<BoId>,
    ) -> Arc<crate::vm::VmBo> {
        let id = GpuBo::id(&**bo);
        let (vm_bo, new) = st.gpuvm.bo_obtain(bo.clone());
        created.push(id);
        if new {
            bo.register_vm_bo(&vm_bo);
            let me: Weak<dyn BoMappings> = Arc::downgrade(self) as Weak<Vm>;
            bo.register_mappings(me);
            st.bos.insert(id, bo.clone());
            let _ = self.lists.lock().extobj_add(&vm_bo);
        }
        vm_bo
    }

    /// Everything after planning: lock, EBUSY, translate, prepare, commit, job.
    fn commit_all(
        self: &Arc<Self>,
        st: &mut VmState,
        applied: &[Applied],
        (syncs, pending): (&ParsedSyncs, &mut Vec<PendingUserptr>),
        queue: &BindQueue,
        exec: &mut Exec,
    ) -> Result<Arc<Fence>, BindError> {
        let resvs = self.touched_resvs(st, applied);
        self.core.fail.check(FailPoint::ResvLock)?;
        exec.run(|e| {
            e.prepare_obj(&self.resv, 1)?;
            resvs.iter().try_for_each(|r| e.prepare_obj(r, 1))
        })?;
        self.check_busy(st, applied)?;
        self.check_mirrors(applied.iter().map(|a| &a.step))?;
        self.core.fail.check(FailPoint::BoValidate)?;
        let ptops = self.translate(st, applied, pending)?;
        let user_fence = match syncs.user_fence {
            Some((va, value)) => Some(self.user_fence_target(st, va, value)?),
            None => None,
        };
        // The notifier lock across the commit: no event may slip between the race check of
        // the resolved userptr pages and their PTEs (it would miss them).
        let mut notifier = self.notifier.write();
        if let Some(p) = pending.iter().find(|p| notifier.raced(p.since, p.cpu)) {
            return Err(mm_error(p.cpu.start(), MmError::Again));
        }
        let mut pt = self.pt.lock();
        self.core.fail.check(FailPoint::PtPrepare)?;
        let update = pt.prepare(&ptops)?;
        self.core.fail.check(FailPoint::JobCreate)?;
        // Commit point: nothing below fails.
        let (commit, writes) = update.commit_deferred();
        self.record_mapped(st, applied.iter().map(|a| &a.step));
        let (fence, prev) = queue.next_fence();
        let deps = self.job_deps(
            syncs,
            prev,
            queue,
            Footprint::of(&writes, &commit),
            &fence,
            &resvs,
        );
        for r in exec.locked() {
            let _ = exec.add_fence(r, fence.clone(), Usage::Bookkeep);
        }
        if syncs.user_fence.is_some() {
            self.record_ufences(st, applied, &fence);
        }
        pt.retire(commit.freed, None, vec![fence.clone()]);
        self.note_tables(&pt);
        drop(pt);
        let steps = applied.iter().map(|a| (&a.step, a.immediate));
        let released = Vm::record_userptrs(&mut notifier, steps, pending);
        self.note_userptrs(&notifier);
        drop(notifier);
        self.release_after(&fence, released);
        let job = self.job(
            deps,
            writes,
            commit.invalidate,
            fence.clone(),
            user_fence,
            true,
        );
        install_out_syncs(syncs, &fence);
        if syncs.is_async() || !runs_now(&job) {
            queue.push(job);
        } else if let Some(fault) = run_job(job) {
            return Err(sync_failure(self, fault));
        } else {
            self.pt.lock().reclaim(&*self.core.mmu);
        }
        Ok(fence)
    }

    /// A job's dependencies: in-syncs, the queue's previous job, other queues' pending jobs
    /// it conflicts with (see `claims.rs`), and the KERNEL fences (moves) of the BOs it maps.
    fn job_deps(
        &self,
        syncs: &ParsedSyncs,
        prev: Option<Arc<Fence>>,
        queue: &BindQueue,
        what: Footprint<'_>,
        fence: &Arc<Fence>,
        resvs: &[Arc<Resv>],
    ) -> Vec<Arc<Fence>> {
        let mut deps = syncs.wait.clone();
        deps.extend(prev);
        deps.extend(self.page_deps(queue.id(), what, fence));
        for r in resvs {
            deps.extend(r.fences(Usage::Kernel));
        }
        deps
    }

    /// Reservations of every BO a step maps, cuts or removes (the VM's own excluded).
    fn touched_resvs(&self, st: &VmState, applied: &[Applied]) -> Vec<Arc<Resv>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for a in applied {
            let id = match &a.step {
                Step::Map(spec) => spec.bo_id(),
                Step::Remap(r) => r.unmap().old().bo_id(),
                Step::Unmap(u) => u.old().bo_id(),
                Step::Prefetch(m) => m.bo_id(),
            };
            let Some(bo) = id.and_then(|id| st.bos.get(&id)) else {
                continue;
            };
            if !bo.is_vm_private() && seen.insert(bo.reservation().id()) {
                out.push(bo.reservation().clone());
            }
        }
        out
    }

    /// EBUSY: a step removes or cuts a mapping whose bind user fence has not signalled.
    fn check_busy(&self, st: &VmState, applied: &[Applied]) -> Result<(), BindError> {
        if st.ufences.is_empty() {
            return Ok(());
        }
        for a in applied {
            let old = match &a.step {
                Step::Remap(r) => r.unmap().old(),
                Step::Unmap(u) => u.old(),
                _ => continue,
            };
            if let Some(f) = st.ufences.get(&old.id()) {
                if !f.is_signalled() {
                    return Err(BindError::Busy {
                        va: old.range().start(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The page-table ops of the steps, in order.
    fn translate(
        &self,
        st: &VmState,
        applied: &[Applied],
        pending: &[PendingUserptr],
    ) -> Result<Vec<PtOp>, BindError> {
        let mut ops = Vec::new();
        // Each MAP_USERPTR op plans exactly one Map step, in op order: the k-th userptr Map
        // step takes the k-th resolved pages (two ops at the same address stay apart).
        let mut userptrs = pending.iter();
        for a in applied {
            match &a.step {
                Step::Map(spec) if spec.flags().contains(MappingFlags::USERPTR) => {
                    match userptrs.next() {
                        Some(p) if a.immediate => ops.push(Vm::userptr_op(
                            spec.range().start().get(),
                            spec.range().len(),
                            spec.flags(),
                            &PageWindow::whole(p.pages.clone()),
                        )),
                        _ => {}
                    }
                }
                // A userptr is populated by its next fault, not by PREFETCH.
                Step::Prefetch(m) if m.flags().contains(MappingFlags::USERPTR) => {}
                // A mirror has no PTEs at bind: SVM ranges are created on GPU fault.
                Step::Map(spec) if spec.flags().contains(MappingFlags::CPU_MIRROR) => {}
                Step::Prefetch(m) if m.flags().contains(MappingFlags::CPU_MIRROR) => {}
                Step::Map(spec) if a.immediate => ops.push(self.map_op(
                    st,
                    spec.range(),
                    spec.bo_id(),
                    spec.offset(),
                    spec.flags(),
                )?),
                Step::Map(_) => {}
                Step::Remap(r) => {
                    let hole = r.hole();
                    ops.push(PtOp::Unmap {
                        va: hole.start(),
                        len: hole.len(),
                    });
                }
                Step::Unmap(u) => {
                    let r = u.old().range();
                    ops.push(PtOp::Unmap {
                        va: r.start(),
                        len: r.len(),
                    });
                }
                Step::Prefetch(m) if self.flags.contains(VmFlags::FAULT_MODE) => {
                    ops.push(self.map_op(st, m.range(), m.bo_id(), m.offset(), m.flags())?)
                }
                Step::Prefetch(_) => {}
            }
        }
        Ok(ops)
    }

    /// The map op of one mapping (BO pages at their current backing, or null entries).
    pub(crate) fn map_op(
        &self,
        st: &VmState,
        range: VaRange,
        bo: Option<BoId>,
        offset: u64,
        flags: MappingFlags,
    ) -> Result<PtOp, BindError> {
        let (va, len) = (range.start(), range.len());
        let Some(id) = bo else {
            return Ok(PtOp::Map {
                va,
                len,
                target: MapTarget::Null,
            });
        };
        let bo = st.bos.get(&id).ok_or(BindError::Fault { va })?;
        if bo.location().is_none() {
            return Err(BindError::Fault { va });
        }
        bo.map_op(va, offset, len, leaf_flags(flags))
            .map_err(|_| BindError::Fault { va })
    }

    /// The BO and offset behind a user-fence VA (after this call's ops).
    fn user_fence_target(
        &self,
        st: &VmState,
        va: GpuVa,
        value: u64,
    ) -> Result<(Arc<Bo>, u64, u64), BindError> {
        match st.backing_at(va) {
            Some((bo, offset, m)) if !m.flags().contains(MappingFlags::READ_ONLY) => {
                Ok((bo.clone(), offset, value))
            }
            _ => Err(BindError::Fault { va }),
        }
    }

    /// Attaches the call's fence to the mappings its Map steps created (the EBUSY rule).
    fn record_ufences(&self, st: &mut VmState, applied: &[Applied], fence: &Arc<Fence>) {
        st.ufences.retain(|_, f| !f.is_signalled());
        for a in applied {
            if let Step::Map(spec) = &a.step {
                if let Some(m) = st.gpuvm.tree().get(spec.range().start()) {
                    st.ufences.insert(m.id(), fence.clone());
                }
            }
        }
    }
}

/// Out-syncs receive the job fence (binary: replaced; timeline: a new point).
fn install_out_syncs(syncs: &ParsedSyncs, fence: &Arc<Fence>) {
    for (obj, point) in &syncs.signal {
        match point {
            Some(p) => obj.add_point(*p, fence.clone()),
            None => obj.replace_fence(Some(fence.clone())),
        }
    }
}

/// Whether `job` runs without waiting: no pending dependency, no copy-engine writes, and no
/// TLB invalidation to wait for (the context never ran a job). Only such a job of a
/// synchronous call runs on the caller's thread.
fn runs_now(job: &BindJob) -> bool {
    job.deps.iter().all(|d| d.is_signalled())
        && job.copy.is_none()
        && (job.invalidate.is_none() || !job.ctx_used.load(std::sync::atomic::Ordering::SeqCst))
}

/// A synchronous job failed after the commit: the VM is banned.
pub(crate) fn sync_failure(vm: &Vm, fault: FenceFault) -> BindError {
    tracing::warn!(vm = ?vm.id, ?fault, "synchronous bind failed after its commit: VM banned");
    BindError::VmGone { vm: vm.id }
}
