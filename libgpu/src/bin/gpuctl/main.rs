//! gpuctl: inspect a running gpud over the gpu scheme.
//!
//! `gpuctl [--socket PATH] [--json] info|clients|stats|vm <id>|vm <client>:<vm>|top`: `info` prints
//! the device (engines, memory regions, VA layout), `clients` the per-client usage blocks of
//! the root stats, `vm` the whole mapping table of one VM read through a VM view on the root
//! (`<id>`: gpud's daemon-wide VM id, as the `vm-<id>-…` stats lines name it;
//! `<client>:<vm>`: a client id from `gpuctl clients` and that client's VM id), `stats` the
//! device-wide stats, `top` a live per-client view (`top.rs`, `tty.rs`; `--once` or `--json`:
//! one table from two samples one interval apart). `--json` prints the same as one JSON value (`json.rs`). The socket
//! defaults to gpud's default path. Owns only argument parsing and printing; everything it
//! shows comes from the scheme.

#![forbid(unsafe_code)]

mod json;
mod top;
mod tty;

use clap::{Parser, Subcommand};
use gpu_scheme::host::{default_socket_path, HostError, HostHandle};
use libgpu::flags::EngineClass;
use libgpu::{Device, DeviceInfo};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Inspect a running gpud: device, clients, stats, VM mapping tables.
#[derive(Parser)]
#[command(name = "gpuctl", version, propagate_version = true)]
struct Cli {
    /// gpud's socket. Default: $GPUD_SOCKET, else $XDG_RUNTIME_DIR/gpud.sock, else gpud.sock
    /// in the temporary directory (where `gpud serve` listens by default).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print one JSON value instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The device: engines, memory regions, VA layout, per-client limits.
    Info,
    /// Every client's usage block (needs root or gpud's admin uid).
    Clients,
    /// Device-wide stats.
    Stats,
    /// The whole mapping table of one VM.
    Vm {
        /// gpud's daemon-wide VM id (as `vm-<id>-…` stats lines name it), or
        /// `<client>:<vm>` with a client id from `gpuctl clients` and that client's VM id.
        #[arg(value_name = "ID|CLIENT:VM")]
        vm: String,
    },
    /// Live per-client view: engine busy %, resident memory, VMs, queues, faults and
    /// evictions per second (needs root or gpud's admin uid to see clients). Keys: q quit,
    /// <-/-> sort column, r reverse, +/- interval.
    Top {
        /// Seconds between samples (0.1 to 60).
        #[arg(long, short = 'd', value_name = "SECONDS", default_value = "1", value_parser = interval)]
        interval: Duration,
        /// Print one table (two samples one interval apart) and exit; implied by --json and
        /// when stdout is not a terminal.
        #[arg(long)]
        once: bool,
    },
}

/// A refresh interval in seconds, 0.1 to 60.
fn interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.1..=60.0).contains(&secs) {
        return Err(format!("{s}: the interval is 0.1 to 60 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What a command prints: text, or the JSON value `--json` asks for.
struct Shown {
    text: String,
    json: Value,
}

/// The message for a socket nobody answers on, with the next step.
fn not_running(socket: &Path, e: impl std::fmt::Display) -> String {
    format!(
        "cannot connect to gpud at {}: {e}\n\
         is gpud running? start it with `gpud serve` (or point gpuctl at its socket with \
         --socket PATH or $GPUD_SOCKET)",
        socket.display()
    )
}

fn connect(socket: &Path) -> Result<HostHandle, String> {
    HostHandle::connect(socket).map_err(|e| not_running(socket, e))
}

/// The whole text of a root read, paged by offset.
fn read_all(root: &HostHandle) -> Result<String, String> {
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = root
            .read(&mut buf, text.len() as u64)
            .map_err(|e| format!("read stats: {e}"))?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// `gpuctl top`: the live view, or one table from two samples.
fn top(socket: &Path, interval: Duration, once: bool) -> Result<Option<Shown>, String> {
    let root = connect(socket)?;
    let sample = || top::Sample::parse(&read_all(&root)?, Instant::now());
    if !once {
        tty::run(sample, interval)?;
        return Ok(None);
    }
    let prev = sample()?;
    std::thread::sleep(interval);
    let cur = sample()?;
    let mut table = top::rows(&prev, &cur);
    let sort = top::Sort::default();
    table.sort(sort);
    let mut text = top::summary(&cur, table.rows.len()).join("\n");
    text.push_str("\n\n");
    for l in table.lines(sort) {
        text.push_str(&l);
        text.push('\n');
    }
    Ok(Some(Shown {
        text,
        json: table.json(),
    }))
}

fn root_stats(socket: &Path) -> Result<String, String> {
    let root = connect(socket)?;
    let mut buf = vec![0u8; 64 << 10];
    let n = root
        .read(&mut buf, 0)
        .map_err(|e| format!("read stats: {e}"))?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn engines(i: &DeviceInfo) -> Vec<&'static str> {
    [
        (EngineClass::Copy, "copy"),
        (EngineClass::Compute, "compute"),
    ]
    .into_iter()
    .filter(|(c, _)| i.has_engine(*c))
    .map(|(_, n)| n)
    .collect()
}

fn info(socket: &Path) -> Result<Shown, String> {
    let dev = Device::open_at(socket).map_err(|e| not_running(socket, e))?;
    let i = dev.query().map_err(|e| format!("query: {e}"))?;
    let mib = |b: u64| b >> 20;
    let text = format!(
        "device: simgpu (card0)\nva-bits: {}\nengines: {}\npage-sizes: {:#x}\n\
         vram: {} MiB total, {} MiB free\nsystem: {} MiB total, {} MiB free\n\
         reserved-va: {:#x}+{:#x}\npat-entries: {}\n",
        i.va_bits,
        engines(&i).join(" "),
        i.page_sizes,
        mib(i.vram_size),
        mib(i.vram_free),
        mib(i.sys_size),
        mib(i.sys_free),
        i.reserved_va_start,
        i.reserved_va_len,
        i.pat_entries,
    );
    Ok(Shown {
        text,
        json: json::device_info(&i, &engines(&i)),
    })
}

/// The per-client blocks of the root stats (each starts at a `client-id` line).
fn clients(text: &str) -> Shown {
    let start = text.find("client-id").unwrap_or(text.len());
    let blocks = &text[start..];
    let shown = if blocks.is_empty() {
        "no clients\n".to_string()
    } else {
        blocks.replace("\nclient-id", "\n\nclient-id")
    };
    Shown {
        text: shown,
        json: json::client_blocks(blocks),
    }
}

/// The device-wide part of the root stats.
fn device_stats(text: &str) -> Shown {
    let end = text.find("client-id").unwrap_or(text.len());
    Shown {
        text: text[..end].to_string(),
        json: json::key_values(&text[..end]),
    }
}

/// The root `dup` path of a VM view for `gpuctl vm <arg>`: `vm/<id>` or
/// `client/<client>/vm/<vm>` (ids re-printed, so the scheme sees canonical decimals).
fn view_path(arg: &str) -> Option<String> {
    match arg.split_once(':') {
        None => arg.parse::<u64>().ok().map(|id| format!("vm/{id}")),
        Some((c, v)) => {
            let (c, v) = (c.parse::<u64>().ok()?, v.parse::<u32>().ok()?);
            Some(format!("client/{c}/vm/{v}"))
        }
    }
}

/// The whole text of the VM view `arg` names.
fn vm_table(socket: &Path, arg: &str) -> Result<Shown, String> {
    let path = view_path(arg).ok_or_else(|| {
        format!("{arg:?} is not a VM: give a daemon VM id (see `gpuctl stats`) or CLIENT:VM")
    })?;
    let root = connect(socket)?;
    let view = match root.dup(&path) {
        Ok(v) => v,
        Err(HostError::Scheme(libgpu::errno::ENOENT)) => {
            return Err(format!(
                "no VM {arg} (list VMs with `gpuctl stats`, clients with `gpuctl clients`)"
            ))
        }
        Err(e) => return Err(format!("open VM {arg}: {e}")),
    };
    let handle = libgpu::transport::host::from_fd(view.into_fd());
    let text = libgpu::read_view(handle.as_ref()).map_err(|e| format!("VM {arg}: {e}"))?;
    // A text that does not parse is a broken server or a torn read: say so, print nothing.
    let table = libgpu::VmTable::parse(&text).map_err(|e| format!("VM {arg}: {e}"))?;
    Ok(Shown {
        text,
        json: json::vm_table(&table),
    })
}

/// Runs the command; `None` when it printed everything itself (the live view).
fn run(cli: &Cli) -> Result<Option<Shown>, String> {
    let socket = cli.socket.clone().unwrap_or_else(default_socket_path);
    match &cli.command {
        Command::Info => info(&socket).map(Some),
        Command::Clients => root_stats(&socket).map(|t| Some(clients(&t))),
        Command::Stats => root_stats(&socket).map(|t| Some(device_stats(&t))),
        Command::Vm { vm } => vm_table(&socket, vm).map(Some),
        Command::Top { interval, once } => {
            let once = *once || cli.json || !std::io::stdout().is_terminal();
            top(&socket, *interval, once)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(shown)) if cli.json => {
            println!("{:#}", shown.json);
            ExitCode::SUCCESS
        }
        Ok(Some(shown)) => {
            print!("{}", shown.text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gpuctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_root_stats_into_device_and_client_blocks() {
        let text = "device-clients: 2\nclient-id: 1\nclient-vms: 1\nclient-id: 2\nclient-vms: 0\n";
        assert_eq!(device_stats(text).text, "device-clients: 2\n");
        let c = clients(text);
        assert!(c.text.starts_with("client-id: 1\n"));
        assert!(c.text.contains("\n\nclient-id: 2\n"));
        assert_eq!(c.json.as_array().map(Vec::len), Some(2));
        assert_eq!(c.json[1]["client-id"], 2);
        assert_eq!(clients("device-clients: 0\n").text, "no clients\n");
        assert_eq!(device_stats(text).json["device-clients"], 2);
    }

    #[test]
    fn vm_arguments_name_canonical_view_paths() {
        assert_eq!(view_path("17").as_deref(), Some("vm/17"));
        assert_eq!(view_path("3:2").as_deref(), Some("client/3/vm/2"));
        for bad in ["", "x", "-1", "1:", ":1", "1:2:3", "1:4294967296", "0x10"] {
            assert_eq!(view_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_command_line_parses_conventionally() {
        Cli::command_for_tests().debug_assert();
        let cli = Cli::try_parse_from(["gpuctl", "vm", "3:2", "--json", "--socket", "/s"])
            .expect("parses");
        assert!(cli.json);
        assert_eq!(cli.socket.as_deref(), Some(Path::new("/s")));
        assert!(Cli::try_parse_from(["gpuctl", "bogus"]).is_err());
        assert!(Cli::try_parse_from(["gpuctl", "vm"]).is_err());
        let top = Cli::try_parse_from(["gpuctl", "top", "-d", "0.5", "--once"]).expect("top");
        assert!(matches!(
            top.command,
            Command::Top { interval, once: true } if interval == Duration::from_millis(500)
        ));
        for bad in ["0", "0.05", "61", "x", "-1"] {
            assert!(
                Cli::try_parse_from(["gpuctl", "top", "--interval", bad]).is_err(),
                "{bad}"
            );
        }
        let help = Cli::try_parse_from(["gpuctl", "--help"])
            .err()
            .expect("help");
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    impl Cli {
        fn command_for_tests() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
