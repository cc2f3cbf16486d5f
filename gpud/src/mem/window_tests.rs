//! Window arithmetic against simple models: chunks as explicit page lists, backings as
//! per-page physical addresses.

use super::*;
use proptest::prelude::*;

const P: u64 = PAGE_SIZE;

fn chunk(cpu: u64, phys: u64, pages: u64) -> WindowChunk {
    WindowChunk {
        cpu: CpuVa(cpu * P),
        phys: PhysAddr(phys * P),
        len: pages * P,
    }
}

fn seg(page: u64, pages: u64) -> PhysSeg {
    PhysSeg {
        addr: PhysAddr(page * P),
        len: pages * P,
    }
}

/// Non-overlapping chunks: sizes and gaps in pages, laid out physically in one order and in
/// gpud's address space in another (the memory scheme maps chunks wherever it likes).
fn chunks() -> impl Strategy<Value = Vec<WindowChunk>> {
    prop::collection::vec((1u64..8, 0u64..4, 0u64..4), 1..6)
        .prop_flat_map(|spec| {
            let n = spec.len();
            (Just(spec), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
        .prop_map(|(spec, order)| {
            let mut phys = 0x100u64;
            let mut placed: Vec<(u64, u64)> = Vec::new();
            for (pages, gap, _) in &spec {
                phys += gap;
                placed.push((phys, *pages));
                phys += pages;
            }
            let mut cpu_of = vec![0u64; spec.len()];
            let mut cpu = 0x7000u64;
            for &i in &order {
                let (pages, _, gap) = spec.get(i).copied().unwrap_or((1, 0, 0));
                cpu += gap;
                if let Some(c) = cpu_of.get_mut(i) {
                    *c = cpu;
                }
                cpu += pages;
            }
            placed
                .iter()
                .zip(cpu_of)
                .map(|(&(p, pages), c)| chunk(c, p, pages))
                .collect()
        })
}

proptest! {
    #[test]
    fn every_address_lies_in_one_chunk_and_maps_back_to_its_physical_address(
        chunks in chunks(),
        page in 0x100u64..0x160,
        pages in 1u64..6,
        byte in 0u64..P,
    ) {
        let window = CpuWindow::new(chunks.clone(), None).expect("well-formed chunks");
        let (phys, len) = (page * P + byte, pages * P);
        // Model: the chunk that holds every byte of the range, if any.
        let holder = chunks
            .iter()
            .find(|c| c.phys.get() <= phys && phys + len <= c.phys.get() + c.len);
        match (window.sys_addr(PhysAddr(phys), len), holder) {
            (Ok(cpu), Some(c)) => {
                prop_assert!(c.cpu.get() <= cpu.get());
                prop_assert!(cpu.get() + len <= c.cpu.get() + c.len);
                prop_assert_eq!(cpu.get() - c.cpu.get() + c.phys.get(), phys);
            }
            (Err(WindowError::NotInWindow { .. }), None) => {}
            (got, model) => prop_assert!(false, "window {got:?}, model {model:?}"),
        }
    }

    #[test]
    fn contiguous_runs_match_a_per_page_model(
        segs in prop::collection::vec((0u64..24, 1u64..4), 1..6),
        first in 0u64..16,
        pages in 1u64..8,
    ) {
        let segments: Vec<PhysSeg> = segs.iter().map(|&(p, n)| seg(p, n)).collect();
        // Model: each BO page's physical page.
        let model: Vec<u64> = segs.iter().flat_map(|&(p, n)| p..p + n).collect();
        let got = contiguous_phys(&segments, first * P, pages * P);
        let range = model.get(first as usize..(first + pages) as usize);
        match range {
            None => prop_assert!(matches!(got, Err(WindowError::OutsideBo { .. })), "{got:?}"),
            Some(r) => {
                let follows = r.windows(2).all(|w| w[1] == w[0] + 1);
                if follows {
                    prop_assert_eq!(got, Ok(PhysAddr(r[0] * P)));
                } else {
                    prop_assert!(matches!(got, Err(WindowError::NotContiguous { .. })), "{got:?}");
                }
            }
        }
    }
}

#[test]
fn backing_addr_goes_through_the_right_window() {
    let window = CpuWindow::new(
        vec![chunk(0x7000, 0x100, 4), chunk(0x8000, 0x104, 4)],
        Some((CpuVa(0x2000_0000), 16 * P)),
    )
    .expect("window");
    // Physically adjacent chunks are still two mappings in gpud: no address spans both.
    assert!(matches!(
        window.backing_addr(MemLocation::System, &[seg(0x100, 8)], 3 * P, 2 * P),
        Err(WindowError::NotInWindow { .. })
    ));
    assert_eq!(
        window.backing_addr(MemLocation::System, &[seg(0x104, 2)], P, P),
        Ok(CpuVa(0x8001 * P))
    );
    assert_eq!(
        window.backing_addr(MemLocation::Vram, &[seg(2, 2), seg(4, 1)], P, 2 * P),
        Ok(CpuVa(0x2000_0000 + 3 * P))
    );
    assert!(matches!(
        window.backing_addr(MemLocation::Vram, &[seg(2, 2), seg(8, 1)], P, 2 * P),
        Err(WindowError::NotContiguous { .. })
    ));
    assert!(matches!(
        window.backing_addr(MemLocation::Vram, &[seg(15, 2)], 0, 2 * P),
        Err(WindowError::NotInWindow { .. })
    ));
}

#[test]
fn malformed_windows_are_refused() {
    assert!(matches!(
        CpuWindow::new(vec![chunk(0x7000, 0x100, 4), chunk(0x9000, 0x102, 4)], None),
        Err(WindowError::Overlap { .. })
    ));
    assert!(matches!(
        CpuWindow::new(vec![chunk(0x7000, 0x100, 4), chunk(0x7002, 0x200, 4)], None),
        Err(WindowError::Overlap { .. })
    ));
    let unaligned = WindowChunk {
        cpu: CpuVa(0x7000_0010),
        phys: PhysAddr(0x10_0000),
        len: P,
    };
    assert!(matches!(
        CpuWindow::new(vec![unaligned], None),
        Err(WindowError::BadPiece { .. })
    ));
    assert!(matches!(
        CpuWindow::new(vec![], Some((CpuVa(0x1000), 0))),
        Err(WindowError::BadPiece { .. })
    ));
}
