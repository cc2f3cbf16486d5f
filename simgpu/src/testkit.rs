//! A minimal "driver" for exercising the device: memory bump allocation, page-table writing,
//! queue setup and submission, an interrupt log.
//!
//! Owns: test and benchmark plumbing for simgpu's own suite and `gpu-bench simgpu`. It goes
//! through registers and memory only, like a driver would. Must not: be used by gpud, whose
//! hardware layer has its own register and PTE declarations (that independence is what lets
//! tests catch a disagreement between driver and device).
//!
//! PANIC: every `expect`/`assert!` here is a test failure by design (misused rig, exhausted
//! test memory); no device or client data reaches them.

use crate::device::Config;
use crate::gpu::{InterruptSink, SimGpu};
use crate::mem::{HeapMemory, Location, PhysMemory};
use crate::pte;
use crate::regs::{self, ctx_ctrl};
use parking_lot::Mutex;
use std::sync::Arc;

/// 4 KiB.
pub const PAGE: u64 = 4096;

/// Records every interrupt message.
#[derive(Default)]
pub struct IrqLog {
    /// (vector, data) in delivery order.
    pub events: Mutex<Vec<(u16, u32)>>,
}

impl InterruptSink for IrqLog {
    fn interrupt(&self, vector: u16, data: u32) {
        self.events.lock().push((vector, data));
    }
}

impl IrqLog {
    /// How many times `vector` fired.
    pub fn count(&self, vector: u16) -> usize {
        self.events
            .lock()
            .iter()
            .filter(|(v, _)| *v == vector)
            .count()
    }
}

/// Flags of a leaf mapping written by [`Rig::map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapFlags {
    /// Writable.
    pub writable: bool,
    /// Target memory.
    pub location: Location,
    /// Null/sparse page.
    pub null: bool,
}

impl MapFlags {
    /// Writable system memory.
    pub const SYS_RW: Self = Self {
        writable: true,
        location: Location::System,
        null: false,
    };
    /// Writable VRAM.
    pub const VRAM_RW: Self = Self {
        writable: true,
        location: Location::Vram,
        null: false,
    };
}

/// A device plus a tiny driver for it. Page tables live in system memory.
pub struct Rig {
    /// The device.
    pub gpu: SimGpu,
    /// Its system memory.
    pub sys: Arc<HeapMemory>,
    /// Interrupts received.
    pub irqs: Arc<IrqLog>,
    next_sys: u64,
    next_vram: u64,
    roots: Vec<Option<u64>>,
    ggtt_root: Option<u64>,
    tails: Vec<u32>,
    ring_size: u32,
}

impl Rig {
    /// A device with `sys_bytes` of system memory, all interrupt causes enabled.
    pub fn new(sys_bytes: u64) -> Self {
        Self::with_config(Config::default(), sys_bytes)
    }

    /// Same, with an explicit device configuration.
    pub fn with_config(cfg: Config, sys_bytes: u64) -> Self {
        let sys = Arc::new(HeapMemory::new(sys_bytes));
        let gpu = SimGpu::new(cfg, sys.clone());
        let irqs = Arc::new(IrqLog::default());
        gpu.set_interrupt_sink(irqs.clone());
        for v in 0..regs::irq::COUNT {
            gpu.mmio_write32(regs::MSIX_TABLE + v * regs::MSIX_ENTRY_SIZE + 8, 0x100 + v);
        }
        gpu.mmio_write32(regs::INT_MASK, (1 << regs::irq::COUNT) - 1);
        let cfg = gpu.config();
        Self {
            gpu,
            sys,
            irqs,
            next_sys: PAGE,
            next_vram: 0,
            roots: vec![None; cfg.contexts as usize],
            ggtt_root: None,
            tails: vec![0; 2 * cfg.queues_per_engine as usize],
            ring_size: 64 << 10,
        }
    }

    /// Allocates zeroed, `align`-aligned system memory (bump allocator; never freed).
    pub fn alloc_sys(&mut self, bytes: u64, align: u64) -> u64 {
        let at = self.next_sys.next_multiple_of(align.max(PAGE));
        self.next_sys = at + bytes.next_multiple_of(PAGE);
        assert!(
            self.next_sys <= self.sys.size(),
            "testkit: out of system memory"
        );
        at
    }

    /// Allocates `align`-aligned VRAM (bump allocator).
    pub fn alloc_vram(&mut self, bytes: u64, align: u64) -> u64 {
        let at = self.next_vram.next_multiple_of(align.max(PAGE));
        self.next_vram = at + bytes.next_multiple_of(PAGE);
        at
    }

    /// Creates context `ctx` with an empty root table and enables it.
    pub fn context(&mut self, ctx: u32, recoverable: bool) -> u64 {
        let root = self.alloc_sys(PAGE, PAGE);
        self.roots[ctx as usize] = Some(root);
        self.gpu
            .mmio_write32(regs::ctx_reg(ctx, regs::CTX_PT_BASE_LO), root as u32);
        self.gpu.mmio_write32(
            regs::ctx_reg(ctx, regs::CTX_PT_BASE_HI),
            (root >> 32) as u32,
        );
        let mode = if recoverable {
            ctx_ctrl::RECOVERABLE
        } else {
            0
        };
        self.gpu
            .mmio_write32(regs::ctx_reg(ctx, regs::CTX_CTRL), ctx_ctrl::ENABLE | mode);
        root
    }

    /// Creates the global GTT with an empty root table and enables it; map into it with
    /// context id [`regs::GGTT_CTX`].
    pub fn ggtt(&mut self) -> u64 {
        let root = self.alloc_sys(PAGE, PAGE);
        self.ggtt_root = Some(root);
        self.gpu
            .mmio_write32(regs::GGTT_BASE_HI, (root >> 32) as u32);
        self.gpu
            .mmio_write32(regs::GGTT_BASE_LO, root as u32 | regs::GGTT_ENABLE);
        root
    }

    fn root_of(&self, ctx: u32) -> u64 {
        let root = if ctx == regs::GGTT_CTX {
            self.ggtt_root
        } else {
            self.roots[ctx as usize]
        };
        root.expect("testkit: context not created")
    }

    /// Writes a leaf entry for `va` at `level` (0 = 4K, 1 = 2M, 2 = 1G), allocating tables.
    pub fn map(&mut self, ctx: u32, va: u64, pa: u64, level: u32, flags: MapFlags) {
        let leaf = Self::leaf_bits(pa, level, flags);
        self.write_entry(ctx, va, level, leaf);
    }

    /// The raw leaf entry [`Rig::map`] writes.
    pub fn leaf_bits(pa: u64, level: u32, flags: MapFlags) -> u64 {
        let mut e = pte::VALID | (pa & pte::ADDR_MASK);
        if flags.writable {
            e |= pte::WRITABLE;
        }
        if flags.location == Location::Vram {
            e |= pte::LOCATION_VRAM;
        }
        if flags.null {
            e |= pte::NULL;
        }
        if level > 0 {
            e |= pte::LEAF;
        }
        e
    }

    /// Writes `raw` as the entry for `va` at `level`, allocating intermediate tables.
    pub fn write_entry(&mut self, ctx: u32, va: u64, level: u32, raw: u64) {
        let mut table = self.root_of(ctx);
        for l in (level + 1..pte::LEVELS).rev() {
            let slot = table + ((va >> pte::level_shift(l)) & 511) * 8;
            let e = self.sys.load_u64(slot).expect("testkit: table in range");
            table = if e & pte::VALID != 0 {
                e & pte::ADDR_MASK
            } else {
                let t = self.alloc_sys(PAGE, PAGE);
                self.sys
                    .store_u64(slot, t | pte::VALID)
                    .expect("testkit: table in range");
                t
            };
        }
        let slot = table + ((va >> pte::level_shift(level)) & 511) * 8;
        self.sys
            .store_u64(slot, raw)
            .expect("testkit: table in range");
    }

    /// Maps `[va, va + len)` to fresh system memory with 4K pages; returns its physical base.
    pub fn map_new_sys(&mut self, ctx: u32, va: u64, len: u64) -> u64 {
        let pa = self.alloc_sys(len, PAGE);
        for off in (0..len).step_by(PAGE as usize) {
            self.map(ctx, va + off, pa + off, 0, MapFlags::SYS_RW);
        }
        pa
    }

    /// Sets up queue `queue` of `engine` on context `ctx` with a ring in system memory.
    pub fn queue(&mut self, engine: usize, queue: usize, ctx: u32) {
        let idx = self.qindex(engine, queue);
        let ring = self.alloc_sys(u64::from(self.ring_size), PAGE);
        let r = |reg| regs::queue_reg(idx as u32, reg);
        self.gpu.mmio_write32(r(regs::Q_CTRL), 0);
        self.gpu.mmio_write32(r(regs::Q_RING_BASE_LO), ring as u32);
        self.gpu
            .mmio_write32(r(regs::Q_RING_BASE_HI), (ring >> 32) as u32);
        self.gpu.mmio_write32(r(regs::Q_RING_SIZE), self.ring_size);
        self.gpu.mmio_write32(r(regs::Q_HEAD), 0);
        self.gpu.mmio_write32(r(regs::Q_TAIL), 0);
        self.gpu.mmio_write32(r(regs::Q_CTX), ctx);
        self.gpu.mmio_write32(r(regs::Q_CTRL), 1);
        self.tails[idx] = 0;
    }

    /// Index of a queue's register block.
    pub fn qindex(&self, engine: usize, queue: usize) -> usize {
        engine * self.gpu.config().queues_per_engine as usize + queue
    }

    /// Reads a register of a queue.
    pub fn qreg(&self, engine: usize, queue: usize, reg: u32) -> u32 {
        let idx = self.qindex(engine, queue) as u32;
        self.gpu.mmio_read32(regs::queue_reg(idx, reg))
    }

    /// Appends `dwords` to a queue's ring, moves the tail and rings the doorbell.
    pub fn submit(&mut self, engine: usize, queue: usize, dwords: &[u32]) {
        let idx = self.qindex(engine, queue);
        let r = |reg| regs::queue_reg(idx as u32, reg);
        let base = u64::from(self.gpu.mmio_read32(r(regs::Q_RING_BASE_LO)) & !0xFFF)
            | (u64::from(self.gpu.mmio_read32(r(regs::Q_RING_BASE_HI))) << 32);
        let mut tail = self.tails[idx];
        for d in dwords {
            self.sys
                .store_u32(base + u64::from(tail), *d)
                .expect("testkit: ring in range");
            tail = (tail + 4) % self.ring_size;
        }
        self.tails[idx] = tail;
        self.gpu.mmio_write32(r(regs::Q_TAIL), tail);
        self.gpu.mmio_write32(r(regs::Q_DOORBELL), 1);
    }

    /// Asks a queue to preempt itself at its next command boundary.
    pub fn preempt(&self, engine: usize, queue: usize) {
        let idx = self.qindex(engine, queue) as u32;
        self.gpu
            .mmio_write32(regs::queue_reg(idx, regs::Q_PREEMPT), 1);
    }

    /// Moves a stopped queue's state (ring, position, batch cursor, context) to queue `to`
    /// of the same engine (disabled first, its own ring abandoned) and enables it there, as
    /// a driver resuming a preempted context on another hardware queue would.
    pub fn move_queue(&mut self, engine: usize, from: usize, to: usize) {
        let (src, dst) = (self.qindex(engine, from), self.qindex(engine, to));
        self.gpu
            .mmio_write32(regs::queue_reg(dst as u32, regs::Q_CTRL), 0);
        let cursor = [
            regs::Q_RING_BASE_LO,
            regs::Q_RING_BASE_HI,
            regs::Q_RING_SIZE,
            regs::Q_HEAD,
            regs::Q_TAIL,
            regs::Q_CTX,
            regs::Q_BATCH_VA_LO,
            regs::Q_BATCH_VA_HI,
            regs::Q_BATCH_POS,
            regs::Q_BATCH_LEN,
        ];
        for reg in cursor {
            let v = self.gpu.mmio_read32(regs::queue_reg(src as u32, reg));
            self.gpu.mmio_write32(regs::queue_reg(dst as u32, reg), v);
        }
        self.gpu
            .mmio_write32(regs::queue_reg(dst as u32, regs::Q_CTRL), 1);
        self.tails[dst] = self.tails[src];
    }

    /// Queues a TLB invalidation (full if `range` is `None`) and returns its seqno.
    pub fn invalidate(&self, ctx: u32, range: Option<(u64, u64)>) -> u32 {
        let (start, len) = range.unwrap_or((0, 0));
        self.gpu.mmio_write32(regs::TLB_INV_CTX, ctx);
        self.gpu.mmio_write32(regs::TLB_INV_START_LO, start as u32);
        self.gpu
            .mmio_write32(regs::TLB_INV_START_HI, (start >> 32) as u32);
        self.gpu.mmio_write32(regs::TLB_INV_LEN_LO, len as u32);
        self.gpu
            .mmio_write32(regs::TLB_INV_LEN_HI, (len >> 32) as u32);
        self.gpu
            .mmio_write32(regs::TLB_INV_REQ, u32::from(range.is_none()));
        self.gpu.mmio_read32(regs::TLB_INV_REQ_SEQNO)
    }

    /// Sets up a fault queue of `entries` records in system memory; returns its base.
    pub fn fault_queue(&mut self, entries: u32) -> u64 {
        let base = self.alloc_sys(u64::from(entries) * 16, PAGE);
        self.gpu.mmio_write32(regs::FQ_BASE_LO, base as u32);
        self.gpu.mmio_write32(regs::FQ_BASE_HI, (base >> 32) as u32);
        self.gpu.mmio_write32(regs::FQ_SIZE, entries);
        base
    }

    /// Context status register.
    pub fn ctx_status(&self, ctx: u32) -> u32 {
        self.gpu.mmio_read32(regs::ctx_reg(ctx, regs::CTX_STATUS))
    }

    /// Reads `len` bytes of system memory.
    pub fn read_sys(&self, pa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.sys.read(pa, &mut v).expect("testkit: read in range");
        v
    }
}

/// A property test's case count: `PROPTEST_CASES` when it is set (CI and long runs govern
/// every property test through it, as they do those on proptest's default), else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Command builders (encodings from [`crate::cmd`]).
pub mod enc {
    use crate::cmd::{header, op, FLAG_64, SEM_FLAG_64};

    fn lo(v: u64) -> u32 {
        v as u32
    }
    fn hi(v: u64) -> u32 {
        (v >> 32) as u32
    }
    /// NOOP.
    pub fn noop() -> Vec<u32> {
        vec![header(op::NOOP, 0)]
    }
    /// STORE_DWORD.
    pub fn store_dword(va: u64, value: u32) -> Vec<u32> {
        vec![header(op::STORE_DWORD, 0), lo(va), hi(va), value]
    }
    /// STORE_QWORD.
    pub fn store_qword(va: u64, value: u64) -> Vec<u32> {
        vec![
            header(op::STORE_QWORD, 0),
            lo(va),
            hi(va),
            lo(value),
            hi(value),
        ]
    }
    /// COPY.
    pub fn copy(src: u64, dst: u64, len: u64) -> Vec<u32> {
        vec![
            header(op::COPY, 0),
            lo(src),
            hi(src),
            lo(dst),
            hi(dst),
            lo(len),
            hi(len),
        ]
    }
    /// FILL.
    pub fn fill(dst: u64, len: u64, pattern: u32) -> Vec<u32> {
        vec![
            header(op::FILL, 0),
            lo(dst),
            hi(dst),
            lo(len),
            hi(len),
            pattern,
        ]
    }
    /// ATOMIC_ADD.
    pub fn atomic_add(va: u64, value: u64, wide: bool) -> Vec<u32> {
        let f = if wide { FLAG_64 } else { 0 };
        vec![
            header(op::ATOMIC_ADD, f),
            lo(va),
            hi(va),
            lo(value),
            hi(value),
        ]
    }
    /// ATOMIC_CMPXCHG.
    pub fn cmpxchg(va: u64, current: u64, new: u64, wide: bool) -> Vec<u32> {
        let f = if wide { FLAG_64 } else { 0 };
        vec![
            header(op::ATOMIC_CMPXCHG, f),
            lo(va),
            hi(va),
            lo(current),
            hi(current),
            lo(new),
            hi(new),
        ]
    }
    /// SEMAPHORE_WAIT (64-bit compare).
    pub fn sem_wait(va: u64, sem_op: u8, value: u64) -> Vec<u32> {
        vec![
            header(op::SEMAPHORE_WAIT, sem_op | SEM_FLAG_64),
            lo(va),
            hi(va),
            lo(value),
            hi(value),
        ]
    }
    /// BATCH_START.
    pub fn batch_start(va: u64, len_dwords: u32) -> Vec<u32> {
        vec![header(op::BATCH_START, 0), lo(va), hi(va), len_dwords]
    }
    /// BATCH_END.
    pub fn batch_end() -> Vec<u32> {
        vec![header(op::BATCH_END, 0)]
    }
    /// USER_INTERRUPT.
    pub fn user_interrupt(data: u32) -> Vec<u32> {
        vec![header(op::USER_INTERRUPT, 0), data]
    }
    /// TIMESTAMP.
    pub fn timestamp(va: u64) -> Vec<u32> {
        vec![header(op::TIMESTAMP, 0), lo(va), hi(va)]
    }
    /// VECTOR_ADD.
    pub fn vector_add(a: u64, b: u64, c: u64, count: u32) -> Vec<u32> {
        vec![
            header(op::VECTOR_ADD, 0),
            lo(a),
            hi(a),
            lo(b),
            hi(b),
            lo(c),
            hi(c),
            count,
        ]
    }
    /// `command` with its addresses in the global GTT (privileged: ring only).
    pub fn ggtt(mut command: Vec<u32>) -> Vec<u32> {
        if let Some(hdr) = command.first_mut() {
            *hdr |= u32::from(crate::cmd::FLAG_GGTT) << 8;
        }
        command
    }
    /// HANG (test-only).
    pub fn hang() -> Vec<u32> {
        vec![header(op::HANG, 0)]
    }
}
