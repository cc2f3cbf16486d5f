//! simgpu as a vfio-user PCI device.
//!
//! QEMU's `vfio-user-pci` device (QEMU 10.1 and later) is real PCI passthrough whose device
//! side is a process on the host: the guest sees a PCI function (config space, BARs, MSI-X,
//! DMA through the (v)IOMMU) and the guest's own `vfio-pci` can hand it to a user-space
//! driver — gpud's `vfio` platform. This crate is that process for simgpu:
//!
//! - config space: simgpu's (`SimGpu::config_read32/config_write32`);
//! - BAR0: the registers, trapped (every access is a message);
//! - BAR2: VRAM, a memfd QEMU maps straight into the guest (one sparse mmap area);
//! - system memory: the guest RAM (or IOVA ranges) QEMU sends in DMA-map messages
//!   ([`GuestMemory`]); guest RAM must be fd-backed (`memory-backend-memfd,share=on`);
//! - MSI-X: one eventfd per simgpu vector, from QEMU's set-IRQs messages.
//!
//! Module map: [`mapping`] (mmap of fds; the only `unsafe`), [`guest`] (the DMA-map table),
//! [`backend`] (regions, IRQs, the `vfio_user::ServerBackend`). See `docs/qemu.md`.

// `unsafe` only in `mapping` (mmap and atomic views of shared memory).
#![deny(unsafe_code)]

pub mod backend;
pub mod guest;
#[allow(unsafe_code)]
pub mod mapping;

pub use backend::{SimGpuBackend, Vectors, MSIX_VECTORS};
pub use guest::{GuestMemory, MapError};

use std::path::Path;

/// Serves one client (one QEMU run) on a new socket at `path` until it disconnects.
pub fn serve(path: &Path, cfg: simgpu::Config) -> Result<(), vfio_user::Error> {
    let mut backend = SimGpuBackend::new(cfg).map_err(vfio_user::Error::Backend)?;
    let server = vfio_user::Server::new(path, true, SimGpuBackend::irqs(), backend.regions())?;
    server.run(&mut backend)
}
