//! BOs on shared windows: each backing's own memory object, the CPU-mapping rule (a mapped
//! BO never moves), moves between objects, reuse after free, and the mapping budget.

use super::bo::{Backing, Placement};
use super::copy::{copy_commands, CopyEngine};
use super::manager::{EvictReport, MemError};
use super::shm::{MapBudget, ShareError};
use super::tests::{contents, pattern, shared_rig, VRAM};
use crate::hw::cmd::CommandStream;
use crate::hw::pte::MemLocation;
use crate::hw::DmaMemory;
use crate::types::{PhysAddr, PAGE_SIZE};
use crate::vm::vm_bo::GpuBo;
use rustix::fd::OwnedFd;
use rustix::io::{pread, pwrite};

fn fd_bytes(fd: &OwnedFd, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    assert_eq!(pread(fd, &mut buf, 0).unwrap(), len);
    buf
}

fn fd_size(fd: &OwnedFd) -> u64 {
    rustix::fs::fstat(fd).unwrap().st_size as u64
}

/// Moves of an unmapped BO bind a new object and free the old one; nothing leaks.
#[test]
fn moves_rebind_objects_and_freeing_returns_the_budget() {
    let budget = MapBudget::new(1 << 12);
    let r = shared_rig(budget.clone());
    let m = r.manager();
    let (bo, _) = m
        .create_bo(8 * PAGE_SIZE, Placement::Migratable, None)
        .unwrap();
    bo.write(100, b"survives moves").unwrap();
    assert_eq!((r.pools.shared_objects(), budget.used()), (1, 1));
    m.evict(&bo, &mut EvictReport::default()).unwrap();
    assert_eq!(bo.location(), Some(MemLocation::System));
    assert_eq!(
        r.pools.shared_objects(),
        1,
        "the VRAM object went with the VRAM"
    );
    assert!(m.validate(&bo, None, &mut EvictReport::default()).unwrap());
    assert_eq!(bo.location(), Some(MemLocation::Vram));
    let mut buf = [0u8; 14];
    bo.read(100, &mut buf).unwrap();
    assert_eq!(&buf, b"survives moves");
    drop(bo);
    assert_eq!((r.pools.shared_objects(), budget.used()), (0, 0));
    assert_eq!(r.pools.lost_ranges(), 0);
}

/// A BO mapped while in VRAM stays there: explicit eviction is refused, memory pressure
/// skips it, and the GPU and the mapping agree on its bytes.
#[test]
fn cpu_mapped_vram_bo_is_never_moved_and_gpu_and_mapping_agree() {
    let r = shared_rig(MapBudget::new(1 << 12));
    let m = r.manager();
    let (bo, _) = m.create_bo(VRAM / 2, Placement::Migratable, None).unwrap();
    let fd = bo.cpu_memory().unwrap();
    assert_eq!(fd_size(&fd), VRAM / 2);
    pwrite(&fd, &pattern(4096, 3), PAGE_SIZE).unwrap();
    assert_eq!(
        m.evict(&bo, &mut EvictReport::default()),
        Err(MemError::Pinned { bo: bo.id().0 })
    );
    // Pressure: the rest of VRAM is taken; the mapped BO is not a victim.
    let (_other, report) = m.create_bo(VRAM / 2, Placement::Vram, None).unwrap();
    assert!(report.evicted.is_empty());
    assert!(matches!(
        m.create_bo(PAGE_SIZE, Placement::Vram, None),
        Err(MemError::NoSpace { .. })
    ));
    assert_eq!(bo.location(), Some(MemLocation::Vram));
    // The GPU copies the BO's second page (what the client wrote) to system memory.
    let seg = bo.segments()[0];
    let dst = r.dma.alloc(PAGE_SIZE).unwrap();
    let mut s = CommandStream::new();
    let from = PhysAddr(seg.addr.get() + PAGE_SIZE);
    copy_commands(
        &mut s,
        (MemLocation::Vram, from),
        (MemLocation::System, dst.addr),
        PAGE_SIZE,
    );
    assert!(r.engine.submit(s.dwords(), &[]).unwrap().is_signalled());
    let mut got = vec![0u8; 4096];
    r.dma.read(dst.addr, &mut got).unwrap();
    assert_eq!(
        got,
        pattern(4096, 3),
        "the GPU reads what the mapping wrote"
    );
    // And the mapping sees what the GPU writes.
    let mut s = CommandStream::new();
    copy_commands(
        &mut s,
        (MemLocation::System, dst.addr),
        (MemLocation::Vram, seg.addr),
        PAGE_SIZE,
    );
    assert!(r.engine.submit(s.dwords(), &[]).unwrap().is_signalled());
    assert_eq!(fd_bytes(&fd, 4096), pattern(4096, 3));
}

/// A BO evicted to system memory and then mapped stays in system memory: validation leaves
/// it (the exec path rebinds to the same pages), so the mapping is never left behind.
#[test]
fn evicted_then_mapped_bo_is_not_validated_back() {
    let r = shared_rig(MapBudget::new(1 << 12));
    let m = r.manager();
    let (bo, _) = m
        .create_bo(4 * PAGE_SIZE, Placement::Migratable, None)
        .unwrap();
    bo.write(0, b"before eviction").unwrap();
    m.evict(&bo, &mut EvictReport::default()).unwrap();
    let fd = bo.cpu_memory().unwrap();
    assert_eq!(&fd_bytes(&fd, 15), b"before eviction");
    let before = bo.segments();
    let moved = m.validate(&bo, None, &mut EvictReport::default()).unwrap();
    assert!(!moved);
    assert_eq!(
        (bo.location(), bo.segments()),
        (Some(MemLocation::System), before)
    );
    pwrite(&fd, b"client write", 0).unwrap();
    let mut buf = [0u8; 12];
    bo.read(0, &mut buf).unwrap();
    assert_eq!(
        &buf, b"client write",
        "the device's pages are the mapping's pages"
    );
}

/// A freed BO's range reused by another BO: the new BO starts zeroed, and a stale holder of
/// the old object sees the old bytes, never the new owner's.
#[test]
fn reuse_after_free_is_invisible_to_a_stale_holder() {
    let r = shared_rig(MapBudget::new(1 << 12));
    let m = r.manager();
    for placement in [Placement::System, Placement::Vram] {
        let (a, _) = m.create_bo(2 * PAGE_SIZE, placement, None).unwrap();
        let stale = a.cpu_memory().unwrap();
        pwrite(&stale, b"secret of A", 0).unwrap();
        let place = a.segments();
        drop(a);
        let (b, _) = m.create_bo(2 * PAGE_SIZE, placement, None).unwrap();
        assert_eq!(b.segments(), place, "first fit hands out the same range");
        assert_eq!(
            contents(&b),
            vec![0; 2 * PAGE_SIZE as usize],
            "no data of A"
        );
        b.write(0, b"secret of B").unwrap();
        assert_eq!(&fd_bytes(&stale, 11), b"secret of A");
        pwrite(&stale, b"scribbles!!", 0).unwrap();
        let mut buf = [0u8; 11];
        b.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"secret of B");
    }
}

/// A VRAM BO made of several buddy blocks is one object, mapped piecewise in BO order.
#[test]
fn scattered_vram_bo_is_one_contiguous_object() {
    let r = shared_rig(MapBudget::new(1 << 12));
    let m = r.manager();
    // Fragment VRAM: every other 64 KiB block stays taken.
    let mut keep = Vec::new();
    let mut gaps = Vec::new();
    for i in 0..16 {
        let (bo, _) = m.create_bo(64 << 10, Placement::Vram, None).unwrap();
        if i % 2 == 0 {
            keep.push(bo)
        } else {
            gaps.push(bo)
        }
    }
    drop(gaps);
    let (bo, _) = m.create_bo(3 * (64 << 10), Placement::Vram, None).unwrap();
    let segs = bo.segments();
    assert!(segs.len() >= 2, "{segs:?}");
    let fd = bo.cpu_memory().unwrap();
    assert_eq!(fd_size(&fd), 3 * (64 << 10));
    let data = pattern(3 << 16, 9);
    pwrite(&fd, &data, 0).unwrap();
    assert_eq!(
        contents(&bo),
        data,
        "object offset = BO offset across blocks"
    );
    let mut first = vec![0u8; 16];
    r.gpu.vram().read(segs[1].addr.get(), &mut first).unwrap();
    assert_eq!(first, data[segs[0].len as usize..][..16]);
}

/// Past the mapping budget creation fails with a typed error and leaks nothing.
#[test]
fn mapping_budget_exhaustion_is_a_clean_error() {
    let budget = MapBudget::new(3);
    let r = shared_rig(budget.clone());
    let m = r.manager();
    let bos: Vec<_> = (0..3)
        .map(|_| m.create_bo(PAGE_SIZE, Placement::System, None).unwrap().0)
        .collect();
    let (sys_free, vram_free) = (r.dma.free_bytes(), r.pools.vram.lock().free_bytes());
    for placement in [Placement::System, Placement::Vram, Placement::Migratable] {
        let e = m.create_bo(PAGE_SIZE, placement, None).unwrap_err();
        assert!(
            matches!(e, MemError::Share(ShareError::Limit { limit: 3, .. })),
            "{e}"
        );
    }
    assert_eq!(
        (r.dma.free_bytes(), r.pools.vram.lock().free_bytes()),
        (sys_free, vram_free)
    );
    drop(bos);
    assert!(m.create_bo(PAGE_SIZE, Placement::Vram, None).is_ok());
    assert!(matches!(
        r.pools.alloc_sys(PAGE_SIZE),
        Ok(Backing::System(_))
    ));
}

/// A system BO in a fragmented pool is several regions and still one object in BO order.
#[test]
fn scattered_system_bo_is_one_contiguous_object() {
    let r = shared_rig(MapBudget::new(1 << 14));
    let m = r.manager();
    // Fill the system pool with 64 KiB BOs, then free every other one.
    let mut all = Vec::new();
    while let Ok((bo, _)) = m.create_bo(64 << 10, Placement::System, None) {
        all.push(bo);
    }
    assert!(all.len() > 8, "pool too small to fragment");
    let keep: Vec<_> = all.iter().step_by(2).cloned().collect();
    drop(all);
    let (bo, _) = m
        .create_bo(3 * (64 << 10), Placement::System, None)
        .unwrap();
    let segs = bo.segments();
    assert!(segs.len() >= 2, "{segs:?}");
    assert_eq!(segs.iter().map(|s| s.len).sum::<u64>(), 3 << 16);
    assert!(
        bo.system_region().is_none(),
        "several regions are not one region"
    );
    let fd = bo.cpu_memory().unwrap();
    assert_eq!(fd_size(&fd), 3 << 16);
    let data = pattern(3 << 16, 11);
    pwrite(&fd, &data, 0).unwrap();
    assert_eq!(
        contents(&bo),
        data,
        "object offset = BO offset across regions"
    );
    drop(keep);
}
