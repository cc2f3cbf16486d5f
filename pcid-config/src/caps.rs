//! The PCI capability list and the two interrupt capabilities gpud uses: MSI and MSI-X.
//!
//! Owns: walking the list from the header's capabilities pointer (loop- and bounds-safe),
//! the MSI and MSI-X register layouts (declared once in [`msi_regs`], [`msix_regs`]) and the
//! MSI-X table-entry layout that the driver writes through its BAR mapping.
//!
//! Must not: write config space or program vectors; that is the platform's job.

use crate::pci::{ConfigSpace, PciError};
use crate::protocol::{MsiInfo, MsixInfo};

/// Capability ids (PCI Code and ID Assignment §2).
pub mod ids {
    /// Power management.
    pub const POWER_MANAGEMENT: u8 = 0x01;
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// Vendor specific.
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const PCI_EXPRESS: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// MSI capability layout (offsets from the capability start).
pub mod msi_regs {
    /// Message control (u16).
    pub const CONTROL: u8 = 0x02;
    /// Control: MSI enable.
    pub const CTRL_ENABLE: u16 = 1 << 0;
    /// Control bits 1–3: log2 of vectors the function can request.
    pub const CTRL_MMC_SHIFT: u16 = 1;
    /// Control bits 4–6: log2 of vectors enabled.
    pub const CTRL_MME_SHIFT: u16 = 4;
    /// Control: 64-bit message address.
    pub const CTRL_64BIT: u16 = 1 << 7;
    /// Control: per-vector masking.
    pub const CTRL_PER_VECTOR_MASK: u16 = 1 << 8;
}

/// MSI-X capability layout (offsets from the capability start).
pub mod msix_regs {
    /// Message control (u16).
    pub const CONTROL: u8 = 0x02;
    /// Table offset (bits 3–31) and BIR (bits 0–2) (u32).
    pub const TABLE: u8 = 0x04;
    /// PBA offset and BIR (u32).
    pub const PBA: u8 = 0x08;
    /// Control bits 0–10: table size minus one.
    pub const CTRL_TABLE_SIZE_MASK: u16 = 0x7ff;
    /// Control: mask every vector.
    pub const CTRL_FUNCTION_MASK: u16 = 1 << 14;
    /// Control: MSI-X enable.
    pub const CTRL_ENABLE: u16 = 1 << 15;
    /// BIR bits of the table/PBA dwords.
    pub const BIR_MASK: u32 = 0x7;
}

/// One MSI-X table entry as the device decodes it (PCIe 6.0 §7.7.2.1): 16 bytes in the BAR.
pub mod msix_entry {
    /// Bytes per entry.
    pub const SIZE: usize = 16;
    /// Message address, low dword.
    pub const ADDR_LO: usize = 0x0;
    /// Message address, high dword.
    pub const ADDR_HI: usize = 0x4;
    /// Message data.
    pub const DATA: usize = 0x8;
    /// Vector control; bit 0 masks the vector.
    pub const VECTOR_CONTROL: usize = 0xc;
    /// Vector control: masked.
    pub const MASKED: u32 = 1 << 0;
}

/// One entry of the capability list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Capability id.
    pub id: u8,
    /// Offset of the capability in config space.
    pub offset: u8,
}

/// Walks the capability list starting at `cap_ptr`. Stops with an error on a loop, a pointer
/// into the header, or a read past the snapshot; never runs more than 48 steps (the most
/// that fit in the 192 bytes after the header).
pub fn capabilities(
    cs: &ConfigSpace<'_>,
    cap_ptr: Option<u8>,
) -> Result<Vec<Capability>, PciError> {
    let mut out = Vec::new();
    let mut visited = [false; 256];
    let mut next = cap_ptr.unwrap_or(0) & !0x3;
    while next != 0 {
        if next < 0x40 {
            return Err(PciError::BadCapabilityPointer(next));
        }
        if std::mem::replace(&mut visited[usize::from(next)], true) {
            return Err(PciError::CapabilityLoop(next));
        }
        let id = cs.read8(u16::from(next))?;
        out.push(Capability { id, offset: next });
        next = cs.read8(u16::from(next) + 1)? & !0x3;
    }
    Ok(out)
}

/// The first capability with `id`.
pub fn find(caps: &[Capability], id: u8) -> Option<Capability> {
    caps.iter().copied().find(|c| c.id == id)
}

/// A parsed MSI capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msi {
    /// Where it is.
    pub offset: u8,
    /// Enabled now.
    pub enabled: bool,
    /// Capabilities as pcid reports them.
    pub info: MsiInfo,
    /// log2 of vectors enabled.
    pub log2_enabled: u8,
}

impl Msi {
    /// Parses the MSI capability at `cap`.
    pub fn parse(cs: &ConfigSpace<'_>, cap: Capability) -> Result<Self, PciError> {
        let ctrl = cs.read16(u16::from(cap.offset) + u16::from(msi_regs::CONTROL))?;
        let is_64bit = ctrl & msi_regs::CTRL_64BIT != 0;
        let masking = ctrl & msi_regs::CTRL_PER_VECTOR_MASK != 0;
        // The capability's length depends on its flags; make sure all of it is present.
        let len: u16 = 10 + if is_64bit { 4 } else { 0 } + if masking { 10 } else { 0 };
        if u16::from(cap.offset) + len > 256 {
            return Err(PciError::TruncatedCapability {
                id: cap.id,
                offset: cap.offset,
            });
        }
        cs.read8(u16::from(cap.offset) + len - 1)?;
        Ok(Msi {
            offset: cap.offset,
            enabled: ctrl & msi_regs::CTRL_ENABLE != 0,
            info: MsiInfo {
                log2_multiple_message_capable: ((ctrl >> msi_regs::CTRL_MMC_SHIFT) & 0x7) as u8,
                is_64bit,
                has_per_vector_masking: masking,
            },
            log2_enabled: ((ctrl >> msi_regs::CTRL_MME_SHIFT) & 0x7) as u8,
        })
    }
}

/// A parsed MSI-X capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiX {
    /// Where it is.
    pub offset: u8,
    /// Enabled now.
    pub enabled: bool,
    /// Every vector masked.
    pub function_masked: bool,
    /// Table and PBA location as pcid reports them.
    pub info: MsixInfo,
}

impl MsiX {
    /// Parses the MSI-X capability at `cap`.
    pub fn parse(cs: &ConfigSpace<'_>, cap: Capability) -> Result<Self, PciError> {
        let base = u16::from(cap.offset);
        let ctrl = cs.read16(base + u16::from(msix_regs::CONTROL))?;
        let table = cs.read32(base + u16::from(msix_regs::TABLE))?;
        let pba = cs.read32(base + u16::from(msix_regs::PBA))?;
        Ok(MsiX {
            offset: cap.offset,
            enabled: ctrl & msix_regs::CTRL_ENABLE != 0,
            function_masked: ctrl & msix_regs::CTRL_FUNCTION_MASK != 0,
            info: MsixInfo {
                table_bar: (table & msix_regs::BIR_MASK) as u8,
                table_offset: table & !msix_regs::BIR_MASK,
                table_size: (ctrl & msix_regs::CTRL_TABLE_SIZE_MASK) + 1,
                pba_bar: (pba & msix_regs::BIR_MASK) as u8,
                pba_offset: pba & !msix_regs::BIR_MASK,
            },
        })
    }
}

/// Byte range of the MSI-X table inside its BAR (`offset..end`), checked against the BAR
/// size so a device cannot make the driver write outside its mapping.
pub fn msix_table_range(info: &MsixInfo, bar_size: u64) -> Option<std::ops::Range<u64>> {
    let start = u64::from(info.table_offset);
    let end = start.checked_add(u64::from(info.table_size) * msix_entry::SIZE as u64)?;
    (end <= bar_size).then_some(start..end)
}

/// Byte range of the PBA inside its BAR: one bit per vector, rounded up to whole qwords.
pub fn msix_pba_range(info: &MsixInfo, bar_size: u64) -> Option<std::ops::Range<u64>> {
    let start = u64::from(info.pba_offset);
    let end = start.checked_add(u64::from(info.table_size).div_ceil(64) * 8)?;
    (end <= bar_size).then_some(start..end)
}

#[cfg(test)]
mod tests;
