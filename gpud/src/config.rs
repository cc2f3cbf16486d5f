//! The daemon's settings: one set of keys for the command line of `gpud serve` / `gpud pcid`
//! and for the settings file (`--config PATH`, TOML) that the Redox launch reads.
//!
//! Owns: [`Settings`] (every key optional; the command line overrides the file key by key),
//! [`Size`] (byte counts written `64M`, `1G`, `4096`), the octal socket mode, and how the
//! settings land in [`HostConfig`] and [`PcidConfig`]. Must not: bring anything up or open the
//! socket; `platform::host` and `platform::pcid_driver` do that with the configs built here.
//!
//! Keys are the long option names: `socket = "/run/gpud.sock"`, `vram = "16M"`,
//! `limit-in-flight = 256`, `log-level = "debug"`. An unknown key in the file is an error
//! (a misspelt limit must not silently leave the default in force).

#[cfg(target_os = "linux")]
use crate::platform::host::HostConfig;
use crate::platform::pcid_driver::PcidConfig;
use gpu_scheme::Limits;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where `gpud pcid` looks for its settings when no `--config` is given (absent: defaults).
pub const DEFAULT_PCID_CONFIG: &str = "/etc/gpud/gpud.toml";

/// A byte count: a decimal number with an optional binary suffix `K`, `M`, `G`, `T`
/// (`KiB`… and lower case accepted). A TOML integer is taken as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(digits);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (examples: 4096, 64K, 16M, 1G)"))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            other => {
                return Err(format!(
                    "{s:?}: unknown size unit {other:?} (use K, M, G, T)"
                ))
            }
        };
        n.checked_mul(1u64 << shift)
            .map(Size)
            .ok_or_else(|| format!("{s:?} does not fit in 64 bits"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match n {
            0 => write!(f, "0"),
            _ if n % (1 << 30) == 0 => write!(f, "{}G", n >> 30),
            _ if n % (1 << 20) == 0 => write!(f, "{}M", n >> 20),
            _ if n % (1 << 10) == 0 => write!(f, "{}K", n >> 10),
            _ => write!(f, "{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A socket file mode, written in octal (`660`, `0660`, `0o660`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl FromStr for SocketMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o777 => Ok(SocketMode(m)),
            _ => Err(format!("{s:?} is not an octal file mode such as 0660")),
        }
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Every setting of the daemon. `None` keeps the default (or the file's value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Socket path. Default: $GPUD_SOCKET, else $XDG_RUNTIME_DIR/gpud.sock,
    /// else gpud.sock in the temporary directory.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Permissions of the socket file, octal (e.g. 0660).
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<SocketMode>,
    /// Group owning the socket file: a name from /etc/group or a number.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// VRAM of the simulated device (default 16M).
    #[arg(long, value_name = "SIZE")]
    pub vram: Option<Size>,
    /// System memory the device may use (default 64M).
    #[arg(long, value_name = "SIZE")]
    pub system_memory: Option<Size>,
    /// DMA pool to allocate (gpud pcid, settings file only; default 64M).
    #[arg(skip)]
    pub dma_pool: Option<Size>,
    /// Per-process limit: bytes of BOs in VRAM (default: half the device's VRAM).
    #[arg(long, value_name = "SIZE", help_heading = "Per-client limits")]
    pub limit_vram: Option<Size>,
    /// Per-process limit: bytes of BOs in system memory (default: half the device's).
    #[arg(long, value_name = "SIZE", help_heading = "Per-client limits")]
    pub limit_system: Option<Size>,
    /// Per-client limit: CPU mappings of BOs at once (default 4096).
    #[arg(long, value_name = "N", help_heading = "Per-client limits")]
    pub limit_mappings: Option<u64>,
    /// Per-client limit: GPU VA mappings across its VMs (default 65536).
    #[arg(long, value_name = "N", help_heading = "Per-client limits")]
    pub limit_gpu_mappings: Option<u64>,
    /// Per-client limit: binds and jobs in flight (default 1024).
    #[arg(long, value_name = "N", help_heading = "Per-client limits")]
    pub limit_in_flight: Option<u64>,
    /// Per-client limit: VMs + BOs + queues + syncobjs (default 65536).
    #[arg(long, value_name = "N", help_heading = "Per-client limits")]
    pub limit_objects: Option<u64>,
    /// Per-client limit: derived handles (dup) open at once (default 1024).
    #[arg(long, value_name = "N", help_heading = "Per-client limits")]
    pub limit_handles: Option<u64>,
    /// Device handles one process may hold at once (default 64).
    #[arg(long, value_name = "N", help_heading = "Per-client limits")]
    pub limit_devices_per_process: Option<u64>,
    /// Per-client limit: timeline points its syncobjs keep alive (default 65536).
    #[arg(long, value_name = "N", help_heading = "Per-client limits")]
    pub limit_timeline_points: Option<u64>,
    /// Log filter when neither --log-level nor RUST_LOG is given (settings file only).
    #[arg(skip)]
    pub log_level: Option<String>,
}

/// Picks `cli` where it is set, else `file`.
fn pick<T: Clone>(cli: &Option<T>, file: &Option<T>) -> Option<T> {
    cli.clone().or_else(|| file.clone())
}

impl Settings {
    /// Reads a settings file.
    pub fn load(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("settings file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("settings file {}: {e}", path.display()))
    }

    /// These settings with every key that `self` leaves unset taken from `file`.
    pub fn over(&self, file: &Settings) -> Settings {
        Settings {
            socket: pick(&self.socket, &file.socket),
            socket_mode: pick(&self.socket_mode, &file.socket_mode),
            socket_group: pick(&self.socket_group, &file.socket_group),
            vram: pick(&self.vram, &file.vram),
            system_memory: pick(&self.system_memory, &file.system_memory),
            dma_pool: pick(&self.dma_pool, &file.dma_pool),
            limit_vram: pick(&self.limit_vram, &file.limit_vram),
            limit_system: pick(&self.limit_system, &file.limit_system),
            limit_mappings: pick(&self.limit_mappings, &file.limit_mappings),
            limit_gpu_mappings: pick(&self.limit_gpu_mappings, &file.limit_gpu_mappings),
            limit_in_flight: pick(&self.limit_in_flight, &file.limit_in_flight),
            limit_objects: pick(&self.limit_objects, &file.limit_objects),
            limit_handles: pick(&self.limit_handles, &file.limit_handles),
            limit_devices_per_process: pick(
                &self.limit_devices_per_process,
                &file.limit_devices_per_process,
            ),
            limit_timeline_points: pick(&self.limit_timeline_points, &file.limit_timeline_points),
            log_level: pick(&self.log_level, &file.log_level),
        }
    }

    /// `base` with the limits these settings name.
    pub fn limits(&self, base: Limits) -> Limits {
        let size = |s: Option<Size>, d: u64| s.map_or(d, |s| s.0);
        Limits {
            vram_bytes: size(self.limit_vram, base.vram_bytes),
            system_bytes: size(self.limit_system, base.system_bytes),
            mappings: self.limit_mappings.unwrap_or(base.mappings),
            gpu_mappings: self.limit_gpu_mappings.unwrap_or(base.gpu_mappings),
            in_flight: self.limit_in_flight.unwrap_or(base.in_flight),
            objects: self.limit_objects.unwrap_or(base.objects),
            handles: self.limit_handles.unwrap_or(base.handles),
            devices_per_process: self
                .limit_devices_per_process
                .unwrap_or(base.devices_per_process),
            timeline_points: self.limit_timeline_points.unwrap_or(base.timeline_points),
        }
    }

    /// The configuration of `gpud serve` (Linux: the host transport).
    #[cfg(target_os = "linux")]
    pub fn host_config(&self) -> Result<HostConfig, String> {
        let mut cfg = HostConfig::new(self.socket.clone());
        if let Some(v) = self.vram {
            cfg.device.vram_size = v.0;
        }
        if let Some(s) = self.system_memory {
            cfg.device.sys_size = s.0;
        }
        cfg.limits = self.limits(fair_share(
            cfg.limits,
            cfg.device.vram_size,
            cfg.device.sys_size,
        ));
        if let Some(m) = self.socket_mode {
            cfg.socket_mode = Some(m.0);
        }
        cfg.socket_group = match &self.socket_group {
            None => None,
            Some(g) => Some(resolve_group(g, Path::new("/etc/group"))?),
        };
        Ok(cfg)
    }

    /// The configuration of `gpud pcid` (the socket keys do not apply to a scheme).
    pub fn pcid_config(&self) -> PcidConfig {
        let mut cfg = PcidConfig::default();
        if let Some(p) = self.dma_pool {
            cfg.dma_pool = p.0;
            cfg.dma_pool_min = cfg.dma_pool_min.min(p.0);
        }
        cfg.limits = self.limits(cfg.limits);
        cfg
    }
}

/// `base` with the memory limits a fair share of a device with `vram` and `system` bytes: a
/// process may hold half of each pool (across its device handles), so no one process can take
/// all of it. The other limits count objects, not device memory, and keep their defaults.
pub fn fair_share(base: Limits, vram: u64, system: u64) -> Limits {
    Limits {
        vram_bytes: base.vram_bytes.min(vram / 2),
        system_bytes: base.system_bytes.min(system / 2),
        ..base
    }
}

/// The group id `group` names: a number, or a name looked up in `group_file`.
pub fn resolve_group(group: &str, group_file: &Path) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string(group_file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("no group {group:?} in {}", group_file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_reject_junk() {
        assert_eq!("4096".parse(), Ok(Size(4096)));
        assert_eq!("64K".parse(), Ok(Size(64 << 10)));
        assert_eq!("16M".parse(), Ok(Size(16 << 20)));
        assert_eq!("16MiB".parse(), Ok(Size(16 << 20)));
        assert_eq!("1g".parse(), Ok(Size(1 << 30)));
        for bad in ["", "M", "12X", "-1", "1.5G", "99999999999T"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
        assert_eq!(Size(16 << 20).to_string(), "16M");
        assert_eq!(Size(4097).to_string(), "4097");
    }

    #[test]
    fn socket_modes_are_octal() {
        assert_eq!("0660".parse(), Ok(SocketMode(0o660)));
        assert_eq!("0o600".parse(), Ok(SocketMode(0o600)));
        assert!("0999".parse::<SocketMode>().is_err());
        assert!("1777".parse::<SocketMode>().is_err());
    }

    #[test]
    fn file_keys_are_the_long_options_and_the_command_line_wins() {
        let file: Settings = toml::from_str(
            "vram = \"32M\"\nsystem-memory = 134217728\nlimit-in-flight = 8\n\
             limit-vram = \"1M\"\nsocket-mode = \"0600\"\nlog-level = \"debug\"\n",
        )
        .expect("parses");
        assert_eq!(file.vram, Some(Size(32 << 20)));
        assert_eq!(file.system_memory, Some(Size(128 << 20)));
        let cli = Settings {
            limit_in_flight: Some(4),
            ..Settings::default()
        };
        let s = cli.over(&file);
        assert_eq!(s.limit_in_flight, Some(4));
        assert_eq!(s.log_level.as_deref(), Some("debug"));
        let cfg = s.host_config().expect("config");
        assert_eq!(cfg.device.vram_size, 32 << 20);
        assert_eq!(cfg.device.sys_size, 128 << 20);
        assert_eq!(cfg.limits.in_flight, 4);
        assert_eq!(cfg.limits.vram_bytes, 1 << 20);
        assert_eq!(cfg.limits.objects, Limits::default().objects);
        assert_eq!(cfg.socket_mode, Some(0o600));
        let pcid = s.pcid_config();
        assert_eq!(pcid.limits.in_flight, 4);
    }

    #[test]
    fn memory_limits_default_to_half_of_each_pool_unless_set() {
        let cfg = Settings::default().host_config().expect("config");
        assert_eq!(cfg.limits.vram_bytes, cfg.device.vram_size / 2);
        assert_eq!(cfg.limits.system_bytes, cfg.device.sys_size / 2);
        let set = Settings {
            limit_vram: Some(Size(64 << 20)),
            ..Settings::default()
        };
        assert_eq!(set.host_config().unwrap().limits.vram_bytes, 64 << 20);
    }

    #[test]
    fn the_socket_is_group_connectable_by_default() {
        let cfg = Settings::default().host_config().expect("config");
        assert_eq!(cfg.socket_mode, Some(0o660));
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let err = toml::from_str::<Settings>("limit-inflight = 8\n").unwrap_err();
        assert!(err.to_string().contains("limit-inflight"), "{err}");
    }

    #[test]
    fn groups_resolve_by_number_or_name() {
        let dir = std::env::temp_dir().join(format!("gpud-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("group");
        std::fs::write(&file, "root:x:0:\nvideo:x:44:alice\n").expect("write");
        assert_eq!(resolve_group("44", &file), Ok(44));
        assert_eq!(resolve_group("video", &file), Ok(44));
        assert!(resolve_group("render", &file).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
