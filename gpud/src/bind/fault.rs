//! Recoverable page faults of fault-mode VMs: the FAULT interrupt wakes a worker thread that
//! pops fault records, populates the PTEs of the mapping covering the faulting address and
//! replies retry, or replies abort for an address no mapping covers.
//!
//! Owns: [`FaultWorker`] (the thread and its wake-up channel) and [`Vm::handle_fault`].
//! Must not: run on the IRQ thread (population takes `vm.lock` and waits for an
//! invalidation), populate anything for a VM not in fault mode, or serve or answer a record
//! raised under an earlier owner of its context (records carry the context's address-space
//! id, new at every assignment; `exec/contexts.rs`).

use super::op::VmFlags;
use super::userptr::USERPTR_RETRIES;
use super::vm::{Vm, VmState};
use crate::hw::{FaultQueue, FaultReply, HwCtx};
use crate::sync::{Exec, ExecFlags};
use crate::types::GpuVa;
use crate::vm::MappingFlags;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

impl Vm {
    /// Populates the mapping covering `va`; `Abort` if none does (or the VM is gone).
    pub fn handle_fault(&self, va: GpuVa) -> FaultReply {
        self.faults
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !self.flags.contains(VmFlags::FAULT_MODE) || self.check_alive().is_err() {
            return FaultReply::Abort;
        }
        let mut st = self.lock.write();
        let Some(m) = st.mapping_at(va).cloned() else {
            return FaultReply::Abort;
        };
        if m.flags().contains(MappingFlags::USERPTR) {
            return self.refault_userptr(&mut st, m.range().start().get());
        }
        if m.flags().contains(MappingFlags::CPU_MIRROR) {
            return self.svm_fault(&mut st, m.range(), m.flags(), va);
        }
        let resv = m
            .bo_id()
            .and_then(|id| st.bos.get(&id))
            .filter(|bo| !bo.is_vm_private())
            .map(|bo| bo.reservation().clone());
        let mut exec = Exec::new(ExecFlags::IGNORE_DUPLICATES);
        let locked = exec.run(|e| {
            e.lock_obj(&self.resv)?;
            resv.iter().try_for_each(|r| e.lock_obj(r))
        });
        if locked.is_err() {
            return FaultReply::Abort;
        }
        let op = match self.map_op(&st, m.range(), m.bo_id(), m.offset(), m.flags()) {
            Ok(op) => op,
            Err(_) => return FaultReply::Abort,
        };
        match self.write_now(&mut st, &[op]) {
            Ok(()) => FaultReply::Retry,
            Err(_) => FaultReply::Abort,
        }
    }
}

impl Vm {
    /// Refaults a userptr (its pages went with an invalidation, or were never resolved on
    /// this fault-mode VM): resolve and map them, retried if an invalidation raced.
    fn refault_userptr(&self, st: &mut VmState, start: u64) -> FaultReply {
        for _ in 0..USERPTR_RETRIES {
            match self.populate_userptrs(st, Some(start)) {
                Ok(0) => return FaultReply::Retry,
                Ok(_) => continue,
                Err(_) => return FaultReply::Abort,
            }
        }
        FaultReply::Abort
    }

    /// Page faults the device reported for this VM so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whose a fault record is, as a [`VmLookup`] finds it.
pub enum Owner {
    /// The VM the context served when the fault was raised (and serves now).
    Vm(Arc<Vm>),
    /// No VM (gone): the fault is answered with abort.
    Nobody,
    /// The context changed hands after the fault was raised. The queue that raised it has
    /// left the hardware (only a preemption, kill or reset takes a stalled queue off, and
    /// each ends the stall), so nobody waits for a reply, and a reply would act on the new
    /// owner: the record is dropped.
    Stale,
}

/// Finds the owner of a fault record from its context and address-space id.
pub type VmLookup = Arc<dyn Fn(HwCtx, u16) -> Owner + Send + Sync>;

/// Runs the reply write only if the context still serves the record's address-space id,
/// with no reassignment possible in between; returns whether it ran.
pub type ReplyGate = Arc<dyn Fn(HwCtx, u16, &mut dyn FnMut()) -> bool + Send + Sync>;

/// The fault worker thread.
pub struct FaultWorker {
    /// Shared with the wakers; emptied on drop so the thread sees the channel close.
    wake: Arc<parking_lot::Mutex<Option<Sender<()>>>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultWorker {
    /// Starts the worker over `queue`; call [`FaultWorker::waker`] from the FAULT handler.
    pub fn start(
        mut queue: Box<dyn FaultQueue>,
        lookup: VmLookup,
        gate: ReplyGate,
    ) -> std::io::Result<Self> {
        let (tx, rx) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gpud-faults".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while let Some(fault) = queue.pop() {
                        if fault.fatal {
                            continue;
                        }
                        let reply = match lookup(fault.ctx, fault.asid) {
                            Owner::Vm(vm) => vm.handle_fault(fault.va),
                            Owner::Nobody => FaultReply::Abort,
                            Owner::Stale => {
                                tracing::debug!(?fault, "fault of a context's old owner dropped");
                                continue;
                            }
                        };
                        // The context may have changed hands while the fault was served.
                        let q = &*queue;
                        if !gate(fault.ctx, fault.asid, &mut || q.reply(fault.ctx, reply)) {
                            tracing::debug!(?fault, "context reassigned: reply dropped");
                        }
                    }
                }
            })?;
        Ok(Self {
            wake: Arc::new(parking_lot::Mutex::new(Some(tx))),
            thread: Some(thread),
        })
    }

    /// A handler for the IRQ dispatcher: wakes the worker.
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let tx = self.wake.clone();
        move || {
            if let Some(tx) = tx.lock().as_ref() {
                let _ = tx.send(());
            }
        }
    }
}

impl Drop for FaultWorker {
    fn drop(&mut self) {
        self.wake.lock().take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
