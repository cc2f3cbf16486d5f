//! Command encoding for simgpu engines: the driver's declaration of the command set and a
//! builder for command streams (ring contents and batch buffers).
//!
//! Owns: opcodes, lengths and operand order (from the device manual). Must not: submit
//! anything; rings are `HwQueue`'s job. A test decodes every builder with the device's own
//! decoder, so a disagreement between driver and manual is caught.

use crate::types::GpuVa;

/// Header dword: opcode (7:0), flags (15:8), total length in dwords (31:16).
const fn header(opcode: u8, flags: u8, len: u32) -> u32 {
    (len << 16) | ((flags as u32) << 8) | opcode as u32
}

/// Opcodes and their lengths in dwords.
mod op {
    pub const NOOP: (u8, u32) = (0x00, 1);
    pub const STORE_DWORD: (u8, u32) = (0x01, 4);
    pub const STORE_QWORD: (u8, u32) = (0x02, 5);
    pub const COPY: (u8, u32) = (0x03, 7);
    pub const FILL: (u8, u32) = (0x04, 6);
    pub const ATOMIC_ADD: (u8, u32) = (0x05, 5);
    pub const ATOMIC_CMPXCHG: (u8, u32) = (0x06, 7);
    pub const SEMAPHORE_WAIT: (u8, u32) = (0x07, 5);
    pub const BATCH_START: (u8, u32) = (0x08, 4);
    pub const USER_INTERRUPT: (u8, u32) = (0x09, 2);
    pub const BATCH_END: (u8, u32) = (0x0A, 1);
    pub const TIMESTAMP: (u8, u32) = (0x0B, 3);
    pub const VECTOR_ADD: (u8, u32) = (0x0C, 8);
}

/// Flag of atomics: 64-bit operand.
const FLAG_WIDE: u8 = 1 << 0;
/// Flag of SEMAPHORE_WAIT: 64-bit compare.
const SEM_WIDE: u8 = 1 << 3;
/// Flag of any command: its addresses are in the global GTT (privileged: ring only).
const FLAG_GGTT: u8 = 1 << 7;
/// Flag of BATCH_START: the batch is Intel MI_* commands.
const FLAG_INTEL: u8 = 1 << 0;

/// How a batch is encoded: the device decodes it as the ring's BATCH_START says, so the
/// choice is the driver's (per exec queue), never the batch's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BatchFormat {
    /// simgpu's own command set.
    #[default]
    Native,
    /// Intel MI_* commands (the device manual's Intel command mode).
    Intel,
}

/// SEMAPHORE_WAIT comparison (`memory OP value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SemOp {
    /// Equal.
    Eq = 0,
    /// Not equal.
    Ne = 1,
    /// Greater or equal (unsigned).
    Gte = 2,
    /// Less than (unsigned).
    Lt = 3,
}

/// Operand width of atomics and semaphores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// 32-bit.
    U32,
    /// 64-bit.
    U64,
}

/// A command stream under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStream {
    dwords: Vec<u32>,
}

fn split(v: u64) -> [u32; 2] {
    [v as u32, (v >> 32) as u32]
}

impl CommandStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, (opcode, len): (u8, u32), flags: u8, operands: &[u32]) -> &mut Self {
        self.dwords.push(header(opcode, flags, len));
        self.dwords.extend_from_slice(operands);
        self
    }

    /// NOOP.
    pub fn noop(&mut self) -> &mut Self {
        self.push(op::NOOP, 0, &[])
    }

    /// Stores a u32 at `va`.
    pub fn store_dword(&mut self, va: GpuVa, value: u32) -> &mut Self {
        let [lo, hi] = split(va.0);
        self.push(op::STORE_DWORD, 0, &[lo, hi, value])
    }

    /// Stores a u64 at `va` (the usual fence write).
    pub fn store_qword(&mut self, va: GpuVa, value: u64) -> &mut Self {
        let ([a, b], [c, d]) = (split(va.0), split(value));
        self.push(op::STORE_QWORD, 0, &[a, b, c, d])
    }

    /// Stores a u64 at `va` of the global GTT: the fence write of a job, into a page no
    /// client's page tables map. Privileged: only valid on a ring, never in a batch.
    pub fn ggtt_store_qword(&mut self, va: GpuVa, value: u64) -> &mut Self {
        let ([a, b], [c, d]) = (split(va.0), split(value));
        self.push(op::STORE_QWORD, FLAG_GGTT, &[a, b, c, d])
    }

    /// Copies `len` bytes from `src` to `dst` (ranges must not overlap).
    pub fn copy(&mut self, src: GpuVa, dst: GpuVa, len: u64) -> &mut Self {
        let ([a, b], [c, d], [e, f]) = (split(src.0), split(dst.0), split(len));
        self.push(op::COPY, 0, &[a, b, c, d, e, f])
    }

    /// Fills `len` bytes at `dst` with the little-endian `pattern`, anchored at `dst`.
    pub fn fill(&mut self, dst: GpuVa, len: u64, pattern: u32) -> &mut Self {
        let ([a, b], [c, d]) = (split(dst.0), split(len));
        self.push(op::FILL, 0, &[a, b, c, d, pattern])
    }

    /// Atomic add at `va`.
    pub fn atomic_add(&mut self, va: GpuVa, value: u64, width: Width) -> &mut Self {
        let ([a, b], [c, d]) = (split(va.0), split(value));
        self.push(op::ATOMIC_ADD, wide(width), &[a, b, c, d])
    }

    /// Atomic compare-exchange at `va`.
    pub fn atomic_cmpxchg(&mut self, va: GpuVa, current: u64, new: u64, width: Width) -> &mut Self {
        let ([a, b], [c, d], [e, f]) = (split(va.0), split(current), split(new));
        self.push(op::ATOMIC_CMPXCHG, wide(width), &[a, b, c, d, e, f])
    }

    /// Waits until `memory[va] OP value`.
    pub fn semaphore_wait(&mut self, va: GpuVa, sem: SemOp, value: u64, width: Width) -> &mut Self {
        let ([a, b], [c, d]) = (split(va.0), split(value));
        let flags = sem as u8 | if width == Width::U64 { SEM_WIDE } else { 0 };
        self.push(op::SEMAPHORE_WAIT, flags, &[a, b, c, d])
    }

    /// Runs the batch of `len_dwords` dwords at `va` (from a ring only; batches do not nest).
    pub fn batch_start(&mut self, va: GpuVa, len_dwords: u32) -> &mut Self {
        self.batch_start_as(va, len_dwords, BatchFormat::Native)
    }

    /// Runs the batch at `va`, decoded as `format`.
    pub fn batch_start_as(&mut self, va: GpuVa, len_dwords: u32, format: BatchFormat) -> &mut Self {
        let [a, b] = split(va.0);
        let flags = match format {
            BatchFormat::Native => 0,
            BatchFormat::Intel => FLAG_INTEL,
        };
        self.push(op::BATCH_START, flags, &[a, b, len_dwords])
    }

    /// Ends the current batch.
    pub fn batch_end(&mut self) -> &mut Self {
        self.push(op::BATCH_END, 0, &[])
    }

    /// Raises the engine's user interrupt with `data` latched in the queue.
    pub fn user_interrupt(&mut self, data: u32) -> &mut Self {
        self.push(op::USER_INTERRUPT, 0, &[data])
    }

    /// Writes the 64-bit timestamp counter to `va`.
    pub fn timestamp(&mut self, va: GpuVa) -> &mut Self {
        let [a, b] = split(va.0);
        self.push(op::TIMESTAMP, 0, &[a, b])
    }

    /// `c[i] = a[i] + b[i]` over `count` u32 elements (compute engine only).
    pub fn vector_add(&mut self, a: GpuVa, b: GpuVa, c: GpuVa, count: u32) -> &mut Self {
        let ([a0, a1], [b0, b1], [c0, c1]) = (split(a.0), split(b.0), split(c.0));
        self.push(op::VECTOR_ADD, 0, &[a0, a1, b0, b1, c0, c1, count])
    }

    /// The encoded dwords.
    pub fn dwords(&self) -> &[u32] {
        &self.dwords
    }

    /// Length in dwords.
    pub fn len(&self) -> usize {
        self.dwords.len()
    }

    /// Whether nothing was encoded.
    pub fn is_empty(&self) -> bool {
        self.dwords.is_empty()
    }

    /// The stream as little-endian bytes (for a batch buffer in memory).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.dwords.iter().flat_map(|d| d.to_le_bytes()).collect()
    }
}

fn wide(width: Width) -> u8 {
    match width {
        Width::U32 => 0,
        Width::U64 => FLAG_WIDE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use simgpu::cmd::{decode, parse_header, Command};

    /// Decodes a whole stream with the device's decoder.
    fn device_decode(s: &CommandStream) -> Vec<Command> {
        let mut out = Vec::new();
        let mut d = s.dwords();
        while let Some(&hdr) = d.first() {
            let (_, len) = parse_header(hdr).unwrap();
            out.push(decode(d).unwrap());
            d = &d[len as usize..];
        }
        out
    }

    proptest! {
        #[test]
        fn device_decodes_every_builder(va: u64, v: u64, w: u64, n: u32, op in 0u8..4) {
            let mut s = CommandStream::new();
            s.noop()
                .store_dword(GpuVa(va), n)
                .store_qword(GpuVa(va), v)
                .copy(GpuVa(va), GpuVa(v), w)
                .fill(GpuVa(va), w, n)
                .atomic_add(GpuVa(va), v, Width::U64)
                .atomic_cmpxchg(GpuVa(va), v, w, Width::U32)
                .semaphore_wait(GpuVa(va), [SemOp::Eq, SemOp::Ne, SemOp::Gte, SemOp::Lt][op as usize], v, Width::U64)
                .batch_start(GpuVa(va), n)
                .batch_start_as(GpuVa(w), n, BatchFormat::Intel)
                .batch_end()
                .user_interrupt(n)
                .timestamp(GpuVa(w))
                .vector_add(GpuVa(va), GpuVa(v), GpuVa(w), n);
            let want = vec![
                Command::Noop,
                Command::StoreDword { va, value: n },
                Command::StoreQword { va, value: v },
                Command::Copy { src: va, dst: v, len: w },
                Command::Fill { dst: va, len: w, pattern: n },
                Command::AtomicAdd { va, value: v, wide: true },
                Command::AtomicCmpxchg { va, current: v, new: w, wide: false },
                Command::SemaphoreWait { va, op, value: v, wide: true },
                Command::BatchStart { va, len_dwords: n, intel: false },
                Command::BatchStart { va: w, len_dwords: n, intel: true },
                Command::BatchEnd,
                Command::UserInterrupt { data: n },
                Command::Timestamp { va: w },
                Command::VectorAdd { a: va, b: v, c: w, count: n },
            ];
            prop_assert_eq!(device_decode(&s), want);
            prop_assert_eq!(s.to_bytes().len(), s.len() * 4);
            let mut g = CommandStream::new();
            g.ggtt_store_qword(GpuVa(va), v);
            prop_assert_eq!(device_decode(&g), vec![Command::StoreQword { va, value: v }]);
            prop_assert_eq!(simgpu::cmd::flags(g.dwords()[0]), simgpu::cmd::FLAG_GGTT);
            prop_assert_eq!(simgpu::cmd::flags(s.dwords()[0]) & simgpu::cmd::FLAG_GGTT, 0);
        }
    }
}
