//! Shared by the C tests: where things are, and compiling C with the system compiler.

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

/// The headers (`gpu.h`, `libgpu.h`).
pub fn include_dir() -> PathBuf {
    root().join("capi/include")
}

/// The directory this test binary's profile writes `libgpu.so` / `libgpu.a` to. Building the
/// tests does not link the crate's `cdylib`/`staticlib` (a fresh checkout has none), so the
/// library is built here when it is missing.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/<profile>/deps/<this test>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile dir")
        .to_path_buf();
    if !dir.join("libgpu.so").exists() || !dir.join("libgpu.a").exists() {
        let target = dir.parent().expect("target dir");
        run(Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .current_dir(root())
            .args(["build", "-p", "gpu-capi", "--target-dir"])
            .arg(target));
    }
    dir
}

/// A fresh scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpu-capi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The system C compiler (`$CC`, else `cc`).
pub fn cc() -> Command {
    Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
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
