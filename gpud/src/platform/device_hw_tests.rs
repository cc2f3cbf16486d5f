//! The platform → hardware adapters against fakes: bounds failures are counted, never
//! panics; BAR memory behaves like plain memory (oracle: `HeapMemory`); MSI-X programming
//! and the status-driven IRQ hook.

use super::*;
use crate::hw::DmaMemory as _;
use crate::platform::sys::DmaMemory as SysDma;
use crate::platform::testing::FakeBar;
use crate::types::{CpuVa, PhysAddr, PAGE_SIZE};
use proptest::prelude::*;
use simgpu::HeapMemory;
use std::time::Duration;

fn bar(bytes: u64) -> FakeBar {
    FakeBar {
        bir: 0,
        dwords: vec![0; (bytes / 4) as usize],
    }
}

#[test]
fn bar_mmio_refuses_out_of_bounds_and_misaligned_accesses_without_panicking() {
    let mmio = BarMmio::new(bar(0x100));
    mmio.write32(0x10, 7);
    assert_eq!(mmio.read32(0x10), 7);
    assert_eq!(mmio.faults(), 0);
    assert_eq!(mmio.read32(0x100), u32::MAX, "past the end reads all-ones");
    mmio.write32(0x1000, 1);
    mmio.write32(0x12, 1);
    assert_eq!(mmio.read32(u32::MAX), u32::MAX);
    mmio.write64(0xfc, u64::MAX);
    assert_eq!(mmio.faults(), 5, "every refused access is counted");
    assert_eq!(
        mmio.read32(0xfc),
        u32::MAX,
        "the in-bounds half was written"
    );
}

#[test]
fn bar_default_64_bit_accesses_check_both_halves() {
    let mut b = bar(0x10);
    assert!(b.write64(8, 0x1122_3344_5566_7788));
    assert_eq!(b.read64(8), Some(0x1122_3344_5566_7788));
    assert_eq!(b.dwords[2], 0x5566_7788, "low half first, little endian");
    assert!(!b.write64(0x10, 1), "past the end");
    assert!(!b.write64(4, 1), "misaligned");
    assert!(!b.write64(u64::MAX - 3, 1), "overflowing offset");
    assert_eq!(b.read64(12), None);
    assert_eq!(b.dwords[3], 0x1122_3344, "a refused write changes nothing");
}

#[derive(Debug, Clone)]
enum MemOp {
    Write(u64, Vec<u8>),
    Read(u64, usize),
    Store32(u64, u32),
    Load32(u64),
    Store64(u64, u64),
    Load64(u64),
    Add64(u64, u64),
    Cas32(u64, u32, u32),
}

const MEM: u64 = 256;

fn mem_op() -> impl Strategy<Value = MemOp> {
    let addr = 0..MEM + 16;
    prop_oneof![
        (addr.clone(), prop::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(a, d)| MemOp::Write(a, d)),
        (addr.clone(), 0usize..24).prop_map(|(a, n)| MemOp::Read(a, n)),
        (addr.clone(), any::<u32>()).prop_map(|(a, v)| MemOp::Store32(a, v)),
        addr.clone().prop_map(MemOp::Load32),
        (addr.clone(), any::<u64>()).prop_map(|(a, v)| MemOp::Store64(a, v)),
        addr.clone().prop_map(MemOp::Load64),
        (addr.clone(), any::<u64>()).prop_map(|(a, v)| MemOp::Add64(a, v)),
        (addr, 0u32..3, any::<u32>()).prop_map(|(a, c, n)| MemOp::Cas32(a, c, n)),
    ]
}

proptest! {
    /// BAR2 memory answers every access exactly like heap memory of the same size: the same
    /// bytes, the same values, the same errors.
    #[test]
    fn bar_memory_matches_heap_memory(ops in prop::collection::vec(mem_op(), 1..60)) {
        let b = BarMemory::new(bar(MEM), MEM);
        let h = HeapMemory::new(MEM);
        for op in ops {
            match op {
                MemOp::Write(a, d) => prop_assert_eq!(b.write(a, &d), h.write(a, &d)),
                MemOp::Read(a, n) => {
                    let (mut x, mut y) = (vec![0u8; n], vec![0u8; n]);
                    prop_assert_eq!(b.read(a, &mut x), h.read(a, &mut y));
                    prop_assert_eq!(x, y);
                }
                MemOp::Store32(a, v) => prop_assert_eq!(b.store_u32(a, v), h.store_u32(a, v)),
                MemOp::Load32(a) => prop_assert_eq!(b.load_u32(a), h.load_u32(a)),
                MemOp::Store64(a, v) => prop_assert_eq!(b.store_u64(a, v), h.store_u64(a, v)),
                MemOp::Load64(a) => prop_assert_eq!(b.load_u64(a), h.load_u64(a)),
                MemOp::Add64(a, v) => prop_assert_eq!(b.fetch_add_u64(a, v), h.fetch_add_u64(a, v)),
                MemOp::Cas32(a, c, n) => prop_assert_eq!(
                    b.compare_exchange_u32(a, c, n),
                    h.compare_exchange_u32(a, c, n)
                ),
            }
        }
        let (mut x, mut y) = (vec![0u8; MEM as usize], vec![0u8; MEM as usize]);
        b.read(0, &mut x).unwrap();
        h.read(0, &mut y).unwrap();
        prop_assert_eq!(x, y);
    }
}

#[test]
fn bar_memory_exposes_no_more_than_the_mapping() {
    let b = BarMemory::new(bar(64), 1 << 20);
    assert_eq!(b.size(), 64);
    assert!(b.store_u64(64, 1).is_err());
}

/// Refuses allocations above `limit` or beyond `capacity` in total; hands out chunks at
/// increasing physical addresses above 8 GiB.
struct LimitedDma {
    limit: u64,
    capacity: u64,
    next: u64,
    tried: Vec<u64>,
    freed: u64,
}

impl LimitedDma {
    fn new(limit: u64, capacity: u64) -> Self {
        Self {
            limit,
            capacity,
            next: 0,
            tried: Vec::new(),
            freed: 0,
        }
    }
}

impl SysDma for LimitedDma {
    fn alloc_zeroed(&mut self, len: u64) -> Result<DmaBuffer, SysError> {
        self.tried.push(len);
        if len > self.limit || self.next + len > self.capacity {
            return Err(SysError::new(syscall::ENOMEM));
        }
        let at = self.next;
        self.next += len;
        Ok(DmaBuffer {
            cpu: CpuVa(0x7000_0000 + at),
            phys: PhysAddr(0x2_0000_0000 + at),
            len,
        })
    }
    fn free(&mut self, buf: DmaBuffer) -> Result<(), SysError> {
        self.freed += buf.len;
        Ok(())
    }
    fn access(&self, buf: &DmaBuffer) -> Result<Arc<dyn PhysMemory>, SysError> {
        Ok(Arc::new(HeapMemory::new(buf.len)))
    }
}

const MIB: u64 = 1 << 20;

#[test]
fn the_dma_pool_is_built_from_chunks_halved_until_the_memory_scheme_gives_them() {
    let mut dma = LimitedDma::new(3 * MIB, 64 * MIB);
    let (bufs, pool) = alloc_dma_pool(&mut dma, 8 * MIB, MIB, 4 * MIB).unwrap();
    assert_eq!(dma.tried, vec![4 * MIB, 2 * MIB, 2 * MIB, 2 * MIB, 2 * MIB]);
    assert_eq!(bufs.len(), 4);
    assert_eq!(pool.base(), PhysAddr(0x2_0000_0000));
    assert_eq!(pool.end(), PhysAddr(0x2_0000_0000 + 8 * MIB));
    assert_eq!(pool.free_bytes(), 8 * MIB);
    let r = pool.alloc(PAGE_SIZE).unwrap();
    assert_eq!(
        r.addr,
        PhysAddr(0x2_0000_0000),
        "regions carry physical addresses"
    );
    assert!(
        pool.alloc(3 * MIB).is_err(),
        "no region spans two chunks, even adjacent ones"
    );
}

#[test]
fn a_dma_pool_below_the_minimum_is_returned_and_refused() {
    let mut tiny = LimitedDma::new(8 * MIB, 3 * MIB);
    let err = alloc_dma_pool(&mut tiny, 8 * MIB, 4 * MIB, 2 * MIB).err();
    assert_eq!(err, Some(SysError::new(syscall::ENOMEM)));
    assert_eq!(tiny.next, 3 * MIB, "it took what it could get...");
    assert_eq!(tiny.freed, 3 * MIB, "...and gave it all back");
    assert_eq!(
        tiny.tried.iter().filter(|&&l| l < DMA_MIN_CHUNK).count(),
        0,
        "never below the smallest chunk"
    );
}

fn message() -> MsiMessage {
    MsiMessage {
        addr: 0x1_fee0_1000,
        data: 0x41,
    }
}

#[test]
fn program_msix_points_every_used_entry_at_the_one_message() {
    let mmio = BarMmio::new(bar(u64::from(regs::MSIX_TABLE) + 0x1000));
    program_msix(&mmio, message()).unwrap();
    for v in 0..VECTORS_USED {
        let at = regs::MSIX_TABLE + v * regs::MSIX_ENTRY_SIZE;
        assert_eq!(mmio.read32(at), 0xfee0_1000);
        assert_eq!(mmio.read32(at + 4), 1);
        assert_eq!(mmio.read32(at + regs::MSIX_DATA), 0x41);
        assert_eq!(mmio.read32(at + regs::MSIX_CTRL), 0, "unmasked");
    }
    let unused = regs::MSIX_TABLE + VECTORS_USED * regs::MSIX_ENTRY_SIZE;
    assert_eq!(
        mmio.read32(unused + regs::MSIX_DATA),
        0,
        "unused entries untouched"
    );
}

#[test]
fn program_msix_reports_a_table_outside_the_mapping() {
    let mmio = BarMmio::new(bar(u64::from(regs::MSIX_TABLE) + 16));
    let err = program_msix(&mmio, message()).unwrap_err();
    assert_eq!(err.entry, 1, "entry 0 fits, entry 1 does not");
    assert_eq!(err.found, u32::MAX);
    assert!(mmio.faults() > 0);
}

fn status_rig(status: IrqCauses, enabled: IrqCauses) -> (Arc<BarMmio<FakeBar>>, Arc<IrqLatch>) {
    let mmio = Arc::new(BarMmio::new(bar(0x100)));
    mmio.write32(regs::INT_STATUS, status.bits());
    mmio.write32(regs::INT_MASK, enabled.bits());
    (mmio, Arc::new(IrqLatch::default()))
}

fn fired(latch: &IrqLatch) -> IrqCauses {
    latch
        .wait(0, IrqCauses::all(), Duration::ZERO)
        .unwrap_or(IrqCauses::empty())
}

#[test]
fn the_irq_hook_marks_only_enabled_causes_latched_in_int_status() {
    let status = IrqCauses::COPY_USER | IrqCauses::FAULT | IrqCauses::RESET_DONE;
    let enabled = IrqCauses::all() - IrqCauses::FAULT;
    let (mmio, latch) = status_rig(status, enabled);
    let hook = StatusIrq::new(mmio.clone(), latch.clone(), true);
    assert_eq!(fired(&latch), IrqCauses::empty());
    assert_eq!(hook.service(), IrqOutcome::Handled);
    assert_eq!(fired(&latch), IrqCauses::COPY_USER | IrqCauses::RESET_DONE);
    assert_eq!(latch.epoch(), 1, "one interrupt, one delivery");
    assert_eq!(hook.marked(), IrqCauses::COPY_USER | IrqCauses::RESET_DONE);
    assert_eq!(hook.calls(), 1);
    assert_eq!(
        mmio.read32(regs::INT_STATUS),
        status.bits(),
        "causes are the dispatcher's to acknowledge"
    );
}

#[test]
fn the_irq_hook_acknowledges_tlb_done_itself_and_shares_intx_honestly() {
    let status = IrqCauses::TLB_INV_DONE | IrqCauses::COMPUTE_USER;
    let (mmio, latch) = status_rig(status, IrqCauses::all());
    let shared = StatusIrq::new(mmio.clone(), latch.clone(), false);
    assert_eq!(shared.service(), IrqOutcome::Handled);
    assert_eq!(fired(&latch), status);
    // The fake BAR has no write-1-to-clear: it holds the last value written, which must be
    // the TLB_INV_DONE acknowledgement alone.
    assert_eq!(
        mmio.read32(regs::INT_STATUS),
        IrqCauses::TLB_INV_DONE.bits()
    );
    mmio.write32(regs::INT_STATUS, 0);
    assert_eq!(
        shared.service(),
        IrqOutcome::NotMine,
        "a shared line with nothing latched is another device's"
    );
    assert_eq!(latch.epoch(), 1, "nothing marked for a foreign interrupt");
    let exclusive = StatusIrq::new(mmio, latch, true);
    assert_eq!(
        exclusive.service(),
        IrqOutcome::Handled,
        "an MSI vector is ours"
    );
}
