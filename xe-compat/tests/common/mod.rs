//! Shared by the C tests: where the library and the headers are, compiling C against the
//! system's `drm/xe_drm.h` and libdrm.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `libgpu_xe_compat.so`, built now: building the tests does not link the crate's `cdylib`, and
/// a library left from an earlier build could be stale.
pub fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/<profile>/deps/<this test>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile dir")
        .to_path_buf();
    let target = dir.parent().expect("target dir");
    run(Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .current_dir(root())
        .args(["build", "-p", "gpu-xe-compat", "--target-dir"])
        .arg(target));
    dir.join("libgpu_xe_compat.so")
}

/// The directory holding `drm/xe_drm.h`: `$XE_UAPI_INCLUDE`, else the system's include
/// directory when it has the header (Debian trixie and later), else `/opt/linux-uapi/include`
/// where `.ci/run` extracts Linux's uAPI headers. A missing header fails the test (it is
/// never skipped): run `.ci/run`'s header step.
pub fn xe_include_dir() -> PathBuf {
    let candidates = std::env::var_os("XE_UAPI_INCLUDE")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from("/usr/include"),
            PathBuf::from("/opt/linux-uapi/include"),
        ]);
    let mut tried = Vec::new();
    for dir in candidates {
        if dir.join("drm/xe_drm.h").is_file() {
            return dir;
        }
        tried.push(dir);
    }
    panic!(
        "drm/xe_drm.h not found in {tried:?}: install Linux's uAPI headers as .ci/run does \
         (bookworm-backports' linux-libc-dev extracted into /opt/linux-uapi/include), or set \
         XE_UAPI_INCLUDE"
    );
}

/// A fresh scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpu-xe-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Compiles `source` (under `xe-compat/tests/c/`) against `xe_drm.h` and libdrm into `out`.
pub fn compile(source: &str, out: &Path) {
    let libdrm = run(Command::new("pkg-config").args(["--cflags", "--libs", "libdrm"]));
    run(
        Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
            .args(["-std=gnu11", "-Wall", "-Werror", "-O1", "-o"])
            .arg(out)
            // First, so that xe_drm.h's `#include "drm.h"` and libdrm's <drm.h> agree on the
            // kernel's newer drm.h.
            .arg("-I")
            .arg(xe_include_dir())
            .arg(root().join("xe-compat/tests/c").join(source))
            .args(libdrm.split_whitespace()),
    );
}

/// Runs `cmd`, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
