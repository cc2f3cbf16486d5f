//! gpuctl: inspect a running gpud over the gpu scheme.
//!
//! `gpuctl info|clients|vm <id>|stats [--socket PATH]`: `info` prints the device (engines,
//! memory regions, VA layout), `clients` the per-client usage blocks of the root stats, `vm`
//! the mapping table of the VM with that daemon-wide id (the `vm-<id>-…` stats lines),
//! `stats` the device-wide stats. The socket defaults to gpud's default path. Owns only
//! argument parsing and printing; everything it shows comes from the scheme.

#![forbid(unsafe_code)]

use gpu_scheme::host::{default_socket_path, HostHandle};
use libgpu::flags::EngineClass;
use libgpu::Device;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: gpuctl info|clients|vm <id>|stats [--socket PATH]";

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

/// The `vm-<id>-…` lines of the device-wide stats, without the prefix.
fn vm_table(text: &str, id: u64) -> Result<String, String> {
    let prefix = format!("vm-{id}-");
    let device = device_stats(text);
    let lines: Vec<&str> = device
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|l| l.strip_prefix("map: ").unwrap_or(l))
        .collect::<Vec<_>>();
    if lines.is_empty() {
        return Err(format!("no VM {id}"));
    }
    Ok(lines.iter().map(|l| format!("{l}\n")).collect())
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
        ["vm", id] => {
            let id: u64 = id.parse().map_err(|_| USAGE.to_string())?;
            root_stats(&socket).and_then(|t| vm_table(&t, id))
        }
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
        let t = "vm-3-client: 1\nvm-3-mappings: 1\nvm-3-map: 0x1000 0x2000 bo=1 offset=0x0\n";
        let table = vm_table(t, 3).expect("vm 3");
        assert_eq!(
            table,
            "client: 1\nmappings: 1\n0x1000 0x2000 bo=1 offset=0x0\n"
        );
        assert!(vm_table(t, 4).is_err());
    }
}
