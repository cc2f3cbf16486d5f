//! The engines: round-robin scheduling of hardware queues and command execution over the MMU.
//!
//! Owns: round-robin scheduling of an engine's queues, command fetch from rings (physical)
//! and batches (GPU VA), and what each command does. Must not: deliver interrupts or write fault records
//! itself; it asks the device (`raise`, `report_fault`, `ctx_error`).
//!
//! A command is atomic: every address it touches is translated before any byte moves, so a
//! command that faults has no effect and is re-executed whole after a retry.
//!
//! Batches started with `cmd::FLAG_INTEL` are Intel MI_* commands, run by `intel.rs`.

mod intel;

pub(crate) use intel::MiRegs;

use crate::cmd::{self, Command};
use crate::device::Device;
use crate::fault::FaultRecord;
use crate::mem::{Location, MemError, PhysMemory};
use crate::mmu::{Access, Memories, MmuFault};
use crate::queue::{Batch, Queue, QueueState};
use crate::regs::{ctx_ctrl, irq, ErrorReason, GGTT_CTX};

/// Number of engines.
pub const ENGINES: usize = 2;
/// The copy engine.
pub const ENGINE_COPY: usize = 0;
/// The compute engine.
pub const ENGINE_COMPUTE: usize = 1;

/// Bytes moved per internal transfer window of COPY/FILL/VECTOR_ADD.
const WINDOW: u64 = 64 << 10;
/// Largest COPY/FILL length: bounds the translation work of one command.
const MAX_TRANSFER: u64 = 1 << 32;
/// Largest VECTOR_ADD element count.
const MAX_VECTOR: u32 = 1 << 24;

/// What executing one command did.
enum Outcome {
    Retired,
    Blocked,
    Fault(MmuFault),
    Error(ErrorReason),
    EnterBatch {
        va: u64,
        len: u32,
        intel: bool,
    },
    /// The batch continues at `va` (an Intel BATCH_BUFFER_START).
    Jump {
        va: u64,
    },
    EndBatch,
    Hang,
}

/// A failed memory access inside a command.
enum AccessError {
    Fault(MmuFault),
    Dma,
}

impl From<AccessError> for Outcome {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Fault(f) => Outcome::Fault(f),
            AccessError::Dma => Outcome::Error(ErrorReason::Dma),
        }
    }
}

/// The address space a command's addresses are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Space {
    /// The queue's context's page tables: batch commands and unflagged ring commands.
    Ppgtt(u32),
    /// The global GTT: ring commands with `FLAG_GGTT` (privileged).
    Ggtt,
}

/// One physically contiguous piece of a translated VA range.
#[derive(Clone, Copy)]
struct Chunk {
    phys: u64,
    location: Location,
    null: bool,
    len: u64,
}

impl Device {
    /// Lets `engine` retire at most one command, trying its queues round-robin.
    pub(crate) fn step_engine(&mut self, engine: usize) -> bool {
        let per = self.cfg.queues_per_engine as usize;
        let start = self.rr.get(engine).copied().unwrap_or(0);
        for i in 0..per {
            let local = (start + i) % per;
            let index = engine * per + local;
            if self.runnable(index) && self.run_one(engine, index) {
                if let Some(rr) = self.rr.get_mut(engine) {
                    *rr = (local + 1) % per;
                }
                return true;
            }
        }
        false
    }

    fn runnable(&self, index: usize) -> bool {
        let Some(q) = self.queues.get(index) else {
            return false;
        };
        let ctx_ok = self
            .contexts
            .get(q.ctx as usize)
            .is_some_and(|c| c.error.is_none() && c.ctrl & ctx_ctrl::ENABLE != 0);
        q.enabled && !q.bad_ring && q.state == QueueState::Ready && q.has_work() && ctx_ok
    }

    /// Fetches and executes one command of queue `index`; returns whether it made progress.
    fn run_one(&mut self, engine: usize, index: usize) -> bool {
        let Some(q) = self.queues.get(index).cloned() else {
            return false;
        };
        if q.hang_next {
            if let Some(q) = self.queues.get_mut(index) {
                q.state = QueueState::Hung;
                q.hang_next = false;
            }
            return true;
        }
        let fetched = match q.batch {
            Some(b) if b.pos >= b.len => Ok(None),
            Some(b) => self.fetch_batch(q.ctx, b),
            None => self.fetch_ring(&q),
        };
        let (dwords, from_batch) = match fetched {
            Ok(Some(d)) => (d, q.batch.is_some()),
            Ok(None) if q.batch.is_some() => return self.finish_batch(index),
            Ok(None) => return false,
            Err(outcome) => return self.apply(engine, index, outcome, 0, true),
        };
        if q.batch.is_some_and(|b| b.intel) {
            let outcome = self.execute_mi(engine, index, q.ctx, &dwords);
            return self.apply(engine, index, outcome, dwords.len() as u32, true);
        }
        let ggtt = dwords
            .first()
            .is_some_and(|&hdr| cmd::flags(hdr) & cmd::FLAG_GGTT != 0);
        let outcome = match cmd::decode(&dwords) {
            Err(_) => Outcome::Error(ErrorReason::IllegalCommand),
            Ok(command) if !ggtt => {
                self.execute(engine, index, Space::Ppgtt(q.ctx), command, from_batch)
            }
            // The privilege check: a batch never reaches the GGTT, and a batch always runs in
            // its context's page tables.
            Ok(_) if from_batch => Outcome::Error(ErrorReason::IllegalCommand),
            Ok(Command::BatchStart { .. }) => Outcome::Error(ErrorReason::IllegalCommand),
            Ok(command) => match self.execute(engine, index, Space::Ggtt, command, false) {
                // The GGTT is the driver's: a hole in it is a driver bug no fault handler
                // can fix, so the context goes into error instead of stalling.
                Outcome::Fault(_) => Outcome::Error(ErrorReason::Fault),
                other => other,
            },
        };
        self.apply(engine, index, outcome, dwords.len() as u32, from_batch)
    }

    /// Applies an outcome to the queue; returns whether the queue made progress.
    fn apply(
        &mut self,
        engine: usize,
        index: usize,
        outcome: Outcome,
        len: u32,
        from_batch: bool,
    ) -> bool {
        let per = self.cfg.queues_per_engine as usize;
        let Some(q) = self.queues.get_mut(index) else {
            return false;
        };
        let ctx = q.ctx;
        q.sem_wait = false;
        match outcome {
            Outcome::Retired => {
                match (&mut q.batch, from_batch) {
                    (Some(b), true) => b.pos += len,
                    _ => q.head = (q.head + len * 4) & q.size.wrapping_sub(1),
                }
                self.counters.commands += 1;
            }
            Outcome::Blocked => {
                q.sem_wait = true;
                return false;
            }
            Outcome::EnterBatch { va, len, intel } => {
                q.batch = Some(Batch {
                    va,
                    pos: 0,
                    len,
                    intel,
                })
            }
            Outcome::Jump { va } => {
                if let Some(b) = &mut q.batch {
                    b.va = va;
                    b.pos = 0;
                }
                self.counters.commands += 1;
            }
            Outcome::EndBatch => return self.finish_batch(index),
            Outcome::Hang => q.state = QueueState::Hung,
            Outcome::Fault(f) => {
                let record = FaultRecord {
                    va: f.va,
                    ctx,
                    access: f.access,
                    reason: f.reason,
                    engine: engine as u32,
                    queue: (index % per) as u32,
                    fatal: false,
                    asid: 0, // the context's, filled in by `report_fault`
                };
                self.report_fault(index, record);
            }
            Outcome::Error(reason) => self.ctx_error(ctx, reason),
        }
        true
    }

    /// Ends the batch of queue `index` and retires its BATCH_START from the ring.
    fn finish_batch(&mut self, index: usize) -> bool {
        let Some(q) = self.queues.get_mut(index) else {
            return false;
        };
        q.batch = None;
        let len = cmd::len_of(cmd::op::BATCH_START).unwrap_or(4);
        q.head = (q.head + len * 4) & q.size.wrapping_sub(1);
        self.counters.commands += 1;
        true
    }

    /// Reads the next whole command from the ring, or `None` if it is not all there yet.
    fn fetch_ring(&mut self, q: &Queue) -> Result<Option<Vec<u32>>, Outcome> {
        if !q.ring_ok() {
            return Err(Outcome::Error(ErrorReason::BadRing));
        }
        let mem = match q.ring_location() {
            Location::System => self.sys.clone(),
            Location::Vram => self.vram.clone(),
        };
        let base = q.ring_base();
        let read = |i: u32| {
            let off = (q.head + i * 4) & q.size.wrapping_sub(1);
            base.checked_add(u64::from(off))
                .and_then(|addr| mem.load_u32(addr).ok())
                .ok_or(Outcome::Error(ErrorReason::Dma))
        };
        let hdr = read(0)?;
        let len = cmd::parse_header(hdr).map_or(1, |(_, len)| len);
        if len > q.available() {
            return Ok(None);
        }
        (0..len).map(read).collect::<Result<Vec<_>, _>>().map(Some)
    }

    /// Reads the next whole command of a batch through the MMU.
    fn fetch_batch(&mut self, ctx: u32, b: Batch) -> Result<Option<Vec<u32>>, Outcome> {
        // A wrapped VA is beyond 48 bits and faults in the MMU.
        let va = b.va.wrapping_add(u64::from(b.pos) * 4);
        let mut hdr = [0u8; 4];
        self.read_va(Space::Ppgtt(ctx), va, &mut hdr, Access::Fetch)?;
        let hdr = u32::from_le_bytes(hdr);
        // An unknown header is fetched alone: it decodes to an illegal command.
        let len = if b.intel {
            crate::mi::len_of(hdr).unwrap_or(1)
        } else {
            cmd::parse_header(hdr).map_or(1, |(_, len)| len)
        };
        if u64::from(b.pos) + u64::from(len) > u64::from(b.len) {
            return Err(Outcome::Error(ErrorReason::IllegalCommand));
        }
        let mut bytes = vec![0u8; len as usize * 4];
        self.read_va(Space::Ppgtt(ctx), va, &mut bytes, Access::Fetch)?;
        Ok(Some(
            bytes
                .chunks_exact(4)
                // PANIC: chunks_exact(4) yields slices of exactly 4 bytes.
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    fn execute(
        &mut self,
        engine: usize,
        index: usize,
        space: Space,
        command: Command,
        in_batch: bool,
    ) -> Outcome {
        let r = match command {
            Command::Noop => Ok(Outcome::Retired),
            Command::StoreDword { va, value } => self.write_va(space, va, &value.to_le_bytes()),
            Command::StoreQword { va, value } => self.write_va(space, va, &value.to_le_bytes()),
            Command::Copy { src, dst, len } => self.copy(space, src, dst, len),
            Command::Fill { dst, len, pattern } => self.fill(space, dst, len, pattern),
            Command::AtomicAdd { va, value, wide } => {
                self.atomic(space, va, wide, |m, a| atomic_add(m, a, value, wide))
            }
            Command::AtomicCmpxchg {
                va,
                current,
                new,
                wide,
            } => self.atomic(space, va, wide, |m, a| cmpxchg(m, a, current, new, wide)),
            Command::SemaphoreWait {
                va,
                op,
                value,
                wide,
            } => self.semaphore(space, va, op, value, wide),
            Command::BatchStart { .. } if in_batch => {
                Ok(Outcome::Error(ErrorReason::IllegalCommand))
            }
            Command::BatchStart { len_dwords, .. } if len_dwords > cmd::MAX_BATCH_DWORDS => {
                Ok(Outcome::Error(ErrorReason::IllegalCommand))
            }
            Command::BatchStart {
                va,
                len_dwords,
                intel,
            } => Ok(Outcome::EnterBatch {
                // Intel batches use canonical addresses: bits 63:48 are a sign extension.
                va: if intel { va & crate::mi::VA_MASK } else { va },
                len: len_dwords,
                intel,
            }),
            Command::BatchEnd if in_batch => Ok(Outcome::EndBatch),
            Command::BatchEnd => Ok(Outcome::Retired),
            Command::UserInterrupt { data } => {
                if let Some(q) = self.queues.get_mut(index) {
                    q.user_data = data;
                }
                self.raise(if engine == ENGINE_COPY {
                    irq::COPY_USER
                } else {
                    irq::COMPUTE_USER
                });
                Ok(Outcome::Retired)
            }
            Command::Timestamp { va } => self.write_va(space, va, &self.timestamp.to_le_bytes()),
            Command::VectorAdd { .. } if engine != ENGINE_COMPUTE => {
                Ok(Outcome::Error(ErrorReason::IllegalCommand))
            }
            Command::VectorAdd { a, b, c, count } => self.vector_add(space, a, b, c, count),
            Command::Hang => Ok(Outcome::Hang),
        };
        let outcome = r.unwrap_or_else(Outcome::from);
        if let (Outcome::Retired, Command::Copy { len, .. } | Command::Fill { len, .. }) =
            (&outcome, command)
        {
            self.charge_transfer(engine, len);
        }
        outcome
    }

    /// Cost model: the engine spends `ceil(len / rate)` steps on a transfer, this one included.
    fn charge_transfer(&mut self, engine: usize, len: u64) {
        let rate = self.cfg.copy_bytes_per_step;
        if rate == 0 {
            return;
        }
        if let Some(busy) = self.busy.get_mut(engine) {
            *busy = len.div_ceil(rate).saturating_sub(1);
        }
    }

    /// Translates `[va, va + len)` for `access` into physical chunks (all or nothing).
    fn translate_range(
        &mut self,
        space: Space,
        va: u64,
        len: u64,
        access: Access,
    ) -> Result<Vec<Chunk>, AccessError> {
        let (tag, root) = match space {
            Space::Ppgtt(ctx) => (
                ctx as u16,
                self.contexts.get(ctx as usize).map(|c| c.root()),
            ),
            Space::Ggtt => (GGTT_CTX as u16, self.ggtt_root()),
        };
        let root = root.ok_or(AccessError::Fault(MmuFault {
            va,
            access,
            reason: crate::mmu::FaultReason::NotPresent,
        }))?;
        let (sys, vram) = self.mems();
        let mems = Memories {
            sys: &*sys,
            vram: &*vram,
        };
        let mut chunks = Vec::new();
        let mut done = 0u64;
        while done < len {
            let cur = va.checked_add(done).ok_or(AccessError::Fault(MmuFault {
                va,
                access,
                reason: crate::mmu::FaultReason::BadEntry,
            }))?;
            let t = self
                .mmu
                .translate(mems, tag, root, cur, access)
                .map_err(AccessError::Fault)?;
            let n = t.remaining.min(len - done);
            self.mmu
                .freed
                .check((tag, cur, access), t.location, t.phys, n, t.cached_at);
            chunks.push(Chunk {
                phys: t.phys,
                location: t.location,
                null: t.null,
                len: n,
            });
            done += n;
        }
        Ok(chunks)
    }

    /// Reads `buf.len()` bytes at `va` (null pages read zero).
    fn read_va(
        &mut self,
        space: Space,
        va: u64,
        buf: &mut [u8],
        access: Access,
    ) -> Result<(), AccessError> {
        let chunks = self.translate_range(space, va, buf.len() as u64, access)?;
        self.gather(&chunks, 0, buf)
    }

    fn write_va(&mut self, space: Space, va: u64, data: &[u8]) -> Result<Outcome, AccessError> {
        let chunks = self.translate_range(space, va, data.len() as u64, Access::Write)?;
        self.scatter(&chunks, 0, data)?;
        Ok(Outcome::Retired)
    }

    /// Copies bytes `[offset, offset + buf.len())` of a chunk list into `buf`.
    fn gather(&self, chunks: &[Chunk], offset: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        self.walk_chunks(chunks, offset, buf.len() as u64, |c, phys, at, n| {
            let Some(dst) = buf.get_mut(at..at + n) else {
                return Ok(());
            };
            if c.null {
                dst.fill(0);
                return Ok(());
            }
            self.mem_at(c.location).read(phys, dst)
        })
    }

    /// Writes `data` at byte `offset` of a chunk list (null pages drop the bytes).
    fn scatter(&self, chunks: &[Chunk], offset: u64, data: &[u8]) -> Result<(), AccessError> {
        self.walk_chunks(
            chunks,
            offset,
            data.len() as u64,
            |c, phys, at, n| match data.get(at..at + n) {
                Some(src) if !c.null => self.mem_at(c.location).write(phys, src),
                _ => Ok(()),
            },
        )
    }

    /// Calls `f(chunk, phys, buffer offset, n)` for each piece of `[offset, offset + len)`.
    fn walk_chunks(
        &self,
        chunks: &[Chunk],
        offset: u64,
        len: u64,
        mut f: impl FnMut(&Chunk, u64, usize, usize) -> Result<(), MemError>,
    ) -> Result<(), AccessError> {
        let mut pos = 0u64; // start of the current chunk in the range
        let end = offset + len;
        for c in chunks {
            let (lo, hi) = (pos.max(offset), (pos + c.len).min(end));
            if lo < hi {
                f(
                    c,
                    c.phys + (lo - pos),
                    (lo - offset) as usize,
                    (hi - lo) as usize,
                )
                .map_err(|_| AccessError::Dma)?;
            }
            pos += c.len;
            if pos >= end {
                break;
            }
        }
        Ok(())
    }

    fn mem_at(&self, location: Location) -> &dyn PhysMemory {
        match location {
            Location::System => &*self.sys,
            Location::Vram => &*self.vram,
        }
    }

    fn copy(&mut self, space: Space, src: u64, dst: u64, len: u64) -> Result<Outcome, AccessError> {
        if len > MAX_TRANSFER {
            return Ok(Outcome::Error(ErrorReason::IllegalCommand));
        }
        let from = self.translate_range(space, src, len, Access::Read)?;
        let to = self.translate_range(space, dst, len, Access::Write)?;
        let mut buf = vec![0u8; WINDOW.min(len) as usize];
        let mut off = 0;
        while off < len {
            let n = WINDOW.min(len - off) as usize;
            let window = buf.get_mut(..n).unwrap_or_default();
            self.gather(&from, off, window)?;
            self.scatter(&to, off, window)?;
            off += n as u64;
        }
        self.counters.bytes_copied += len;
        Ok(Outcome::Retired)
    }

    fn fill(
        &mut self,
        space: Space,
        dst: u64,
        len: u64,
        pattern: u32,
    ) -> Result<Outcome, AccessError> {
        if len > MAX_TRANSFER {
            return Ok(Outcome::Error(ErrorReason::IllegalCommand));
        }
        let to = self.translate_range(space, dst, len, Access::Write)?;
        let pat = pattern.to_le_bytes();
        let mut off = 0;
        while off < len {
            let n = WINDOW.min(len - off) as usize;
            // The pattern is anchored at `dst`: byte k of the fill is pat[k % 4].
            // PANIC: the index is taken modulo the 4-byte pattern length.
            let window: Vec<u8> = (0..n).map(|k| pat[((off as usize) + k) % 4]).collect();
            self.scatter(&to, off, &window)?;
            off += n as u64;
        }
        self.counters.bytes_copied += len;
        Ok(Outcome::Retired)
    }

    fn atomic(
        &mut self,
        space: Space,
        va: u64,
        wide: bool,
        op: impl FnOnce(&dyn PhysMemory, u64) -> Result<(), MemError>,
    ) -> Result<Outcome, AccessError> {
        let size = if wide { 8 } else { 4 };
        if va % size != 0 {
            return Ok(Outcome::Error(ErrorReason::IllegalCommand));
        }
        let chunks = self.translate_range(space, va, size, Access::Atomic)?;
        let Some(c) = chunks.first() else {
            return Ok(Outcome::Retired);
        };
        if !c.null {
            op(self.mem_at(c.location), c.phys).map_err(|_| AccessError::Dma)?;
        }
        Ok(Outcome::Retired)
    }

    fn semaphore(
        &mut self,
        space: Space,
        va: u64,
        op: u8,
        value: u64,
        wide: bool,
    ) -> Result<Outcome, AccessError> {
        let mut buf = [0u8; 8];
        let n = if wide { 8 } else { 4 };
        let slot = buf.get_mut(..n).unwrap_or_default();
        self.read_va(space, va, slot, Access::Read)?;
        let mem = u64::from_le_bytes(buf);
        Ok(if cmd::sem_satisfied(op, mem, value) {
            Outcome::Retired
        } else {
            Outcome::Blocked
        })
    }

    fn vector_add(
        &mut self,
        space: Space,
        a: u64,
        b: u64,
        c: u64,
        count: u32,
    ) -> Result<Outcome, AccessError> {
        if count > MAX_VECTOR {
            return Ok(Outcome::Error(ErrorReason::IllegalCommand));
        }
        let bytes = u64::from(count) * 4;
        let ta = self.translate_range(space, a, bytes, Access::Read)?;
        let tb = self.translate_range(space, b, bytes, Access::Read)?;
        let tc = self.translate_range(space, c, bytes, Access::Write)?;
        let mut off = 0;
        while off < bytes {
            let n = WINDOW.min(bytes - off) as usize;
            let (mut x, mut y) = (vec![0u8; n], vec![0u8; n]);
            self.gather(&ta, off, &mut x)?;
            self.gather(&tb, off, &mut y)?;
            for (xs, ys) in x.chunks_exact_mut(4).zip(y.chunks_exact(4)) {
                // PANIC: chunks_exact(4) yields slices of exactly 4 bytes.
                let sum = u32::from_le_bytes([xs[0], xs[1], xs[2], xs[3]])
                    .wrapping_add(u32::from_le_bytes([ys[0], ys[1], ys[2], ys[3]]));
                xs.copy_from_slice(&sum.to_le_bytes());
            }
            self.scatter(&tc, off, &x)?;
            off += n as u64;
        }
        Ok(Outcome::Retired)
    }
}

/// ATOMIC_ADD on memory: 64-bit, or 32-bit with the low dword of `value`.
fn atomic_add(m: &dyn PhysMemory, addr: u64, value: u64, wide: bool) -> Result<(), MemError> {
    if wide {
        m.fetch_add_u64(addr, value).map(|_| ())
    } else {
        m.fetch_add_u32(addr, value as u32).map(|_| ())
    }
}

/// ATOMIC_CMPXCHG on memory; a failed compare is not an error.
fn cmpxchg(
    m: &dyn PhysMemory,
    addr: u64,
    current: u64,
    new: u64,
    wide: bool,
) -> Result<(), MemError> {
    if wide {
        m.compare_exchange_u64(addr, current, new).map(|_| ())
    } else {
        m.compare_exchange_u32(addr, current as u32, new as u32)
            .map(|_| ())
    }
}
