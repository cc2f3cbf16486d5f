//! BO `mmap_prep` / `munmap` of `gpud pcid`, driven through the event loop as the Redox
//! kernel sends them: addresses in gpud's own mappings (DMA chunk or BAR2), the errno of a
//! range that is not one range, pins that munmap undoes, and munmaps the server did not
//! count.

use gpu_scheme::driver::GpuDriver;
use gpu_scheme::uapi::flags::BoCreateFlags;
use syscall::flag::MapFlags;

use super::*;
use crate::mem::bo::Bo;
use crate::mem::window::contiguous_phys;
use crate::types::PAGE_SIZE;
use crate::vm::GpuBo;

/// Where `SimDma` maps chunk `i` in gpud (see `SimDma::alloc_zeroed`).
fn chunk_cpu(i: usize) -> u64 {
    0x7000_0000 + i as u64 * CHUNK
}
/// `SimBar2::base`.
const BAR2_CPU: u64 = 0x2000_0000;

fn shared() -> u64 {
    (MapFlags::PROT_READ | MapFlags::PROT_WRITE | MapFlags::MAP_SHARED).bits() as u64
}

impl Rig {
    /// A BO with creation `flags`, and a `bo/<id>` handle to it.
    fn bo_flags(&mut self, size: u64, placement: Placement, flags: BoCreateFlags) -> (BoId, usize) {
        let reply = self.run(&Request::BoCreate(BoCreateRequest {
            size,
            placement,
            flags,
            vm: None,
        }));
        let id = read_args::<BoCreateArgs>(&reply).expect("args").bo_id;
        (BoId(id), self.bo_handle(id))
    }

    fn bo_handle(&mut self, id: u32) -> usize {
        self.tag += 1;
        let tag = self.tag;
        let path: &'static str = Box::leak(format!("bo/{id}").into_boxed_str());
        self.push(t::dup(tag, self.dev, path));
        self.pump_until(tag).expect("bo handle")
    }

    fn mmap(&mut self, handle: usize, offset: u64, len: usize) -> Result<usize, i32> {
        self.tag += 1;
        let tag = self.tag;
        self.push(t::mmap_prep(tag, handle, offset, len, shared()));
        self.pump_until(tag)
    }

    fn munmap(&mut self, handle: usize, offset: u64, len: usize) -> Result<usize, i32> {
        self.tag += 1;
        let tag = self.tag;
        let sync = syscall::flag::MunmapFlags::NEEDS_SYNC.bits() as u64;
        self.push(t::munmap(tag, handle, offset, len, sync));
        self.pump_until(tag)
    }

    fn driver(&mut self) -> &Driver {
        self.scheme().driver()
    }

    fn evict(&mut self, bo: &Arc<Bo>) -> bool {
        self.driver().device().evict(bo).is_ok()
    }
}

fn first_phys(bo: &Bo) -> u64 {
    bo.segments()
        .first()
        .map(|s| s.addr.get())
        .expect("a backing")
}

#[test]
fn a_system_bo_maps_at_its_chunks_address_plus_the_offset() {
    let mut rig = Rig::start(vec![PciFeature::MsiX]);
    let (_, h) = rig.bo(3 * PAGE_SIZE, Placement::SYSTEM);
    let bo = rig.bo_object(h);
    let phys = first_phys(&bo);
    let (i, base) = CHUNK_BASES
        .iter()
        .enumerate()
        .find(|(_, b)| (**b..*b + CHUNK).contains(&phys))
        .expect("the BO lies in a chunk");
    let want = chunk_cpu(i) + (phys - base) + PAGE_SIZE;
    assert_eq!(rig.mmap(h, PAGE_SIZE, 0x2000), Ok(want as usize));
    assert_eq!(bo.pin_count(), 1, "the mapping pins the BO");
    assert_eq!(rig.driver().cpu_maps().count(GpuBo::id(bo.as_ref())), 1);
    assert_eq!(rig.munmap(h, PAGE_SIZE, 0x2000), Ok(0));
    assert_eq!(bo.pin_count(), 0);
}

#[test]
fn a_visible_vram_bo_maps_through_bar2_and_a_scattered_one_gets_einval() {
    let mut rig = Rig::start(vec![PciFeature::MsiX]);
    let visible = BoCreateFlags::NEEDS_VISIBLE_VRAM;
    let (_, h) = rig.bo_flags(4 * PAGE_SIZE, Placement::VRAM, visible);
    let bo = rig.bo_object(h);
    let want = BAR2_CPU + first_phys(&bo) + 2 * PAGE_SIZE;
    assert_eq!(rig.mmap(h, 2 * PAGE_SIZE, 0x2000), Ok(want as usize));
    // Fragment VRAM with the device directly, then create a BO that must scatter.
    let device = rig.driver().device().clone();
    let mut units = Vec::new();
    while let Ok(unit) = device.bo_create(16 * PAGE_SIZE, crate::mem::bo::Placement::Vram, None) {
        units.push(unit);
    }
    let mut i = 0;
    units.retain(|_| {
        i += 1;
        i % 2 == 0
    });
    let (_, sh) = rig.bo(32 * PAGE_SIZE, Placement::VRAM);
    let scattered = rig.bo_object(sh);
    let segs = scattered.segments();
    assert!(
        contiguous_phys(&segs, 0, 32 * PAGE_SIZE).is_err(),
        "setup must scatter: {segs:?}"
    );
    assert_eq!(rig.mmap(sh, 0, 32 * 4096), Err(syscall::EINVAL));
    assert_eq!(scattered.pin_count(), 0, "a refused mapping pins nothing");
    drop(units);
}

#[test]
fn a_mapped_migratable_bo_stays_put_until_munmap() {
    let mut rig = Rig::start(vec![PciFeature::MsiX]);
    let both = Placement::SYSTEM | Placement::VRAM;
    let (_, h) = rig.bo_flags(2 * PAGE_SIZE, both, BoCreateFlags::NEEDS_VISIBLE_VRAM);
    let bo = rig.bo_object(h);
    assert_eq!(bo.location(), Some(crate::hw::pte::MemLocation::Vram));
    rig.mmap(h, 0, 0x2000).expect("mapped");
    assert!(!rig.evict(&bo), "a mapped BO is not evicted");
    // The client unmaps it in two pieces: the first leaves the mapping (and the pin) alive.
    assert_eq!(rig.munmap(h, 0, 0x1000), Ok(0));
    assert!(!rig.evict(&bo), "half of it is still mapped");
    assert_eq!(rig.munmap(h, 0x1000, 0x1000), Ok(0));
    assert!(rig.evict(&bo), "evictable again after the last munmap");
    assert_eq!(bo.location(), Some(crate::hw::pte::MemLocation::System));
}

#[test]
fn unbalanced_munmaps_change_nothing() {
    let mut rig = Rig::start(vec![PciFeature::MsiX]);
    let (id, a) = rig.bo(2 * PAGE_SIZE, Placement::SYSTEM);
    let b = rig.bo_handle(id.0);
    let bo = rig.bo_object(a);
    rig.mmap(a, 0, 0x2000).expect("mapped through a");
    // Never mapped through b; a range a never mapped; more munmaps than mmaps.
    assert_eq!(rig.munmap(b, 0, 0x2000), Ok(0));
    assert_eq!(rig.munmap(a, 0x2000, 0x1000), Ok(0));
    assert_eq!(bo.pin_count(), 1, "a's mapping still pins the BO");
    assert_eq!(rig.munmap(a, 0, 0x2000), Ok(0));
    assert_eq!(bo.pin_count(), 0);
    assert_eq!(rig.munmap(a, 0, 0x2000), Ok(0));
    assert_eq!(bo.pin_count(), 0, "no underflow");
    // b maps, a's stray munmap does not undo it.
    rig.mmap(b, 0, 0x1000).expect("mapped through b");
    assert_eq!(rig.munmap(a, 0, 0x1000), Ok(0));
    assert_eq!(bo.pin_count(), 1);
    assert_eq!(rig.driver().cpu_maps().count(GpuBo::id(bo.as_ref())), 1);
}

#[test]
fn a_bo_whose_handles_close_while_mapped_is_not_freed_until_the_munmap() {
    let mut rig = Rig::start(vec![PciFeature::MsiX]);
    let (id, h) = rig.bo(4 * PAGE_SIZE, Placement::SYSTEM);
    let free_before = rig.driver().device().mem_stats().sys_free;
    let bo = rig.bo_object(h);
    let weak = Arc::downgrade(&bo);
    drop(bo);
    rig.mmap(h, 0, 0x4000).expect("mapped");
    // A misbehaving kernel: the handle closes with the mapping live, the BO id goes too.
    rig.push(t::on_close(h));
    rig.run(&Request::BoDestroy(id));
    assert!(
        weak.upgrade().is_some(),
        "the driver still holds the mapped BO"
    );
    assert_eq!(rig.driver().device().mem_stats().sys_free, free_before);
    // The mapping ends (here through the driver: the handle is gone).
    let bo = weak.upgrade().expect("held");
    rig.driver().bo_munmap(&bo, 0, 0x4000).expect("munmap");
    drop(bo);
    assert!(weak.upgrade().is_none(), "freed after the munmap");
    let freed = rig.driver().device().mem_stats().sys_free;
    assert_eq!(freed, free_before + 4 * PAGE_SIZE);
}

#[test]
fn unaligned_and_out_of_range_mappings_are_refused() {
    let mut rig = Rig::start(vec![PciFeature::MsiX]);
    let (_, h) = rig.bo(2 * PAGE_SIZE, Placement::SYSTEM);
    let bo = rig.bo_object(h);
    for (offset, len) in [
        (0x800, 0x1000),
        (0x1000, 0x2000),
        (0x2000, 0x1000),
        (u64::MAX - 0xfff, 0x2000),
        (0, 0),
    ] {
        assert_eq!(
            rig.mmap(h, offset, len),
            Err(syscall::EINVAL),
            "{offset:#x}+{len:#x}"
        );
    }
    assert_eq!(bo.pin_count(), 0);
    assert_eq!(rig.driver().cpu_maps().mapped_bos(), 0);
}
