//! CPU-address mirrors (SVM, Xe's `CPU_ADDR_MIRROR`): the bind engine's side (no PTEs at
//! bind, the EBUSY rule) and the GPU fault path that fills them from the client's memory.
//!
//! Owns: the SVM half of the VM's notifier path ([`Notifier::invalidate_svm`]: a range an
//! address-space change touches loses its pages and its PTEs, whole, and waits for the
//! garbage collector), the mirror check of a bind ([`Vm::check_mirrors`]) and the fault
//! handler of a mirror ([`Vm::svm_fault`]): garbage-collect → find or create the range
//! (the largest chunk that fits, `svm::range`) → resolve its pages through `svm::mm`
//! (no lock held) → under the notifier lock check the sequence and write the PTEs.
//!
//! Must not: call the memory manager with the notifier or page-table lock held, or record
//! pages whose PTEs were not staged (a range with pages is a GPU-mapped range: see the
//! INVARIANT of `SvmRange::pages`). The GPU VA of a mirror is the CPU address (offset 0).
//!
//! Locking: as userptr: `vm.lock` (the fault handler holds it for writing, so binds and
//! faults of one VM never interleave) → reservations → the notifier lock (`Vm::notifier`)
//! → the page-table lock.

use super::error::BindError;
use super::migrate::Migration;
use super::userptr::{Invalidation, Notifier, PageWindow, USERPTR_RETRIES};
use super::vm::{leaf_flags, Vm, VmState};
use crate::hw::pte::MemLocation;
use crate::hw::FaultReply;
use crate::mem::svm::SvmVram;
use crate::svm::{CpuRange, MmError, PinnedPages};
use crate::types::{GpuVa, PAGE_SIZE};
use crate::vm::pagetable::{MapTarget, PhysSeg, PtOp};
use crate::vm::{MappingFlags, Step, VaRange};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a GPU-mapped SVM range maps: the client's system pages, or VRAM its data was
/// migrated to. Either is kept until the range's PTEs were zapped.
#[derive(Debug, Clone)]
pub enum RangePages {
    System(Arc<PinnedPages>),
    Vram(Arc<SvmVram>),
}

impl RangePages {
    /// Where the pages are and their segments.
    fn target(&self) -> (MemLocation, Vec<PhysSeg>) {
        match self {
            RangePages::System(pin) => (
                MemLocation::System,
                PageWindow::whole(pin.clone()).segments(),
            ),
            RangePages::Vram(v) => (MemLocation::Vram, v.segments()),
        }
    }
}

impl Notifier {
    /// The SVM part of an invalidation of `r`: the ranges it touches lose their pages (to
    /// zap and release) and are marked for the garbage collector; data in VRAM there is
    /// dropped (the CPU side changed: unmapped, dropped or moved), except the part of it
    /// outside `r`, which goes back to the CPU.
    pub(crate) fn invalidate_svm(&mut self, r: CpuRange, out: &mut Invalidation) {
        for i in self.svm.invalidate(r.start(), r.end()) {
            out.zap.push((i.start, i.len));
            out.release(i.pages);
        }
        for d in self.take_devmem(r.start(), r.end()) {
            if r.start() <= d.start && d.start + d.len <= r.end() {
                out.vram.push(d.vram);
            } else {
                out.restore.push((d, r));
            }
        }
    }
}

impl Invalidation {
    /// Releases `p` after the zap.
    pub(crate) fn release(&mut self, p: RangePages) {
        match p {
            RangePages::System(pin) => self.pages.push(PageWindow::whole(pin)),
            RangePages::Vram(v) => self.vram.push(v),
        }
    }
}

/// Per-VM SVM counters (faults served by chunk size, ranges collected, aborts, migration).
#[derive(Debug, Default)]
pub struct SvmStats {
    /// Bytes of VRAM the VM's SVM ranges hold (charged to the client).
    pub vram_bytes: std::sync::atomic::AtomicU64,
    /// Ranges migrated to VRAM.
    pub to_vram: std::sync::atomic::AtomicU64,
    /// Ranges migrated back to system memory on a CPU fault.
    pub to_ram: std::sync::atomic::AtomicU64,
    /// Ranges evicted from VRAM by VRAM pressure.
    pub evicted: std::sync::atomic::AtomicU64,
    /// GPU faults that wanted VRAM and got system memory (no VRAM to be had).
    pub vram_fallbacks: std::sync::atomic::AtomicU64,
    /// Copies back to the CPU that failed (the CPU got zeros).
    pub lost: std::sync::atomic::AtomicU64,
    /// Faults that created a range, by chunk size: 2 MiB, 64 KiB, 4 KiB.
    pub faults_by_chunk: [std::sync::atomic::AtomicU64; 3],
    /// Ranges the garbage collector removed.
    pub collected: std::sync::atomic::AtomicU64,
    /// Mirror faults answered with an abort (no CPU mapping, unresolvable memory).
    pub aborts: std::sync::atomic::AtomicU64,
}

/// A snapshot of one SVM range (diagnostics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeInfo {
    pub start: u64,
    pub len: u64,
    /// GPU-mapped (pages held, PTEs written).
    pub mapped: bool,
    /// Waiting for the garbage collector.
    pub unmapped: bool,
    /// Mapped to VRAM (the data migrated there).
    pub in_vram: bool,
}

impl Vm {
    /// The bind's mirror check, with `vm.lock` and the reservations held, before the
    /// commit: a step removing or cutting a mirror where an SVM range is still GPU-mapped
    /// fails with EBUSY (Xe's rule; IGT `malloc-busy`); ranges without a GPU mapping in the
    /// removed part are dropped (harmless if the bind fails later: they are rebuilt on
    /// fault). Pending garbage is collected first, so ranges an unmap already took do not
    /// count.
    pub(crate) fn check_mirrors<'a>(
        &self,
        steps: impl Iterator<Item = &'a Step>,
    ) -> Result<(), BindError> {
        let cut: Vec<VaRange> = steps
            .filter_map(|s| match s {
                Step::Remap(r) if r.unmap().old().flags().contains(MappingFlags::CPU_MIRROR) => {
                    Some(r.hole())
                }
                Step::Unmap(u) if u.old().flags().contains(MappingFlags::CPU_MIRROR) => {
                    Some(u.old().range())
                }
                _ => None,
            })
            .collect();
        if cut.is_empty() {
            return Ok(());
        }
        let mut n = self.notifier.write();
        self.collect_svm_garbage(&mut n);
        for c in &cut {
            if n.svm.has_mapping(c.start().get(), c.end().get()) {
                return Err(BindError::MirrorBusy { va: c.start() });
            }
        }
        for c in &cut {
            n.svm.remove_unmapped_in(c.start().get(), c.end().get());
        }
        Ok(())
    }

    /// The garbage collector: removes the ranges an unmap took (their PTEs are already
    /// zapped and their pages released by the notifier path).
    fn collect_svm_garbage(&self, n: &mut Notifier) {
        let gone = n.svm.collect_garbage() as u64;
        self.svm_stats.collected.fetch_add(gone, Ordering::Relaxed);
    }

    /// Serves a GPU fault at `va` inside the mirror `mirror` (flags `flags`): collect
    /// garbage, find or create the range, resolve its pages, write its PTEs. `Abort` when
    /// no CPU memory backs `va` (or it cannot be resolved), or the races never settle.
    pub(crate) fn svm_fault(
        &self,
        _st: &mut VmState,
        mirror: VaRange,
        flags: MappingFlags,
        va: GpuVa,
    ) -> FaultReply {
        let placement = *self.svm_placement.lock();
        let reply = self.svm_fault_inner(mirror, flags, va.get(), placement);
        if reply == FaultReply::Abort {
            self.svm_stats.aborts.fetch_add(1, Ordering::Relaxed);
        }
        reply
    }

    /// [`Vm::svm_fault`] placing a new range per `placement` (PREFETCH names a region).
    pub(crate) fn svm_fault_placed(
        &self,
        _st: &mut VmState,
        mirror: VaRange,
        flags: MappingFlags,
        va: GpuVa,
        placement: super::migrate::SvmPlacement,
    ) -> FaultReply {
        self.svm_fault_inner(mirror, flags, va.get(), placement)
    }

    fn svm_fault_inner(
        &self,
        mirror: VaRange,
        flags: MappingFlags,
        addr: u64,
        placement: super::migrate::SvmPlacement,
    ) -> FaultReply {
        let Some(mm) = self.client_mm() else {
            return FaultReply::Abort;
        };
        let write = !flags.contains(MappingFlags::READ_ONLY);
        let mirror = (mirror.start().get(), mirror.end().get());
        for _ in 0..USERPTR_RETRIES {
            // Garbage first, so the view is current (a range an unmap took is rebuilt).
            let (since, existing) = {
                let mut n = self.notifier.write();
                self.collect_svm_garbage(&mut n);
                let found = n
                    .svm
                    .find(addr)
                    .map(|r| (r.start, r.len, r.pages.is_some()));
                (n.seq(), found)
            };
            if let Some(reply) = self.map_devmem(addr, mirror, flags, since, existing) {
                match reply {
                    Ok(true) => return FaultReply::Retry,
                    Ok(false) => continue,
                    Err(_) => return FaultReply::Abort,
                }
            }
            let chunks = match existing {
                // Already mapped (a fault record older than the fix): resume.
                Some((_, _, true)) => return FaultReply::Retry,
                Some((start, len, false)) => vec![(start, len)],
                None => {
                    let cpu = match mm.mapping_at(addr) {
                        Ok(c) => (c.start(), c.end()),
                        // The platform cannot tell: the pages themselves decide below.
                        Err(MmError::NotSupported) => (0, u64::MAX),
                        Err(MmError::Again) => continue,
                        Err(_) => return FaultReply::Abort,
                    };
                    self.notifier.read().svm.candidates(addr, cpu, mirror)
                }
            };
            // The largest chunk whose pages resolve (a chunk reaching past the CPU mapping
            // faults when the platform could not tell its bounds).
            let mut got = None;
            let mut again = false;
            for (start, len) in chunks {
                let Ok(cpu) = CpuRange::new(start, len) else {
                    continue;
                };
                match mm.get_pages(cpu, write) {
                    Ok(p) if p.pages().len() as u64 == len / PAGE_SIZE => {
                        got = Some((cpu, p));
                        break;
                    }
                    Ok(_) | Err(MmError::Fault { .. }) => continue,
                    Err(MmError::Again) => {
                        again = true;
                        break;
                    }
                    Err(_) => return FaultReply::Abort,
                }
            }
            let Some((cpu, pages)) = got else {
                if again {
                    continue;
                }
                return FaultReply::Abort;
            };
            let pages = Arc::new(pages);
            if self.wants_vram(&*mm, placement) {
                match self.migrate_to_vram(&*mm, cpu, flags, since, &pages, existing.is_some()) {
                    Migration::Done => return FaultReply::Retry,
                    Migration::Raced => continue,
                    Migration::Failed => return FaultReply::Abort,
                    // No VRAM to be had: system memory serves.
                    Migration::NoVram => {}
                }
            }
            let pages = RangePages::System(pages);
            match self.install_range(cpu, flags, since, pages, existing.is_some()) {
                Ok(true) => return FaultReply::Retry,
                // An invalidation raced the resolution: the pages are stale, never mapped.
                Ok(false) => continue,
                Err(_) => return FaultReply::Abort,
            }
        }
        FaultReply::Abort
    }

    /// Under the notifier lock: if no event touched `cpu` since `since`, records the range
    /// with its pages and writes its PTEs (waited for after the lock is dropped). `Ok(false)`
    /// if raced.
    pub(crate) fn install_range(
        &self,
        cpu: CpuRange,
        flags: MappingFlags,
        since: u64,
        pages: RangePages,
        existing: bool,
    ) -> Result<bool, BindError> {
        let (start, len) = (cpu.start(), cpu.len());
        let mut n = self.notifier.write();
        if n.raced(since, cpu) {
            return Ok(false);
        }
        let recorded = if existing {
            match n.svm.get_mut(start) {
                Some(r) if !r.unmapped && r.len == len => {
                    r.pages = Some(pages.clone());
                    true
                }
                _ => false,
            }
        } else {
            n.svm.insert(start, len, Some(pages.clone())).is_ok()
        };
        if !recorded {
            return Ok(false);
        }
        let (location, segments) = pages.target();
        let op = PtOp::Map {
            va: GpuVa(start),
            len,
            target: MapTarget::Pages {
                location,
                flags: leaf_flags(flags),
                segments,
            },
        };
        if let RangePages::Vram(_) = pages {
            n.touch_devmem(start, self.core.mm.tick());
        }
        let job = match self.stage_writes(&[op]) {
            Ok(job) => job,
            Err(e) => {
                // Nothing was written: the range goes back to having no pages.
                if let Some(r) = n.svm.get_mut(start) {
                    r.pages = None;
                }
                return Err(e);
            }
        };
        if !existing {
            let i = crate::svm::range::CHUNK_SIZES
                .iter()
                .position(|c| *c == len)
                .unwrap_or(2);
            self.svm_stats.faults_by_chunk[i].fetch_add(1, Ordering::Relaxed);
        }
        drop(n);
        if let Some(job) = job {
            self.finish_writes(job)?;
        }
        Ok(true)
    }

    /// The VM's SVM ranges now, in address order.
    pub fn svm_ranges(&self) -> Vec<RangeInfo> {
        self.notifier
            .read()
            .svm
            .iter()
            .map(|r| RangeInfo {
                start: r.start,
                len: r.len,
                mapped: r.pages.is_some(),
                unmapped: r.unmapped,
                in_vram: matches!(r.pages, Some(RangePages::Vram(_))),
            })
            .collect()
    }

    /// The VM's SVM counters.
    pub fn svm_stats(&self) -> &SvmStats {
        &self.svm_stats
    }
}
