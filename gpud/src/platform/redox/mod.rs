//! gpud as a Redox PCI driver: the entry point that wires the real syscall layer into the
//! generic startup sequence and event loop.
//!
//! Owns: [`run`] and [`run_pcid`] (`gpud pcid`). Must not: contain logic worth testing; that lives in `startup` and
//! `event_loop`, which the host tests drive with fakes.

pub mod sys;

use thiserror::Error;

use super::event_loop::{DeviceEvents, LoopError};
use super::startup::{self, DeviceResources, StartupError};
use redox_scheme::scheme::SchemeSync;
pub use sys::RedoxPlatform;

/// Why the driver stopped.
#[derive(Debug, Error)]
pub enum RunError {
    /// Startup failed (nothing was registered, or registration was the failing step).
    #[error("startup: {0}")]
    Startup(#[from] StartupError),
    /// The event loop failed.
    #[error("event loop: {0}")]
    Loop(#[from] LoopError),
}

/// Runs gpud as the driver of the PCI function pcid-spawner handed over: starts up (see
/// [`startup::start`]), then serves the `gpu` scheme until it is unmounted.
///
/// `build` receives the mapped BARs, the programmed interrupt mode and DMA memory, and
/// returns the scheme server plus the driver's IRQ/fevent hooks.
pub fn run<S, E, F>(build: F) -> Result<(), RunError>
where
    S: SchemeSync,
    E: DeviceEvents<S>,
    F: FnOnce(DeviceResources<RedoxPlatform>) -> Result<(S, E), String>,
{
    let mut platform = RedoxPlatform;
    let mut service = startup::start(&mut platform, build)?;
    for (mode, why) in &service.irq_fallbacks {
        tracing::warn!("{mode} unavailable: {why}");
    }
    service.event_loop.run(&mut service.queue)?;
    Ok(())
}

/// `gpud pcid`: [`run`] with the driver factory [`super::pcid_driver::build_with`] on `cfg`
/// (the settings file's memory and limits).
pub fn run_pcid(cfg: super::pcid_driver::PcidConfig) -> Result<(), RunError> {
    run(move |res| {
        super::pcid_driver::build_with::<RedoxPlatform>(res, cfg).map(|b| (b.scheme, b.events))
    })
}
