//! The `ism-gateway` binary as systemd runs it: it comes up saying where everything is, keeps its
//! data to its owner, and SIGTERM (systemd's stop) or SIGINT (Ctrl-C) stops it gracefully,
//! sessions closed and facts recorded, with exit status 0.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the node may take to come up, and to stop after the signal.
const LIMIT: Duration = Duration::from_secs(60);

/// Starts the binary on `data`; its standard output, line by line.
fn start(data: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ism-gateway"))
        .arg("--data-dir")
        .arg(data)
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
    (child, lines)
}

/// Sends `signal` and collects the rest of the output; the node must exit cleanly in time.
fn stop(mut child: Child, lines: &mpsc::Receiver<String>, signal: &str) -> Vec<String> {
    assert!(Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut rest = Vec::new();
    loop {
        match lines.recv_timeout(LIMIT) {
            Ok(line) => rest.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("still running {LIMIT:?} after {signal}: {rest:?}");
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after {signal}: {status}");
    rest
}

fn stops_gracefully_on(signal: &str) {
    let data = tempfile::tempdir().unwrap();
    let (child, lines) = start(data.path());
    let up = lines.recv_timeout(LIMIT).expect("a first line within the limit");
    assert!(up.contains("is up"), "{up}");
    let rest = stop(child, &lines, signal);
    assert!(rest.iter().any(|l| l == "shutting down"), "no graceful stop on {signal}: {rest:?}");
}

#[test]
fn sigterm_stops_the_node_gracefully() {
    stops_gracefully_on("-TERM");
}

#[test]
fn sigint_stops_the_node_gracefully() {
    stops_gracefully_on("-INT");
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every directory and file below `dir`, with its mode.
fn modes_below(dir: &Path, out: &mut Vec<(String, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push((path.display().to_string(), mode(&path)));
        if path.is_dir() {
            modes_below(&path, out);
        }
    }
}

#[test]
fn the_node_says_where_its_admin_token_is_and_keeps_its_data_to_its_owner() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let (child, lines) = start(&data);
    let up = lines.recv_timeout(LIMIT).expect("a first line within the limit");
    assert!(up.contains("is up"), "{up}");
    assert_eq!(mode(&data), 0o700, "the node created its data directory");
    for store in ["events", "projections"] {
        let mut below = vec![(store.to_string(), mode(&data.join(store)))];
        modes_below(&data.join(store), &mut below);
        for (path, mode) in below {
            let wanted = if data.join(&path).is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, wanted, "{path}: {mode:o}");
        }
    }
    let said = stop(child, &lines, "-TERM");
    let token_file = data.join("admin-token").display().to_string();
    assert!(said.iter().any(|l| l.contains("admin token") && l.contains(&token_file)), "{said:?}");
}
