//! The commit walk: sets VA ranges to empty, null or page entries in the shadow tree and in
//! table memory, choosing the largest page each slot allows.
//!
//! Owns: entry selection (1 GiB, 2 MiB, 64 KiB, 4 KiB), demotion of large leaves, reference
//! counts of table pages and the end-of-batch sweep of empty tables. Must not: allocate table
//! pages (it takes them from the pool `prepare` filled) or free them (freed pages are
//! returned in the [`PtCommit`] for deferred freeing).
//!
//! PANIC: the only indexing is `empty[level]` (levels 0..=3, an array of 4) and entries of a
//! 512-entry table at indices derived from VA bits masked to 9 bits; both are internal, never
//! client values.
//!
//! Write order keeps the walker safe at every instant: a new or demoted table is filled and
//! written to memory before the pointer to it is written; a large leaf replaces a pointer only
//! after its hidden subtree is up to date in the shadow.

use super::ops::{Content, RangeOp};
use super::{slot_size, table_span, Node, NodeKey, PageTable, PtCommit};
use crate::hw::pte::{LeafFlags, PageSize, Pte};
use crate::types::{GpuVa, PhysAddr};

const SIZE_64K: u64 = 64 << 10;

/// Per-commit scratch state.
pub(super) struct Cx<'p> {
    pub(super) pool: &'p mut Vec<PhysAddr>,
    pub(super) freed: Vec<PhysAddr>,
    /// Tables whose use count reached zero, by level (swept at the end).
    pub(super) emptied: [Vec<u64>; 4],
    /// Whether a walker-visible entry that was valid changed. Only then can the TLB hold a
    /// stale translation: it never caches a lookup that faulted, so filling entries that
    /// were invalid needs no invalidation (scratch and null entries are valid, so they count).
    pub(super) replaced_valid: bool,
}

impl PageTable {
    pub(super) fn new_node(&self, level: u32, addr: PhysAddr) -> Node {
        Node {
            addr,
            entries: Box::new([self.empty[level as usize]; 512]),
            used: 0,
            stale: true,
            zeroed: self.mem.zeroed_pages(),
        }
    }

    pub(super) fn write(&mut self, addr: PhysAddr, value: u64) {
        if let Some(capture) = self.capture.as_mut() {
            capture.push((addr, value));
            self.stats.deferred_writes += 1;
            return;
        }
        self.stats.cpu_writes += 1;
        if !self.mem.write_u64(addr, value) {
            self.stats.write_errors += 1;
        }
    }

    /// Applies validated ops; the walk behind [`super::PtUpdate::commit`].
    pub(super) fn apply(&mut self, ops: &[RangeOp], pool: &mut Vec<PhysAddr>) -> PtCommit {
        let mut cx = Cx {
            pool,
            freed: Vec::new(),
            emptied: Default::default(),
            replaced_valid: false,
        };
        let (mut lo, mut hi) = (u64::MAX, 0);
        for op in ops {
            self.fill(3, 0, op.start, op.end, &op.content, &mut cx);
            lo = lo.min(op.start);
            hi = hi.max(op.end);
        }
        self.sweep(&mut cx);
        PtCommit {
            invalidate: (lo < hi && cx.replaced_valid).then(|| (GpuVa(lo), hi - lo)),
            freed: cx.freed,
            linked: std::mem::take(&mut self.linked),
        }
    }

    /// The large leaf for the slot at `level` starting at `va`, if `content` allows one.
    fn large_leaf(&self, level: u32, va: u64, content: &Content) -> Option<u64> {
        let size = match level {
            1 if self.config.page_sizes & 4 != 0 => PageSize::Size2M,
            2 if self.config.page_sizes & 8 != 0 => PageSize::Size1G,
            _ => return None,
        };
        match content {
            Content::Empty => None,
            Content::Null => Some(Pte::null_entry(level).bits()),
            Content::Pages(p) => {
                let (pa, run) = p.phys_run(va);
                if pa % size.bytes() != 0 || run < size.bytes() {
                    return None;
                }
                Pte::leaf_entry(size, PhysAddr(pa), p.location, p.flags)
                    .ok()
                    .map(|e| e.bits())
            }
        }
    }

    /// Sets `[a, b)` (inside the table `(level, base)`) to `content`.
    fn fill(&mut self, level: u32, base: u64, a: u64, b: u64, content: &Content, cx: &mut Cx) {
        if level == 0 {
            return self.fill_leaves(base, a, b, content, cx);
        }
        let size = slot_size(level);
        let (first, last) = ((a - base) / size, (b - 1 - base) / size);
        for i in first..=last {
            let s = base + i * size;
            let (ra, rb) = (a.max(s), b.min(s + size));
            let full = ra == s && rb == s + size;
            let child = (level - 1, s);
            let new = if full && matches!(content, Content::Empty) {
                self.drop_subtree(child, cx);
                self.empty[level as usize]
            } else if let Some(leaf) = self.large_leaf(level, s, content).filter(|_| full) {
                // The subtree stays allocated (hidden) so a later demotion needs no memory.
                if !self.ensure_node(child, cx) {
                    continue;
                }
                self.set_stale(child);
                self.fill(level - 1, s, s, s + size, content, cx);
                leaf
            } else {
                if matches!(content, Content::Empty) && !self.nodes.contains_key(&child) {
                    continue;
                }
                if !self.ensure_node(child, cx) {
                    continue;
                }
                self.fill(level - 1, s, ra, rb, content, cx);
                let parent_stale = self.nodes.get(&(level, base)).is_none_or(|n| n.stale);
                if !parent_stale {
                    self.flush((level - 1, s));
                }
                let addr = self.nodes.get(&child).map_or(PhysAddr(0), |n| n.addr);
                Pte::table_entry(addr, self.mem.location()).map_or(0, |e| e.bits())
            };
            self.set_slot((level, base), i, new, cx);
        }
    }

    /// Level 0: 4 KiB entries, with the 64 KiB hint on aligned, contiguous, fully covered
    /// groups of sixteen.
    fn fill_leaves(&mut self, base: u64, a: u64, b: u64, content: &Content, cx: &mut Cx) {
        let use_64k = self.config.page_sizes & 2 != 0;
        let mut va = a;
        while va < b {
            let i = (va - base) >> 12;
            let entry = match content {
                Content::Empty => self.empty[0],
                Content::Null => Pte::null_entry(0).bits(),
                Content::Pages(p) => {
                    let g = va & !(SIZE_64K - 1);
                    let (gpa, grun) = p.phys_run(g);
                    let group = use_64k
                        && g >= a
                        && g + SIZE_64K <= b
                        && gpa % SIZE_64K == 0
                        && grun >= SIZE_64K;
                    let (pa, _) = p.phys_run(va);
                    leaf_4k(pa, p.location, p.flags, group)
                }
            };
            self.set_slot((0, base), i, entry, cx);
            va += 1 << 12;
        }
        self.fix_group(base, a & !(SIZE_64K - 1), cx);
        self.fix_group(base, (b - 1) & !(SIZE_64K - 1), cx);
    }

    /// Clears the 64 KiB hint of a group whose sixteen entries no longer map one aligned,
    /// contiguous 64 KiB page with equal attributes (after a partial unmap or remap).
    pub(super) fn fix_group(&mut self, base: u64, group: u64, cx: &mut Cx) {
        let Some(node) = self.nodes.get(&(0, base)) else {
            return;
        };
        let first = ((group - base) >> 12) as usize;
        let Some(es) = node.entries.get(first..first + 16) else {
            return;
        };
        let e0 = Pte(es[0]);
        let consistent = e0.pfn() % 16 == 0
            && es.iter().enumerate().all(|(k, &e)| {
                let e = Pte(e);
                e.contig_64k() && e.pfn() == e0.pfn() + k as u64 && {
                    let (mut x, mut y) = (e, e0);
                    x.set_pfn(0);
                    y.set_pfn(0);
                    x == y
                }
            });
        if consistent || !es.iter().any(|&e| Pte(e).contig_64k()) {
            return;
        }
        let cleared: Vec<u64> = es
            .iter()
            .map(|&e| {
                let mut e = Pte(e);
                e.set_contig_64k(false);
                e.bits()
            })
            .collect();
        for (k, e) in cleared.into_iter().enumerate() {
            self.set_slot((0, base), (first + k) as u64, e, cx);
        }
    }

    /// Stores entry `i` of table `key` in the shadow and, if the table is reachable, in memory.
    pub(super) fn set_slot(&mut self, key: NodeKey, i: u64, new: u64, cx: &mut Cx) {
        let empty = self.empty[key.0 as usize];
        let Some(node) = self.nodes.get_mut(&key) else {
            return;
        };
        let Some(slot) = node.entries.get_mut(i as usize) else {
            return;
        };
        let old = std::mem::replace(slot, new);
        if old == new {
            return;
        }
        match (old == empty, new == empty) {
            (true, false) => node.used += 1,
            (false, true) => {
                node.used -= 1;
                if node.used == 0 && key.0 < 3 {
                    cx.emptied[key.0 as usize].push(key.1);
                }
            }
            _ => {}
        }
        if node.stale {
            return;
        }
        cx.replaced_valid |= Pte(old).valid();
        let addr = PhysAddr(node.addr.get() + i * 8);
        let e = Pte(new);
        if new != empty && (key.0 == 0 || e.leaf() || e.null()) {
            self.stats.leaf_writes += 1;
        } else {
            self.stats.table_writes += 1;
        }
        self.write(addr, new);
    }

    /// Makes sure table `key` exists, taking a page from the pool; false only if the pool
    /// was short and allocation failed too (counted; `prepare` makes this unreachable).
    fn ensure_node(&mut self, key: NodeKey, cx: &mut Cx) -> bool {
        if self.nodes.contains_key(&key) {
            return true;
        }
        let page = match cx.pool.pop() {
            Some(p) => p,
            None => {
                self.stats.pool_misses += 1;
                match self.mem.alloc_page() {
                    Ok(p) => p,
                    Err(_) => return false,
                }
            }
        };
        self.stats.tables += 1;
        let node = self.new_node(key.0, page);
        self.nodes.insert(key, node);
        true
    }

    /// Marks table `key` unreachable (its parent slot is about to hold a leaf); the fill that
    /// follows turns its slots into leaves and marks their tables stale in turn.
    fn set_stale(&mut self, key: NodeKey) {
        let Some(node) = self.nodes.get_mut(&key) else {
            return;
        };
        node.stale = true;
    }

    /// Writes a stale table (and the stale tables its pointers reach, first) to memory.
    pub(super) fn flush(&mut self, key: NodeKey) {
        let Some(node) = self.nodes.get(&key) else {
            return;
        };
        if !node.stale {
            return;
        }
        self.linked.push(node.addr);
        if key.0 > 0 && node.used > 0 {
            let empty = self.empty[key.0 as usize];
            let children: Vec<u64> = (0..512u64)
                .filter(|&i| {
                    let e = Pte(node.entries[i as usize]);
                    e.bits() != empty && !e.leaf() && !e.null()
                })
                .map(|i| key.1 + i * slot_size(key.0))
                .collect();
            for c in children {
                self.flush((key.0 - 1, c));
            }
        }
        self.flush_all_entries(key);
    }

    /// Writes all 512 entries of table `key` and marks it reachable.
    pub(super) fn flush_all_entries(&mut self, key: NodeKey) {
        let Some(node) = self.nodes.get_mut(&key) else {
            return;
        };
        node.stale = false;
        let zeroed = std::mem::replace(&mut node.zeroed, false);
        let addr = node.addr;
        // A zero-filled page needs only its non-zero entries (few, in a new table).
        let writes: Vec<(usize, u64)> = node
            .entries
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, e)| !zeroed || e != 0)
            .collect();
        self.stats.zero_skips += 512 - writes.len() as u64;
        let empty = self.empty[key.0 as usize];
        for (i, e) in writes {
            self.write(PhysAddr(addr.get() + i as u64 * 8), e);
            let pte = Pte(e);
            if e == empty {
                self.stats.flush_writes += 1;
            } else if key.0 == 0 || pte.leaf() || pte.null() {
                self.stats.leaf_writes += 1;
            } else {
                self.stats.table_writes += 1;
            }
        }
    }

    /// Removes table `key` and every table below it; their pages go to the freed list.
    fn drop_subtree(&mut self, key: NodeKey, cx: &mut Cx) {
        let Some(node) = self.nodes.remove(&key) else {
            return;
        };
        if key.0 > 0 {
            let empty = self.empty[key.0 as usize];
            for (i, &e) in node.entries.iter().enumerate() {
                if e != empty {
                    self.drop_subtree((key.0 - 1, key.1 + i as u64 * slot_size(key.0)), cx);
                }
            }
        }
        cx.freed.push(node.addr);
    }

    /// Removes tables left without entries, bottom-up, clearing their parents' pointers.
    fn sweep(&mut self, cx: &mut Cx) {
        for level in 0..3u32 {
            let bases = std::mem::take(&mut cx.emptied[level as usize]);
            for base in bases {
                if self.nodes.get(&(level, base)).is_none_or(|n| n.used != 0) {
                    continue;
                }
                if let Some(node) = self.nodes.remove(&(level, base)) {
                    // Every entry is the empty one; in memory too unless never flushed
                    // (then the page is as allocated).
                    let zero_in_memory = !node.stale || node.zeroed;
                    if self.empty[level as usize] == 0 && zero_in_memory && self.mem.zeroed_pages()
                    {
                        self.zero_retired.insert(node.addr);
                    }
                    cx.freed.push(node.addr);
                }
                let pspan = table_span(level + 1);
                let pbase = base & !(pspan - 1);
                let i = (base - pbase) / slot_size(level + 1);
                let empty = self.empty[level as usize + 1];
                self.set_slot((level + 1, pbase), i, empty, cx);
            }
        }
    }
}

fn leaf_4k(pa: u64, location: crate::hw::MemLocation, flags: LeafFlags, group: bool) -> u64 {
    let size = if group {
        PageSize::Size64K
    } else {
        PageSize::Size4K
    };
    // A 64K entry must carry its own page's frame: encode the group base, then add.
    let base = if group { pa & !(SIZE_64K - 1) } else { pa };
    match Pte::leaf_entry(size, PhysAddr(base), location, flags) {
        Ok(mut e) => {
            e.set_pfn(pa >> 12);
            e.bits()
        }
        // PANIC-free: validation checked alignment and the 52-bit bound.
        Err(_) => 0,
    }
}
