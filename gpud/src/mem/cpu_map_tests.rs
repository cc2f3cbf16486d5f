//! In-process CPU mappings: addresses through the window, pins that block moves until the
//! last unmap, the table's reference that keeps a mapped BO's memory from being reused, and
//! contiguous VRAM for CPU-visible BOs.

use super::bo::{Bo, Placement};
use super::cpu_map::{CpuMapError, CpuMaps};
use super::manager::{EvictReport, MemError, MemoryManager};
use super::tests::{rig, VRAM};
use super::window::{contiguous_phys, CpuWindow, WindowChunk};
use crate::hw::pte::MemLocation;
use crate::types::{CpuVa, PhysAddr, PAGE_SIZE};
use crate::vm::vm_bo::GpuBo;
use std::sync::Arc;

const SYS_CPU: u64 = 0x7f00_0000_0000;
const VRAM_CPU: u64 = 0x2000_0000;
const UNIT: u64 = 64 << 10;

/// The rig's whole system memory as one chunk, and its VRAM.
fn window() -> CpuWindow {
    let chunk = WindowChunk {
        cpu: CpuVa(SYS_CPU),
        phys: PhysAddr(0),
        len: 32 << 20,
    };
    CpuWindow::new(vec![chunk], Some((CpuVa(VRAM_CPU), VRAM))).expect("window")
}

fn first_phys(bo: &Bo) -> u64 {
    bo.segments()
        .first()
        .map(|s| s.addr.get())
        .expect("a backing")
}

fn evict(mm: &MemoryManager, bo: &Arc<Bo>) -> Result<(), MemError> {
    mm.evict(bo, &mut EvictReport::default())
}

#[test]
fn a_mapping_pins_a_migratable_bo_until_its_last_unmap() {
    let rig = rig();
    let mm = rig.manager();
    let (bo, _) = mm
        .create_bo_with(4 * PAGE_SIZE, Placement::Migratable, None, true)
        .expect("bo");
    assert_eq!(bo.location(), Some(MemLocation::Vram));
    let maps = CpuMaps::new();
    let w = window();
    let base = VRAM_CPU + first_phys(&bo);
    assert_eq!(maps.map(&w, &bo, 0, 4 * PAGE_SIZE), Ok(CpuVa(base)));
    assert_eq!(
        maps.map(&w, &bo, PAGE_SIZE, 100),
        Ok(CpuVa(base + PAGE_SIZE))
    );
    assert_eq!((maps.count(bo.id()), bo.pin_count()), (2, 2));
    assert!(matches!(evict(&mm, &bo), Err(MemError::Pinned { .. })));
    assert!(maps.unmap(bo.id()));
    assert!(matches!(evict(&mm, &bo), Err(MemError::Pinned { .. })));
    assert!(maps.unmap(bo.id()));
    assert_eq!((maps.count(bo.id()), bo.pin_count()), (0, 0));
    assert_eq!(evict(&mm, &bo), Ok(()));
    assert_eq!(bo.location(), Some(MemLocation::System));
    assert!(!maps.unmap(bo.id()), "no mapping left: nothing to undo");
    assert_eq!(bo.pin_count(), 0);
    // Evicted, it maps through the system chunk and stays there while mapped.
    let at = maps
        .map(&w, &bo, 0, PAGE_SIZE)
        .expect("maps in system memory");
    assert_eq!(at, CpuVa(SYS_CPU + first_phys(&bo)));
    let mut report = EvictReport::default();
    assert_eq!(mm.validate(&bo, None, &mut report), Ok(false));
    assert_eq!(bo.location(), Some(MemLocation::System));
    assert!(maps.unmap(bo.id()));
    assert_eq!(mm.validate(&bo, None, &mut report), Ok(true));
}

#[test]
fn the_table_keeps_a_mapped_bo_and_its_memory_until_the_unmap() {
    let rig = rig();
    let mm = rig.manager();
    let free = rig.dma.free_bytes();
    let (bo, _) = mm
        .create_bo(2 * PAGE_SIZE, Placement::System, None)
        .expect("bo");
    let (id, weak) = (bo.id(), Arc::downgrade(&bo));
    let maps = CpuMaps::new();
    let at = maps.map(&window(), &bo, PAGE_SIZE, PAGE_SIZE).expect("map");
    assert_eq!(at, CpuVa(SYS_CPU + first_phys(&bo) + PAGE_SIZE));
    // Every other reference goes (the client's handle closed early).
    drop(bo);
    assert!(weak.upgrade().is_some(), "the mapping keeps the BO");
    assert_eq!(rig.dma.free_bytes(), free - 2 * PAGE_SIZE, "not freed");
    assert_eq!(maps.mapped_bos(), 1);
    assert!(maps.unmap(id));
    assert!(weak.upgrade().is_none(), "the last unmap drops it");
    assert_eq!(rig.dma.free_bytes(), free, "and its memory is free again");
    assert_eq!(maps.mapped_bos(), 0);
}

#[test]
fn bad_ranges_are_refused_and_take_no_pin() {
    let rig = rig();
    let mm = rig.manager();
    let (bo, _) = mm
        .create_bo(2 * PAGE_SIZE, Placement::System, None)
        .expect("bo");
    let maps = CpuMaps::new();
    let w = window();
    for (offset, len) in [
        (0x800, PAGE_SIZE),
        (PAGE_SIZE, 2 * PAGE_SIZE),
        (0, 0),
        (u64::MAX - 0xfff, PAGE_SIZE),
        (0, u64::MAX),
    ] {
        let got = maps.map(&w, &bo, offset, len);
        assert!(
            matches!(got, Err(CpuMapError::Range { .. })),
            "{offset:#x}+{len:#x}: {got:?}"
        );
    }
    assert_eq!((bo.pin_count(), maps.mapped_bos()), (0, 0));
    // A window without VRAM cannot map a VRAM BO, and says so without a pin.
    let (vbo, _) = mm.create_bo(PAGE_SIZE, Placement::Vram, None).expect("bo");
    let sys_only = CpuWindow::new(w.chunks().to_vec(), None).expect("window");
    let got = maps.map(&sys_only, &vbo, 0, PAGE_SIZE);
    assert!(matches!(got, Err(CpuMapError::NotMappable(_))), "{got:?}");
    assert_eq!(vbo.pin_count(), 0);
}

#[test]
fn scattered_vram_maps_only_within_a_run_and_visible_bos_are_contiguous() {
    let rig = rig();
    let mm = rig.manager();
    // A visible BO is one run, even at a size the buddy allocator splits.
    let (visible, _) = mm
        .create_bo_with(3 * UNIT, Placement::Vram, None, true)
        .expect("visible bo");
    assert!(visible.is_contiguous());
    assert!(contiguous_phys(&visible.segments(), 0, 3 * UNIT).is_ok());
    drop(visible);
    // Fill VRAM, then free every other unit: only isolated holes remain.
    let mut units: Vec<Arc<Bo>> = Vec::new();
    while let Ok((bo, _)) = mm.create_bo(UNIT, Placement::Vram, None) {
        units.push(bo);
    }
    assert!(units.len() >= 8, "VRAM filled with {} units", units.len());
    let mut i = 0;
    units.retain(|_| {
        i += 1;
        i % 2 == 0
    });
    let (scattered, _) = mm
        .create_bo(2 * UNIT, Placement::Vram, None)
        .expect("fits in two holes");
    let segs = scattered.segments();
    assert!(
        contiguous_phys(&segs, 0, 2 * UNIT).is_err(),
        "the setup must scatter the BO: {segs:?}"
    );
    let maps = CpuMaps::new();
    let w = window();
    let got = maps.map(&w, &scattered, 0, 2 * UNIT);
    assert!(matches!(got, Err(CpuMapError::NotMappable(_))), "{got:?}");
    assert_eq!(scattered.pin_count(), 0);
    // A range inside one block is still one range.
    let inside = maps
        .map(&w, &scattered, UNIT, PAGE_SIZE)
        .expect("one block");
    let second = contiguous_phys(&segs, UNIT, PAGE_SIZE).expect("phys");
    assert_eq!(inside, CpuVa(VRAM_CPU + second.get()));
    // And a visible BO does not take the scattered holes.
    let visible = mm.create_bo_with(2 * UNIT, Placement::Vram, None, true);
    assert!(
        matches!(visible, Err(MemError::NoSpace { .. })),
        "{visible:?}"
    );
}
