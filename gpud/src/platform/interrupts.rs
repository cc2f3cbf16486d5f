//! Choosing and programming the device interrupt: MSI-X, then MSI, then the INTx line.
//!
//! Owns: the order of the steps that pcid's `pci_allocate_interrupt_vector` performs, made
//! generic over [`Platform`]: for MSI-X, mask every table entry through the BAR mapping,
//! enable MSI-X, allocate a CPU vector, write entry 0 and unmask it, clear the function mask;
//! for MSI, allocate a vector and hand address/data to pcid before enabling; otherwise open
//! the legacy line. A failed mode falls through to the next and is recorded.
//!
//! Must not: trust the device's table location. The MSI-X table must lie inside a BAR that
//! gpud mapped, checked with `pcid_config::caps::msix_table_range`, before any write.

use pcid_config::caps::{msix_entry, msix_table_range};
use pcid_config::protocol::{
    MsiAddrAndData, MsiSetFeatureInfo, PciFeature, SetFeatureInfo, SubdriverArguments,
};
use thiserror::Error;

use super::pcid_client::{PcidClient, PcidError};
use super::sys::{BarMapping, MsiMessage, Platform, SysError};

/// The interrupt mode in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptMode {
    /// MSI-X entry 0 raises `message`.
    MsiX {
        /// The programmed message.
        message: MsiMessage,
    },
    /// MSI raises `message`.
    Msi {
        /// The programmed message.
        message: MsiMessage,
    },
    /// Legacy INTx line (possibly shared with other devices).
    Legacy {
        /// The IRQ number.
        line: u8,
    },
}

/// Why one interrupt mode could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IrqModeError {
    /// The function lacks the capability.
    #[error("not supported by the function")]
    Unsupported,
    /// A pcid request failed.
    #[error(transparent)]
    Pcid(#[from] PcidError),
    /// A platform call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The MSI-X table lives in a BAR gpud did not map.
    #[error("MSI-X table in unmapped BAR{0}")]
    TableBarNotMapped(u8),
    /// The MSI-X table does not fit inside its BAR.
    #[error(
        "MSI-X table ({entries} entries at {offset:#x}) outside its BAR of {bar_len:#x} bytes"
    )]
    TableOutsideBar {
        /// Table offset.
        offset: u32,
        /// Entries.
        entries: u16,
        /// BAR length.
        bar_len: u64,
    },
    /// An MMIO write to the table was refused by the mapping.
    #[error("MSI-X table write at {0:#x} refused")]
    TableWrite(u64),
    /// The vector's message address needs 64 bits and the function's MSI has 32.
    #[error("MSI message address {0:#x} needs 64-bit MSI")]
    AddressTooWide(u64),
}

/// Every mode failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("no usable interrupt: MSI-X: {msix}; MSI: {msi}; INTx: {legacy}")]
pub struct NoInterrupt {
    /// Why MSI-X failed.
    pub msix: IrqModeError,
    /// Why MSI failed.
    pub msi: IrqModeError,
    /// Why INTx failed.
    pub legacy: IrqModeError,
}

/// An interrupt that works, plus why better modes were skipped.
#[derive(Debug)]
pub struct Interrupt<I> {
    /// The handle to wait on and acknowledge.
    pub handle: I,
    /// The mode programmed.
    pub mode: InterruptMode,
    /// Modes tried first and why they failed, best first.
    pub fell_back: Vec<(&'static str, IrqModeError)>,
}

/// Sets up one interrupt vector: MSI-X, else MSI, else INTx.
pub fn allocate<P: Platform>(
    platform: &mut P,
    pcid: &mut PcidClient<P::Channel>,
    args: &SubdriverArguments,
    bars: &mut [Option<P::Bar>; 6],
) -> Result<Interrupt<P::Irq>, NoInterrupt> {
    // If pcid cannot even list the features, MSI-X and MSI both fail with that reason and
    // the legacy line is still tried.
    let (features, no_feature) = match pcid.features() {
        Ok(f) => (f, IrqModeError::Unsupported),
        Err(e) => (Vec::new(), IrqModeError::Pcid(e)),
    };
    let mut fell_back = Vec::new();
    let msix = if features.contains(&PciFeature::MsiX) {
        match setup_msix(platform, pcid, bars) {
            Ok((handle, mode)) => {
                return Ok(Interrupt {
                    handle,
                    mode,
                    fell_back,
                })
            }
            Err(e) => e,
        }
    } else {
        no_feature.clone()
    };
    fell_back.push(("MSI-X", msix.clone()));
    let msi = if features.contains(&PciFeature::Msi) {
        match setup_msi(platform, pcid) {
            Ok((handle, mode)) => {
                return Ok(Interrupt {
                    handle,
                    mode,
                    fell_back,
                })
            }
            Err(e) => e,
        }
    } else {
        no_feature
    };
    fell_back.push(("MSI", msi.clone()));
    let legacy = match args.func.legacy_interrupt_line {
        Some(line) => match platform.open_legacy_irq(line.irq) {
            Ok(handle) => {
                let mode = InterruptMode::Legacy { line: line.irq };
                return Ok(Interrupt {
                    handle,
                    mode,
                    fell_back,
                });
            }
            Err(e) => IrqModeError::Sys(e),
        },
        None => IrqModeError::Unsupported,
    };
    Err(NoInterrupt { msix, msi, legacy })
}

fn setup_msix<P: Platform>(
    platform: &mut P,
    pcid: &mut PcidClient<P::Channel>,
    bars: &mut [Option<P::Bar>; 6],
) -> Result<(P::Irq, InterruptMode), IrqModeError> {
    let info = pcid.msix_info()?;
    let bar = bars
        .get_mut(usize::from(info.table_bar))
        .and_then(Option::as_mut)
        .ok_or(IrqModeError::TableBarNotMapped(info.table_bar))?;
    // An empty table has no entry 0 to program; treat it like a table outside the BAR.
    let table = msix_table_range(&info, bar.len())
        .filter(|t| t.end > t.start)
        .ok_or(IrqModeError::TableOutsideBar {
            offset: info.table_offset,
            entries: info.table_size,
            bar_len: bar.len(),
        })?;
    let mut write = |offset: u64, value: u32| {
        if bar.write32(offset, value) {
            Ok(())
        } else {
            Err(IrqModeError::TableWrite(offset))
        }
    };
    // Mask every vector before enabling, so no stale entry can fire into a random vector.
    for entry in (table.start..table.end).step_by(msix_entry::SIZE) {
        write(
            entry + msix_entry::VECTOR_CONTROL as u64,
            msix_entry::MASKED,
        )?;
    }
    pcid.enable_feature(PciFeature::MsiX)?;
    let (handle, message) = platform.alloc_msi_vector()?;
    let e0 = table.start;
    write(e0 + msix_entry::ADDR_LO as u64, message.addr as u32)?;
    write(e0 + msix_entry::ADDR_HI as u64, (message.addr >> 32) as u32)?;
    write(e0 + msix_entry::DATA as u64, message.data)?;
    write(e0 + msix_entry::VECTOR_CONTROL as u64, 0)?;
    pcid.set_feature_info(SetFeatureInfo::MsiX {
        function_mask: Some(false),
    })?;
    Ok((handle, InterruptMode::MsiX { message }))
}

fn setup_msi<P: Platform>(
    platform: &mut P,
    pcid: &mut PcidClient<P::Channel>,
) -> Result<(P::Irq, InterruptMode), IrqModeError> {
    let info = pcid.msi_info()?;
    let (handle, message) = platform.alloc_msi_vector()?;
    if message.addr > u64::from(u32::MAX) && !info.is_64bit {
        return Err(IrqModeError::AddressTooWide(message.addr));
    }
    pcid.set_feature_info(SetFeatureInfo::Msi(MsiSetFeatureInfo {
        multi_message_enable: Some(0),
        message_address_and_data: Some(MsiAddrAndData {
            addr: message.addr,
            data: message.data,
        }),
        mask_bits: None,
    }))?;
    pcid.enable_feature(PciFeature::Msi)?;
    Ok((handle, InterruptMode::Msi { message }))
}
