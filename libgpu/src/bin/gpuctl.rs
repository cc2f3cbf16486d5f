//! gpuctl: inspect a running gpud over the gpu scheme.
//!
//! `gpuctl info|clients|vm <id>|vm <client>:<vm>|stats [--socket PATH]`: `info` prints the
//! device (engines, memory regions, VA layout), `clients` the per-client usage blocks of the
//! root stats, `vm` the whole mapping table of one VM read through a VM view on the root
//! (`<id>`: gpud's daemon-wide VM id, as the `vm-<id>-…` stats lines name it; `<client>:<vm>`:
//! a client id from `gpuctl clients` and that client's VM id), `stats` the device-wide stats. The socket defaults to gpud's default path. Owns only
//! argument parsing and printing; everything it shows comes from the scheme.

#![forbid(unsafe_code)]

use gpu_scheme::host::{default_socket_path, HostError, HostHandle};
use libgpu::flags::EngineClass;
use libgpu::Device;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: gpuctl info|clients|vm <id>|vm <client>:<vm>|stats [--socket PATH]";

fn root_stats(socket: &Path) -> Result<String, String> {
    let root = HostHandle::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut buf = vec![0u8; 64 << 10];
    let n = root
        .read(&mut buf, 0)
        .map_err(|e| format!("read stats: {e}"))?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn info(socket: &Path) -> Result<String, String> {
    let dev = Device::open_at(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let i = dev.query().map_err(|e| format!("query: {e}"))?;
    let engines: Vec<&str> = [
        (EngineClass::Copy, "copy"),
        (EngineClass::Compute, "compute"),
    ]
    .into_iter()
    .filter(|(c, _)| i.has_engine(*c))
    .map(|(_, n)| n)
    .collect();
    let mib = |b: u64| b >> 20;
    Ok(format!(
        "device: simgpu (card0)\nva-bits: {}\nengines: {}\npage-sizes: {:#x}\n\
         vram: {} MiB total, {} MiB free\nsystem: {} MiB total, {} MiB free\n\
         reserved-va: {:#x}+{:#x}\npat-entries: {}\n",
        i.va_bits,
        engines.join(" "),
        i.page_sizes,
        mib(i.vram_size),
        mib(i.vram_free),
        mib(i.sys_size),
        mib(i.sys_free),
        i.reserved_va_start,
        i.reserved_va_len,
        i.pat_entries,
    ))
}

/// The per-client blocks of the root stats (each starts at a `client-id` line).
fn clients(text: &str) -> String {
    let start = text.find("client-id").unwrap_or(text.len());
    let blocks = &text[start..];
    if blocks.is_empty() {
        "no clients\n".to_string()
    } else {
        blocks.replace("\nclient-id", "\n\nclient-id")
    }
}

/// The device-wide part of the root stats.
fn device_stats(text: &str) -> String {
    let end = text.find("client-id").unwrap_or(text.len());
    text[..end].to_string()
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
fn vm_table(socket: &Path, arg: &str) -> Result<String, String> {
    let path = view_path(arg).ok_or(USAGE)?;
    let root = HostHandle::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let view = match root.dup(&path) {
        Ok(v) => v,
        Err(HostError::Scheme(libgpu::errno::ENOENT)) => return Err(format!("no VM {arg}")),
        Err(e) => return Err(format!("open VM {arg}: {e}")),
    };
    let handle = libgpu::transport::host::from_fd(view.into_fd());
    let text = libgpu::read_view(handle.as_ref()).map_err(|e| format!("VM {arg}: {e}"))?;
    // A text that does not parse is a broken server or a torn read: say so, print nothing.
    libgpu::VmTable::parse(&text).map_err(|e| format!("VM {arg}: {e}"))?;
    Ok(text)
}

fn run(args: &[String]) -> Result<String, String> {
    let mut socket = default_socket_path();
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socket" => socket = PathBuf::from(it.next().ok_or(USAGE)?),
            w => words.push(w.to_string()),
        }
    }
    match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["info"] => info(&socket),
        ["clients"] => root_stats(&socket).map(|t| clients(&t)),
        ["stats"] => root_stats(&socket).map(|t| device_stats(&t)),
        ["vm", arg] => vm_table(&socket, arg),
        _ => Err(USAGE.into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gpuctl: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_root_stats_into_device_and_client_blocks() {
        let text = "device-clients: 2\nclient-id: 1\nclient-vms: 1\nclient-id: 2\nclient-vms: 0\n";
        assert_eq!(device_stats(text), "device-clients: 2\n");
        let c = clients(text);
        assert!(c.starts_with("client-id: 1\n"));
        assert!(c.contains("\n\nclient-id: 2\n"));
        assert_eq!(clients("device-clients: 0\n"), "no clients\n");
        assert!(run(&["bogus".into()]).is_err());
    }

    #[test]
    fn vm_arguments_name_canonical_view_paths() {
        assert_eq!(view_path("17").as_deref(), Some("vm/17"));
        assert_eq!(view_path("3:2").as_deref(), Some("client/3/vm/2"));
        for bad in ["", "x", "-1", "1:", ":1", "1:2:3", "1:4294967296", "0x10"] {
            assert_eq!(view_path(bad), None, "{bad}");
        }
        assert_eq!(run(&["vm".into(), "x".into()]), Err(USAGE.to_string()));
    }
}
