//! The `ism-gateway` binary as systemd runs it: it comes up, and SIGTERM (systemd's stop) or
//! SIGINT (Ctrl-C) stops it gracefully, sessions closed and facts recorded, with exit status 0.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the node may take to come up, and to stop after the signal.
const LIMIT: Duration = Duration::from_secs(20);

fn stops_gracefully_on(signal: &str) {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ism-gateway"))
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--endpoint-listen",
            "127.0.0.1:0",
            "--socks-listen",
            "127.0.0.1:0",
            "--http-proxy-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Standard output is read on its own thread, so that a node that hangs fails the test at the
    // limit instead of blocking it; the channel ends when the node closes its output (exits).
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).try_for_each(|l| tx.send(l))
    });
    let next = || lines.recv_timeout(LIMIT);
    let up = next().expect("a first line within the limit");
    assert!(up.contains("is up"), "{up}");
    assert!(Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut rest = Vec::new();
    loop {
        match next() {
            Ok(line) => rest.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("still running {LIMIT:?} after {signal}: {rest:?}");
            }
        }
    }
    assert!(rest.iter().any(|l| l == "shutting down"), "no graceful stop on {signal}: {rest:?}");
    let status = child.wait().unwrap();
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
