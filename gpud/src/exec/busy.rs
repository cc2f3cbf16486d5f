//! Engine busy time per client, as the scheduler measures it (for DRM fdinfo-style
//! `drm-engine-<class>` stats and `gpuctl top`).
//!
//! Owns: [`BusyLedger`], the time already charged to each owner per engine, and
//! [`EngineBusy`], what a sample returns. A queue is busy while its oldest in-flight job has
//! run on a hardware queue: the scheduler's per-queue job clock (`QueueState::job_elapsed`,
//! which counts only time loaded on a hardware queue, across preemptions and resets) is
//! charged to the queue's owner whenever that job leaves the ring (retired, banned, killed);
//! a sample adds the running job's elapsed time, so busy time grows while a long job runs
//! and never goes backwards. Only owners with a ledger entry are charged: an entry opens with
//! the owner's first queue and [`BusyLedger::forget`] removes it when the client goes, so
//! queues still draining after that leave nothing behind. Must not: decide scheduling.

use super::queue::{QueueOwner, QueueState};
use crate::hw::Engine;
use std::collections::BTreeMap;
use std::time::Duration;

/// Busy time of one owner per engine class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineBusy {
    /// On the copy engine.
    pub copy: Duration,
    /// On the compute engine.
    pub compute: Duration,
}

impl EngineBusy {
    fn slot(&mut self, engine: Engine) -> &mut Duration {
        match engine {
            Engine::Copy => &mut self.copy,
            Engine::Compute => &mut self.compute,
        }
    }

    /// Busy time on `engine`.
    pub fn get(&self, engine: Engine) -> Duration {
        match engine {
            Engine::Copy => self.copy,
            Engine::Compute => self.compute,
        }
    }
}

/// Time charged so far, per owner (jobs that left the ring).
#[derive(Default)]
pub(crate) struct BusyLedger {
    owners: BTreeMap<QueueOwner, EngineBusy>,
}

impl BusyLedger {
    /// `owner` has a queue: its time is charged from now on.
    pub(crate) fn open(&mut self, owner: QueueOwner) {
        self.owners.entry(owner).or_default();
    }

    /// `owner` is gone: its entry goes and later charges to it are dropped.
    pub(crate) fn forget(&mut self, owner: QueueOwner) {
        self.owners.remove(&owner);
    }

    /// Charges the time `q`'s oldest in-flight job ran to `q`'s owner and restarts the job
    /// clock for the next job (call before that job leaves `inflight`, or right after the
    /// ones that retired did).
    pub(crate) fn charge_oldest(&mut self, q: &mut QueueState, now: Duration) {
        let ran = q.job_elapsed(now);
        q.restart_job_clock(now);
        if let Some(e) = q.owner.and_then(|o| self.owners.get_mut(&o)) {
            *e.slot(q.engine) += ran;
        }
    }

    /// `owner`'s busy time at `now`: what was charged plus the elapsed time of each of its
    /// queues' running (oldest in-flight) job.
    pub(crate) fn sample<'a>(
        &self,
        owner: QueueOwner,
        queues: impl Iterator<Item = &'a QueueState>,
        now: Duration,
    ) -> EngineBusy {
        let mut busy = self.owners.get(&owner).copied().unwrap_or_default();
        for q in queues.filter(|q| q.owner == Some(owner) && !q.inflight.is_empty()) {
            *busy.slot(q.engine) += q.job_elapsed(now);
        }
        busy
    }

    /// Owners with an entry (tests check nothing is left behind).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.owners.len()
    }
}
