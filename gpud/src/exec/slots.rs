//! Software queues on hardware queues: which exec queue's ring runs on which hardware queue,
//! time slicing, and finishing preemptions.
//!
//! Owns: the hardware-queue table of each engine (`Slots`), loading waiting rings onto free
//! hardware queues, choosing whom to preempt when more queues have work than the engine has
//! hardware queues, and what happens when a preempted queue has stopped (time slice: back to
//! waiting; kill: its jobs fail; hang: it is banned). Policy, per engine: a waiting queue
//! takes a free hardware queue; otherwise it preempts a loaded queue of lower priority at
//! once, or one of its own priority that has run for a whole quantum; waiting queues of one
//! priority go round-robin (the one that has waited longest first). A queue whose ring ran
//! dry leaves its hardware queue only when someone waits for it. Must not: signal fences
//! under the state lock (it returns `Completion`s) or decide hang policy beyond "banned once
//! off the engine" (a queue that does not stop is `recovery.rs`'s).

use super::contexts::Acquire;
use super::error::QueueId;
use super::queue::{Ban, PreemptWhy, Priority, QueueState, Run};
use super::scheduler::{Completion, Shared, State};
use crate::hw::{Engine, HwCtx, QueueStatus};
use crate::sync::FenceFault;
use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Which exec queue each hardware queue of each engine runs.
#[derive(Default)]
pub(crate) struct Slots {
    pub(crate) engines: [Vec<Option<QueueId>>; 2],
    /// Hands out round-robin tickets.
    next_ticket: u64,
}

impl Slots {
    fn table(&mut self, engine: Engine, per_engine: u32) -> &mut Vec<Option<QueueId>> {
        // PANIC: `Engine::index` is 0 or 1, and there is one table per engine.
        let t = &mut self.engines[engine.index() as usize];
        if t.len() != per_engine as usize {
            t.resize(per_engine as usize, None);
        }
        t
    }

    /// Marks hardware queue `slot` of `engine` free.
    pub(crate) fn free(&mut self, engine: Engine, slot: u32) {
        // PANIC: `Engine::index` is 0 or 1, and there is one table per engine.
        if let Some(s) = self.engines[engine.index() as usize].get_mut(slot as usize) {
            *s = None;
        }
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }
}

/// Takes `id`'s ring off the device (if any) and frees it; the queue keeps no ring.
pub(crate) fn drop_ring(st: &mut State, id: QueueId) {
    let Some(q) = st.queues.get_mut(&id) else {
        return;
    };
    let slot = q.run.slot();
    q.run = Run::Unloaded;
    q.release_ctx();
    q.running_since = None;
    if let Some(ring) = q.ring.take() {
        // The queue is stopped, idle or cannot run; a failed teardown only leaks a ring.
        let _ = ring.destroy();
    }
    if let Some(slot) = slot {
        let engine = q.engine;
        st.slots.free(engine, slot);
    }
}

/// Finishes every preemption whose queue has stopped. Returns the queues that were asked to
/// stop and did not (hung by the device's account, or past the preemption timeout): the
/// caller resets their engine.
pub(crate) fn collect_preempted(
    shared: &Shared,
    st: &mut State,
    now: Duration,
    done: &mut Vec<Completion>,
) -> Vec<(Engine, QueueId)> {
    let mut stuck = Vec::new();
    let mut stopped = Vec::new();
    for (id, q) in st.queues.iter() {
        let Run::Preempting { asked, why, .. } = q.run else {
            continue;
        };
        let Some(ring) = q.ring.as_ref() else {
            continue;
        };
        if ring.stopped() {
            stopped.push((*id, why));
        } else if ring.status().contains(QueueStatus::HUNG)
            || now.saturating_sub(asked) > shared.cfg.preempt_timeout
        {
            stuck.push((q.engine, *id));
        }
    }
    for (id, why) in stopped {
        off_engine(shared, st, id, why, now, done);
    }
    stuck
}

/// `id` stopped on a preemption (or an engine reset took it off): saves its position, frees
/// its hardware queue and does what the preemption was for.
pub(crate) fn off_engine(
    shared: &Shared,
    st: &mut State,
    id: QueueId,
    why: PreemptWhy,
    now: Duration,
    done: &mut Vec<Completion>,
) {
    let Some(q) = st.queues.get_mut(&id) else {
        return;
    };
    let slot = q.run.slot();
    if let Some(ring) = q.ring.as_mut() {
        ring.save();
    }
    q.unloaded(now);
    let engine = q.engine;
    if let Some(slot) = slot {
        st.slots.free(engine, slot);
    }
    match why {
        PreemptWhy::Slice => {}
        PreemptWhy::Kill => finish_kill(st, id, now, done),
        PreemptWhy::Hang => {
            super::recovery::ban_queue(shared, st, id, Ban::Hang, FenceFault::JobTimeout, done)
        }
    }
}

/// A killed queue is off the engine: its running job's time is charged, its jobs fail in
/// order and its ring goes.
pub(crate) fn finish_kill(st: &mut State, id: QueueId, now: Duration, done: &mut Vec<Completion>) {
    if let Some(q) = st.queues.get_mut(&id) {
        if !q.inflight.is_empty() {
            st.busy.charge_oldest(q, now);
        }
        q.cancel_all(done);
    }
    drop_ring(st, id);
}

/// Asks loaded queue `q` to stop for `why` (a stronger reason replaces a time slice).
pub(crate) fn request_preempt(shared: &Shared, q: &mut QueueState, why: PreemptWhy, now: Duration) {
    match q.run {
        Run::Unloaded => {}
        Run::Loaded { slot, .. } => {
            if let Some(ring) = q.ring.as_ref() {
                ring.request_preempt();
            }
            q.run = Run::Preempting {
                slot,
                asked: now,
                why,
            };
            if why == PreemptWhy::Slice {
                shared.preemptions.fetch_add(1, Ordering::Relaxed);
            }
        }
        Run::Preempting {
            slot,
            asked,
            why: old,
        } => {
            if old == PreemptWhy::Slice {
                q.run = Run::Preempting { slot, asked, why };
            }
        }
    }
}

/// A queue that wants a hardware queue: (priority, round-robin ticket, id).
pub(crate) type Waiter = (Priority, u64, QueueId);

/// What a scheduling pass leaves for its caller.
#[derive(Default)]
pub(crate) struct Leftover {
    /// Queues whose ring could not be loaded (the device is lost for them).
    pub lost: Vec<QueueId>,
    /// Waiters that had a hardware queue but no context (every context busy), best first.
    pub starved: Vec<Waiter>,
    /// A waiter's new context is still being flushed: look again soon.
    pub flushing: bool,
}

/// Loads waiting queues of `engine` onto hardware queues and preempts for the rest. Returns
/// how long until a time slice ends that matters to a waiting queue. A queue whose VM takes
/// its contexts from the pool gets one right before it is loaded, in waiting order (see
/// `contexts.rs`); one that gets none stays waiting (in `out.starved`).
pub(crate) fn schedule_engine(
    shared: &Shared,
    st: &mut State,
    engine: Engine,
    now: Duration,
    out: &mut Leftover,
) -> Option<Duration> {
    let per = shared.hw.rings.queues_per_engine();
    let mut waiters = waiters(st, engine);
    if waiters.is_empty() {
        return None;
    }
    unload_idle(st, engine, now);
    let mut free: Vec<u32> = st
        .slots
        .table(engine, per)
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| i as u32)
        .rev()
        .collect();
    let mut left = Vec::new();
    for w in waiters.drain(..) {
        let Some(&slot) = free.last() else {
            left.push(w);
            continue;
        };
        let vm_ctx = st.queues.get(&w.2).and_then(|q| q.vm_ctx.clone());
        let ctx = match vm_ctx.map(|v| v.acquire()) {
            None => None,
            Some(Acquire::Ready(c)) => Some(c),
            Some(Acquire::Flushing) => {
                out.flushing = true;
                continue;
            }
            Some(Acquire::Unavailable) => {
                out.starved.push(w);
                continue;
            }
        };
        free.pop();
        load(st, w.2, slot, ctx, now, &mut out.lost);
    }
    preempt_for(shared, st, engine, &left, now)
}

/// Unloads the idle queues of both engines: they hold contexts that `starved` waiters need.
pub(crate) fn unload_all_idle(st: &mut State, now: Duration) {
    for engine in [Engine::Copy, Engine::Compute] {
        unload_idle(st, engine, now);
    }
}

/// Preempts loaded queues (any engine) holding pool contexts for the waiters in `starved`
/// (best first) that found no context: a lower-priority queue at once, one of the same
/// priority after its quantum, as for hardware queues. Once off the hardware, a preempted
/// queue's context is idle (unless its VM has another queue on) and goes, in waiting order,
/// to a waiter that has waited longer than the preempted queue will. Returns the time until
/// the next quantum ends for a queue a waiter could preempt.
pub(crate) fn preempt_for_contexts(
    shared: &Shared,
    st: &mut State,
    starved: &[Waiter],
    now: Duration,
) -> Option<Duration> {
    preempt_matching(shared, st, starved, now, |q| q.held_ctx.is_some())
}

/// Queues of `engine` with work on their ring and no hardware queue, best first.
fn waiters(st: &mut State, engine: Engine) -> Vec<Waiter> {
    let mut out = Vec::new();
    for (id, q) in st.queues.iter_mut() {
        let wants = q.engine == engine
            && q.ban.is_none()
            && !q.killed
            && q.run == Run::Unloaded
            && q.ring.as_ref().is_some_and(|r| r.has_work());
        if !wants {
            continue;
        }
        let ticket = match q.ticket {
            Some(t) => t,
            None => {
                let t = st.slots.ticket();
                q.ticket = Some(t);
                t
            }
        };
        out.push((q.priority, ticket, *id));
    }
    out.sort_by_key(|&(p, t, _)| (Reverse(p), t));
    out
}

/// Unloads loaded queues of `engine` whose ring ran dry (someone is waiting).
fn unload_idle(st: &mut State, engine: Engine, now: Duration) {
    let mut freed = Vec::new();
    for q in st.queues.values_mut() {
        let Run::Loaded { slot, .. } = q.run else {
            continue;
        };
        if q.engine != engine {
            continue;
        }
        if q.ring.as_mut().is_some_and(|r| r.unload_if_idle()) {
            q.unloaded(now);
            freed.push(slot);
        }
    }
    for slot in freed {
        st.slots.free(engine, slot);
    }
}

/// Loads `id`'s ring on hardware queue `slot` of its engine, in pool context `ctx` if it has
/// one (pinned by the caller; unpinned again if the load fails).
fn load(
    st: &mut State,
    id: QueueId,
    slot: u32,
    ctx: Option<HwCtx>,
    now: Duration,
    lost: &mut Vec<QueueId>,
) {
    let Some(q) = st.queues.get_mut(&id) else {
        return;
    };
    if q.vm_ctx.is_some() && ctx.is_none() {
        // Never load a pool queue in the fixed context it was created with.
        lost.push(id);
        return;
    }
    q.held_ctx = ctx;
    let Some(ring) = q.ring.as_mut() else {
        q.release_ctx();
        return;
    };
    if let Some(c) = ctx {
        ring.set_ctx(c);
    }
    if ring.load(slot).is_err() {
        q.release_ctx();
        lost.push(id);
        return;
    }
    q.loaded(slot, now);
    let engine = q.engine;
    // PANIC: `Engine::index` is 0 or 1, and there is one table per engine.
    if let Some(s) = st.slots.engines[engine.index() as usize].get_mut(slot as usize) {
        *s = Some(id);
    }
}

/// Preempts loaded queues of `engine` for the waiting queues `left` (best first).
fn preempt_for(
    shared: &Shared,
    st: &mut State,
    engine: Engine,
    left: &[Waiter],
    now: Duration,
) -> Option<Duration> {
    preempt_matching(shared, st, left, now, |q| q.engine == engine)
}

/// Preempts loaded queues that `which` selects for the waiting queues `left` (best first): a
/// lower-priority queue at once, one of the same priority after its quantum. Returns the time
/// until the next quantum ends for a queue a waiter could preempt.
fn preempt_matching(
    shared: &Shared,
    st: &mut State,
    left: &[Waiter],
    now: Duration,
    which: impl Fn(&QueueState) -> bool,
) -> Option<Duration> {
    let stopping = st
        .queues
        .values()
        .filter(|q| {
            which(q)
                && matches!(
                    q.run,
                    Run::Preempting {
                        why: PreemptWhy::Slice,
                        ..
                    }
                )
        })
        .count();
    let quantum = shared.cfg.quantum;
    // Loaded queues that may be preempted: (priority, loaded since, id).
    let mut running: Vec<(Priority, Duration, QueueId)> = st
        .queues
        .iter()
        .filter_map(|(id, q)| match q.run {
            Run::Loaded { since, .. } if which(q) => Some((q.priority, since, *id)),
            _ => None,
        })
        .collect();
    running.sort();
    let mut next: Option<Duration> = None;
    for w in left.iter().skip(stopping) {
        let victim = running.iter().position(|&(p, since, _)| {
            p < w.0 || (p == w.0 && now.saturating_sub(since) >= quantum)
        });
        match victim {
            Some(i) => {
                let (_, _, id) = running.remove(i);
                if let Some(q) = st.queues.get_mut(&id) {
                    request_preempt(shared, q, PreemptWhy::Slice, now);
                }
            }
            None => {
                let soonest = running
                    .iter()
                    .filter(|&&(p, _, _)| p <= w.0)
                    .map(|&(_, since, _)| (since + quantum).saturating_sub(now))
                    .min();
                next = match (next, soonest) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
    }
    next
}

/// How long until a preemption in progress times out (`None`: none in progress).
pub(crate) fn next_preempt_check(st: &State, timeout: Duration, now: Duration) -> Option<Duration> {
    st.queues
        .values()
        .filter_map(|q| match q.run {
            Run::Preempting { asked, .. } => {
                Some((asked + timeout + Duration::from_nanos(1)).saturating_sub(now))
            }
            _ => None,
        })
        .min()
}
