//! `gpud demo` end to end: the single-process hardware walk-through, then the multi-process
//! part (daemon in the demo process, client processes over the scheme).

use std::process::Command;

#[test]
fn demo_runs_both_parts_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_gpud"))
        .arg("demo")
        .output()
        .expect("gpud runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "[5] verified",
        "[mp 2]",
        "timeline at 8",
        "holds 0xb0b0cafe",
        "gpud demo: ok",
    ] {
        assert!(text.contains(step), "{step} missing in\n{text}");
    }
}
