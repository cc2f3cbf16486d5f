//! userptr: GPU mappings of a client's own CPU memory, and the VM's notifier path.
//!
//! Owns: [`Notifier`] (what the VM's notifier lock protects: each userptr mapping's CPU
//! range, its sequence and its pinned pages, the VM's event sequence with a short log of
//! recent events for binds in flight), the [`MmTarget`] side of the VM (an address-space
//! change → notifier lock (write) → bump sequences → zap the GPU PTEs and invalidate the TLB
//! → release the old pages), the population of invalid userptrs (EXEC revalidation,
//! fault-mode refault) and the userptr half of a bind's commit.
//!
//! Must not: call the memory manager (`get_pages`) with the notifier or page-table lock held
//! (a platform may need its event reader, which takes them, to resolve pages), wait for GPU
//! work on the notifier path (only for the TLB invalidation and for bind jobs already
//! committed on the zapped table pages, both bounded), or drop pages a PTE or a TLB entry
//! may still reach.
//!
//! Locking: `vm.lock` → reservations → the notifier lock (`Vm::notifier`, class
//! `MmNotifier`) → the page-table lock (class `NotifierLock`). Pages are resolved under
//! `vm.lock` only; a bind or revalidation reads the sequence first, resolves outside the
//! notifier lock, then re-checks under it before writing PTEs, and retries if an event
//! raced it (Linux's `mmu_interval_read_begin` / `read_retry`).

use super::claims::Footprint;
use super::error::BindError;
use super::migrate::DevMem;
use super::mirror::RangePages;
use super::queue::{run_job, BindJob, BindQueueId};
use super::vm::{leaf_flags, Vm, VmState};
use crate::hw::pte::MemLocation;
use crate::mem::svm::SvmVram;
use crate::svm::range::SvmRanges;
use crate::svm::{CpuRange, MmError, MmTarget, PinnedPages};
use crate::sync::{Fence, FenceContext, FenceStatus};
use crate::types::{GpuVa, PhysAddr, PAGE_SIZE};
use crate::vm::pagetable::{MapTarget, PhysSeg, PtOp};
use crate::vm::{MappingFlags, MappingSpec, Step};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// How many times a bind, a revalidation or a refault retries when an invalidation raced
/// it before giving up.
pub const USERPTR_RETRIES: u32 = 16;
/// Events remembered for the race check of binds in flight (older ones count as a race).
const EVENT_LOG: usize = 64;

/// Pages of one userptr piece: a window of a (possibly shared) pin. A partial unmap leaves
/// two pieces sharing the pin of the old mapping.
#[derive(Debug, Clone)]
pub struct PageWindow {
    pin: Arc<PinnedPages>,
    first: usize,
    count: usize,
}

impl PageWindow {
    pub(crate) fn whole(pin: Arc<PinnedPages>) -> Self {
        let count = pin.pages().len();
        Self {
            pin,
            first: 0,
            count,
        }
    }

    /// The window `[first, first + count)` of this one (`None` if it leaves it).
    fn sub(&self, first: usize, count: usize) -> Option<Self> {
        (first.checked_add(count)? <= self.count).then(|| Self {
            pin: self.pin.clone(),
            first: self.first + first,
            count,
        })
    }

    /// The device address of the window's `i`-th page.
    fn page(&self, i: usize) -> Option<PhysAddr> {
        (i < self.count)
            .then(|| self.pin.pages().get(self.first + i).copied())
            .flatten()
    }

    /// The segments (physically contiguous runs) of the window, in order.
    pub(crate) fn segments(&self) -> Vec<PhysSeg> {
        let pages = self.pin.pages();
        let mut out: Vec<PhysSeg> = Vec::new();
        for pa in pages.iter().skip(self.first).take(self.count) {
            match out.last_mut() {
                Some(s) if s.addr.get() + s.len == pa.get() => s.len += PAGE_SIZE,
                _ => out.push(PhysSeg {
                    addr: *pa,
                    len: PAGE_SIZE,
                }),
            }
        }
        out
    }
}

/// One userptr mapping as the notifier sees it (keyed by its GPU start).
#[derive(Debug, Clone)]
pub struct Userptr {
    /// GPU length (the CPU range has the same).
    pub len: u64,
    /// The CPU range it mirrors.
    pub cpu: CpuRange,
    /// The mapping's flags (read-only, PAT index).
    pub flags: MappingFlags,
    /// The notifier sequence of the last event that touched it.
    pub seq: u64,
    /// Its pages while valid; `None` once an event invalidated it (or before a fault-mode
    /// VM populated it).
    pub pages: Option<PageWindow>,
}

/// What the VM's notifier lock protects.
#[derive(Debug, Default)]
pub struct Notifier {
    userptrs: BTreeMap<u64, Userptr>,
    /// Bumped by every event (the VM's `mmu_interval_notifier` sequence).
    seq: u64,
    /// The last [`EVENT_LOG`] events: (their sequence, the range they touched).
    log: VecDeque<(u64, CpuRange)>,
    /// Pages that may not be released (a zap failed, or the VM's tables still hold them):
    /// kept until the VM goes.
    held: Vec<PageWindow>,
    /// The SVM ranges of the VM's CPU-address mirrors (see `mirror.rs`).
    pub(crate) svm: SvmRanges<RangePages>,
    /// CPU ranges whose data this VM migrated to VRAM, by CPU start (see `migrate.rs`).
    pub(crate) devmem: BTreeMap<u64, DevMem>,
    /// VRAM that may not be freed (a zap failed, or the VM's tables still map it): kept
    /// until the VM goes.
    pub(crate) held_vram: Vec<Arc<SvmVram>>,
}

/// A range invalidated by an event: the GPU ranges to zap and the pages to release after.
#[derive(Debug, Default)]
pub struct Invalidation {
    /// `(gpu start, len)` of every userptr that lost its pages.
    pub zap: Vec<(u64, u64)>,
    /// The pages, released once the zap and its TLB invalidation completed.
    pub pages: Vec<PageWindow>,
    /// VRAM of SVM ranges, freed once the zap and its TLB invalidation completed.
    pub vram: Vec<Arc<SvmVram>>,
    /// Data in VRAM of which the change took only a part: the rest goes back to the CPU
    /// (after the zap, with the notifier lock dropped).
    pub restore: Vec<(DevMem, CpuRange)>,
}

impl Notifier {
    /// The VM's event sequence now (read before resolving pages).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether an event after sequence `since` may have touched `r` (true when the log no
    /// longer reaches back that far).
    pub fn raced(&self, since: u64, r: CpuRange) -> bool {
        if self.seq == since {
            return false;
        }
        match self.log.front() {
            Some((oldest, _)) if *oldest <= since + 1 => {
                self.log.iter().any(|(s, lr)| *s > since && lr.overlaps(r))
            }
            _ => true,
        }
    }

    /// An event touched `r`: every userptr overlapping it loses its pages (returned for the
    /// zap and the release) and takes the new sequence.
    pub fn invalidate(&mut self, r: CpuRange) -> Invalidation {
        self.seq += 1;
        if self.log.len() == EVENT_LOG {
            self.log.pop_front();
        }
        self.log.push_back((self.seq, r));
        let mut out = Invalidation::default();
        for (start, u) in self.userptrs.iter_mut() {
            if u.cpu.overlaps(r) {
                u.seq = self.seq;
                if let Some(p) = u.pages.take() {
                    out.zap.push((*start, u.len));
                    out.pages.push(p);
                }
            }
        }
        self.invalidate_svm(r, &mut out);
        out
    }

    /// The address space is gone (or replaced): every userptr loses its pages, and every
    /// resolution in flight counts as raced.
    pub fn invalidate_all(&mut self) -> Invalidation {
        self.invalidate(everything())
    }

    /// The userptr starting at GPU `start`.
    pub fn get(&self, start: u64) -> Option<&Userptr> {
        self.userptrs.get(&start)
    }

    /// The userptr covering GPU `va`: `(its start, it)`.
    pub fn covering(&self, va: u64) -> Option<(u64, &Userptr)> {
        self.userptrs
            .range(..=va)
            .next_back()
            .filter(|(s, u)| va - **s < u.len)
            .map(|(s, u)| (*s, u))
    }

    /// Userptrs without pages: `(gpu start, userptr)`.
    pub fn invalid(&self) -> Vec<(u64, Userptr)> {
        self.userptrs
            .iter()
            .filter(|(_, u)| u.pages.is_none())
            .map(|(s, u)| (*s, u.clone()))
            .collect()
    }

    /// How many userptrs have no pages.
    pub fn invalid_count(&self) -> usize {
        self.userptrs.values().filter(|u| u.pages.is_none()).count()
    }

    /// How many userptrs there are.
    pub fn len(&self) -> usize {
        self.userptrs.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.userptrs.is_empty()
    }

    /// Bytes of pages the userptrs hold (the client's charge).
    pub fn pinned_bytes(&self) -> u64 {
        self.userptrs
            .values()
            .filter_map(|u| u.pages.as_ref())
            .map(|p| p.count as u64 * PAGE_SIZE)
            .sum()
    }

    /// Inserts (or replaces) the userptr at GPU `start`.
    pub fn insert(&mut self, start: u64, u: Userptr) -> Option<Userptr> {
        self.userptrs.insert(start, u)
    }

    /// Removes the userptr at GPU `start`.
    pub fn remove(&mut self, start: u64) -> Option<Userptr> {
        self.userptrs.remove(&start)
    }

    /// Installs `pages` into the userptr at `start` if it still mirrors `cpu` and no event
    /// touched it after `since`; gives them back otherwise.
    pub fn install(
        &mut self,
        start: u64,
        cpu: CpuRange,
        since: u64,
        pages: PageWindow,
    ) -> Result<(), PageWindow> {
        match self.userptrs.get_mut(&start) {
            Some(u) if u.cpu == cpu && u.seq <= since => {
                u.pages = Some(pages);
                Ok(())
            }
            _ => Err(pages),
        }
    }

    /// Takes every userptr (the VM's tree is being emptied): their pages stay held until
    /// the VM goes, since its tables keep their entries until then.
    pub fn release_all(&mut self) {
        let pages: Vec<PageWindow> = std::mem::take(&mut self.userptrs)
            .into_values()
            .filter_map(|u| u.pages)
            .collect();
        self.held.extend(pages);
        for p in self.svm.take_all() {
            match p {
                RangePages::System(pin) => self.held.push(PageWindow::whole(pin)),
                RangePages::Vram(v) => self.held_vram.push(v),
            }
        }
    }

    /// Keeps `pages` until the VM goes (their PTEs may still be reachable).
    pub fn hold(&mut self, pages: Vec<PageWindow>) {
        self.held.extend(pages);
    }
}

/// A userptr op's pages resolved during planning, waiting for the commit.
pub(crate) struct PendingUserptr {
    /// GPU start of the op's mapping.
    pub gpu: u64,
    pub cpu: CpuRange,
    /// The notifier sequence read before resolving.
    pub since: u64,
    pub pages: Arc<PinnedPages>,
}

/// The bind error of a memory-manager failure at `va` (a CPU address).
pub(crate) fn mm_error(va: u64, e: MmError) -> BindError {
    BindError::Userptr { va, source: e }
}

impl Vm {
    /// Resolves the pages of a MAP_USERPTR op (EFAULT without a registered address space
    /// or over memory it cannot resolve). Called under `vm.lock`, outside the reservations
    /// and the notifier lock.
    pub(crate) fn resolve_userptr(
        &self,
        gpu: u64,
        cpu: CpuRange,
        read_only: bool,
    ) -> Result<PendingUserptr, BindError> {
        let mm = self
            .client_mm()
            .ok_or(mm_error(cpu.start(), MmError::Fault { va: cpu.start() }))?;
        let mut last = MmError::Again;
        for _ in 0..USERPTR_RETRIES {
            let since = self.notifier.read().seq();
            match mm.get_pages(cpu, !read_only) {
                Ok(pages) if pages.pages().len() as u64 == cpu.pages() => {
                    return Ok(PendingUserptr {
                        gpu,
                        cpu,
                        since,
                        pages: Arc::new(pages),
                    })
                }
                Ok(_) => return Err(mm_error(cpu.start(), MmError::Fault { va: cpu.start() })),
                Err(MmError::Again) => last = MmError::Again,
                Err(e) => return Err(mm_error(cpu.start(), e)),
            }
        }
        Err(mm_error(cpu.start(), last))
    }

    /// The PTE op mapping `pages` at GPU `start` with `flags`.
    pub(crate) fn userptr_op(
        start: u64,
        len: u64,
        flags: MappingFlags,
        pages: &PageWindow,
    ) -> PtOp {
        PtOp::Map {
            va: GpuVa(start),
            len,
            target: MapTarget::Pages {
                location: MemLocation::System,
                flags: leaf_flags(flags),
                segments: pages.segments(),
            },
        }
    }

    /// At a bind's commit point (`vm.lock`, the notifier lock and the page-table lock held):
    /// the userptr records follow the applied steps. New mappings take their resolved pages
    /// (none on a fault-mode VM without IMMEDIATE: the first fault resolves them again);
    /// a partial unmap leaves pieces sharing the old pages; pages of removed mappings are
    /// returned, to be released once the bind job (which clears their PTEs and invalidates
    /// the TLB) completed.
    pub(crate) fn record_userptrs<'a>(
        n: &mut Notifier,
        steps: impl Iterator<Item = (&'a Step, bool)>,
        pending: &[PendingUserptr],
    ) -> Vec<PageWindow> {
        let mut released = Vec::new();
        // The k-th userptr Map step is the k-th MAP_USERPTR op (see `translate`).
        let mut userptrs = pending.iter();
        for (step, immediate) in steps {
            match step {
                Step::Map(spec) if spec.flags().contains(MappingFlags::USERPTR) => {
                    let start = spec.range().start().get();
                    let Some(p) = userptrs.next() else {
                        continue;
                    };
                    debug_assert_eq!(p.gpu, start, "userptr pages out of op order");
                    let u = Userptr {
                        len: spec.range().len(),
                        cpu: p.cpu,
                        flags: spec.flags(),
                        seq: p.since,
                        pages: immediate.then(|| PageWindow::whole(p.pages.clone())),
                    };
                    released.extend(n.insert(start, u).and_then(|old| old.pages));
                }
                Step::Remap(r) if r.unmap().old().flags().contains(MappingFlags::USERPTR) => {
                    let old_start = r.unmap().old().range().start().get();
                    let Some(old) = n.remove(old_start) else {
                        continue;
                    };
                    for piece in [r.prev(), r.next()].into_iter().flatten() {
                        n.insert(
                            piece.range().start().get(),
                            piece_of(&old, old_start, piece),
                        );
                    }
                    released.extend(old.pages);
                }
                Step::Unmap(u) if u.old().flags().contains(MappingFlags::USERPTR) => {
                    if let Some(old) = n.remove(u.old().range().start().get()) {
                        released.extend(old.pages);
                    }
                }
                _ => {}
            }
        }
        released
    }

    /// Releases `pages` once `fence` (the job clearing their PTEs and invalidating the TLB)
    /// signalled; a failed job may not have cleared them, so they are then held until the
    /// VM goes.
    pub(crate) fn release_after(self: &Arc<Self>, fence: &Arc<Fence>, pages: Vec<PageWindow>) {
        if pages.is_empty() {
            return;
        }
        let vm = Arc::downgrade(self);
        fence.on_signal(move |f| {
            if matches!(f.status(), FenceStatus::Failed(_)) {
                if let Some(vm) = vm.upgrade() {
                    vm.notifier.write().hold(pages);
                }
            }
        });
    }

    /// Reads the u64 at GPU `va` (8-byte aligned) through the userptr mapping covering it: a
    /// user fence in client memory. `None` if no userptr covers `va`. A valid userptr is read
    /// through its pages under the notifier lock (no event replaces them meanwhile); an
    /// invalidated one (or one a fault-mode VM has not populated) through the page the
    /// address space resolves now, checked against the notifier sequence and read again if
    /// an event raced. Memory the address space cannot resolve is `Fault` (EFAULT, as Xe).
    /// Never takes `vm.lock` and never waits for GPU work.
    pub fn userptr_read_u64(&self, va: u64) -> Option<Result<u64, MmError>> {
        for _ in 0..USERPTR_RETRIES {
            let (since, cpu) = {
                let n = self.notifier.read();
                let (start, u) = n.covering(va)?;
                let cpu = u.cpu.start() + (va - start);
                if let Some(pages) = &u.pages {
                    let value = pages
                        .page(((va - start) / PAGE_SIZE) as usize)
                        .and_then(|pa| {
                            self.core
                                .dma
                                .read_u64(PhysAddr(pa.get() + va % PAGE_SIZE))
                                .ok()
                        });
                    return Some(value.ok_or(MmError::Fault { va: cpu }));
                }
                (n.seq(), cpu)
            };
            let Some(mm) = self.client_mm() else {
                return Some(Err(MmError::Fault { va: cpu }));
            };
            let Ok(page) = CpuRange::new(cpu - cpu % PAGE_SIZE, PAGE_SIZE) else {
                return Some(Err(MmError::Fault { va: cpu }));
            };
            let pinned = match mm.get_pages(page, false) {
                Ok(p) => p,
                Err(MmError::Again) => continue,
                Err(e) => return Some(Err(e)),
            };
            let value = pinned.pages().first().and_then(|pa| {
                self.core
                    .dma
                    .read_u64(PhysAddr(pa.get() + cpu % PAGE_SIZE))
                    .ok()
            });
            drop(pinned);
            if self.notifier.read().raced(since, page) {
                continue;
            }
            return Some(value.ok_or(MmError::Fault { va: cpu }));
        }
        Some(Err(MmError::Again))
    }

    /// Records the pinned bytes (the owner's charge) as `n` has them.
    pub(crate) fn note_userptrs(&self, n: &Notifier) {
        self.userptr_bytes
            .store(n.pinned_bytes(), Ordering::Relaxed);
        self.userptr_invalid
            .store(n.invalid_count() as u64, Ordering::Relaxed);
        self.note_devmem(n);
    }

    /// Bytes of client pages the VM's userptrs hold (charged like BO memory).
    pub fn userptr_bytes(&self) -> u64 {
        self.userptr_bytes.load(Ordering::Relaxed)
    }

    /// Whether a userptr lost its pages and waits for revalidation.
    pub fn has_invalid_userptrs(&self) -> bool {
        self.userptr_invalid.load(Ordering::Relaxed) > 0
    }

    /// Zaps what `inv` lists and releases its pages after the TLB invalidation; if the zap
    /// failed, the pages are held until the VM goes. The caller holds the notifier lock.
    fn apply_invalidation(&self, n: &mut Notifier, inv: Invalidation) {
        self.note_userptrs(n);
        if inv.zap.is_empty() {
            return;
        }
        let zapped = {
            let mut pt = self.pt.lock();
            self.zap_locked(&mut pt, &inv.zap)
        };
        match zapped {
            // INVARIANT: the PTEs are gone and the TLB invalidation completed: nothing of
            // this VM reaches the pages any more.
            Ok(()) => drop(inv.pages),
            Err(e) => {
                tracing::warn!(vm = ?self.id, error = %e, "userptr zap failed: pages held until the VM goes");
                n.hold(inv.pages);
                n.held_vram.extend(inv.vram);
            }
        }
    }

    /// Resolves and maps invalid userptrs (all, or only the one at GPU `only`): EXEC
    /// revalidation and fault-mode population. The caller holds `vm.lock` (`_st`), not the
    /// reservations' inner locks. Returns how many were left invalid because an event raced
    /// them (the caller retries).
    pub(crate) fn populate_userptrs(
        &self,
        _st: &mut VmState,
        only: Option<u64>,
    ) -> Result<usize, BindError> {
        let (since, todo) = {
            let n = self.notifier.read();
            let todo: Vec<(u64, Userptr)> = n
                .invalid()
                .into_iter()
                .filter(|(s, _)| only.is_none_or(|o| o == *s))
                .collect();
            (n.seq(), todo)
        };
        if todo.is_empty() {
            return Ok(0);
        }
        let Some(mm) = self.client_mm() else {
            let va = todo[0].1.cpu.start();
            return Err(mm_error(va, MmError::Gone));
        };
        let mut got = Vec::with_capacity(todo.len());
        let mut raced = 0;
        for (start, u) in todo {
            let write = !u.flags.contains(MappingFlags::READ_ONLY);
            match mm.get_pages(u.cpu, write) {
                Ok(p) if p.pages().len() as u64 == u.cpu.pages() => {
                    got.push((start, u, PageWindow::whole(Arc::new(p))))
                }
                Ok(_) => {
                    return Err(mm_error(
                        u.cpu.start(),
                        MmError::Fault { va: u.cpu.start() },
                    ))
                }
                Err(MmError::Again) => raced += 1,
                Err(e) => return Err(mm_error(u.cpu.start(), e)),
            }
        }
        let mut n = self.notifier.write();
        let mut ops = Vec::new();
        let mut installed = Vec::new();
        for (start, u, pages) in got {
            let op = Self::userptr_op(start, u.len, u.flags, &pages);
            match n.install(start, u.cpu, since, pages) {
                Ok(()) => {
                    ops.push(op);
                    installed.push(start);
                }
                // Raced: the pages are stale; dropped here (never mapped).
                Err(_) => raced += 1,
            }
        }
        let job = match self.stage_writes(&ops) {
            Ok(job) => job,
            Err(e) => {
                // Nothing was written: the pages go back out.
                for s in installed {
                    if let Some(u) = n.userptrs.get_mut(&s) {
                        u.pages = None;
                    }
                }
                self.note_userptrs(&n);
                return Err(e);
            }
        };
        self.note_userptrs(&n);
        drop(n);
        if let Some(job) = job {
            self.finish_writes(job)?;
        }
        Ok(raced)
    }

    /// Prepares and commits `ops` into the tables now and returns the job writing them
    /// (registered in the table-page claims, so a zap waits for it). The caller runs it
    /// with [`Vm::finish_writes`] after dropping its locks.
    pub(crate) fn stage_writes(&self, ops: &[PtOp]) -> Result<Option<BindJob>, BindError> {
        if ops.is_empty() {
            return Ok(None);
        }
        let mut pt = self.pt.lock();
        let update = pt.prepare(ops)?;
        let (commit, writes) = update.commit_deferred();
        let fence = Fence::new(FenceContext::alloc(), 1);
        let deps = self.page_deps(BindQueueId(0), Footprint::of(&writes, &commit), &fence);
        let job = self.job(deps, writes, commit.invalidate, fence.clone(), None, false);
        pt.retire(commit.freed, None, vec![fence]);
        self.note_tables(&pt);
        Ok(Some(job))
    }

    /// Runs a job [`Vm::stage_writes`] returned and reclaims retired table pages.
    pub(crate) fn finish_writes(&self, job: BindJob) -> Result<(), BindError> {
        match run_job(job) {
            None => {
                self.pt.lock().reclaim(&*self.core.mmu);
                Ok(())
            }
            Some(_) => Err(BindError::Timeout {
                what: "page-table rebind",
            }),
        }
    }
}

/// The whole CPU address space (as far as a page-aligned range reaches).
fn everything() -> CpuRange {
    // Page aligned, non-empty, and the end fits: cannot fail.
    CpuRange::new(0, !(PAGE_SIZE - 1)).unwrap_or_else(|_| unreachable!())
}

/// The userptr record of `piece`, a part of `old` (at GPU `old_start`) a partial unmap left.
fn piece_of(old: &Userptr, old_start: u64, piece: &MappingSpec) -> Userptr {
    let delta = piece.range().start().get() - old_start;
    let len = piece.range().len();
    let first = (delta / PAGE_SIZE) as usize;
    let count = (len / PAGE_SIZE) as usize;
    // The piece lies inside the old range (the planner cut it from there).
    let cpu = CpuRange::new(old.cpu.start() + delta, len).unwrap_or(old.cpu);
    Userptr {
        len,
        cpu,
        flags: piece.flags(),
        seq: old.seq,
        pages: old.pages.as_ref().and_then(|p| p.sub(first, count)),
    }
}

impl MmTarget for Vm {
    fn invalidate(&self, r: CpuRange) {
        // Migrations of this VM's SVM ranges finish first (`migrate.rs`).
        let _migrations = self.svm_migrate.lock();
        let restore = {
            let mut n = self.notifier.write();
            let mut inv = n.invalidate(r);
            let restore = std::mem::take(&mut inv.restore);
            self.apply_invalidation(&mut n, inv);
            restore
        };
        self.svm_restore(restore);
    }

    fn mm_gone(&self) {
        let _migrations = self.svm_migrate.lock();
        let mut n = self.notifier.write();
        let inv = n.invalidate_all();
        self.apply_invalidation(&mut n, inv);
    }

    fn remapped(&self, from: CpuRange, to: u64) {
        self.svm_remapped(from, to);
    }

    fn cpu_fault(&self, va: u64) {
        self.svm_cpu_fault(va);
    }
}
