//! SVM migration: a mirror's ranges move to VRAM on GPU fault and back to the client's
//! memory on CPU fault, on VRAM pressure, and when the VM goes — gpud acting as the pager.
//!
//! Owns: the placement policy ([`SvmPlacement`], [`Vm::wants_vram`]: a GPU fault on a range
//! migrates it to VRAM — the chunk is the range — when the VM prefers VRAM and the client's
//! memory manager can take pages from the CPU and serve its faults; VRAM that cannot be had
//! without waiting leaves the range in system memory), the VM's device memory ([`DevMem`]:
//! per CPU range whose data lives in VRAM, the allocation, charged to the client), and the
//! moves: to VRAM (write-protect the CPU pages, copy them into VRAM with the copy engine,
//! take them from the CPU, map VRAM), back (take the GPU mapping: zap and TLB invalidation,
//! copy VRAM out, `supply` the bytes to the CPU, then free the VRAM), and [`SvmEvictor`]
//! over every VM for the memory manager.
//!
//! Must not: run on a request thread (the moves wait for copies: they run on the fault
//! worker, the platform's event reader, or an allocation that may evict like a BO's),
//! call the memory manager with the notifier lock held, or free VRAM a PTE may still reach
//! (a range mapping VRAM holds its `Arc<SvmVram>` until its zap completed).
//!
//! Locking: `vm.lock` (fault worker only) → `Vm::svm_migrate` (one move of this VM at a
//! time; the notifier path takes it too, so an address-space change waits for a move in
//! progress and never sees half of one) → the notifier lock → the page-table lock. The
//! evictor only try-locks `svm_migrate`: an allocation never waits for another move.

use super::mirror::RangePages;
use super::userptr::Notifier;
use super::vm::{Vm, VmState};
use super::Region;
use crate::device::Core;
use crate::hw::pte::MemLocation;
use crate::hw::FaultReply;
use crate::mem::svm::{SvmEvictor, SvmVram};
use crate::svm::range::CHUNK_SIZES;
use crate::svm::{ClientMm, CpuRange, PinnedPages, Revoke, Supply};
use crate::sync::{Fence, FenceContext, FenceStatus};
use crate::types::GpuVa;
use crate::types::PAGE_SIZE;
use crate::vm::pagetable::PhysSeg;
use crate::vm::MappingFlags;
use crate::vm::VaRange;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::sync::OnceLock;

/// Where GPU faults place a VM's SVM ranges (Xe's preferred location).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SvmPlacement {
    /// Migrate to VRAM when the platform can (Xe's default on a discrete GPU).
    #[default]
    Vram,
    /// Leave the data in the client's system memory.
    System,
}

/// A CPU range whose data this VM migrated to VRAM: the CPU side has no pages there (a CPU
/// access faults to gpud); the data lives only in `vram`.
#[derive(Debug)]
pub struct DevMem {
    pub start: u64,
    pub len: u64,
    pub vram: Arc<SvmVram>,
    /// The memory manager's LRU clock when the GPU last mapped it.
    pub last_use: u64,
}

impl DevMem {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// How a migration to VRAM ended.
pub(crate) enum Migration {
    /// The range maps VRAM.
    Done,
    /// An address-space change raced it; the data went back, the fault retries.
    Raced,
    /// No VRAM (or the platform refused): the caller maps system memory.
    NoVram,
    /// The range could not be mapped.
    Failed,
}

impl Notifier {
    /// Removes and returns the device memory overlapping `[start, end)`.
    pub(crate) fn take_devmem(&mut self, start: u64, end: u64) -> Vec<DevMem> {
        let keys: Vec<u64> = self
            .devmem
            .range(..end)
            .filter(|(_, d)| start < d.end())
            .map(|(s, _)| *s)
            .collect();
        keys.iter().filter_map(|s| self.devmem.remove(s)).collect()
    }

    /// The GPU mapped the device memory at `start` now.
    pub(crate) fn touch_devmem(&mut self, start: u64, tick: u64) {
        if let Some(d) = self.devmem.get_mut(&start) {
            d.last_use = tick;
        }
    }

    fn devmem_bytes(&self) -> u64 {
        self.devmem.values().map(|d| d.len).sum()
    }
}

impl Vm {
    /// Where this VM's GPU faults place SVM ranges from now on.
    pub fn set_svm_placement(&self, p: SvmPlacement) {
        *self.svm_placement.lock() = p;
    }

    /// The placement policy: VRAM when preferred and the client's memory manager can take
    /// pages from the CPU, write-protect them and serve the CPU's faults.
    pub(crate) fn wants_vram(&self, mm: &dyn ClientMm, placement: SvmPlacement) -> bool {
        let caps = mm.caps();
        placement == SvmPlacement::Vram && caps.revoke && caps.lazy_fault && caps.write_protect
    }

    /// Bytes of VRAM the VM's SVM ranges hold (charged to the client like its BOs).
    pub fn svm_vram_bytes(&self) -> u64 {
        self.svm_stats.vram_bytes.load(Ordering::Relaxed)
    }

    /// Records the VRAM `n`'s device memory holds (the client's charge).
    pub(crate) fn note_devmem(&self, n: &Notifier) {
        self.svm_stats
            .vram_bytes
            .store(n.devmem_bytes(), Ordering::Relaxed);
    }

    /// A GPU fault at `addr` where this VM holds the data in VRAM for exactly the range the
    /// fault maps (or would create): maps the VRAM again. `None` if not.
    pub(crate) fn map_devmem(
        &self,
        addr: u64,
        mirror: (u64, u64),
        flags: MappingFlags,
        since: u64,
        existing: Option<(u64, u64, bool)>,
    ) -> Option<Result<bool, super::BindError>> {
        let _moves = self.svm_migrate.lock();
        let (cpu, vram) = {
            let n = self.notifier.read();
            let d = n.devmem.range(..=addr).next_back().map(|(_, d)| d)?;
            if addr >= d.end() {
                return None;
            }
            let fits = match existing {
                Some((s, l, _)) => (s, l) == (d.start, d.len),
                None => {
                    n.svm.candidates(addr, (d.start, d.end()), mirror).first()
                        == Some(&(d.start, d.len))
                }
            };
            if !fits {
                return None;
            }
            (CpuRange::new(d.start, d.len).ok()?, d.vram.clone())
        };
        let vram = RangePages::Vram(vram);
        Some(self.install_range(cpu, flags, since, vram, existing.is_some()))
    }

    /// Migrates the range `cpu`, whose system pages `pages` were just resolved (and are not
    /// GPU-mapped), to VRAM and maps it there. Runs on the fault worker.
    pub(crate) fn migrate_to_vram(
        &self,
        mm: &dyn ClientMm,
        cpu: CpuRange,
        flags: MappingFlags,
        since: u64,
        pages: &Arc<PinnedPages>,
        existing: bool,
    ) -> Migration {
        // VRAM first, with no lock of this VM's moves held: the allocation may evict.
        let vram = match self.core.mm.alloc_svm(cpu.len()) {
            Ok((vram, report)) => {
                self.core.route_evictions(report, None);
                Arc::new(vram)
            }
            Err(_) => {
                self.svm_stats
                    .vram_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                return Migration::NoVram;
            }
        };
        let _moves = self.svm_migrate.lock();
        // CPU writes wait (fault to gpud, which serves them after this move) from here on,
        // so the copy is the data.
        if mm.revoke_cpu(cpu, Revoke::WriteProtect).is_err() {
            return Migration::NoVram;
        }
        let src: Vec<PhysSeg> = super::userptr::PageWindow::whole(pages.clone()).segments();
        let copied = self.core.mm.copy_segments(
            (MemLocation::System, &src),
            (MemLocation::Vram, &vram.segments()),
        );
        if copied.is_err() || mm.revoke_cpu(cpu, Revoke::Evict).is_err() {
            let _ = mm.supply(cpu, Supply::Wake);
            return Migration::NoVram;
        }
        // The CPU has no pages there now: the data lives in VRAM (and, until `pages` is
        // dropped, in the old pages).
        {
            let mut n = self.notifier.write();
            if n.raced(since, cpu) {
                drop(n);
                // The CPU side changed meanwhile: what was there goes back as it was.
                self.supply_from_pages(mm, cpu, pages);
                return Migration::Raced;
            }
            n.devmem.insert(
                cpu.start(),
                DevMem {
                    start: cpu.start(),
                    len: cpu.len(),
                    vram: vram.clone(),
                    last_use: self.core.mm.tick(),
                },
            );
            self.note_devmem(&n);
        }
        self.svm_stats.to_vram.fetch_add(1, Ordering::Relaxed);
        match self.install_range(cpu, flags, since, RangePages::Vram(vram), existing) {
            Ok(true) => Migration::Done,
            // The data stays in VRAM; the next fault maps it (`map_devmem`).
            Ok(false) => Migration::Raced,
            Err(_) => Migration::Failed,
        }
    }

    /// Gives the CPU the content of `pages` at `cpu` (a migration that raced).
    fn supply_from_pages(&self, mm: &dyn ClientMm, cpu: CpuRange, pages: &PinnedPages) {
        let mut buf = vec![0u8; cpu.len() as usize];
        for (i, pa) in pages.pages().iter().enumerate() {
            let off = i * PAGE_SIZE as usize;
            if let Some(chunk) = buf.get_mut(off..off + PAGE_SIZE as usize) {
                if self.core.dma.read(*pa, chunk).is_err() {
                    self.svm_stats.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let _ = mm.supply(cpu, Supply::Copy(&buf));
    }

    /// Takes every GPU mapping of `[start, end)`'s SVM ranges (zap, TLB invalidation); the
    /// ranges stay and refault. Pages whose zap failed are held until the VM goes.
    fn unmap_gpu_locked(&self, n: &mut Notifier, start: u64, end: u64) {
        let taken = n.svm.take_gpu(start, end);
        if taken.is_empty() {
            return;
        }
        let zap: Vec<(u64, u64)> = taken.iter().map(|i| (i.start, i.len)).collect();
        let zapped = {
            let mut pt = self.pt.lock();
            self.zap_locked(&mut pt, &zap)
        };
        if let Err(e) = zapped {
            tracing::warn!(vm = ?self.id, error = %e, "SVM zap failed: memory held until the VM goes");
            for i in taken {
                match i.pages {
                    RangePages::System(p) => n.hold(vec![super::userptr::PageWindow::whole(p)]),
                    RangePages::Vram(v) => n.held_vram.push(v),
                }
            }
        }
        // INVARIANT: otherwise the PTEs are gone and the invalidation retired: the pages
        // and VRAM `taken` held are released here.
    }

    /// Copies `d`'s VRAM out (copy engine, waited for) and supplies `pieces` — `(CPU start
    /// in d, len, where the CPU gets it)` — to the client. The GPU no longer maps `d`.
    fn give_back(&self, d: DevMem, pieces: &[(u64, u64, u64)]) {
        let Some(mm) = self.client_mm() else {
            return;
        };
        let data = self.copy_out(&d);
        if data.is_none() {
            self.svm_stats.lost.fetch_add(1, Ordering::Relaxed);
        }
        for &(src, len, dst) in pieces {
            let Ok(r) = CpuRange::new(dst, len) else {
                continue;
            };
            let off = (src - d.start) as usize;
            let src = match &data {
                Some(bytes) => bytes
                    .get(off..off + len as usize)
                    .map_or(Supply::Zero, Supply::Copy),
                None => Supply::Zero,
            };
            if let Err(e) = mm.supply(r, src) {
                tracing::debug!(vm = ?self.id, error = %e, "SVM data not taken back by the client");
            }
        }
        // INVARIANT: nothing maps `d.vram` (the caller zapped its ranges): freed here.
        drop(d);
    }

    /// The bytes of `d`, copied from VRAM through a staging buffer in system memory.
    fn copy_out(&self, d: &DevMem) -> Option<Vec<u8>> {
        let staging = self.core.dma.alloc(d.len).ok()?;
        let to = [PhysSeg {
            addr: staging.addr,
            len: d.len,
        }];
        let copied = self.core.mm.copy_segments(
            (MemLocation::Vram, &d.vram.segments()),
            (MemLocation::System, &to),
        );
        let mut buf = vec![0u8; d.len as usize];
        let read = copied.is_ok() && self.core.dma.read(staging.addr, &mut buf).is_ok();
        let _ = self.core.dma.free(staging);
        read.then_some(buf)
    }

    /// Takes the device memory overlapping `[start, end)` out of this VM, its GPU mappings
    /// zapped. The caller holds `svm_migrate`.
    fn take_devmem_unmapped(&self, start: u64, end: u64) -> Vec<DevMem> {
        let mut n = self.notifier.write();
        let taken = n.take_devmem(start, end);
        for d in &taken {
            self.unmap_gpu_locked(&mut n, d.start, d.end());
        }
        self.note_devmem(&n);
        taken
    }

    /// A CPU access at `va` faulted to gpud: the range holding it in VRAM goes back to
    /// system memory (zap, invalidate, copy back, then free the VRAM).
    pub(crate) fn svm_cpu_fault(&self, va: u64) {
        let _moves = self.svm_migrate.lock();
        for d in self.take_devmem_unmapped(va, va + 1) {
            let whole = [(d.start, d.len, d.start)];
            self.give_back(d, &whole);
            self.svm_stats.to_ram.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// After an invalidation took device memory of which the change covered only a part:
    /// the rest goes back to the CPU. The caller holds `svm_migrate`.
    pub(crate) fn svm_restore(&self, restore: Vec<(DevMem, CpuRange)>) {
        for (d, r) in restore {
            let mut pieces = Vec::new();
            if d.start < r.start() {
                pieces.push((d.start, r.start() - d.start, d.start));
            }
            if r.end() < d.end() {
                pieces.push((r.end(), d.end() - r.end(), r.end()));
            }
            self.give_back(d, &pieces);
        }
    }

    /// `mremap` moved `from` to `to`: data in VRAM for `from` goes back to the CPU at its new
    /// address (what lay outside `from` stays where it was).
    pub(crate) fn svm_remapped(&self, from: CpuRange, to: u64) {
        let _moves = self.svm_migrate.lock();
        for d in self.take_devmem_unmapped(from.start(), from.end()) {
            let mut pieces = Vec::new();
            let (s, e) = (d.start.max(from.start()), d.end().min(from.end()));
            if d.start < s {
                pieces.push((d.start, s - d.start, d.start));
            }
            pieces.push((s, e - s, to + (s - from.start())));
            if e < d.end() {
                pieces.push((e, d.end() - e, e));
            }
            self.give_back(d, &pieces);
        }
    }

    /// The VM goes: every range in VRAM goes back to the client's memory.
    pub(crate) fn svm_release_devmem(&self) {
        let _moves = self.svm_migrate.lock();
        for d in self.take_devmem_unmapped(0, u64::MAX) {
            let whole = [(d.start, d.len, d.start)];
            self.give_back(d, &whole);
        }
    }

    /// The LRU clock of this VM's least recently mapped range in VRAM.
    fn svm_oldest(&self) -> Option<u64> {
        self.notifier
            .read()
            .devmem
            .values()
            .map(|d| d.last_use)
            .min()
    }

    /// Evicts this VM's least recently mapped range in VRAM to system memory, unless a move
    /// of this VM is in progress (never waits for one). Whether one went.
    fn svm_evict_oldest(&self) -> bool {
        let Some(_moves) = self.svm_migrate.try_lock() else {
            return false;
        };
        let oldest = {
            let n = self.notifier.read();
            n.devmem
                .values()
                .min_by_key(|d| d.last_use)
                .map(|d| (d.start, d.end()))
        };
        let Some((start, end)) = oldest else {
            return false;
        };
        for d in self.take_devmem_unmapped(start, end) {
            let whole = [(d.start, d.len, d.start)];
            self.give_back(d, &whole);
        }
        self.svm_stats.evicted.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl SvmEvictor for Core {
    fn oldest(&self) -> Option<u64> {
        self.live_vms()
            .iter()
            .filter_map(|vm| vm.svm_oldest())
            .min()
    }

    fn evict_one(&self) -> bool {
        let mut vms: Vec<(u64, Arc<Vm>)> = self
            .live_vms()
            .into_iter()
            .filter_map(|vm| Some((vm.svm_oldest()?, vm)))
            .collect();
        vms.sort_by_key(|(t, _)| *t);
        vms.into_iter().any(|(_, vm)| vm.svm_evict_oldest())
    }
}

/// Bytes of one PREFETCH op of a mirror that are prefetched at most (the rest is left to
/// faults): the work runs on one thread and walks the range chunk by chunk.
pub const PREFETCH_MAX: u64 = 4 << 30;

/// Runs `task` on the SVM migration thread (PREFETCH work; on this thread if it could not
/// start).
type Task = Box<dyn FnOnce() + Send>;

fn migration_worker(task: Task) {
    static WORKER: OnceLock<Option<Mutex<Sender<Task>>>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (tx, rx) = channel::<Task>();
        std::thread::Builder::new()
            .name("gpud-svm-migrate".into())
            .spawn(move || {
                while let Ok(task) = rx.recv() {
                    task();
                }
            })
            .ok()?;
        Some(Mutex::new(tx))
    });
    match worker {
        Some(tx) => {
            if let Err(e) = tx.lock().send(task) {
                (e.0)();
            }
        }
        None => task(),
    }
}

impl Vm {
    /// PREFETCH of `[addr, addr + len)` into `region` where mirrors cover it, after the
    /// bind's own work (`after`): ranges are created (or moved) and mapped ahead of faults,
    /// on the migration thread. Returns the fence that signals when that is done, or `after`
    /// itself when no mirror is concerned.
    pub(crate) fn prefetch_mirrors(
        self: &Arc<Self>,
        ops: &[super::BindOp],
        after: Arc<Fence>,
    ) -> Arc<Fence> {
        let spans: Vec<(u64, u64, Region)> = {
            let st = self.lock.read();
            ops.iter()
                .filter(|op| op.kind == super::OpKind::Prefetch)
                .flat_map(|op| {
                    let end = op.addr.get().saturating_add(op.range.min(PREFETCH_MAX));
                    mirror_spans(&st, op.addr.get(), end)
                        .into_iter()
                        .map(move |(s, e)| (s, e, op.prefetch_region))
                })
                .collect()
        };
        if spans.is_empty() {
            return after;
        }
        let done = Fence::new(FenceContext::alloc(), 1);
        let (vm, signal) = (Arc::downgrade(self), done.clone());
        after.on_signal(move |f| {
            let failed = matches!(f.status(), FenceStatus::Failed(_));
            migration_worker(Box::new(move || {
                if let (false, Some(vm)) = (failed, vm.upgrade()) {
                    for (s, e, region) in spans {
                        vm.prefetch_span(s, e, region);
                    }
                }
                let _ = signal.signal();
            }));
        });
        done
    }

    /// Prefetches `[start, end)` of a mirror chunk by chunk (stops when the VM goes).
    fn prefetch_span(&self, start: u64, end: u64, region: Region) {
        let mut addr = start;
        while addr < end && !self.is_closed() && !self.is_banned() {
            addr = self.prefetch_at(addr, region).max(addr + PAGE_SIZE);
        }
    }

    /// Makes the range at `addr` resident in `region` (created if needed, moved if it is
    /// elsewhere); returns where the next one starts. Unmapped CPU memory is skipped (a
    /// 2 MiB step: PREFETCH is a hint, like Xe's, which swallows its failures).
    fn prefetch_at(&self, addr: u64, region: Region) -> u64 {
        let placement = match region {
            Region::System => SvmPlacement::System,
            Region::Vram => SvmPlacement::Vram,
            Region::Preferred => *self.svm_placement.lock(),
        };
        let mut st = self.lock.write();
        let Some(m) = st
            .mapping_at(GpuVa(addr))
            .filter(|m| m.flags().contains(MappingFlags::CPU_MIRROR))
            .cloned()
        else {
            return addr + PAGE_SIZE;
        };
        let found = self
            .notifier
            .read()
            .svm
            .find(addr)
            .map(|r| (r.start, r.end()));
        match placement {
            // Data in VRAM comes back first.
            SvmPlacement::System => self.svm_cpu_fault(addr),
            // A range mapping system memory is unmapped, so the fault below migrates it.
            SvmPlacement::Vram => {
                let in_sys = {
                    let n = self.notifier.read();
                    n.svm
                        .find(addr)
                        .is_some_and(|r| matches!(r.pages, Some(RangePages::System(_))))
                };
                if let (true, Some((s, e))) = (in_sys, found) {
                    let _moves = self.svm_migrate.lock();
                    let mut n = self.notifier.write();
                    self.unmap_gpu_locked(&mut n, s, e);
                }
            }
        }
        let reply = self.svm_fault_placed(&mut st, m.range(), m.flags(), GpuVa(addr), placement);
        drop(st);
        match (reply, self.notifier.read().svm.find(addr)) {
            (FaultReply::Retry, Some(r)) => r.end(),
            _ => (addr & !(CHUNK_SIZES[0] - 1)) + CHUNK_SIZES[0],
        }
    }
}

/// The parts of `[start, end)` mirrors cover.
fn mirror_spans(st: &VmState, start: u64, end: u64) -> Vec<(u64, u64)> {
    let Ok(probe) = VaRange::new(GpuVa(start), end.saturating_sub(start)) else {
        return Vec::new();
    };
    st.gpuvm
        .tree()
        .iter_range(probe)
        .filter(|m| m.flags().contains(MappingFlags::CPU_MIRROR))
        .map(|m| {
            let r = m.range();
            (r.start().get().max(start), r.end().get().min(end))
        })
        .collect()
}
