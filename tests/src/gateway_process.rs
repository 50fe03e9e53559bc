//! A gateway node as its own process (the `ism-gateway` binary), for what only a process shows:
//! `kill -9`, SIGTERM draining, nodes of a cluster that share nothing but the network.

use crate::cluster::PATIENCE;
use crate::gateway_cluster::ClusterFiles;
use ism_cli::ApiClient;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// Where one node listens: free ports below the ephemeral range (see `ports.rs`: a restart binds
/// them again), kept across its restarts (endpoints and scanners find it again where they knew
/// it).
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    pub endpoint_wss: SocketAddr,
    pub socks: SocketAddr,
    pub http_proxy: SocketAddr,
    pub api: SocketAddr,
    pub relay: SocketAddr,
}

impl NodePorts {
    /// Free loopback ports (the node says which it took).
    fn any() -> NodePorts {
        let any = || SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        NodePorts { endpoint_wss: any(), socks: any(), http_proxy: any(), api: any(), relay: any() }
    }

    /// The addresses a node printed when it came up.
    fn said(lines: &[String]) -> Option<NodePorts> {
        let after = |prefix: &str| -> Option<SocketAddr> {
            let line = lines.iter().find_map(|l| l.trim_start().strip_prefix(prefix))?;
            let address = line.trim().split(['/', ' ']).find(|w| w.contains(':'))?;
            address.parse().ok()
        };
        Some(NodePorts {
            endpoint_wss: after("endpoints connect to  wss://")?,
            socks: after("scanners connect to   socks5://")?,
            http_proxy: after("or   http://")?,
            api: after("management API        http://")?,
            relay: after("relay links")?,
        })
    }
}

/// One running node process.
pub struct NodeProcess {
    pub name: String,
    pub ports: NodePorts,
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Its data directory, and its log (`node.log` there: the tracing output).
    pub data: PathBuf,
}

impl NodeProcess {
    /// Starts `bin` as node `name` of the cluster whose shared files are `files`, on the NATS
    /// servers `event_log` (three replicas), with its data in `data`, on `ports` (any free ones
    /// when `None`); returns once it is up.
    pub fn start(
        bin: &Path,
        name: &str,
        ports: Option<NodePorts>,
        files: &ClusterFiles,
        event_log: &str,
        data: &Path,
    ) -> NodeProcess {
        Self::start_with_env(bin, name, ports, files, event_log, data, &[])
    }

    /// As [`start`](Self::start), with `env` set for the process (after, so over, the usual).
    pub fn start_with_env(
        bin: &Path,
        name: &str,
        ports: Option<NodePorts>,
        files: &ClusterFiles,
        event_log: &str,
        data: &Path,
        env: &[(&str, &str)],
    ) -> NodeProcess {
        std::fs::create_dir_all(data).unwrap();
        let asked = ports.unwrap_or_else(NodePorts::any);
        let log = std::fs::File::options().create(true).append(true).open(data.join("node.log"));
        let mut child = Command::new(bin)
            .env("ISM_JETSTREAM_REPLICAS", "3")
            .env("ISM_ADMIN_TOKEN", &files.admin_token)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .arg("--node-id")
            .arg(name)
            .arg("--data-dir")
            .arg(data)
            .arg("--event-log")
            .arg(event_log)
            .arg("--endpoint-listen")
            .arg(asked.endpoint_wss.to_string())
            .arg("--socks-listen")
            .arg(asked.socks.to_string())
            .arg("--http-proxy-listen")
            .arg(asked.http_proxy.to_string())
            .arg("--api-listen")
            .arg(asked.api.to_string())
            .arg("--relay-listen")
            .arg(asked.relay.to_string())
            .arg("--cluster-tls-dir")
            .arg(files.path("cluster"))
            .arg("--key-secret-file")
            .arg(files.path("key-secret"))
            .arg("--tls-cert")
            .arg(files.path("public/cert.pem"))
            .arg("--tls-key")
            .arg(files.path("public/key.pem"))
            .arg("--drain-timeout")
            .arg("30")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log.map_or_else(|_| Stdio::null(), Stdio::from))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // Standard output is read on its own thread, so that a node that hangs fails the test at
        // the deadline instead of blocking it.
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).try_for_each(|l| tx.send(l))
        });
        let mut said = Vec::new();
        let deadline = std::time::Instant::now() + PATIENCE;
        while !said.iter().any(|l: &String| l.trim_start().starts_with("admin token")) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => said.push(line),
                Err(e) => {
                    let log = std::fs::read_to_string(data.join("node.log")).unwrap_or_default();
                    panic!("node {name} did not come up ({e}; it said {said:?}); its log: {log}")
                }
            }
        }
        let ports = NodePorts::said(&said)
            .unwrap_or_else(|| panic!("node {name} did not say where it listens: {said:?}"));
        NodeProcess { name: name.to_string(), ports, child, lines, data: data.into() }
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("node.log")).unwrap_or_default()
    }

    /// A client of its API, as the cluster's administrator.
    pub fn api(&self, files: &ClusterFiles) -> ApiClient {
        ApiClient::new(&format!("http://{}", self.ports.api), &files.admin_token)
    }

    /// Kills the process with SIGKILL: it records nothing more.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; the lines it printed after the signal.
    /// Blocks: call it off the test's runtime (`spawn_blocking`).
    pub fn terminate(mut self) -> Vec<String> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let rest: Vec<String> =
            std::iter::from_fn(|| self.lines.recv_timeout(PATIENCE).ok()).collect();
        let deadline = std::time::Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {} did not exit: {rest:?}",
                self.name
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(status.success(), "node {} exited with {status}: {rest:?}", self.name);
        rest
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("--- the last lines of {}'s log:", self.name);
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}
