//! The files in `deploy/` are checked by the tools that will read them.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::path::PathBuf;
use std::process::Command;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

/// `systemd-analyze verify` accepts the gateway unit with no warnings. The binary path is pointed
/// at an existing executable first, since verify checks that `ExecStart` exists on this machine.
#[test]
fn the_gateway_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("SKIPPED: systemd-analyze is not installed on this machine");
        return;
    }
    let unit = std::fs::read_to_string(deploy("systemd/ism-gateway.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/ism/bin/ism-gateway "),
        "the unit must run the installed binary"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ism-gateway.service");
    std::fs::write(&path, unit.replace("/opt/ism/bin/ism-gateway", "/bin/true")).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn the_nats_configuration_is_valid() {
    let out = Command::new(ism_tests::nats::nats_server_bin())
        .arg("-c")
        .arg(deploy("nats/jetstream.conf"))
        .arg("-t")
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("is valid"), "{text}");
}
