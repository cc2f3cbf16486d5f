//! Platform glue: how gpud is launched, gets its device and serves the `gpu` scheme.
//!
//! On Redox gpud is a PCI driver spawned by pcid-spawner. The pieces:
//! - [`sys`]: one small trait per kernel capability (pcid channel, BAR mapping, IRQ handle,
//!   DMA memory, event queue, scheme socket, process calls). No syscalls.
//! - [`pcid_client`]: typed requests on the pcid channel.
//! - [`interrupts`]: MSI-X → MSI → INTx setup.
//! - [`startup`]: the startup sequence, generic over [`sys::Platform`].
//! - [`device_hw`]: adapters from BARs, DMA memory and the interrupt to the hardware layer.
//! - [`pcid_driver`]: the factory that turns pcid's resources into the device, driver and
//!   `gpu` scheme server (`gpud pcid`).
//! - [`scheme_events`]: the loop hooks of the `gpu` scheme server (`GpuScheme`).
//! - [`event_loop`]: the request/IRQ/fevent loop, generic over the socket, the IRQ handle,
//!   any `redox_scheme::SchemeSync` server and the driver's [`event_loop::DeviceEvents`].
//! - `redox` (feature `redox`): the real implementations of the [`sys`] traits and the entry
//!   point [`redox::run`]; the only module here that makes syscalls or holds `unsafe`.
//!
//! - `vfio` (Linux only): `gpud vfio <pci address>`, a PCI function through Linux VFIO,
//!   brought up by [`pcid_driver::bring_up`] and served like `host`.
//! - [`mapped`]: CPU access to DMA memory a platform mapped (Redox, VFIO).
//! - [`redox_mm`]: a Redox client's address space for the SVM seam (`svm::ClientMm`): its
//!   mappings of gpu-scheme objects, fed by the scheme's mmap and munmap messages.
//! - `host` (Linux only): `gpud serve` on a Linux host (simgpu, shared-memory pool, Unix
//!   socket).
//!
//! Everything but `redox` builds and is tested on any host with recording fakes.

pub mod device_hw;
pub mod event_loop;
#[cfg(target_os = "linux")]
pub mod host;
pub mod interrupts;
#[allow(unsafe_code)] // the word-atomic view of DMA memory a platform mapped
pub mod mapped;
pub mod pcid_client;
pub mod pcid_driver;
pub mod redox_mm;
pub mod scheme_events;
pub mod startup;
pub mod sys;
#[cfg(target_os = "linux")]
pub mod vfio;

#[cfg(feature = "redox")]
#[allow(unsafe_code)] // the Redox syscall layer: mmap of BARs and DMA memory
pub mod redox;

#[cfg(test)]
#[allow(unsafe_code)] // `Request`/`Response` transmutes of the host test harness
mod testing;
