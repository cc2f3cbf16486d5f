//! The C example (`examples/c/demo.c`) built the usual way — `pkg-config --cflags --libs
//! libgpu` with the `libgpu.pc` this crate ships, against `libgpu.so` — and run against a
//! live daemon (gpud's host platform, as `gpud serve` runs it). The demo checks the GPU's
//! writes itself and exits non-zero on any failure.

mod common;

use common::{cc, include_dir, lib_dir, root, run, scratch};
use gpud::platform::host::{HostConfig, HostDaemon};
use std::process::Command;
use std::sync::atomic::Ordering;

/// `libgpu.pc` with the build's directories for prefix, libdir and includedir.
fn pc_file(dir: &std::path::Path) -> std::path::PathBuf {
    let template = std::fs::read_to_string(root().join("capi/libgpu.pc.in")).expect("libgpu.pc.in");
    let text = template
        .replace("@PREFIX@", &dir.display().to_string())
        .replace("@LIBDIR@", &lib_dir().display().to_string())
        .replace("@INCLUDEDIR@", &include_dir().display().to_string())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    let pc_dir = dir.join("pkgconfig");
    std::fs::create_dir_all(&pc_dir).expect("pkgconfig dir");
    std::fs::write(pc_dir.join("libgpu.pc"), text).expect("write libgpu.pc");
    pc_dir
}

#[test]
fn the_c_demo_builds_with_pkg_config_and_runs_against_a_live_daemon() {
    let dir = scratch("demo");
    let pc_dir = pc_file(&dir);
    let flags = run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "libgpu"])
        .env("PKG_CONFIG_PATH", &pc_dir));
    let exe = dir.join("demo");
    run(cc()
        .args(["-std=c11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(root().join("examples/c/demo.c"))
        .args(flags.split_whitespace()));

    let socket = dir.join("gpud.sock");
    let mut cfg = HostConfig::new(Some(socket.clone()));
    cfg.device.vram_size = 16 << 20;
    cfg.device.sys_size = 64 << 20;
    let mut daemon = HostDaemon::start(cfg).expect("daemon starts");
    let stop = daemon.stopper();
    let served = std::thread::spawn(move || daemon.serve());

    let out = Command::new(&exe)
        .arg(&socket)
        .env("LD_LIBRARY_PATH", lib_dir())
        .output()
        .expect("the demo runs");
    stop.store(true, Ordering::Release);
    let _ = served.join();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "[c 2] 4 async binds pipelined with 4 execs",
        "timeline at 8; user fence 0x5eed; GPU wrote 0x1000..0x1003",
        "the external BO holds 0xb0b0cafe",
        "destroying an unknown VM: -2",
        "gpu C demo: ok",
    ] {
        assert!(text.contains(step), "{step:?} missing in\n{text}");
    }
}

#[test]
fn no_daemon_is_a_negative_errno_naming_the_next_step() {
    // The library's own error path, called from Rust through the C ABI.
    let dir = scratch("absent");
    let path = std::ffi::CString::new(dir.join("none.sock").display().to_string()).expect("path");
    let mut dev = std::ptr::null_mut();
    // SAFETY: a NUL-terminated path and a writable out pointer.
    let err = unsafe { gpu::gpu_device_open(path.as_ptr(), &mut dev) };
    assert!(err < 0, "{err}");
    assert!(dev.is_null());
    // SAFETY: gpu_strerror returns a static NUL-terminated string.
    let msg = unsafe { std::ffi::CStr::from_ptr(gpu::gpu_strerror(err)) };
    assert!(msg.to_string_lossy().contains("gpud serve"), "{msg:?}");
}
