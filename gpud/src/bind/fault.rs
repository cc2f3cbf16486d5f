//! Recoverable page faults of fault-mode VMs: the FAULT interrupt wakes a worker thread that
//! pops fault records, populates the PTEs of the mapping covering the faulting address and
//! replies retry, or replies abort for an address no mapping covers.
//!
//! Owns: [`FaultWorker`] (the thread and its wake-up channel) and [`Vm::handle_fault`].
//! Must not: run on the IRQ thread (population takes `vm.lock` and waits for an
//! invalidation), or populate anything for a VM not in fault mode.

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

/// Finds the VM of a context.
pub type VmLookup = Arc<dyn Fn(HwCtx) -> Option<Arc<Vm>> + Send + Sync>;

/// The fault worker thread.
pub struct FaultWorker {
    /// Shared with the wakers; emptied on drop so the thread sees the channel close.
    wake: Arc<parking_lot::Mutex<Option<Sender<()>>>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultWorker {
    /// Starts the worker over `queue`; call [`FaultWorker::waker`] from the FAULT handler.
    pub fn start(mut queue: Box<dyn FaultQueue>, lookup: VmLookup) -> std::io::Result<Self> {
        let (tx, rx) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gpud-faults".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while let Some(fault) = queue.pop() {
                        if fault.fatal {
                            continue;
                        }
                        let reply = lookup(fault.ctx)
                            .map_or(FaultReply::Abort, |vm| vm.handle_fault(fault.va));
                        queue.reply(fault.ctx, reply);
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
