//! The pcid channel protocol: the request and response types a driver exchanges with pcid
//! over `/scheme/pci/<addr>/channel`, with their bincode-1 encodings.
//!
//! Owns: the types of `pcid_interface` (variant order matters: bincode writes the index) and
//! their [`Wire`] impls. A request is one `write` of its encoding; a reply is an 8-byte LE
//! length then the encoding (see [`crate::wire::to_frame`]).
//!
//! Must not: do I/O. The layout follows pcid after 2025-12-18 (`PciFunction::rom` present);
//! re-verify against the target image when pcid changes.

use crate::wire::{DecodeError, Reader, Wire, Writer};

/// Implements [`Wire`] for a struct as its fields in order.
macro_rules! wire_struct {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        impl Wire for $name {
            const MIN_LEN: usize = 0 $(+ <$ty as Wire>::MIN_LEN)*;
            fn encode(&self, w: &mut Writer) {
                $(self.$field.encode(w);)*
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self { $($field: <$ty as Wire>::decode(r)?),* })
            }
        }
    };
}

/// Implements [`Wire`] for an enum whose variants carry no data.
macro_rules! wire_unit_enum {
    ($name:ident { $($variant:ident = $index:expr),* $(,)? }) => {
        impl Wire for $name {
            const MIN_LEN: usize = 4;
            fn encode(&self, w: &mut Writer) {
                w.variant(match self { $(Self::$variant => $index),* });
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                match r.variant()? {
                    $($index => Ok(Self::$variant),)*
                    index => Err(DecodeError::BadVariant { ty: stringify!($name), index }),
                }
            }
        }
    };
}

/// Identity of a PCI function as pcid reports it (and as driver configs match it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FullDeviceId {
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// Base class.
    pub class: u8,
    /// Subclass.
    pub subclass: u8,
    /// Programming interface.
    pub interface: u8,
    /// Revision id.
    pub revision: u8,
}
wire_struct!(FullDeviceId {
    vendor_id: u16,
    device_id: u16,
    class: u8,
    subclass: u8,
    interface: u8,
    revision: u8
});

/// Segment/bus/device/function address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PciAddress {
    /// PCI segment group.
    pub segment: u16,
    /// Bus number.
    pub bus: u8,
    /// Device number (0–31).
    pub device: u8,
    /// Function number (0–7).
    pub function: u8,
}
wire_struct!(PciAddress {
    segment: u16,
    bus: u8,
    device: u8,
    function: u8
});

/// A decoded BAR as pcid reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PciBar {
    /// Unimplemented BAR (or the upper half of a 64-bit BAR).
    #[default]
    None,
    /// 32-bit memory BAR.
    Memory32 {
        /// Physical base.
        addr: u32,
        /// Size in bytes.
        size: u32,
    },
    /// 64-bit memory BAR.
    Memory64 {
        /// Physical base.
        addr: u64,
        /// Size in bytes.
        size: u64,
    },
    /// I/O-port BAR.
    Port(u16),
}

impl PciBar {
    /// Base and size of a memory BAR.
    pub fn memory(&self) -> Option<(u64, u64)> {
        match *self {
            PciBar::Memory32 { addr, size } => Some((addr.into(), size.into())),
            PciBar::Memory64 { addr, size } => Some((addr, size)),
            PciBar::None | PciBar::Port(_) => None,
        }
    }
}

impl Wire for PciBar {
    const MIN_LEN: usize = 4;
    fn encode(&self, w: &mut Writer) {
        match self {
            PciBar::None => w.variant(0),
            PciBar::Memory32 { addr, size } => {
                w.variant(1);
                addr.encode(w);
                size.encode(w);
            }
            PciBar::Memory64 { addr, size } => {
                w.variant(2);
                addr.encode(w);
                size.encode(w);
            }
            PciBar::Port(port) => {
                w.variant(3);
                port.encode(w);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.variant()? {
            0 => PciBar::None,
            1 => PciBar::Memory32 {
                addr: u32::decode(r)?,
                size: u32::decode(r)?,
            },
            2 => PciBar::Memory64 {
                addr: u64::decode(r)?,
                size: u64::decode(r)?,
            },
            3 => PciBar::Port(u16::decode(r)?),
            index => {
                return Err(DecodeError::BadVariant {
                    ty: "PciBar",
                    index,
                })
            }
        })
    }
}

/// Expansion ROM BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PciRom {
    /// Physical base.
    pub addr: u32,
    /// Size in bytes.
    pub size: u32,
    /// Whether decoding is enabled.
    pub enabled: bool,
}
wire_struct!(PciRom {
    addr: u32,
    size: u32,
    enabled: bool
});

/// Device-tree interrupt description of a legacy line (`(phandle, cells, cell count)`).
pub type Phandled = (u32, [u32; 3], usize);

/// The INTx line, when the function has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegacyInterruptLine {
    /// IRQ number (opened as `/scheme/irq/<irq>`).
    pub irq: u8,
    /// Device-tree routing (non-x86 platforms).
    pub phandled: Option<Phandled>,
}
wire_struct!(LegacyInterruptLine { irq: u8, phandled: Option<Phandled> });

/// Everything pcid knows about a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PciFunction {
    /// Where it is.
    pub addr: PciAddress,
    /// BAR0..BAR5.
    pub bars: [PciBar; 6],
    /// Expansion ROM.
    pub rom: Option<PciRom>,
    /// INTx line.
    pub legacy_interrupt_line: Option<LegacyInterruptLine>,
    /// Ids and class.
    pub full_device_id: FullDeviceId,
}
wire_struct!(PciFunction {
    addr: PciAddress,
    bars: [PciBar; 6],
    rom: Option<PciRom>,
    legacy_interrupt_line: Option<LegacyInterruptLine>,
    full_device_id: FullDeviceId,
});

/// The reply to [`PcidClientRequest::RequestConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubdriverArguments {
    /// The function.
    pub func: PciFunction,
}
wire_struct!(SubdriverArguments { func: PciFunction });

/// An interrupt feature pcid can enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PciFeature {
    /// Message Signalled Interrupts.
    Msi,
    /// MSI-X.
    MsiX,
}
wire_unit_enum!(PciFeature { Msi = 0, MsiX = 1 });

/// Whether a feature is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureStatus {
    /// Enabled.
    Enabled,
    /// Disabled.
    Disabled,
}
wire_unit_enum!(FeatureStatus { Enabled = 0, Disabled = 1 });

/// MSI message address and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiAddrAndData {
    /// Message address.
    pub addr: u64,
    /// Message data.
    pub data: u32,
}
wire_struct!(MsiAddrAndData {
    addr: u64,
    data: u32
});

/// MSI settings to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiSetFeatureInfo {
    /// log2 of the number of vectors to enable.
    pub multi_message_enable: Option<u8>,
    /// Address and data of the message.
    pub message_address_and_data: Option<MsiAddrAndData>,
    /// Per-vector mask bits.
    pub mask_bits: Option<u32>,
}
wire_struct!(MsiSetFeatureInfo {
    multi_message_enable: Option<u8>,
    message_address_and_data: Option<MsiAddrAndData>,
    mask_bits: Option<u32>,
});

/// A feature setting to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetFeatureInfo {
    /// MSI settings.
    Msi(MsiSetFeatureInfo),
    /// MSI-X function mask.
    MsiX {
        /// Mask (or unmask) every vector at once.
        function_mask: Option<bool>,
    },
}

impl Wire for SetFeatureInfo {
    const MIN_LEN: usize = 4;
    fn encode(&self, w: &mut Writer) {
        match self {
            SetFeatureInfo::Msi(info) => {
                w.variant(0);
                info.encode(w);
            }
            SetFeatureInfo::MsiX { function_mask } => {
                w.variant(1);
                function_mask.encode(w);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.variant()? {
            0 => SetFeatureInfo::Msi(Wire::decode(r)?),
            1 => SetFeatureInfo::MsiX {
                function_mask: Wire::decode(r)?,
            },
            index => {
                return Err(DecodeError::BadVariant {
                    ty: "SetFeatureInfo",
                    index,
                })
            }
        })
    }
}

/// MSI capability facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiInfo {
    /// log2 of the number of vectors the function can raise.
    pub log2_multiple_message_capable: u8,
    /// 64-bit message address supported.
    pub is_64bit: bool,
    /// Per-vector masking supported.
    pub has_per_vector_masking: bool,
}
wire_struct!(MsiInfo {
    log2_multiple_message_capable: u8,
    is_64bit: bool,
    has_per_vector_masking: bool
});

/// MSI-X capability facts: where the vector table and the pending-bit array live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsixInfo {
    /// BAR holding the table.
    pub table_bar: u8,
    /// Byte offset of the table in that BAR.
    pub table_offset: u32,
    /// Number of table entries.
    pub table_size: u16,
    /// BAR holding the PBA.
    pub pba_bar: u8,
    /// Byte offset of the PBA in that BAR.
    pub pba_offset: u32,
}
wire_struct!(MsixInfo {
    table_bar: u8,
    table_offset: u32,
    table_size: u16,
    pba_bar: u8,
    pba_offset: u32
});

/// Facts about one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciFeatureInfo {
    /// MSI.
    Msi(MsiInfo),
    /// MSI-X.
    MsiX(MsixInfo),
}

impl Wire for PciFeatureInfo {
    const MIN_LEN: usize = 4;
    fn encode(&self, w: &mut Writer) {
        match self {
            PciFeatureInfo::Msi(i) => {
                w.variant(0);
                i.encode(w);
            }
            PciFeatureInfo::MsiX(i) => {
                w.variant(1);
                i.encode(w);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.variant()? {
            0 => PciFeatureInfo::Msi(Wire::decode(r)?),
            1 => PciFeatureInfo::MsiX(Wire::decode(r)?),
            index => {
                return Err(DecodeError::BadVariant {
                    ty: "PciFeatureInfo",
                    index,
                })
            }
        })
    }
}

/// A vendor-specific capability's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VendorSpecificCapability {
    /// Capability body.
    pub data: Vec<u8>,
}
wire_struct!(VendorSpecificCapability { data: Vec<u8> });

/// An error pcid reports instead of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcidServerResponseError {
    /// The function lacks the feature.
    NonexistentFeature(PciFeature),
    /// The request did not decode.
    InvalidBitPattern,
}

impl Wire for PcidServerResponseError {
    const MIN_LEN: usize = 4;
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::NonexistentFeature(f) => {
                w.variant(0);
                f.encode(w);
            }
            Self::InvalidBitPattern => w.variant(1),
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.variant()? {
            0 => Self::NonexistentFeature(Wire::decode(r)?),
            1 => Self::InvalidBitPattern,
            index => {
                return Err(DecodeError::BadVariant {
                    ty: "PcidServerResponseError",
                    index,
                })
            }
        })
    }
}

mod messages;
pub use messages::{PcidClientRequest, PcidClientResponse};

#[cfg(test)]
mod tests;
