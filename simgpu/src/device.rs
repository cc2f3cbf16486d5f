//! The device state and its register interface: what an MMIO access does, and one step.
//!
//! Owns: contexts, interrupt status/mask and the MSI-X table, TLB invalidation requests, the
//! fault queue registers, engine reset, the timestamp and counters, and the order of work in
//! one device step. Must not: run commands (`engine.rs`) or deliver interrupts while locked:
//! raised vectors are queued in [`Device::take_vectors`] and the caller delivers them after
//! releasing the device lock, so a sink may call back into the device.

use crate::engine::ENGINES;
use crate::fault::{FaultQueue, FaultRecord};
use crate::mem::{Location, PhysMemory};
use crate::mmu::{Memories, Mmu, PtRoot};
use crate::pci::ConfigSpace;
use crate::queue::{Queue, QueueState};
use crate::regs::{self, counter, ctx_ctrl, ctx_status, irq, ErrorReason};
use std::collections::VecDeque;
use std::sync::Arc;

/// Static shape of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// VRAM bytes (a power of two, at least 64 KiB).
    pub vram_size: u64,
    /// Number of contexts (at most 256).
    pub contexts: u32,
    /// Hardware queues per engine (at most 16).
    pub queues_per_engine: u32,
    /// TLB capacity in translations.
    pub tlb_entries: usize,
    /// Cost model: bytes COPY/FILL move per device step (0 = any size in one step). A
    /// transfer of `n` bytes keeps its engine busy for `ceil(n / rate)` steps in total.
    pub copy_bytes_per_step: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            vram_size: 16 << 20,
            contexts: 64,
            queues_per_engine: 8,
            tlb_entries: 4096,
            copy_bytes_per_step: 0,
        }
    }
}

impl Config {
    /// The configuration clamped to what the register map can express.
    pub fn sanitized(self) -> Self {
        Self {
            vram_size: self.vram_size.max(64 << 10).next_power_of_two(),
            contexts: self.contexts.clamp(1, 256),
            queues_per_engine: self.queues_per_engine.clamp(1, 16),
            tlb_entries: self.tlb_entries.max(1),
            copy_bytes_per_step: self.copy_bytes_per_step,
        }
    }
}

/// Test-facing snapshot of the device counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Page-table entries read.
    pub pte_reads: u64,
    /// TLB hits.
    pub tlb_hits: u64,
    /// TLB misses (walks).
    pub tlb_misses: u64,
    /// Invalidation requests completed.
    pub invalidations: u64,
    /// Page faults.
    pub faults: u64,
    /// Bytes moved by COPY/FILL.
    pub bytes_copied: u64,
    /// Commands retired.
    pub commands: u64,
}

/// One context's registers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Context {
    pub pt_lo: u32,
    pub pt_hi: u32,
    pub ctrl: u32,
    pub error: Option<ErrorReason>,
}

impl Context {
    pub fn root(&self) -> PtRoot {
        PtRoot {
            addr: (u64::from(self.pt_hi) << 32) | u64::from(self.pt_lo & !0xFFF),
            location: if self.pt_lo & 1 != 0 {
                Location::Vram
            } else {
                Location::System
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct MsixEntry {
    data: u32,
    addr_lo: u32,
    addr_hi: u32,
    masked: bool,
    pending: bool,
}

#[derive(Debug, Clone, Copy)]
struct InvRequest {
    seqno: u32,
    ctx: u32,
    full: bool,
    start: u64,
    len: u64,
}

/// The whole device.
pub struct Device {
    pub(crate) cfg: Config,
    pub(crate) sys: Arc<dyn PhysMemory>,
    pub(crate) vram: Arc<dyn PhysMemory>,
    pub(crate) mmu: Mmu,
    pub(crate) contexts: Vec<Context>,
    pub(crate) queues: Vec<Queue>,
    pub(crate) rr: [usize; ENGINES],
    /// Steps each engine still spends on its last transfer (cost model).
    pub(crate) busy: [u64; ENGINES],
    pub(crate) counters: Counters,
    pub(crate) timestamp: u64,
    pub(crate) pci: ConfigSpace,
    pub(crate) fq: FaultQueue,
    int_status: u32,
    int_mask: u32,
    msix: Vec<MsixEntry>,
    vectors: Vec<(u16, u32)>,
    ts_latch: u32,
    inv_regs: [u32; 5],
    inv_req_seqno: u32,
    inv_done_seqno: u32,
    inv_pending: VecDeque<InvRequest>,
    guilty: [u32; ENGINES],
    /// GGTT_BASE_LO/HI.
    ggtt: [u32; 2],
    /// Bumped by every register write; the device thread sleeps only if it did not move.
    pub(crate) kicks: u64,
    /// The device thread is waiting for a register write (set and cleared by it under the
    /// device lock; the first write that gives it work clears it and notifies).
    pub(crate) sleeping: bool,
}

impl Device {
    /// A device in its reset state.
    pub fn new(cfg: Config, sys: Arc<dyn PhysMemory>, vram: Arc<dyn PhysMemory>) -> Self {
        let cfg = cfg.sanitized();
        let queues = (0..ENGINES as u32 * cfg.queues_per_engine)
            .map(|_| Queue::default())
            .collect();
        Self {
            pci: ConfigSpace::new(cfg.vram_size, irq::COUNT as u16),
            mmu: Mmu::new(cfg.tlb_entries),
            contexts: vec![Context::default(); cfg.contexts as usize],
            queues,
            rr: [0; ENGINES],
            busy: [0; ENGINES],
            counters: Counters::default(),
            timestamp: 0,
            fq: FaultQueue::default(),
            int_status: 0,
            int_mask: 0,
            msix: vec![MsixEntry::default(); irq::COUNT as usize],
            vectors: Vec::new(),
            ts_latch: 0,
            inv_regs: [0; 5],
            inv_req_seqno: 0,
            inv_done_seqno: 0,
            inv_pending: VecDeque::new(),
            guilty: [regs::NO_CONTEXT; ENGINES],
            ggtt: [0; 2],
            kicks: 0,
            sleeping: false,
            cfg,
            sys,
            vram,
        }
    }

    /// The global GTT's root, when enabled.
    pub(crate) fn ggtt_root(&self) -> Option<PtRoot> {
        let [lo, hi] = self.ggtt;
        (lo & regs::GGTT_ENABLE != 0).then(|| PtRoot {
            addr: (u64::from(hi) << 32) | u64::from(lo & !0xFFF),
            location: if lo & 1 != 0 {
                Location::Vram
            } else {
                Location::System
            },
        })
    }

    pub(crate) fn mems(&self) -> (Arc<dyn PhysMemory>, Arc<dyn PhysMemory>) {
        (self.sys.clone(), self.vram.clone())
    }

    /// Vectors raised since the last call, as (vector, message data).
    pub fn take_vectors(&mut self) -> Vec<(u16, u32)> {
        std::mem::take(&mut self.vectors)
    }

    /// Counter snapshot, merging the MMU's own counters.
    pub fn counters(&self) -> Counters {
        Counters {
            pte_reads: self.mmu.counters.pte_reads,
            tlb_hits: self.mmu.counters.tlb_hits,
            tlb_misses: self.mmu.counters.tlb_misses,
            ..self.counters
        }
    }

    /// Raises interrupt causes: latches status, sends enabled unmasked vectors.
    pub(crate) fn raise(&mut self, causes: u32) {
        self.int_status |= causes;
        for v in 0..irq::COUNT {
            if causes & (1 << v) == 0 || self.int_mask & (1 << v) == 0 {
                continue;
            }
            self.send_vector(v as usize);
        }
    }

    fn send_vector(&mut self, v: usize) {
        let Some(entry) = self.msix.get_mut(v) else {
            return;
        };
        if entry.masked {
            entry.pending = true;
        } else {
            entry.pending = false;
            self.vectors.push((v as u16, entry.data));
        }
    }

    /// Puts `ctx` in error: its queues stop, other contexts are untouched.
    pub(crate) fn ctx_error(&mut self, ctx: u32, reason: ErrorReason) {
        let Some(c) = self.contexts.get_mut(ctx as usize) else {
            return;
        };
        if c.error.is_none() {
            c.error = Some(reason);
        }
        for q in self.queues.iter_mut().filter(|q| q.ctx == ctx) {
            q.batch = None;
            if q.state == QueueState::Faulted {
                q.state = QueueState::Ready;
            }
        }
        self.raise(irq::CTX_ERROR);
    }

    /// Reports a fault: recoverable contexts stall the queue and log a record; others go
    /// into error (the record is logged too, marked fatal, for diagnostics).
    pub(crate) fn report_fault(&mut self, queue: usize, mut record: FaultRecord) {
        self.counters.faults += 1;
        let ctrl = self.contexts.get(record.ctx as usize).map_or(0, |c| c.ctrl);
        let recoverable = ctrl & ctx_ctrl::RECOVERABLE != 0;
        record.fatal = !recoverable;
        record.asid = (ctrl >> ctx_ctrl::ASID_SHIFT) as u16;
        // Bounded so that a driver that never drains (or never configures) the fault queue
        // cannot grow device memory without limit; the stalled queue still waits for a reply.
        if self.fq.pending.len() < crate::fault::MAX_PENDING {
            self.fq.pending.push_back(record);
        }
        if recoverable {
            if let Some(q) = self.queues.get_mut(queue) {
                q.state = QueueState::Faulted;
            }
        } else {
            self.ctx_error(record.ctx, ErrorReason::Fault);
        }
        self.flush_faults();
    }

    fn flush_faults(&mut self) -> bool {
        let (sys, vram) = self.mems();
        let mems = Memories {
            sys: &*sys,
            vram: &*vram,
        };
        let wrote = self.fq.flush(mems);
        if wrote {
            self.raise(irq::FAULT);
        }
        wrote
    }

    fn fault_reply(&mut self, value: u32) {
        let ctx = value & regs::fault_reply::CTX_MASK;
        if value & regs::fault_reply::ABORT != 0 {
            self.ctx_error(ctx, ErrorReason::Aborted);
            return;
        }
        for q in self.queues.iter_mut().filter(|q| q.ctx == ctx) {
            if q.state == QueueState::Faulted {
                q.state = QueueState::Ready;
            }
        }
    }

    fn engine_reset(&mut self, mask: u32) {
        let per = self.cfg.queues_per_engine as usize;
        for engine in 0..ENGINES {
            if mask & (1 << engine) == 0 {
                continue;
            }
            let mut hung = Vec::new();
            for i in engine * per..(engine + 1) * per {
                let Some(q) = self.queues.get_mut(i) else {
                    continue;
                };
                if q.state == QueueState::Hung {
                    hung.push(q.ctx);
                    q.head = q.tail;
                }
                q.reset();
            }
            for &ctx in &hung {
                self.ctx_error(ctx, ErrorReason::Reset);
            }
            if let Some(busy) = self.busy.get_mut(engine) {
                *busy = 0;
            }
            // The register names the first hung queue's context; all of them are in error.
            self.guilty[engine] = hung.first().copied().unwrap_or(regs::NO_CONTEXT);
        }
        self.raise(irq::RESET_DONE);
    }

    fn process_invalidations(&mut self) -> bool {
        let mut any = false;
        while let Some(req) = self.inv_pending.pop_front() {
            let ctx = req.ctx as u16;
            if req.full {
                self.mmu.invalidate_all(ctx);
            } else {
                self.mmu.invalidate_range(ctx, req.start, req.len);
            }
            self.inv_done_seqno = req.seqno;
            self.counters.invalidations += 1;
            any = true;
        }
        if any {
            self.raise(irq::TLB_INV_DONE);
        }
        any
    }

    /// Completes the preemption requests of every queue at a command boundary.
    fn process_preemptions(&mut self) -> bool {
        let mut any = false;
        for q in self.queues.iter_mut() {
            any |= q.complete_preempt();
        }
        if any {
            self.raise(irq::PREEMPT_DONE);
        }
        any
    }

    /// One device step: finish TLB invalidations, write pending fault records, complete
    /// preemption requests, let each engine retire at most one command, tick the timestamp.
    /// Returns whether anything moved.
    pub fn step(&mut self) -> bool {
        let mut progress = self.process_invalidations();
        progress |= self.flush_faults();
        progress |= self.process_preemptions();
        for engine in 0..ENGINES {
            match self.busy.get_mut(engine) {
                Some(busy) if *busy > 0 => {
                    *busy -= 1;
                    progress = true;
                }
                _ => progress |= self.step_engine(engine),
            }
        }
        self.timestamp = self.timestamp.wrapping_add(1);
        progress
    }

    /// Reads a BAR0 register (unknown or misaligned offsets read zero).
    pub fn mmio_read32(&mut self, offset: u32) -> u32 {
        if offset % 4 != 0 {
            return 0;
        }
        match offset {
            regs::ID => u32::from(crate::pci::VENDOR_ID) | (u32::from(crate::pci::DEVICE_ID) << 16),
            regs::REVISION => u32::from(crate::pci::REVISION_ID),
            regs::CAPS => {
                48 | (0xF << regs::caps::PAGE_SIZES_SHIFT)
                    | ((ENGINES as u32) << regs::caps::ENGINES_SHIFT)
                    | (self.cfg.queues_per_engine << regs::caps::QUEUES_SHIFT)
            }
            regs::NUM_CONTEXTS => self.cfg.contexts,
            regs::VRAM_SIZE_LO => self.cfg.vram_size as u32,
            regs::VRAM_SIZE_HI => (self.cfg.vram_size >> 32) as u32,
            regs::TIMESTAMP_LO => {
                self.ts_latch = (self.timestamp >> 32) as u32;
                self.timestamp as u32
            }
            regs::TIMESTAMP_HI => self.ts_latch,
            regs::INT_STATUS => self.int_status,
            regs::INT_MASK => self.int_mask,
            regs::GGTT_BASE_LO => self.ggtt[0],
            regs::GGTT_BASE_HI => self.ggtt[1],
            regs::TLB_INV_CTX..=regs::TLB_INV_LEN_HI => {
                let i = ((offset - regs::TLB_INV_CTX) / 4) as usize;
                self.inv_regs.get(i).copied().unwrap_or(0)
            }
            regs::TLB_INV_REQ_SEQNO => self.inv_req_seqno,
            regs::TLB_INV_DONE_SEQNO => self.inv_done_seqno,
            regs::FQ_BASE_LO..=regs::FQ_TAIL => self.fq.read(offset),
            o if (regs::RESET_GUILTY_CTX..regs::RESET_GUILTY_CTX + 4 * ENGINES as u32)
                .contains(&o) =>
            {
                let e = ((o - regs::RESET_GUILTY_CTX) / 4) as usize;
                self.guilty.get(e).copied().unwrap_or(regs::NO_CONTEXT)
            }
            o if (regs::COUNTERS..regs::COUNTERS + 8 * counter::COUNT).contains(&o) => {
                self.read_counter(o - regs::COUNTERS)
            }
            o if (regs::MSIX_TABLE..regs::MSIX_PBA).contains(&o) => self.read_msix(o),
            regs::MSIX_PBA => self
                .msix
                .iter()
                .enumerate()
                .fold(0, |acc, (i, e)| acc | (u32::from(e.pending) << i)),
            o if (regs::QUEUE_BASE..regs::MSIX_TABLE).contains(&o) => self.read_queue_reg(o),
            o if (regs::CTX_BASE..regs::QUEUE_BASE).contains(&o) => self.read_ctx_reg(o),
            _ => 0,
        }
    }

    fn read_counter(&self, rel: u32) -> u32 {
        let c = self.counters();
        let v = match rel / 8 {
            counter::PTE_READS => c.pte_reads,
            counter::TLB_HITS => c.tlb_hits,
            counter::TLB_MISSES => c.tlb_misses,
            counter::INVALIDATIONS => c.invalidations,
            counter::FAULTS => c.faults,
            counter::BYTES_COPIED => c.bytes_copied,
            counter::COMMANDS => c.commands,
            _ => 0,
        };
        if rel % 8 == 0 {
            v as u32
        } else {
            (v >> 32) as u32
        }
    }

    fn read_msix(&self, o: u32) -> u32 {
        let rel = o - regs::MSIX_TABLE;
        let Some(e) = self.msix.get((rel / regs::MSIX_ENTRY_SIZE) as usize) else {
            return 0;
        };
        match rel % regs::MSIX_ENTRY_SIZE {
            0 => e.addr_lo,
            4 => e.addr_hi,
            8 => e.data,
            _ => u32::from(e.masked),
        }
    }

    fn write_msix(&mut self, o: u32, value: u32) {
        let rel = o - regs::MSIX_TABLE;
        let v = (rel / regs::MSIX_ENTRY_SIZE) as usize;
        let Some(e) = self.msix.get_mut(v) else {
            return;
        };
        match rel % regs::MSIX_ENTRY_SIZE {
            0 => e.addr_lo = value,
            4 => e.addr_hi = value,
            8 => e.data = value,
            _ => {
                e.masked = value & 1 != 0;
                if !e.masked && e.pending {
                    self.send_vector(v);
                }
            }
        }
    }

    fn ctx_index(&self, o: u32) -> Option<(usize, u32)> {
        let rel = o - regs::CTX_BASE;
        let i = (rel / regs::CTX_STRIDE) as usize;
        (i < self.contexts.len()).then_some((i, rel % regs::CTX_STRIDE))
    }

    fn read_ctx_reg(&self, o: u32) -> u32 {
        let Some((i, reg)) = self.ctx_index(o) else {
            return 0;
        };
        let Some(c) = self.contexts.get(i) else {
            return 0;
        };
        match reg {
            regs::CTX_PT_BASE_LO => c.pt_lo,
            regs::CTX_PT_BASE_HI => c.pt_hi,
            regs::CTX_CTRL => c.ctrl,
            _ => c.error.map_or(0, |r| {
                ctx_status::ERROR | ((r as u32) << ctx_status::REASON_SHIFT)
            }),
        }
    }

    fn write_ctx_reg(&mut self, o: u32, value: u32) {
        let Some((i, reg)) = self.ctx_index(o) else {
            return;
        };
        let Some(c) = self.contexts.get_mut(i) else {
            return;
        };
        match reg {
            regs::CTX_PT_BASE_LO => c.pt_lo = value & !0xFFE,
            regs::CTX_PT_BASE_HI => c.pt_hi = value & 0xF_FFFF,
            regs::CTX_CTRL => {
                c.ctrl = value & (ctx_ctrl::ENABLE | ctx_ctrl::RECOVERABLE | ctx_ctrl::ASID_MASK)
            }
            _ => {
                if value & ctx_status::ERROR != 0 {
                    c.error = None;
                }
            }
        }
    }

    /// Writes a BAR0 register (read-only, unknown or misaligned offsets are ignored).
    /// Returns whether the write may give the device work (a request, doorbell, reply,
    /// reset, or queue/context/MSI-X change): only those wake the device thread. The
    /// parameter registers of a TLB invalidation and the interrupt status/mask start nothing.
    pub fn mmio_write32(&mut self, offset: u32, value: u32) -> bool {
        let passive = matches!(
            offset,
            regs::INT_STATUS | regs::INT_MASK | regs::TLB_INV_CTX..=regs::TLB_INV_LEN_HI
        );
        if !passive {
            self.kicks = self.kicks.wrapping_add(1);
        }
        if offset % 4 != 0 {
            return false;
        }
        match offset {
            regs::INT_STATUS => self.int_status &= !value,
            regs::INT_MASK => self.int_mask = value & ((1 << irq::COUNT) - 1),
            regs::GGTT_BASE_LO => self.ggtt[0] = value & !0xFFC,
            regs::GGTT_BASE_HI => self.ggtt[1] = value & 0xF_FFFF,
            regs::TLB_INV_CTX..=regs::TLB_INV_LEN_HI => {
                let i = ((offset - regs::TLB_INV_CTX) / 4) as usize;
                if let Some(r) = self.inv_regs.get_mut(i) {
                    *r = value;
                }
            }
            regs::TLB_INV_REQ => self.queue_invalidation(value & 1 != 0),
            regs::FQ_BASE_LO..=regs::FQ_TAIL => self.fq.write(offset, value),
            regs::FAULT_REPLY => self.fault_reply(value),
            regs::ENGINE_RESET => self.engine_reset(value),
            o if (regs::MSIX_TABLE..regs::MSIX_PBA).contains(&o) => self.write_msix(o, value),
            o if (regs::QUEUE_BASE..regs::MSIX_TABLE).contains(&o) => {
                self.write_queue_reg(o, value)
            }
            o if (regs::CTX_BASE..regs::QUEUE_BASE).contains(&o) => self.write_ctx_reg(o, value),
            _ => {}
        }
        !passive
    }

    fn queue_invalidation(&mut self, full: bool) {
        let [ctx, slo, shi, llo, lhi] = self.inv_regs;
        self.inv_req_seqno = self.inv_req_seqno.wrapping_add(1);
        self.inv_pending.push_back(InvRequest {
            seqno: self.inv_req_seqno,
            ctx,
            full,
            start: u64::from(slo) | (u64::from(shi) << 32),
            len: u64::from(llo) | (u64::from(lhi) << 32),
        });
    }

    /// Whether some queue is blocked on a semaphore (the device thread must poll memory).
    pub(crate) fn has_sem_waiters(&self) -> bool {
        self.queues.iter().any(|q| q.sem_wait)
    }
}
