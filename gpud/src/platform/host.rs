//! The host platform of `gpud serve`: the device on simgpu (thread mode) with its system
//! memory and VRAM in shared-memory windows (every BO backing its own memfd, see
//! `docs/memory.md`), served as the `gpu` scheme on a Unix socket.
//!
//! Owns: [`HostConfig`], [`HostDaemon`] (bring-up, socket claiming, the serve loop) and the
//! command-line parsing of `serve`. Must not: contain scheme or driver logic (the scheme's
//! `HostServer` and [`crate::driver::Driver`] do that).
//!
//! Stopping: the daemon serves until its stop flag is set ([`HostDaemon::stopper`]); `gpud
//! serve` sets it when stdin reaches end of file if `--until-stdin-eof` is given (for
//! supervisors and tests), and otherwise runs until SIGTERM/SIGINT end the process (their
//! default action). A socket path left behind by a killed daemon is reclaimed at the next
//! start when nothing answers on it.

use crate::device::{Device, DeviceConfig};
use crate::driver::Driver;
use crate::mem::bo::SharedWindows;
use crate::mem::shm::{MapBudget, ShmError, ShmPool};
use gpu_scheme::host::HostServer;
use gpu_scheme::{GpuScheme, Limits};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// The socket file's default permissions: owner and group may connect (connecting needs
/// write permission), the way DRM render nodes are opened by a `render` group; give the
/// socket that group with `--socket-group`.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// How often the serve loop looks at its stop flag when idle.
const TICK: Duration = Duration::from_millis(20);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum HostError {
    /// The shared-memory pool could not be created.
    #[error("system memory pool: {0}")]
    Pool(#[from] ShmError),
    /// The device did not come up.
    #[error("device bring-up: {0}")]
    Device(#[from] crate::bind::BindError),
    /// Another daemon answers on the socket path.
    #[error(
        "{path}: another gpud is listening there (stop it, or serve on another path with \
         --socket PATH)"
    )]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// A socket call failed.
    #[error("socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: rustix::io::Errno,
    },
    /// Setting the socket file's mode or group failed.
    #[error("socket {path}: setting its {what}: {source}")]
    Permissions {
        /// The socket path.
        path: PathBuf,
        /// `mode` or `group`.
        what: &'static str,
        /// The error.
        source: rustix::io::Errno,
    },
}

/// What `gpud serve` brings up.
#[derive(Clone)]
pub struct HostConfig {
    /// Where to listen.
    pub socket: PathBuf,
    /// The simulated device (its `sys_size` is the shared pool's size).
    pub device: DeviceConfig,
    /// Per-client limits of the scheme.
    pub limits: Limits,
    /// Permissions given to the socket file once bound (`None`: the umask's). Default
    /// [`DEFAULT_SOCKET_MODE`].
    pub socket_mode: Option<u32>,
    /// Group given to the socket file once bound (`None`: the daemon's).
    pub socket_group: Option<u32>,
}

impl HostConfig {
    /// Defaults: `gpu_scheme::host::default_socket_path()`, the default device and limits.
    pub fn new(socket: Option<PathBuf>) -> Self {
        Self {
            socket: socket.unwrap_or_else(gpu_scheme::host::default_socket_path),
            device: DeviceConfig::default(),
            limits: Limits::default(),
            socket_mode: Some(DEFAULT_SOCKET_MODE),
            socket_group: None,
        }
    }
}

/// A running daemon: the device, the scheme server and the stop flag.
pub struct HostDaemon {
    server: HostServer<Driver>,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
}

/// Removes a socket file nobody answers on (a killed daemon's); refuses a live one.
fn claim_socket(path: &Path) -> Result<(), HostError> {
    if !path.exists() {
        return Ok(());
    }
    if UnixStream::connect(path).is_ok() {
        return Err(HostError::InUse {
            path: path.to_path_buf(),
        });
    }
    // A SEQPACKET listener refuses a STREAM connect too; remove only what is not listening.
    let probe = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    );
    let live = probe.ok().is_some_and(|s| {
        rustix::net::SocketAddrUnix::new(path)
            .and_then(|a| rustix::net::connect(&s, &a))
            .is_ok()
    });
    if live {
        return Err(HostError::InUse {
            path: path.to_path_buf(),
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

impl HostDaemon {
    /// Brings up the device on shared windows and listens on `cfg.socket`.
    pub fn start(cfg: HostConfig) -> Result<Self, HostError> {
        raise_fd_limit();
        let budget = MapBudget::from_system();
        let windows = SharedWindows {
            sys: Arc::new(ShmPool::with_budget(
                "gpud-system-memory",
                cfg.device.sys_size,
                budget.clone(),
            )?),
            vram: Arc::new(ShmPool::with_budget(
                "gpud-vram",
                cfg.device.vram_size,
                budget,
            )?),
        };
        let sys_size = cfg.device.sys_size;
        let device = Device::with_shared(cfg.device.clone(), windows)?;
        Self::with_driver(Driver::new(Arc::new(device), sys_size), cfg, "simgpu")
    }

    /// Serves `driver`, brought up on `device` (a name for the log), on `cfg.socket` with
    /// `cfg.limits`; `cfg.device` only describes it. `gpud vfio` uses this.
    pub fn with_driver(driver: Driver, cfg: HostConfig, device: &str) -> Result<Self, HostError> {
        let (sys_size, vram_size, limits) = (cfg.device.sys_size, cfg.device.vram_size, cfg.limits);
        claim_socket(&cfg.socket)?;
        let scheme = GpuScheme::new(driver, cfg.limits);
        let server = HostServer::bind(&cfg.socket, scheme).map_err(|source| HostError::Socket {
            path: cfg.socket.clone(),
            source,
        })?;
        set_permissions(&cfg.socket, cfg.socket_mode, cfg.socket_group)?;
        tracing::info!(
            socket = %cfg.socket.display(),
            device,
            vram = vram_size,
            system_memory = sys_size,
            limits = ?limits,
            "serving the gpu scheme"
        );
        Ok(Self {
            server,
            socket: cfg.socket,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The flag that ends [`HostDaemon::serve`] (checked every few milliseconds).
    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The driver (stats for tests and the demo).
    pub fn driver(&self) -> &Driver {
        self.server.scheme().driver()
    }

    /// Serves until the stop flag is set; removes the socket file on return.
    pub fn serve(&mut self) -> Result<(), HostError> {
        let stop = self.stop.clone();
        let res = self
            .server
            .serve(TICK, |_| stop.load(Ordering::Acquire))
            .map_err(|source| HostError::Socket {
                path: self.socket.clone(),
                source,
            });
        let _ = std::fs::remove_file(&self.socket);
        tracing::info!(socket = %self.socket.display(), "stopped serving");
        res
    }
}

/// Gives the bound socket file the configured mode and group.
fn set_permissions(path: &Path, mode: Option<u32>, group: Option<u32>) -> Result<(), HostError> {
    let err = |what, source| HostError::Permissions {
        path: path.to_path_buf(),
        what,
        source,
    };
    if let Some(gid) = group {
        let gid = rustix::fs::Gid::from_raw(gid);
        rustix::fs::chown(path, None, Some(gid)).map_err(|e| err("group", e))?;
    }
    if let Some(mode) = mode {
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))
            .map_err(|e| err("mode", e))?;
    }
    Ok(())
}

/// Every BO holds one memfd open in the daemon: lift the soft descriptor limit to the hard
/// one (often 1024 -> 524288), so the mapping budget, not the descriptor limit, bounds the
/// BO count. Failing to raise it only lowers that bound (creation then fails with ENOMEM).
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// `gpud serve`: brings the daemon up on `cfg` and serves until SIGTERM/SIGINT or, with
/// `until_stdin_eof`, until stdin closes.
pub fn serve_main(cfg: HostConfig, until_stdin_eof: bool) -> Result<(), HostError> {
    let mut daemon = HostDaemon::start(cfg)?;
    if until_stdin_eof {
        let stop = daemon.stopper();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            stop.store(true, Ordering::Release);
        });
    }
    daemon.serve()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(socket: PathBuf) -> HostConfig {
        let mut cfg = HostConfig::new(Some(socket));
        cfg.device.sys_size = 8 << 20;
        cfg.device.vram_size = 4 << 20;
        cfg
    }

    #[test]
    fn serves_a_client_and_reclaims_a_stale_socket() {
        let dir = std::env::temp_dir().join(format!("gpud-host-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("gpud.sock");
        // A stale socket file (bound, never listened on) is reclaimed.
        let _ = std::fs::remove_file(&path);
        drop(std::os::unix::net::UnixDatagram::bind(&path).expect("stale file"));
        let mut d = HostDaemon::start(small(path.clone())).expect("start");
        let second = HostDaemon::start(small(path.clone()));
        assert!(matches!(second, Err(HostError::InUse { .. })));
        // The message names the next step.
        let msg = second.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("--socket PATH"), "{msg}");
        let stop = d.stopper();
        let t = std::thread::spawn(move || d.serve());
        let h = gpu_scheme::host::HostHandle::connect(&path).expect("connect");
        let dev = h.open("card0").expect("open card0");
        let (op, mut bytes) = gpu_scheme::uapi::encode(&gpu_scheme::uapi::Request::DeviceQuery);
        dev.call(&mut bytes, [op, 0, 0]).expect("query");
        let info: gpu_scheme::uapi::wire::DeviceQueryArgs =
            gpu_scheme::uapi::read_args(&bytes).expect("args");
        assert_eq!(info.sys_size, 8 << 20);
        stop.store(true, Ordering::Release);
        t.join().expect("thread").expect("served");
        assert!(!path.exists(), "socket removed on stop");
    }

    #[test]
    fn the_socket_gets_the_configured_mode_and_group() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = std::env::temp_dir().join(format!("gpud-host-mode-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("gpud.sock");
        let mut cfg = small(path.clone());
        cfg.socket_mode = Some(0o600);
        let own_gid = rustix::process::getgid().as_raw();
        cfg.socket_group = Some(own_gid);
        let d = HostDaemon::start(cfg).expect("start");
        let meta = std::fs::metadata(&path).expect("socket file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.gid(), own_gid);
        drop(d);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
