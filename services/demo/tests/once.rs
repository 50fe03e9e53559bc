//! README command 1 in CI: `ism-demo --once` does the whole path and exits 0.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::process::Command;

#[test]
fn the_demo_runs_the_whole_path_and_exits_zero() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_ism-demo")).arg("--once").output().expect("run ism-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ism-demo --once failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "[7/7] scanned",
        "HTTP/1.1 200 OK",
        "missing security header",
        "was refused: connection not allowed by ruleset",
        "demo complete",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
}
