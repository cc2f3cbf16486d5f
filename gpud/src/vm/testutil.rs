//! Test helpers shared by the VM module's tests: fake BOs, a small VM, and a compact text
//! form of plans so expected step lists read like the drm_gpuvm diagrams.

use super::gpuvm::GpuVm;
use super::mapping::{MappingFlags, MappingSpec};
use super::plan::{Plan, Step};
use super::undo::UndoLog;
use super::va::{VaRange, VaSpace};
use super::vm_bo::tests::{FakeBo, VM, VM_RESV};
use super::vm_bo::VmBo;
use crate::types::{BoId, GpuVa, ResvId, PAGE_SIZE};
use std::sync::Arc;

pub(crate) const P: u64 = PAGE_SIZE;

/// Pages `[start, start + pages)`.
pub(crate) fn r(start: u64, pages: u64) -> VaRange {
    VaRange::new(GpuVa(start * P), pages * P).unwrap()
}

/// A VM of 1024 pages starting at page 0, no reserved region.
pub(crate) fn new_vm() -> GpuVm {
    GpuVm::new(VM, VM_RESV, VaSpace::new(GpuVa(0), 1024 * P, None).unwrap())
}

/// The vm_bo of BO `id` in `vm` (obtained once, hold kept for the test's life).
pub(crate) fn bo(vm: &mut GpuVm, id: u64) -> Arc<VmBo> {
    if let Some(b) = vm.bo_find(BoId(id)) {
        return Arc::clone(b);
    }
    let fake = Arc::new(FakeBo {
        id: BoId(id),
        resv: if id % 2 == 0 {
            VM_RESV
        } else {
            ResvId(1000 + id)
        },
        size: 1 << 40,
    });
    vm.bo_obtain(fake).0
}

/// `pages` pages at `start` backed by `vm_bo` from page offset `off`.
pub(crate) fn spec(start: u64, pages: u64, vm_bo: &Arc<VmBo>, off: u64) -> MappingSpec {
    MappingSpec::bo(r(start, pages), Arc::clone(vm_bo), off * P, false).unwrap()
}

/// Plans and applies `req`, returning the plan.
pub(crate) fn map(vm: &mut GpuVm, req: &MappingSpec) -> Plan {
    let plan = vm.plan_map(req).unwrap();
    vm.apply_plan(plan.clone(), &mut UndoLog::new()).unwrap();
    vm.check_invariants().unwrap();
    plan
}

fn bo_name(s: &MappingSpec) -> String {
    match s.bo_id() {
        Some(BoId(id)) => format!("bo{id}+{}", s.offset() / P),
        None if s.flags().contains(MappingFlags::USERPTR) => format!("user+{}", s.offset() / P),
        None => "null".to_string(),
    }
}

fn span(range: VaRange) -> String {
    format!("{}..{}", range.start().get() / P, range.end().get() / P)
}

fn piece(s: &MappingSpec) -> String {
    format!("{} {}", span(s.range()), bo_name(s))
}

/// One line per step, e.g. `remap 0..3 prev 0..1 bo1+10 next 2..3 bo1+12 keep`.
pub(crate) fn describe(plan: &Plan) -> Vec<String> {
    plan.steps()
        .iter()
        .map(|s| match s {
            Step::Map(m) => format!("map {}", piece(m)),
            Step::Unmap(u) => {
                let keep = if u.keep() { " keep" } else { "" };
                format!("unmap {}{keep}", span(u.old().range()))
            }
            Step::Remap(rm) => {
                let mut out = format!("remap {}", span(rm.unmap().old().range()));
                if let Some(p) = rm.prev() {
                    out += &format!(" prev {}", piece(p));
                }
                if let Some(n) = rm.next() {
                    out += &format!(" next {}", piece(n));
                }
                if rm.unmap().keep() {
                    out += " keep";
                }
                out
            }
            Step::Prefetch(m) => format!("prefetch {}", span(m.range())),
        })
        .collect()
}

/// The tree as `(start page, pages, "boN+off" | "null" | "user+off")`, for comparisons.
pub(crate) fn layout(vm: &GpuVm) -> Vec<String> {
    vm.tree().iter().map(|m| piece(m.spec())).collect()
}
