//! Exec queues: the client-facing handle, its per-queue scheduler state and submission.
//!
//! Owns: [`QueueConfig`], [`ExecQueue`] (submit, ban state, destroy on drop) and
//! `QueueState`: the queue's jobs waiting for dependencies (`pending`, in submission order)
//! and on the ring (`inflight`, in seqno order). Invariants: seqnos of one queue increase in
//! submission order; a job leaves `pending` only from the front, so jobs of one queue reach
//! the ring in order; `inflight` holds exactly the jobs written to the ring whose seqno the
//! fence page does not show yet. Must not: touch rings or reset engines (the scheduler and
//! recovery do), or sleep while holding the scheduler state lock.

use super::contexts::VmCtx;
use super::error::{ExecError, QueueId};
use super::job::Job;
use super::ring::RingQueue;
use super::scheduler::{Completion, Shared};
use super::vm_hook::JobVm;
use crate::hw::cmd::BatchFormat;
use crate::hw::{DmaRegion, Engine, HwCtx};
use crate::sync::{Exec, ExecFlags, Fence, FenceContext, FenceFault};
use crate::types::{GpuVa, PhysAddr};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// The 8-byte seqno slot a queue's jobs write on completion: driver-allocated DMA memory
/// mapped at `va` in the global GTT, which only the ring's own (privileged) commands reach.
/// No client page table maps it, so no client batch can forge a completion: retirement
/// trusts nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FencePage {
    /// Where the ring's fence write puts it, in the global GTT.
    pub va: GpuVa,
    /// Where the driver reads it.
    pub pa: PhysAddr,
}

/// dma-fence or long-running queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMode {
    /// Jobs have bounded run time: a job on the ring longer than `timeout` is a hang.
    Dma {
        /// Per-job timeout, measured from the moment the job became the oldest on the ring.
        timeout: Duration,
    },
    /// Long-running VM: no timeout, no dma-fence out-syncs, no software queue beyond the ring.
    LongRunning,
}

/// Scheduling priority of an exec queue. A queue waiting for a hardware queue preempts a
/// lower-priority queue at once, and a queue of its own priority once that one used its time
/// slice; lower priorities run only on hardware queues that higher ones leave free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Latency-sensitive work; clients need privilege for it (as in Xe). The kernel queue
    /// runs at this priority.
    High,
}

/// Who a queue is charged to (the per-owner queue limit counts it).
pub type QueueOwner = u64;

/// How to create an exec queue.
#[derive(Clone)]
pub struct QueueConfig {
    /// Engine class.
    pub engine: Engine,
    /// Hardware context (the VM's page tables) of a queue whose VM does not take its
    /// contexts from the pool: ignored when `vm` supplies one ([`JobVm::hw_context`]), which
    /// is then assigned each time the queue is loaded on a hardware queue.
    pub ctx: HwCtx,
    /// Seqno slot, mapped in the global GTT (never in `ctx`).
    pub fence_page: FencePage,
    /// The allocation behind `fence_page` when the queue owns it: the scheduler frees it
    /// once the queue is gone and idle (nothing on a ring can write it any more). `None`:
    /// the caller keeps the page.
    pub fence_region: Option<DmaRegion>,
    /// dma-fence or LR.
    pub mode: QueueMode,
    /// The VM's revalidation step; `None` for driver-internal queues.
    pub vm: Option<Arc<dyn JobVm>>,
    /// Scheduling priority.
    pub priority: Priority,
    /// The client it is charged to; `None` for driver-internal queues (not limited per owner).
    pub owner: Option<QueueOwner>,
    /// How its jobs' batches are encoded (told to the device on every BATCH_START).
    pub batches: BatchFormat,
}

/// Why a queue stopped accepting jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ban {
    /// One of its jobs hung (or timed out).
    Hang,
    /// Its context went into error.
    Context { reason: u8 },
    /// Its hardware queue could not be re-created.
    Device,
}

/// A job waiting for its dependencies.
pub(crate) struct PendingJob {
    pub fence: Arc<Fence>,
    pub deps: Vec<Arc<Fence>>,
    pub dwords: Vec<u32>,
    /// Set when the job must not run (its publication failed); it still retires in order.
    pub fault: Option<FenceFault>,
}

/// A job written to the ring.
pub(crate) struct InflightJob {
    pub fence: Arc<Fence>,
    /// What was written to the ring (written again after an engine reset).
    pub dwords: Vec<u32>,
    /// Set when only the seqno write was queued because a dependency failed.
    pub fault: Option<FenceFault>,
}

/// Why a loaded queue is being preempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreemptWhy {
    /// Its time slice is over and another queue waits for a hardware queue.
    Slice,
    /// Its client went away: its jobs are cancelled once it is off the engine.
    Kill,
    /// Its job timed out: it is banned once it is off the engine (no engine reset needed).
    Hang,
}

/// Where a queue's ring runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// On no hardware queue (its position is saved in the ring).
    Unloaded,
    /// On hardware queue `slot` of its engine since `since` (scheduler clock).
    Loaded { slot: u32, since: Duration },
    /// On hardware queue `slot`, asked at `asked` to stop.
    Preempting {
        slot: u32,
        asked: Duration,
        why: PreemptWhy,
    },
}

impl Run {
    pub(crate) fn slot(self) -> Option<u32> {
        match self {
            Run::Unloaded => None,
            Run::Loaded { slot, .. } | Run::Preempting { slot, .. } => Some(slot),
        }
    }
}

/// The scheduler's view of one exec queue.
pub(crate) struct QueueState {
    pub engine: Engine,
    /// The fixed context (queues whose VM has no pool entry).
    pub ctx: HwCtx,
    /// The VM's entry in the context pool: the context is assigned when the queue is loaded.
    pub vm_ctx: Option<Arc<VmCtx>>,
    /// The pool context the queue is on the hardware with (pinned until it leaves).
    pub held_ctx: Option<HwCtx>,
    pub priority: Priority,
    pub owner: Option<QueueOwner>,
    pub batches: BatchFormat,
    pub ring: Option<Box<dyn RingQueue>>,
    pub run: Run,
    /// Round-robin position while waiting for a hardware queue (lower goes first).
    pub ticket: Option<u64>,
    pub fence_page: FencePage,
    pub fence_region: Option<DmaRegion>,
    pub fence_ctx: FenceContext,
    pub next_seqno: u64,
    pub pending: VecDeque<PendingJob>,
    pub inflight: VecDeque<InflightJob>,
    /// Time the oldest in-flight job has run on a hardware queue before `running_since`.
    pub job_ran: Duration,
    /// Loaded (running) since this clock time; `None` while unloaded.
    pub running_since: Option<Duration>,
    pub mode: QueueMode,
    pub ban: Option<Ban>,
    /// The handle was dropped: the queue goes away once `inflight` drains.
    pub closing: bool,
    /// Killed (its client went away): its jobs fail once it is off the engine.
    pub killed: bool,
    /// The VM, held until the queue is gone: its context and page tables must outlive every
    /// job on the ring, even after the client destroyed the VM and dropped its handles.
    pub keepalive: Option<Arc<dyn JobVm>>,
}

impl QueueState {
    pub(crate) fn new(cfg: &QueueConfig, ring: Box<dyn RingQueue>) -> Self {
        Self {
            engine: cfg.engine,
            ctx: cfg.ctx,
            vm_ctx: cfg.vm.as_ref().and_then(|vm| vm.hw_context()),
            held_ctx: None,
            priority: cfg.priority,
            owner: cfg.owner,
            batches: cfg.batches,
            ring: Some(ring),
            run: Run::Unloaded,
            ticket: None,
            fence_page: cfg.fence_page,
            fence_region: cfg.fence_region,
            fence_ctx: FenceContext::alloc(),
            next_seqno: 1,
            pending: VecDeque::new(),
            inflight: VecDeque::new(),
            job_ran: Duration::ZERO,
            running_since: None,
            mode: cfg.mode,
            ban: None,
            closing: false,
            killed: false,
            keepalive: cfg.vm.clone(),
        }
    }

    /// The error a submission to this queue gets, if it may not take jobs.
    pub(crate) fn refusal(&self, id: QueueId) -> Option<ExecError> {
        if self.closing {
            return Some(ExecError::QueueClosed { queue: id });
        }
        self.ban.map(|ban| match ban {
            Ban::Hang => ExecError::QueueBanned { queue: id },
            Ban::Context { reason } => ExecError::VmBanned {
                queue: id,
                ctx: self.hw_ctx().map_or(u32::MAX, |c| c.0),
                reason,
            },
            Ban::Device => ExecError::DeviceLost { queue: id },
        })
    }

    /// How long the oldest in-flight job has run on a hardware queue (time slices of other
    /// queues do not count).
    pub(crate) fn job_elapsed(&self, now: Duration) -> Duration {
        self.job_ran
            + self
                .running_since
                .map_or(Duration::ZERO, |s| now.saturating_sub(s))
    }

    /// The oldest in-flight job changed: its run time starts from zero.
    pub(crate) fn restart_job_clock(&mut self, now: Duration) {
        self.job_ran = Duration::ZERO;
        if self.running_since.is_some() {
            self.running_since = Some(now);
        }
    }

    /// The context the queue's jobs run with now: the fixed one, the pool context it holds on
    /// the hardware, or the one its VM holds while the queue is off (`None`: none assigned).
    pub(crate) fn hw_ctx(&self) -> Option<HwCtx> {
        match &self.vm_ctx {
            None => Some(self.ctx),
            Some(v) => self.held_ctx.or_else(|| v.current()),
        }
    }

    /// The queue left the hardware: its pool context is no longer pinned by it.
    pub(crate) fn release_ctx(&mut self) {
        if let (Some(v), Some(c)) = (&self.vm_ctx, self.held_ctx.take()) {
            v.unpin(c);
        }
    }

    /// The ring was loaded on a hardware queue at `now`.
    pub(crate) fn loaded(&mut self, slot: u32, now: Duration) {
        self.run = Run::Loaded { slot, since: now };
        self.ticket = None;
        self.running_since = Some(now);
    }

    /// The ring left its hardware queue at `now` (its position is saved).
    pub(crate) fn unloaded(&mut self, now: Duration) {
        self.run = Run::Unloaded;
        self.release_ctx();
        if let Some(s) = self.running_since.take() {
            self.job_ran += now.saturating_sub(s);
        }
    }

    /// Fails every job of a killed queue, in seqno order. Only once it is off the engine.
    pub(crate) fn cancel_all(&mut self, done: &mut Vec<Completion>) {
        for job in self.inflight.drain(..) {
            done.push(Completion::failed(job.fence, FenceFault::Canceled));
        }
        for job in self.pending.drain(..) {
            done.push(Completion::failed(job.fence, FenceFault::Canceled));
        }
    }

    /// Dwords the queue holds (on the ring or waiting for it).
    pub(crate) fn queued_dwords(&self) -> usize {
        let p: usize = self.pending.iter().map(|j| j.dwords.len()).sum();
        p + self.inflight.iter().map(|j| j.dwords.len()).sum::<usize>()
    }

    /// Bans the queue: in-flight jobs fail with `fault`; waiting ones are cancelled after a
    /// hang (they never started) and share `fault` when the context or device is lost.
    pub(crate) fn ban(&mut self, ban: Ban, fault: FenceFault, done: &mut Vec<Completion>) {
        self.ban = Some(ban);
        let waiting = match ban {
            Ban::Hang => FenceFault::Canceled,
            Ban::Context { .. } | Ban::Device => fault,
        };
        for job in self.inflight.drain(..) {
            done.push(Completion::failed(job.fence, fault));
        }
        for job in self.pending.drain(..) {
            done.push(Completion::failed(job.fence, waiting));
        }
    }
}

/// A client's exec queue. Dropping it cancels its waiting jobs; its in-flight jobs finish
/// and then the queue goes away. [`ExecQueue::kill`] also takes its running job off the
/// engine at once.
pub struct ExecQueue {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: QueueId,
    pub(crate) vm: Option<Arc<dyn JobVm>>,
    /// Serializes submissions so seqnos are armed and queued in one order.
    pub(crate) submit_lock: Mutex<()>,
}

impl ExecQueue {
    /// The queue's id.
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Kills the queue (its client went away): it is preempted off the engine at once and
    /// every job it has, running or waiting, fails with `Canceled` once it is off (a hung
    /// queue that does not stop is reset off instead). Later submissions get `QueueClosed`.
    pub fn kill(&self) {
        self.shared.kill_queue(self.id);
    }

    /// The queue's fence page (while the scheduler knows the queue).
    #[cfg(test)]
    pub(crate) fn fence_page(&self) -> Option<FencePage> {
        self.shared.with_queue(self.id, |q| q.fence_page)
    }

    /// Whether the queue no longer takes jobs (banned or lost).
    pub fn is_banned(&self) -> bool {
        self.shared.with_queue(self.id, |q| q.ban.is_some()) != Some(false)
    }

    /// Submits `job`; returns its fence at once. The job runs after its dependencies, the
    /// VM's KERNEL fences and every earlier job of this queue.
    pub fn submit(&self, job: Job) -> Result<Arc<Fence>, ExecError> {
        job.validate()?;
        let _serial = self.submit_lock.lock();
        self.shared.precheck(self.id, &job)?;
        let mut exec = Exec::new(ExecFlags::IGNORE_DUPLICATES);
        let mut deps = job.deps.clone();
        if let Some(vm) = &self.vm {
            if vm.is_banned() {
                return Err(super::vm_hook::JobVmError::Banned.into());
            }
            deps.extend(vm.lock_and_validate(&mut exec)?);
        }
        let (fence, dwords) = self.shared.arm(self.id, &job)?;
        let published = match &self.vm {
            Some(vm) => vm.publish(&exec, &fence),
            None => Ok(()),
        };
        if let Err(e) = published {
            // The armed seqno still goes through the ring so the queue's fences stay ordered.
            let fault = Some(FenceFault::Canceled);
            self.shared
                .push(self.id, fence, Vec::new(), dwords, fault)?;
            return Err(e.into());
        }
        self.shared
            .push(self.id, fence.clone(), deps, dwords, None)?;
        drop(exec);
        for out in &job.out_syncs {
            out.install(&fence);
        }
        Ok(fence)
    }
}

impl Drop for ExecQueue {
    fn drop(&mut self) {
        self.shared.close_queue(self.id);
    }
}

#[cfg(test)]
impl ExecQueue {
    /// Test diagnostics: every queue's scheduler state (printed when a test job never signals).
    pub(crate) fn debug_dump(&self) -> String {
        use std::fmt::Write;
        let st = self.shared.lock();
        let mut s = String::new();
        for (id, q) in st.queues.iter() {
            let seen = self.shared.hw.dma.read_u64(q.fence_page.pa).ok();
            let _ = writeln!(
                s,
                "queue {:?}{} engine {:?} ctx {:?} run {:?} ban {:?} closing {} killed {} next_seqno {} fence_page {:?} ring_status {:?} has_work {:?}",
                id,
                if *id == self.id { " (THIS)" } else { "" },
                q.engine,
                q.hw_ctx(),
                q.run,
                q.ban,
                q.closing,
                q.killed,
                q.next_seqno,
                seen,
                q.ring.as_ref().map(|r| r.status()),
                q.ring.as_ref().map(|r| r.has_work()),
            );
            for j in &q.pending {
                let deps: Vec<String> = j
                    .deps
                    .iter()
                    .map(|d| format!("{:?}/{}:{:?}", d.context(), d.seqno(), d.status()))
                    .collect();
                let _ = writeln!(
                    s,
                    "   pending seqno {} fault {:?} deps {:?}",
                    j.fence.seqno(),
                    j.fault,
                    deps
                );
            }
            for j in &q.inflight {
                let _ = writeln!(
                    s,
                    "   inflight seqno {} fault {:?}",
                    j.fence.seqno(),
                    j.fault
                );
            }
        }
        let _ = writeln!(s, "slots: {:?}", st.slots.engines);
        s
    }
}
