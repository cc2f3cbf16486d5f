//! The VM object: VA space, mapping tree, vm_bo registry, and applying/unwinding steps.
//!
//! Owns: [`GpuVm`]. Planning goes through the pure planners in `plan.rs`; applying a step
//! updates the tree and the vm_bo links together and records the change in an [`UndoLog`].
//! Protected by the VM's outer lock (`vm.lock`): every mutating method takes `&mut self`.
//!
//! Registry rules: each vm_bo entry records the start addresses of its BO's mappings in this
//! VM and a hold count (`bo_obtain`/`bo_put`). Its reference count is holds + mappings. An
//! entry at zero is only dropped by [`GpuVm::prune_vm_bos`], which also needs the VM resv
//! (the lists), so applying and unwinding never need it.
//!
//! Must not: write page tables, lock reservations, or decide policy (which op is allowed).

use super::mapping::{Mapping, MappingFlags, MappingId, MappingSpec};
use super::plan::{self, Plan, PlanError, PlanStamp, RemapStep, Step};
use super::tree::{OverlapError, VaTree};
use super::undo::{Applied, UndoEntry, UndoLog};
use super::va::{VaRange, VaSpace};
use super::vm_bo::{GpuBo, VmBo, VmBoError, VmBoLists};
use crate::types::{BoId, GpuVa, ResvId, VmId};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thiserror::Error;

/// Why a step could not be applied. The VM is unchanged when `apply` returns an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ApplyError {
    /// The step refers to a mapping that is no longer in the tree as planned.
    #[error("stale step: mapping {id:?} at {range} is not in the tree")]
    Stale { id: MappingId, range: VaRange },
    /// A new mapping would overlap an existing one (the plan is stale).
    #[error(transparent)]
    Overlap(#[from] OverlapError),
    /// The vm_bo of a new mapping belongs to another VM.
    #[error("vm_bo of BO {bo:?} belongs to VM {owner:?}")]
    ForeignVmBo { bo: BoId, owner: VmId },
    /// The undo log belongs to another VM.
    #[error("undo log belongs to VM {owner:?}")]
    ForeignLog { owner: VmId },
    /// A remap whose pieces do not lie at the ends of the old mapping.
    #[error("malformed remap of {old}")]
    MalformedRemap { old: VaRange },
    /// A step handler returned a token that is not the one of the step it was given.
    #[error("step handler returned the token of another step")]
    WrongToken,
}

#[derive(Debug)]
struct VmBoEntry {
    vm_bo: Arc<VmBo>,
    /// Start addresses of the BO's mappings. A hash set (std's, randomly keyed, so clients
    /// cannot aim collisions): every map and split links here, and at 1e6 mappings an
    /// ordered set's cold tree walk costs more than a hash probe; the rare whole-BO walks
    /// sort instead.
    mappings: HashSet<GpuVa>,
    holds: u32,
}

/// One GPU virtual address space.
#[derive(Debug)]
pub struct GpuVm {
    id: VmId,
    resv: ResvId,
    space: VaSpace,
    tree: VaTree,
    vm_bos: BTreeMap<BoId, VmBoEntry>,
    next_id: MappingId,
    applied_seq: u64,
    /// Bumped by every change of the tree (apply of a non-prefetch step, unwind, flags).
    generation: u64,
    /// Unique per `GpuVm` value in this process; with `generation` it stamps plans.
    instance: u64,
}

/// Source of `GpuVm::instance`.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// Hands one step to a handler; the handler commits it with [`StepCommit::commit`] after
/// doing its own work (e.g. preparing page-table updates), and returns the token.
pub struct StepCommit<'a> {
    vm: &'a mut GpuVm,
    log: &'a mut UndoLog,
    step: &'a Step,
    fresh: bool,
}

impl StepCommit<'_> {
    /// The VM as it is before this step.
    pub fn vm(&self) -> &GpuVm {
        self.vm
    }

    /// Applies the step to the tree.
    pub fn commit(self) -> Result<Applied, ApplyError> {
        self.vm.apply_inner(self.step.clone(), self.log, self.fresh)
    }
}

impl GpuVm {
    /// An empty VM. `resv` is the identity of the VM's own reservation: BOs sharing it are
    /// VM-private, all others are external.
    pub fn new(id: VmId, resv: ResvId, space: VaSpace) -> Self {
        Self {
            id,
            resv,
            space,
            tree: VaTree::new(),
            vm_bos: BTreeMap::new(),
            next_id: MappingId(0),
            applied_seq: 0,
            generation: 0,
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The VM's id.
    pub fn id(&self) -> VmId {
        self.id
    }

    /// Identity of the VM's reservation.
    pub fn resv(&self) -> ResvId {
        self.resv
    }

    /// The VA space.
    pub fn space(&self) -> &VaSpace {
        &self.space
    }

    /// The mappings.
    pub fn tree(&self) -> &VaTree {
        &self.tree
    }

    /// The id the next inserted mapping will get.
    pub fn next_mapping_id(&self) -> MappingId {
        self.next_id
    }

    /// drm_gpuvm_is_extobj: whether `bo`'s reservation is not the VM's.
    pub fn is_extobj(&self, bo: &dyn GpuBo) -> bool {
        bo.resv() != self.resv
    }

    // ---- vm_bo registry -------------------------------------------------------------

    /// Finds or creates the vm_bo of `bo` and takes a hold on it. Returns the vm_bo and
    /// whether it was created (the caller then registers it with the BO, so eviction can
    /// find it).
    pub fn bo_obtain(&mut self, bo: Arc<dyn GpuBo>) -> (Arc<VmBo>, bool) {
        let (id, resv) = (self.id, self.resv);
        let mut created = false;
        let entry = self.vm_bos.entry(bo.id()).or_insert_with(|| {
            created = true;
            VmBoEntry {
                vm_bo: Arc::new(VmBo::new(id, resv, bo)),
                mappings: HashSet::new(),
                holds: 0,
            }
        });
        entry.holds = entry.holds.saturating_add(1);
        (Arc::clone(&entry.vm_bo), created)
    }

    /// Releases a hold taken by [`GpuVm::bo_obtain`].
    pub fn bo_put(&mut self, bo: BoId) -> Result<(), VmBoError> {
        let vm = self.id;
        let entry = self
            .vm_bos
            .get_mut(&bo)
            .ok_or(VmBoError::Unknown { bo, vm })?;
        entry.holds = entry
            .holds
            .checked_sub(1)
            .ok_or(VmBoError::NotHeld { bo, vm })?;
        Ok(())
    }

    /// The vm_bo of `bo` in this VM, if any.
    pub fn bo_find(&self, bo: BoId) -> Option<&Arc<VmBo>> {
        self.vm_bos.get(&bo).map(|e| &e.vm_bo)
    }

    /// Holds plus linked mappings; `None` if the VM has no vm_bo for `bo`.
    pub fn bo_refcount(&self, bo: BoId) -> Option<usize> {
        self.vm_bos
            .get(&bo)
            .map(|e| e.holds as usize + e.mappings.len())
    }

    /// The BO's mappings in this VM, in address order.
    pub fn bo_mappings(&self, bo: BoId) -> impl Iterator<Item = &Mapping> + '_ {
        self.bo_starts(bo)
            .into_iter()
            .filter_map(|start| self.tree.get(start))
    }

    /// Start addresses of the BO's mappings, in address order.
    fn bo_starts(&self, bo: BoId) -> Vec<GpuVa> {
        let mut starts: Vec<GpuVa> = self
            .vm_bos
            .get(&bo)
            .map(|e| e.mappings.iter().copied().collect())
            .unwrap_or_default();
        starts.sort_unstable();
        starts
    }

    /// All vm_bos of this VM, in `BoId` order.
    pub fn vm_bos(&self) -> impl Iterator<Item = &Arc<VmBo>> + '_ {
        self.vm_bos.values().map(|e| &e.vm_bo)
    }

    /// Drops every vm_bo with no hold and no mapping, removing it from the VM's lists (so
    /// the caller holds the VM resv). Returns the dropped ones so the caller can unregister
    /// them from their BOs. Never call it while an undo log of this VM may still be unwound.
    pub fn prune_vm_bos(&mut self, lists: &mut VmBoLists) -> Vec<Arc<VmBo>> {
        let dead: Vec<BoId> = self
            .vm_bos
            .iter()
            .filter(|(_, e)| e.holds == 0 && e.mappings.is_empty())
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(dead.len());
        for id in dead {
            if let Some(e) = self.vm_bos.remove(&id) {
                lists.remove(id);
                out.push(e.vm_bo);
            }
        }
        out
    }

    // ---- planning -------------------------------------------------------------------

    /// Plans mapping `req` against the current tree.
    pub fn plan_map(&self, req: &MappingSpec) -> Result<Plan, PlanError> {
        if req.vm_bo().is_some_and(|b| b.vm() != self.id) {
            return Err(PlanError::ForeignVmBo);
        }
        Ok(plan::sm_map(&self.tree, &self.space, req)?.stamped(self.stamp()))
    }

    /// Plans unmapping `range`.
    pub fn plan_unmap(&self, range: VaRange) -> Result<Plan, PlanError> {
        Ok(plan::sm_unmap(&self.tree, &self.space, range)?.stamped(self.stamp()))
    }

    /// Plans prefetching `range`.
    pub fn plan_prefetch(&self, range: VaRange) -> Result<Plan, PlanError> {
        Ok(plan::prefetch(&self.tree, &self.space, range)?.stamped(self.stamp()))
    }

    /// Plans removing every mapping of `bo` (an empty plan if there are none).
    pub fn plan_bo_unmap(&self, bo: BoId) -> Result<Plan, PlanError> {
        Ok(plan::bo_unmap(&self.tree, self.bo_starts(bo))?.stamped(self.stamp()))
    }

    fn stamp(&self) -> PlanStamp {
        PlanStamp {
            instance: self.instance,
            generation: self.generation,
        }
    }

    /// Whether `plan` was made by this VM against the tree as it is now.
    fn is_fresh(&self, plan: &Plan) -> bool {
        plan.stamp() == Some(self.stamp())
    }

    // ---- applying -------------------------------------------------------------------

    /// Applies one step, recording it in `log`. On error nothing changed.
    pub fn apply(&mut self, step: &Step, log: &mut UndoLog) -> Result<Applied, ApplyError> {
        self.apply_inner(step.clone(), log, false)
    }

    /// `fresh`: the step belongs to a plan that was fresh when its first step was applied
    /// and every earlier step of it has been applied, so the planner's guarantee that a
    /// `Map` lands in free space still holds and the overlap search can be skipped.
    fn apply_inner(
        &mut self,
        step: Step,
        log: &mut UndoLog,
        fresh: bool,
    ) -> Result<Applied, ApplyError> {
        if !log.begin(self.id, self.next_id) {
            let owner = log.owner().map_or(self.id, |(vm, _)| vm);
            return Err(ApplyError::ForeignLog { owner });
        }
        let changes_tree = !matches!(step, Step::Prefetch(_));
        match step {
            Step::Map(spec) => self.apply_map(spec, log, fresh)?,
            Step::Unmap(u) => {
                let old = u.into_old();
                let removed = self
                    .tree
                    .remove_if_current(&old)
                    .ok_or_else(|| stale(&old))?;
                self.unlink(&removed);
                log.push(UndoEntry::Removed(removed));
            }
            Step::Remap(r) => self.apply_remap(r, log)?,
            Step::Prefetch(m) => self.check_current(&m)?,
        }
        if changes_tree {
            self.generation += 1;
        }
        self.applied_seq += 1;
        Ok(Applied {
            vm: self.id,
            seq: self.applied_seq,
        })
    }

    /// Applies every step of `plan`, handing each to `handler` first; the handler must
    /// commit the step it was given and return its token. On error, the steps committed so
    /// far stay applied and recorded in `log` (unwind it to roll the whole bind back).
    pub fn apply_with<E: From<ApplyError>>(
        &mut self,
        plan: &Plan,
        log: &mut UndoLog,
        mut handler: impl FnMut(&Step, StepCommit<'_>) -> Result<Applied, E>,
    ) -> Result<(), E> {
        let fresh = self.is_fresh(plan);
        for step in plan.steps() {
            let expected = Applied {
                vm: self.id,
                seq: self.applied_seq + 1,
            };
            let commit = StepCommit {
                vm: self,
                log,
                step,
                fresh,
            };
            let got = handler(step, commit)?;
            if got != expected {
                return Err(ApplyError::WrongToken.into());
            }
        }
        Ok(())
    }

    /// Applies every step of `plan` with no per-step work, consuming it (its pieces move
    /// into the tree without copies).
    pub fn apply_plan(&mut self, plan: Plan, log: &mut UndoLog) -> Result<(), ApplyError> {
        let fresh = self.is_fresh(&plan);
        for step in plan.into_steps() {
            let _applied = self.apply_inner(step, log, fresh)?;
        }
        Ok(())
    }

    /// Restores the VM to its state before the first step recorded in `log`.
    pub fn unwind(&mut self, log: UndoLog) -> Result<(), ApplyError> {
        let Some((owner, next_id)) = log.owner() else {
            return Ok(());
        };
        if owner != self.id {
            return Err(ApplyError::ForeignLog { owner });
        }
        for entry in log.drain_rev() {
            match entry {
                UndoEntry::Inserted(start) => {
                    if let Some(m) = self.tree.remove(start) {
                        self.unlink(&m);
                    }
                }
                UndoEntry::Removed(m) => {
                    let _created = self.link(m.spec());
                    // Cannot overlap: everything inserted after its removal was removed
                    // above, in reverse order.
                    self.tree.insert(m)?;
                }
                UndoEntry::Registered(bo) => {
                    self.vm_bos.remove(&bo);
                }
            }
        }
        self.next_id = next_id;
        self.generation += 1;
        Ok(())
    }

    /// Sets or clears `INVALIDATED` on the mapping starting at `start` (userptr notifier
    /// path). Returns whether such a mapping exists. Not recorded in undo logs. Plans made
    /// before the change are stale afterwards (their copies of the mapping carry the old
    /// flags, which their Remap pieces would otherwise resurrect).
    pub fn set_invalidated(&mut self, start: GpuVa, invalidated: bool) -> bool {
        match self.tree.get_mut(start) {
            Some(m) => {
                self.generation += 1;
                m.spec_mut()
                    .set_flag(MappingFlags::INVALIDATED, invalidated);
                true
            }
            None => false,
        }
    }

    fn check_current(&self, planned: &Mapping) -> Result<(), ApplyError> {
        match self.tree.get(planned.range().start()) {
            Some(m) if m.is_current(planned) => Ok(()),
            _ => Err(stale(planned)),
        }
    }

    /// Marks the id handed out by the last successful insert as used. Ids are taken as
    /// `self.next_id` and only consumed once the insert succeeded, so errors change nothing.
    fn consume_id(&mut self) {
        self.next_id = MappingId(self.next_id.0.wrapping_add(1));
    }

    fn apply_map(
        &mut self,
        spec: MappingSpec,
        log: &mut UndoLog,
        fresh: bool,
    ) -> Result<(), ApplyError> {
        if let Some(b) = spec.vm_bo().filter(|b| b.vm() != self.id) {
            return Err(ApplyError::ForeignVmBo {
                bo: b.bo_id(),
                owner: b.vm(),
            });
        }
        if !fresh {
            self.tree.check_free(spec.range())?;
        }
        let start = spec.range().start();
        self.link_logged(&spec, log);
        self.tree.insert_vacated(Mapping::new(self.next_id, spec));
        self.consume_id();
        log.push(UndoEntry::Inserted(start));
        Ok(())
    }

    fn apply_remap(&mut self, r: RemapStep, log: &mut UndoLog) -> Result<(), ApplyError> {
        let (prev, next, old) = r.into_parts();
        let (os, oe) = (old.range().start(), old.range().end());
        let prev_ok = prev.as_ref().is_none_or(|p| p.range().start() == os);
        let next_ok = next.as_ref().is_none_or(|n| n.range().end() == oe);
        let prev_end = prev.as_ref().map_or(os, |p| p.range().end());
        let next_start = next.as_ref().map_or(oe, |n| n.range().start());
        if !(prev_ok && next_ok && prev_end < next_start) {
            return Err(ApplyError::MalformedRemap { old: old.range() });
        }
        match prev {
            Some(prev) => {
                let new = Mapping::new(self.next_id, prev);
                // The piece keeps the old start and BO, so the vm_bo link is unchanged.
                let removed = self
                    .tree
                    .shrink_in_place(&old, new)
                    .map_err(|_| stale(&old))?;
                self.consume_id();
                log.push(UndoEntry::Removed(removed));
                log.push(UndoEntry::Inserted(os));
            }
            None => {
                let removed = self
                    .tree
                    .remove_if_current(&old)
                    .ok_or_else(|| stale(&old))?;
                self.unlink(&removed);
                log.push(UndoEntry::Removed(removed));
            }
        }
        if let Some(next) = next {
            // `next` lies in the part of the old range just vacated, so it overlaps nothing.
            let start = next.range().start();
            self.link_logged(&next, log);
            self.tree.insert_vacated(Mapping::new(self.next_id, next));
            self.consume_id();
            log.push(UndoEntry::Inserted(start));
        }
        Ok(())
    }

    /// Links a mapping into its vm_bo's entry, creating the entry (and logging that) if the
    /// VM had none for this BO.
    fn link_logged(&mut self, m: &MappingSpec, log: &mut UndoLog) {
        if self.link(m) {
            if let Some(bo) = m.bo_id() {
                log.push(UndoEntry::Registered(bo));
            }
        }
    }

    /// Links a mapping into its vm_bo's entry; returns whether the entry had to be created.
    fn link(&mut self, m: &MappingSpec) -> bool {
        let Some(bo) = m.vm_bo() else {
            return false;
        };
        let (entry, created) = match self.vm_bos.entry(bo.bo_id()) {
            Entry::Occupied(e) => (e.into_mut(), false),
            Entry::Vacant(e) => {
                let entry = VmBoEntry {
                    vm_bo: Arc::clone(bo),
                    mappings: HashSet::new(),
                    holds: 0,
                };
                (e.insert(entry), true)
            }
        };
        entry.mappings.insert(m.range().start());
        created
    }

    fn unlink(&mut self, m: &Mapping) {
        if let Some(bo) = m.bo_id() {
            if let Some(e) = self.vm_bos.get_mut(&bo) {
                e.mappings.remove(&m.range().start());
            }
        }
    }

    /// Checks the tree invariants and that the vm_bo links match the tree exactly. O(n):
    /// for tests and debugging.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.tree.check_invariants()?;
        let mut from_tree: BTreeMap<BoId, BTreeSet<GpuVa>> = BTreeMap::new();
        for m in self.tree.iter() {
            if let Some(bo) = m.bo_id() {
                from_tree.entry(bo).or_default().insert(m.range().start());
            }
        }
        for (bo, e) in &self.vm_bos {
            let expect = from_tree.remove(bo).unwrap_or_default();
            let linked: BTreeSet<GpuVa> = e.mappings.iter().copied().collect();
            if linked != expect {
                return Err(format!(
                    "vm_bo {bo:?} links {linked:?}, tree has {expect:?}"
                ));
            }
        }
        match from_tree.keys().next() {
            Some(bo) => Err(format!("mappings of {bo:?} have no vm_bo entry")),
            None => Ok(()),
        }
    }
}

fn stale(planned: &Mapping) -> ApplyError {
    ApplyError::Stale {
        id: planned.id(),
        range: planned.range(),
    }
}
