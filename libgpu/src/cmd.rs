//! The encoder of the simgpu command set: `Batch` builds the dwords of a batch buffer.
//!
//! Owns: the client's declaration of the command formats (`FORMATS`: opcode, length, operands;
//! `docs/simgpu.md` §6) and `Batch`. Must not: submit anything; a batch is bytes the
//! application writes into a BO (`BoMap::write_dwords`) bound in its VM, then runs with
//! `ExecQueue::exec(va)`.
//!
//! Encoding: a header dword (bits 7:0 opcode, 15:8 flags, 31:16 total length in dwords) then
//! operand dwords; 64-bit operands are two dwords, low first. Only commands legal in a batch are
//! offered: BATCH_START (ring only) and HANG (test only) are not. VECTOR_ADD runs on the compute
//! engine only (`Batch::needs_compute`). The tests check every format against golden dwords
//! from the manual and run encoded batches on simgpu.

use thiserror::Error;

/// Opcodes (header bits 7:0).
pub mod op {
    /// Does nothing.
    pub const NOOP: u8 = 0x00;
    /// Store a u32.
    pub const STORE_DWORD: u8 = 0x01;
    /// Store a u64.
    pub const STORE_QWORD: u8 = 0x02;
    /// Copy bytes.
    pub const COPY: u8 = 0x03;
    /// Fill bytes with a 4-byte pattern.
    pub const FILL: u8 = 0x04;
    /// Wrapping atomic add.
    pub const ATOMIC_ADD: u8 = 0x05;
    /// Atomic compare-exchange.
    pub const ATOMIC_CMPXCHG: u8 = 0x06;
    /// Wait for a memory value.
    pub const SEMAPHORE_WAIT: u8 = 0x07;
    /// Raise the engine's user interrupt with a data dword.
    pub const USER_INTERRUPT: u8 = 0x09;
    /// End the batch.
    pub const BATCH_END: u8 = 0x0A;
    /// Store the 64-bit timestamp.
    pub const TIMESTAMP: u8 = 0x0B;
    /// `c[i] = a[i] + b[i]` over u32 elements (compute engine only).
    pub const VECTOR_ADD: u8 = 0x0C;
}

/// One command format, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// The opcode.
    pub opcode: u8,
    /// Name in the manual.
    pub name: &'static str,
    /// Total length in dwords, header included.
    pub dwords: u16,
    /// The operands after the header, in order (64-bit ones take two dwords).
    pub operands: &'static str,
}

/// Every command a batch may contain (`docs/simgpu.md` §6).
pub const FORMATS: [Format; 12] = [
    fmt(op::NOOP, "NOOP", 1, ""),
    fmt(op::STORE_DWORD, "STORE_DWORD", 4, "va:64 value:32"),
    fmt(op::STORE_QWORD, "STORE_QWORD", 5, "va:64 value:64"),
    fmt(op::COPY, "COPY", 7, "src:64 dst:64 len:64"),
    fmt(op::FILL, "FILL", 6, "dst:64 len:64 pattern:32"),
    fmt(op::ATOMIC_ADD, "ATOMIC_ADD", 5, "va:64 value:64"),
    fmt(
        op::ATOMIC_CMPXCHG,
        "ATOMIC_CMPXCHG",
        7,
        "va:64 compare:64 new:64",
    ),
    fmt(op::SEMAPHORE_WAIT, "SEMAPHORE_WAIT", 5, "va:64 value:64"),
    fmt(op::USER_INTERRUPT, "USER_INTERRUPT", 2, "data:32"),
    fmt(op::BATCH_END, "BATCH_END", 1, ""),
    fmt(op::TIMESTAMP, "TIMESTAMP", 3, "va:64"),
    fmt(op::VECTOR_ADD, "VECTOR_ADD", 8, "a:64 b:64 c:64 count:32"),
];

const fn fmt(opcode: u8, name: &'static str, dwords: u16, operands: &'static str) -> Format {
    Format {
        opcode,
        name,
        dwords,
        operands,
    }
}

/// The format of `opcode`, if a batch may contain it.
pub fn format(opcode: u8) -> Option<&'static Format> {
    FORMATS.iter().find(|f| f.opcode == opcode)
}

/// Flag bit of ATOMIC_ADD / ATOMIC_CMPXCHG: 64-bit operand (else 32-bit, low dword).
pub const FLAG_64: u8 = 1 << 0;
/// Flag bit of SEMAPHORE_WAIT: 64-bit compare.
pub const SEM_FLAG_64: u8 = 1 << 3;
/// Largest VECTOR_ADD element count.
pub const MAX_VECTOR_COUNT: u32 = 1 << 24;

/// SEMAPHORE_WAIT comparisons (flag bits 2:0), unsigned: wait until `mem OP value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SemOp {
    /// `mem == value`.
    Eq = 0,
    /// `mem != value`.
    Ne = 1,
    /// `mem >= value`.
    Gte = 2,
    /// `mem < value`.
    Lt = 3,
}

/// A command the device would refuse (illegal command), caught while encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CmdError {
    /// An atomic's address is not naturally aligned.
    #[error("atomic at {va:#x} not aligned to {align} bytes")]
    Misaligned {
        /// The address.
        va: u64,
        /// Required alignment.
        align: u64,
    },
    /// VECTOR_ADD with more than `MAX_VECTOR_COUNT` elements.
    #[error("vector of {0} elements exceeds the maximum")]
    VectorTooLong(u32),
}

/// The dwords of a batch buffer under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    dwords: Vec<u32>,
    needs_compute: bool,
}

fn lo(v: u64) -> u32 {
    v as u32
}

fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}

fn check_atomic(va: u64, wide: bool) -> Result<(), CmdError> {
    let align = if wide { 8 } else { 4 };
    match va % align {
        0 => Ok(()),
        _ => Err(CmdError::Misaligned { va, align }),
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded dwords.
    pub fn dwords(&self) -> &[u32] {
        &self.dwords
    }

    /// The encoded bytes (little-endian dwords).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.dwords.iter().flat_map(|d| d.to_le_bytes()).collect()
    }

    /// Length in dwords.
    pub fn len(&self) -> usize {
        self.dwords.len()
    }

    /// Whether nothing was encoded.
    pub fn is_empty(&self) -> bool {
        self.dwords.is_empty()
    }

    /// Whether the batch must run on a compute queue (it contains VECTOR_ADD).
    pub fn needs_compute(&self) -> bool {
        self.needs_compute
    }

    /// Append one command: its header (length from `FORMATS`) and operands.
    fn emit(&mut self, opcode: u8, flags: u8, operands: &[u32]) -> &mut Self {
        // The length comes from the table, so a builder disagreeing with it shows up in the
        // golden tests as a header the device rejects.
        let len = format(opcode).map_or(0, |f| u32::from(f.dwords));
        self.dwords
            .push((len << 16) | (u32::from(flags) << 8) | u32::from(opcode));
        self.dwords.extend_from_slice(operands);
        self
    }

    /// NOOP.
    pub fn noop(&mut self) -> &mut Self {
        self.emit(op::NOOP, 0, &[])
    }

    /// STORE_DWORD: `*va = value` (u32).
    pub fn store_dword(&mut self, va: u64, value: u32) -> &mut Self {
        self.emit(op::STORE_DWORD, 0, &[lo(va), hi(va), value])
    }

    /// STORE_QWORD: `*va = value` (u64; e.g. a fence value).
    pub fn store_qword(&mut self, va: u64, value: u64) -> &mut Self {
        self.emit(op::STORE_QWORD, 0, &[lo(va), hi(va), lo(value), hi(value)])
    }

    /// COPY `len` bytes from `src` to `dst` (overlap is undefined).
    pub fn copy(&mut self, src: u64, dst: u64, len: u64) -> &mut Self {
        let ops = [lo(src), hi(src), lo(dst), hi(dst), lo(len), hi(len)];
        self.emit(op::COPY, 0, &ops)
    }

    /// FILL `len` bytes at `dst`: byte k is byte `k mod 4` of `pattern` (little-endian).
    pub fn fill(&mut self, dst: u64, len: u64, pattern: u32) -> &mut Self {
        let ops = [lo(dst), hi(dst), lo(len), hi(len), pattern];
        self.emit(op::FILL, 0, &ops)
    }

    /// ATOMIC_ADD of a u32 (wrapping) at a 4-byte aligned `va`.
    pub fn atomic_add32(&mut self, va: u64, value: u32) -> Result<&mut Self, CmdError> {
        check_atomic(va, false)?;
        Ok(self.emit(op::ATOMIC_ADD, 0, &[lo(va), hi(va), value, 0]))
    }

    /// ATOMIC_ADD of a u64 (wrapping) at an 8-byte aligned `va`.
    pub fn atomic_add64(&mut self, va: u64, value: u64) -> Result<&mut Self, CmdError> {
        check_atomic(va, true)?;
        let ops = [lo(va), hi(va), lo(value), hi(value)];
        Ok(self.emit(op::ATOMIC_ADD, FLAG_64, &ops))
    }

    /// ATOMIC_CMPXCHG of a u32: store `new` if `*va == compare`.
    pub fn cmpxchg32(&mut self, va: u64, compare: u32, new: u32) -> Result<&mut Self, CmdError> {
        check_atomic(va, false)?;
        Ok(self.emit(op::ATOMIC_CMPXCHG, 0, &[lo(va), hi(va), compare, 0, new, 0]))
    }

    /// ATOMIC_CMPXCHG of a u64: store `new` if `*va == compare`.
    pub fn cmpxchg64(&mut self, va: u64, compare: u64, new: u64) -> Result<&mut Self, CmdError> {
        check_atomic(va, true)?;
        let ops = [lo(va), hi(va), lo(compare), hi(compare), lo(new), hi(new)];
        Ok(self.emit(op::ATOMIC_CMPXCHG, FLAG_64, &ops))
    }

    /// SEMAPHORE_WAIT: stall this queue until `*va OP value` (64-bit compare if `wide`, else
    /// the u32 at `va`).
    pub fn semaphore_wait(&mut self, va: u64, op: SemOp, value: u64, wide: bool) -> &mut Self {
        let flags = op as u8 | if wide { SEM_FLAG_64 } else { 0 };
        let ops = [lo(va), hi(va), lo(value), hi(value)];
        self.emit(op::SEMAPHORE_WAIT, flags, &ops)
    }

    /// USER_INTERRUPT: latch `data` and raise the engine's user interrupt.
    pub fn user_interrupt(&mut self, data: u32) -> &mut Self {
        self.emit(op::USER_INTERRUPT, 0, &[data])
    }

    /// BATCH_END: the batch stops here.
    pub fn batch_end(&mut self) -> &mut Self {
        self.emit(op::BATCH_END, 0, &[])
    }

    /// TIMESTAMP: store the device's 64-bit timestamp at `va`.
    pub fn timestamp(&mut self, va: u64) -> &mut Self {
        self.emit(op::TIMESTAMP, 0, &[lo(va), hi(va)])
    }

    /// VECTOR_ADD: `c[i] = a[i] + b[i]` for `count` u32 elements (compute engine only).
    pub fn vector_add(
        &mut self,
        a: u64,
        b: u64,
        c: u64,
        count: u32,
    ) -> Result<&mut Self, CmdError> {
        if count > MAX_VECTOR_COUNT {
            return Err(CmdError::VectorTooLong(count));
        }
        self.needs_compute = true;
        let ops = [lo(a), hi(a), lo(b), hi(b), lo(c), hi(c), count];
        Ok(self.emit(op::VECTOR_ADD, 0, &ops))
    }

    /// Append every command of `other`.
    pub fn append(&mut self, other: &Batch) -> &mut Self {
        self.dwords.extend_from_slice(&other.dwords);
        self.needs_compute |= other.needs_compute;
        self
    }
}
