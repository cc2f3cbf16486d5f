//! Freed-page tracking: a check that no GPU access reaches memory the driver has freed.
//!
//! Owns: [`FreedPages`] (which pages the driver said it freed or allocated, and when) and
//! the [`FreedAccess`] records of accesses that broke the rule. Must not: change what an
//! access does: the check only records, so a device with tracking behaves exactly like one
//! without.
//!
//! Real hardware cannot know what a driver freed; a test harness can. The driver (or a test)
//! reports each free and each allocation of device-reachable memory ([`crate::SimGpu::note_freed`],
//! [`crate::SimGpu::note_allocated`]). Every free advances an epoch; every TLB entry records
//! the epoch it was filled at. An access is a violation when the page it reaches
//! - is freed now (not allocated again since), whether the translation came from a fresh
//!   walk (the page tables still map freed memory) or from the TLB; or
//! - was freed after the translation it used was cached, even if it was allocated again since
//!   (a stale TLB entry reaching memory that may belong to someone else by now). Not in a
//!   *linear-map* context (the global GTT, and any context the driver names when it turns
//!   tracking on): those map all memory permanently and legitimately reach memory allocated
//!   again through old translations, so there only an access to memory free right now counts.
//!
//! Not caught: a fresh walk through a page-table entry that was never cleared and whose page
//! was freed *and* allocated again before the walk (the simulator does not know how old an
//! entry is).

use crate::mem::Location;
use crate::mmu::Access;
use crate::regs::GGTT_CTX;
use std::collections::{BTreeMap, HashMap};

const PAGE: u64 = 4096;
/// Violations kept in full (later ones are only counted).
const KEEP: usize = 64;

/// Why an access was reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreedKind {
    /// The page is free now.
    Freed,
    /// The page was freed (and maybe allocated again) after the translation was cached.
    StaleTranslation,
}

/// One GPU access to freed memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreedAccess {
    /// The context tag of the access (the GGTT's for kernel accesses).
    pub ctx: u16,
    /// The GPU virtual address accessed.
    pub va: u64,
    /// The memory reached.
    pub location: Location,
    /// The physical page reached.
    pub page: u64,
    /// What the access did.
    pub access: Access,
    /// Why it is a violation.
    pub kind: FreedKind,
}

/// The pages the driver freed, and the violations seen.
#[derive(Debug, Default)]
pub struct FreedPages {
    enabled: bool,
    /// Contexts that map memory permanently (see the module docs).
    linear: Vec<u16>,
    /// Advanced by every free; TLB entries record it when filled.
    epoch: u64,
    /// Pages free now, with the epoch of their free.
    free_now: BTreeMap<(Location, u64), u64>,
    /// The epoch of every page's last free.
    last_free: HashMap<(Location, u64), u64>,
    violations: Vec<FreedAccess>,
    count: u64,
}

impl FreedPages {
    /// Turns tracking on or off (off: notes are ignored and nothing is checked);
    /// `linear_maps` are the contexts besides the global GTT that map memory permanently.
    pub fn set_enabled(&mut self, on: bool, linear_maps: &[u32]) {
        self.enabled = on;
        self.linear = std::iter::once(GGTT_CTX)
            .chain(linear_maps.iter().copied())
            .map(|c| c as u16)
            .collect();
        if !on {
            self.free_now.clear();
            self.last_free.clear();
        }
    }

    /// The current epoch (a TLB fill records it).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn pages(addr: u64, len: u64) -> impl Iterator<Item = u64> {
        let first = addr & !(PAGE - 1);
        let end = addr.saturating_add(len);
        (first..end).step_by(PAGE as usize)
    }

    /// The driver freed `[addr, addr + len)` of `location`.
    pub fn note_freed(&mut self, location: Location, addr: u64, len: u64) {
        if !self.enabled {
            return;
        }
        self.epoch += 1;
        for p in Self::pages(addr, len) {
            self.free_now.insert((location, p), self.epoch);
            self.last_free.insert((location, p), self.epoch);
        }
    }

    /// The driver allocated `[addr, addr + len)` of `location` (it may be reached again).
    pub fn note_allocated(&mut self, location: Location, addr: u64, len: u64) {
        if !self.enabled {
            return;
        }
        for p in Self::pages(addr, len) {
            self.free_now.remove(&(location, p));
        }
    }

    /// Checks an access of `len` bytes at physical `phys` through a translation cached at
    /// `cached_at`; records a violation (once per access) if it reaches freed memory.
    pub fn check(
        &mut self,
        (ctx, va, access): (u16, u64, Access),
        location: Location,
        phys: u64,
        len: u64,
        cached_at: u64,
    ) {
        if !self.enabled || self.last_free.is_empty() {
            return;
        }
        let first = phys & !(PAGE - 1);
        let last = phys.saturating_add(len.max(1) - 1) & !(PAGE - 1);
        let hit = |kind, page| FreedAccess {
            ctx,
            va,
            location,
            page,
            access,
            kind,
        };
        let stale_counts = !self.linear.contains(&ctx);
        let found = if let Some((&(_, page), _)) = self
            .free_now
            .range((location, first)..=(location, last))
            .next()
        {
            Some(hit(FreedKind::Freed, page))
        } else if !stale_counts {
            None
        } else {
            Self::pages(first, last - first + PAGE)
                .find(|p| {
                    self.last_free
                        .get(&(location, *p))
                        .is_some_and(|&e| e > cached_at)
                })
                .map(|page| hit(FreedKind::StaleTranslation, page))
        };
        if let Some(v) = found {
            self.count += 1;
            if self.violations.len() < KEEP {
                self.violations.push(v);
            }
        }
    }

    /// The violations seen (the first ones) and how many there were in all.
    pub fn violations(&self) -> (Vec<FreedAccess>, u64) {
        (self.violations.clone(), self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: (u16, u64, Access) = (1, 0x1000, Access::Read);

    #[test]
    fn an_access_to_a_freed_page_is_reported_until_the_page_is_allocated_again() {
        let mut f = FreedPages::default();
        f.set_enabled(true, &[7]);
        let before = f.epoch();
        f.note_freed(Location::Vram, 0x10000, 0x2000);
        f.check(A, Location::Vram, 0x11ff8, 8, f.epoch());
        f.check(A, Location::System, 0x11ff8, 8, f.epoch());
        f.check(A, Location::Vram, 0x12000, 8, f.epoch());
        assert_eq!(f.violations().1, 1, "only the freed VRAM page");
        assert_eq!(f.violations().0[0].kind, FreedKind::Freed);
        f.note_allocated(Location::Vram, 0x10000, 0x2000);
        f.check(A, Location::Vram, 0x11000, 8, f.epoch());
        assert_eq!(
            f.violations().1,
            1,
            "a fresh translation of reused memory is fine"
        );
        f.check(A, Location::Vram, 0x11000, 8, before);
        let (v, n) = f.violations();
        assert_eq!(n, 2, "a translation cached before the free is stale");
        assert_eq!(v[1].kind, FreedKind::StaleTranslation);
        f.check(
            (7, 0x1000, Access::Write),
            Location::Vram,
            0x11000,
            8,
            before,
        );
        f.check(
            (GGTT_CTX as u16, 0, Access::Read),
            Location::Vram,
            0x11000,
            8,
            before,
        );
        assert_eq!(
            f.violations().1,
            2,
            "linear maps reach reused memory legitimately"
        );
        f.note_freed(Location::Vram, 0x10000, 0x1000);
        f.check(
            (7, 0x1000, Access::Write),
            Location::Vram,
            0x10000,
            8,
            f.epoch(),
        );
        assert_eq!(f.violations().1, 3, "but never free memory");
    }

    #[test]
    fn an_access_spanning_pages_finds_the_freed_one_and_disabled_tracking_sees_nothing() {
        let mut f = FreedPages::default();
        f.note_freed(Location::System, 0x3000, 0x1000);
        f.check(A, Location::System, 0x2000, 0x2000, 0);
        assert_eq!(f.violations().1, 0, "off by default");
        f.set_enabled(true, &[7]);
        f.note_freed(Location::System, 0x3000, 0x1000);
        f.check(A, Location::System, 0x2000, 0x1000, 0);
        assert_eq!(f.violations().1, 0);
        f.check(A, Location::System, 0x2ff0, 0x20, 0);
        assert_eq!(f.violations().0[0].page, 0x3000);
    }
}
