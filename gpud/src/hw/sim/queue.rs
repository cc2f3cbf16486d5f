//! A simgpu hardware queue: a ring in DMA memory, its registers and the doorbell.
//!
//! Owns: ring allocation, programming the queue block, free-space accounting and ring writes.
//! Must not: build commands (see `hw::cmd`) or wait for completion (fences/interrupts do).

use crate::hw::regs::{self, QueueStatus};
use crate::hw::{DmaMemory, DmaRegion, Engine, HwCtx, HwError, HwQueue, Mmio};
use crate::types::PhysAddr;
use std::sync::Arc;

/// Smallest and largest ring the device accepts.
const RING_MIN: u32 = 64;
const RING_MAX: u32 = 16 << 20;

/// One hardware queue of one engine.
pub struct SimQueue {
    mmio: Arc<dyn Mmio>,
    dma: Arc<dyn DmaMemory>,
    ring: DmaRegion,
    size: u32,
    index: u32,
    tail: u32,
}

impl SimQueue {
    /// Allocates a ring of `ring_bytes` (a power of two), programs queue `queue` of `engine`
    /// to run in context `ctx`, and enables it. `queues_per_engine` comes from CAPS.
    pub fn new(
        mmio: Arc<dyn Mmio>,
        dma: Arc<dyn DmaMemory>,
        (engine, queue, queues_per_engine): (Engine, u32, u32),
        ctx: HwCtx,
        ring_bytes: u32,
    ) -> Result<Self, HwError> {
        if queue >= queues_per_engine {
            return Err(HwError::BadQueue {
                queue,
                count: queues_per_engine,
            });
        }
        if !ring_bytes.is_power_of_two() || !(RING_MIN..=RING_MAX).contains(&ring_bytes) {
            return Err(HwError::BadSize {
                what: "ring",
                size: u64::from(ring_bytes),
            });
        }
        let ring = dma.alloc(u64::from(ring_bytes))?;
        let index = engine.index() * queues_per_engine + queue;
        let r = |reg| regs::queue_reg(index, reg);
        mmio.write32(r(regs::Q_CTRL), 0);
        mmio.write64(r(regs::Q_RING_BASE_LO), ring.addr.get()); // bit 0 clear: system memory
        mmio.write32(r(regs::Q_RING_SIZE), ring_bytes);
        mmio.write32(r(regs::Q_HEAD), 0);
        mmio.write32(r(regs::Q_TAIL), 0);
        mmio.write32(r(regs::Q_CTX), ctx.0);
        mmio.write32(r(regs::Q_CTRL), 1);
        Ok(Self {
            mmio,
            dma,
            ring,
            size: ring_bytes,
            index,
            tail: 0,
        })
    }

    fn reg(&self, reg: u32) -> u32 {
        regs::queue_reg(self.index, reg)
    }

    /// Bytes that can be written without overtaking the device (one dword stays empty so
    /// that head == tail always means "empty").
    pub fn free_bytes(&self) -> u32 {
        // The head comes from the device: saturate rather than trust it to be sane.
        let used = self.tail.wrapping_sub(self.head()) & (self.size - 1);
        self.size.saturating_sub(used).saturating_sub(4)
    }

    /// Disables the queue and frees its ring. Only call when the queue is idle (or reset).
    pub fn destroy(self) -> Result<(), HwError> {
        self.mmio.write32(self.reg(regs::Q_CTRL), 0);
        self.dma.free(self.ring)
    }
}

impl HwQueue for SimQueue {
    fn submit(&mut self, dwords: &[u32]) -> Result<(), HwError> {
        let need = dwords.len() as u64 * 4;
        let free = u64::from(self.free_bytes());
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
        self.mmio.write32(self.reg(regs::Q_TAIL), tail);
        self.mmio.write32(self.reg(regs::Q_DOORBELL), 1);
        Ok(())
    }

    fn head(&self) -> u32 {
        self.mmio.read32(self.reg(regs::Q_HEAD))
    }

    fn tail(&self) -> u32 {
        self.tail
    }

    fn status(&self) -> QueueStatus {
        QueueStatus::from_bits_truncate(self.mmio.read32(self.reg(regs::Q_STATUS)))
    }

    fn user_data(&self) -> u32 {
        self.mmio.read32(self.reg(regs::Q_USER_DATA))
    }
}
