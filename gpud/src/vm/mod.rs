//! GPU virtual address spaces: the VA tree, the split/merge planner, vm_bo bookkeeping with
//! the extobj and evict lists (drm_gpuvm semantics; see `docs/gpuvm.md`).
//!
//! Files: [`va`] (ranges, VA space, reserved region), [`mapping`] (records and flags),
//! [`tree`] (the ordered interval structure), [`plan`] (pure planners → steps),
//! [`gpuvm`] (the VM: apply steps, unwind, vm_bo registry), [`undo`] (undo log, completion
//! token), [`vm_bo`] (the BO seam, vm_bo, extobj/evict lists), [`pagetable`] (the per-VM
//! page-table manager; see `docs/pagetable.md`).
//!
//! Must not (everything but [`pagetable`]): write page tables, allocate device resources, lock
//! anything, or depend on the memory module (BOs are reached only through the [`GpuBo`]
//! trait). [`pagetable`] writes page tables through `hw` and takes table pages from the VRAM
//! allocator or DMA memory; it knows nothing of BOs or mappings.
//!
//! # Who holds whom
//!
//! ```text
//!  GpuVm ──registry (BoId → entry: Arc<VmBo>, mapping starts, holds)──► VmBo ──► Arc<dyn GpuBo>
//!    │                                                                   ▲
//!    └─ VaTree ── Mapping ── MappingSpec ── Option<Arc<VmBo>> ───────────┘
//!  VmBoLists (extobj, evict) ── Arc<VmBo> ───────────────────────────────┘
//!  the BO side (memory module) ── Arc<VmBo> (registered after `bo_obtain` says `created`)
//! ```
//!
//! - A mapping holds its vm_bo; a vm_bo holds its BO. Nothing in this module holds the VM:
//!   the VM's owner (the driver's VM handle) owns the `GpuVm` and the `VmBoLists`.
//! - A vm_bo's reference count in its VM is its holds (`bo_obtain`/`bo_put`) plus its linked
//!   mappings. At zero it stays registered until `GpuVm::prune_vm_bos`, which drops it from
//!   the registry and from both lists and hands it back so the BO side can forget it. This
//!   deferral keeps apply/unwind free of list updates (they run without the VM resv).
//! - Plans and undo logs hold clones of mappings (and so `Arc<VmBo>`s), never borrows of the
//!   tree: a plan can be kept while the tree changes; applying a stale plan is an error.
//!
//! # Which lock protects what
//!
//! `gpud::sync` provides the locks; this module takes none and encodes the rules in
//! ownership instead:
//! - `vm.lock` (outermost): the `GpuVm` (tree, vm_bo registry, id counter). Every change
//!   takes `&mut GpuVm`, so the owner keeps the `GpuVm` inside `vm.lock`.
//! - the VM's reservation: the `VmBoLists` (extobj list, evict list). Every method takes
//!   `&mut VmBoLists`, so the owner keeps it in the VM resv's protected state. Evicting a
//!   VM-private BO (`VmBoLists::evict_local`) happens here: its resv *is* the VM resv.
//! - each BO's own reservation: `VmBo::set_evicted` for an external BO. It only flags (an
//!   atomic); `VmBoLists::move_evicted_extobjs`, called once the VM resv and every extobj
//!   resv are held, moves flagged vm_bos onto the evict list (drm_gpuvm `RESV_PROTECTED`).
//!   `VmBoLists::validate` walks the evict list under the same locks.
//!
//! # Planning a multi-op bind
//!
//! Plan op 1 against the tree, apply its steps into an [`UndoLog`], plan op 2 against the
//! updated tree, and so on. On any failure `GpuVm::unwind(log)` restores the VM bit for bit
//! (mappings, ids, vm_bo links, id counter); on success drop the log.

pub mod gpuvm;
pub mod mapping;
pub mod pagetable;
pub mod plan;
pub mod tree;
pub mod undo;
pub mod va;
pub mod vm_bo;

pub use gpuvm::{ApplyError, GpuVm, StepCommit};
pub use mapping::{Mapping, MappingError, MappingFlags, MappingId, MappingSpec};
pub use plan::{Plan, PlanError, RemapStep, Step, UnmapStep};
pub use tree::{OverlapError, VaTree};
pub use undo::{Applied, UndoLog};
pub use va::{VaError, VaRange, VaSpace};
pub use vm_bo::{GpuBo, VmBo, VmBoError, VmBoLists};

#[cfg(test)]
mod gpuvm_tests;
#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod testutil;
