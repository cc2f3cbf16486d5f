//! The daemon's log output: a `tracing` subscriber with `RUST_LOG`-style filtering.
//!
//! Owns: choosing the filter (`--log-level`, else `RUST_LOG`, else the settings file's
//! `log-level`, else `info`) and where lines go: stderr, plus on Redox the driver log file
//! under `/scheme/logging` where Redox's PCI drivers write theirs. Must not: decide what is
//! logged; call sites use `tracing` macros with the target of their module.
//!
//! Levels: `error` the daemon cannot continue; `warn` something a client or the device did
//! that an operator should see (a hang, a reset, a ban, a limit hit); `info` lifecycle
//! (startup, clients connecting and leaving); `debug` every error returned to a client;
//! `trace` per-request detail.

use std::path::Path;
use std::sync::Mutex;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// The filter used when nothing else names one.
pub const DEFAULT_FILTER: &str = "info";

/// Where Redox's PCI drivers keep their logs (`/scheme/logging/<category>/pci/<name>.log`).
pub const REDOX_LOG_FILE: &str = "/scheme/logging/graphics/pci/gpud.log";

/// The filter directives to use: the command line's, else `RUST_LOG`'s, else the settings
/// file's, else [`DEFAULT_FILTER`].
pub fn pick_filter(cli: Option<&str>, env: Option<&str>, file: Option<&str>) -> String {
    [cli, env, file]
        .into_iter()
        .flatten()
        .find(|s| !s.trim().is_empty())
        .unwrap_or(DEFAULT_FILTER)
        .to_string()
}

/// Parses filter directives (`info`, `gpud=debug,gpu_scheme=trace`, `warn,gpud::exec=debug`).
pub fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(directives).map_err(|e| {
        format!("log filter {directives:?}: {e} (levels: error, warn, info, debug, trace)")
    })
}

/// Installs the process-wide subscriber writing to stderr and, if given and openable, to
/// `file` as well (appended). A second call is a no-op (tests install their own).
pub fn init(directives: &str, file: Option<&Path>) -> Result<(), String> {
    let filter = parse_filter(directives)?;
    let opened = file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let res = match opened {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::io::stderr.and(Mutex::new(f)))
            .try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    // An already installed subscriber (a test harness) stays in charge.
    let _ = res;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_beats_rust_log_which_beats_the_file() {
        assert_eq!(
            pick_filter(Some("debug"), Some("warn"), Some("trace")),
            "debug"
        );
        assert_eq!(pick_filter(None, Some("warn"), Some("trace")), "warn");
        assert_eq!(pick_filter(None, None, Some("trace")), "trace");
        assert_eq!(pick_filter(None, None, None), DEFAULT_FILTER);
        assert_eq!(pick_filter(None, Some(""), None), DEFAULT_FILTER);
    }

    #[test]
    fn filters_are_checked() {
        assert!(parse_filter("gpud=debug,gpu_scheme=trace").is_ok());
        assert!(parse_filter("warn").is_ok());
        assert!(parse_filter("gpud=loud").is_err());
    }
}
