//! pcid-config: everything gpud needs to be launched by Redox's PCI daemon.
//!
//! - [`config`]: the pcid driver-match TOML format and pcid's matcher; [`GPUD_TOML`] is the
//!   file installed as `/usr/lib/pcid.d/gpud.toml`.
//! - [`pci`], [`caps`]: config-space header, BARs, capability list, MSI and MSI-X.
//! - [`protocol`], [`wire`]: the pcid channel messages and their bincode-1 encoding.
//!
//! Nothing here does I/O; gpud's `platform` module drives the channel with these types.

#![forbid(unsafe_code)]

pub mod caps;
pub mod config;
pub mod pci;
pub mod protocol;
pub mod wire;

pub use config::{Config, ConfigError, ConfigWarning, DriverConfig};
pub use protocol::{FullDeviceId, PcidClientRequest, PcidClientResponse};

/// The driver-match file gpud installs as `/usr/lib/pcid.d/gpud.toml`.
pub const GPUD_TOML: &str = include_str!("../gpud.toml");

/// The PCI identity of simgpu, the only device gpud drives today.
pub const SIMGPU_ID: FullDeviceId = FullDeviceId {
    vendor_id: 0x7347,
    device_id: 0x0001,
    class: 0x03,
    subclass: 0x02,
    interface: 0x00,
    revision: 0x01,
};

/// Parses [`GPUD_TOML`].
pub fn gpud_config() -> Result<config::Parsed, ConfigError> {
    Config::parse(GPUD_TOML)
}
