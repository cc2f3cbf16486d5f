//! The command set: opcodes, their encodings and the decoder the engines use.
//!
//! Owns: the command formats (a header dword and fixed operand dwords per opcode) as data and
//! a decoder from dwords to [`Command`]. Must not: execute anything; see `engine.rs`.
//!
//! Header dword: bits 7:0 opcode, bits 15:8 flags, bits 31:16 total length in dwords.

/// Opcodes (header bits 7:0).
pub mod op {
    /// Does nothing. 1 dword.
    pub const NOOP: u8 = 0x00;
    /// `[hdr, va_lo, va_hi, value]`: stores a u32.
    pub const STORE_DWORD: u8 = 0x01;
    /// `[hdr, va_lo, va_hi, val_lo, val_hi]`: stores a u64.
    pub const STORE_QWORD: u8 = 0x02;
    /// `[hdr, src_lo, src_hi, dst_lo, dst_hi, len_lo, len_hi]`: copies `len` bytes.
    pub const COPY: u8 = 0x03;
    /// `[hdr, dst_lo, dst_hi, len_lo, len_hi, pattern]`: fills `len` bytes with the LE pattern.
    pub const FILL: u8 = 0x04;
    /// `[hdr, va_lo, va_hi, val_lo, val_hi]`: atomic add (flag bit 0 = 64-bit, else 32-bit).
    pub const ATOMIC_ADD: u8 = 0x05;
    /// `[hdr, va_lo, va_hi, cmp_lo, cmp_hi, new_lo, new_hi]`: compare-exchange (flag bit 0 = 64).
    pub const ATOMIC_CMPXCHG: u8 = 0x06;
    /// `[hdr, va_lo, va_hi, val_lo, val_hi]`: waits until `mem OP value` (flags bits 2:0 = op,
    /// bit 3 = 64-bit compare).
    pub const SEMAPHORE_WAIT: u8 = 0x07;
    /// `[hdr, va_lo, va_hi, len_dwords]`: runs a batch of commands at a VA (ring only;
    /// `len_dwords` at most [`super::MAX_BATCH_DWORDS`]). Flag [`super::FLAG_INTEL`]: the batch
    /// is Intel MI_* commands (`mi.rs`).
    pub const BATCH_START: u8 = 0x08;
    /// `[hdr, data]`: raises the engine's user interrupt, latching `data` in `Q_USER_DATA`.
    pub const USER_INTERRUPT: u8 = 0x09;
    /// Ends the current batch early. 1 dword.
    pub const BATCH_END: u8 = 0x0A;
    /// `[hdr, va_lo, va_hi]`: stores the 64-bit timestamp counter.
    pub const TIMESTAMP: u8 = 0x0B;
    /// `[hdr, a_lo, a_hi, b_lo, b_hi, c_lo, c_hi, count]`: `c[i] = a[i] + b[i]` over u32
    /// elements (wrapping). Compute engine only.
    pub const VECTOR_ADD: u8 = 0x0C;
    /// Test-only: never completes (the queue hangs until an engine reset). 1 dword.
    pub const HANG: u8 = 0xFE;
}

/// SEMAPHORE_WAIT compare operations (flags bits 2:0).
pub mod sem_op {
    /// `mem == value`.
    pub const EQ: u8 = 0;
    /// `mem != value`.
    pub const NE: u8 = 1;
    /// `mem >= value` (unsigned).
    pub const GTE: u8 = 2;
    /// `mem < value` (unsigned).
    pub const LT: u8 = 3;
}

/// Flag bit of atomics: 64-bit operand.
pub const FLAG_64: u8 = 1 << 0;
/// Flag bit of SEMAPHORE_WAIT: 64-bit compare.
pub const SEM_FLAG_64: u8 = 1 << 3;
/// Flag bit of BATCH_START: decode the batch as Intel MI_* commands (docs/simgpu.md §6a).
/// Only the driver writes rings, so a batch cannot choose its own decoder.
pub const FLAG_INTEL: u8 = 1 << 0;
/// Longest batch BATCH_START accepts, in dwords: bit 31 of the `Q_BATCH_LEN` cursor register
/// holds the batch's decoder.
pub const MAX_BATCH_DWORDS: u32 = (1 << 31) - 1;
/// Flag bit of any command with addresses: they are in the global GTT, not the context's
/// page tables. Privileged: only ring commands may set it; in a batch (and on BATCH_START,
/// whose batch always runs in the context's page tables) it is an illegal command.
pub const FLAG_GGTT: u8 = 1 << 7;

/// The flags byte (bits 15:8) of a header dword.
pub const fn flags(hdr: u32) -> u8 {
    (hdr >> 8) as u8
}

/// Total length in dwords of each opcode's encoding (`None`: unknown opcode).
pub const fn len_of(opcode: u8) -> Option<u32> {
    Some(match opcode {
        op::NOOP | op::BATCH_END | op::HANG => 1,
        op::USER_INTERRUPT => 2,
        op::TIMESTAMP => 3,
        op::STORE_DWORD | op::BATCH_START => 4,
        op::STORE_QWORD | op::ATOMIC_ADD | op::SEMAPHORE_WAIT => 5,
        op::FILL => 6,
        op::COPY | op::ATOMIC_CMPXCHG => 7,
        op::VECTOR_ADD => 8,
        _ => return None,
    })
}

/// Builds a header dword.
pub const fn header(opcode: u8, flags: u8) -> u32 {
    let len = match len_of(opcode) {
        Some(len) => len,
        None => 0,
    };
    (len << 16) | ((flags as u32) << 8) | opcode as u32
}

/// A decoded command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Noop,
    StoreDword {
        va: u64,
        value: u32,
    },
    StoreQword {
        va: u64,
        value: u64,
    },
    Copy {
        src: u64,
        dst: u64,
        len: u64,
    },
    Fill {
        dst: u64,
        len: u64,
        pattern: u32,
    },
    AtomicAdd {
        va: u64,
        value: u64,
        wide: bool,
    },
    AtomicCmpxchg {
        va: u64,
        current: u64,
        new: u64,
        wide: bool,
    },
    SemaphoreWait {
        va: u64,
        op: u8,
        value: u64,
        wide: bool,
    },
    BatchStart {
        va: u64,
        len_dwords: u32,
        /// The batch is Intel MI_* commands ([`FLAG_INTEL`]).
        intel: bool,
    },
    UserInterrupt {
        data: u32,
    },
    BatchEnd,
    Timestamp {
        va: u64,
    },
    VectorAdd {
        a: u64,
        b: u64,
        c: u64,
        count: u32,
    },
    Hang,
}

/// Why dwords did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The opcode is not in the command set.
    UnknownOpcode(u8),
    /// The header's length field disagrees with the opcode's length.
    BadLength { opcode: u8, len: u32 },
}

/// The opcode and declared length of a header, checked against the table.
pub fn parse_header(hdr: u32) -> Result<(u8, u32), DecodeError> {
    let opcode = (hdr & 0xFF) as u8;
    let len = hdr >> 16;
    match len_of(opcode) {
        None => Err(DecodeError::UnknownOpcode(opcode)),
        Some(expected) if expected != len => Err(DecodeError::BadLength { opcode, len }),
        Some(expected) => Ok((opcode, expected)),
    }
}

fn qw(d: &[u32], i: usize) -> u64 {
    let lo = d.get(i).copied().unwrap_or(0);
    let hi = d.get(i + 1).copied().unwrap_or(0);
    u64::from(lo) | (u64::from(hi) << 32)
}

fn dw(d: &[u32], i: usize) -> u32 {
    d.get(i).copied().unwrap_or(0)
}

/// Decodes one command from `d` (its header first; `d` holds at least the declared length).
pub fn decode(d: &[u32]) -> Result<Command, DecodeError> {
    let hdr = dw(d, 0);
    let (opcode, len) = parse_header(hdr)?;
    if d.len() < len as usize {
        return Err(DecodeError::BadLength {
            opcode,
            len: d.len() as u32,
        });
    }
    let flags = ((hdr >> 8) & 0xFF) as u8;
    let wide = flags & FLAG_64 != 0;
    Ok(match opcode {
        op::NOOP => Command::Noop,
        op::STORE_DWORD => Command::StoreDword {
            va: qw(d, 1),
            value: dw(d, 3),
        },
        op::STORE_QWORD => Command::StoreQword {
            va: qw(d, 1),
            value: qw(d, 3),
        },
        op::COPY => Command::Copy {
            src: qw(d, 1),
            dst: qw(d, 3),
            len: qw(d, 5),
        },
        op::FILL => Command::Fill {
            dst: qw(d, 1),
            len: qw(d, 3),
            pattern: dw(d, 5),
        },
        op::ATOMIC_ADD => Command::AtomicAdd {
            va: qw(d, 1),
            value: qw(d, 3),
            wide,
        },
        op::ATOMIC_CMPXCHG => Command::AtomicCmpxchg {
            va: qw(d, 1),
            current: qw(d, 3),
            new: qw(d, 5),
            wide,
        },
        op::SEMAPHORE_WAIT => Command::SemaphoreWait {
            va: qw(d, 1),
            op: flags & 0b111,
            value: qw(d, 3),
            wide: flags & SEM_FLAG_64 != 0,
        },
        op::BATCH_START => Command::BatchStart {
            va: qw(d, 1),
            len_dwords: dw(d, 3),
            intel: flags & FLAG_INTEL != 0,
        },
        op::USER_INTERRUPT => Command::UserInterrupt { data: dw(d, 1) },
        op::BATCH_END => Command::BatchEnd,
        op::TIMESTAMP => Command::Timestamp { va: qw(d, 1) },
        op::VECTOR_ADD => Command::VectorAdd {
            a: qw(d, 1),
            b: qw(d, 3),
            c: qw(d, 5),
            count: dw(d, 7),
        },
        op::HANG => Command::Hang,
        _ => return Err(DecodeError::UnknownOpcode(opcode)),
    })
}

/// Whether `mem OP value` holds (an unknown op never holds).
pub const fn sem_satisfied(op: u8, mem: u64, value: u64) -> bool {
    match op {
        sem_op::EQ => mem == value,
        sem_op::NE => mem != value,
        sem_op::GTE => mem >= value,
        sem_op::LT => mem < value,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked_against_the_length_table() {
        assert_eq!(parse_header(header(op::COPY, 0)), Ok((op::COPY, 7)));
        assert_eq!(
            parse_header((5 << 16) | u32::from(op::COPY)),
            Err(DecodeError::BadLength {
                opcode: op::COPY,
                len: 5
            })
        );
        assert_eq!(
            parse_header(0x0001_0077),
            Err(DecodeError::UnknownOpcode(0x77))
        );
        // A command cut short by the end of its buffer is rejected, not read past.
        let d = [header(op::STORE_QWORD, 0), 1, 2];
        assert_eq!(
            decode(&d),
            Err(DecodeError::BadLength {
                opcode: op::STORE_QWORD,
                len: 3
            })
        );
        assert_eq!(
            decode(&[]),
            Err(DecodeError::BadLength {
                opcode: op::NOOP,
                len: 0
            })
        );
    }

    #[test]
    fn every_known_opcode_round_trips_its_header() {
        for opcode in 0..=u8::MAX {
            if let Some(len) = len_of(opcode) {
                let d: Vec<u32> = std::iter::once(header(opcode, 0))
                    .chain(std::iter::repeat_n(0, len as usize - 1))
                    .collect();
                assert!(decode(&d).is_ok(), "opcode {opcode:#x}");
            }
        }
    }
}
