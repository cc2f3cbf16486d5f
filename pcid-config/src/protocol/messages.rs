//! The two top-level channel messages, `PcidClientRequest` and `PcidClientResponse`.
//!
//! Owns: their variant order (the wire index) and encodings. Must not: add variants pcid does
//! not have, or reorder them — every index after the change would be misread by pcid.

use super::{
    FeatureStatus, PciFeature, PciFeatureInfo, PcidServerResponseError, SetFeatureInfo,
    SubdriverArguments, VendorSpecificCapability,
};
use crate::wire::{DecodeError, Reader, Wire, Writer};

/// A request from the driver to pcid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcidClientRequest {
    /// 0: enable the function (pcid-spawner sends this before spawning).
    EnableDevice,
    /// 1: ask for [`SubdriverArguments`].
    RequestConfig,
    /// 2: list interrupt features.
    RequestFeatures,
    /// 3: list vendor-specific capabilities.
    RequestVendorCapabilities,
    /// 4: enable a feature (enabling MSI disables MSI-X and vice versa).
    EnableFeature(PciFeature),
    /// 5: describe a feature.
    FeatureInfo(PciFeature),
    /// 6: change a feature's settings.
    SetFeatureInfo(SetFeatureInfo),
    /// 7: read a config-space dword.
    ReadConfig(u16),
    /// 8: write a config-space dword.
    WriteConfig(u16, u32),
}

impl Wire for PcidClientRequest {
    const MIN_LEN: usize = 4;
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::EnableDevice => w.variant(0),
            Self::RequestConfig => w.variant(1),
            Self::RequestFeatures => w.variant(2),
            Self::RequestVendorCapabilities => w.variant(3),
            Self::EnableFeature(f) => {
                w.variant(4);
                f.encode(w);
            }
            Self::FeatureInfo(f) => {
                w.variant(5);
                f.encode(w);
            }
            Self::SetFeatureInfo(i) => {
                w.variant(6);
                i.encode(w);
            }
            Self::ReadConfig(off) => {
                w.variant(7);
                off.encode(w);
            }
            Self::WriteConfig(off, val) => {
                w.variant(8);
                off.encode(w);
                val.encode(w);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.variant()? {
            0 => Self::EnableDevice,
            1 => Self::RequestConfig,
            2 => Self::RequestFeatures,
            3 => Self::RequestVendorCapabilities,
            4 => Self::EnableFeature(Wire::decode(r)?),
            5 => Self::FeatureInfo(Wire::decode(r)?),
            6 => Self::SetFeatureInfo(Wire::decode(r)?),
            7 => Self::ReadConfig(Wire::decode(r)?),
            8 => Self::WriteConfig(Wire::decode(r)?, Wire::decode(r)?),
            index => {
                return Err(DecodeError::BadVariant {
                    ty: "PcidClientRequest",
                    index,
                })
            }
        })
    }
}

/// A reply from pcid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcidClientResponse {
    /// 0: reply to `EnableDevice`.
    EnabledDevice,
    /// 1: reply to `RequestConfig`.
    Config(SubdriverArguments),
    /// 2: reply to `RequestFeatures`.
    AllFeatures(Vec<PciFeature>),
    /// 3: reply to `RequestVendorCapabilities`.
    VendorCapabilities(Vec<VendorSpecificCapability>),
    /// 4: reply to `EnableFeature`.
    FeatureEnabled(PciFeature),
    /// 5: feature status (not sent by current pcid for any request gpud makes).
    FeatureStatus(PciFeature, FeatureStatus),
    /// 6: the request failed.
    Error(PcidServerResponseError),
    /// 7: reply to `FeatureInfo`.
    FeatureInfo(PciFeature, PciFeatureInfo),
    /// 8: reply to `SetFeatureInfo`.
    SetFeatureInfo(PciFeature),
    /// 9: reply to `ReadConfig`.
    ReadConfig(u32),
    /// 10: reply to `WriteConfig`.
    WriteConfig,
}

impl Wire for PcidClientResponse {
    const MIN_LEN: usize = 4;
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::EnabledDevice => w.variant(0),
            Self::Config(a) => {
                w.variant(1);
                a.encode(w);
            }
            Self::AllFeatures(f) => {
                w.variant(2);
                f.encode(w);
            }
            Self::VendorCapabilities(c) => {
                w.variant(3);
                c.encode(w);
            }
            Self::FeatureEnabled(f) => {
                w.variant(4);
                f.encode(w);
            }
            Self::FeatureStatus(f, s) => {
                w.variant(5);
                f.encode(w);
                s.encode(w);
            }
            Self::Error(e) => {
                w.variant(6);
                e.encode(w);
            }
            Self::FeatureInfo(f, i) => {
                w.variant(7);
                f.encode(w);
                i.encode(w);
            }
            Self::SetFeatureInfo(f) => {
                w.variant(8);
                f.encode(w);
            }
            Self::ReadConfig(v) => {
                w.variant(9);
                v.encode(w);
            }
            Self::WriteConfig => w.variant(10),
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.variant()? {
            0 => Self::EnabledDevice,
            1 => Self::Config(Wire::decode(r)?),
            2 => Self::AllFeatures(Wire::decode(r)?),
            3 => Self::VendorCapabilities(Wire::decode(r)?),
            4 => Self::FeatureEnabled(Wire::decode(r)?),
            5 => Self::FeatureStatus(Wire::decode(r)?, Wire::decode(r)?),
            6 => Self::Error(Wire::decode(r)?),
            7 => Self::FeatureInfo(Wire::decode(r)?, Wire::decode(r)?),
            8 => Self::SetFeatureInfo(Wire::decode(r)?),
            9 => Self::ReadConfig(Wire::decode(r)?),
            10 => Self::WriteConfig,
            index => {
                return Err(DecodeError::BadVariant {
                    ty: "PcidClientResponse",
                    index,
                })
            }
        })
    }
}
