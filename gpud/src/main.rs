//! The gpud binary: parse the command line, set up logging, pick a platform, run.
//!
//! `gpud demo` runs the driver on the simulated GPU and shows it doing real work;
//! `gpud serve` runs the daemon (see README); `gpud pcid` is the Redox PCI driver that
//! pcid-spawner starts (only in builds with feature `redox`). Settings: `gpud::config`.

use clap::{Parser, Subcommand};
use gpud::config::Settings;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A user-mode GPU driver service: serves the `gpu` scheme (VMs, VM_BIND, buffer objects,
/// exec queues, syncobjs) over a simulated or real GPU.
#[derive(Parser)]
#[command(name = "gpud", version, propagate_version = true)]
struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or RUST_LOG-style directives
    /// such as `info,gpu_scheme=debug`. Default: $RUST_LOG, else the settings file's
    /// `log-level`, else info.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the driver on the simulated GPU: the hardware walk-through, then a daemon with
    /// client processes doing async binds, execs and BO sharing.
    #[cfg(target_os = "linux")]
    Demo,
    /// Run the daemon on a Linux host: simgpu behind the gpu scheme on a Unix socket.
    #[cfg(target_os = "linux")]
    Serve {
        #[command(flatten)]
        settings: Box<Settings>,
        /// Read settings from this TOML file (keys are the long options: `vram = "32M"`);
        /// options given on the command line win.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Stop (and remove the socket) when stdin reaches end of file.
        #[arg(long)]
        until_stdin_eof: bool,
    },
    /// Run as the Redox PCI driver of the function pcid-spawner hands over.
    Pcid {
        /// Settings file (default /etc/gpud/gpud.toml when it exists).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Drive a PCI function through Linux VFIO (bound to vfio-pci) and serve the gpu scheme
    /// on a Unix socket: the user-space driver model, e.g. in a QEMU guest.
    #[cfg(target_os = "linux")]
    Vfio {
        /// PCI address of the function, e.g. 0000:00:03.0.
        address: String,
        /// Socket to serve on (default: $GPUD_SOCKET, else $XDG_RUNTIME_DIR/gpud.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// DMA pool in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 32,
              value_parser = clap::value_parser!(u64).range(8..=4096))]
        dma_mib: u64,
    },
    /// The client processes `gpud demo` starts.
    #[command(hide = true)]
    #[cfg(target_os = "linux")]
    DemoClient {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Reads `path` if given (or `default` if it exists) and lays the command line over it.
fn settings(
    cli: &Settings,
    path: Option<&Path>,
    default: Option<&Path>,
) -> Result<Settings, String> {
    let file = match (path, default) {
        (Some(p), _) => Settings::load(p)?,
        (None, Some(d)) if d.exists() => Settings::load(d)?,
        _ => Settings::default(),
    };
    Ok(cli.over(&file))
}

/// Installs logging; `file` is an extra log file (the Redox driver log).
fn logging(cli: Option<&str>, s: &Settings, file: Option<&Path>) -> Result<(), String> {
    let env = std::env::var("RUST_LOG").ok();
    let filter = gpud::logging::pick_filter(cli, env.as_deref(), s.log_level.as_deref());
    gpud::logging::init(&filter, file)
}

#[cfg(target_os = "linux")]
fn serve(cli: &Cli, s: &Settings, config: Option<&Path>, until_eof: bool) -> Result<(), String> {
    let s = settings(s, config, None)?;
    logging(cli.log_level.as_deref(), &s, None)?;
    let cfg = s.host_config()?;
    gpud::platform::host::serve_main(cfg, until_eof).map_err(|e| e.to_string())
}

/// Drives the PCI function at `address` through VFIO and serves it.
#[cfg(target_os = "linux")]
fn vfio(cli: &Cli, address: &str, socket: Option<PathBuf>, dma_mib: u64) -> Result<(), String> {
    logging(cli.log_level.as_deref(), &Settings::default(), None)?;
    gpud::platform::vfio::run(gpud::platform::vfio::VfioArgs {
        address: address.to_string(),
        socket,
        dma_pool: dma_mib << 20,
    })
}

/// Serves the PCI function pcid-spawner handed over, until the scheme is unmounted.
#[cfg(feature = "redox")]
fn pcid(cli: &Cli, config: Option<&Path>) -> Result<(), String> {
    let default = Path::new(gpud::config::DEFAULT_PCID_CONFIG);
    let s = settings(&Settings::default(), config, Some(default))?;
    let file = Path::new(gpud::logging::REDOX_LOG_FILE);
    logging(cli.log_level.as_deref(), &s, Some(file))?;
    gpud::platform::redox::run_pcid(s.pcid_config()).map_err(|e| e.to_string())
}

/// Without the Redox syscall layer there is no pcid to talk to.
#[cfg(not(feature = "redox"))]
fn pcid(_: &Cli, _: Option<&Path>) -> Result<(), String> {
    Err(
        "this gpud was built without Redox support (feature `redox`); \
         on other hosts run `gpud serve`"
            .into(),
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, res) = match &cli.command {
        #[cfg(target_os = "linux")]
        Command::Demo => (
            "demo",
            gpud::demo::run(&mut std::io::stdout())
                .and_then(|()| gpud::demo::clients::run(&mut std::io::stdout()))
                .map(|()| println!("gpud demo: ok"))
                .map_err(|e| format!("failed: {e}")),
        ),
        #[cfg(target_os = "linux")]
        Command::DemoClient { args } => (
            "demo-client",
            gpud::demo::clients::client_main(args).map_err(|e| e.to_string()),
        ),
        #[cfg(target_os = "linux")]
        Command::Serve {
            settings,
            config,
            until_stdin_eof,
        } => (
            "serve",
            serve(&cli, settings, config.as_deref(), *until_stdin_eof),
        ),
        #[cfg(target_os = "linux")]
        Command::Vfio {
            address,
            socket,
            dma_mib,
        } => ("vfio", vfio(&cli, address, socket.clone(), *dma_mib)),
        Command::Pcid { config } => ("pcid", pcid(&cli, config.as_deref())),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpud {name}: {e}");
            ExitCode::FAILURE
        }
    }
}
