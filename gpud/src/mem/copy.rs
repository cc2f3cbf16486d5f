//! The copy-engine seam and the kernel address space driver-internal jobs run in.
//!
//! Owns: the [`CopyEngine`] trait (submit command dwords after dependencies, get a fence),
//! the kernel context's fixed linear map of all VRAM and the system-memory pool
//! ([`KernelMap`], built with the page-table manager from large pages, like Xe's migrate
//! VM), and the encoders of the jobs this module submits (block copies, page-table writes).
//! Must not: schedule, retry or time out jobs; the exec side implements [`CopyEngine`] on a
//! kernel queue of its scheduler.

use crate::hw::cmd::CommandStream;
use crate::hw::pte::{CacheMode, LeafFlags, MemLocation};
use crate::sync::Fence;
use crate::types::{GpuVa, PhysAddr};
use crate::vm::pagetable::memory::PtMemory;
use crate::vm::pagetable::{MapTarget, PageTable, PhysSeg, PtConfig, PtError, PtOp};
use std::sync::Arc;
use thiserror::Error;

/// Kernel VA of system-memory physical address 0.
pub const KERNEL_SYS_BASE: u64 = 1 << 40;
/// Kernel VA of VRAM offset 0.
pub const KERNEL_VRAM_BASE: u64 = 1 << 44;

/// A copy job could not be submitted or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CopyError {
    /// The engine refused the submission (ring full, engine reset in progress).
    #[error("copy engine refused the job: {reason}")]
    Refused { reason: String },
    /// A dependency or the job itself failed.
    #[error("copy job failed: {reason}")]
    Failed { reason: String },
}

/// Runs driver-internal jobs on the copy engine in the kernel context.
pub trait CopyEngine: Send + Sync {
    /// Runs simgpu command dwords (addressing memory through the kernel context's linear
    /// map) on the copy engine once every fence in `deps` has signalled; returns the job's
    /// fence, signalled when the commands retired.
    fn submit(&self, commands: &[u32], deps: &[Arc<Fence>]) -> Result<Arc<Fence>, CopyError>;
}

/// The kernel context's address space: VRAM and the system pool mapped linearly.
pub struct KernelMap {
    pt: PageTable,
}

impl KernelMap {
    /// Builds the linear map of `vram_size` bytes of VRAM and `sys_size` bytes of system
    /// memory (both from physical 0, so 1 GiB and 2 MiB pages apply).
    pub fn new(mem: Arc<dyn PtMemory>, vram_size: u64, sys_size: u64) -> Result<Self, PtError> {
        let mut pt = PageTable::new(mem, PtConfig::default())?;
        let flags = LeafFlags {
            writable: true,
            cache: CacheMode::Uncached,
        };
        let linear = |base: u64, location, len: u64| PtOp::Map {
            va: GpuVa(base),
            len,
            target: MapTarget::Pages {
                location,
                flags,
                segments: vec![PhysSeg {
                    addr: PhysAddr(0),
                    len,
                }],
            },
        };
        let round = |n: u64| n.div_ceil(4096) * 4096;
        let mut ops = Vec::new();
        if vram_size > 0 {
            ops.push(linear(
                KERNEL_VRAM_BASE,
                MemLocation::Vram,
                round(vram_size),
            ));
        }
        if sys_size > 0 {
            ops.push(linear(
                KERNEL_SYS_BASE,
                MemLocation::System,
                round(sys_size),
            ));
        }
        // A fresh map: nothing to invalidate and nothing freed.
        let _ = pt.prepare(&ops)?.commit();
        Ok(Self { pt })
    }

    /// The page table to bind to the kernel context.
    pub fn page_table(&self) -> &PageTable {
        &self.pt
    }

    /// The kernel VA of a physical address in `location`.
    pub fn va(location: MemLocation, addr: PhysAddr) -> GpuVa {
        let base = match location {
            MemLocation::System => KERNEL_SYS_BASE,
            MemLocation::Vram => KERNEL_VRAM_BASE,
        };
        GpuVa(base + addr.get())
    }
}

/// Commands copying `len` bytes between two physical ranges.
pub fn copy_commands(
    s: &mut CommandStream,
    from: (MemLocation, PhysAddr),
    to: (MemLocation, PhysAddr),
    len: u64,
) {
    s.copy(
        KernelMap::va(from.0, from.1),
        KernelMap::va(to.0, to.1),
        len,
    );
}

/// Commands performing page-table entry writes in order (the copy-engine update path).
pub fn pte_write_commands(location: MemLocation, writes: &[(PhysAddr, u64)]) -> Vec<u32> {
    let mut s = CommandStream::new();
    for &(addr, value) in writes {
        s.store_qword(KernelMap::va(location, addr), value);
    }
    s.dwords().to_vec()
}

/// Entry writes above this count go to the copy engine; below it the CPU is faster than
/// building and waiting for a job.
pub const GPU_PT_UPDATE_THRESHOLD: u64 = 4096;

/// How a page-table update was performed.
#[derive(Debug)]
pub enum PtUpdatePath {
    /// The CPU wrote every entry; done.
    Cpu,
    /// A copy-engine job writes the entries; the update is complete when the fence signals.
    CopyEngine(Arc<Fence>),
}

/// Commits `update`, choosing CPU writes for small updates and a copy-engine job for large
/// ones (above `threshold` estimated entries). If the job cannot be submitted the CPU
/// performs the same writes, so the commit still cannot fail.
pub fn commit_update(
    update: crate::vm::pagetable::PtUpdate<'_>,
    engine: Option<&dyn CopyEngine>,
    deps: &[Arc<Fence>],
    threshold: u64,
) -> (crate::vm::pagetable::PtCommit, PtUpdatePath) {
    let Some(engine) = engine.filter(|_| update.estimated_writes() > threshold) else {
        return (update.commit(), PtUpdatePath::Cpu);
    };
    let (commit, writes, pt) = update.commit_deferred_with_table();
    let location = pt.memory().location();
    match engine.submit(&pte_write_commands(location, &writes), deps) {
        Ok(fence) => (commit, PtUpdatePath::CopyEngine(fence)),
        Err(_) => {
            pt.write_entries(&writes);
            (commit, PtUpdatePath::Cpu)
        }
    }
}
