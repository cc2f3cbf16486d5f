//! pcid-config: everything gpud needs to be launched by Redox's PCI daemon.
//!
//! Will own: the pcid driver-match TOML format and matcher (`gpud.toml`), PCI config-space
//! parsing (header, BARs, capabilities, MSI/MSI-X), and the pcid channel protocol types with
//! their bincode-1-compatible encoding.

#![forbid(unsafe_code)]
