//! The agent's life: dial out to the gateway, prove who it is, serve scanner streams, and when
//! the tunnel drops, come back with jittered backoff. Failures that retrying cannot fix (a wrong
//! key, a key bound to another machine) end the agent with the seed's message.

use crate::backoff::Backoff;
use crate::config::EndpointConfig;
use crate::dialer::Dialer;
use crate::identity::{IdentityError, MachineIdentity};
use crate::messages::{self, Diagnosis};
use ism_tunnel::ws::{recv_frame, send_frame, websocket_config};
use ism_tunnel::{Incoming, Session, SessionConfig};
use ism_tunnel_proto::frame::challenge_message;
use ism_tunnel_proto::{Frame, Hello, RejectCode, Role, PROTOCOL_VERSION};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::Connector;

/// A session that lasted this long counts as stable: the next reconnect starts fast again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// What the agent is doing, for `status` and for tests.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentStatus {
    Connecting { attempt: u32, last_error: Option<String> },
    Connected { node: String, endpoint_name: String, since: SystemTime },
    /// Ended for good: the diagnosis says why (`None` when asked to stop).
    Stopped(Option<Diagnosis>),
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("gatewayCaFile {path}: {reason}")]
    CaFile { path: String, reason: String },
}

pub struct Agent {
    config: EndpointConfig,
    identity: MachineIdentity,
    tls: Arc<rustls::ClientConfig>,
    dialer: Arc<Dialer>,
    session: SessionConfig,
    hostname: String,
}

/// A running agent.
pub struct AgentHandle {
    status: watch::Receiver<AgentStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), Diagnosis>>,
}

impl AgentHandle {
    pub fn status(&self) -> AgentStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `pred`, or `timeout`; returns the last status seen.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&AgentStatus) -> bool) -> Result<AgentStatus, AgentStatus> {
        let mut rx = self.status.clone();
        let seen = tokio::time::timeout(timeout, async move { rx.wait_for(|s| pred(s)).await.map(|s| s.clone()) }).await;
        match seen {
            Ok(Ok(s)) => Ok(s),
            _ => Err(self.status()),
        }
    }

    /// Waits until the agent has stopped; the diagnosis says why when it failed.
    pub async fn stopped(&self) -> Option<Diagnosis> {
        let mut rx = self.status.clone();
        let end = rx.wait_for(|s| matches!(s, AgentStatus::Stopped(_))).await.map(|s| s.clone());
        match end {
            Ok(AgentStatus::Stopped(d)) => d,
            _ => None,
        }
    }

    /// Asks the agent to close its tunnel and stop.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the agent to end: `Err` carries the diagnosis of a fatal failure.
    pub async fn join(self) -> Result<(), Diagnosis> {
        self.task.await.unwrap_or_else(|e| Err(Diagnosis { message: "endpoint task failed".into(), cause: e.to_string(), solution: "report this as a bug" }))
    }
}

enum Attempt {
    Retry(Diagnosis),
    Fatal(Diagnosis),
}

impl Agent {
    pub fn new(config: EndpointConfig) -> Result<Self, AgentError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = MachineIdentity::load_or_create(&config.machine_key_file)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &config.gateway_ca_file {
            let err = |reason: String| AgentError::CaFile { path: ca.display().to_string(), reason };
            let pem = std::fs::read(ca).map_err(|e| err(e.to_string()))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
            if certs.is_empty() {
                return Err(err("no PEM certificate in the file".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| err(e.to_string()))?;
            }
        }
        let tls = Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
        let dialer = Arc::new(Dialer { allowlist: config.allowed_targets.clone(), connect_timeout: config.connect_timeout });
        let session = SessionConfig { max_streams: config.max_streams, ..SessionConfig::default() };
        Ok(Self { config, identity, tls, dialer, session, hostname: hostname() })
    }

    /// Starts the agent on the current tokio runtime.
    pub fn spawn(self) -> AgentHandle {
        let (status_tx, status) = watch::channel(AgentStatus::Connecting { attempt: 0, last_error: None });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(self.run(status_tx, stop_rx));
        AgentHandle { status, stop, task }
    }

    async fn run(self, status: watch::Sender<AgentStatus>, mut stop: watch::Receiver<bool>) -> Result<(), Diagnosis> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = tokio::select! {
                o = self.connect() => o,
                _ = stop.wait_for(|s| *s) => break,
            };
            match outcome {
                Ok((session, incoming, node, endpoint_name)) => {
                    tracing::info!(gateway = %self.config.gateway, %node, endpoint = %endpoint_name, "Connected to the gateway");
                    let since = SystemTime::now();
                    status.send_replace(AgentStatus::Connected { node, endpoint_name, since });
                    tokio::spawn(serve_streams(incoming, self.dialer.clone()));
                    let started = tokio::time::Instant::now();
                    let reason = tokio::select! {
                        r = session.closed() => r,
                        _ = stop.wait_for(|s| *s) => {
                            session.close("endpoint stopping");
                            break;
                        }
                    };
                    tracing::warn!(%reason, "tunnel to the gateway closed; reconnecting");
                    if started.elapsed() >= STABLE_AFTER {
                        backoff.reset();
                    }
                    attempt = 0;
                    status.send_replace(AgentStatus::Connecting { attempt, last_error: Some(reason.to_string()) });
                }
                Err(Attempt::Fatal(d)) => {
                    tracing::error!("{}", d.message);
                    tracing::error!("cause: {}; solution: {}", d.cause, d.solution);
                    status.send_replace(AgentStatus::Stopped(Some(d.clone())));
                    return Err(d);
                }
                Err(Attempt::Retry(d)) => {
                    tracing::error!("{}", d.message);
                    tracing::error!("cause: {}; solution: {}", d.cause, d.solution);
                    status.send_replace(AgentStatus::Connecting { attempt, last_error: Some(d.to_string()) });
                }
            }
            let delay = backoff.next_delay();
            tracing::info!(?delay, "retrying the gateway");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        status.send_replace(AgentStatus::Stopped(None));
        Ok(())
    }

    /// One attempt: TCP, TLS + WebSocket upgrade, handshake.
    async fn connect(&self) -> Result<(Session, Incoming, String, String), Attempt> {
        let cfg = &self.config;
        let tcp = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(cfg.gateway.as_str()))
            .await
            .map_err(|_| Attempt::Retry(messages::gateway_unreachable(format!("connecting to {} timed out after {:?}", cfg.gateway, cfg.connect_timeout))))?
            .map_err(|e| Attempt::Retry(messages::gateway_unreachable(format!("connecting to {}: {e}", cfg.gateway))))?;
        let _ = tcp.set_nodelay(true);
        let ws_failed = |cause: String| Attempt::Retry(messages::websocket_failed(cause));
        let request = cfg.url().into_client_request().map_err(|e| ws_failed(format!("bad gateway URL {}: {e}", cfg.url())))?;
        let upgrade = tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(websocket_config()), Some(Connector::Rustls(self.tls.clone())));
        let (mut ws, _) = tokio::time::timeout(cfg.read_timeout, upgrade)
            .await
            .map_err(|_| ws_failed(format!("no WebSocket upgrade from {} within {:?}", cfg.url(), cfg.read_timeout)))?
            .map_err(|e| {
                let hint = if e.to_string().contains("certificate") { " (if the gateway uses a private CA or your proxy inspects TLS, set gatewayCaFile)" } else { "" };
                ws_failed(format!("{}: {e}{hint}", cfg.url()))
            })?;
        let (nonce, node) = match recv_frame(&mut ws, cfg.read_timeout).await {
            Ok(Frame::Challenge { version: _, nonce, node }) => (nonce, node),
            Ok(_) => return Err(ws_failed("the gateway did not start the tunnel handshake".into())),
            Err(e) => return Err(ws_failed(format!("handshake: {e}"))),
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            key: cfg.token.clone(),
            machine_key: self.identity.public_key(),
            signature: self.identity.sign(&challenge_message(&nonce, &node)),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            platform: std::env::consts::OS.to_string(),
            hostname: self.hostname.clone(),
        };
        send_frame(&mut ws, &Frame::Hello(hello)).await.map_err(|e| ws_failed(format!("handshake: {e}")))?;
        match recv_frame(&mut ws, cfg.read_timeout).await {
            Ok(Frame::Welcome { node, endpoint_name, .. }) => {
                let (session, incoming) = Session::spawn(ws, Role::Endpoint, self.session.clone());
                Ok((session, incoming, node, endpoint_name))
            }
            Ok(Frame::Rejected { code, message }) => Err(match code {
                RejectCode::TokenAlreadyRegistered => Attempt::Fatal(messages::token_already_registered()),
                RejectCode::InvalidKey | RejectCode::BadHandshake => Attempt::Fatal(messages::invalid_key(message)),
                RejectCode::UnsupportedVersion => Attempt::Fatal(messages::unsupported_version(message)),
                RejectCode::Unavailable => Attempt::Retry(messages::websocket_failed(format!("the gateway is unavailable: {message}"))),
            }),
            Ok(_) => Err(ws_failed("unexpected frame during the handshake".into())),
            Err(e) => Err(ws_failed(format!("handshake: {e}"))),
        }
    }
}

/// Dials each stream the gateway opens, or refuses it with the reason.
async fn serve_streams(mut incoming: Incoming, dialer: Arc<Dialer>) {
    while let Some(stream) = incoming.next().await {
        let dialer = dialer.clone();
        tokio::spawn(async move {
            let target = stream.target().clone();
            match dialer.dial(&target).await {
                Ok(tcp) => {
                    if let Ok(s) = stream.accept().await {
                        let report = s.splice(tcp).await;
                        tracing::debug!(%target, sent = report.sent, received = report.received, end = ?report.end, "stream ended");
                    }
                }
                Err(f) => {
                    tracing::info!(%target, reason = ?f.reason, "refused a scanner stream: {}", f.message);
                    stream.reject(f.reason, f.message);
                }
            }
        });
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
