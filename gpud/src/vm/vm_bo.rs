//! vm_bo: the link between one VM and one buffer object, and the VM's extobj/evict lists.
//!
//! Owns: the BO seam [`GpuBo`] (what the VM needs from a buffer object, nothing more),
//! [`VmBo`] (one per (VM, BO), shared through `Arc` with the BO side so eviction can flag
//! it) and [`VmBoLists`] (the VM's external-object list and evict list).
//!
//! Must not: depend on the memory module, lock anything, or touch page tables. Which lock
//! guards what is a contract with the caller, stated on each item (see also `vm/mod.rs`):
//! - `VmBo::evicted` is written under the BO's own reservation (an atomic, so readers under
//!   other locks see a coherent value);
//! - [`VmBoLists`] lives inside the state protected by the VM's reservation; every method
//!   takes `&mut self`, so holding the VM resv is what grants access.

use crate::types::{BoId, ResvId, VmId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use thiserror::Error;

/// What the VM module needs from a buffer object. The memory module implements it; tests use
/// a tiny fake. Implementations must return the same values for the object's whole life.
pub trait GpuBo: Send + Sync + fmt::Debug {
    /// The BO's id, unique inside the daemon.
    fn id(&self) -> BoId;
    /// Identity of the reservation object that protects the BO. A BO whose reservation is the
    /// VM's own is VM-private ("local"); any other BO is external to that VM.
    fn resv(&self) -> ResvId;
    /// Size in bytes (used by callers to bound mapping offsets).
    fn size(&self) -> u64;
}

/// Why a vm_bo list operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VmBoError {
    /// The vm_bo belongs to another VM.
    #[error("vm_bo of BO {bo:?} belongs to VM {owner:?}, not {vm:?}")]
    ForeignVm { bo: BoId, owner: VmId, vm: VmId },
    /// A VM-private operation was asked for an external BO.
    #[error("BO {bo:?} is external to VM {vm:?}")]
    External { bo: BoId, vm: VmId },
    /// The VM holds no vm_bo for this BO.
    #[error("VM {vm:?} has no vm_bo for BO {bo:?}")]
    Unknown { bo: BoId, vm: VmId },
    /// `put` without a matching `obtain`.
    #[error("vm_bo of BO {bo:?} in VM {vm:?} has no holder to release")]
    NotHeld { bo: BoId, vm: VmId },
}

/// The (VM, BO) pair. Created by `GpuVm::bo_obtain`; shared by the VM's registry, its
/// mappings, its lists and the BO side.
///
/// INVARIANT: `external` is fixed at creation: reservations of a BO never change.
pub struct VmBo {
    vm: VmId,
    /// `bo.id()`, cached: it is read on every link and plan comparison.
    bo_id: BoId,
    bo: Arc<dyn GpuBo>,
    external: bool,
    /// drm_gpuvm's `vm_bo->evicted`. Written under the BO's reservation.
    evicted: AtomicBool,
}

impl VmBo {
    pub(crate) fn new(vm: VmId, vm_resv: ResvId, bo: Arc<dyn GpuBo>) -> Self {
        let external = bo.resv() != vm_resv;
        Self {
            vm,
            bo_id: bo.id(),
            bo,
            external,
            evicted: AtomicBool::new(false),
        }
    }

    /// The VM this vm_bo belongs to.
    pub fn vm(&self) -> VmId {
        self.vm
    }

    /// The buffer object.
    pub fn bo(&self) -> &Arc<dyn GpuBo> {
        &self.bo
    }

    /// Shorthand for `self.bo().id()`.
    pub fn bo_id(&self) -> BoId {
        self.bo_id
    }

    /// Whether the BO's reservation is not the VM's.
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// Whether the BO has been evicted and not yet validated for this VM.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Flags (or clears) eviction. Caller holds the BO's reservation. For an external BO this
    /// is the whole eviction step: the VM resv is not held, so the vm_bo reaches the evict
    /// list only at the VM's next [`VmBoLists::move_evicted_extobjs`]. A VM-private BO must
    /// go through [`VmBoLists::evict_local`] instead, which also updates the list.
    pub fn set_evicted(&self, evicted: bool) {
        self.evicted.store(evicted, Ordering::Release);
    }
}

impl fmt::Debug for VmBo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmBo")
            .field("vm", &self.vm)
            .field("bo", &self.bo.id())
            .field("external", &self.external)
            .field("evicted", &self.is_evicted())
            .finish()
    }
}

/// The VM's external-object list and evict list (drm_gpuvm in `RESV_PROTECTED` mode).
///
/// Lives inside the VM reservation's protected state: whoever has `&mut VmBoLists` holds the
/// VM resv. Both lists are ordered by `BoId`, so walks are deterministic.
#[derive(Debug)]
pub struct VmBoLists {
    vm: VmId,
    extobj: BTreeMap<BoId, Arc<VmBo>>,
    evict: BTreeMap<BoId, Arc<VmBo>>,
}

impl VmBoLists {
    /// Empty lists for VM `vm`.
    pub fn new(vm: VmId) -> Self {
        Self {
            vm,
            extobj: BTreeMap::new(),
            evict: BTreeMap::new(),
        }
    }

    fn check_vm(&self, vm_bo: &VmBo) -> Result<(), VmBoError> {
        if vm_bo.vm == self.vm {
            Ok(())
        } else {
            Err(VmBoError::ForeignVm {
                bo: vm_bo.bo_id(),
                owner: vm_bo.vm,
                vm: self.vm,
            })
        }
    }

    /// Adds an external vm_bo to the extobj list. Idempotent; a VM-private BO is ignored
    /// (its reservation is the VM's, so locking the VM locks it). Returns whether it was added.
    pub fn extobj_add(&mut self, vm_bo: &Arc<VmBo>) -> Result<bool, VmBoError> {
        self.check_vm(vm_bo)?;
        if !vm_bo.external || self.extobj.contains_key(&vm_bo.bo_id()) {
            return Ok(false);
        }
        self.extobj.insert(vm_bo.bo_id(), Arc::clone(vm_bo));
        Ok(true)
    }

    /// Evicts (or un-evicts) a VM-private BO: sets the flag and moves the vm_bo onto (or off)
    /// the evict list at once, which is legal because the BO's resv is the VM resv we hold.
    pub fn evict_local(&mut self, vm_bo: &Arc<VmBo>, evict: bool) -> Result<(), VmBoError> {
        self.check_vm(vm_bo)?;
        if vm_bo.external {
            return Err(VmBoError::External {
                bo: vm_bo.bo_id(),
                vm: self.vm,
            });
        }
        vm_bo.set_evicted(evict);
        if evict {
            self.evict.insert(vm_bo.bo_id(), Arc::clone(vm_bo));
        } else {
            self.evict.remove(&vm_bo.bo_id());
        }
        Ok(())
    }

    /// The external objects to lock, in `BoId` order (the "lock external objects" step locks
    /// each one's reservation through the exec helper).
    pub fn extobjs(&self) -> impl Iterator<Item = &Arc<VmBo>> + '_ {
        self.extobj.values()
    }

    /// Second half of locking the external objects: with the VM resv and every extobj resv
    /// held, move each extobj flagged evicted onto the evict list. Returns how many moved.
    pub fn move_evicted_extobjs(&mut self) -> usize {
        let mut moved = 0;
        for (id, vm_bo) in &self.extobj {
            if vm_bo.is_evicted() && !self.evict.contains_key(id) {
                self.evict.insert(*id, Arc::clone(vm_bo));
                moved += 1;
            }
        }
        moved
    }

    /// Walks the evict list in `BoId` order. Entries whose flag was cleared meanwhile are
    /// dropped; for the others `validate` moves the BO back, and on success the flag is
    /// cleared and the entry removed. Stops at the first error, leaving the rest listed.
    /// Returns how many BOs were validated.
    pub fn validate<E>(
        &mut self,
        mut validate: impl FnMut(&Arc<VmBo>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut done = 0;
        while let Some(entry) = self.evict.first_entry() {
            let vm_bo = entry.get();
            if vm_bo.is_evicted() {
                validate(vm_bo)?;
                vm_bo.set_evicted(false);
                done += 1;
            }
            entry.remove();
        }
        Ok(done)
    }

    /// Whether the BO is on the extobj list.
    pub fn is_extobj(&self, bo: BoId) -> bool {
        self.extobj.contains_key(&bo)
    }

    /// Whether the BO is on the evict list.
    pub fn is_on_evict_list(&self, bo: BoId) -> bool {
        self.evict.contains_key(&bo)
    }

    /// The evict list, in `BoId` order.
    pub fn evicted(&self) -> impl Iterator<Item = &Arc<VmBo>> + '_ {
        self.evict.values()
    }

    /// Drops a dying vm_bo from both lists (called when the VM releases it).
    pub(crate) fn remove(&mut self, bo: BoId) {
        self.extobj.remove(&bo);
        self.evict.remove(&bo);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake BO: an id, a reservation identity and a size.
    #[derive(Debug)]
    pub(crate) struct FakeBo {
        pub id: BoId,
        pub resv: ResvId,
        pub size: u64,
    }

    impl GpuBo for FakeBo {
        fn id(&self) -> BoId {
            self.id
        }
        fn resv(&self) -> ResvId {
            self.resv
        }
        fn size(&self) -> u64 {
            self.size
        }
    }

    pub(crate) const VM: VmId = VmId(1);
    pub(crate) const VM_RESV: ResvId = ResvId(100);

    /// A vm_bo of `VM`; external unless `resv` is `VM_RESV`.
    pub(crate) fn vm_bo(id: u64, resv: ResvId) -> Arc<VmBo> {
        let bo = Arc::new(FakeBo {
            id: BoId(id),
            resv,
            size: 1 << 30,
        });
        Arc::new(VmBo::new(VM, VM_RESV, bo))
    }

    #[test]
    fn external_is_decided_by_reservation_identity() {
        assert!(!vm_bo(1, VM_RESV).is_external());
        assert!(vm_bo(2, ResvId(7)).is_external());
    }

    #[test]
    fn extobj_add_is_idempotent_and_ignores_local_bos() {
        let mut lists = VmBoLists::new(VM);
        let ext = vm_bo(1, ResvId(7));
        assert_eq!(lists.extobj_add(&ext), Ok(true));
        assert_eq!(lists.extobj_add(&ext), Ok(false));
        assert_eq!(lists.extobj_add(&Arc::clone(&ext)), Ok(false));
        assert_eq!(lists.extobjs().count(), 1);
        assert_eq!(lists.extobj_add(&vm_bo(2, VM_RESV)), Ok(false));
        assert!(lists.is_extobj(BoId(1)) && !lists.is_extobj(BoId(2)));
    }

    #[test]
    fn foreign_vm_bo_is_refused() {
        let mut lists = VmBoLists::new(VmId(9));
        let ext = vm_bo(1, ResvId(7));
        assert_eq!(
            lists.extobj_add(&ext),
            Err(VmBoError::ForeignVm {
                bo: BoId(1),
                owner: VM,
                vm: VmId(9)
            })
        );
    }

    #[test]
    fn evicting_local_bo_moves_it_to_the_list_at_once() {
        let mut lists = VmBoLists::new(VM);
        let local = vm_bo(3, VM_RESV);
        lists.evict_local(&local, true).unwrap();
        assert!(local.is_evicted() && lists.is_on_evict_list(BoId(3)));
        lists.evict_local(&local, false).unwrap();
        assert!(!local.is_evicted() && !lists.is_on_evict_list(BoId(3)));
        let ext = vm_bo(4, ResvId(7));
        assert_eq!(
            lists.evict_local(&ext, true),
            Err(VmBoError::External {
                bo: BoId(4),
                vm: VM
            })
        );
        assert!(!ext.is_evicted());
    }

    #[test]
    fn external_evict_flag_moves_to_list_when_extobjs_are_locked() {
        let mut lists = VmBoLists::new(VM);
        let a = vm_bo(5, ResvId(7));
        let b = vm_bo(6, ResvId(8));
        lists.extobj_add(&a).unwrap();
        lists.extobj_add(&b).unwrap();
        // Eviction under the BO's own resv: flag only, the list is untouched.
        a.set_evicted(true);
        assert!(!lists.is_on_evict_list(BoId(5)));
        assert_eq!(lists.move_evicted_extobjs(), 1);
        assert!(lists.is_on_evict_list(BoId(5)) && !lists.is_on_evict_list(BoId(6)));
        // A second lock pass finds nothing new.
        assert_eq!(lists.move_evicted_extobjs(), 0);
    }

    #[test]
    fn validation_walks_and_empties_the_evict_list() {
        let mut lists = VmBoLists::new(VM);
        let local = vm_bo(1, VM_RESV);
        let ext = vm_bo(2, ResvId(7));
        let back = vm_bo(3, ResvId(8));
        lists.evict_local(&local, true).unwrap();
        for e in [&ext, &back] {
            lists.extobj_add(e).unwrap();
            e.set_evicted(true);
        }
        lists.move_evicted_extobjs();
        // BO 3 moved back by someone else before validation: dropped without a callback.
        back.set_evicted(false);
        let mut seen = Vec::new();
        let n = lists
            .validate(|vb| {
                seen.push(vb.bo_id());
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen, vec![BoId(1), BoId(2)]);
        assert_eq!(lists.evicted().count(), 0);
        assert!(!local.is_evicted() && !ext.is_evicted());
    }

    #[test]
    fn validation_error_keeps_the_failed_and_later_entries() {
        let mut lists = VmBoLists::new(VM);
        let bos: Vec<_> = (1..=3).map(|i| vm_bo(i, VM_RESV)).collect();
        for b in &bos {
            lists.evict_local(b, true).unwrap();
        }
        let r = lists.validate(|vb| {
            if vb.bo_id() == BoId(2) {
                Err("nomem")
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err("nomem"));
        let left: Vec<_> = lists.evicted().map(|v| v.bo_id()).collect();
        assert_eq!(left, vec![BoId(2), BoId(3)]);
        assert!(!bos[0].is_evicted() && bos[1].is_evicted());
    }

    /// Eviction threads flag their external BO under its own "resv" (a mutex) while the VM
    /// owner repeatedly locks the VM resv and every extobj resv, moves flags onto the list
    /// and validates. Every flag flip must be validated exactly once: none lost, none twice.
    #[test]
    fn concurrent_external_evictions_are_validated_exactly_once() {
        use std::sync::Mutex;
        const BOS: u64 = 4;
        const ROUNDS: usize = 1000;
        let bos: Arc<Vec<Arc<VmBo>>> =
            Arc::new((0..BOS).map(|i| vm_bo(i, ResvId(50 + i))).collect());
        let resvs: Arc<Vec<Mutex<u64>>> = Arc::new((0..BOS).map(|_| Mutex::new(0)).collect());
        let vm_resv = Mutex::new(VmBoLists::new(VM));
        for b in bos.iter() {
            vm_resv.lock().unwrap().extobj_add(b).unwrap();
        }
        let evictors: Vec<_> = (0..BOS as usize)
            .map(|i| {
                let (bos, resvs) = (Arc::clone(&bos), Arc::clone(&resvs));
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        let mut flips = resvs[i].lock().unwrap();
                        if !bos[i].is_evicted() {
                            bos[i].set_evicted(true);
                            *flips += 1;
                        }
                        drop(flips);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        let mut validated = vec![0u64; BOS as usize];
        let pass = |validated: &mut Vec<u64>| {
            let mut lists = vm_resv.lock().unwrap();
            let _held: Vec<_> = resvs.iter().map(|m| m.lock().unwrap()).collect();
            lists.move_evicted_extobjs();
            lists
                .validate(|vb| {
                    assert!(vb.is_evicted(), "validated a BO that was not evicted");
                    validated[vb.bo_id().0 as usize] += 1;
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert_eq!(lists.evicted().count(), 0);
        };
        while !evictors.iter().all(|t| t.is_finished()) {
            pass(&mut validated);
        }
        for t in evictors {
            t.join().unwrap();
        }
        pass(&mut validated);
        let flips: Vec<u64> = resvs.iter().map(|m| *m.lock().unwrap()).collect();
        assert_eq!(validated, flips);
        assert!(flips.iter().all(|&f| f > 0));
        assert!(bos.iter().all(|b| !b.is_evicted()));
    }

    #[derive(Debug, Clone)]
    enum ListOp {
        ExtobjAdd(usize),
        EvictLocal(usize, bool),
        SetEvicted(usize, bool),
        MoveEvicted,
        Validate(Option<usize>),
        Remove(usize),
    }

    fn list_op() -> impl proptest::strategy::Strategy<Value = ListOp> {
        use proptest::prelude::*;
        let bo = 0usize..6;
        prop_oneof![
            bo.clone().prop_map(ListOp::ExtobjAdd),
            (bo.clone(), any::<bool>()).prop_map(|(i, e)| ListOp::EvictLocal(i, e)),
            (bo.clone(), any::<bool>()).prop_map(|(i, e)| ListOp::SetEvicted(i, e)),
            Just(ListOp::MoveEvicted),
            proptest::option::of(bo.clone()).prop_map(ListOp::Validate),
            bo.prop_map(ListOp::Remove),
        ]
    }

    /// The lists as plain sets: (extobj, evict, evicted flags).
    #[derive(Default)]
    struct ListOracle {
        extobj: std::collections::BTreeSet<usize>,
        evict: std::collections::BTreeSet<usize>,
        flag: [bool; 6],
    }

    impl ListOracle {
        fn apply(&mut self, op: &ListOp) {
            let external = |i: usize| i % 2 == 1;
            match *op {
                ListOp::ExtobjAdd(i) if external(i) => {
                    self.extobj.insert(i);
                }
                ListOp::EvictLocal(i, e) if !external(i) => {
                    self.flag[i] = e;
                    if e {
                        self.evict.insert(i);
                    } else {
                        self.evict.remove(&i);
                    }
                }
                ListOp::SetEvicted(i, e) if external(i) => self.flag[i] = e,
                ListOp::MoveEvicted => {
                    let flagged = self.extobj.iter().filter(|&&i| self.flag[i]);
                    self.evict.extend(flagged.copied().collect::<Vec<_>>());
                }
                ListOp::Validate(fail) => {
                    while let Some(i) = self.evict.first().copied() {
                        if self.flag[i] && fail == Some(i) {
                            break;
                        }
                        self.flag[i] = false;
                        self.evict.remove(&i);
                    }
                }
                ListOp::Remove(i) => {
                    self.extobj.remove(&i);
                    self.evict.remove(&i);
                }
                _ => {}
            }
        }
    }

    proptest::proptest! {
        /// Random list operations agree with the set oracle (external BOs are the odd ids).
        #[test]
        fn lists_match_the_set_oracle(ops in proptest::collection::vec(list_op(), 1..60)) {
            let bos: Vec<_> = (0..6u64)
                .map(|i| vm_bo(i, if i % 2 == 1 { ResvId(50 + i) } else { VM_RESV }))
                .collect();
            let mut lists = VmBoLists::new(VM);
            let mut oracle = ListOracle::default();
            for op in &ops {
                match *op {
                    ListOp::ExtobjAdd(i) => {
                        lists.extobj_add(&bos[i]).unwrap();
                    }
                    ListOp::EvictLocal(i, e) => {
                        let r = lists.evict_local(&bos[i], e);
                        proptest::prop_assert_eq!(r.is_err(), i % 2 == 1);
                    }
                    ListOp::SetEvicted(i, e) if i % 2 == 1 => bos[i].set_evicted(e),
                    ListOp::SetEvicted(..) => continue,
                    ListOp::MoveEvicted => {
                        lists.move_evicted_extobjs();
                    }
                    ListOp::Validate(fail) => {
                        let _ = lists.validate(|vb| {
                            if Some(vb.bo_id().0 as usize) == fail { Err(()) } else { Ok(()) }
                        });
                    }
                    ListOp::Remove(i) => lists.remove(BoId(i as u64)),
                }
                oracle.apply(op);
                let ext: Vec<usize> = lists.extobjs().map(|b| b.bo_id().0 as usize).collect();
                let ev: Vec<usize> = lists.evicted().map(|b| b.bo_id().0 as usize).collect();
                proptest::prop_assert_eq!(ext, oracle.extobj.iter().copied().collect::<Vec<_>>());
                proptest::prop_assert_eq!(ev, oracle.evict.iter().copied().collect::<Vec<_>>());
                let flags: Vec<bool> = bos.iter().map(|b| b.is_evicted()).collect();
                proptest::prop_assert_eq!(flags, oracle.flag.to_vec());
            }
        }
    }

    #[test]
    fn remove_drops_from_both_lists() {
        let mut lists = VmBoLists::new(VM);
        let ext = vm_bo(2, ResvId(7));
        lists.extobj_add(&ext).unwrap();
        ext.set_evicted(true);
        lists.move_evicted_extobjs();
        lists.remove(BoId(2));
        assert!(!lists.is_extobj(BoId(2)) && !lists.is_on_evict_list(BoId(2)));
    }
}
