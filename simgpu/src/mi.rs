//! Intel MI_* commands: the subset of Intel's command-streamer encoding that batches written
//! for Linux Xe use (docs/simgpu.md §6a), as data, and a decoder from dwords to [`MiCommand`].
//!
//! Owns: header layout, opcodes, lengths, flag bits and operand order, taken from Intel's
//! public documentation (PRMs, the Linux xe/i915 instruction headers). Must not: execute
//! anything (`engine/intel.rs` does) or know about queues.
//!
//! A header dword: bits 31:29 client (0 = MI), bits 28:23 opcode, the rest per command; most
//! commands carry "dword length" (total dwords − 2) in their low bits. Addresses are
//! canonical 48-bit GPU VAs: bits 63:48 (a sign extension of bit 47) are dropped.

/// Opcodes (header bits 28:23).
pub mod opcode {
    /// Does nothing. 1 dword.
    pub const NOOP: u8 = 0x00;
    /// A preemption point. 1 dword.
    pub const ARB_CHECK: u8 = 0x05;
    /// Ends the batch. 1 dword.
    pub const BATCH_BUFFER_END: u8 = 0x0A;
    /// Waits until a dword in memory compares true against inline data.
    pub const SEMAPHORE_WAIT: u8 = 0x1C;
    /// Stores one dword or one qword of inline data.
    pub const STORE_DATA_IMM: u8 = 0x20;
    /// Writes registers from inline (offset, value) pairs.
    pub const LOAD_REGISTER_IMM: u8 = 0x22;
    /// Stores a register to memory.
    pub const STORE_REGISTER_MEM: u8 = 0x24;
    /// Loads a register from memory.
    pub const LOAD_REGISTER_MEM: u8 = 0x29;
    /// Copies a register to a register.
    pub const LOAD_REGISTER_REG: u8 = 0x2A;
    /// An atomic read-modify-write of memory.
    pub const ATOMIC: u8 = 0x2F;
    /// Continues the batch at another address (a jump; second-level batches unsupported).
    pub const BATCH_BUFFER_START: u8 = 0x31;
    /// Ends the batch unless a dword in memory compares true against inline data.
    pub const COND_BATCH_BUFFER_END: u8 = 0x36;
}

/// Header bits shared by several commands.
pub mod bits {
    /// Addresses are in the global GTT (privileged: illegal in a batch).
    pub const GLOBAL_GTT: u32 = 1 << 22;
    /// STORE_DATA_IMM: the data is one qword.
    pub const SDI_QWORD: u32 = 1 << 21;
    /// Register offsets are relative to the engine's MMIO base (LRI, SRM, LRM, LRR dest).
    pub const CS_MMIO: u32 = 1 << 19;
    /// LOAD_REGISTER_REG: the source offset is relative to the engine's MMIO base.
    pub const LRR_SRC_CS_MMIO: u32 = 1 << 18;
    /// COND_BATCH_BUFFER_END: compare with the dword in memory.
    pub const DO_COMPARE: u32 = 1 << 21;
    /// SEMAPHORE_WAIT: polling mode (signal mode is run as polling too).
    pub const SEMAPHORE_POLL: u32 = 1 << 15;
    /// BATCH_BUFFER_START: the target is in the PPGTT (a batch reaches nothing else).
    pub const BBS_PPGTT: u32 = 1 << 8;
    /// BATCH_BUFFER_START: a second-level batch (a call; unsupported).
    pub const BBS_SECOND_LEVEL: u32 = 1 << 22;
    /// BATCH_BUFFER_START: predicated (unsupported).
    pub const BBS_PREDICATE: u32 = 1 << 15;
    /// BATCH_BUFFER_START: resource streamer (unsupported).
    pub const BBS_RESOURCE_STREAMER: u32 = 1 << 10;
    /// ATOMIC: post-sync operation (unsupported).
    pub const ATOMIC_POST_SYNC: u32 = 1 << 21;
    /// ATOMIC: operands are inline (8 dwords after the address).
    pub const ATOMIC_INLINE_DATA: u32 = 1 << 18;
    /// ATOMIC: return the old value to a register (unsupported).
    pub const ATOMIC_RETURN_DATA: u32 = 1 << 16;
}

/// Bits 31:29 of a header: the command client (MI = 0).
const CLIENT_SHIFT: u32 = 29;
/// Largest LOAD_REGISTER_IMM, in registers.
pub const MAX_LRI_REGS: u32 = 126;
/// Addresses keep bits 47:0.
pub const VA_MASK: u64 = (1 << 48) - 1;

/// The opcode of a header (`None` for a non-MI client).
pub const fn opcode_of(hdr: u32) -> Option<u8> {
    if hdr >> CLIENT_SHIFT != 0 {
        return None;
    }
    Some(((hdr >> 23) & 0x3F) as u8)
}

/// Total length in dwords of the command a header starts, as its header declares it (`None`:
/// not a known MI command). The decoder checks the declared length against the command.
pub const fn len_of(hdr: u32) -> Option<u32> {
    let Some(op) = opcode_of(hdr) else {
        return None;
    };
    Some(match op {
        opcode::NOOP | opcode::ARB_CHECK | opcode::BATCH_BUFFER_END => 1,
        opcode::STORE_DATA_IMM => (hdr & 0x3FF) + 2,
        opcode::SEMAPHORE_WAIT
        | opcode::LOAD_REGISTER_IMM
        | opcode::STORE_REGISTER_MEM
        | opcode::LOAD_REGISTER_MEM
        | opcode::LOAD_REGISTER_REG
        | opcode::ATOMIC
        | opcode::BATCH_BUFFER_START
        | opcode::COND_BATCH_BUFFER_END => (hdr & 0xFF) + 2,
        _ => return None,
    })
}

/// Compare operations of SEMAPHORE_WAIT and COND_BATCH_BUFFER_END (header bits 14:12):
/// `memory OP inline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `>` (unsigned).
    Gt,
    /// `>=`.
    Gte,
    /// `<`.
    Lt,
    /// `<=`.
    Lte,
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
}

impl Compare {
    fn from_bits(hdr: u32) -> Option<Self> {
        Some(match (hdr >> 12) & 0x7 {
            0 => Compare::Gt,
            1 => Compare::Gte,
            2 => Compare::Lt,
            3 => Compare::Lte,
            4 => Compare::Eq,
            5 => Compare::Ne,
            _ => return None,
        })
    }

    /// Whether `mem OP inline` holds.
    pub const fn holds(self, mem: u32, inline: u32) -> bool {
        match self {
            Compare::Gt => mem > inline,
            Compare::Gte => mem >= inline,
            Compare::Lt => mem < inline,
            Compare::Lte => mem <= inline,
            Compare::Eq => mem == inline,
            Compare::Ne => mem != inline,
        }
    }
}

/// MI_ATOMIC operations (opcode bits 4:0; bits 7:5 give the size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicOp {
    And,
    Or,
    Xor,
    Move,
    Inc,
    Dec,
    Add,
    Sub,
    /// `operand − memory`.
    Rsub,
    /// Signed maximum.
    Imax,
    /// Signed minimum.
    Imin,
    Umax,
    Umin,
    /// Stores operand 2 if memory equals operand 1.
    CmpWr,
    /// Decrement (the old value would be returned; nothing is returned here).
    Predec,
}

impl AtomicOp {
    fn from_code(code: u8) -> Option<Self> {
        use AtomicOp::*;
        Some(match code {
            0x1 => And,
            0x2 => Or,
            0x3 => Xor,
            0x4 => Move,
            0x5 => Inc,
            0x6 => Dec,
            0x7 => Add,
            0x8 => Sub,
            0x9 => Rsub,
            0xA => Imax,
            0xB => Imin,
            0xC => Umax,
            0xD => Umin,
            0xE => CmpWr,
            0xF => Predec,
            _ => return None,
        })
    }

    /// Whether the operation reads inline operands.
    pub const fn needs_operands(self) -> bool {
        !matches!(self, AtomicOp::Inc | AtomicOp::Dec | AtomicOp::Predec)
    }

    /// The new memory value (`None`: leave memory alone), on `wide`-bit values.
    pub fn apply(self, mem: u64, op1: u64, op2: u64, wide: bool) -> Option<u64> {
        use AtomicOp::*;
        let signed = |v: u64| {
            if wide {
                v as i64
            } else {
                i64::from(v as u32 as i32)
            }
        };
        let v = match self {
            And => mem & op1,
            Or => mem | op1,
            Xor => mem ^ op1,
            Move => op1,
            Inc => mem.wrapping_add(1),
            Dec | Predec => mem.wrapping_sub(1),
            Add => mem.wrapping_add(op1),
            Sub => mem.wrapping_sub(op1),
            Rsub => op1.wrapping_sub(mem),
            Imax => return Some(if signed(op1) > signed(mem) { op1 } else { mem }),
            Imin => return Some(if signed(op1) < signed(mem) { op1 } else { mem }),
            Umax => mem.max(op1),
            Umin => mem.min(op1),
            CmpWr if mem == op1 => op2,
            CmpWr => return None,
        };
        Some(v)
    }
}

/// A register operand: a dword of the per-queue register file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegRef {
    /// The offset as written in the command.
    pub offset: u32,
    /// Relative to the engine's MMIO base (`CS_MMIO`), else an absolute MMIO address.
    pub cs_mmio: bool,
}

/// A decoded MI command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MiCommand {
    Noop,
    ArbCheck,
    BatchEnd,
    /// Stores `data` (1 or 2 dwords) at `va`.
    StoreImm {
        va: u64,
        data: [u32; 2],
        dwords: u8,
    },
    SemaphoreWait {
        va: u64,
        compare: Compare,
        value: u32,
    },
    /// Ends the batch unless `mem[va] compare value` holds.
    CondBatchEnd {
        va: u64,
        compare: Compare,
        value: u32,
    },
    /// Continues the batch at `va`.
    Jump {
        va: u64,
    },
    Atomic {
        va: u64,
        op: AtomicOp,
        wide: bool,
        op1: u64,
        op2: u64,
    },
    LoadRegImm {
        writes: Vec<(RegRef, u32)>,
    },
    LoadRegReg {
        src: RegRef,
        dst: RegRef,
    },
    StoreRegMem {
        reg: RegRef,
        va: u64,
    },
    LoadRegMem {
        reg: RegRef,
        va: u64,
    },
}

/// Why dwords did not decode (all of them are an illegal command to the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MiError {
    /// Not an MI command, or an MI opcode outside the supported subset.
    Unknown(u32),
    /// The declared length is wrong for the command, or the buffer is shorter.
    BadLength(u32),
    /// A flag or field value the subset does not support (GGTT, second-level batch...).
    Unsupported(u32),
    /// A misaligned address.
    Misaligned(u64),
}

fn dw(d: &[u32], i: usize) -> u32 {
    d.get(i).copied().unwrap_or(0)
}

/// The canonical 48-bit address in dwords `i` (low) and `i + 1` (high).
fn addr(d: &[u32], i: usize) -> u64 {
    (u64::from(dw(d, i)) | (u64::from(dw(d, i + 1)) << 32)) & VA_MASK
}

fn aligned(va: u64, align: u64) -> Result<u64, MiError> {
    if va % align == 0 {
        Ok(va)
    } else {
        Err(MiError::Misaligned(va))
    }
}

/// Decodes one command from `d` (its header first).
pub fn decode(d: &[u32]) -> Result<MiCommand, MiError> {
    let hdr = dw(d, 0);
    let op = opcode_of(hdr).ok_or(MiError::Unknown(hdr))?;
    let len = len_of(hdr).ok_or(MiError::Unknown(hdr))?;
    if (d.len() as u64) < u64::from(len) {
        return Err(MiError::BadLength(hdr));
    }
    if op != opcode::NOOP && hdr & bits::GLOBAL_GTT != 0 {
        // A batch never reaches the GGTT; for BBS this bit is the second-level flag, which is
        // unsupported too.
        return Err(MiError::Unsupported(hdr));
    }
    let want = |n: u32| {
        if len == n {
            Ok(())
        } else {
            Err(MiError::BadLength(hdr))
        }
    };
    let cs = hdr & bits::CS_MMIO != 0;
    Ok(match op {
        opcode::NOOP => MiCommand::Noop,
        opcode::ARB_CHECK => MiCommand::ArbCheck,
        opcode::BATCH_BUFFER_END => MiCommand::BatchEnd,
        opcode::STORE_DATA_IMM => decode_sdi(d, hdr, len)?,
        opcode::SEMAPHORE_WAIT => {
            // Gen8 form (4 dwords) or Gen12 form (5: one more dword, unused here).
            if len != 4 && len != 5 {
                return Err(MiError::BadLength(hdr));
            }
            MiCommand::SemaphoreWait {
                va: aligned(addr(d, 2), 4)?,
                compare: Compare::from_bits(hdr).ok_or(MiError::Unsupported(hdr))?,
                value: dw(d, 1),
            }
        }
        opcode::COND_BATCH_BUFFER_END => {
            want(4)?;
            if hdr & bits::DO_COMPARE == 0 {
                return Err(MiError::Unsupported(hdr));
            }
            MiCommand::CondBatchEnd {
                va: aligned(addr(d, 2), 4)?,
                compare: Compare::from_bits(hdr).ok_or(MiError::Unsupported(hdr))?,
                value: dw(d, 1),
            }
        }
        opcode::BATCH_BUFFER_START => {
            want(3)?;
            let unsupported = bits::BBS_PREDICATE | bits::BBS_RESOURCE_STREAMER;
            if hdr & unsupported != 0 {
                return Err(MiError::Unsupported(hdr));
            }
            MiCommand::Jump {
                va: aligned(addr(d, 1), 4)?,
            }
        }
        opcode::ATOMIC => decode_atomic(d, hdr, len)?,
        opcode::LOAD_REGISTER_IMM => {
            let pairs = (len - 1) / 2;
            if len % 2 == 0 || pairs == 0 || pairs > MAX_LRI_REGS {
                return Err(MiError::BadLength(hdr));
            }
            let writes = (0..pairs as usize)
                .map(|i| {
                    let reg = RegRef {
                        offset: dw(d, 1 + 2 * i),
                        cs_mmio: cs,
                    };
                    (reg, dw(d, 2 + 2 * i))
                })
                .collect();
            MiCommand::LoadRegImm { writes }
        }
        opcode::LOAD_REGISTER_REG => {
            want(3)?;
            MiCommand::LoadRegReg {
                src: RegRef {
                    offset: dw(d, 1),
                    cs_mmio: hdr & bits::LRR_SRC_CS_MMIO != 0,
                },
                dst: RegRef {
                    offset: dw(d, 2),
                    cs_mmio: cs,
                },
            }
        }
        opcode::STORE_REGISTER_MEM | opcode::LOAD_REGISTER_MEM => {
            want(4)?;
            let reg = RegRef {
                offset: dw(d, 1),
                cs_mmio: cs,
            };
            let va = aligned(addr(d, 2), 4)?;
            if op == opcode::STORE_REGISTER_MEM {
                MiCommand::StoreRegMem { reg, va }
            } else {
                MiCommand::LoadRegMem { reg, va }
            }
        }
        _ => return Err(MiError::Unknown(hdr)),
    })
}

/// STORE_DATA_IMM: `[hdr, addr lo, addr hi, data...]`, one dword (length 2) or two (length 3,
/// a qword with `SDI_QWORD`).
fn decode_sdi(d: &[u32], hdr: u32, len: u32) -> Result<MiCommand, MiError> {
    let qword = hdr & bits::SDI_QWORD != 0;
    let dwords = match (len, qword) {
        (4, false) => 1,
        (5, _) => 2,
        _ => return Err(MiError::BadLength(hdr)),
    };
    let va = aligned(addr(d, 1), if qword { 8 } else { 4 })?;
    Ok(MiCommand::StoreImm {
        va,
        data: [dw(d, 3), if dwords == 2 { dw(d, 4) } else { 0 }],
        dwords,
    })
}

/// MI_ATOMIC: `[hdr, addr lo, addr hi]`, or with inline data 8 more dwords: operand 1 (4
/// dwords), operand 2 (4 dwords).
fn decode_atomic(d: &[u32], hdr: u32, len: u32) -> Result<MiCommand, MiError> {
    let inline = hdr & bits::ATOMIC_INLINE_DATA != 0;
    if len != if inline { 11 } else { 3 } {
        return Err(MiError::BadLength(hdr));
    }
    if hdr & (bits::ATOMIC_POST_SYNC | bits::ATOMIC_RETURN_DATA) != 0 {
        return Err(MiError::Unsupported(hdr));
    }
    let code = ((hdr >> 8) & 0xFF) as u8;
    let wide = match code >> 5 {
        0 => false,
        1 => true,
        _ => return Err(MiError::Unsupported(hdr)),
    };
    let op = AtomicOp::from_code(code & 0x1F).ok_or(MiError::Unsupported(hdr))?;
    if op.needs_operands() && !inline {
        return Err(MiError::Unsupported(hdr));
    }
    let operand = |i: usize| u64::from(dw(d, i)) | (u64::from(dw(d, i + 1)) << 32);
    let (op1, op2) = if inline {
        (operand(3), operand(7))
    } else {
        (0, 0)
    };
    let mask = if wide { u64::MAX } else { u64::from(u32::MAX) };
    Ok(MiCommand::Atomic {
        va: aligned(addr(d, 1), if wide { 8 } else { 4 })?,
        op,
        wide,
        op1: op1 & mask,
        op2: op2 & mask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dwords IGT's xe_exec_basic and xe_vm put in every batch.
    #[test]
    fn igt_store_dword_and_batch_end_decode() {
        // MI_STORE_DWORD_IMM_GEN4, address 0x1a0000 with bits 63:48 sign-extended from bit 47
        // as xe_vm's addr_high() does for high addresses: dropped.
        let d = [0x1000_0002, 0x001A_0000, 0xFFFF_8000, 0xC0FFEE];
        assert_eq!(len_of(d[0]), Some(4));
        assert_eq!(
            decode(&d),
            Ok(MiCommand::StoreImm {
                va: 0x8000_001A_0000,
                data: [0xC0FFEE, 0],
                dwords: 1
            })
        );
        assert_eq!(decode(&[0x0500_0000]), Ok(MiCommand::BatchEnd));
        assert_eq!(decode(&[0]), Ok(MiCommand::Noop));
    }

    #[test]
    fn store_qword_imm_decodes() {
        // MI_STORE_QWORD_IMM_GEN8 = MI_INSTR(0x20, 3) | BIT(21).
        let d = [0x1020_0003, 0x2000, 0, 0x1111_2222, 0x3333_4444];
        assert_eq!(len_of(d[0]), Some(5));
        assert_eq!(
            decode(&d),
            Ok(MiCommand::StoreImm {
                va: 0x2000,
                data: [0x1111_2222, 0x3333_4444],
                dwords: 2
            })
        );
        // A qword store must be 8-byte aligned; a dword store 4-byte aligned.
        assert_eq!(
            decode(&[0x1020_0003, 0x2004, 0, 1, 2]),
            Err(MiError::Misaligned(0x2004))
        );
        assert_eq!(
            decode(&[0x1000_0002, 0x2002, 0, 1]),
            Err(MiError::Misaligned(0x2002))
        );
        // The GGTT bit is privileged.
        assert_eq!(
            decode(&[0x1040_0002, 0x2000, 0, 1]),
            Err(MiError::Unsupported(0x1040_0002))
        );
    }

    #[test]
    fn truncated_and_foreign_commands_are_errors() {
        assert_eq!(
            decode(&[0x1000_0002, 0x2000]),
            Err(MiError::BadLength(0x1000_0002))
        );
        assert_eq!(decode(&[]), Err(MiError::BadLength(0)), "nothing to decode");
        // A 3D-client header (bits 31:29 = 3) is no MI command.
        assert_eq!(len_of(0x7A00_0004), None);
        assert_eq!(decode(&[0x7A00_0004]), Err(MiError::Unknown(0x7A00_0004)));
        // An MI opcode outside the subset (MI_FLUSH_DW).
        assert_eq!(
            decode(&[0x1300_0001, 0, 0]),
            Err(MiError::Unknown(0x1300_0001))
        );
    }
}
