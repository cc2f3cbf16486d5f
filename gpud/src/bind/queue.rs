//! Bind queues: ordered CPU execution of bind jobs (page-table entry writes, one TLB
//! invalidation, the user-fence write, the fence signal) once their dependencies signalled.
//!
//! Owns: [`BindQueue`] (jobs run strictly in submission order, each once its dependencies
//! signalled, on a small pool of threads shared by every queue: a queue costs no thread and
//! nothing polls), [`BindJob`] and [`run_job`], which the exec path's rebind calls inline. Must not: touch the
//! VA tree or the page-table shadow; a job only performs the writes the commit produced (the
//! shadow was updated under `vm.lock` when the call committed).
//!
//! A job whose dependency failed, or whose invalidation failed, leaves the tables behind the
//! shadow: it bans its VM (the `banned` flag it carries) and fails its fence, which fails
//! every later job of the queue in turn.

use crate::exec::VmCtx;
use crate::hw::Mmu;
use crate::mem::bo::Bo;
use crate::mem::copy::{pte_write_commands, CopyEngine};
use crate::sync::{Fence, FenceContext, FenceFault};
use crate::types::{GpuVa, PhysAddr};
use crate::vm::pagetable::memory::PtMemory;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, OnceLock, Weak};
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
    /// The VM's entry in the context pool: the context to invalidate is the one serving the
    /// VM when the entries are written (none: nothing of the VM is cached, since a context
    /// is flushed whenever it is given to a VM). Weak: a job never keeps a gone VM's context.
    pub ctx: Weak<VmCtx>,
    /// Whether a job of the VM was ever submitted. Until then nothing of the VM is cached
    /// (it never had a context), so changed entries need no invalidation.
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
    // Read after the writes: a context given to the VM later is flushed after them.
    let ctx = job
        .invalidate
        .filter(|_| cached)
        .and_then(|_| job.ctx.upgrade()?.current());
    if let (Some(range), Some(ctx)) = (job.invalidate, ctx) {
        let inv = job
            .mmu
            .invalidate(ctx, Some(range))
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

/// The threads that run ready bind jobs, shared by every bind queue of the process: a queue
/// costs no thread (a client creating and destroying bind queues leaves nothing behind). A job
/// reaches a thread only once its dependencies signalled (fence callbacks arm it), so a thread
/// never waits on another client's fence; it does wait for its own writes' TLB invalidation
/// and copy-engine writes, which the device completes without anyone's help.
struct Pool {
    tx: Mutex<Sender<Box<dyn FnOnce() + Send>>>,
}

/// Threads of the bind pool: enough that one slow invalidation does not stall every queue.
const POOL_THREADS: usize = 2;

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Box<dyn FnOnce() + Send>>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..POOL_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("gpud-bind-{n}"))
                .spawn(move || loop {
                    // The receiver lock is held only to take one task.
                    let task = rx.lock().recv();
                    match task {
                        Ok(task) => task(),
                        Err(_) => return,
                    }
                });
            if spawned.is_err() && n == 0 {
                return None;
            }
        }
        Some(Pool { tx: Mutex::new(tx) })
    })
    .as_ref()
}

/// Runs `task` on the pool (on this thread if the pool could not start).
fn dispatch(task: Box<dyn FnOnce() + Send>) {
    let Some(pool) = pool() else {
        return task();
    };
    if let Err(e) = pool.tx.lock().send(task) {
        (e.0)();
    }
}

/// The queue's head job, armed: dispatched once every dependency signalled (a callback per
/// pending dependency, plus one count for the arming itself), or at once when its VM closes
/// (the job then cancels).
struct Armed {
    job: Mutex<Option<BindJob>>,
    remaining: AtomicUsize,
    queue: Arc<Inner>,
}

impl Armed {
    fn release(self: &Arc<Self>) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.fire();
        }
    }

    /// Hands the job to the pool (once: later calls find it gone).
    fn fire(self: &Arc<Self>) {
        let Some(job) = self.job.lock().take() else {
            return;
        };
        let queue = self.queue.clone();
        dispatch(Box::new(move || {
            run_job(job);
            queue.advance();
        }));
    }
}

/// Jobs of a queue not yet handed to the pool.
#[derive(Default)]
struct Waiting {
    jobs: VecDeque<BindJob>,
    /// A job is armed or running: the next one waits for it (in order).
    busy: bool,
    armed: Weak<Armed>,
}

struct Inner {
    id: BindQueueId,
    fctx: FenceContext,
    seqno: AtomicU64,
    /// The fence of the newest job (submission order = completion order).
    last: Mutex<Option<Arc<Fence>>>,
    waiting: Mutex<Waiting>,
}

impl Inner {
    /// Arms `job`: it runs once its dependencies signalled, or at once if it is cancelled.
    fn arm(self: &Arc<Self>, job: BindJob) {
        let pending: Vec<Arc<Fence>> = job
            .deps
            .iter()
            .filter(|d| !d.is_signalled())
            .cloned()
            .collect();
        let cancelled = job.cancel.load(Ordering::Acquire);
        let armed = Arc::new(Armed {
            job: Mutex::new(Some(job)),
            remaining: AtomicUsize::new(pending.len() + 1),
            queue: self.clone(),
        });
        self.waiting.lock().armed = Arc::downgrade(&armed);
        if cancelled {
            return armed.fire();
        }
        for dep in pending {
            let a = armed.clone();
            dep.on_signal(move |_| a.release());
        }
        armed.release();
    }

    /// The running job finished: arm the next one, if any.
    fn advance(self: &Arc<Self>) {
        let next = {
            let mut w = self.waiting.lock();
            let next = w.jobs.pop_front();
            w.busy = next.is_some();
            w.armed = Weak::new();
            next
        };
        if let Some(job) = next {
            self.arm(job);
        }
    }
}

/// An ordered bind queue of a VM. Clones share the queue.
#[derive(Clone)]
pub struct BindQueue {
    inner: Arc<Inner>,
}

/// A reference to a bind queue that does not keep it alive (the VM's list of its queues).
#[derive(Clone)]
pub struct WeakBindQueue(Weak<Inner>);

impl WeakBindQueue {
    /// The queue, while a client or a pending job still holds it.
    pub fn upgrade(&self) -> Option<BindQueue> {
        self.0.upgrade().map(|inner| BindQueue { inner })
    }
}

impl std::fmt::Debug for BindQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindQueue")
            .field("id", &self.inner.id)
            .finish()
    }
}

impl Default for BindQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl BindQueue {
    /// An empty queue. It costs no thread: jobs run on the process's bind pool.
    pub fn new() -> Self {
        let id = BindQueueId(NEXT_QUEUE.fetch_add(1, Ordering::Relaxed));
        Self {
            inner: Arc::new(Inner {
                id,
                fctx: FenceContext::alloc(),
                seqno: AtomicU64::new(0),
                last: Mutex::new(None),
                waiting: Mutex::new(Waiting::default()),
            }),
        }
    }

    /// The queue's id.
    pub fn id(&self) -> BindQueueId {
        self.inner.id
    }

    /// A reference that does not keep the queue alive.
    pub fn downgrade(&self) -> WeakBindQueue {
        WeakBindQueue(Arc::downgrade(&self.inner))
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

    /// Queues `job` behind the earlier jobs. Never waits: the job runs on the bind pool once
    /// its dependencies signalled.
    pub(crate) fn push(&self, job: BindJob) {
        let arm_now = {
            let mut w = self.inner.waiting.lock();
            if w.busy {
                w.jobs.push_back(job);
                None
            } else {
                w.busy = true;
                Some(job)
            }
        };
        if let Some(job) = arm_now {
            self.inner.arm(job);
        }
    }

    /// The VM closed: a job armed and waiting for its dependencies runs now (and cancels),
    /// and so, in order, do the queued ones.
    pub(crate) fn kick(&self) {
        let armed = self.inner.waiting.lock().armed.upgrade();
        if let Some(armed) = armed {
            let cancelled = armed
                .job
                .lock()
                .as_ref()
                .is_some_and(|j| j.cancel.load(Ordering::Acquire));
            if cancelled {
                armed.fire();
            }
        }
    }
}
