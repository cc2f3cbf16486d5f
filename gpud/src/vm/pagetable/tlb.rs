//! Batched TLB invalidation: one invalidation per hardware context per bind batch.
//!
//! Owns: merging the ranges of every [`PtCommit`] of a batch into one request per context
//! (range-based when the covered span is smaller than the whole VA space) and handing the
//! freed table pages to their page table for deferred freeing. Must not: free pages itself or
//! wait for job fences; [`PageTable::reclaim`] frees once the invalidation completed.

use super::{PageTable, PtCommit};
use crate::hw::pte::VA_BITS;
use crate::hw::{HwCtx, HwError, Mmu, TlbInvalidation};
use crate::types::{GpuVa, PhysAddr};
use std::collections::BTreeMap;

/// Spans at least this large are invalidated whole (a full flush is cheaper to describe).
const FULL_FLUSH_SPAN: u64 = 1 << VA_BITS;

/// Invalidation work of one batch.
#[derive(Debug, Default)]
pub struct TlbBatch {
    /// Per context: covered `[start, end)` and the pages freed by its commits.
    pending: BTreeMap<HwCtx, (u64, u64, Vec<PhysAddr>)>,
    /// Invalidations issued over this batch's lifetime (a test and benchmark counter).
    issued: u64,
}

impl TlbBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a commit of the page table bound to `ctx`.
    pub fn add(&mut self, ctx: HwCtx, commit: PtCommit) {
        let entry = self.pending.entry(ctx).or_insert((u64::MAX, 0, Vec::new()));
        if let Some((va, len)) = commit.invalidate {
            entry.0 = entry.0.min(va.get());
            entry.1 = entry.1.max(va.get().saturating_add(len));
        }
        entry.2.extend(commit.freed);
    }

    /// Invalidations issued so far.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// Issues one invalidation per context and retires the freed pages of `ctx`'s commits
    /// into `pt` behind it. Returns the invalidations to wait for before reusing anything.
    pub fn flush(
        &mut self,
        mmu: &dyn Mmu,
        ctx: HwCtx,
        pt: &mut PageTable,
    ) -> Result<Option<TlbInvalidation>, HwError> {
        let Some((start, end, freed)) = self.pending.remove(&ctx) else {
            return Ok(None);
        };
        if start >= end && freed.is_empty() {
            return Ok(None);
        }
        let range = (end.saturating_sub(start) < FULL_FLUSH_SPAN && start < end)
            .then(|| (GpuVa(start), end - start));
        let inv = match mmu.invalidate(ctx, range) {
            Ok(inv) => inv,
            Err(e) => {
                // Put the work back so a retry still frees the pages behind an invalidation.
                self.pending.insert(ctx, (start, end, freed));
                return Err(e);
            }
        };
        self.issued += 1;
        pt.retire(freed, Some(inv), Vec::new());
        Ok(Some(inv))
    }
}
