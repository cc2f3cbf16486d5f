use super::*;
use proptest::prelude::*;

/// A config-space model with writable BARs that decode `sizes` (power-of-two) bytes.
struct FakeConfig {
    space: [u32; 64],
    /// Per-dword mask of writable bits.
    writable: [u32; 64],
    writes: Vec<(u16, u32)>,
}

impl FakeConfig {
    fn simgpu() -> Self {
        let mut space = [0u32; 64];
        let mut writable = [0u32; 64];
        space[0] = 0x0001_7347;
        space[1] = 0x0010_0007; // status: cap list; command: io|mem|bus master
        space[2] = 0x0302_0001; // class 03, subclass 02, prog-if 00, revision 01
        space[3] = 0x0000_0000;
        // BAR0: 64-bit non-prefetchable, 1 MiB at 0xfe000000.
        space[4] = 0xfe00_0004;
        writable[4] = !(0x10_0000 - 1) & !0xf;
        writable[5] = u32::MAX;
        // BAR2: 64-bit prefetchable, 256 MiB at 0x8_0000_0000.
        space[6] = 0x0000_000c;
        space[7] = 0x8;
        writable[6] = !(0x1000_0000 - 1) & !0xf;
        writable[7] = u32::MAX;
        // BAR4: I/O, 32 ports at 0xc000. BAR5: 32-bit memory 4 KiB.
        space[8] = 0xc001;
        writable[8] = 0xffff & !(32 - 1);
        space[9] = 0xfebf_0000;
        writable[9] = !(0x1000 - 1) & !0xf;
        space[11] = 0x1234_5678; // subsystem
        space[13] = 0x40; // cap ptr
        space[15] = 0x0000_010b; // pin A, line 11
        writable[1] = 0xffff;
        Self {
            space,
            writable,
            writes: Vec::new(),
        }
    }
    fn bytes(&self) -> Vec<u8> {
        self.space.iter().flat_map(|d| d.to_le_bytes()).collect()
    }
}

impl ConfigAccess for FakeConfig {
    type Error = ();
    fn read32(&mut self, offset: u16) -> Result<u32, ()> {
        self.space.get(usize::from(offset / 4)).copied().ok_or(())
    }
    fn write32(&mut self, offset: u16, value: u32) -> Result<(), ()> {
        let i = usize::from(offset / 4);
        let (w, cur) = (*self.writable.get(i).ok_or(())?, self.space[i]);
        self.space[i] = (cur & !w) | (value & w);
        self.writes.push((offset, value));
        Ok(())
    }
}

#[test]
fn parses_simgpu_header() {
    let fake = FakeConfig::simgpu();
    let bytes = fake.bytes();
    let h = Header::parse(&ConfigSpace::new(&bytes)).expect("header");
    assert_eq!(h.id, crate::SIMGPU_ID);
    assert_eq!(h.command, 7);
    assert_eq!(h.cap_ptr, Some(0x40));
    assert_eq!((h.subsystem_vendor, h.subsystem_id), (0x5678, 0x1234));
    assert_eq!((h.interrupt_line, h.interrupt_pin), (11, 1));
    assert!(!h.multifunction);
}

#[test]
fn probe_sizes_every_bar_kind_and_restores_state() {
    let mut fake = FakeConfig::simgpu();
    let before = fake.space;
    let bars = probe_bars(&mut fake).expect("access").expect("decode");
    assert_eq!(fake.space, before, "probe must restore every register");
    assert_eq!(
        bars[0],
        Some(Bar {
            kind: BarKind::Memory64,
            prefetchable: false,
            addr: 0xfe00_0000,
            size: 0x10_0000
        })
    );
    assert_eq!(bars[1], None);
    assert_eq!(
        bars[2],
        Some(Bar {
            kind: BarKind::Memory64,
            prefetchable: true,
            addr: 0x8_0000_0000,
            size: 0x1000_0000
        })
    );
    assert_eq!(
        bars[4],
        Some(Bar {
            kind: BarKind::Io,
            prefetchable: false,
            addr: 0xc000,
            size: 32
        })
    );
    assert_eq!(
        bars[5],
        Some(Bar {
            kind: BarKind::Memory32,
            prefetchable: false,
            addr: 0xfebf_0000,
            size: 0x1000
        })
    );
    // Decoding was off while BARs held all-ones, and the status half was never written.
    assert_eq!(fake.writes.first(), Some(&(regs::COMMAND, 0x0004)));
    assert_eq!(fake.writes.last(), Some(&(regs::COMMAND, 0x0007)));
    assert_eq!(
        bars[2].map(|b| b.to_pcid()),
        Some(crate::protocol::PciBar::Memory64 {
            addr: 0x8_0000_0000,
            size: 0x1000_0000
        })
    );
    assert_eq!(
        bars[4].map(|b| b.to_pcid()),
        Some(crate::protocol::PciBar::Port(0xc000))
    );
}

#[test]
fn sixty_four_bit_bar_in_last_slot_is_an_error() {
    let mut raw = [0u32; 6];
    raw[5] = 0x4;
    assert_eq!(decode_bars(&raw, None), Err(PciError::Bar64InLastSlot(5)));
}

#[test]
fn short_snapshot_and_bridge_header_are_errors() {
    let fake = FakeConfig::simgpu();
    let bytes = fake.bytes();
    assert!(matches!(
        Header::parse(&ConfigSpace::new(&bytes[..0x20])),
        Err(PciError::OutOfBounds { .. })
    ));
    let mut bridge = bytes.clone();
    bridge[usize::from(regs::HEADER_TYPE)] = 0x81;
    assert_eq!(
        Header::parse(&ConfigSpace::new(&bridge)),
        Err(PciError::NotEndpoint(0x81))
    );
}

proptest! {
    /// Oracle: a 32-bit memory BAR of size 2^k decodes to size 2^k, whatever its address.
    #[test]
    fn memory32_size_matches_oracle(k in 4u32..32, addr in any::<u32>(), pf in any::<bool>()) {
        let size = 1u64 << k;
        let addr = addr & !((size as u32).wrapping_sub(1)) & regs::BAR_MEM_ADDR_MASK;
        let raw = addr | if pf { regs::BAR_PREFETCHABLE } else { 0 };
        let mask = !((size - 1) as u32) & regs::BAR_MEM_ADDR_MASK | (raw & 0xf);
        let mut raws = [0u32; 6];
        let mut masks = [0u32; 6];
        raws[0] = raw;
        masks[0] = mask;
        let bars = decode_bars(&raws, Some(&masks)).expect("decode");
        prop_assert_eq!(bars[0], Some(Bar { kind: BarKind::Memory32, prefetchable: pf, addr: u64::from(addr), size }));
    }

    #[test]
    fn memory64_size_matches_oracle(k in 4u32..63, addr in any::<u64>()) {
        let size = 1u64 << k;
        let addr = addr & !(size - 1) & !0xf;
        let mask = !(size - 1) & !0xf;
        let mut raws = [0u32; 6];
        let mut masks = [0u32; 6];
        raws[2] = addr as u32 | 0x4;
        raws[3] = (addr >> 32) as u32;
        masks[2] = mask as u32 | 0x4;
        masks[3] = (mask >> 32) as u32;
        let bars = decode_bars(&raws, Some(&masks)).expect("decode");
        prop_assert_eq!(bars[2], Some(Bar { kind: BarKind::Memory64, prefetchable: false, addr, size }));
        prop_assert_eq!(bars[3], None);
    }

    #[test]
    fn random_config_space_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), masks in any::<[u32; 6]>()) {
        let cs = ConfigSpace::new(&bytes);
        if let Ok(h) = Header::parse(&cs) {
            let _ = decode_bars(&h.raw_bars, Some(&masks));
            let _ = crate::caps::capabilities(&cs, h.cap_ptr);
        }
    }
}
