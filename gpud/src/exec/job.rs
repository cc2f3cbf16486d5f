//! A job: what one EXEC asks the GPU to run, and how it becomes ring dwords.
//!
//! Owns: the job description (payload, dependencies, user fence, out-syncs) and the ring
//! encoding of a job: payload, then the user-fence write, then the seqno write to the queue's
//! fence page and a USER_INTERRUPT. Must not: schedule, wait or touch hardware.

use super::error::ExecError;
use crate::hw::cmd::{BatchFormat, CommandStream};
use crate::sync::{Fence, Syncobj};
use crate::types::GpuVa;
use std::sync::Arc;

/// Dwords of the job's completion tail: STORE_QWORD of the seqno (5) + USER_INTERRUPT (2).
pub(crate) const FENCE_TAIL_DWORDS: usize = 7;

/// What the job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A batch buffer in the queue's VM, started from the ring with BATCH_START.
    Batch {
        /// GPU VA of the first command.
        va: GpuVa,
        /// Length in dwords (the batch may end earlier at BATCH_END).
        len_dwords: u32,
    },
    /// Command dwords written into the ring itself (driver-built work, e.g. kernel copies).
    Commands(Vec<u32>),
    /// Nothing: a sync-only job whose fence orders after its dependencies.
    None,
}

/// A user (memory) fence the GPU writes when the job's payload completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserFenceWrite {
    /// 8-byte aligned GPU VA in the queue's VM.
    pub va: GpuVa,
    /// Value stored there.
    pub value: u64,
}

/// A syncobj that receives the job's fence once the job is queued.
#[derive(Debug, Clone)]
pub enum OutSync {
    /// Replace the content of a binary syncobj.
    Binary(Arc<Syncobj>),
    /// Add a timeline point.
    Timeline(Arc<Syncobj>, u64),
}

impl OutSync {
    pub(crate) fn install(&self, fence: &Arc<Fence>) {
        match self {
            OutSync::Binary(s) => s.replace_fence(Some(fence.clone())),
            OutSync::Timeline(s, point) => s.add_point(*point, fence.clone()),
        }
    }
}

/// One job.
#[derive(Debug, Clone)]
pub struct Job {
    /// What runs.
    pub payload: Payload,
    /// Fences that must signal before the job is written to the ring (in-syncs).
    pub deps: Vec<Arc<Fence>>,
    /// Written by the GPU after the payload.
    pub user_fence: Option<UserFenceWrite>,
    /// Receive the job fence.
    pub out_syncs: Vec<OutSync>,
}

impl Job {
    /// A job running a batch buffer.
    pub fn batch(va: GpuVa, len_dwords: u32) -> Self {
        Self::new(Payload::Batch { va, len_dwords })
    }

    /// A job running `commands` from the ring.
    pub fn commands(commands: Vec<u32>) -> Self {
        Self::new(Payload::Commands(commands))
    }

    /// A sync-only job.
    pub fn sync_only() -> Self {
        Self::new(Payload::None)
    }

    fn new(payload: Payload) -> Self {
        Self {
            payload,
            deps: Vec::new(),
            user_fence: None,
            out_syncs: Vec::new(),
        }
    }

    /// Adds dependencies.
    pub fn with_deps(mut self, deps: impl IntoIterator<Item = Arc<Fence>>) -> Self {
        self.deps.extend(deps);
        self
    }

    /// Sets the user fence.
    pub fn with_user_fence(mut self, va: GpuVa, value: u64) -> Self {
        self.user_fence = Some(UserFenceWrite { va, value });
        self
    }

    /// Adds an out-sync.
    pub fn with_out_sync(mut self, out: OutSync) -> Self {
        self.out_syncs.push(out);
        self
    }

    /// Checks what can be checked without the queue.
    pub(crate) fn validate(&self) -> Result<(), ExecError> {
        if let Payload::Batch { len_dwords: 0, va } = self.payload {
            return Err(ExecError::BadJob {
                what: "empty batch",
                value: va.get(),
            });
        }
        if let Some(uf) = self.user_fence {
            if !uf.va.is_aligned(8) {
                return Err(ExecError::BadJob {
                    what: "user fence address not 8-byte aligned",
                    value: uf.va.get(),
                });
            }
        }
        Ok(())
    }

    /// The ring dwords of this job: payload, user fence, `seqno` to `fence_va` (a global-GTT
    /// address no client batch can reach), interrupt.
    /// A batch payload is started as `batches` (the queue's batch format).
    pub(crate) fn ring_dwords(
        &self,
        fence_va: GpuVa,
        seqno: u64,
        batches: BatchFormat,
    ) -> Vec<u32> {
        let mut tail = CommandStream::new();
        if let Some(uf) = self.user_fence {
            tail.store_qword(uf.va, uf.value);
        }
        // The interrupt data is informational (the handler reads the fence page), so the
        // low half of the seqno is enough.
        tail.ggtt_store_qword(fence_va, seqno)
            .user_interrupt(seqno as u32);
        let mut out = match &self.payload {
            Payload::Batch { va, len_dwords } => CommandStream::new()
                .batch_start_as(*va, *len_dwords, batches)
                .dwords()
                .to_vec(),
            Payload::Commands(c) => c.clone(),
            Payload::None => Vec::new(),
        };
        out.extend_from_slice(tail.dwords());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_dwords_end_with_user_fence_then_seqno_then_interrupt() {
        let job = Job::batch(GpuVa(0x10000), 8).with_user_fence(GpuVa(0x2000), 7);
        let d = job.ring_dwords(GpuVa(0x3000), 0x1_0000_0005, BatchFormat::Native);
        let mut want = CommandStream::new();
        want.batch_start(GpuVa(0x10000), 8)
            .store_qword(GpuVa(0x2000), 7)
            .ggtt_store_qword(GpuVa(0x3000), 0x1_0000_0005)
            .user_interrupt(5);
        assert_eq!(d, want.dwords());
        let mut tail = CommandStream::new();
        tail.ggtt_store_qword(GpuVa(0x3000), 0x1_0000_0005)
            .user_interrupt(5);
        assert_eq!(tail.len(), FENCE_TAIL_DWORDS);
        assert_eq!(&d[d.len() - FENCE_TAIL_DWORDS..], tail.dwords());
        // An Intel queue's batch starts with the Intel flag; the rest is the same.
        let intel = job.ring_dwords(GpuVa(0x3000), 0x1_0000_0005, BatchFormat::Intel);
        let mut start = CommandStream::new();
        start.batch_start_as(GpuVa(0x10000), 8, BatchFormat::Intel);
        assert_eq!(&intel[..start.len()], start.dwords());
        assert_ne!(intel[0], d[0]);
        assert_eq!(&intel[start.len()..], &d[start.len()..]);
    }

    #[test]
    fn malformed_jobs_are_refused() {
        assert!(matches!(
            Job::batch(GpuVa(0x1000), 0).validate(),
            Err(ExecError::BadJob { .. })
        ));
        assert!(matches!(
            Job::sync_only()
                .with_user_fence(GpuVa(0x1004), 1)
                .validate(),
            Err(ExecError::BadJob { value: 0x1004, .. })
        ));
        assert!(Job::commands(vec![0]).validate().is_ok());
    }
}
