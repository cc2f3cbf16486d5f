//! Xe programs of our own (`tests/c/*.c`, built against the system's `drm/xe_drm.h` and
//! libdrm) run unmodified against a live daemon (gpud's host platform, as `gpud serve` runs
//! it) with `LD_PRELOAD=libgpu_xe_compat.so`. Each program checks every answer itself and
//! prints one `ok - ` / `FAIL - ` line per check; this test fails on any FAIL, on a non-zero
//! exit, and on a check that did not run.

mod common;

use common::{compile, library, scratch};
use gpud::platform::host::{HostConfig, HostDaemon};
use std::process::Command;
use std::sync::atomic::Ordering;

/// Runs the program built from `source` against a fresh daemon; returns its stdout.
fn run_against_daemon(source: &str) -> String {
    let lib = library();
    let dir = scratch(source.trim_end_matches(".c"));
    let exe = dir.join("prog");
    compile(source, &exe);

    let socket = dir.join("gpud.sock");
    let mut cfg = HostConfig::new(Some(socket.clone()));
    cfg.device.vram_size = 16 << 20;
    cfg.device.sys_size = 64 << 20;
    let mut daemon = HostDaemon::start(cfg).expect("daemon starts");
    let stop = daemon.stopper();
    let served = std::thread::spawn(move || daemon.serve());

    let out = Command::new(&exe)
        .env("GPUD_SOCKET", &socket)
        .env("LD_PRELOAD", &lib)
        .output()
        .expect("the program runs");
    stop.store(true, Ordering::Release);
    let _ = served.join();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "{source} failed ({}):\n{}\n--- full output:\n{text}{}",
        out.status,
        failed.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn assert_ran(text: &str, checks: &[&str]) {
    for check in checks {
        let line = format!("ok - {check}");
        assert!(
            text.lines().any(|l| l == line),
            "{check:?} did not pass in\n{text}"
        );
    }
}

#[test]
fn an_xe_program_runs_unmodified_through_the_library() {
    let text = run_against_daemon("xe_basic.c");
    assert_ran(
        &text,
        &[
            "stat card0 is char 226:0",
            "readlink /proc/self/fd/N",
            "DRM_IOCTL_VERSION names xe",
            "query config",
            "query engines lists a copy engine",
            "query mem regions",
            "a second mapping sees the first one's writes",
            "array bind of 3 ops",
            "async unmap signals a syncobj",
            "bind userptr of malloc'd memory",
            "exec MI_STORE_DWORD_IMM signals a syncobj",
            "a spinner runs until the CPU ends it",
            "exec signals a timeline point",
            "exec writes userptr memory the CPU reads",
            "unsignalled wait times out with ETIME",
            "transfer binary to timeline point 3",
            "syncobj handle to fd and back",
            "the imported BO is the same memory",
            "bind reserved: EINVAL",
            "syncs at a bad pointer: EFAULT",
            "unknown driver ioctl: EINVAL",
        ],
    );
}
