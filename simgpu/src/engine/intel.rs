//! Intel batches: what each MI_* command of the subset does, and the register file it uses.
//!
//! Owns: executing a decoded [`MiCommand`] over the MMU (through the engine's atomic
//! translate-then-move helpers) and the per-queue register file ([`MiRegs`]: 16 64-bit GPRs,
//! with CTX_TIMESTAMP reading the device timestamp). Must not: decode (`mi.rs`) or fetch
//! (`engine.rs`).
//!
//! Every command keeps the engine's atomicity rule: its memory operands are translated, and
//! its register operands resolved, before anything changes, so a command that faults or is
//! illegal has no effect and a retry runs it whole.

use super::{Outcome, Space, ENGINE_COPY};
use crate::device::Device;
use crate::mem::{MemError, PhysMemory};
use crate::mi::{self, AtomicOp, MiCommand, RegRef};
use crate::mmu::Access;
use crate::regs::ErrorReason;

/// General-purpose registers (CS_GPR0..15).
const GPRS: usize = 16;
/// Engine-relative offset of CS_GPR0 (GPR n at `+ 8 n`, low dword first).
const GPR_BASE: u32 = 0x600;
/// Engine-relative offset of CTX_TIMESTAMP (read-only; the device timestamp, low dword).
const CTX_TIMESTAMP: u32 = 0x3A8;
/// Engine-relative offset of CTX_TIMESTAMP's upper dword (read-only).
const CTX_TIMESTAMP_UDW: u32 = 0x3AC;
/// MMIO bases of the Intel engines an absolute register offset may name: the blitter for
/// the copy engine; the render and first compute engine for the compute engine.
const COPY_BASES: &[u32] = &[0x22000];
const COMPUTE_BASES: &[u32] = &[0x2000, 0x1A000];

/// The register file of one hardware queue's Intel batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MiRegs {
    gpr: [u64; GPRS],
}

/// A resolved register dword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// Dword `hi` of GPR n.
    Gpr(usize, bool),
    /// Dword `hi` of the timestamp.
    Timestamp(bool),
}

/// The register a command names on `engine` (`None`: not in the register file).
fn resolve(engine: usize, r: RegRef) -> Option<Reg> {
    let rel = if r.cs_mmio {
        r.offset
    } else {
        let bases = if engine == ENGINE_COPY {
            COPY_BASES
        } else {
            COMPUTE_BASES
        };
        let base = bases
            .iter()
            .find(|&&b| (b..b + 0x1000).contains(&r.offset))?;
        r.offset - base
    };
    match rel {
        CTX_TIMESTAMP => Some(Reg::Timestamp(false)),
        CTX_TIMESTAMP_UDW => Some(Reg::Timestamp(true)),
        _ if rel % 4 == 0 && (GPR_BASE..GPR_BASE + 8 * GPRS as u32).contains(&rel) => {
            let off = rel - GPR_BASE;
            Some(Reg::Gpr((off / 8) as usize, off % 8 == 4))
        }
        _ => None,
    }
}

impl Device {
    /// Executes one Intel command of queue `index` (its dwords as fetched).
    pub(super) fn execute_mi(
        &mut self,
        engine: usize,
        index: usize,
        ctx: u32,
        dwords: &[u32],
    ) -> Outcome {
        let Ok(command) = mi::decode(dwords) else {
            return Outcome::Error(ErrorReason::IllegalCommand);
        };
        let space = Space::Ppgtt(ctx);
        let r = match command {
            MiCommand::Noop | MiCommand::ArbCheck => Ok(Outcome::Retired),
            MiCommand::BatchEnd => Ok(Outcome::EndBatch),
            MiCommand::Jump { va } => Ok(Outcome::Jump { va }),
            MiCommand::StoreImm { va, data, dwords } => {
                let bytes: Vec<u8> = data
                    .iter()
                    .take(usize::from(dwords))
                    .flat_map(|d| d.to_le_bytes())
                    .collect();
                self.write_va(space, va, &bytes)
            }
            MiCommand::SemaphoreWait { va, compare, value } => {
                self.read_dword(space, va).map(|mem| {
                    if compare.holds(mem, value) {
                        Outcome::Retired
                    } else {
                        Outcome::Blocked
                    }
                })
            }
            MiCommand::CondBatchEnd { va, compare, value } => {
                self.read_dword(space, va).map(|mem| {
                    if compare.holds(mem, value) {
                        Outcome::Retired
                    } else {
                        Outcome::EndBatch
                    }
                })
            }
            MiCommand::Atomic {
                va,
                op,
                wide,
                op1,
                op2,
            } => self.atomic(space, va, wide, |m, a| {
                mi_atomic(m, a, op, (op1, op2), wide)
            }),
            MiCommand::LoadRegImm { writes } => Ok(self.load_reg_imm(engine, index, &writes)),
            MiCommand::LoadRegReg { src, dst } => {
                Ok(match (resolve(engine, src), resolve(engine, dst)) {
                    (Some(s), Some(d)) => {
                        let v = self.reg_read(index, s);
                        self.reg_write(index, d, v)
                    }
                    _ => Outcome::Error(ErrorReason::IllegalCommand),
                })
            }
            MiCommand::StoreRegMem { reg, va } => match resolve(engine, reg) {
                Some(r) => {
                    let v = self.reg_read(index, r);
                    self.write_va(space, va, &v.to_le_bytes())
                }
                None => Ok(Outcome::Error(ErrorReason::IllegalCommand)),
            },
            MiCommand::LoadRegMem { reg, va } => match resolve(engine, reg) {
                Some(r) => self
                    .read_dword(space, va)
                    .map(|v| self.reg_write(index, r, v)),
                None => Ok(Outcome::Error(ErrorReason::IllegalCommand)),
            },
        };
        r.unwrap_or_else(Outcome::from)
    }

    fn read_dword(&mut self, space: Space, va: u64) -> Result<u32, super::AccessError> {
        let mut buf = [0u8; 4];
        self.read_va(space, va, &mut buf, Access::Read)?;
        Ok(u32::from_le_bytes(buf))
    }

    /// LOAD_REGISTER_IMM: every register is resolved (and writable) before any is written.
    fn load_reg_imm(&mut self, engine: usize, index: usize, writes: &[(RegRef, u32)]) -> Outcome {
        let resolved: Option<Vec<(Reg, u32)>> = writes
            .iter()
            .map(|&(r, v)| match resolve(engine, r) {
                Some(reg @ Reg::Gpr(..)) => Some((reg, v)),
                _ => None,
            })
            .collect();
        let Some(resolved) = resolved else {
            return Outcome::Error(ErrorReason::IllegalCommand);
        };
        for (reg, v) in resolved {
            self.reg_write(index, reg, v);
        }
        Outcome::Retired
    }

    fn reg_read(&self, index: usize, reg: Reg) -> u32 {
        let half = |v: u64, hi: bool| if hi { (v >> 32) as u32 } else { v as u32 };
        match reg {
            Reg::Gpr(n, hi) => self
                .queues
                .get(index)
                .and_then(|q| q.mi_regs.gpr.get(n))
                .map_or(0, |&v| half(v, hi)),
            Reg::Timestamp(hi) => half(self.timestamp, hi),
        }
    }

    /// Writes a register dword; the timestamp is read-only (an illegal command).
    fn reg_write(&mut self, index: usize, reg: Reg, value: u32) -> Outcome {
        let Reg::Gpr(n, hi) = reg else {
            return Outcome::Error(ErrorReason::IllegalCommand);
        };
        let Some(g) = self
            .queues
            .get_mut(index)
            .and_then(|q| q.mi_regs.gpr.get_mut(n))
        else {
            return Outcome::Error(ErrorReason::IllegalCommand);
        };
        *g = if hi {
            (*g & 0xFFFF_FFFF) | (u64::from(value) << 32)
        } else {
            (*g & !0xFFFF_FFFF) | u64::from(value)
        };
        Outcome::Retired
    }
}

/// MI_ATOMIC on memory: a compare-exchange loop around [`AtomicOp::apply`].
fn mi_atomic(
    m: &dyn PhysMemory,
    addr: u64,
    op: AtomicOp,
    (op1, op2): (u64, u64),
    wide: bool,
) -> Result<(), MemError> {
    loop {
        let old = if wide {
            m.load_u64(addr)?
        } else {
            u64::from(m.load_u32(addr)?)
        };
        let Some(new) = op.apply(old, op1, op2, wide) else {
            return Ok(());
        };
        let stored = if wide {
            m.compare_exchange_u64(addr, old, new)?.is_ok()
        } else {
            m.compare_exchange_u32(addr, old as u32, new as u32)?
                .is_ok()
        };
        if stored {
            return Ok(());
        }
    }
}
