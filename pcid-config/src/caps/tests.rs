use super::*;
use proptest::prelude::*;

/// A 256-byte space with a PM cap at 0x40 -> MSI (64-bit, masking) at 0x50 -> MSI-X at 0x70.
fn space() -> Vec<u8> {
    let mut b = vec![0u8; 256];
    b[0x06] = 0x10; // status: cap list
    b[0x34] = 0x40;
    b[0x40] = ids::POWER_MANAGEMENT;
    b[0x41] = 0x50;
    b[0x50] = ids::MSI;
    b[0x51] = 0x70;
    b[0x52..0x54].copy_from_slice(&(0b1_1000_0101u16).to_le_bytes()); // enable, MMC=2, 64-bit, masking
    b[0x70] = ids::MSIX;
    b[0x71] = 0x00;
    b[0x72..0x74].copy_from_slice(&(0x8000u16 | 7).to_le_bytes()); // enabled, 8 entries
    b[0x74..0x78].copy_from_slice(&0x2000u32.to_le_bytes()); // table BAR0 + 0x2000
    b[0x78..0x7c].copy_from_slice(&0x3000u32.to_le_bytes()); // PBA BAR0 + 0x3000
    b
}

#[test]
fn walks_the_list_in_order() {
    let b = space();
    let caps = capabilities(&ConfigSpace::new(&b), Some(0x40)).expect("caps");
    let found: Vec<(u8, u8)> = caps.iter().map(|c| (c.id, c.offset)).collect();
    assert_eq!(found, [(0x01, 0x40), (0x05, 0x50), (0x11, 0x70)]);
    assert_eq!(find(&caps, ids::MSIX).map(|c| c.offset), Some(0x70));
    assert_eq!(find(&caps, ids::VENDOR), None);
    assert_eq!(capabilities(&ConfigSpace::new(&b), None), Ok(vec![]));
}

#[test]
fn parses_msi_and_msix() {
    let b = space();
    let cs = ConfigSpace::new(&b);
    let caps = capabilities(&cs, Some(0x40)).expect("caps");
    let msi = Msi::parse(&cs, find(&caps, ids::MSI).expect("msi")).expect("parse");
    assert!(msi.enabled);
    assert_eq!(
        msi.info,
        MsiInfo {
            log2_multiple_message_capable: 2,
            is_64bit: true,
            has_per_vector_masking: true
        }
    );
    let msix = MsiX::parse(&cs, find(&caps, ids::MSIX).expect("msix")).expect("parse");
    assert!(msix.enabled && !msix.function_masked);
    assert_eq!(
        msix.info,
        MsixInfo {
            table_bar: 0,
            table_offset: 0x2000,
            table_size: 8,
            pba_bar: 0,
            pba_offset: 0x3000
        }
    );
    assert_eq!(
        msix_table_range(&msix.info, 0x10_0000),
        Some(0x2000..0x2080)
    );
    assert_eq!(msix_pba_range(&msix.info, 0x10_0000), Some(0x3000..0x3008));
    assert_eq!(
        msix_table_range(&msix.info, 0x2040),
        None,
        "table past the BAR end"
    );
}

#[test]
fn loops_and_header_pointers_are_errors() {
    let mut b = space();
    b[0x71] = 0x40; // MSI-X points back to PM
    assert_eq!(
        capabilities(&ConfigSpace::new(&b), Some(0x40)),
        Err(PciError::CapabilityLoop(0x40))
    );
    b[0x71] = 0x10; // into the header
    assert_eq!(
        capabilities(&ConfigSpace::new(&b), Some(0x40)),
        Err(PciError::BadCapabilityPointer(0x10))
    );
}

#[test]
fn msi_capability_cut_off_by_the_snapshot_is_an_error() {
    let b = space();
    let cs = ConfigSpace::new(&b[..0x58]);
    let cap = Capability {
        id: ids::MSI,
        offset: 0x50,
    };
    assert!(Msi::parse(&cs, cap).is_err());
}

proptest! {
    /// Oracle: a list built as a chain of distinct offsets is walked back exactly.
    #[test]
    fn chain_round_trips(offsets in proptest::sample::subsequence((0x10u8..0x40).map(|i| i * 4).collect::<Vec<_>>(), 0..20).prop_shuffle(), id in any::<u8>()) {
        let mut b = vec![0u8; 256];
        for (i, off) in offsets.iter().enumerate() {
            b[usize::from(*off)] = id.wrapping_add(i as u8);
            b[usize::from(*off) + 1] = offsets.get(i + 1).copied().unwrap_or(0);
        }
        let start = offsets.first().copied();
        let caps = capabilities(&ConfigSpace::new(&b), start).expect("walk");
        let walked: Vec<u8> = caps.iter().map(|c| c.offset).collect();
        prop_assert_eq!(walked, offsets);
    }

    #[test]
    fn table_range_never_exceeds_bar(off in any::<u32>(), n in any::<u16>(), bar in any::<u64>()) {
        let info = MsixInfo { table_bar: 0, table_offset: off, table_size: n, pba_bar: 0, pba_offset: off };
        if let Some(r) = msix_table_range(&info, bar) { prop_assert!(r.end <= bar && r.start <= r.end); }
        if let Some(r) = msix_pba_range(&info, bar) { prop_assert!(r.end <= bar); }
    }
}
