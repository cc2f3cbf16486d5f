//! Hardware queues: ring registers, doorbells and per-queue scheduling state.
//!
//! Owns: the queue register block (base, size, head, tail, doorbell, context, control,
//! status, user data, preemption request and the batch cursor), ring validity rules,
//! completing preemption requests and the hang-injection hook. Must not: execute commands
//! (`engine.rs`).
//!
//! Preemption: a request is honoured at the queue's next command boundary (commands are
//! atomic, so that is the next device step): the queue is disabled, its position stays in
//! HEAD and the batch-cursor registers, STATUS shows PREEMPTED and PREEMPT_DONE is raised.
//! A hung queue never reaches a boundary, so its request stays pending until an engine
//! reset drops it; that is how a driver tells a hang from a long job.

use crate::device::Device;
use crate::mem::Location;
use crate::regs::{self, q_status};

/// Largest ring in bytes.
const MAX_RING: u32 = 16 << 20;

/// Scheduling state of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueState {
    /// Runs when it has work.
    #[default]
    Ready,
    /// Stalled on a recoverable fault until the driver replies.
    Faulted,
    /// Hung until an engine reset.
    Hung,
}

/// A batch being executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    pub va: u64,
    pub pos: u32,
    pub len: u32,
    /// Decoded as Intel MI_* commands (bit 31 of `Q_BATCH_LEN`).
    pub intel: bool,
}

/// Bit of `Q_BATCH_LEN`: the batch in flight is Intel MI_* commands.
const BATCH_LEN_INTEL: u32 = 1 << 31;

/// One hardware queue.
#[derive(Debug, Clone, Default)]
pub(crate) struct Queue {
    pub ring_lo: u32,
    pub ring_hi: u32,
    pub size: u32,
    pub head: u32,
    pub tail: u32,
    pub ctx: u32,
    pub enabled: bool,
    pub state: QueueState,
    pub batch: Option<Batch>,
    pub hang_next: bool,
    pub sem_wait: bool,
    pub user_data: u32,
    pub bad_ring: bool,
    /// A preemption request waits for the next command boundary.
    pub preempt_req: bool,
    /// Stopped by a preemption request; cleared when enabled again.
    pub preempted: bool,
    /// Registers of Intel batches (GPRs).
    pub mi_regs: crate::engine::MiRegs,
}

impl Queue {
    /// Engine reset: stop, drop in-flight work.
    pub fn reset(&mut self) {
        self.enabled = false;
        self.state = QueueState::Ready;
        self.batch = None;
        self.hang_next = false;
        self.sem_wait = false;
        self.preempt_req = false;
        self.mi_regs = Default::default();
    }

    /// Completes a pending preemption request if the queue is at a command boundary (any
    /// time but while hung). Returns whether it did.
    pub(crate) fn complete_preempt(&mut self) -> bool {
        if !self.preempt_req || self.state == QueueState::Hung {
            return false;
        }
        self.preempt_req = false;
        self.enabled = false;
        self.sem_wait = false;
        // A command stalled on a fault had no effect; it runs again whole after the resume.
        self.state = QueueState::Ready;
        self.preempted = true;
        true
    }

    /// Writes one batch-cursor register (only while disabled). A zero length means no
    /// batch; the cursor is written with its length last.
    fn write_batch_reg(&mut self, reg: u32, value: u32) {
        let b = self.batch.get_or_insert(Batch {
            va: 0,
            pos: 0,
            len: 0,
            intel: false,
        });
        match reg {
            regs::Q_BATCH_VA_LO => b.va = (b.va & !0xFFFF_FFFF) | u64::from(value),
            regs::Q_BATCH_VA_HI => b.va = (b.va & 0xFFFF_FFFF) | (u64::from(value) << 32),
            regs::Q_BATCH_POS => b.pos = value,
            _ => {
                b.len = value & !BATCH_LEN_INTEL;
                b.intel = value & BATCH_LEN_INTEL != 0;
            }
        }
    }

    pub(crate) fn ring_ok(&self) -> bool {
        self.size.is_power_of_two()
            && (64..=MAX_RING).contains(&self.size)
            && self.head < self.size
            && self.tail < self.size
            && self.head % 4 == 0
            && self.tail % 4 == 0
    }

    pub(crate) fn has_work(&self) -> bool {
        self.batch.is_some() || self.head != self.tail
    }

    pub(crate) fn ring_location(&self) -> Location {
        if self.ring_lo & 1 != 0 {
            Location::Vram
        } else {
            Location::System
        }
    }

    pub(crate) fn ring_base(&self) -> u64 {
        (u64::from(self.ring_hi) << 32) | u64::from(self.ring_lo & !0xFFF)
    }

    /// Dwords available between head and tail.
    pub(crate) fn available(&self) -> u32 {
        (self.tail.wrapping_sub(self.head) & self.size.wrapping_sub(1)) / 4
    }
}

impl Device {
    /// Reads a queue register.
    pub(crate) fn read_queue_reg(&self, o: u32) -> u32 {
        let rel = o - regs::QUEUE_BASE;
        let Some(q) = self.queues.get((rel / regs::QUEUE_STRIDE) as usize) else {
            return 0;
        };
        let ctx_error = self
            .contexts
            .get(q.ctx as usize)
            .is_none_or(|c| c.error.is_some());
        match rel % regs::QUEUE_STRIDE {
            regs::Q_RING_BASE_LO => q.ring_lo,
            regs::Q_RING_BASE_HI => q.ring_hi,
            regs::Q_RING_SIZE => q.size,
            regs::Q_HEAD => q.head,
            regs::Q_TAIL => q.tail,
            regs::Q_CTX => q.ctx,
            regs::Q_CTRL => u32::from(q.enabled),
            regs::Q_USER_DATA => q.user_data,
            regs::Q_PREEMPT => u32::from(q.preempt_req),
            regs::Q_BATCH_VA_LO => q.batch.map_or(0, |b| b.va as u32),
            regs::Q_BATCH_VA_HI => q.batch.map_or(0, |b| (b.va >> 32) as u32),
            regs::Q_BATCH_POS => q.batch.map_or(0, |b| b.pos),
            regs::Q_BATCH_LEN => q
                .batch
                .map_or(0, |b| b.len | if b.intel { BATCH_LEN_INTEL } else { 0 }),
            regs::Q_STATUS => {
                let mut s = 0;
                s |= if q.has_work() { q_status::BUSY } else { 0 };
                s |= if q.state == QueueState::Faulted {
                    q_status::FAULTED
                } else {
                    0
                };
                s |= if ctx_error || q.bad_ring {
                    q_status::ERROR
                } else {
                    0
                };
                s |= if q.state == QueueState::Hung {
                    q_status::HUNG
                } else {
                    0
                };
                s |= if q.preempted { q_status::PREEMPTED } else { 0 };
                s | if q.sem_wait { q_status::SEM_WAIT } else { 0 }
            }
            _ => 0,
        }
    }

    /// Writes a queue register. Base, size and head are only writable while disabled.
    pub(crate) fn write_queue_reg(&mut self, o: u32, value: u32) {
        let rel = o - regs::QUEUE_BASE;
        let Some(q) = self.queues.get_mut((rel / regs::QUEUE_STRIDE) as usize) else {
            return;
        };
        let idle = !q.enabled;
        match rel % regs::QUEUE_STRIDE {
            regs::Q_RING_BASE_LO if idle => q.ring_lo = value & !0xFFE,
            regs::Q_RING_BASE_HI if idle => q.ring_hi = value,
            regs::Q_RING_SIZE if idle => q.size = value,
            regs::Q_HEAD if idle => q.head = value,
            regs::Q_TAIL => q.tail = value,
            regs::Q_CTX if idle => q.ctx = value,
            regs::Q_CTRL => {
                q.enabled = value & 1 != 0;
                if q.enabled {
                    q.bad_ring = !q.ring_ok();
                    q.preempted = false;
                    // A cursor left half-written (no length) is no batch.
                    if q.batch.is_some_and(|b| b.len == 0) {
                        q.batch = None;
                    }
                }
            }
            regs::Q_PREEMPT if value & 1 != 0 => q.preempt_req = true,
            r @ (regs::Q_BATCH_VA_LO | regs::Q_BATCH_VA_HI | regs::Q_BATCH_POS) if idle => {
                q.write_batch_reg(r, value)
            }
            regs::Q_BATCH_LEN if idle => {
                q.write_batch_reg(regs::Q_BATCH_LEN, value);
                if value & !BATCH_LEN_INTEL == 0 {
                    q.batch = None;
                }
            }
            _ => {} // doorbell and read-only registers: the write itself wakes the device
        }
    }

    /// Test hook: the next command queue `queue` of `engine` starts never completes.
    pub(crate) fn inject_hang(&mut self, engine: usize, queue: usize) {
        let per = self.cfg.queues_per_engine as usize;
        if queue < per {
            let index = engine.checked_mul(per).and_then(|i| i.checked_add(queue));
            if let Some(q) = index.and_then(|i| self.queues.get_mut(i)) {
                q.hang_next = true;
            }
        }
    }
}
