//! One client's registered address space and the VMs that hear its events.
//!
//! Owns: [`ClientPager`] — the client's [`ClientMm`] (once registered), the weak list of the
//! client's VMs ([`MmTarget`]s), and the listener the mm delivers events to, which fans each
//! event out to every live VM. Must not: know what a VM does with an event (the VM's
//! notifier path, in `bind::userptr`, takes its notifier lock, zaps and invalidates) or hold
//! its own lock while calling a VM.

use super::mm::{ClientMm, CpuRange, MmEvent, MmListener};
use parking_lot::Mutex;
use std::sync::{Arc, Weak};

/// What a VM does with its client's address-space changes (implemented by `bind::Vm`).
pub trait MmTarget: Send + Sync {
    /// The pages behind `r` changed (unmapped, replaced, moved or dropped): invalidate
    /// every GPU mapping of them before returning (zap, TLB invalidation) and release the old
    /// pages after that. Never waits for GPU work.
    fn invalidate(&self, r: CpuRange);
    /// The address space is gone: every userptr is invalid for good.
    fn mm_gone(&self);
    /// `mremap` moved the pages of `from` to `to` (before `invalidate(from)`): data the VM
    /// holds for `from` (SVM ranges migrated to VRAM) goes back to the CPU at `to`.
    fn remapped(&self, from: CpuRange, to: u64) {
        let _ = (from, to);
    }
    /// A CPU access at `va` faulted to gpud: if the VM holds the data there (an SVM range
    /// in VRAM), it gives it back to the CPU (`ClientMm::supply`) before returning.
    fn cpu_fault(&self, va: u64) {
        let _ = va;
    }
}

/// A client's address space as the device knows it (one per client, shared by its VMs).
#[derive(Default)]
pub struct ClientPager {
    mm: Mutex<Option<Arc<dyn ClientMm>>>,
    vms: Mutex<Vec<Weak<dyn MmTarget>>>,
}

impl ClientPager {
    /// A client with no registered address space yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The registered address space, if any.
    pub fn mm(&self) -> Option<Arc<dyn ClientMm>> {
        self.mm.lock().clone()
    }

    /// Registers `mm` (replacing an earlier one, whose pages every VM then drops) and makes
    /// this pager its listener.
    pub fn set_mm(self: &Arc<Self>, mm: Arc<dyn ClientMm>) {
        let old = self.mm.lock().replace(mm.clone());
        if old.is_some() {
            self.for_each_vm(|vm| vm.mm_gone());
        }
        mm.set_listener(self.clone());
    }

    /// The client went away: the address space is forgotten and every VM drops its pages.
    pub fn forget(&self) {
        let old = self.mm.lock().take();
        if old.is_some() {
            self.for_each_vm(|vm| vm.mm_gone());
        }
    }

    /// Adds a VM of this client (forgetting VMs that are gone).
    pub fn add_vm(&self, vm: Weak<dyn MmTarget>) {
        let mut vms = self.vms.lock();
        vms.retain(|w| w.strong_count() > 0);
        vms.push(vm);
    }

    /// How many VMs of the client are alive.
    pub fn vm_count(&self) -> usize {
        self.vms
            .lock()
            .iter()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Runs `f` on every live VM, without holding the list's lock.
    fn for_each_vm(&self, f: impl Fn(&dyn MmTarget)) {
        let vms: Vec<Arc<dyn MmTarget>> =
            self.vms.lock().iter().filter_map(Weak::upgrade).collect();
        for vm in vms {
            f(&*vm);
        }
    }
}

impl MmListener for ClientPager {
    fn event(&self, e: MmEvent) {
        match e {
            MmEvent::Unmap(r) | MmEvent::Remove(r) => self.for_each_vm(|vm| vm.invalidate(r)),
            MmEvent::Remap { from, to } => {
                self.for_each_vm(|vm| vm.remapped(from, to));
                self.for_each_vm(|vm| vm.invalidate(from));
            }
            MmEvent::Gone => {
                self.mm.lock().take();
                self.for_each_vm(|vm| vm.mm_gone());
            }
            // The VM holding the data migrates it back; then the faulting thread goes on
            // (whatever no VM held stays as it is).
            MmEvent::CpuFault { va, .. } => {
                self.for_each_vm(|vm| vm.cpu_fault(va));
                let page = va & !(crate::types::PAGE_SIZE - 1);
                if let (Some(mm), Ok(r)) = (self.mm(), CpuRange::new(page, crate::types::PAGE_SIZE))
                {
                    let _ = mm.supply(r, super::mm::Supply::Wake);
                }
            }
            // Userptr pages are unaffected by a fork (the parent keeps its pages).
            MmEvent::Fork => {}
        }
    }
}
