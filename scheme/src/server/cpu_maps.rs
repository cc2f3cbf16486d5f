//! The CPU mappings a BO handle gave out (`mmap_prep`) and has not yet seen unmapped, as
//! page ranges, so a `munmap` reaches the driver exactly once per mapping it counted.
//!
//! Owns: [`MapRanges`]. A mapping may come back in pieces (a client unmapping part of it:
//! the kernel reports each piece), so each mapping is kept as fragments; a `munmap` must lie
//! inside one fragment, which it cuts, and the mapping is released when its last fragment
//! goes. A `munmap` that lies in no fragment (unbalanced, or spanning two mappings) changes
//! nothing: releasing too early would let the driver move or free memory a client can
//! still reach (the server cannot revoke a mapping), releasing too late only leaks a pin.
//! Must not: call the driver or know about clients (the server does both).

use crate::uapi::decode::BIND_ALIGN;

/// One live piece of a mapping: pages `[start, end)` of the BO (byte offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fragment {
    start: u64,
    end: u64,
    mapping: u64,
}

/// What a `munmap` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmapped {
    /// It matched no mapping: nothing changed.
    Unbalanced,
    /// It cut a mapping that still has pieces.
    Partial,
    /// It removed a mapping's last piece: the driver's mapping ends.
    Released,
}

/// The live CPU mappings of one handle.
#[derive(Debug, Default, Clone)]
pub(crate) struct MapRanges {
    fragments: Vec<Fragment>,
    next: u64,
    live: u64,
}

/// `[offset, offset + len)` widened to whole pages, if it does not overflow.
fn pages(offset: u64, len: u64) -> Option<(u64, u64)> {
    let start = offset - offset % BIND_ALIGN;
    let end = offset
        .checked_add(len)?
        .checked_next_multiple_of(BIND_ALIGN)?;
    (end > start).then_some((start, end))
}

impl MapRanges {
    /// Mappings live (given out, not yet wholly unmapped).
    pub fn live(&self) -> u64 {
        self.live
    }

    /// Records a mapping of `[offset, offset + len)`. Returns false (nothing recorded) for
    /// an empty or overflowing range.
    pub fn map(&mut self, offset: u64, len: u64) -> bool {
        let Some((start, end)) = pages(offset, len) else {
            return false;
        };
        self.fragments.push(Fragment {
            start,
            end,
            mapping: self.next,
        });
        self.next += 1;
        self.live += 1;
        true
    }

    /// Records the unmap of `[offset, offset + len)`.
    pub fn unmap(&mut self, offset: u64, len: u64) -> Unmapped {
        match self.cut(offset, len) {
            None => Unmapped::Unbalanced,
            Some((_, false)) => Unmapped::Partial,
            Some((_, true)) => Unmapped::Released,
        }
    }

    /// Cuts the unmapped pages out of one fragment holding them all: the mapping it belongs
    /// to and whether that was its last piece; `None` if no fragment holds them.
    fn cut(&mut self, offset: u64, len: u64) -> Option<(u64, bool)> {
        let (start, end) = pages(offset, len)?;
        // An exact piece first, so two mappings of one range release one at a time.
        let exact = self
            .fragments
            .iter()
            .position(|f| f.start == start && f.end == end);
        let inside = || {
            self.fragments
                .iter()
                .position(|f| f.start <= start && end <= f.end)
        };
        let at = exact.or_else(inside)?;
        let cut = self.fragments.swap_remove(at);
        for (s, e) in [(cut.start, start), (end, cut.end)] {
            if s < e {
                self.fragments.push(Fragment {
                    start: s,
                    end: e,
                    mapping: cut.mapping,
                });
            }
        }
        let released = !self.fragments.iter().any(|f| f.mapping == cut.mapping);
        if released {
            self.live = self.live.saturating_sub(1);
        }
        Some((cut.mapping, released))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const P: u64 = BIND_ALIGN;

    #[test]
    fn pieces_release_the_mapping_only_when_all_are_gone() {
        let mut m = MapRanges::default();
        assert!(m.map(0, 4 * P));
        assert_eq!(m.unmap(P, P), Unmapped::Partial);
        assert_eq!(m.unmap(P, P), Unmapped::Unbalanced, "already unmapped");
        assert_eq!(m.unmap(0, 2 * P), Unmapped::Unbalanced, "spans a hole");
        assert_eq!(m.unmap(0, P), Unmapped::Partial);
        assert_eq!(m.unmap(2 * P, 2 * P), Unmapped::Released);
        assert_eq!(m.live(), 0);
        assert_eq!(m.unmap(0, P), Unmapped::Unbalanced);
        assert!(!m.map(u64::MAX - 10, 100), "overflowing range");
        assert!(!m.map(0, 0), "empty range");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Map(u64, u64),
        Unmap(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..8, 1u64..5).prop_map(|(o, n)| Op::Map(o, n)),
            (0u64..8, 1u64..5).prop_map(|(o, n)| Op::Unmap(o, n)),
        ]
    }

    proptest! {
        /// Model: each mapping as a set of pages. An unmap is refused iff no mapping holds
        /// all its pages; otherwise the mapping it cut held them all, loses exactly them,
        /// and is released iff it is then empty.
        #[test]
        fn releases_match_a_page_set_model(ops in prop::collection::vec(op(), 0..40)) {
            let mut m = MapRanges::default();
            let mut model: Vec<(u64, BTreeSet<u64>)> = Vec::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Map(o, n) => {
                        prop_assert!(m.map(o * P, n * P));
                        model.push((next, (o..o + n).collect()));
                        next += 1;
                    }
                    Op::Unmap(o, n) => {
                        let holds = |set: &BTreeSet<u64>| (o..o + n).all(|p| set.contains(&p));
                        let any = model.iter().any(|(_, set)| holds(set));
                        match m.cut(o * P, n * P) {
                            None => prop_assert!(!any, "refused an unmap some mapping holds"),
                            Some((id, released)) => {
                                let i = model.iter().position(|(k, _)| *k == id);
                                prop_assert!(i.is_some(), "cut a released mapping");
                                let i = i.unwrap_or(0);
                                prop_assert!(holds(&model[i].1), "cut pages it did not hold");
                                for p in o..o + n {
                                    model[i].1.remove(&p);
                                }
                                prop_assert_eq!(released, model[i].1.is_empty());
                                if released {
                                    model.remove(i);
                                }
                            }
                        }
                    }
                }
                prop_assert_eq!(m.live(), model.len() as u64);
            }
        }
    }
}
