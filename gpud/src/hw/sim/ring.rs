//! A software queue's ring on simgpu: ring memory plus the saved queue state (head and batch
//! cursor), loadable onto any hardware queue of its engine and preemptible off it.
//!
//! Owns: the ring allocation, ring writes, programming a hardware queue block with the saved
//! state (load), the preemption request and reading the state back (save). Must not: choose
//! which hardware queue a ring runs on or when it is preempted (the scheduler does), or
//! touch a hardware queue it is not loaded on.
//!
//! INVARIANT: while loaded, the device owns HEAD and the batch cursor (they are read from the
//! hardware queue); while not loaded, the saved copies are the truth and no hardware queue
//! runs this ring, so the ring memory may be freed.

use crate::hw::regs::{self, QueueStatus};
use crate::hw::{DmaMemory, DmaRegion, Engine, HwCtx, HwError, Mmio};
use crate::types::PhysAddr;
use std::sync::Arc;

/// Smallest and largest ring the device accepts.
const RING_MIN: u32 = 64;
const RING_MAX: u32 = 16 << 20;

/// Batch cursor registers, in the order they are restored (length last).
const CURSOR: [u32; 4] = [
    regs::Q_BATCH_VA_LO,
    regs::Q_BATCH_VA_HI,
    regs::Q_BATCH_POS,
    regs::Q_BATCH_LEN,
];

/// A ring and the state of the queue running it.
pub struct SimRing {
    mmio: Arc<dyn Mmio>,
    dma: Arc<dyn DmaMemory>,
    ring: DmaRegion,
    size: u32,
    engine: Engine,
    queues_per_engine: u32,
    ctx: HwCtx,
    tail: u32,
    /// Saved head (valid while not loaded).
    head: u32,
    /// While loaded: the head the device last reported. The device only moves it forward,
    /// so free space computed from it is never more than there is; HEAD is read again only
    /// when that is not enough (a submission costs no register read).
    head_seen: u32,
    /// Saved batch cursor (valid while not loaded).
    cursor: [u32; 4],
    /// Hardware queue index within the engine while loaded.
    slot: Option<u32>,
}

impl SimRing {
    /// Allocates an empty ring of `ring_bytes` (a power of two) for `ctx` on `engine`.
    pub fn new(
        mmio: Arc<dyn Mmio>,
        dma: Arc<dyn DmaMemory>,
        (engine, queues_per_engine): (Engine, u32),
        ctx: HwCtx,
        ring_bytes: u32,
    ) -> Result<Self, HwError> {
        if !ring_bytes.is_power_of_two() || !(RING_MIN..=RING_MAX).contains(&ring_bytes) {
            return Err(HwError::BadSize {
                what: "ring",
                size: u64::from(ring_bytes),
            });
        }
        let ring = dma.alloc(u64::from(ring_bytes))?;
        Ok(Self {
            mmio,
            dma,
            ring,
            size: ring_bytes,
            engine,
            queues_per_engine,
            ctx,
            tail: 0,
            head: 0,
            head_seen: 0,
            cursor: [0; 4],
            slot: None,
        })
    }

    fn reg(&self, slot: u32, reg: u32) -> u32 {
        regs::queue_reg(self.engine.index() * self.queues_per_engine + slot, reg)
    }

    /// The context the ring runs in from its next load on; ignored while loaded (the
    /// loaded hardware queue keeps the context it was loaded with).
    pub fn set_ctx(&mut self, ctx: HwCtx) {
        if self.slot.is_none() {
            self.ctx = ctx;
        }
    }

    /// The hardware queue it is loaded on.
    pub fn slot(&self) -> Option<u32> {
        self.slot
    }

    /// Programs hardware queue `slot` (which must be disabled and unused) with this ring and
    /// its saved position, and enables it.
    pub fn load(&mut self, slot: u32) -> Result<(), HwError> {
        if slot >= self.queues_per_engine {
            return Err(HwError::BadQueue {
                queue: slot,
                count: self.queues_per_engine,
            });
        }
        let r = |reg| self.reg(slot, reg);
        self.mmio.write32(r(regs::Q_CTRL), 0);
        self.mmio
            .write64(r(regs::Q_RING_BASE_LO), self.ring.addr.get()); // system memory
        self.mmio.write32(r(regs::Q_RING_SIZE), self.size);
        self.mmio.write32(r(regs::Q_HEAD), self.head);
        self.mmio.write32(r(regs::Q_TAIL), self.tail);
        self.mmio.write32(r(regs::Q_CTX), self.ctx.0);
        for (reg, v) in CURSOR.iter().zip(self.cursor) {
            self.mmio.write32(r(*reg), v);
        }
        self.mmio.write32(r(regs::Q_CTRL), 1);
        self.slot = Some(slot);
        self.head_seen = self.head;
        Ok(())
    }

    /// Asks the hardware queue to stop at its next command boundary (no-op if not loaded).
    pub fn request_preempt(&self) {
        if let Some(slot) = self.slot {
            self.mmio.write32(self.reg(slot, regs::Q_PREEMPT), 1);
        }
    }

    /// Whether the loaded hardware queue is stopped (preempted, or disabled by an engine
    /// reset) so that its state can be saved.
    pub fn stopped(&self) -> bool {
        match self.slot {
            Some(slot) => self.mmio.read32(self.reg(slot, regs::Q_CTRL)) & 1 == 0,
            None => true,
        }
    }

    /// Reads the position back from the (stopped) hardware queue and forgets it.
    pub fn save(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        self.mmio.write32(self.reg(slot, regs::Q_CTRL), 0);
        self.head = self.mmio.read32(self.reg(slot, regs::Q_HEAD));
        let mut cursor = [0; 4];
        for (c, reg) in cursor.iter_mut().zip(CURSOR) {
            *c = self.mmio.read32(self.reg(slot, reg));
        }
        self.cursor = cursor;
    }

    /// If the loaded queue has nothing left to run (head at tail, no batch), disables it and
    /// saves its state; returns whether it is unloaded now. Nothing can start on it between
    /// the check and the disable: only the driver moves the tail.
    pub fn unload_if_idle(&mut self) -> bool {
        let Some(slot) = self.slot else {
            return true;
        };
        let head = self.mmio.read32(self.reg(slot, regs::Q_HEAD));
        let batch = self.mmio.read32(self.reg(slot, regs::Q_BATCH_LEN));
        if head != self.tail || batch != 0 {
            return false;
        }
        self.save();
        true
    }

    /// Whether the ring holds commands not yet retired.
    pub fn has_work(&self) -> bool {
        match self.slot {
            Some(slot) => {
                self.mmio.read32(self.reg(slot, regs::Q_HEAD)) != self.tail
                    || self.mmio.read32(self.reg(slot, regs::Q_BATCH_LEN)) != 0
            }
            None => self.head != self.tail || self.cursor[3] != 0,
        }
    }

    /// Status of the loaded hardware queue (empty while not loaded).
    pub fn status(&self) -> QueueStatus {
        self.slot.map_or(QueueStatus::empty(), |slot| {
            QueueStatus::from_bits_truncate(self.mmio.read32(self.reg(slot, regs::Q_STATUS)))
        })
    }

    /// Bytes that can be written without overtaking the device (one dword stays empty so
    /// that head == tail always means "empty"), counted from `head`.
    fn free_from(&self, head: u32) -> u32 {
        // The head comes from the device: saturate rather than trust it to be sane.
        let used = self.tail.wrapping_sub(head) & (self.size - 1);
        self.size.saturating_sub(used).saturating_sub(4)
    }

    /// Bytes that can be written without overtaking the device (reads HEAD if loaded).
    pub fn free_bytes(&mut self) -> u32 {
        if let Some(slot) = self.slot {
            self.head_seen = self.mmio.read32(self.reg(slot, regs::Q_HEAD));
            return self.free_from(self.head_seen);
        }
        self.free_from(self.head)
    }

    /// Appends `dwords` (all or nothing); a loaded queue's tail moves, which wakes its engine
    /// (a TAIL write is the doorbell, `docs/simgpu.md` §3).
    pub fn submit(&mut self, dwords: &[u32]) -> Result<(), HwError> {
        let need = dwords.len() as u64 * 4;
        let known = match self.slot {
            Some(_) => self.head_seen,
            None => self.head,
        };
        let mut free = u64::from(self.free_from(known));
        if need > free {
            free = u64::from(self.free_bytes());
        }
        if need > free {
            return Err(HwError::RingFull { need, free });
        }
        let mut tail = self.tail;
        for d in dwords {
            self.dma
                .write_u32(PhysAddr(self.ring.addr.get() + u64::from(tail)), *d)?;
            tail = (tail + 4) & (self.size - 1);
        }
        // The tail write publishes the commands: the ring words are written before it.
        self.tail = tail;
        if let Some(slot) = self.slot {
            self.mmio.write32(self.reg(slot, regs::Q_TAIL), tail);
        }
        Ok(())
    }

    /// Disables the hardware queue (if loaded) and frees the ring. Only when it is stopped,
    /// idle, or its context cannot run (the device must not be reading the ring).
    pub fn destroy(self) -> Result<(), HwError> {
        if let Some(slot) = self.slot {
            self.mmio.write32(self.reg(slot, regs::Q_CTRL), 0);
        }
        self.dma.free(self.ring)
    }
}
