//! Bind queues: ordered CPU execution of bind jobs (page-table entry writes, one TLB
//! invalidation, the user-fence write, the fence signal) once their dependencies signalled.
//!
//! Owns: [`BindQueue`] (one worker thread per queue, jobs run strictly in submission order),
//! [`BindJob`] and [`run_job`], which the synchronous path calls inline. Must not: touch the
//! VA tree or the page-table shadow; a job only performs the writes the commit produced (the
//! shadow was updated under `vm.lock` when the call committed).
//!
//! A job whose dependency failed, or whose invalidation failed, leaves the tables behind the
//! shadow: it bans its VM (the `banned` flag it carries) and fails its fence, which fails
//! every later job of the queue in turn.

use crate::hw::{HwCtx, Mmu};
use crate::mem::bo::Bo;
use crate::mem::copy::{pte_write_commands, CopyEngine};
use crate::sync::{Fence, FenceContext, FenceFault};
use crate::types::{GpuVa, PhysAddr};
use crate::vm::pagetable::memory::PtMemory;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a bind job waits for one dependency or an invalidation before failing (and
/// banning its VM): far beyond any legitimate wait, it only bounds a wedged device.
pub const BIND_WAIT_LIMIT: Duration = Duration::from_secs(120);

/// Fence failure code of a bind job whose TLB invalidation failed.
pub const FAULT_INVALIDATION: u32 = 0xB1D0;

/// One bind job: the work a committed bind still has to do on the device.
pub struct BindJob {
    /// Fences to wait for first (in-syncs, queue order, shared table pages, BO KERNEL fences).
    pub deps: Vec<Arc<Fence>>,
    /// Entry writes in walker-safe order.
    pub writes: Vec<(PhysAddr, u64)>,
    /// Where the tables live.
    pub mem: Arc<dyn PtMemory>,
    /// Range to invalidate (`None`: nothing mapped changed).
    pub invalidate: Option<(GpuVa, u64)>,
    /// The device and the VM's context.
    pub mmu: Arc<dyn Mmu>,
    /// The VM's hardware context.
    pub ctx: HwCtx,
    /// Whether a job of the VM was ever submitted. Until then the context has nothing cached
    /// (the VM's first job, which flushed its TLB, runs before any exec job), so changed
    /// entries need no invalidation.
    pub ctx_used: Arc<AtomicBool>,
    /// The user fence: BO, byte offset, value.
    pub user_fence: Option<(Arc<Bo>, u64, u64)>,
    /// The job fence.
    pub fence: Arc<Fence>,
    /// Set when the job fails after its call returned.
    pub banned: Arc<AtomicBool>,
    /// Set when the VM is destroyed: a job still waiting cancels.
    pub cancel: Arc<AtomicBool>,
    /// Large batches: the copy engine performs the writes (the CPU if it refuses), and a
    /// counter of batches it completed.
    pub copy: Option<(Arc<dyn CopyEngine>, Arc<AtomicU64>)>,
}

/// Runs `job` on this thread: waits, writes, invalidates, writes the user fence, signals.
/// Returns the failure it signalled, if any.
pub fn run_job(job: BindJob) -> Option<FenceFault> {
    let fault = perform(&job).err();
    match fault {
        Some(f) => {
            tracing::warn!(fault = ?f, "bind job failed after its commit: VM banned");
            job.banned.store(true, Ordering::Release);
            let _ = job.fence.set_error(f);
        }
        None => {
            if let Some((bo, offset, value)) = &job.user_fence {
                // The address was checked at bind time; a write outside the BO cannot happen.
                let _ = bo.write(*offset, &value.to_le_bytes());
            }
        }
    }
    // Signalling twice is the only error; this job owns its fence.
    let _ = job.fence.signal();
    fault
}

fn perform(job: &BindJob) -> Result<(), FenceFault> {
    for dep in &job.deps {
        wait_dep(dep, &job.cancel)?;
    }
    if job.cancel.load(Ordering::Acquire) {
        return Err(FenceFault::Canceled);
    }
    let copied = job.copy.as_ref().is_some_and(|(engine, done)| {
        let ok = write_by_copy(&**engine, job);
        if ok {
            done.fetch_add(1, Ordering::Relaxed);
        }
        ok
    });
    if !copied {
        for &(addr, value) in &job.writes {
            if !job.mem.write_u64(addr, value) {
                return Err(FenceFault::Failed(FAULT_INVALIDATION));
            }
        }
    }
    // The entry writes above happen-before this load; an exec submission stores `ctx_used`
    // before its job reaches a ring. Seeing `false` therefore means every job of the context
    // starts after the writes, with no translation cached from before them.
    std::sync::atomic::fence(Ordering::SeqCst);
    let cached = job.ctx_used.load(Ordering::SeqCst);
    if let Some(range) = job.invalidate.filter(|_| cached) {
        let inv = job
            .mmu
            .invalidate(job.ctx, Some(range))
            .map_err(|_| FenceFault::Failed(FAULT_INVALIDATION))?;
        job.mmu
            .wait_invalidation(inv, BIND_WAIT_LIMIT)
            .map_err(|_| FenceFault::Failed(FAULT_INVALIDATION))?;
    }
    Ok(())
}

/// Performs the writes with a copy-engine job in the kernel context; false if it could not
/// (the caller then writes with the CPU: the same values, so a partial copy is harmless).
fn write_by_copy(copy: &dyn CopyEngine, job: &BindJob) -> bool {
    // Commands run from the ring: chunks that fit it, in order on the one kernel queue.
    let mut fences = Vec::new();
    for chunk in job.writes.chunks(COPY_CHUNK_WRITES) {
        let commands = pte_write_commands(job.mem.location(), chunk);
        match copy.submit(&commands, &[]) {
            Ok(f) => fences.push(f),
            Err(_) => return false,
        }
    }
    fences
        .iter()
        .all(|f| matches!(f.wait(Some(BIND_WAIT_LIMIT)), Ok(Ok(()))))
}

/// Entry writes per copy-engine job (4 dwords each: well inside a 16 KiB ring).
const COPY_CHUNK_WRITES: usize = 512;

/// Waits for `dep` in slices, giving up with `Canceled` once `cancel` is set.
fn wait_dep(dep: &Fence, cancel: &AtomicBool) -> Result<(), FenceFault> {
    let slices = BIND_WAIT_LIMIT.as_millis() / CANCEL_POLL.as_millis();
    for _ in 0..slices {
        if cancel.load(Ordering::Acquire) {
            return Err(FenceFault::Canceled);
        }
        match dep.wait(Some(CANCEL_POLL)) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(fault)) => return Err(fault),
            Err(_) if dep.is_signalled() => return Ok(()),
            Err(_) => {}
        }
    }
    Err(FenceFault::Canceled)
}

/// How often a waiting job checks for cancellation.
const CANCEL_POLL: Duration = Duration::from_millis(5);

/// Identifies a bind queue within its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindQueueId(pub u64);

static NEXT_QUEUE: AtomicU64 = AtomicU64::new(1);

struct Inner {
    id: BindQueueId,
    fctx: FenceContext,
    seqno: AtomicU64,
    /// The fence of the newest job (submission order = completion order).
    last: Mutex<Option<Arc<Fence>>>,
    tx: Mutex<Option<Sender<BindJob>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// An ordered bind queue of a VM.
#[derive(Clone)]
pub struct BindQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BindQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindQueue")
            .field("id", &self.inner.id)
            .finish()
    }
}

impl BindQueue {
    /// A queue with its worker thread.
    pub fn new() -> std::io::Result<Self> {
        let (tx, rx) = channel::<BindJob>();
        let id = BindQueueId(NEXT_QUEUE.fetch_add(1, Ordering::Relaxed));
        let worker = std::thread::Builder::new()
            .name(format!("bindq-{}", id.0))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    run_job(job);
                }
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                fctx: FenceContext::alloc(),
                seqno: AtomicU64::new(0),
                last: Mutex::new(None),
                tx: Mutex::new(Some(tx)),
                worker: Mutex::new(Some(worker)),
            }),
        })
    }

    /// The queue's id.
    pub fn id(&self) -> BindQueueId {
        self.inner.id
    }

    /// The newest job's fence (pending or not).
    pub fn last_fence(&self) -> Option<Arc<Fence>> {
        self.inner.last.lock().clone()
    }

    /// A fence for the next job, recorded as the queue's last fence, and the previous last
    /// fence (the new job's ordering dependency).
    pub(crate) fn next_fence(&self) -> (Arc<Fence>, Option<Arc<Fence>>) {
        let seq = self.inner.seqno.fetch_add(1, Ordering::Relaxed) + 1;
        let fence = Fence::new(self.inner.fctx, seq);
        let prev = self.inner.last.lock().replace(fence.clone());
        (fence, prev.filter(|f| !f.is_signalled()))
    }

    /// Queues `job` behind the earlier jobs; runs it inline if the worker is gone.
    pub(crate) fn push(&self, job: BindJob) {
        let tx = self.inner.tx.lock().clone();
        match tx {
            Some(tx) => {
                if let Err(e) = tx.send(job) {
                    run_job(e.0);
                }
            }
            None => {
                run_job(job);
            }
        }
    }

    /// Stops the worker after the queued jobs ran.
    pub fn shutdown(&self) {
        self.inner.tx.lock().take();
        let worker = self.inner.worker.lock().take();
        if let Some(w) = worker {
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx.get_mut().take();
        if let Some(w) = self.worker.get_mut().take() {
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
    }
}
