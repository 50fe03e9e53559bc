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

/// `systemd-analyze verify` accepts the cluster's units (checked as instances, `node-1` and
/// `nats-1`, with the binaries pointed at an existing executable), and the gateway unit waits
/// for a drain: its stop timeout is above the drain timeout it sets.
#[test]
fn the_cluster_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("SKIPPED: systemd-analyze is not installed on this machine");
        return;
    }
    let gateway = std::fs::read_to_string(deploy("cluster/systemd/ism-gateway@.service")).unwrap();
    let nats = std::fs::read_to_string(deploy("cluster/systemd/nats-server@.service")).unwrap();
    let seconds = |unit: &str, key: &str| -> u64 {
        let line = unit.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key}"));
        line[key.len()..].parse().unwrap()
    };
    let drain = seconds(&gateway, "Environment=ISM_DRAIN_TIMEOUT=");
    assert!(seconds(&gateway, "TimeoutStopSec=") >= drain + 5, "stop timeout below drain + 5 s");

    let dir = tempfile::tempdir().unwrap();
    let units = [
        ("ism-gateway@node-1.service", gateway, "/opt/ism/bin/ism-gateway "),
        ("nats-server@nats-1.service", nats, "/usr/local/bin/nats-server "),
    ];
    for (name, unit, binary) in units {
        assert!(unit.contains(&format!("ExecStart={binary}")), "{name} must run {binary}");
        let path = dir.path().join(name);
        std::fs::write(&path, unit.replace(binary.trim_end(), "/bin/true")).unwrap();
        let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "{name}: {stderr}");
    }
}

/// The cluster's NATS configuration is valid with the values its unit sets (the production
/// ones) and the secrets nats.env gives, the store directory moved to a temporary one.
#[test]
fn the_cluster_nats_configuration_is_valid() {
    let unit = std::fs::read_to_string(deploy("cluster/systemd/nats-server@.service")).unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut nats = Command::new(ism_tests::nats::nats_server_bin());
    for line in unit.lines().filter_map(|l| l.strip_prefix("Environment=")) {
        let (name, value) = line.trim_matches('"').split_once('=').unwrap();
        nats.env(name, value.replace("%i", "nats-1"));
    }
    nats.env("ISM_NATS_STORE_DIR", store.path());
    // nats.env's secrets, as nats.env.example names them.
    let example = std::fs::read_to_string(deploy("cluster/systemd/nats.env.example")).unwrap();
    for name in ["ISM_NATS_PASSWORD", "ISM_NATS_ROUTE_PASSWORD", "ISM_NATS_ROUTES"] {
        assert!(example.contains(&format!("\n{name}=")), "nats.env.example sets {name}");
    }
    nats.env("ISM_NATS_PASSWORD", "0123456789abcdef")
        .env("ISM_NATS_ROUTE_PASSWORD", "fedcba9876543210");
    let routes = (1..=3).map(|n| format!("nats://ism-route:fedcba9876543210@nats-{n}:6222"));
    nats.env("ISM_NATS_ROUTES", format!("[{}]", routes.collect::<Vec<_>>().join(", ")));
    let out = nats.arg("-c").arg(deploy("cluster/nats/nats.conf")).arg("-t").output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("is valid"), "{text}");
}

/// `haproxy -c` accepts the cluster's HAProxy configuration with no warning, as production runs
/// it (its defaults) and as local.sh does; the node hosts are loopback, so nothing is resolved.
#[test]
fn the_cluster_haproxy_configuration_is_valid() {
    let haproxy = ["haproxy", "/usr/sbin/haproxy"]
        .into_iter()
        .find(|bin| Command::new(bin).arg("-v").output().is_ok_and(|o| o.status.success()));
    let Some(haproxy) = haproxy else {
        println!("SKIPPED: haproxy is not installed on this machine");
        return;
    };
    for local in [false, true] {
        let mut check = Command::new(haproxy);
        for n in 1..=3 {
            check.env(format!("ISM_NODE_{n}"), "127.0.0.1");
            if local {
                for (i, port) in ["ENDPOINT", "SOCKS", "HTTP_PROXY", "API"].iter().enumerate() {
                    check.env(
                        format!("ISM_NODE_{n}_{port}_PORT"),
                        (20000 + n * 100 + i).to_string(),
                    );
                }
            }
        }
        if local {
            check.env("ISM_LB_LOCAL", "1").env("ISM_LB_MAXCONN", "4096");
        }
        let out = check.arg("-c").arg("-f").arg(deploy("cluster/haproxy.cfg")).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success()
                && text.contains("Configuration file is valid")
                && !text.contains("WARNING")
                && !text.contains("ALERT"),
            "local: {local}\n{text}"
        );
    }
}
