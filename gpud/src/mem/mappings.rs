//! How the memory side reaches the GPU mappings of a BO without knowing VMs: the seam that
//! lets a move or a free take every mapping of the BO away from the device first.
//!
//! Owns: [`BoMappings`] (implemented by the VM, registered with a BO by the bind that first
//! maps it there) and [`ZapFailed`]. Must not: name the VM type or its locks: `mem/` sits
//! below `vm/` and `bind/`.
//!
//! The rule it serves (`docs/memory.md`, "Zap, invalidate, then free"): before the memory
//! behind a BO is freed or handed to anyone else, every VM that may translate to it has
//! cleared those entries and invalidated its TLB, and waited for the invalidation.

use crate::types::{BoId, VmId};
use crate::vm::vm_bo::VmBo;
use std::sync::Arc;
use thiserror::Error;

/// A zap that did not complete: the VM's translations may still reach the BO's memory, so
/// that memory must never be freed (it is leaked and counted instead).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("zap of BO {bo} in VM {vm}: {reason}")]
pub struct ZapFailed {
    pub bo: u64,
    pub vm: u64,
    pub reason: String,
}

/// One address space's view of the BOs mapped in it.
///
/// Locking: the caller holds the BO's reservation (so no bind or rebind of the BO's
/// mappings runs) and no VM lock, page-table lock or internal lock. Implementations take
/// only the VM's page-table (notifier) lock — never `vm.lock` or a reservation.
pub trait BoMappings: Send + Sync {
    /// The VM.
    fn vm_id(&self) -> VmId;

    /// Clears every page-table entry of this VM that maps `bo` (entries written by every
    /// bind, rebind or fault of the BO still in the tables, including those of a closed
    /// VM's tree), then invalidates those translations in the TLB and waits for it. On `Ok`
    /// no GPU access of this VM reaches the BO's current backing.
    fn zap_bo(&self, bo: BoId) -> Result<(), ZapFailed>;

    /// A VM-private BO of this VM moved (its entries are zapped): `vm_bo` must be rebound
    /// before the VM's next job. Called with the VM reservation held (it is the BO's).
    fn private_bo_moved(&self, vm_bo: Arc<VmBo>);
}
