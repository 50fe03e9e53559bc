//! A real HTTP `CONNECT` proxy for the endpoint's proxy tests, like a customer's: optional basic
//! authentication, hosts it refuses, and a log file of every request, which the tests read to
//! see which path traffic took. It runs on its own thread and runtime, reached only over TCP.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default, Clone)]
pub struct ProxyRules {
    /// `user:password` the proxy requires (basic authentication), if any.
    pub credentials: Option<(String, String)>,
    /// Hosts (as written in `CONNECT host:port`) the proxy refuses with 403.
    pub deny_hosts: Vec<String>,
    /// Names only the proxy resolves (`app.invalid` -> `127.0.0.1`), as a corporate proxy knows
    /// names the endpoint's machine does not.
    pub names: Vec<(String, String)>,
}

pub struct TestProxy {
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestProxy {
    pub fn start(rules: ProxyRules) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("proxy.log");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let log_path = log.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let log = Arc::new(Mutex::new(std::fs::File::create(&log_path).unwrap()));
                let rules = Arc::new(rules);
                tokio::select! {
                    _ = stop_rx => {}
                    _ = async {
                        while let Ok((client, _)) = listener.accept().await {
                            tokio::spawn(serve(client, rules.clone(), log.clone()));
                        }
                    } => {}
                }
            })
        });
        let addr = ready_rx.recv().unwrap();
        TestProxy { addr, log, _dir: dir, stop: Some(stop), thread: Some(thread) }
    }

    /// Every request so far: `CONNECT <target> user=<name or -> -> <status>`.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_string).collect()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn basic_user(head: &str, expected: &(String, String)) -> Option<String> {
    use base64::Engine;
    let value = head.lines().find_map(|l| l.strip_prefix("Proxy-Authorization: Basic "))?;
    let decoded =
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?)
            .ok()?;
    let (u, p) = decoded.split_once(':')?;
    (u == expected.0 && p == expected.1).then(|| u.to_string())
}

async fn serve(mut client: TcpStream, rules: Arc<ProxyRules>, log: Arc<Mutex<std::fs::File>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut parts = head.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let user = rules.credentials.as_ref().map(|c| basic_user(&head, c));
    let (status, reply): (u16, &str) = if method != "CONNECT" {
        (405, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
    } else if matches!(user, Some(None)) {
        (407, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n\r\n")
    } else if rules.deny_hosts.iter().any(|h| {
        target.rsplit_once(':').is_some_and(|(host, _)| host.trim_matches(['[', ']']) == h)
    }) {
        (403, "HTTP/1.1 403 Forbidden\r\n\r\n")
    } else {
        (200, "HTTP/1.1 200 Connection established\r\n\r\n")
    };
    let who = user.flatten().unwrap_or_else(|| "-".into());
    let _ = writeln!(log.lock().unwrap(), "{method} {target} user={who} -> {status}");
    let resolved = match target.rsplit_once(':') {
        Some((host, port)) => match rules.names.iter().find(|(name, _)| name == host) {
            Some((_, address)) => format!("{address}:{port}"),
            None => target.clone(),
        },
        None => target.clone(),
    };
    let upstream =
        if status == 200 { TcpStream::connect(resolved.as_str()).await.ok() } else { None };
    let upstream = match (status, upstream) {
        (200, Some(u)) => u,
        (200, None) => {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        }
        _ => {
            let _ = client.write_all(reply.as_bytes()).await;
            return;
        }
    };
    if client.write_all(reply.as_bytes()).await.is_err() {
        return;
    }
    let (mut c, mut u) = (client, upstream);
    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
}
