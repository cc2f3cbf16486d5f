//! PCI configuration space: the type-0 header and the BARs.
//!
//! Owns: the header layout (declared once in [`regs`]), parsing a config-space snapshot into
//! a [`Header`], decoding raw BAR registers (I/O, 32-bit, 64-bit, prefetchable) and sizing
//! them with the write-all-ones/read-back/restore dance through a [`ConfigAccess`].
//!
//! Must not: panic on device-controlled bytes. Every read is bounds-checked against the
//! snapshot; a 64-bit BAR in the last slot is an error, not an out-of-range read.

use thiserror::Error;

use crate::protocol::{FullDeviceId, PciBar};

/// Type-0 header offsets and bits (PCI Local Bus 3.0 §6.1, PCIe 6.0 §7.5.1).
pub mod regs {
    /// Vendor id (u16).
    pub const VENDOR_ID: u16 = 0x00;
    /// Device id (u16).
    pub const DEVICE_ID: u16 = 0x02;
    /// Command register (u16).
    pub const COMMAND: u16 = 0x04;
    /// Status register (u16).
    pub const STATUS: u16 = 0x06;
    /// Revision id (u8).
    pub const REVISION: u16 = 0x08;
    /// Programming interface (u8).
    pub const PROG_IF: u16 = 0x09;
    /// Subclass (u8).
    pub const SUBCLASS: u16 = 0x0a;
    /// Base class (u8).
    pub const CLASS: u16 = 0x0b;
    /// Header type (u8): bits 0–6 layout, bit 7 multi-function.
    pub const HEADER_TYPE: u16 = 0x0e;
    /// First of six BAR dwords.
    pub const BAR0: u16 = 0x10;
    /// Subsystem vendor id (u16).
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
    /// Subsystem id (u16).
    pub const SUBSYSTEM_ID: u16 = 0x2e;
    /// Capabilities pointer (u8).
    pub const CAP_PTR: u16 = 0x34;
    /// Interrupt line (u8).
    pub const INTERRUPT_LINE: u16 = 0x3c;
    /// Interrupt pin (u8), 0 = none, 1..=4 = INTA..INTD.
    pub const INTERRUPT_PIN: u16 = 0x3d;
    /// Size of the conventional config space.
    pub const CONFIG_SPACE_LEN: usize = 256;

    /// Command: respond to I/O accesses.
    pub const COMMAND_IO: u16 = 1 << 0;
    /// Command: respond to memory accesses.
    pub const COMMAND_MEMORY: u16 = 1 << 1;
    /// Command: may master the bus (DMA, MSI).
    pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
    /// Command: INTx disabled.
    pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
    /// Status: a capability list exists.
    pub const STATUS_CAP_LIST: u16 = 1 << 4;

    /// BAR bit 0: I/O space.
    pub const BAR_IO: u32 = 1 << 0;
    /// BAR bits 1–2: memory type (0 = 32-bit, 2 = 64-bit).
    pub const BAR_MEM_TYPE_MASK: u32 = 0b110;
    /// BAR memory type 64-bit.
    pub const BAR_MEM_TYPE_64: u32 = 0b100;
    /// BAR bit 3: prefetchable.
    pub const BAR_PREFETCHABLE: u32 = 1 << 3;
    /// Address bits of a memory BAR.
    pub const BAR_MEM_ADDR_MASK: u32 = !0xf;
    /// Address bits of an I/O BAR.
    pub const BAR_IO_ADDR_MASK: u32 = !0x3;
}

/// Why config space could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PciError {
    /// A read of `len` bytes at `offset` falls outside the snapshot of `size` bytes.
    #[error("config read {offset:#x}+{len} outside {size} bytes")]
    OutOfBounds {
        /// Offset of the read.
        offset: u16,
        /// Width of the read.
        len: u16,
        /// Snapshot size.
        size: usize,
    },
    /// Not a type-0 (endpoint) header.
    #[error("header type {0:#x} is not an endpoint (type 0)")]
    NotEndpoint(u8),
    /// A 64-bit BAR in slot 5 has no upper half.
    #[error("64-bit BAR{0} has no upper half")]
    Bar64InLastSlot(usize),
    /// A BAR index above 5.
    #[error("BAR index {0} out of range")]
    BadBarIndex(u8),
    /// The capability list revisits an offset.
    #[error("capability list loops at {0:#x}")]
    CapabilityLoop(u8),
    /// A capability pointer into the header or misaligned.
    #[error("capability pointer {0:#x} is invalid")]
    BadCapabilityPointer(u8),
    /// A capability's length exceeds what its header allows.
    #[error("capability {id:#x} at {offset:#x} is truncated")]
    TruncatedCapability {
        /// Capability id.
        id: u8,
        /// Its offset.
        offset: u8,
    },
}

/// A bounds-checked view of a config-space snapshot (256 or 4096 bytes).
#[derive(Debug, Clone, Copy)]
pub struct ConfigSpace<'a> {
    bytes: &'a [u8],
}

impl<'a> ConfigSpace<'a> {
    /// Wraps a snapshot.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
    fn slice<const N: usize>(&self, offset: u16) -> Result<[u8; N], PciError> {
        let start = usize::from(offset);
        let oob = PciError::OutOfBounds {
            offset,
            len: N as u16,
            size: self.bytes.len(),
        };
        let s = self.bytes.get(start..start + N).ok_or(oob)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }
    /// One byte.
    pub fn read8(&self, offset: u16) -> Result<u8, PciError> {
        Ok(self.slice::<1>(offset)?[0])
    }
    /// A little-endian u16.
    pub fn read16(&self, offset: u16) -> Result<u16, PciError> {
        Ok(u16::from_le_bytes(self.slice(offset)?))
    }
    /// A little-endian u32.
    pub fn read32(&self, offset: u16) -> Result<u32, PciError> {
        Ok(u32::from_le_bytes(self.slice(offset)?))
    }
}

/// The identity part of a type-0 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Vendor, device, class, subclass, prog-if, revision.
    pub id: FullDeviceId,
    /// Command register.
    pub command: u16,
    /// Status register.
    pub status: u16,
    /// Header layout (bit 7 masked off).
    pub header_type: u8,
    /// Multi-function device.
    pub multifunction: bool,
    /// Subsystem vendor id.
    pub subsystem_vendor: u16,
    /// Subsystem id.
    pub subsystem_id: u16,
    /// Capabilities pointer, when the status says a list exists.
    pub cap_ptr: Option<u8>,
    /// Interrupt line and pin (pin 0 = none).
    pub interrupt_line: u8,
    /// Interrupt pin.
    pub interrupt_pin: u8,
    /// The six raw BAR dwords.
    pub raw_bars: [u32; 6],
}

impl Header {
    /// Parses the type-0 header of a snapshot.
    pub fn parse(cs: &ConfigSpace<'_>) -> Result<Self, PciError> {
        let ht = cs.read8(regs::HEADER_TYPE)?;
        if ht & 0x7f != 0 {
            return Err(PciError::NotEndpoint(ht));
        }
        let status = cs.read16(regs::STATUS)?;
        let mut raw_bars = [0u32; 6];
        for (i, bar) in (0u16..).zip(raw_bars.iter_mut()) {
            *bar = cs.read32(regs::BAR0 + 4 * i)?;
        }
        let cap_ptr = if status & regs::STATUS_CAP_LIST != 0 {
            Some(cs.read8(regs::CAP_PTR)? & !0x3)
        } else {
            None
        };
        Ok(Header {
            id: FullDeviceId {
                vendor_id: cs.read16(regs::VENDOR_ID)?,
                device_id: cs.read16(regs::DEVICE_ID)?,
                class: cs.read8(regs::CLASS)?,
                subclass: cs.read8(regs::SUBCLASS)?,
                interface: cs.read8(regs::PROG_IF)?,
                revision: cs.read8(regs::REVISION)?,
            },
            command: cs.read16(regs::COMMAND)?,
            status,
            header_type: ht & 0x7f,
            multifunction: ht & 0x80 != 0,
            subsystem_vendor: cs.read16(regs::SUBSYSTEM_VENDOR_ID)?,
            subsystem_id: cs.read16(regs::SUBSYSTEM_ID)?,
            cap_ptr,
            interrupt_line: cs.read8(regs::INTERRUPT_LINE)?,
            interrupt_pin: cs.read8(regs::INTERRUPT_PIN)?,
            raw_bars,
        })
    }
}

/// What address space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// 32-bit memory.
    Memory32,
    /// 64-bit memory (occupies this slot and the next).
    Memory64,
}

/// A decoded BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Address space.
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// Base address.
    pub addr: u64,
    /// Size in bytes (0 when unsized or unimplemented).
    pub size: u64,
}

impl Bar {
    /// The form pcid reports.
    pub fn to_pcid(&self) -> PciBar {
        match self.kind {
            // I/O addresses are 16-bit on x86; pcid's `Port(u16)` drops the upper bits too.
            BarKind::Io => PciBar::Port(self.addr as u16),
            BarKind::Memory32 => PciBar::Memory32 {
                addr: self.addr as u32,
                size: self.size as u32,
            },
            BarKind::Memory64 => PciBar::Memory64 {
                addr: self.addr,
                size: self.size,
            },
        }
    }
}

/// Decodes the six raw BAR dwords (`masks` = values read back after writing all ones; pass
/// `None` to leave sizes at 0). A 64-bit BAR's upper slot is reported as `None`.
pub fn decode_bars(raw: &[u32; 6], masks: Option<&[u32; 6]>) -> Result<[Option<Bar>; 6], PciError> {
    let mut out = [None; 6];
    let mut i = 0;
    while i < 6 {
        let r = raw[i];
        let m = masks.map(|m| m[i]);
        if r & regs::BAR_IO != 0 {
            // I/O space is 16 bits wide on x86; devices may read the upper half back as 0.
            let size = m.map_or(0, |m| {
                bar_size(u64::from(m & regs::BAR_IO_ADDR_MASK & 0xffff), 16)
            });
            out[i] = Some(Bar {
                kind: BarKind::Io,
                prefetchable: false,
                addr: u64::from(r & regs::BAR_IO_ADDR_MASK),
                size,
            });
            i += 1;
            continue;
        }
        let prefetchable = r & regs::BAR_PREFETCHABLE != 0;
        let low = u64::from(r & regs::BAR_MEM_ADDR_MASK);
        if r & regs::BAR_MEM_TYPE_MASK == regs::BAR_MEM_TYPE_64 {
            let hi = *raw.get(i + 1).ok_or(PciError::Bar64InLastSlot(i))?;
            // PANIC: `raw.get(i + 1)` succeeded and `masks` has the same length, so `i + 1 < 6`.
            let size = masks.map_or(0, |m| {
                let mask = u64::from(m[i + 1]) << 32 | u64::from(m[i] & regs::BAR_MEM_ADDR_MASK);
                bar_size(mask, 64)
            });
            let addr = u64::from(hi) << 32 | low;
            out[i] = Some(Bar {
                kind: BarKind::Memory64,
                prefetchable,
                addr,
                size,
            });
            i += 2;
            continue;
        }
        let mask = m.map(|m| u64::from(m & regs::BAR_MEM_ADDR_MASK));
        // An all-zero BAR whose mask reads back zero (or was not probed) is unimplemented.
        if r == 0 && mask.is_none_or(|m| m == 0) {
            i += 1;
            continue;
        }
        let size = mask.map_or(0, |m| bar_size(m, 32));
        out[i] = Some(Bar {
            kind: BarKind::Memory32,
            prefetchable,
            addr: low,
            size,
        });
        i += 1;
    }
    Ok(out)
}

/// Size of a BAR from its read-back address bits (`width` = decoded address bits): the
/// lowest writable address bit. Zero when no address bit is writable.
fn bar_size(mask: u64, width: u32) -> u64 {
    if mask == 0 {
        return 0;
    }
    let widened = if width >= 64 {
        mask
    } else {
        mask | (u64::MAX << width)
    };
    (!widened).wrapping_add(1)
}

/// Live config-space access (pcid's `ReadConfig`/`WriteConfig`, or a device model).
pub trait ConfigAccess {
    /// Transport error.
    type Error;
    /// Reads the dword at `offset`.
    fn read32(&mut self, offset: u16) -> Result<u32, Self::Error>;
    /// Writes the dword at `offset`.
    fn write32(&mut self, offset: u16, value: u32) -> Result<(), Self::Error>;
}

/// Reads and sizes all six BARs. Memory and I/O decoding are turned off while the BARs hold
/// all-ones (so the device cannot claim stray cycles), and everything is restored after.
pub fn probe_bars<A: ConfigAccess>(
    cfg: &mut A,
) -> Result<Result<[Option<Bar>; 6], PciError>, A::Error> {
    // Only the command half is written back: the status half has write-1-to-clear bits.
    let command = cfg.read32(regs::COMMAND)? & 0xffff;
    let decode = u32::from(regs::COMMAND_IO | regs::COMMAND_MEMORY);
    cfg.write32(regs::COMMAND, command & !decode)?;
    let mut raw = [0u32; 6];
    let mut masks = [0u32; 6];
    for (i, off) in (0..6).map(|i| (i, regs::BAR0 + 4 * i as u16)) {
        raw[i] = cfg.read32(off)?;
        cfg.write32(off, u32::MAX)?;
        masks[i] = cfg.read32(off)?;
        cfg.write32(off, raw[i])?;
    }
    cfg.write32(regs::COMMAND, command)?;
    Ok(decode_bars(&raw, Some(&masks)))
}

#[cfg(test)]
mod tests;
