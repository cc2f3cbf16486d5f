//! Hang and error recovery: job timeouts, engine reset, banning guilty queues, resubmitting
//! innocent ones, and isolating contexts that hit a fatal error.
//!
//! Owns: the policy. A job is hung when it has been the oldest job of its queue and run on a
//! hardware queue for longer than its queue's timeout (on the injected clock; time slices of
//! other queues do not count). A hung job's queue is first preempted: if it stops, it is
//! banned and nothing else is touched. If it does not stop (the device shows it hung, or the
//! preemption timeout passes), recovery resets the job's engine; the guilty queues (the
//! timed-out one and any the device shows as hung) are banned: their in-flight fences fail
//! with `JobTimeout`, their waiting jobs with `Canceled`, later submits get `QueueBanned`.
//! Every other queue that was on the engine keeps its ring and its head (the device keeps
//! it), so its unretired jobs run to completion (a batch interrupted mid-way runs again from
//! its start, as with any GPU resubmission); queues that were not loaded are untouched. A reset-guilty context's error is cleared so
//! innocent queues sharing it (e.g. on the other engine) continue. A context in error for
//! any other reason (a fault in a non-fault-mode VM, an illegal command) bans every queue of
//! that context; other contexts keep running. Must not: run with fences being signalled
//! under the state lock (it returns `Completion`s).

use super::error::QueueId;
use super::queue::{Ban, PreemptWhy, QueueMode, QueueState, Run};
use super::scheduler::{Completion, Shared, State};
use super::slots;
use crate::hw::{Engine, HwCtx, QueueStatus};
use crate::sync::FenceFault;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Context error reason the device gives a context guilty of a hang at reset.
const REASON_RESET_GUILTY: u8 = 5;

pub(crate) fn timeout_of(q: &QueueState) -> Option<Duration> {
    match q.mode {
        QueueMode::Dma { timeout } => Some(timeout),
        QueueMode::LongRunning => None,
    }
}

/// Whether the queue is already being taken off for a hang or a kill.
fn leaving(q: &QueueState) -> bool {
    matches!(
        q.run,
        Run::Preempting {
            why: PreemptWhy::Hang | PreemptWhy::Kill,
            ..
        }
    )
}

/// The first queue whose oldest in-flight job exceeded its timeout.
pub(crate) fn timed_out(st: &State, now: Duration) -> Option<(Engine, QueueId)> {
    st.queues.iter().find_map(|(id, q)| {
        let t = timeout_of(q)?;
        let late =
            q.ban.is_none() && !leaving(q) && !q.inflight.is_empty() && q.job_elapsed(now) > t;
        late.then_some((q.engine, *id))
    })
}

/// How long until the earliest possible timeout (`None`: no job with a timeout is running).
pub(crate) fn next_check(st: &State, now: Duration) -> Option<Duration> {
    st.queues
        .values()
        .filter(|q| q.ban.is_none() && !q.inflight.is_empty() && q.running_since.is_some())
        .filter_map(|q| {
            let t = timeout_of(q)?;
            Some((t + Duration::from_nanos(1)).saturating_sub(q.job_elapsed(now)))
        })
        .min()
}

/// `culprit`'s job timed out: preempt it (banned once it stops), or reset its engine if the
/// device already shows it hung.
pub(crate) fn on_timeout(
    shared: &Shared,
    st: &mut State,
    engine: Engine,
    culprit: QueueId,
    now: Duration,
    done: &mut Vec<Completion>,
) {
    let Some(q) = st.queues.get_mut(&culprit) else {
        return;
    };
    let hung = q
        .ring
        .as_ref()
        .is_some_and(|r| r.status().contains(QueueStatus::HUNG));
    if q.run == Run::Unloaded {
        // Not on the device (its run time was accrued before): nothing to stop.
        ban_queue(shared, st, culprit, Ban::Hang, FenceFault::JobTimeout, done);
    } else if hung {
        recover(shared, st, engine, culprit, done);
    } else {
        tracing::warn!(queue = %culprit, "job hang: preempting the queue");
        slots::request_preempt(shared, q, PreemptWhy::Hang, now);
    }
}

/// Bans queue `id`, fails its jobs and releases its hardware queue.
pub(crate) fn ban_queue(
    shared: &Shared,
    st: &mut State,
    id: QueueId,
    ban: Ban,
    fault: FenceFault,
    done: &mut Vec<Completion>,
) {
    let Some(q) = st.queues.get_mut(&id) else {
        return;
    };
    if q.ban.is_some() {
        return;
    }
    tracing::warn!(queue = ?id, engine = ?q.engine, reason = ?ban, "exec queue banned");
    if !q.inflight.is_empty() {
        // A hung or failed job occupied its hardware queue too: its time is charged.
        st.busy.charge_oldest(q, shared.hw.clock.now());
    }
    q.ban(ban, fault, done);
    // The queue is stopped (preempted, reset, context error); its ring goes.
    slots::drop_ring(st, id);
    shared.banned.fetch_add(1, Ordering::Relaxed);
}

/// Resets `engine` after `culprit` timed out, bans the guilty and resubmits the innocent.
pub(crate) fn recover(
    shared: &Shared,
    st: &mut State,
    engine: Engine,
    culprit: QueueId,
    done: &mut Vec<Completion>,
) {
    // Only queues loaded on the engine are touched by its reset.
    let on_engine: Vec<QueueId> = st
        .queues
        .iter()
        .filter(|(_, q)| q.engine == engine && q.ban.is_none() && q.run != Run::Unloaded)
        .map(|(id, _)| *id)
        .collect();
    let mut guilty: BTreeSet<QueueId> = on_engine
        .iter()
        .filter(|id| {
            st.queues
                .get(id)
                .and_then(|q| q.ring.as_ref())
                .is_some_and(|r| r.status().contains(QueueStatus::HUNG))
        })
        .copied()
        .collect();
    tracing::warn!(?engine, queue = ?culprit, hung = ?guilty, "job hang: resetting the engine");
    let reset = shared.hw.engines.reset(engine, shared.cfg.reset_timeout);
    shared.resets.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(?engine, device_lost = reset.is_err(), "engine reset");
    let now = shared.hw.clock.now();
    // Jobs that completed before the reset are not resubmitted.
    shared.retire_all(st, now, done);
    // The timed-out job may have finished between the timeout check and the reset; then its
    // queue is innocent (unless the device saw it hung).
    if st
        .queues
        .get(&culprit)
        .is_some_and(|q| !q.inflight.is_empty())
    {
        guilty.insert(culprit);
    }
    let mut guilty_ctxs: BTreeSet<HwCtx> = BTreeSet::new();
    for id in on_engine {
        let device_gone = reset.is_err();
        if guilty.contains(&id) || device_gone {
            if let Some(q) = st.queues.get(&id) {
                guilty_ctxs.insert(q.ctx);
            }
            let (ban, fault) = if device_gone {
                (Ban::Device, FenceFault::DeviceLost)
            } else {
                (Ban::Hang, FenceFault::JobTimeout)
            };
            ban_queue(shared, st, id, ban, fault, done);
        } else {
            resume_after_reset(shared, st, id, now, done);
        }
    }
    if let Ok(Some(ctx)) = reset {
        guilty_ctxs.insert(ctx);
    }
    for ctx in guilty_ctxs {
        let reset_guilty = shared
            .hw
            .mmu
            .context_status(ctx)
            .is_ok_and(|s| s.error() && s.reason() == REASON_RESET_GUILTY);
        if reset_guilty {
            // Only the queue is guilty, not the VM: its other queues continue.
            let _ = shared.hw.mmu.clear_context_error(ctx);
        }
    }
}

/// Innocent queue `id` was on the reset engine: the device kept its head (at its oldest
/// unretired command), so saving and reloading it later re-runs its unretired jobs. A queue
/// that was being preempted gets what the preemption was for.
fn resume_after_reset(
    shared: &Shared,
    st: &mut State,
    id: QueueId,
    now: Duration,
    done: &mut Vec<Completion>,
) {
    let Some(q) = st.queues.get(&id) else {
        return;
    };
    // A queue preempted for a hang whose job finished before the reset is innocent.
    let why = match q.run {
        Run::Preempting {
            why: PreemptWhy::Kill,
            ..
        } => PreemptWhy::Kill,
        _ => PreemptWhy::Slice,
    };
    shared
        .resubmitted
        .fetch_add(q.inflight.len() as u64, Ordering::Relaxed);
    slots::off_engine(shared, st, id, why, now, done);
}

/// After CTX_ERROR: bans every queue of a context in error for a reason other than a reset,
/// then clears the context's error (its VM stays usable for new queues).
pub(crate) fn ban_failed_contexts(shared: &Shared, st: &mut State, done: &mut Vec<Completion>) {
    // Jobs that completed before the error are not failed with it.
    shared.retire_all(st, shared.hw.clock.now(), done);
    let ctxs: BTreeSet<HwCtx> = st
        .queues
        .values()
        .filter(|q| q.ban.is_none())
        .map(|q| q.ctx)
        .collect();
    for ctx in ctxs {
        let Ok(status) = shared.hw.mmu.context_status(ctx) else {
            continue;
        };
        if !status.error() || status.reason() == REASON_RESET_GUILTY {
            continue;
        }
        let victims: Vec<QueueId> = st
            .queues
            .iter()
            .filter(|(_, q)| q.ctx == ctx)
            .map(|(id, _)| *id)
            .collect();
        let reason = status.reason();
        let fault = FenceFault::Failed(u32::from(reason));
        for id in victims {
            ban_queue(shared, st, id, Ban::Context { reason }, fault, done);
        }
        // Every queue of the context is banned and its ring is off the device: nothing can
        // run on it any more, so the error is cleared. The fault bans the exec queues, not
        // the VM (as in Xe): a queue the client creates on the VM afterwards runs. Left
        // latched, such a queue was loaded onto a context the device never runs and its
        // jobs waited forever (no second CTX_ERROR comes).
        let _ = shared.hw.mmu.clear_context_error(ctx);
    }
}
