//! `simgpu-vfio-user --socket PATH [--vram-mib N]`: serves one simgpu to one vfio-user client
//! (QEMU's `-device vfio-user-pci,socket=...`) and exits when it disconnects.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: simgpu-vfio-user --socket PATH [--vram-mib N]";

fn main() -> ExitCode {
    let mut socket = None;
    let mut cfg = simgpu::Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--socket", Some(p)) => socket = Some(PathBuf::from(p)),
            ("--vram-mib", Some(n)) => match n.parse::<u64>() {
                Ok(n) if n > 0 => cfg.vram_size = n << 20,
                _ => {
                    eprintln!("{USAGE} (bad --vram-mib {n})");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(socket) = socket else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    eprintln!("simgpu-vfio-user: serving on {}", socket.display());
    match simgpu_vfio_user::serve(&socket, cfg) {
        Ok(()) => {
            eprintln!("simgpu-vfio-user: client disconnected");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("simgpu-vfio-user: {e}");
            ExitCode::FAILURE
        }
    }
}
