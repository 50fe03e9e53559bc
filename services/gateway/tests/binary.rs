//! The `ism-gateway` binary as systemd runs it: it comes up, and SIGTERM (systemd's stop) or
//! SIGINT (Ctrl-C) stops it gracefully, sessions closed and facts recorded, with exit status 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stops_gracefully_on(signal: &str) {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ism-gateway"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--endpoint-listen", "127.0.0.1:0", "--socks-listen", "127.0.0.1:0", "--http-proxy-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let up = lines.next().expect("a first line").unwrap();
    assert!(up.contains("is up"), "{up}");
    assert!(Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap().success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(rest.iter().any(|l| l == "shutting down"), "no graceful stop on {signal}: {rest:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 20 s after {signal}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit after {signal}: {status}");
}

#[test]
fn sigterm_stops_the_node_gracefully() {
    stops_gracefully_on("-TERM");
}

#[test]
fn sigint_stops_the_node_gracefully() {
    stops_gracefully_on("-INT");
}
