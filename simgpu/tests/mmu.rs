//! MMU walker against a map oracle, and the TLB keeping stale translations.

use proptest::prelude::*;
use simgpu::mmu::{Access, FaultReason, Memories, Mmu, PtRoot};
use simgpu::regs::{self, counter};
use simgpu::testkit::{enc, MapFlags, Rig, PAGE};
use simgpu::{HeapMemory, Location, PhysMemory, ENGINE_COPY};
use std::collections::BTreeMap;

/// Page sizes by level: 0 = 4K, 1 = 2M, 2 = 1G; `CONTIG` = 64K made of 16 4K entries.
const CONTIG: u32 = 9;

fn size_of(level: u32) -> u64 {
    match level {
        CONTIG => 64 << 10,
        l => 1 << (12 + 9 * l),
    }
}

/// One mapping: VA slot index, size kind, physical page number, location, writable.
fn mapping() -> impl Strategy<Value = (u64, u32, u64, bool, bool)> {
    (
        0u64..64,
        prop_oneof![Just(0u32), Just(CONTIG), Just(1), Just(2)],
        0u64..8,
        any::<bool>(),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(simgpu::testkit::proptest_cases(48)))]
    #[test]
    fn walker_matches_map_oracle(maps in prop::collection::vec(mapping(), 1..12), probes in prop::collection::vec((0u64..64, 0u64..(1 << 30)), 1..40)) {
        // Each mapping owns a distinct 1 GiB VA slot, so sizes never overlap.
        let mut rig = Rig::new(8 << 20);
        rig.context(0, true);
        let mut oracle: BTreeMap<u64, (u64, u64, Location, bool)> = BTreeMap::new();
        for (slot, level, ppn, vram, writable) in maps {
            let va = slot << 30;
            if oracle.contains_key(&va) {
                continue;
            }
            let size = size_of(level);
            let pa = ppn * size;
            let location = if vram { Location::Vram } else { Location::System };
            let flags = MapFlags { writable, location, null: false };
            if level == CONTIG {
                for i in 0..16 {
                    let raw = Rig::leaf_bits(pa + i * PAGE, 0, flags) | simgpu::pte::CONTIG_64K;
                    rig.write_entry(0, va + i * PAGE, 0, raw);
                }
            } else {
                rig.map(0, va, pa, level, flags);
            }
            oracle.insert(va, (size, pa, location, writable));
        }
        let root = u64::from(rig.gpu.mmio_read32(regs::ctx_reg(0, regs::CTX_PT_BASE_LO)) & !0xFFF);
        let vram = HeapMemory::new(4096);
        let mems = Memories { sys: &*rig.sys, vram: &vram };
        let mut mmu = Mmu::new(64);
        for (slot, off) in probes {
            let va = (slot << 30) | off;
            let expect = oracle.get(&(slot << 30)).filter(|(size, ..)| off < *size);
            for access in [Access::Read, Access::Write] {
                let got = mmu.translate(mems, 0, PtRoot { addr: root, location: Location::System }, va, access);
                match expect {
                    None => prop_assert_eq!(got.map_err(|f| f.reason), Err(FaultReason::NotPresent)),
                    Some(&(_, _, _, false)) if access == Access::Write => {
                        prop_assert_eq!(got.map_err(|f| f.reason), Err(FaultReason::ReadOnly))
                    }
                    Some(&(size, pa, location, _)) => {
                        let t = got.map_err(|f| format!("{f:?}"));
                        let t = t.unwrap();
                        prop_assert_eq!(t.phys, pa + (va & (size - 1)));
                        prop_assert_eq!(t.location, location);
                        prop_assert_eq!(t.remaining, size - (va & (size - 1)));
                    }
                }
            }
        }
        let c = mmu.counters;
        prop_assert!(c.tlb_hits + c.tlb_misses > 0);
    }
}

#[test]
fn walk_reads_four_entries_then_hits_the_tlb() {
    let mut rig = Rig::new(1 << 20);
    rig.context(0, false);
    rig.map(0, 0x1234_5000, 0x8000, 0, MapFlags::SYS_RW);
    let root = u64::from(rig.gpu.mmio_read32(regs::ctx_reg(0, regs::CTX_PT_BASE_LO)) & !0xFFF);
    let vram = HeapMemory::new(4096);
    let mems = Memories {
        sys: &*rig.sys,
        vram: &vram,
    };
    let mut mmu = Mmu::new(16);
    let r = PtRoot {
        addr: root,
        location: Location::System,
    };
    let t = mmu
        .translate(mems, 0, r, 0x1234_5678, Access::Read)
        .unwrap();
    assert_eq!(t.phys, 0x8678);
    assert_eq!((mmu.counters.pte_reads, mmu.counters.tlb_misses), (4, 1));
    mmu.translate(mems, 0, r, 0x1234_5000, Access::Read)
        .unwrap();
    assert_eq!((mmu.counters.pte_reads, mmu.counters.tlb_hits), (4, 1));
    // Another context with the same VA does not hit this context's entry.
    assert!(mmu
        .translate(
            mems,
            1,
            PtRoot {
                addr: 0,
                location: Location::System
            },
            0x1234_5000,
            Access::Read
        )
        .is_err());
}

#[test]
fn misaligned_large_page_and_leaf_at_root_are_bad_entries() {
    let mut rig = Rig::new(1 << 20);
    rig.context(0, false);
    rig.map(0, 0x4000_0000, 0x1000, 1, MapFlags::SYS_RW); // 2M leaf at a 4K-aligned address
    let root = u64::from(rig.gpu.mmio_read32(regs::ctx_reg(0, regs::CTX_PT_BASE_LO)) & !0xFFF);
    rig.sys
        .store_u64(root + 8, Rig::leaf_bits(0, 3, MapFlags::SYS_RW))
        .unwrap();
    let vram = HeapMemory::new(4096);
    let mems = Memories {
        sys: &*rig.sys,
        vram: &vram,
    };
    let mut mmu = Mmu::new(16);
    let r = PtRoot {
        addr: root,
        location: Location::System,
    };
    let mut err = |va| mmu_err(&mut mmu, mems, r, va);
    assert_eq!(err(0x4000_0000), FaultReason::BadEntry);
    assert_eq!(err(1 << 39), FaultReason::BadEntry);
    assert_eq!(err(1 << 48), FaultReason::BadEntry);
}

fn mmu_err(mmu: &mut Mmu, mems: Memories<'_>, r: PtRoot, va: u64) -> FaultReason {
    mmu.translate(mems, 0, r, va, Access::Read)
        .unwrap_err()
        .reason
}

/// The driver changes a PTE but skips the invalidation: the device keeps writing to the old
/// page. After a range invalidation completes, it writes to the new one.
#[test]
fn stale_tlb_is_used_until_range_invalidation() {
    let mut rig = Rig::new(1 << 20);
    rig.context(0, false);
    rig.queue(ENGINE_COPY, 0, 0);
    let (old, new) = (rig.alloc_sys(PAGE, PAGE), rig.alloc_sys(PAGE, PAGE));
    rig.map(0, 0x10_0000, old, 0, MapFlags::SYS_RW);
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(0x10_0000, 1));
    rig.gpu.run_until_idle();
    rig.map(0, 0x10_0000, new, 0, MapFlags::SYS_RW);
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(0x10_0004, 2));
    rig.gpu.run_until_idle();
    assert_eq!(
        rig.sys.load_u32(old + 4).unwrap(),
        2,
        "stale translation must be used"
    );
    assert_eq!(rig.sys.load_u32(new + 4).unwrap(), 0);

    let seqno = rig.invalidate(0, Some((0x10_0000, PAGE)));
    assert_ne!(
        rig.gpu.mmio_read32(regs::TLB_INV_DONE_SEQNO),
        seqno,
        "completion is asynchronous"
    );
    rig.gpu.step();
    assert_eq!(rig.gpu.mmio_read32(regs::TLB_INV_DONE_SEQNO), seqno);
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(0x10_0008, 3));
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u32(new + 8).unwrap(), 3);
    assert_eq!(rig.gpu.counters().invalidations, 1);
    assert_eq!(rig.irqs.count(5), 1, "TLB_INV_DONE vector");
}

/// A range invalidation outside the page, or for another context, leaves the entry cached;
/// a full invalidation of the right context drops it.
#[test]
fn invalidation_is_scoped_by_range_and_context() {
    let mut rig = Rig::new(1 << 20);
    rig.context(0, false);
    rig.queue(ENGINE_COPY, 0, 0);
    let (old, new) = (rig.alloc_sys(PAGE, PAGE), rig.alloc_sys(PAGE, PAGE));
    rig.map(0, 0x20_0000, old, 0, MapFlags::SYS_RW);
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(0x20_0000, 1));
    rig.gpu.run_until_idle();
    rig.map(0, 0x20_0000, new, 0, MapFlags::SYS_RW);
    rig.invalidate(0, Some((0x20_1000, PAGE)));
    rig.invalidate(1, None);
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(0x20_0000, 2));
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u32(old).unwrap(), 2);
    rig.invalidate(0, None);
    rig.submit(ENGINE_COPY, 0, &enc::store_dword(0x20_0000, 3));
    rig.gpu.run_until_idle();
    assert_eq!(rig.sys.load_u32(new).unwrap(), 3);
    let c = rig.gpu.counters();
    assert_eq!(c.invalidations, 3);
    let lo = rig
        .gpu
        .mmio_read32(regs::COUNTERS + 8 * counter::INVALIDATIONS);
    assert_eq!(u64::from(lo), c.invalidations);
}

#[test]
fn page_tables_and_pages_in_vram() {
    let mut rig = Rig::new(1 << 20);
    let vram = rig.gpu.vram();
    // Root and one 4K page in VRAM; the intermediate tables chain through VRAM too.
    let tables: Vec<u64> = (0..4).map(|i| i * PAGE).collect();
    let page = 4 * PAGE;
    let va = 0x7_0000_0000u64;
    for level in (1..4u32).rev() {
        let idx = (va >> (12 + 9 * level)) & 511;
        let entry = tables[4 - level as usize] | simgpu::pte::VALID | simgpu::pte::LOCATION_VRAM;
        vram.store_u64(tables[3 - level as usize] + idx * 8, entry)
            .unwrap();
    }
    let leaf = Rig::leaf_bits(page, 0, MapFlags::VRAM_RW);
    vram.store_u64(tables[3] + ((va >> 12) & 511) * 8, leaf)
        .unwrap();
    rig.gpu
        .mmio_write32(regs::ctx_reg(2, regs::CTX_PT_BASE_LO), 1); // root at VRAM 0
    rig.gpu
        .mmio_write32(regs::ctx_reg(2, regs::CTX_CTRL), regs::ctx_ctrl::ENABLE);
    rig.queue(ENGINE_COPY, 1, 2);
    rig.submit(
        ENGINE_COPY,
        1,
        &enc::store_qword(va + 8, 0xABCD_0123_4567_89EF),
    );
    rig.gpu.run_until_idle();
    assert_eq!(vram.load_u64(page + 8).unwrap(), 0xABCD_0123_4567_89EF);
    assert_eq!(rig.ctx_status(2), 0);
}

/// A null entry at the root covers 512 GiB: reads give zero, writes vanish, and after the
/// first walk the TLB serves further accesses in the same 1 GiB block.
#[test]
fn null_root_entry_is_sparse_and_cached() {
    let mut rig = Rig::new(1 << 20);
    let root = rig.context(0, false);
    rig.sys
        .store_u64(root + 2 * 8, simgpu::pte::VALID | simgpu::pte::NULL)
        .unwrap();
    let vram = HeapMemory::new(4096);
    let mems = Memories {
        sys: &*rig.sys,
        vram: &vram,
    };
    let mut mmu = Mmu::new(16);
    let r = PtRoot {
        addr: root,
        location: Location::System,
    };
    let va = (2u64 << 39) + 0x1234_5678;
    let t = mmu.translate(mems, 0, r, va, Access::Write).unwrap();
    assert!(t.null);
    mmu.translate(mems, 0, r, va + 0x1000, Access::Read)
        .unwrap();
    assert_eq!(
        (
            mmu.counters.tlb_misses,
            mmu.counters.tlb_hits,
            mmu.counters.pte_reads
        ),
        (1, 1, 1)
    );
}

/// Only writes that can give the device work wake its thread: the parameters of an
/// invalidation and the interrupt registers do not, the request does (and completes).
#[test]
fn only_work_starting_register_writes_wake_the_device() {
    use simgpu::device::Device;
    use std::sync::Arc;
    let mem = || -> Arc<dyn PhysMemory> { Arc::new(HeapMemory::new(1 << 20)) };
    let mut dev = Device::new(simgpu::Config::default(), mem(), mem());
    for (reg, value) in [
        (regs::TLB_INV_CTX, 0),
        (regs::TLB_INV_START_LO, 0x1000),
        (regs::TLB_INV_LEN_LO, 0x1000),
        (regs::INT_MASK, u32::MAX),
        (regs::INT_STATUS, u32::MAX),
    ] {
        assert!(
            !dev.mmio_write32(reg, value),
            "register {reg:#x} woke the device"
        );
    }
    assert!(dev.mmio_write32(regs::TLB_INV_REQ, 0));
    let seqno = dev.mmio_read32(regs::TLB_INV_REQ_SEQNO);
    assert!(dev.step());
    assert_eq!(dev.mmio_read32(regs::TLB_INV_DONE_SEQNO), seqno);
}
