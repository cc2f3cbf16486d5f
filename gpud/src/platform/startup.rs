//! gpud's startup as a pcid-spawned Redox driver, in the order the platform requires.
//!
//! Owns: the sequence `PCID_CLIENT_CHANNEL` → `RequestConfig` (and the check that
//! `gpud.toml` really matches the function) → map BAR0 (registers, uncached) and BAR2 (VRAM
//! aperture, write-combined) through the channel → one interrupt vector (MSI-X, MSI, INTx) →
//! the memory scheme for DMA → scheme socket → event queue over {socket, IRQ} (created before
//! registering, as Redox drivers do to avoid a deadlock with the namespace manager) → build
//! the driver and its scheme server → `register_sync_scheme(.., "gpu", ..)` → `setrens(0, 0)`
//! → one byte to `INIT_NOTIFY` (skipped when absent: started by hand).
//!
//! Must not: make syscalls itself (everything goes through [`Platform`]) or continue after a
//! failed step; every failure names the step.

use pcid_config::protocol::{PciBar, SubdriverArguments};
use thiserror::Error;

use super::event_loop::{DeviceEvents, EventLoop};
use super::interrupts::{self, Interrupt, InterruptMode, NoInterrupt};
use super::pcid_client::{PcidClient, PcidError};
use super::sys::{EventWait, MemoryType, Platform, SysError};
use redox_scheme::scheme::SchemeSync;

/// Environment variable holding the inherited pcid channel fd.
pub const PCID_CLIENT_CHANNEL: &str = "PCID_CLIENT_CHANNEL";
/// Environment variable holding the readiness pipe fd.
pub const INIT_NOTIFY: &str = "INIT_NOTIFY";
/// The scheme gpud serves.
pub const SCHEME_NAME: &str = "gpu";
/// BAR with the register file.
pub const REGISTER_BAR: u8 = 0;
/// BAR with the VRAM aperture.
pub const VRAM_BAR: u8 = 2;

/// A startup step failed.
#[derive(Debug, Error)]
pub enum StartupError {
    /// `PCID_CLIENT_CHANNEL` is not set: gpud was not spawned by pcid.
    #[error("{PCID_CLIENT_CHANNEL} is not set (gpud must be spawned by pcid-spawner)")]
    NoChannel,
    /// An fd variable is not a number.
    #[error("{var}={value:?} is not an fd number")]
    BadFdVar {
        /// Variable name.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// Adopting the channel failed.
    #[error("opening the pcid channel: {0}")]
    Channel(SysError),
    /// A pcid request failed.
    #[error("pcid: {0}")]
    Pcid(#[from] PcidError),
    /// gpud.toml should not have matched this function.
    #[error("device {vendor:04x}:{device:04x} (class {class:02x}.{subclass:02x}) is not one gpud drives")]
    Unsupported {
        /// Vendor id.
        vendor: u16,
        /// Device id.
        device: u16,
        /// Class.
        class: u8,
        /// Subclass.
        subclass: u8,
    },
    /// A BAR gpud needs is missing or not memory.
    #[error("BAR{bir} is {bar:?}, expected a memory BAR")]
    BadBar {
        /// Index.
        bir: u8,
        /// What pcid reported.
        bar: PciBar,
    },
    /// Mapping a BAR failed.
    #[error("mapping BAR{bir}: {err}")]
    MapBar {
        /// Index.
        bir: u8,
        /// Cause.
        err: SysError,
    },
    /// No interrupt mode worked.
    #[error(transparent)]
    Interrupt(#[from] NoInterrupt),
    /// Another platform step failed.
    #[error("{step}: {err}")]
    Step {
        /// Which step.
        step: &'static str,
        /// Cause.
        err: SysError,
    },
    /// Building the driver failed.
    #[error("building the driver: {0}")]
    Build(String),
}

fn step(step: &'static str) -> impl FnOnce(SysError) -> StartupError {
    move |err| StartupError::Step { step, err }
}

/// What the driver factory receives: the function's facts and the capabilities for it.
pub struct DeviceResources<P: Platform> {
    /// BARs, IRQ line and ids as pcid reported them.
    pub args: SubdriverArguments,
    /// The channel, for later config-space requests.
    pub pcid: PcidClient<P::Channel>,
    /// BAR0: registers (uncached).
    pub registers: P::Bar,
    /// BAR2: the VRAM aperture (write-combined), when the function has one.
    pub vram: Option<P::Bar>,
    /// The interrupt mode programmed.
    pub interrupt: InterruptMode,
    /// DMA memory.
    pub dma: P::Dma,
}

/// A registered, running-ready service: hand `queue` to [`EventLoop::run`].
pub struct Service<P: Platform, S, E> {
    /// The loop over socket, IRQ, server and hooks.
    pub event_loop: EventLoop<P::Socket, P::Irq, S, E>,
    /// The event queue to wait on.
    pub queue: P::Events,
    /// Interrupt modes skipped, for the log.
    pub irq_fallbacks: Vec<(&'static str, interrupts::IrqModeError)>,
}

fn fd_var<P: Platform>(platform: &P, var: &'static str) -> Result<Option<usize>, StartupError> {
    match platform.env_var(var) {
        None => Ok(None),
        Some(value) => match value.trim().parse() {
            Ok(fd) => Ok(Some(fd)),
            Err(_) => Err(StartupError::BadFdVar { var, value }),
        },
    }
}

fn map_bar<P: Platform>(
    platform: &mut P,
    pcid: &PcidClient<P::Channel>,
    args: &SubdriverArguments,
    bir: u8,
    memory_type: MemoryType,
) -> Result<Option<P::Bar>, StartupError> {
    let bar = args
        .func
        .bars
        .get(usize::from(bir))
        .copied()
        .unwrap_or_default();
    let Some((_, size)) = bar.memory() else {
        return match bar {
            PciBar::None => Ok(None),
            _ => Err(StartupError::BadBar { bir, bar }),
        };
    };
    platform
        .map_bar(pcid.channel(), bir, size, memory_type)
        .map(Some)
        .map_err(|err| StartupError::MapBar { bir, err })
}

/// Runs the startup sequence and returns the service, ready for its event loop.
/// `build` turns the device resources into the scheme server and the driver hooks.
pub fn start<P, S, E, F>(platform: &mut P, build: F) -> Result<Service<P, S, E>, StartupError>
where
    P: Platform,
    S: SchemeSync,
    E: DeviceEvents<S>,
    F: FnOnce(DeviceResources<P>) -> Result<(S, E), String>,
{
    let fd = fd_var(platform, PCID_CLIENT_CHANNEL)?.ok_or(StartupError::NoChannel)?;
    let channel = platform.open_channel(fd).map_err(StartupError::Channel)?;
    let mut pcid = PcidClient::new(channel);
    let args = pcid.config()?;
    let id = args.func.full_device_id;
    let matches = pcid_config::gpud_config().is_ok_and(|p| p.config.find(&id).is_some());
    if !matches {
        return Err(StartupError::Unsupported {
            vendor: id.vendor_id,
            device: id.device_id,
            class: id.class,
            subclass: id.subclass,
        });
    }
    let mut bars: [Option<P::Bar>; 6] = Default::default();
    bars[0] = map_bar(
        platform,
        &pcid,
        &args,
        REGISTER_BAR,
        MemoryType::Uncacheable,
    )?;
    bars[2] = map_bar(platform, &pcid, &args, VRAM_BAR, MemoryType::WriteCombining)?;
    if bars[0].is_none() {
        let bar = args.func.bars[0];
        return Err(StartupError::BadBar {
            bir: REGISTER_BAR,
            bar,
        });
    }
    let Interrupt {
        handle: irq,
        mode,
        fell_back,
    } = interrupts::allocate(platform, &mut pcid, &args, &mut bars)?;
    let dma = platform
        .open_dma()
        .map_err(step("opening the memory scheme"))?;
    let socket = platform
        .create_socket()
        .map_err(step("creating the scheme socket"))?;
    let queue = platform
        .create_event_queue(&socket, &irq)
        .map_err(step("creating the event queue"))?;
    let [registers, _, vram, ..] = bars;
    let registers = registers.ok_or(StartupError::BadBar {
        bir: 0,
        bar: PciBar::None,
    })?;
    let resources = DeviceResources {
        args,
        pcid,
        registers,
        vram,
        interrupt: mode,
        dma,
    };
    let (mut scheme, mut events) = build(resources).map_err(StartupError::Build)?;
    if let Some(hook) = queue.waker() {
        events.install_waker(&mut scheme, hook);
    }
    platform
        .register_scheme(&socket, SCHEME_NAME, &mut scheme)
        .map_err(step("registering the gpu scheme"))?;
    platform
        .enter_null_namespace()
        .map_err(step("setrens(0, 0)"))?;
    if let Some(fd) = fd_var(platform, INIT_NOTIFY)? {
        platform
            .notify_ready(fd)
            .map_err(step("writing INIT_NOTIFY"))?;
    }
    Ok(Service {
        event_loop: EventLoop::new(socket, irq, scheme, events),
        queue,
        irq_fallbacks: fell_back,
    })
}

#[cfg(test)]
mod tests;
