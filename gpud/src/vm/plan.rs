//! The split/merge planners: pure functions from (tree, request) to a list of steps.
//!
//! Owns: [`Step`] and its parts, [`Plan`], and the four planners [`sm_map`], [`sm_unmap`],
//! [`prefetch`] and [`bo_unmap`]. `sm_map` follows drm_gpuvm's `__drm_gpuvm_sm_map` exactly:
//! walk the overlapped mappings in address order; a mapping cut on the left or right becomes
//! a `Remap` (with the surviving `prev`/`next` pieces, offsets advanced by how far each piece
//! starts after the old start); a mapping swallowed whole becomes an `Unmap`; then exactly one
//! `Map` of the request. `keep` says the old PTEs already translate the new request (same BO,
//! contiguous offset), so a page-table update may be skipped; unbacked mappings (null,
//! CPU-mirror, userptr) never get `keep`. Adjacent mappings are never merged.
//!
//! Guarantees of every `sm_map` plan: at most two `Remap`s (only the first and the last step
//! before the `Map` can be one), exactly one `Map`, and it is last.
//!
//! Must not: modify the tree, touch page tables or allocate device resources. Applying steps
//! is `GpuVm::apply`'s job.

use super::mapping::{Mapping, MappingSpec};
use super::tree::VaTree;
use super::va::{VaError, VaRange, VaSpace};
use super::vm_bo::VmBo;
use crate::types::GpuVa;
use std::sync::Arc;
use thiserror::Error;

/// Why a plan could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PlanError {
    /// The request's range is not valid in this VA space.
    #[error(transparent)]
    Va(#[from] VaError),
    /// `bo_unmap` was given a start address with no mapping (the vm_bo list is stale).
    #[error("no mapping starts at {start:#x}")]
    NoMapping { start: GpuVa },
    /// A piece of a split mapping could not be expressed (offset arithmetic failed).
    #[error("cannot split mapping {old} at {range}")]
    Split { old: VaRange, range: VaRange },
    /// The request names a vm_bo of another VM.
    #[error("the request's vm_bo belongs to another VM")]
    ForeignVmBo,
}

/// Removal of an old mapping.
#[derive(Debug, Clone)]
pub struct UnmapStep {
    old: Mapping,
    keep: bool,
}

impl UnmapStep {
    pub(crate) fn into_old(self) -> Mapping {
        self.old
    }

    /// The mapping being removed (as it is in the tree now).
    pub fn old(&self) -> &Mapping {
        &self.old
    }

    /// Whether the old PTEs already translate the new request and could be kept.
    pub fn keep(&self) -> bool {
        self.keep
    }
}

/// Replacement of an old mapping by the pieces of it that survive.
#[derive(Debug, Clone)]
pub struct RemapStep {
    prev: Option<MappingSpec>,
    next: Option<MappingSpec>,
    unmap: UnmapStep,
}

impl RemapStep {
    pub(crate) fn into_parts(self) -> (Option<MappingSpec>, Option<MappingSpec>, Mapping) {
        (self.prev, self.next, self.unmap.old)
    }

    /// The surviving piece left of the cut (starts where the old mapping started).
    pub fn prev(&self) -> Option<&MappingSpec> {
        self.prev.as_ref()
    }

    /// The surviving piece right of the cut (ends where the old mapping ended).
    pub fn next(&self) -> Option<&MappingSpec> {
        self.next.as_ref()
    }

    /// The removal of the old mapping.
    pub fn unmap(&self) -> &UnmapStep {
        &self.unmap
    }

    /// drm_gpuva_op_remap_to_unmap_range: the part of the old mapping that no piece keeps.
    pub fn hole(&self) -> VaRange {
        let old = self.unmap.old.range();
        let start = self.prev.as_ref().map_or(old.start(), |p| p.range().end());
        let end = self.next.as_ref().map_or(old.end(), |n| n.range().start());
        // The planners only build remaps whose pieces leave a non-empty hole (and apply
        // refuses any other); `old` is a harmless fallback, not a reachable case.
        VaRange::from_bounds(start, end).unwrap_or(old)
    }
}

/// One planned change.
#[derive(Debug, Clone)]
pub enum Step {
    /// Insert a new mapping.
    Map(MappingSpec),
    /// Cut an old mapping, keeping `prev` and/or `next`.
    Remap(RemapStep),
    /// Remove an old mapping whole.
    Unmap(UnmapStep),
    /// Make an existing mapping resident (no tree change).
    Prefetch(Mapping),
}

/// The step list. A `Vec`, not an inline small vector: steps are large (a remap carries three
/// mapping records) and a plan is moved several times between planning and applying, so one
/// allocation costs less than copying inline storage around.
pub type Steps = Vec<Step>;

/// Which VM a plan was made against, and that VM's tree generation at the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlanStamp {
    /// The planning `GpuVm` instance (unique per process, unlike `VmId`, which callers
    /// choose).
    pub(crate) instance: u64,
    pub(crate) generation: u64,
}

/// The ordered steps of one operation.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    steps: Steps,
    /// Set by `GpuVm`'s planning methods. A plan applied to the same VM at the same
    /// generation is known to be fresh, so applying it may skip re-checking overlaps that
    /// the planner already ruled out.
    stamp: Option<PlanStamp>,
}

impl Plan {
    fn new(steps: Steps) -> Self {
        Self { steps, stamp: None }
    }

    pub(crate) fn stamped(mut self, stamp: PlanStamp) -> Self {
        self.stamp = Some(stamp);
        self
    }

    pub(crate) fn stamp(&self) -> Option<PlanStamp> {
        self.stamp
    }

    pub(crate) fn into_steps(self) -> Steps {
        self.steps
    }

    /// The steps, in the order they must be applied.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether there is nothing to do (e.g. unmapping an empty range).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Every vm_bo the plan touches (mapped, cut or removed), each once, in step order:
    /// the BOs whose reservations a bind must hold while applying it (drm_gpuvm's
    /// `sm_map_exec_lock`).
    pub fn vm_bos(&self) -> Vec<&Arc<VmBo>> {
        let mut out: Vec<&Arc<VmBo>> = Vec::new();
        for step in &self.steps {
            let bo = match step {
                Step::Map(spec) => spec.vm_bo(),
                Step::Remap(rm) => rm.unmap.old.spec().vm_bo(),
                Step::Unmap(u) => u.old.spec().vm_bo(),
                Step::Prefetch(m) => m.spec().vm_bo(),
            };
            if let Some(bo) = bo.filter(|b| !out.iter().any(|o| o.bo_id() == b.bo_id())) {
                out.push(bo);
            }
        }
        out
    }

    /// Counts of (Map, Remap, Unmap, Prefetch) steps.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for s in &self.steps {
            match s {
                Step::Map(_) => c.0 += 1,
                Step::Remap(_) => c.1 += 1,
                Step::Unmap(_) => c.2 += 1,
                Step::Prefetch(_) => c.3 += 1,
            }
        }
        c
    }
}

fn piece(old: &Mapping, start: GpuVa, end: GpuVa) -> Result<MappingSpec, PlanError> {
    let range = VaRange::from_bounds(start, end)?;
    old.spec().slice(range).ok_or(PlanError::Split {
        old: old.range(),
        range,
    })
}

fn unmap(old: &Mapping, keep: bool) -> Step {
    Step::Unmap(UnmapStep {
        old: old.clone(),
        keep,
    })
}

fn remap(old: &Mapping, prev: Option<MappingSpec>, next: Option<MappingSpec>, keep: bool) -> Step {
    Step::Remap(RemapStep {
        prev,
        next,
        unmap: UnmapStep {
            old: old.clone(),
            keep,
        },
    })
}

/// The step for one existing mapping `v` overlapping the request, and whether the walk
/// stops after it (the request ends inside or exactly at the end of `v`).
fn map_step(v: &Mapping, req: &MappingSpec) -> Result<(Step, bool), PlanError> {
    let (a, e, o) = (req.range().start(), req.range().end(), req.offset());
    let (va, ve, ov) = (v.range().start(), v.range().end(), v.offset());
    // `keep` starts as "v has a BO": unbacked mappings never keep.
    let same_bo = v.bo_id().is_some() && v.bo_id() == req.bo_id();
    Ok(if va == a {
        let keep = same_bo && ov == o;
        if ve <= e {
            (unmap(v, keep), ve == e)
        } else {
            (remap(v, None, Some(piece(v, e, ve)?), keep), true)
        }
    } else if va < a {
        let keep = same_bo && ov.checked_add(a.get() - va.get()) == Some(o);
        let prev = Some(piece(v, va, a)?);
        if ve <= e {
            (remap(v, prev, None, keep), ve == e)
        } else {
            (remap(v, prev, Some(piece(v, e, ve)?), keep), true)
        }
    } else {
        let keep = same_bo && o.checked_add(va.get() - a.get()) == Some(ov);
        if ve <= e {
            (unmap(v, keep), ve == e)
        } else {
            (remap(v, None, Some(piece(v, e, ve)?), keep), true)
        }
    })
}

/// Plans mapping `req` (drm_gpuvm_sm_map_ops_create).
pub fn sm_map(tree: &VaTree, space: &VaSpace, req: &MappingSpec) -> Result<Plan, PlanError> {
    let range = req.range();
    space.check(range)?;
    // Room for the common worst case (Remap, Remap, Map) in one allocation.
    let mut steps = Steps::with_capacity(3);
    for v in tree.iter_range(range) {
        let (step, stop) = map_step(v, req)?;
        steps.push(step);
        if stop {
            break;
        }
    }
    steps.push(Step::Map(req.clone()));
    Ok(Plan::new(steps))
}

/// Plans unmapping `range` (drm_gpuvm_sm_unmap_ops_create): cut mappings at both ends, remove
/// the ones inside. No `keep`, no `Map`; an empty range yields an empty plan.
pub fn sm_unmap(tree: &VaTree, space: &VaSpace, range: VaRange) -> Result<Plan, PlanError> {
    space.check(range)?;
    let (a, e) = (range.start(), range.end());
    let mut steps = Steps::new();
    for v in tree.iter_range(range) {
        let (va, ve) = (v.range().start(), v.range().end());
        let prev = if va < a { Some(piece(v, va, a)?) } else { None };
        let next = if ve > e { Some(piece(v, e, ve)?) } else { None };
        steps.push(if prev.is_some() || next.is_some() {
            remap(v, prev, next, false)
        } else {
            unmap(v, false)
        });
    }
    Ok(Plan::new(steps))
}

/// Plans a prefetch of `range`: one step per overlapping mapping, nothing split.
pub fn prefetch(tree: &VaTree, space: &VaSpace, range: VaRange) -> Result<Plan, PlanError> {
    space.check(range)?;
    let steps = tree
        .iter_range(range)
        .map(|m| Step::Prefetch(m.clone()))
        .collect();
    Ok(Plan::new(steps))
}

/// Plans removing every mapping of a vm_bo, given their start addresses in address order
/// (drm_gpuvm_bo_unmap_ops_create): one `Unmap` each.
pub fn bo_unmap(tree: &VaTree, starts: impl IntoIterator<Item = GpuVa>) -> Result<Plan, PlanError> {
    let steps = starts
        .into_iter()
        .map(|start| {
            tree.get(start)
                .map(|m| unmap(m, false))
                .ok_or(PlanError::NoMapping { start })
        })
        .collect::<Result<Steps, _>>()?;
    Ok(Plan::new(steps))
}
