//! The scheduler: the thread that moves ready jobs onto their rings, retires completed jobs
//! and notices hangs, plus queue creation and the completion interrupt handler.
//!
//! Owns: the scheduler state (every queue's `QueueState`, which hardware queue runs which
//! exec queue), the scheduler thread, queue creation and its limits, killing a queue,
//! retiring (reading each queue's fence page and signalling the fences of every job at or
//! below the seqno found there) and the wake-up channels. Lock rule: the state lock is never
//! held while a fence is signalled (fence callbacks may submit) or while sleeping; work that
//! signals collects [`Completion`]s and completes them after unlocking. Exec queues are
//! software objects, each with its own ring: `slots.rs` loads them onto the engine's hardware
//! queues and time-slices them. Must not: decide hang policy (see `recovery.rs`) or build
//! page tables.

use super::busy::{BusyLedger, EngineBusy};
use super::error::{ExecError, QueueId, QueueLimit};
use super::irq::IrqDispatcher;
use super::job::{Job, FENCE_TAIL_DWORDS};
use super::queue::{
    Ban, ExecQueue, InflightJob, PendingJob, PreemptWhy, QueueConfig, QueueMode, QueueOwner,
    QueueState, Run,
};
use super::recovery;
use super::ring::ExecHw;
use super::slots::{self, Slots};
use super::vm_hook::JobVm;
use crate::hw::clock::WAIT_SLICE;
use crate::hw::{DmaMemory, Engine, HwError, IrqCauses};
use crate::sync::{Fence, FenceFault, FenceStatus, WaitQueue};
use parking_lot::{Mutex, MutexGuard};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedConfig {
    /// Ring size of every hardware queue (a power of two, 64 B ..= 16 MiB).
    pub ring_bytes: u32,
    /// How long an engine reset may take.
    pub reset_timeout: Duration,
    /// Time slice: a queue that has run this long on a hardware queue is preempted when a
    /// queue of the same priority waits for one (on the scheduler's clock).
    pub quantum: Duration,
    /// How long a preempted queue may take to stop before it is treated as hung and its
    /// engine is reset (a queue the device shows hung is reset at once).
    pub preempt_timeout: Duration,
    /// Exec queues the scheduler holds at most (the daemon limit, kernel queue included).
    pub max_queues: u32,
    /// Exec queues one owner (client) holds at most.
    pub max_queues_per_owner: u32,
}

/// How soon the scheduler looks again at a context whose TLB flush has not completed (a
/// flush takes a few device steps; the thread is not woken for it).
const CTX_FLUSH_POLL: Duration = Duration::from_micros(20);

/// Default time slice (Xe's default timeslice is 1 ms too).
pub const DEFAULT_QUANTUM: Duration = Duration::from_millis(1);

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            ring_bytes: 16 << 10,
            reset_timeout: Duration::from_secs(5),
            quantum: DEFAULT_QUANTUM,
            preempt_timeout: Duration::from_millis(100),
            max_queues: 4096,
            max_queues_per_owner: 256,
        }
    }
}

/// Counters for tests and observability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStats {
    /// Engine resets performed.
    pub resets: u64,
    /// Jobs written to a ring again after a reset.
    pub resubmitted: u64,
    /// Queues banned (hang, context error, device).
    pub banned: u64,
    /// Time-slice preemptions requested.
    pub preemptions: u64,
    /// Queues killed while loaded on a hardware queue (taken off by preemption).
    pub kills: u64,
    /// Rounds of the scheduler thread (tests wait for it to see a clock change).
    pub ticks: u64,
}

/// A fence to signal once the state lock is released.
pub(crate) struct Completion {
    fence: Arc<Fence>,
    fault: Option<FenceFault>,
}

impl Completion {
    pub(crate) fn ok(fence: Arc<Fence>) -> Self {
        Self { fence, fault: None }
    }

    pub(crate) fn failed(fence: Arc<Fence>, fault: FenceFault) -> Self {
        Self {
            fence,
            fault: Some(fault),
        }
    }

    /// Signals the fence. A fence already signalled elsewhere is left alone.
    pub(crate) fn complete(self) {
        if let Some(fault) = self.fault {
            let _ = self.fence.set_error(fault);
        }
        let _ = self.fence.signal();
    }
}

fn complete_all(done: Vec<Completion>) -> bool {
    let any = !done.is_empty();
    done.into_iter().for_each(Completion::complete);
    any
}

#[derive(Default)]
pub(crate) struct State {
    pub queues: BTreeMap<QueueId, QueueState>,
    /// VMs of queues that went away, dropped once the lock is released (dropping a VM
    /// unbinds its context and waits for its bind jobs).
    pub graveyard: Vec<Arc<dyn JobVm>>,
    next_id: u32,
    /// Which exec queue runs on which hardware queue.
    pub slots: Slots,
    /// Engine busy time charged per owner.
    pub busy: BusyLedger,
    /// The scheduler thread's coming sleep has a deadline (set at the end of each of its
    /// rounds): it will look at job timeouts again within `WAIT_SLICE` without being woken.
    timer_armed: bool,
}

impl State {
    /// An id no live queue has (ids wrap after 2^32 queues).
    fn fresh_id(&mut self) -> QueueId {
        loop {
            let id = QueueId(self.next_id);
            self.next_id = self.next_id.wrapping_add(1);
            if !self.queues.contains_key(&id) {
                return id;
            }
        }
    }
}

pub(crate) struct Shared {
    pub hw: ExecHw,
    pub cfg: SchedConfig,
    state: Mutex<State>,
    /// Wakes the scheduler thread (submission, dependency signalled, completion).
    wake: Arc<WaitQueue>,
    /// Notified after the GPU may have written user fences.
    user_fences: Arc<WaitQueue>,
    stop: AtomicBool,
    /// A CTX_ERROR arrived; the scheduler thread checks the contexts.
    ctx_error: AtomicBool,
    pub resets: AtomicU64,
    pub resubmitted: AtomicU64,
    pub banned: AtomicU64,
    pub preemptions: AtomicU64,
    pub kills: AtomicU64,
    pub ticks: AtomicU64,
}

/// The scheduler of one device.
pub struct Scheduler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the scheduler thread and registers the completion and context-error handlers
    /// with `irq`.
    pub fn new(hw: ExecHw, cfg: SchedConfig, irq: &IrqDispatcher) -> std::io::Result<Self> {
        hw.rings.stop_all();
        let shared = Arc::new(Shared {
            hw,
            cfg,
            state: Mutex::new(State::default()),
            wake: Arc::new(WaitQueue::new()),
            user_fences: Arc::new(WaitQueue::new()),
            stop: AtomicBool::new(false),
            ctx_error: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            resubmitted: AtomicU64::new(0),
            banned: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            kills: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&shared);
        // Completions wake the scheduler straight from the interrupt (no IRQ-thread hop).
        irq.watch(
            IrqCauses::COPY_USER | IrqCauses::COMPUTE_USER,
            Arc::new(move |_| with_weak(&weak, Shared::on_user_irq)),
        );
        let weak = Arc::downgrade(&shared);
        irq.register(
            IrqCauses::PREEMPT_DONE,
            Arc::new(move |_| with_weak(&weak, |s| s.wake.notify_all())),
        );
        let weak = Arc::downgrade(&shared);
        irq.register(
            IrqCauses::CTX_ERROR,
            Arc::new(move |_| {
                with_weak(&weak, |s| {
                    s.ctx_error.store(true, Ordering::Release);
                    s.wake.notify_all();
                })
            }),
        );
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("gpud-sched".into())
            .spawn(move || s.run())?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Creates an exec queue (a software queue with its own ring; it takes a hardware queue
    /// only while it has work). Fails with `TooManyQueues` at the daemon or owner limit.
    pub fn create_queue(&self, cfg: QueueConfig) -> Result<ExecQueue, ExecError> {
        let id = self.shared.create_queue(&cfg)?;
        Ok(ExecQueue {
            shared: self.shared.clone(),
            id,
            vm: cfg.vm,
            submit_lock: Mutex::new(()),
        })
    }

    /// Notified whenever the GPU may have written user fences (pass it to
    /// `UserFence::wait`).
    pub fn user_fence_queue(&self) -> Arc<WaitQueue> {
        self.shared.user_fences.clone()
    }

    /// `owner`'s engine busy time so far, including its running jobs' elapsed time (on the
    /// scheduler's clock; see `busy.rs`).
    pub fn busy(&self, owner: QueueOwner) -> EngineBusy {
        let now = self.shared.hw.clock.now();
        let st = self.shared.lock();
        st.busy.sample(owner, st.queues.values(), now)
    }

    /// `owner` went away: its busy-time entry goes (its draining queues charge nothing more).
    pub fn forget_owner(&self, owner: QueueOwner) {
        self.shared.lock().busy.forget(owner);
    }

    /// Owners with a busy-time entry.
    #[cfg(test)]
    pub(crate) fn busy_owners(&self) -> usize {
        self.shared.lock().busy.len()
    }

    /// Counters.
    pub fn stats(&self) -> SchedStats {
        SchedStats {
            resets: self.shared.resets.load(Ordering::Relaxed),
            resubmitted: self.shared.resubmitted.load(Ordering::Relaxed),
            banned: self.shared.banned.load(Ordering::Relaxed),
            preemptions: self.shared.preemptions.load(Ordering::Relaxed),
            kills: self.shared.kills.load(Ordering::Relaxed),
            ticks: self.shared.ticks.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Scheduler {
    /// Stops the thread and fails every unfinished job with `DeviceLost`, so no waiter hangs.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Queues outlive the scheduler (their handles hold the shared state): banning them
        // makes later submissions fail with `DeviceLost` instead of waiting forever.
        let mut done = Vec::new();
        {
            let mut st = self.shared.lock();
            let ids: Vec<QueueId> = st.queues.keys().copied().collect();
            for id in ids {
                if let Some(q) = st.queues.get_mut(&id) {
                    q.ban(Ban::Device, FenceFault::DeviceLost, &mut done);
                }
                // Stops the hardware queue; the device is going away with the scheduler.
                slots::drop_ring(&mut st, id);
            }
        }
        complete_all(done);
        self.shared.user_fences.notify_all();
    }
}

fn with_weak(weak: &Weak<Shared>, f: impl FnOnce(&Shared)) {
    if let Some(s) = weak.upgrade() {
        f(&s);
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    pub(crate) fn with_queue<R>(&self, id: QueueId, f: impl FnOnce(&QueueState) -> R) -> Option<R> {
        self.lock().queues.get(&id).map(f)
    }

    fn create_queue(&self, cfg: &QueueConfig) -> Result<QueueId, ExecError> {
        let mut st = self.lock();
        if self.stop.load(Ordering::Acquire) {
            return Err(ExecError::DeviceLost {
                queue: QueueId(st.next_id),
            });
        }
        // Queues still draining after their handle went count: they hold a ring and a VM.
        if st.queues.len() >= self.cfg.max_queues as usize {
            return Err(ExecError::TooManyQueues {
                scope: QueueLimit::Device,
                limit: self.cfg.max_queues,
            });
        }
        if let Some(owner) = cfg.owner {
            let held = st
                .queues
                .values()
                .filter(|q| q.owner == Some(owner))
                .count();
            if held >= self.cfg.max_queues_per_owner as usize {
                return Err(ExecError::TooManyQueues {
                    scope: QueueLimit::Owner,
                    limit: self.cfg.max_queues_per_owner,
                });
            }
        }
        self.hw.dma.write_u64(cfg.fence_page.pa, 0)?;
        let ring = self
            .hw
            .rings
            .create_ring(cfg.engine, cfg.ctx, self.cfg.ring_bytes)?;
        let id = st.fresh_id();
        if let Some(owner) = cfg.owner {
            st.busy.open(owner);
        }
        st.queues.insert(id, QueueState::new(cfg, ring));
        Ok(id)
    }

    /// Refuses jobs the queue can never take (banned, LR rules, size).
    pub(crate) fn precheck(&self, id: QueueId, job: &Job) -> Result<(), ExecError> {
        let st = self.lock();
        let q = st
            .queues
            .get(&id)
            .ok_or(ExecError::QueueClosed { queue: id })?;
        if let Some(e) = q.refusal(id) {
            return Err(e);
        }
        let need = job.ring_dwords(q.fence_page.va, 0, q.batches).len();
        let ring_dwords = (self.cfg.ring_bytes as usize / 4).saturating_sub(1);
        if need > ring_dwords {
            return Err(ExecError::JobTooLarge {
                dwords: need,
                ring_dwords,
            });
        }
        if q.mode == QueueMode::LongRunning {
            if !job.out_syncs.is_empty() {
                return Err(ExecError::LrOutSync {
                    queue: id,
                    count: job.out_syncs.len(),
                });
            }
            let free = ring_dwords.saturating_sub(q.queued_dwords());
            if need > free {
                return Err(ExecError::WouldBlock {
                    queue: id,
                    need,
                    free,
                });
            }
        }
        Ok(())
    }

    /// Takes the next seqno and creates the job's fence and ring dwords.
    pub(crate) fn arm(&self, id: QueueId, job: &Job) -> Result<(Arc<Fence>, Vec<u32>), ExecError> {
        let mut st = self.lock();
        let q = st
            .queues
            .get_mut(&id)
            .ok_or(ExecError::QueueClosed { queue: id })?;
        if let Some(e) = q.refusal(id) {
            return Err(e);
        }
        let seqno = q.next_seqno;
        q.next_seqno += 1;
        let fence = Fence::new(q.fence_ctx, seqno);
        Ok((fence, job.ring_dwords(q.fence_page.va, seqno, q.batches)))
    }

    /// Queues an armed job behind the queue's earlier jobs and wakes the scheduler when each
    /// dependency signals.
    pub(crate) fn push(
        &self,
        id: QueueId,
        fence: Arc<Fence>,
        deps: Vec<Arc<Fence>>,
        dwords: Vec<u32>,
        fault: Option<FenceFault>,
    ) -> Result<(), ExecError> {
        for dep in &deps {
            let wake = self.wake.clone();
            dep.on_signal(move |_| wake.notify_all());
        }
        let mut done = Vec::new();
        let (refused, handled) = {
            let mut st = self.lock();
            let timer_armed = st.timer_armed;
            match st.queues.get_mut(&id) {
                None => (Some(ExecError::QueueClosed { queue: id }), false),
                Some(q) => match q.refusal(id) {
                    Some(e) => (Some(e), false),
                    None => {
                        q.pending.push_back(PendingJob {
                            fence: fence.clone(),
                            deps,
                            dwords,
                            fault,
                        });
                        (None, self.write_inline(q, timer_armed, &mut done))
                    }
                },
            }
        };
        complete_all(done);
        if let Some(e) = refused {
            // A refused queue was banned or closed: its earlier fences have all failed, so
            // this one failing now keeps the order.
            Completion::failed(fence, FenceFault::Canceled).complete();
            return Err(e);
        }
        if !handled {
            self.wake.notify_all();
        }
        Ok(())
    }

    /// Writes `q`'s ready jobs to its ring on the submitting thread when the queue holds a
    /// hardware queue already, so the device starts without a hand-off to the scheduler
    /// thread (which decides nothing here: which queue runs where stays its decision).
    /// Returns whether the scheduler thread has nothing to do for this submission: the
    /// queue is loaded, its ready jobs are on the ring (a job still waiting for a dependency
    /// is the dependency's signal's to wake it for, one waiting for ring space the
    /// completion interrupt's), and no job timeout needs a timer the thread has not armed.
    fn write_inline(
        &self,
        q: &mut QueueState,
        timer_armed: bool,
        done: &mut Vec<Completion>,
    ) -> bool {
        let runnable =
            matches!(q.run, Run::Loaded { .. }) && q.ban.is_none() && !q.killed && !q.closing;
        if !runnable {
            return false;
        }
        if push_ready_queue(q, self.hw.clock.now(), done).is_err() {
            return false; // the scheduler thread bans the queue
        }
        timer_armed || recovery::timeout_of(q).is_none()
    }

    /// The handle went away: waiting jobs are cancelled (in order, through the ring) and the
    /// ring is released once idle.
    pub(crate) fn close_queue(&self, id: QueueId) {
        let dead = {
            let mut st = self.lock();
            let Some(q) = st.queues.get_mut(&id) else {
                return;
            };
            q.closing = true;
            // Idle on the device: release the ring (and its hardware queue) now. A killed
            // queue still stopping keeps its ring until it is off the engine.
            if q.inflight.is_empty() && !matches!(q.run, Run::Preempting { .. }) {
                slots::drop_ring(&mut st, id);
            }
            // Nothing queued either: the queue (and its hold on the VM) goes now.
            reap_closed(&mut st, &*self.hw.dma);
            std::mem::take(&mut st.graveyard)
        };
        drop(dead);
        self.wake.notify_all();
    }

    /// Kills queue `id`: preempted off the engine if loaded, its jobs fail with `Canceled`
    /// once it is off (at once if it is not loaded).
    pub(crate) fn kill_queue(&self, id: QueueId) {
        let mut done = Vec::new();
        let dead = {
            let mut st = self.lock();
            let now = self.hw.clock.now();
            let Some(q) = st.queues.get_mut(&id) else {
                return;
            };
            if q.killed {
                return;
            }
            q.closing = true;
            q.killed = true;
            if q.run == Run::Unloaded {
                slots::finish_kill(&mut st, id, now, &mut done);
            } else {
                self.kills.fetch_add(1, Ordering::Relaxed);
                slots::request_preempt(self, q, PreemptWhy::Kill, now);
            }
            reap_closed(&mut st, &*self.hw.dma);
            std::mem::take(&mut st.graveyard)
        };
        complete_all(done);
        drop(dead);
        self.wake.notify_all();
    }

    /// Completion interrupt: the GPU may have written fence pages and user fences.
    fn on_user_irq(&self) {
        self.user_fences.notify_all();
        self.wake.notify_all();
    }

    /// Moves every job whose seqno the fence page shows from `inflight` to `done`.
    pub(crate) fn retire_all(&self, st: &mut State, now: Duration, done: &mut Vec<Completion>) {
        for q in st.queues.values_mut() {
            let Ok(seen) = self.hw.dma.read_u64(q.fence_page.pa) else {
                continue;
            };
            let before = q.inflight.len();
            while q.inflight.front().is_some_and(|j| j.fence.seqno() <= seen) {
                if let Some(job) = q.inflight.pop_front() {
                    done.push(match job.fault {
                        Some(fault) => Completion::failed(job.fence, fault),
                        None => Completion::ok(job.fence),
                    });
                }
            }
            if q.inflight.len() != before {
                // The retired jobs' run time goes to the owner; the next job's clock starts.
                st.busy.charge_oldest(q, now);
            }
        }
        reap_closed(st, &*self.hw.dma);
    }

    /// Writes every queue's ready jobs to its ring, in order, until one is not ready or the
    /// ring is full.
    fn push_ready(&self, st: &mut State, now: Duration, done: &mut Vec<Completion>) {
        let mut lost = Vec::new();
        for (id, q) in st.queues.iter_mut() {
            if q.ban.is_some() || q.killed {
                continue;
            }
            if push_ready_queue(q, now, done).is_err() {
                lost.push(*id);
            }
        }
        for id in lost {
            recovery::ban_queue(self, st, id, Ban::Device, FenceFault::DeviceLost, done);
        }
    }

    /// Loads waiting queues onto hardware queues, time-slices the rest; returns how long
    /// until a time slice ends that a waiting queue needs (or until a context flush is
    /// looked at again). Waiters that got a hardware queue but no context make the idle
    /// queues of both engines leave (they hold contexts), get one more pass, and then
    /// preempt queues holding contexts as they would for a hardware queue.
    fn schedule(
        &self,
        st: &mut State,
        now: Duration,
        done: &mut Vec<Completion>,
    ) -> Option<Duration> {
        let mut out = slots::Leftover::default();
        let pass = |st: &mut State, out: &mut slots::Leftover| {
            [Engine::Copy, Engine::Compute]
                .into_iter()
                .filter_map(|e| slots::schedule_engine(self, st, e, now, out))
                .min()
        };
        let mut next = pass(st, &mut out);
        if !out.starved.is_empty() {
            out.starved.clear();
            slots::unload_all_idle(st, now);
            next = pass(st, &mut out);
            let mut starved = std::mem::take(&mut out.starved);
            starved.sort_by_key(|&(p, t, _)| (std::cmp::Reverse(p), t));
            starved.dedup_by_key(|w| w.2);
            let slice = slots::preempt_for_contexts(self, st, &starved, now);
            next = [next, slice].into_iter().flatten().min();
        }
        if out.flushing {
            next = [next, Some(CTX_FLUSH_POLL)].into_iter().flatten().min();
        }
        for id in out.lost {
            recovery::ban_queue(self, st, id, Ban::Device, FenceFault::DeviceLost, done);
        }
        next
    }

    /// One round of the scheduler thread; returns how long it may sleep (`None`: until woken).
    fn tick(&self, st: &mut State, done: &mut Vec<Completion>) -> Option<Duration> {
        let now = self.hw.clock.now();
        self.retire_all(st, now, done);
        for (engine, culprit) in slots::collect_preempted(self, st, now, done) {
            recovery::recover(self, st, engine, culprit, done);
        }
        if self.ctx_error.swap(false, Ordering::AcqRel) {
            recovery::ban_failed_contexts(self, st, done);
        }
        for _ in 0..=st.queues.len() {
            let Some((engine, culprit)) = recovery::timed_out(st, now) else {
                break;
            };
            recovery::on_timeout(self, st, engine, culprit, now, done);
        }
        self.push_ready(st, now, done);
        // Recovery may have emptied a closed queue (its hung job banned): it goes now, not at
        // some later retirement (the scheduler may sleep until woken).
        reap_closed(st, &*self.hw.dma);
        let slice = self.schedule(st, now, done);
        [
            recovery::next_check(st, now),
            slots::next_preempt_check(st, self.cfg.preempt_timeout, now),
            slice,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn run(&self) {
        loop {
            // The generation is read before the stop flag: `Drop` sets the flag and then
            // notifies, so a stop that lands after this read also ends the wait below.
            let seen = self.wake.generation();
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let mut done = Vec::new();
            let (sleep, dead) = {
                let mut st = self.lock();
                let sleep = self.tick(&mut st, &mut done);
                st.timer_armed = sleep.is_some();
                (sleep, std::mem::take(&mut st.graveyard))
            };
            if complete_all(done) {
                self.user_fences.notify_all();
            }
            drop(dead);
            self.ticks.fetch_add(1, Ordering::Relaxed);
            // Timeouts are measured on the injected clock, so a sleeping scheduler re-reads it
            // at least every slice while a job with a timeout is on a ring.
            let deadline = sleep.map(|d| Instant::now() + d.min(WAIT_SLICE));
            self.wake.wait(seen, deadline);
        }
    }
}

/// Drops queues whose handle is gone and whose in-flight jobs finished, freeing the fence
/// pages they own: their rings are destroyed and empty, so nothing can write them.
fn reap_closed(st: &mut State, dma: &dyn DmaMemory) {
    let idle: Vec<QueueId> = st
        .queues
        .iter()
        .filter(|(_, q)| {
            q.closing
                && q.inflight.is_empty()
                && q.pending.is_empty()
                && !matches!(q.run, Run::Preempting { .. })
        })
        .map(|(id, _)| *id)
        .collect();
    for id in idle {
        // The queue is idle (or stopped, if killed); its ring and hardware queue go.
        slots::drop_ring(st, id);
        if let Some(mut q) = st.queues.remove(&id) {
            if let Some(page) = q.fence_region.take() {
                let _ = dma.free(page);
            }
            st.graveyard.extend(q.keepalive.take());
        }
    }
}

/// Writes `q`'s ready jobs to its ring. A job runs once every dependency signalled. A job
/// that must not run (a dependency failed, its publication failed, its queue is closing)
/// still sends its seqno write through the ring,
/// so its fence fails in order with the queue's other fences: fences of one queue always
/// signal in seqno order, and only the scheduler thread retires them.
fn push_ready_queue(
    q: &mut QueueState,
    now: Duration,
    done: &mut Vec<Completion>,
) -> Result<(), HwError> {
    let Some(ring) = q.ring.as_mut() else {
        if q.closing {
            // Released while idle: nothing earlier is on the device, cancel in order.
            for job in q.pending.drain(..) {
                done.push(Completion::failed(job.fence, FenceFault::Canceled));
            }
        }
        return Ok(());
    };
    // A destroyed (or banned) VM's waiting jobs never run: its mappings are gone and the
    // memory behind its remaining page-table entries may already belong to someone else.
    let vm_gone = q.keepalive.as_ref().is_some_and(|vm| vm.is_banned());
    while let Some(job) = q.pending.front() {
        let cancelled = job
            .fault
            .or((q.closing || vm_gone).then_some(FenceFault::Canceled));
        // Even a job that will not run waits for every dependency: a fence that signalled
        // promises that everything it depends on has signalled too.
        if cancelled.is_none() && !job.deps.iter().all(|d| d.is_signalled()) {
            break;
        }
        let failed = cancelled.or_else(|| {
            job.deps.iter().find_map(|d| match d.status() {
                FenceStatus::Failed(f) => Some(f),
                _ => None,
            })
        });
        // A job whose dependency failed does not run, but its seqno write still goes through
        // the ring so the queue's fences keep signalling in order.
        let words = match failed {
            Some(_) => job.dwords.len().saturating_sub(FENCE_TAIL_DWORDS),
            None => 0,
        };
        let Some(written) = job.dwords.get(words..) else {
            break;
        };
        match ring.submit(written) {
            Err(HwError::RingFull { .. }) => break,
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        let written = written.to_vec();
        let Some(job) = q.pending.pop_front() else {
            break;
        };
        if q.inflight.is_empty() {
            // The new oldest job's run time starts now (field by field: the ring is borrowed).
            q.job_ran = Duration::ZERO;
            if q.running_since.is_some() {
                q.running_since = Some(now);
            }
        }
        q.inflight.push_back(InflightJob {
            fence: job.fence,
            dwords: written,
            fault: failed,
        });
    }
    Ok(())
}
