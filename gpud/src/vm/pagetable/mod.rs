//! The per-VM page-table manager: a shadow of the 4-level simgpu tables, a two-phase
//! prepare/commit API, largest-page selection, shared directory pages with reference counts,
//! null/sparse and read-only entries, scratch-page mode, and deferred freeing of table pages.
//!
//! Owns: every table page of one address space and what is written into it. Must not: invalidate
//! the TLB itself or free a table page the walker may still reach; [`PtCommit`] says what to
//! invalidate and which pages become free, and [`PageTable::retire`] / [`PageTable::reclaim`]
//! free them once the invalidation (and the given fences) completed.
//!
//! INVARIANT (unmap never allocates): for every VA range holding a non-empty entry, a table
//! page exists at every level below the level of that entry. A 2 MiB leaf keeps its level-0
//! table allocated (filled in the shadow, not written to memory while the leaf hides it), so
//! demoting it when part of it is unmapped or remapped only writes entries. `prepare` counts
//! and allocates exactly the tables this invariant needs; `commit` never allocates.

pub mod memory;
mod ops;
mod tlb;
mod tree;
mod zap;

#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod tests;

pub use ops::{MapTarget, PhysSeg, PtError, PtOp};
pub use tlb::TlbBatch;

use crate::hw::pte::{self, LeafFlags, PageSize, Pte};
use crate::hw::{Mmu, PtRoot, TlbInvalidation};
use crate::sync::Fence;
use crate::types::{GpuVa, PhysAddr};
use memory::PtMemory;
use ops::RangeOp;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Bytes one entry at `level` maps.
/// Emptied table pages a VM keeps for reuse (64 KiB).
const ZERO_CACHE_PAGES: usize = 16;

const fn slot_size(level: u32) -> u64 {
    1 << (12 + 9 * level)
}

/// Bytes one table at `level` covers.
const fn table_span(level: u32) -> u64 {
    slot_size(level + 1)
}

/// Key of a table: its level and the first VA it covers.
type NodeKey = (u32, u64);

/// A multiply-xorshift hasher for [`NodeKey`]s: table lookups are the hottest operation of
/// a bind, and SipHash cost a quarter of its time. Keys are page-aligned VAs; the mix
/// spreads their bits. A client choosing colliding VAs only slows its own VM's tables.
#[derive(Default)]
struct NodeHasher(u64);

impl Hasher for NodeHasher {
    fn finish(&self) -> u64 {
        let x = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^ (x >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(23) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type NodeMap<V> = HashMap<NodeKey, V, BuildHasherDefault<NodeHasher>>;
type NodeSet = HashSet<NodeKey, BuildHasherDefault<NodeHasher>>;

/// The shadow of one table page.
struct Node {
    addr: PhysAddr,
    entries: Box<[u64; 512]>,
    /// Entries that are not the level's empty entry.
    used: u16,
    /// The memory copy is out of date because no walker can reach this table (its parent
    /// slot holds a large leaf, or it is new). Flushed before a pointer to it is written.
    stale: bool,
    /// The page is still all zeros as allocated: a flush skips zero entries.
    zeroed: bool,
}

/// Options of an address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtConfig {
    /// Scratch-page mode: unmapped VAs resolve to a writable scratch page instead of faulting.
    pub scratch: bool,
    /// Page sizes the device supports (the CAPS register's mask: bit 0 4K, 1 64K, 2 2M, 3 1G).
    pub page_sizes: u8,
}

impl Default for PtConfig {
    fn default() -> Self {
        Self {
            scratch: false,
            page_sizes: 0xF,
        }
    }
}

/// Counters of memory writes, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PtStats {
    /// Leaf (and null) entries written to table memory.
    pub leaf_writes: u64,
    /// Pointer and empty entries written to table memory.
    pub table_writes: u64,
    /// Empty entries written when a table became reachable (initialising new tables).
    pub flush_writes: u64,
    /// Entry writes the CPU performed (all kinds).
    pub cpu_writes: u64,
    /// Entry writes handed to a copy-engine job instead.
    pub deferred_writes: u64,
    /// Table pages live (root and scratch tables included).
    pub tables: u64,
    /// Writes the memory refused (a bug if ever non-zero).
    pub write_errors: u64,
    /// Tables a commit needed beyond what prepare reserved (a bug if ever non-zero).
    pub pool_misses: u64,
    /// Entries of new, zero-filled table pages not written because they are zero.
    pub zero_skips: u64,
}

/// Pages waiting for an invalidation and fences before they are freed.
struct Retired {
    pages: Vec<PhysAddr>,
    inv: Option<TlbInvalidation>,
    fences: Vec<Arc<Fence>>,
}

/// One VM's page tables.
pub struct PageTable {
    mem: Arc<dyn PtMemory>,
    nodes: NodeMap<Node>,
    root: PhysAddr,
    /// The empty entry of each level (zero, or a pointer to the scratch chain).
    empty: [u64; 4],
    /// Scratch tables (levels 0..=2) and the scratch page; never modified after creation.
    scratch_pages: Vec<PhysAddr>,
    config: PtConfig,
    stats: PtStats,
    retired: Vec<Retired>,
    /// Retired pages of tables that were emptied (every entry zero in memory): reclaimed into
    /// `zero_cache` instead of freed when the batch that emptied them succeeded.
    zero_retired: HashSet<PhysAddr>,
    /// All-zero table pages kept for the next tables (a VM that is emptied and refilled, or
    /// maps and unmaps one range in a loop, does not allocate, zero and free every time).
    zero_cache: Vec<PhysAddr>,
    /// While set, entry writes are recorded here instead of performed (copy-engine path).
    capture: Option<Vec<(PhysAddr, u64)>>,
    /// Table pages the running commit wrote out and linked (see [`PtCommit::linked`]).
    linked: Vec<PhysAddr>,
}

/// Everything a batch needs, reserved; commit it with [`PtUpdate::commit`]. Dropping it
/// instead returns the reserved pages and changes nothing.
pub struct PtUpdate<'a> {
    pt: &'a mut PageTable,
    ops: Vec<RangeOp>,
    pool: Reservation,
}

/// Table pages reserved by `prepare`; whatever the commit does not use goes back on drop.
struct Reservation {
    mem: Arc<dyn PtMemory>,
    pages: Vec<PhysAddr>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        for p in self.pages.drain(..) {
            self.mem.free_page(p);
        }
    }
}

/// What a commit changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[must_use = "the range must be invalidated and the freed pages retired"]
pub struct PtCommit {
    /// The range whose translations may be stale (one range covering the whole batch).
    pub invalidate: Option<(GpuVa, u64)>,
    /// Table pages no longer referenced; free them only after that invalidation completed
    /// (pass them to [`PageTable::retire`]).
    pub freed: Vec<PhysAddr>,
    /// Table pages this commit makes reachable: new tables, and tables a large leaf hid,
    /// written out whole before the pointer to them. Until the commit's writes landed, an
    /// entry another batch writes into one of these pages is not reachable by the walker
    /// (the cross-queue ordering rule of bind jobs is built on this).
    pub linked: Vec<PhysAddr>,
}

impl PageTable {
    /// An empty address space with its root (and scratch chain) allocated.
    pub fn new(mem: Arc<dyn PtMemory>, config: PtConfig) -> Result<Self, PtError> {
        let mut pt = Self {
            mem,
            nodes: NodeMap::default(),
            root: PhysAddr(0),
            empty: [0; 4],
            scratch_pages: Vec::new(),
            config,
            stats: PtStats::default(),
            retired: Vec::new(),
            zero_retired: HashSet::new(),
            zero_cache: Vec::new(),
            capture: None,
            linked: Vec::new(),
        };
        if config.scratch {
            pt.build_scratch()?;
        }
        let root = pt.alloc_or_release(1)?;
        pt.root = root;
        let mut node = pt.new_node(3, root);
        node.stale = false;
        pt.nodes.insert((3, 0), node);
        pt.flush_all_entries((3, 0));
        Ok(pt)
    }

    fn alloc_or_release(&mut self, pages: u64) -> Result<PhysAddr, PtError> {
        match self.mem.alloc_page() {
            Ok(p) => {
                self.stats.tables += 1;
                Ok(p)
            }
            Err(e) => {
                for p in self.scratch_pages.drain(..) {
                    self.mem.free_page(p);
                }
                Err(PtError::from_alloc(e, pages))
            }
        }
    }

    /// Scratch page, then a level-0 table of pointers to it, then levels 1 and 2.
    fn build_scratch(&mut self) -> Result<(), PtError> {
        let loc = self.mem.location();
        let page = self.alloc_or_release(4)?;
        self.scratch_pages.push(page);
        for off in (0..pte::TABLE_SIZE).step_by(8) {
            self.write(PhysAddr(page.get() + off), 0);
        }
        let flags = LeafFlags {
            writable: true,
            ..LeafFlags::default()
        };
        // PANIC-free: the page came from the allocator, 4 KiB-aligned and below 2^52.
        let mut entry = Pte::leaf_entry(PageSize::Size4K, page, loc, flags).map_or(0, |e| e.bits());
        for level in 0..3 {
            self.empty[level as usize] = entry;
            let table = self.alloc_or_release(4)?;
            self.scratch_pages.push(table);
            for i in 0..pte::ENTRIES_PER_TABLE {
                self.write(PhysAddr(table.get() + i * 8), entry);
            }
            entry = Pte::table_entry(table, loc).map_or(0, |e| e.bits());
        }
        self.empty[3] = entry;
        Ok(())
    }

    /// The root to program into a hardware context.
    pub fn root(&self) -> PtRoot {
        PtRoot {
            addr: self.root,
            location: self.mem.location(),
        }
    }

    /// Write counters and live table count.
    pub fn stats(&self) -> PtStats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> PtConfig {
        self.config
    }

    /// Phase one: validates `ops` and reserves every table page committing them needs. On
    /// error nothing changed.
    pub fn prepare(&mut self, ops: &[PtOp]) -> Result<PtUpdate<'_>, PtError> {
        let ops = ops::validate(ops)?;
        let mut pool = Reservation {
            mem: self.mem.clone(),
            pages: Vec::new(),
        };
        let mut cache = std::mem::take(&mut self.zero_cache);
        // Pages are taken while counting, so a huge request fails at the first page the
        // memory refuses instead of after enumerating every table it would need.
        let needed = self.needed_tables(&ops, &mut |count| match cache.pop() {
            Some(p) => {
                pool.pages.push(p);
                Ok(())
            }
            None => pool
                .mem
                .alloc_page()
                .map(|p| pool.pages.push(p))
                .map_err(|e| PtError::from_alloc(e, count)),
        });
        self.zero_cache = cache;
        needed?;
        Ok(PtUpdate {
            pool,
            pt: self,
            ops,
        })
    }

    /// Tables the batch creates: below every mapped range, a table at levels 0..=2 (the
    /// invariant), minus those that exist when the op runs. An unmap that covers a table's
    /// whole span drops it during the commit, so a later op of the batch needs it anew; the
    /// end-of-batch sweep frees nothing a later op could use. Calls `take` once per table
    /// (with the count so far); on error the reservation's drop returns what was taken.
    fn needed_tables(
        &self,
        ops: &[RangeOp],
        take: &mut dyn FnMut(u64) -> Result<(), PtError>,
    ) -> Result<(), PtError> {
        let mut created = NodeSet::default();
        let mut unmaps: Vec<(u64, u64)> = Vec::new();
        let mut count = 0;
        for op in ops {
            if matches!(op.content, ops::Content::Empty) {
                created.retain(|&(l, b)| !(op.start <= b && b + table_span(l) <= op.end));
                unmaps.push((op.start, op.end));
                continue;
            }
            for level in 0..3 {
                let span = table_span(level);
                let mut base = op.start & !(span - 1);
                while base < op.end {
                    let dropped = unmaps.iter().any(|&(s, e)| s <= base && base + span <= e);
                    let exists = self.nodes.contains_key(&(level, base)) && !dropped;
                    if !exists && created.insert((level, base)) {
                        count += 1;
                        take(count)?;
                    }
                    base += span;
                }
            }
        }
        Ok(())
    }

    /// Frees `pages` once `inv` completed and every fence signalled (see [`Self::reclaim`]).
    pub fn retire(
        &mut self,
        pages: Vec<PhysAddr>,
        inv: Option<TlbInvalidation>,
        fences: Vec<Arc<Fence>>,
    ) {
        if !pages.is_empty() {
            self.retired.push(Retired { pages, inv, fences });
        }
    }

    /// Frees retired pages whose invalidation completed and whose fences signalled; returns
    /// how many pages were freed.
    pub fn reclaim(&mut self, mmu: &dyn Mmu) -> usize {
        let mut freed = 0;
        let mem = self.mem.clone();
        let (zero_retired, cache) = (&mut self.zero_retired, &mut self.zero_cache);
        self.retired.retain(|r| {
            let inv_done = r.inv.is_none_or(|inv| mmu.invalidation_done(inv));
            if !inv_done || !r.fences.iter().all(|f| f.is_signalled()) {
                return true;
            }
            // A failed batch may not have written the zeros: those pages are freed.
            let written = r
                .fences
                .iter()
                .all(|f| f.status() == crate::sync::FenceStatus::Signalled);
            for &p in &r.pages {
                let zero = zero_retired.remove(&p) && written;
                if zero && cache.len() < ZERO_CACHE_PAGES {
                    cache.push(p);
                } else {
                    mem.free_page(p);
                }
            }
            freed += r.pages.len();
            false
        });
        self.stats.tables -= freed as u64;
        freed
    }

    /// Emptied table pages kept (all zero) for the next tables.
    pub fn cached_pages(&self) -> usize {
        self.zero_cache.len()
    }

    /// Pages retired but not yet freed.
    pub fn retired_pages(&self) -> usize {
        self.retired.iter().map(|r| r.pages.len()).sum()
    }

    /// Performs entry writes returned by [`PtUpdate::commit_deferred`] with the CPU.
    pub fn write_entries(&mut self, writes: &[(PhysAddr, u64)]) {
        for &(addr, value) in writes {
            self.write(addr, value);
        }
    }

    /// The memory holding the tables (for read-back in tests and diagnostics).
    pub fn memory(&self) -> &Arc<dyn PtMemory> {
        &self.mem
    }
}

impl<'a> PtUpdate<'a> {
    /// Tables reserved by prepare.
    pub fn reserved_tables(&self) -> usize {
        self.pool.pages.len()
    }

    /// An upper bound of the entry writes the commit performs (one per 4 KiB page mapped
    /// plus a full table per new table): what chooses CPU or copy-engine updates.
    pub fn estimated_writes(&self) -> u64 {
        let pages: u64 = self
            .ops
            .iter()
            .filter(|op| !matches!(op.content, ops::Content::Empty))
            .map(|op| (op.end - op.start) / crate::types::PAGE_SIZE)
            .sum();
        pages + self.pool.pages.len() as u64 * pte::ENTRIES_PER_TABLE
    }

    /// Phase two: writes every entry with the CPU. Cannot fail.
    pub fn commit(self) -> PtCommit {
        let PtUpdate { pt, ops, mut pool } = self;
        pt.apply(&ops, &mut pool.pages)
    }

    /// Phase two for the copy-engine path: updates the shadow and returns the entry writes,
    /// in the order that keeps the walker safe, for a job to perform (or for
    /// [`PageTable::write_entries`] if the job cannot be submitted). Cannot fail.
    pub fn commit_deferred(self) -> (PtCommit, Vec<(PhysAddr, u64)>) {
        let (commit, writes, _) = self.commit_deferred_with_table();
        (commit, writes)
    }

    /// [`Self::commit_deferred`], also handing back the table (for a CPU fallback).
    pub fn commit_deferred_with_table(self) -> (PtCommit, Vec<(PhysAddr, u64)>, &'a mut PageTable) {
        let PtUpdate { pt, ops, mut pool } = self;
        pt.capture = Some(Vec::new());
        let commit = pt.apply(&ops, &mut pool.pages);
        let writes = pt.capture.take().unwrap_or_default();
        (commit, writes, pt)
    }
}

impl Drop for PageTable {
    fn drop(&mut self) {
        // The owner unbinds the context and waits for its jobs before dropping the VM, so no
        // walker can reach these pages any more.
        let mem = self.mem.clone();
        for (_, node) in self.nodes.drain() {
            mem.free_page(node.addr);
        }
        for r in self.retired.drain(..) {
            for p in r.pages {
                mem.free_page(p);
            }
        }
        for p in self
            .scratch_pages
            .drain(..)
            .chain(self.zero_cache.drain(..))
        {
            mem.free_page(p);
        }
    }
}
