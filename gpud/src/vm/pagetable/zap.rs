//! Zapping: clearing the leaf entries of a VA range in place, the primitive every
//! invalidation of backing memory (userptr and SVM notifiers, eviction) is built on.
//!
//! Owns: [`PageTable::zap`] and [`PageTable::zap_pages`]. Must not: allocate, free, create
//! or unlink a table page, or touch null (sparse) entries: a zap only turns page leaves into
//! the level's empty entry (zero, or the scratch page in scratch mode), so it cannot fail and
//! needs nothing from the VA tree. A large leaf is replaced by the table it hid (which the
//! "unmap never allocates" invariant keeps allocated), written out with the zapped part
//! cleared, so a zap of part of a 2 MiB page leaves the rest mapped.
//!
//! The caller invalidates the TLB afterwards (the returned flag says whether a valid entry
//! changed) and must first wait for pending bind jobs writing the pages
//! [`PageTable::zap_pages`] names, or a job committed before the zap would write its older
//! entries back after it.

use super::ops::check_range;
use super::tree::Cx;
use super::{slot_size, table_span, NodeKey, PageTable, PtError};
use crate::hw::pte::Pte;
use crate::types::{GpuVa, PhysAddr};

const SIZE_64K: u64 = 64 << 10;

impl PageTable {
    /// Checks a zap range: page-aligned, non-empty, inside the VA space.
    fn zap_bounds(va: GpuVa, len: u64) -> Result<(u64, u64), PtError> {
        Ok((va.get(), check_range(va, len)?))
    }

    /// The table pages a zap of `[va, va + len)` may write: every existing table whose span
    /// intersects the range (hidden ones included).
    pub fn zap_pages(&self, va: GpuVa, len: u64) -> Result<Vec<PhysAddr>, PtError> {
        let (start, end) = Self::zap_bounds(va, len)?;
        let mut out = Vec::new();
        self.collect_pages((3, 0), start, end, &mut out);
        Ok(out)
    }

    fn collect_pages(&self, key: NodeKey, a: u64, b: u64, out: &mut Vec<PhysAddr>) {
        let Some(node) = self.nodes.get(&key) else {
            return;
        };
        out.push(node.addr);
        let (level, base) = key;
        if level == 0 {
            return;
        }
        let size = slot_size(level);
        let (first, last) = (
            (a.max(base) - base) / size,
            (b.min(base + table_span(level)) - 1 - base) / size,
        );
        for i in first..=last {
            let s = base + i * size;
            self.collect_pages((level - 1, s), a.max(s), b.min(s + size), out);
        }
    }

    /// Clears every page leaf mapping part of `[va, va + len)`, in the shadow and in table
    /// memory, with the CPU and in walker-safe order. Returns whether a walker-visible valid
    /// entry changed: then translations of the range may be cached and the caller must
    /// invalidate it. Allocates and frees no table page.
    pub fn zap(&mut self, va: GpuVa, len: u64) -> Result<bool, PtError> {
        let (start, end) = Self::zap_bounds(va, len)?;
        let capture = self.capture.take();
        let mut none = Vec::new();
        let mut cx = Cx {
            pool: &mut none,
            freed: Vec::new(),
            emptied: Default::default(),
            replaced_valid: false,
        };
        self.zap_level(3, 0, start, end, &mut cx);
        // Demotions wrote hidden tables out; nobody needs to know (the zap owns no job).
        self.linked.clear();
        self.capture = capture;
        debug_assert!(cx.freed.is_empty(), "a zap freed a table page");
        Ok(cx.replaced_valid)
    }

    fn zap_level(&mut self, level: u32, base: u64, a: u64, b: u64, cx: &mut Cx) {
        let size = slot_size(level);
        let (first, last) = ((a - base) / size, (b - 1 - base) / size);
        let empty = self.empty[level as usize];
        for i in first..=last {
            let Some(e) = self
                .nodes
                .get(&(level, base))
                .and_then(|n| n.entries.get(i as usize))
                .copied()
            else {
                return;
            };
            let pte = Pte(e);
            if e == empty || pte.null() || !pte.valid() {
                continue;
            }
            let s = base + i * size;
            let (ra, rb) = (a.max(s), b.min(s + size));
            if level == 0 {
                self.set_slot((0, base), i, empty, cx);
            } else if pte.leaf() {
                let child = (level - 1, s);
                if !self.nodes.contains_key(&child) {
                    // PANIC-free fallback: the invariant keeps hidden tables; without one the
                    // whole leaf goes (never more than the leaf the range touches).
                    self.set_slot((level, base), i, empty, cx);
                    continue;
                }
                // The hidden table is stale: its entries change in the shadow only, then it is
                // written out whole before the pointer to it replaces the leaf.
                self.zap_level(level - 1, s, ra, rb, cx);
                self.flush(child);
                let addr = self.nodes.get(&child).map_or(PhysAddr(0), |n| n.addr);
                let ptr = Pte::table_entry(addr, self.mem.location()).map_or(0, |e| e.bits());
                self.set_slot((level, base), i, ptr, cx);
            } else {
                self.zap_level(level - 1, s, ra, rb, cx);
            }
        }
        if level == 0 {
            self.fix_group(base, a & !(SIZE_64K - 1), cx);
            self.fix_group(base, (b - 1) & !(SIZE_64K - 1), cx);
        }
    }
}
