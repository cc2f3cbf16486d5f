//! PCI identity: the 256-byte configuration space, BAR sizing and the MSI-X capability.
//!
//! Owns: the config-space bytes a platform (pcid on Redox, the host glue elsewhere) reads to
//! find and set up the device. Must not: touch device state; BAR addresses programmed here
//! are bookkeeping only (the host maps BARs by calling the device directly).

use crate::regs;

/// PCI vendor id.
pub const VENDOR_ID: u16 = 0x7347;
/// PCI device id.
pub const DEVICE_ID: u16 = 0x0001;
/// Revision id.
pub const REVISION_ID: u8 = 0x01;
/// Class code: display controller.
pub const CLASS: u8 = 0x03;
/// Subclass: 3D controller.
pub const SUBCLASS: u8 = 0x02;
/// Programming interface.
pub const PROG_IF: u8 = 0x00;
/// Config-space offset of the MSI-X capability.
pub const MSIX_CAP_OFFSET: u8 = 0x40;
/// Capability id of MSI-X.
pub const MSIX_CAP_ID: u8 = 0x11;
/// Size of the config space.
pub const CONFIG_SIZE: usize = 256;

/// Default BAR0 base address (the platform may reprogram it).
pub const BAR0_DEFAULT: u64 = 0xFD00_0000;
/// Default BAR2 base address.
pub const BAR2_DEFAULT: u64 = 0x40_0000_0000;

/// BAR low-dword type bits: memory, 64-bit.
const BAR_MEM64: u32 = 0b100;
/// BAR low-dword bit 3: prefetchable.
const BAR_PREFETCH: u32 = 0b1000;

/// The configuration space of one function.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    bar_sizes: [u64; 2],
}

impl ConfigSpace {
    /// The config space of a device with `vram_size` bytes of VRAM (a power of two) and
    /// `vectors` MSI-X vectors.
    pub fn new(vram_size: u64, vectors: u16) -> Self {
        // PANIC: all offsets below are constants inside the 256-byte space.
        let mut s = Self {
            bytes: [0; CONFIG_SIZE],
            bar_sizes: [regs::BAR0_SIZE, vram_size],
        };
        s.put16(0x00, VENDOR_ID);
        s.put16(0x02, DEVICE_ID);
        s.put16(0x06, 0x0010); // status: capabilities list present
        s.bytes[0x08] = REVISION_ID;
        s.bytes[0x09] = PROG_IF;
        s.bytes[0x0A] = SUBCLASS;
        s.bytes[0x0B] = CLASS;
        s.bytes[0x0E] = 0x00; // header type 0, single function
        s.set_bar(0, BAR0_DEFAULT);
        s.set_bar(1, BAR2_DEFAULT);
        s.put16(0x2C, VENDOR_ID);
        s.put16(0x2E, DEVICE_ID);
        s.bytes[0x34] = MSIX_CAP_OFFSET;
        let cap = usize::from(MSIX_CAP_OFFSET);
        s.bytes[cap] = MSIX_CAP_ID;
        s.bytes[cap + 1] = 0; // end of the list
        s.put16(cap + 2, vectors.saturating_sub(1) & 0x7FF);
        s.put32(cap + 4, regs::MSIX_TABLE); // BIR 0
        s.put32(cap + 8, regs::MSIX_PBA); // BIR 0
        s
    }

    /// The raw bytes.
    pub fn bytes(&self) -> [u8; CONFIG_SIZE] {
        self.bytes
    }

    /// Reads a dword (`offset` is rounded down to 4; beyond the space reads all-ones).
    pub fn read32(&self, offset: u16) -> u32 {
        let o = usize::from(offset & !3);
        match self.bytes.get(o..o + 4) {
            // PANIC: `get(o..o + 4)` returned exactly 4 bytes.
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => u32::MAX,
        }
    }

    /// Writes a dword: command register, BARs (with size probing) and the MSI-X message
    /// control are writable; everything else is read-only.
    pub fn write32(&mut self, offset: u16, value: u32) {
        let o = usize::from(offset & !3);
        let msix_ctrl = usize::from(MSIX_CAP_OFFSET);
        match o {
            0x04 => self.put16(0x04, value as u16),
            0x10 | 0x14 => self.write_bar(0, o - 0x10, value),
            0x18 | 0x1C => self.write_bar(1, o - 0x18, value),
            _ if o == msix_ctrl => {
                // PANIC: `o` is the MSI-X capability offset, a constant inside the space.
                let ctrl = u16::from_le_bytes([self.bytes[o + 2], self.bytes[o + 3]]);
                let keep = ctrl & 0x07FF;
                self.put16(o + 2, keep | ((value >> 16) as u16 & 0xC000));
            }
            _ => {}
        }
    }

    /// Whether MSI-X is enabled (message control bit 15).
    pub fn msix_enabled(&self) -> bool {
        self.read32(u16::from(MSIX_CAP_OFFSET)) & (1 << 31) != 0
    }

    fn write_bar(&mut self, bar: usize, half: usize, value: u32) {
        let base = self.bar_base(bar);
        let new = if half == 0 {
            (base & !0xFFFF_FFFF) | u64::from(value & !0xF)
        } else {
            (base & 0xFFFF_FFFF) | (u64::from(value) << 32)
        };
        self.set_bar(bar, new);
    }

    /// The base address of BAR pair `bar` (0 = BAR0, 1 = BAR2).
    pub fn bar_base(&self, bar: usize) -> u64 {
        let o = 0x10 + bar * 8;
        let lo = u64::from(self.read32(o as u16) & !0xF);
        let hi = u64::from(self.read32(o as u16 + 4));
        lo | (hi << 32)
    }

    fn set_bar(&mut self, bar: usize, base: u64) {
        let size = self.bar_sizes.get(bar).copied().unwrap_or(0);
        let masked = base & !(size.max(16) - 1);
        let flags = if bar == 1 {
            BAR_MEM64 | BAR_PREFETCH
        } else {
            BAR_MEM64
        };
        let o = 0x10 + bar * 8;
        self.put32(o, (masked as u32) | flags);
        self.put32(o + 4, (masked >> 32) as u32);
    }

    fn put16(&mut self, o: usize, v: u16) {
        // PANIC: callers pass constant offsets inside the 256-byte space.
        self.bytes[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, o: usize, v: u32) {
        // PANIC: callers pass constant offsets inside the 256-byte space.
        self.bytes[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
}
