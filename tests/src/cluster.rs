//! A gateway node for tests, on its own thread and actix system (as a separate process would be,
//! it is reached only through its sockets), plus endpoints, targets and scanners around it.

use ism_cli::ApiClient;
use ism_endpoint::{Agent, AgentHandle, AgentStatus, EndpointConfig};
use ism_gateway::public_address::Addresses;
use ism_gateway::state::NodeState;
use ism_gateway::NodeConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a test waits for something that must happen before it fails: generous, since it
/// bounds a failure on a loaded machine, not a figure (figures are the benchmark's).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Heartbeats for tests about dead peers, on the node (`c.session.timing`) and the agent
/// (`heartbeatIntervalMs`, `deadPeerTimeoutMs`): a dead peer is noticed within a second or so,
/// so those tests wait for it rather than for the production 7 s.
pub const FAST_HEARTBEATS: ism_tunnel::Timing = ism_tunnel::Timing {
    ping_interval: Duration::from_millis(200),
    idle_timeout: Duration::from_millis(1500),
    open_timeout: Duration::from_secs(20),
};

/// Changes to a node's configuration (see [`TestNode::start_with`]).
type Adjust = Arc<dyn Fn(&mut NodeConfig) + Send + Sync>;

/// Which event log the node runs on.
#[derive(Clone)]
pub enum Backend {
    Embedded,
    JetStream(String),
}

pub struct TestNode {
    pub addresses: Addresses,
    pub admin_token: String,
    pub ca_file: PathBuf,
    pub state: Arc<NodeState>,
    /// The node's tokio runtime, for counting its tasks.
    pub runtime: tokio::runtime::Handle,
    node_id: String,
    backend: Backend,
    /// The configuration changes it started with, applied again on restart.
    adjust: Adjust,
    /// Stops the node: gracefully (`true`), or as a crash would, recording nothing more (`false`).
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    data: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts a node called `node_id` on `backend`, all listeners on loopback port 0.
    pub fn start(node_id: &str, backend: Backend) -> TestNode {
        Self::start_with(node_id, backend, |_| {})
    }

    /// As [`start`](Self::start), with `adjust` applied to the configuration (a manual clock, a
    /// faster support-window sweep, ...), at this start and every restart.
    pub fn start_with(
        node_id: &str,
        backend: Backend,
        adjust: impl Fn(&mut NodeConfig) + Send + Sync + 'static,
    ) -> TestNode {
        Self::launch(node_id, backend, tempfile::tempdir().unwrap(), None, Arc::new(adjust))
    }

    /// Starts a node on a data directory another node used (see [`stop`](Self::stop)).
    pub fn start_in(node_id: &str, backend: Backend, data: tempfile::TempDir) -> TestNode {
        Self::launch(node_id, backend, data, None, Arc::new(|_| {}))
    }

    /// Stops the node and starts it again with the same data directory and addresses, as a
    /// restarted process would.
    pub fn restart(self) -> TestNode {
        self.relaunch(true, || {})
    }

    /// As [`restart`](Self::restart), doing `meanwhile` (moving a manual clock, say) while the
    /// node is down.
    pub fn restart_after(self, meanwhile: impl FnOnce()) -> TestNode {
        self.relaunch(true, meanwhile)
    }

    /// As [`restart`](Self::restart), but the node stops as a crash (`kill -9`) would: its tasks
    /// end where they are, recording nothing more, and its sessions' sockets close.
    pub fn crash_and_restart(self) -> TestNode {
        self.relaunch(false, || {})
    }

    fn relaunch(mut self, graceful: bool, meanwhile: impl FnOnce()) -> TestNode {
        let data = self.data.take().unwrap();
        let (node_id, backend, addresses, adjust) =
            (self.node_id.clone(), self.backend.clone(), self.addresses, self.adjust.clone());
        // Everything of the old node must be gone (its sled stores are locked while open).
        self.shutdown(graceful);
        drop(self);
        meanwhile();
        Self::launch(&node_id, backend, data, Some(addresses), adjust)
    }

    fn launch(
        node_id: &str,
        backend: Backend,
        data: tempfile::TempDir,
        addresses: Option<Addresses>,
        adjust: Adjust,
    ) -> TestNode {
        let mut config = NodeConfig::local(node_id, data.path());
        adjust(&mut config);
        if let Backend::JetStream(url) = &backend {
            config.event_log = Some(url.clone());
        }
        // Free ports below the ephemeral range at the first start (a restart binds them again:
        // see `ports.rs`), the same ones at every restart.
        let a = addresses.unwrap_or_else(|| {
            let free = || std::net::SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
            Addresses { endpoint_wss: free(), socks: free(), http_proxy: free(), api: free() }
        });
        (
            config.endpoint_listen,
            config.socks_listen,
            config.http_proxy_listen,
            config.api_listen,
        ) = (a.endpoint_wss, a.socks, a.http_proxy, a.api);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let kept = adjust.clone();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<bool>();
        let thread = std::thread::spawn(move || {
            let rt = || {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap()
            };
            actix::System::with_tokio_rt(rt).block_on(async move {
                match ism_gateway::start(config).await {
                    Ok(node) => {
                        let runtime = tokio::runtime::Handle::current();
                        ready_tx
                            .send(Ok((
                                node.addresses,
                                node.admin_token.clone(),
                                node.ca_file.clone().unwrap(),
                                node.state.clone(),
                                runtime,
                            )))
                            .unwrap();
                        if stop_rx.await.unwrap_or(true) {
                            node.stop().await;
                        }
                    }
                    Err(e) => ready_tx.send(Err(e.to_string())).unwrap(),
                }
            })
        });
        let (addresses, admin_token, ca_file, state, runtime) = ready_rx
            .recv_timeout(PATIENCE)
            .expect("node start timed out")
            .expect("node failed to start");
        TestNode {
            addresses,
            admin_token,
            ca_file,
            state,
            runtime,
            node_id: node_id.to_string(),
            backend,
            adjust: kept,
            stop: Some(stop),
            thread: Some(thread),
            data: Some(data),
        }
    }

    /// Stops the node as a crash (`kill -9`) would, for good: it records nothing more, and the
    /// other nodes find out from its silence.
    pub fn crash(mut self) {
        self.shutdown(false);
    }

    /// Stops the node and hands back its data directory (the embedded log is in `events/`).
    pub fn stop(mut self) -> tempfile::TempDir {
        let data = self.data.take().expect("data directory");
        drop(self);
        data
    }

    fn shutdown(&mut self, graceful: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(graceful);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// A client of this node's REST API, as administrator. Needs an actix runtime.
    pub fn api(&self) -> ApiClient {
        self.api_as(&self.admin_token)
    }

    /// A client with `token`. Every response it gets is checked against the OpenAPI document;
    /// a mismatch fails the test.
    pub fn api_as(&self, token: &str) -> ApiClient {
        let check =
            |method: &awc::http::Method, path: &str, status: u16, body: &serde_json::Value| {
                if let Err(problem) =
                    crate::contract::Contract::get().check(method.as_str(), path, status, body)
                {
                    panic!("the API broke its contract: {problem}");
                }
            };
        ApiClient::new(&format!("http://{}", self.addresses.api), token)
            .observed(std::rc::Rc::new(check))
    }

    /// TLS for a client of the node's endpoint port, trusting the node's private CA: what a
    /// test needs to speak to the tunnel acceptor by hand.
    pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::pem::PemObject::pem_file_iter(&self.ca_file).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        Arc::new(
            rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth(),
        )
    }

    /// Tasks alive on the node's runtime.
    pub fn tasks(&self) -> usize {
        self.runtime.metrics().num_alive_tasks()
    }

    /// Waits until the node holds `n` endpoint sessions.
    pub async fn sessions_become(&self, n: usize) {
        let waited = tokio::time::timeout(PATIENCE, self.state.sessions.wait_for(|m| m == n)).await;
        assert!(
            waited.is_ok(),
            "{} sessions, not {n}, after {PATIENCE:?}",
            self.state.sessions.len()
        );
    }

    /// Waits until no scanner stream runs through the node.
    pub async fn streams_end(&self) {
        let waited = tokio::time::timeout(PATIENCE, self.state.streams.wait_for(|m| m == 0)).await;
        assert!(
            waited.is_ok(),
            "{} streams still running after {PATIENCE:?}",
            self.state.streams.total()
        );
    }

    pub fn socks(&self) -> String {
        self.addresses.socks.to_string()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown(true);
    }
}

/// A gateway with one endpoint and one scanner credential, made through the API.
#[derive(Clone)]
pub struct Provisioned {
    pub gateway: String,
    pub endpoint: String,
    pub endpoint_name: String,
    pub key: String,
    /// The scanner credential's id (for revoking it) and its secret.
    pub credential: String,
    pub scanner_secret: String,
}

pub async fn provision(api: &ApiClient, endpoint_name: &str) -> Provisioned {
    let gw = api.create_gateway("test-gateway", "integration test").await.expect("create gateway");
    let gateway = gw["id"].as_str().unwrap().to_string();
    let added = api.add_endpoint(&gateway, endpoint_name, "", "linux").await.expect("add endpoint");
    let cred = api.issue_scanner_credential(&gateway, "tests").await.expect("issue credential");
    Provisioned {
        gateway,
        endpoint: added["endpoint"]["id"].as_str().unwrap().to_string(),
        endpoint_name: endpoint_name.to_string(),
        key: added["key"].as_str().unwrap().to_string(),
        credential: cred["id"].as_str().unwrap().to_string(),
        scanner_secret: cred["secret"].as_str().unwrap().to_string(),
    }
}

/// One machine running an endpoint: its own folder, so its own machine identity.
pub struct TestMachine {
    pub dir: tempfile::TempDir,
}

impl TestMachine {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    /// Writes this machine's `application.properties` and starts the agent with it.
    pub fn start_endpoint(&self, node: &TestNode, key: &str, allowed_targets: &str) -> AgentHandle {
        self.start_endpoint_via(
            node,
            key,
            allowed_targets,
            &node.addresses.endpoint_wss.to_string(),
        )
    }

    /// As [`start_endpoint`](Self::start_endpoint), dialing `gateway` (a relay in front of the
    /// node, say) instead of the node itself.
    pub fn start_endpoint_via(
        &self,
        node: &TestNode,
        key: &str,
        allowed_targets: &str,
        gateway: &str,
    ) -> AgentHandle {
        self.start_endpoint_with(node, key, allowed_targets, gateway, "")
    }

    /// As [`start_endpoint_via`](Self::start_endpoint_via), with `extra` property lines.
    pub fn start_endpoint_with(
        &self,
        node: &TestNode,
        key: &str,
        allowed_targets: &str,
        gateway: &str,
        extra: &str,
    ) -> AgentHandle {
        self.start_endpoint_trusting(&node.ca_file, key, allowed_targets, gateway, extra)
    }

    /// As [`start_endpoint_with`](Self::start_endpoint_with), for gateway nodes whose
    /// certificate `ca_file` vouches for (nodes of a cluster, node processes).
    pub fn start_endpoint_trusting(
        &self,
        ca_file: &std::path::Path,
        key: &str,
        allowed_targets: &str,
        gateway: &str,
        extra: &str,
    ) -> AgentHandle {
        let config = self.config_trusting(ca_file, key, allowed_targets, gateway, extra);
        Agent::new(config).unwrap().spawn()
    }

    /// This machine's configuration for `key`, written as its `config/application.properties`
    /// and read back, as [`start_endpoint_trusting`](Self::start_endpoint_trusting) starts the
    /// agent with it: for tests that drive an `Agent` themselves.
    pub fn config_trusting(
        &self,
        ca_file: &std::path::Path,
        key: &str,
        allowed_targets: &str,
        gateway: &str,
        extra: &str,
    ) -> EndpointConfig {
        let config = self.dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let path = config.join("application.properties");
        std::fs::write(
            &path,
            format!(
                "token = {key}\ngateway = {gateway}\nwsendpoint = /wsendpoint\ngatewayCaFile = {}\nallowedTargets = {allowed_targets}\nsocketConnectionTimeoutMs = 30000\nsocketReadTimeoutMs = 30000\n{extra}\n",
                ca_file.display()
            ),
        )
        .unwrap();
        EndpointConfig::load(&path, &[]).unwrap()
    }
}

impl TestMachine {
    /// Starts the agent with `properties` as its `config/application.properties` and `ca_pem`
    /// beside it as `config/gateway-ca.pem`: the files a person saves from the web page.
    pub fn start_endpoint_from(&self, properties: &str, ca_pem: &str) -> AgentHandle {
        let config = self.dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("gateway-ca.pem"), ca_pem).unwrap();
        let path = config.join("application.properties");
        std::fs::write(&path, properties).unwrap();
        Agent::new(EndpointConfig::load(&path, &[]).unwrap()).unwrap().spawn()
    }
}

impl Default for TestMachine {
    fn default() -> Self {
        Self::new()
    }
}

/// An endpoint called `name` provisioned on `node` (gateway, key, scanner credential), its agent
/// started on a new machine allowed to reach `allowed_targets`, and connected. Keep the machine:
/// its directory holds the agent's configuration and identity.
pub async fn connected_endpoint(
    node: &TestNode,
    name: &str,
    allowed_targets: &str,
) -> (Provisioned, TestMachine, AgentHandle) {
    let p = provision(&node.api(), name).await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(node, &p.key, allowed_targets);
    connected(&agent).await;
    (p, machine, agent)
}

/// Waits until the agent is connected; panics with its last status otherwise.
pub async fn connected(agent: &AgentHandle) -> String {
    match agent
        .wait_for(PATIENCE, |s| {
            matches!(s, AgentStatus::Connected { .. } | AgentStatus::Stopped(_))
        })
        .await
    {
        Ok(AgentStatus::Connected { node, .. }) => node,
        other => panic!("endpoint did not connect: {other:?}"),
    }
}

/// `secret` with its last character changed: same format, wrong value.
pub fn tampered(secret: &str) -> String {
    let last = secret.chars().last().unwrap_or('0');
    format!("{}{}", &secret[..secret.len() - last.len_utf8()], if last == '0' { '1' } else { '0' })
}

/// Asks `f` until it returns `Some`, every 20 ms, for at most [`PATIENCE`]: for state seen only
/// through an API or a log (state a test can await, such as the node's sessions and streams, is
/// awaited with their `wait_for`).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the node behind `api` sees `count` nodes serving (the cluster has formed, as far
/// as it knows).
pub async fn serving_nodes(api: &ApiClient, count: usize) {
    eventually("the nodes serving, as one node sees them", || async {
        let nodes = api.nodes().await.ok()?;
        let serving = nodes.as_array()?.iter().filter(|n| n["state"] == "serving");
        (serving.count() == count).then_some(())
    })
    .await
}

/// A loopback TCP echo server; returns its address.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A loopback target that reads and discards everything until the client finishes sending (it
/// holds each connection open until then); returns its address.
pub async fn sink_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
            });
        }
    });
    addr
}

/// A node on the embedded log whose clock the test steps (from the wall clock's time), and that
/// clock: a test moves the log's pace, or any other rule of time, on with it.
pub fn node_on_a_manual_clock() -> (TestNode, ism_events::ManualClock) {
    let clock = ism_events::ManualClock::at(ism_events::Clock::now_ms(&ism_events::SystemClock));
    let node_clock = clock.clone();
    let node = TestNode::start_with("node-a", Backend::Embedded, move |c| {
        c.clock = Arc::new(node_clock.clone());
    });
    (node, clock)
}

/// Connects to the SOCKS5 ingress at `socks` and sends the greeting and the login of a scanner
/// of `endpoint` with `secret` (RFC 1929), leaving the replies unread: what the caller writes
/// next is the request.
pub async fn socks_login(socks: &str, endpoint: &str, secret: &str) -> TcpStream {
    let mut s = TcpStream::connect(socks).await.unwrap();
    s.write_all(&socks_greeting_and_login(endpoint, secret)).await.unwrap();
    s
}

/// A SOCKS5 greeting offering username/password alone, then the login of a scanner of
/// `endpoint` with `secret` (RFC 1929): what a scanner sends before its request.
pub fn socks_greeting_and_login(endpoint: &str, secret: &str) -> Vec<u8> {
    let mut login = vec![5, 1, 2, 1, endpoint.len() as u8];
    login.extend_from_slice(endpoint.as_bytes());
    login.push(secret.len() as u8);
    login.extend_from_slice(secret.as_bytes());
    login
}

/// Opens a stream to `127.0.0.1:target_port` through the SOCKS5 ingress at `socks` as scanner
/// of `endpoint`, the whole exchange in one write; returns the reply code (255 if none came
/// within [`PATIENCE`]) and the stream.
pub async fn socks_open(
    socks: &str,
    endpoint: &str,
    secret: &str,
    target_port: u16,
) -> (u8, Option<TcpStream>) {
    let Ok(mut s) = TcpStream::connect(socks).await else { return (255, None) };
    let mut msg = socks_greeting_and_login(endpoint, secret);
    msg.extend_from_slice(&[5, 1, 0, 1, 127, 0, 0, 1]);
    msg.extend_from_slice(&target_port.to_be_bytes());
    if s.write_all(&msg).await.is_err() {
        return (255, None);
    }
    // Method choice (2 bytes), authentication status (2), CONNECT reply (10, code second).
    let mut reply = [0u8; 14];
    match tokio::time::timeout(PATIENCE, s.read_exact(&mut reply)).await {
        Ok(Ok(_)) => (reply[5], Some(s)),
        _ => (255, None),
    }
}

/// A loopback HTTP server answering every request with `body`; returns its address.
pub async fn http_server(body: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A TCP relay that can stop carrying bytes without closing anything: a link that silently
/// drops packets. While frozen it passes on no end of stream either.
pub async fn freezable_relay(
    to: std::net::SocketAddr,
    frozen: Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let frozen = frozen.clone();
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(to).await else { return };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                let pump = |mut r: tokio::net::tcp::OwnedReadHalf,
                            mut w: tokio::net::tcp::OwnedWriteHalf,
                            frozen: Arc<std::sync::atomic::AtomicBool>| async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) if frozen.load(std::sync::atomic::Ordering::SeqCst) => {
                                // A dead link carries no FIN: hold the other side open.
                                std::future::pending::<()>().await;
                                return;
                            }
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if frozen.load(std::sync::atomic::Ordering::SeqCst) {
                            continue; // dropped on the floor
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::join!(pump(cr, uw, frozen.clone()), pump(ur, cw, frozen));
            });
        }
    });
    addr
}

/// A SOCKS stream through `socks` to the echo server at `echo_port` on the endpoint's side, once
/// the node there admits it (a node's directory and the owners follow the shared log and KV a
/// moment behind), checked with one round trip.
pub async fn echo_stream_through(socks: &str, p: &Provisioned, echo_port: u16) -> TcpStream {
    let mut stream = eventually("a SOCKS stream through the node", || async move {
        let (code, stream) =
            socks_open(socks, &p.endpoint_name, &p.scanner_secret, echo_port).await;
        (code == 0).then_some(stream).flatten()
    })
    .await;
    round_trip(&mut stream).await.unwrap();
    stream
}

/// Sends `ping` through a stream to an [`echo_server`] and reads it back.
pub async fn round_trip(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await?;
    if &buf != b"ping" {
        return Err(std::io::Error::other(format!("echoed {buf:?}")));
    }
    Ok(())
}

/// Every event in `log`, oldest first, once the log answers (a NATS cluster electing leaders
/// does not for a few seconds).
pub async fn recorded(log: &dyn ism_events::EventLog) -> Vec<ism_events::Envelope> {
    use futures_util::{StreamExt, TryStreamExt};
    eventually("the whole log read", || async move {
        let head = log.head().await.ok()?;
        let events = log.subscribe(0).await.ok()?.take(head as usize);
        events.map_ok(|r| r.envelope).try_collect().await.ok()
    })
    .await
}
