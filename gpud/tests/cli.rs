//! gpud's command line: help and version on stdout with exit 0, usage errors on stderr with
//! exit 2, and `gpud serve` options (and the settings file) reaching the running daemon.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn gpud() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpud"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpud-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn help_and_version_go_to_stdout_and_exit_zero() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["serve", "--help"],
        &["help", "serve"],
        &["pcid", "-h"],
    ] {
        let out = gpud().args(args).output().expect("gpud runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(text.contains("Usage: gpud"), "{args:?}: {text}");
    }
    let serve = gpud().args(["serve", "--help"]).output().expect("runs");
    let text = String::from_utf8_lossy(&serve.stdout);
    for opt in [
        "--socket <PATH>",
        "--socket-mode",
        "--socket-group",
        "--vram <SIZE>",
        "--system-memory",
        "--limit-in-flight",
        "--config <PATH>",
        "--log-level",
    ] {
        assert!(text.contains(opt), "{opt} missing in\n{text}");
    }
    let out = gpud().arg("--version").output().expect("runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("gpud {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_two_on_stderr() {
    for args in [
        &[][..],
        &["serve", "--bogus"],
        &["serve", "--vram", "lots"],
        &["serve", "--socket-mode", "999"],
        &["frobnicate"],
    ] {
        let out = gpud().args(args).output().expect("gpud runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

/// A `gpud serve` child; killed on drop.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `gpud serve` with `args` and waits until its socket answers.
fn serve(socket: &Path, args: &[&str]) -> Served {
    let child = gpud()
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .arg("--until-stdin-eof")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gpud serve starts");
    let served = Served(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while libgpu::Device::open_at(socket).is_err() {
        assert!(Instant::now() < deadline, "gpud serve never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    served
}

#[test]
fn serve_options_and_the_settings_file_reach_the_daemon() {
    let dir = scratch("serve");
    let socket = dir.join("gpud.sock");
    let config = dir.join("gpud.toml");
    std::fs::write(
        &config,
        "vram = \"32M\"\nsystem-memory = \"48M\"\nlimit-in-flight = 99\nlimit-objects = 500\n",
    )
    .expect("write settings");
    let cfg = config.to_str().expect("utf-8 path");
    let _d = serve(
        &socket,
        &[
            "--config",
            cfg,
            "--limit-in-flight",
            "7",
            "--socket-mode",
            "0600",
        ],
    );
    let info = libgpu::Device::open_at(&socket)
        .expect("open")
        .query()
        .expect("query");
    assert_eq!(info.vram_size, 32 << 20, "from the file");
    assert_eq!(info.sys_size, 48 << 20, "from the file");
    assert_eq!(info.max_objects, 500, "from the file");
    assert_eq!(info.max_in_flight, 7, "the command line wins");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_bad_settings_file_is_refused_with_its_name() {
    let dir = scratch("badfile");
    let config = dir.join("gpud.toml");
    std::fs::write(&config, "limit-inflight = 3\n").expect("write");
    let out = gpud()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gpud.toml") && err.contains("limit-inflight"),
        "{err}"
    );
}

#[test]
fn serve_logs_its_startup() {
    let dir = scratch("log");
    let socket = dir.join("gpud.sock");
    let mut d = serve(&socket, &["--log-level", "info"]);
    // Close stdin: the daemon stops and its stderr ends.
    drop(d.0.stdin.take());
    let err = d.0.stderr.take().expect("stderr");
    let lines: Vec<String> = BufReader::new(err).lines().map_while(Result::ok).collect();
    let text = lines.join("\n");
    assert!(text.contains("serving the gpu scheme"), "{text}");
    assert!(text.contains(&socket.display().to_string()), "{text}");
}
