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
    start_with(data, &[])
}

/// [`start`] with these environment variables added.
fn start_with(data: &Path, env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ism-gateway"))
        .envs(env.iter().copied())
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

/// The environment the running process `pid` was started with (after any restart of its own), as
/// one string: glibc rewrites `GLIBC_TUNABLES` in place while it reads it, so the entries are
/// not whole there.
fn environment_of(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).into_owned()
}

/// On an AMD CPU with FSRM the node runs with glibc's vector copies (`ism_glibc::copies`): it
/// starts itself again, the same process, with the tunable added to what was there; elsewhere it
/// runs as started.
#[test]
fn on_an_amd_cpu_the_node_copies_with_glibcs_vector_loop() {
    let data = tempfile::tempdir().unwrap();
    let (child, lines) = start_with(data.path(), &[("GLIBC_TUNABLES", "glibc.malloc.check=0")]);
    let up = lines.recv_timeout(LIMIT).expect("a first line within the limit");
    assert!(up.contains("is up"), "{up}");
    let env = environment_of(child.id());
    assert!(env.contains("GLIBC_TUNABLES=glibc.malloc.check=0"), "{env:?}");
    let restarted = env.contains(&format!("ISM_VECTOR_COPIES_RESTARTED={}\0", child.id()))
        && env.contains("glibc.cpu.x86_rep_movsb_threshold=4194304");
    assert_eq!(restarted, ism_glibc::copies::affected_cpu(), "{env:?}");
    // Restarted or not, it has its name and its arguments.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap();
    assert_eq!(comm.trim_end(), "ism-gateway");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert!(args.iter().any(|a| *a == data.path().as_os_str().as_encoded_bytes()), "{args:?}");
    // The restarted process is the one started: signals reach it and it stops as it should.
    stop(child, &lines, "-TERM");
}

/// An operator's own threshold is kept, and the node does not start itself again (on a CPU that
/// never restarts, this holds trivially).
#[test]
fn an_operators_copy_threshold_is_kept() {
    let data = tempfile::tempdir().unwrap();
    let theirs = "glibc.cpu.x86_rep_movsb_threshold=8192";
    let (child, lines) = start_with(data.path(), &[("GLIBC_TUNABLES", theirs)]);
    let up = lines.recv_timeout(LIMIT).expect("a first line within the limit");
    assert!(up.contains("is up"), "{up}");
    let env = environment_of(child.id());
    assert!(env.contains(theirs), "{env:?}");
    assert!(!env.contains("4194304"), "{env:?}");
    assert!(!env.contains("ISM_VECTOR_COPIES_RESTARTED"), "{env:?}");
    stop(child, &lines, "-TERM");
}
