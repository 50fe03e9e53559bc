//! README command 1 in CI: `ism-demo --once` does the whole path and exits 0.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::process::Command;

#[test]
fn the_demo_runs_the_whole_path_and_exits_zero() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ism-demo"))
        .arg("--once")
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("run ism-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ism-demo --once failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "[7/8] an external scanner fetched",
        "HTTP/1.1 200 OK",
        "[8/8] scan",
        "[high] Password sent over plain http",
        "Self-signed TLS certificate",
        "was refused: connection not allowed by ruleset",
        "demo complete",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    let sarif: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path().join("scan-report.sarif")).unwrap())
            .unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert!(!sarif["runs"][0]["results"].as_array().unwrap().is_empty());
}
