//! `SchemeMm` against fake objects: pages of recorded mappings only, `Munmap` as `Unmap` of
//! the CPU range it covered (in part too), `Gone`, pins held until dropped, and the
//! capabilities a Redox scheme lacks.

use super::*;
use crate::svm::{Revoke, Supply};
use std::sync::atomic::{AtomicUsize, Ordering};

/// An object whose page `i` is at device address `base + i * PAGE_SIZE`; counts live pins.
struct FakeObject {
    base: u64,
    size: u64,
    pins: Arc<AtomicUsize>,
}

struct Pin(Arc<AtomicUsize>);

impl Drop for Pin {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SchemeObject for FakeObject {
    fn size(&self) -> u64 {
        self.size
    }

    fn pin(&self, offset: u64, len: u64) -> Result<(Vec<PhysAddr>, PinGuard), MmError> {
        self.pins.fetch_add(1, Ordering::SeqCst);
        let pages = (0..len / PAGE_SIZE)
            .map(|i| PhysAddr(self.base + offset + i * PAGE_SIZE))
            .collect();
        Ok((pages, Box::new(Pin(self.pins.clone()))))
    }
}

fn object(base: u64, pages: u64) -> (Arc<dyn SchemeObject>, Arc<AtomicUsize>) {
    let pins = Arc::new(AtomicUsize::new(0));
    let o = FakeObject {
        base,
        size: pages * PAGE_SIZE,
        pins: pins.clone(),
    };
    (Arc::new(o), pins)
}

fn range(start: u64, pages: u64) -> CpuRange {
    CpuRange::new(start, pages * PAGE_SIZE).expect("range")
}

/// Records every event.
#[derive(Default)]
struct Events(parking_lot::Mutex<Vec<MmEvent>>);

impl MmListener for Events {
    fn event(&self, e: MmEvent) {
        self.0.lock().push(e);
    }
}

fn mm_with_events() -> (SchemeMm, Arc<Events>) {
    let mm = SchemeMm::new();
    let events = Arc::new(Events::default());
    mm.set_listener(events.clone());
    (mm, events)
}

const VA: u64 = 0x7000_0000;
const P: u64 = PAGE_SIZE;

#[test]
fn a_redox_scheme_can_neither_fault_nor_revoke_nor_write_protect() {
    let mm = SchemeMm::new();
    assert_eq!(mm.caps(), MmCaps::default());
    let r = range(VA, 1);
    assert_eq!(mm.revoke_cpu(r, Revoke::Evict), Err(MmError::NotSupported));
    assert_eq!(
        mm.revoke_cpu(r, Revoke::WriteProtect),
        Err(MmError::NotSupported)
    );
    assert_eq!(mm.supply(r, Supply::Zero), Err(MmError::NotSupported));
}

#[test]
fn pages_of_recorded_mappings_resolve_in_cpu_order_and_nothing_else_does() {
    let mm = SchemeMm::new();
    let (a, _) = object(0x10_0000, 4);
    let (b, _) = object(0x80_0000, 2);
    // Pages 1..3 of A at VA, then all of B right after it (read-only).
    mm.record_map(range(VA, 3), 7, P, true, a).expect("map A");
    mm.record_map(range(VA + 3 * P, 2), 8, 0, false, b)
        .expect("map B");
    let p = mm.get_pages(range(VA + P, 3), false).expect("pages");
    let want: Vec<PhysAddr> = [0x10_2000, 0x10_3000, 0x80_0000]
        .into_iter()
        .map(PhysAddr)
        .collect();
    assert_eq!(p.pages(), &want[..]);
    // Writing needs every page writable: B is not.
    assert_eq!(
        mm.get_pages(range(VA + P, 3), true).unwrap_err(),
        MmError::Fault { va: VA + 3 * P }
    );
    // Past the mappings, and memory that is no gpu-scheme object, are EFAULT.
    assert_eq!(
        mm.get_pages(range(VA + 4 * P, 2), false).unwrap_err(),
        MmError::Fault { va: VA + 5 * P }
    );
    assert_eq!(
        mm.get_pages(range(0x1000, 1), false).unwrap_err(),
        MmError::Fault { va: 0x1000 }
    );
}

#[test]
fn a_misreported_mapping_is_refused() {
    let mm = SchemeMm::new();
    let (a, _) = object(0, 2);
    mm.record_map(range(VA, 2), 1, 0, true, a.clone())
        .expect("map");
    // Overlapping an existing record, past the object's end, misaligned in the object.
    assert!(mm
        .record_map(range(VA + P, 2), 2, 0, true, a.clone())
        .is_err());
    assert!(mm
        .record_map(range(VA - P, 2), 2, 0, true, a.clone())
        .is_err());
    assert!(mm
        .record_map(range(VA + 2 * P, 2), 2, P, true, a.clone())
        .is_err());
    assert!(mm
        .record_map(range(VA + 2 * P, 1), 2, 12, true, a.clone())
        .is_err());
    assert!(mm.record_map(range(VA + 2 * P, 1), 2, P, true, a).is_ok());
    assert_eq!(mm.mappings(), 2);
}

#[test]
fn munmap_of_part_of_a_mapping_is_an_unmap_of_its_cpu_range_and_the_rest_stays() {
    let (mm, events) = mm_with_events();
    let (a, _) = object(0x10_0000, 8);
    // Object pages 2..6 at VA (through handle 3).
    mm.record_map(range(VA, 4), 3, 2 * P, true, a).expect("map");
    // The kernel's Munmap for object pages 3..5 of handle 3; another handle's is not ours.
    mm.unmapped(4, 3 * P, 2 * P);
    assert!(events.0.lock().is_empty());
    mm.unmapped(3, 3 * P, 2 * P);
    assert_eq!(*events.0.lock(), [MmEvent::Unmap(range(VA + P, 2))]);
    assert_eq!(mm.mappings(), 2, "the pages on either side stay");
    let p = mm.get_pages(range(VA, 1), true).expect("first page");
    assert_eq!(p.pages(), [PhysAddr(0x10_2000)]);
    let p = mm.get_pages(range(VA + 3 * P, 1), true).expect("last page");
    assert_eq!(p.pages(), [PhysAddr(0x10_5000)]);
    assert_eq!(
        mm.get_pages(range(VA, 2), false).unwrap_err(),
        MmError::Fault { va: VA + P }
    );
}

#[test]
fn the_client_leaving_is_gone_once_and_resolves_nothing_after() {
    let (mm, events) = mm_with_events();
    let (a, _) = object(0, 1);
    mm.record_map(range(VA, 1), 1, 0, true, a.clone())
        .expect("map");
    mm.client_gone();
    mm.client_gone();
    assert_eq!(*events.0.lock(), [MmEvent::Gone]);
    assert_eq!(
        mm.get_pages(range(VA, 1), false).unwrap_err(),
        MmError::Gone
    );
    assert_eq!(
        mm.record_map(range(VA, 1), 1, 0, true, a).unwrap_err(),
        MmError::Gone
    );
}

#[test]
fn pages_stay_pinned_until_the_pinned_pages_are_dropped_even_after_munmap() {
    let (mm, _events) = mm_with_events();
    let (a, pins) = object(0, 2);
    let (b, pins_b) = object(0x10_0000, 1);
    mm.record_map(range(VA, 2), 1, 0, true, a).expect("map");
    mm.record_map(range(VA + 2 * P, 1), 2, 0, true, b)
        .expect("map");
    let p = mm.get_pages(range(VA, 3), true).expect("pages");
    assert_eq!(p.bytes(), 3 * P);
    assert_eq!(
        (pins.load(Ordering::SeqCst), pins_b.load(Ordering::SeqCst)),
        (1, 1)
    );
    mm.unmapped(1, 0, 2 * P);
    assert_eq!(
        pins.load(Ordering::SeqCst),
        1,
        "the GPU may still reach them"
    );
    drop(p);
    assert_eq!(
        (pins.load(Ordering::SeqCst), pins_b.load(Ordering::SeqCst)),
        (0, 0)
    );
}

/// Unmaps a range of the object while it is being pinned (an event racing `get_pages`).
struct RacingObject {
    inner: Arc<dyn SchemeObject>,
    mm: parking_lot::Mutex<Option<Arc<SchemeMm>>>,
}

impl SchemeObject for RacingObject {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn pin(&self, offset: u64, len: u64) -> Result<(Vec<PhysAddr>, PinGuard), MmError> {
        if let Some(mm) = self.mm.lock().take() {
            mm.unmapped(1, 0, PAGE_SIZE);
        }
        self.inner.pin(offset, len)
    }
}

#[test]
fn a_munmap_racing_get_pages_makes_it_retry_and_releases_its_pins() {
    let mm = Arc::new(SchemeMm::new());
    let (inner, pins) = object(0, 2);
    let racing = Arc::new(RacingObject {
        inner,
        mm: parking_lot::Mutex::new(Some(mm.clone())),
    });
    mm.record_map(range(VA, 2), 1, 0, true, racing)
        .expect("map");
    assert_eq!(
        mm.get_pages(range(VA, 2), false).unwrap_err(),
        MmError::Again
    );
    assert_eq!(pins.load(Ordering::SeqCst), 0);
    // The retry sees the new state.
    assert_eq!(
        mm.get_pages(range(VA, 2), false).unwrap_err(),
        MmError::Fault { va: VA }
    );
    assert_eq!(
        mm.get_pages(range(VA + P, 1), false).expect("rest").bytes(),
        P
    );
}
