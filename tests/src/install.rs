//! The endpoint as its own process: an install folder with `config/application.properties`,
//! the `ism-endpoint` binary (whose path the caller passes: only its own package's tests know it)
//! run against a test gateway node, started and stopped as a service manager would.

use crate::cluster::{TestNode, PATIENCE};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

/// An install folder: `config/application.properties` plus whatever the endpoint creates.
pub struct Install {
    binary: PathBuf,
    dir: tempfile::TempDir,
    defaults: Vec<(String, String)>,
}

impl Install {
    /// A new install folder (so a new machine identity) for `key`; `extra` lines replace the
    /// defaults they name.
    pub fn new(binary: &str, node: &TestNode, key: &str, extra: &str) -> Install {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        let defaults = [
            ("token", key.to_string()),
            ("gateway", node.addresses.endpoint_wss.to_string()),
            ("wsendpoint", "/wsendpoint".into()),
            ("gatewayCaFile", node.ca_file.display().to_string()),
            // Generous: a loaded machine may take seconds to answer a handshake; the tests that
            // are about timeouts set their own.
            ("socketConnectionTimeoutMs", "30000".into()),
            ("socketReadTimeoutMs", "30000".into()),
            ("startupAttempts", "1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let install = Install { binary: PathBuf::from(binary), dir, defaults };
        install.configure(extra);
        install
    }

    /// Rewrites the properties file: the defaults, with `extra` lines replacing the ones they name.
    pub fn configure(&self, extra: &str) {
        let named: Vec<&str> =
            extra.lines().filter_map(|l| l.split_once('=')).map(|(k, _)| k.trim()).collect();
        let mut props: Vec<String> = self
            .defaults
            .iter()
            .filter(|(k, _)| !named.contains(&k.as_str()))
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        props.extend(extra.lines().map(str::to_string));
        std::fs::write(self.props(), props.join("\n") + "\n").unwrap();
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn props(&self) -> PathBuf {
        self.root().join("config/application.properties")
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.binary);
        c.arg("--config").arg(self.props()).args(args).stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// Runs to the end (at most [`PATIENCE`]).
    pub async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(PATIENCE, self.command(args).output())
            .await
            .expect("ism-endpoint finished in time")
            .unwrap()
    }

    /// Starts the endpoint as a service would and waits until `status` says it is connected.
    pub async fn start(&self, args: &[&str]) -> tokio::process::Child {
        let child = self.command(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let out = self.run(&["status"]).await;
            if out.status.success() {
                return child;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the endpoint did not connect: {}\n{}",
                text(&out),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root().join("logs/smartendpoint.log")).unwrap_or_default()
    }
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Stops a running endpoint as systemd would (SIGTERM) and waits for it.
pub async fn terminate(mut child: tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status =
        tokio::time::timeout(PATIENCE, child.wait()).await.expect("stopped in time").unwrap();
    assert!(status.success(), "the endpoint should stop cleanly on SIGTERM: {status:?}");
}
