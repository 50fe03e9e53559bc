//! The agent's life: dial out to the gateway, prove who it is, serve scanner streams, and when
//! the tunnel drops, come back with jittered backoff. Failures that retrying cannot fix (a wrong
//! key, a key bound to another machine, its machine identity in use by another running agent)
//! end the agent with the seed's message and their own exit status, and so does not
//! reaching the gateway at all at start-up (`startupAttempts`; the service manager restarts it).

use crate::backoff::Backoff;
use crate::config::EndpointConfig;
use crate::dialer::Dialer;
use crate::exit::ExitStatus;
use crate::gateway_link::{self, LinkError, TlsSetupError};
use crate::identity::{IdentityError, MachineIdentity};
use crate::messages::Diagnosis;
use crate::metrics::EndpointMetrics;
use crate::own_addresses::OwnAddresses;
use crate::proxy::ProxyCredentials;
use crate::status::{self, StatusReport};
use ism_escape::escaped;
use ism_telemetry::context;
use ism_tunnel::{Incoming, SessionConfig};
use ism_tunnel_proto::{OpenFailure, Purpose};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::field::Empty;
use tracing::Instrument;

/// A session that lasted this long counts as stable: the next reconnect starts fast again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often the status file is refreshed while connected (for the open-stream count).
const STATUS_REFRESH: Duration = Duration::from_secs(2);

/// What the agent is doing, for `status` and for tests.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentStatus {
    Connecting {
        attempt: u32,
        last_error: Option<String>,
    },
    Connected {
        node: String,
        endpoint_name: String,
        since: SystemTime,
    },
    /// Ended for good: the diagnosis says why (`None` when asked to stop).
    Stopped(Option<Diagnosis>),
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("proxy credentials: {0}")]
    ProxyCredentials(String),
}

pub struct Agent {
    config: EndpointConfig,
    identity: MachineIdentity,
    tls: Arc<rustls::ClientConfig>,
    dialer: Arc<Dialer>,
    session: SessionConfig,
    metrics: Arc<EndpointMetrics>,
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
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&AgentStatus) -> bool,
    ) -> Result<AgentStatus, AgentStatus> {
        let mut rx = self.status.clone();
        let seen = tokio::time::timeout(timeout, async move {
            rx.wait_for(|s| pred(s)).await.map(|s| s.clone())
        })
        .await;
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
        self.task.await.unwrap_or_else(|e| {
            Err(Diagnosis {
                message: "endpoint task failed".into(),
                cause: e.to_string(),
                solution: "report this as a bug".into(),
                exit: ExitStatus::Retryable,
            })
        })
    }
}

impl Agent {
    pub fn new(mut config: EndpointConfig) -> Result<Self, AgentError> {
        let identity = MachineIdentity::load_or_create(&config.install.machine_key_file)?;
        let tls = gateway_link::tls_config(&config)?;
        if let Some(p) = &mut config.proxy {
            p.credentials = ProxyCredentials::load(&config.install.proxy_credentials_file)
                .map_err(AgentError::ProxyCredentials)?;
        }
        let dialer = Arc::new(Dialer {
            allowlist: config.allowed_targets.clone(),
            connect_timeout: config.connect_timeout,
            proxy: config.proxy.clone(),
            own_addresses: OwnAddresses::of_this_host(),
        });
        let session = SessionConfig {
            max_streams: config.max_streams,
            timing: config.tunnel_timing,
            ..SessionConfig::default()
        };
        let metrics = Arc::default();
        Ok(Self { config, identity, tls, dialer, session, metrics })
    }

    /// The configuration the agent runs with (proxy credentials loaded).
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The machine identity, for side sessions (diagnostics, key check).
    pub fn identity(&self) -> &MachineIdentity {
        &self.identity
    }

    /// The TLS roots the endpoint trusts (web PKI plus `gatewayCaFile`), for the diagnostic tool.
    pub fn tls(&self) -> &Arc<rustls::ClientConfig> {
        &self.tls
    }

    /// What the agent counts, for `metricsListen`.
    pub fn metrics(&self) -> Arc<EndpointMetrics> {
        self.metrics.clone()
    }

    /// How targets are reached, for the diagnostic tool.
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Opens a side session that does not replace the working one (diagnostics, key check).
    ///
    /// Each gateway address is tried in turn: a check must pass while one node of a cluster is
    /// down. A fatal refusal (a wrong key, say) ends the round at once.
    pub async fn side_session(&self) -> Result<gateway_link::Link, LinkError> {
        let mut outcome = self.side_session_at(&self.config).await;
        for gateway in self.config.gateways.iter().skip(1) {
            if !matches!(outcome, Err(LinkError::Retry(_))) {
                break;
            }
            outcome = self.side_session_at(&self.config.at(gateway)).await;
        }
        outcome
    }

    async fn side_session_at(
        &self,
        config: &EndpointConfig,
    ) -> Result<gateway_link::Link, LinkError> {
        gateway_link::connect(
            config,
            self.tls.clone(),
            &self.identity,
            Purpose::Diagnostics,
            self.session.clone(),
        )
        .await
    }

    /// Starts the agent on the current tokio runtime.
    pub fn spawn(self) -> AgentHandle {
        let (status_tx, status) =
            watch::channel(AgentStatus::Connecting { attempt: 0, last_error: None });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(self.run(status_tx, stop_rx));
        AgentHandle { status, stop, task }
    }

    fn report(
        &self,
        state: &str,
        link: Option<(&str, &str, &str, i64, usize)>,
        last_error: Option<String>,
    ) {
        let (gateway, node, endpoint_name, since_ms, open_streams) = match link {
            Some((g, n, e, s, o)) => {
                (g.to_string(), Some(n.to_string()), Some(e.to_string()), Some(s), o)
            }
            None => (self.config.gateways.join(","), None, None, None, 0),
        };
        let report = StatusReport {
            pid: std::process::id(),
            state: state.to_string(),
            gateway,
            node,
            endpoint_name,
            since_ms,
            open_streams,
            last_error,
            version: env!("CARGO_PKG_VERSION").to_string(),
            updated_ms: ism_time::now_ms(),
        };
        if let Err(e) = status::write(&self.config.install.status_file, &report) {
            tracing::warn!(file = %self.config.install.status_file.display(), error = %e, "cannot write the status file");
        }
    }

    async fn run(
        self,
        status: watch::Sender<AgentStatus>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Diagnosis> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut attempt = 0u32;
        let mut ever_connected = false;
        if self.config.allowed_targets.is_empty() {
            // Said here, once logging runs, rather than when the configuration is read.
            tracing::warn!("allowedTargets is empty: every scanner request will be refused until you list the hosts and ports to allow in application.properties");
        }
        if self.dialer.proxy_resolves_names() {
            tracing::warn!("The web proxy resolves the host names of scanned URLs (proxyResolveUrlHostname = false): a name that resolves only at the proxy is sent to it unchecked, so the refusal of this host's own, link-local and cloud metadata addresses relies on the name also resolving on this machine");
        }
        self.report("connecting", None, None);
        // The gateway addresses are tried in turn: the next at once when one fails, a pause only
        // once all of them failed since the last pause.
        let gateways = self.config.gateways.clone();
        let (mut next, mut tried) = (0usize, 0usize);
        let ended = loop {
            attempt += 1;
            let config = self.config.at(&gateways[next % gateways.len()]);
            let outcome = tokio::select! {
                o = gateway_link::connect(&config, self.tls.clone(), &self.identity, Purpose::Serve, self.session.clone()) => o,
                _ = stop.wait_for(|s| *s) => break None,
            };
            match outcome {
                Ok(link) => {
                    ever_connected = true;
                    tracing::info!(
                        "{}",
                        connected_line(&link.gateway, &link.node, &link.endpoint_name)
                    );
                    let since = SystemTime::now();
                    let since_ms = ism_time::now_ms();
                    status.send_replace(AgentStatus::Connected {
                        node: link.node.clone(),
                        endpoint_name: link.endpoint_name.clone(),
                        since,
                    });
                    self.metrics.connected();
                    let metrics = self.metrics.clone();
                    tokio::spawn(serve_streams(link.incoming, self.dialer.clone(), metrics));
                    let started = tokio::time::Instant::now();
                    let mut refresh = tokio::time::interval(STATUS_REFRESH);
                    let mut reported_streams = None;
                    let mut moving = false;
                    let reason = loop {
                        tokio::select! {
                            r = link.session.closed() => break r,
                            why = link.session.move_requested() => {
                                // Make before break: the old session keeps serving its running
                                // streams until its node closes it, once this endpoint has a new
                                // session elsewhere.
                                moving = true;
                                break ism_tunnel::CloseReason::Local(format!("moving to another node: {why}"));
                            }
                            _ = refresh.tick() => {
                                // Rewritten only when it changes: thousands of idle endpoints
                                // in one process must not mean thousands of writes a second.
                                let open = link.session.open_streams();
                                if reported_streams != Some(open) {
                                    reported_streams = Some(open);
                                    self.report("connected", Some((&link.gateway, &link.node, &link.endpoint_name, since_ms, open)), None);
                                }
                            }
                            _ = stop.wait_for(|s| *s) => {
                                link.session.close("endpoint stopping");
                                break ism_tunnel::CloseReason::Local("endpoint stopping".into());
                            }
                        }
                    };
                    self.metrics.disconnected();
                    if *stop.borrow() {
                        break None;
                    }
                    let line = session_ended_line(&reason, moving);
                    if moving {
                        tracing::info!("{line}");
                    } else {
                        tracing::warn!("{line}");
                    }
                    if started.elapsed() >= STABLE_AFTER {
                        backoff.reset();
                    }
                    attempt = 0;
                    status.send_replace(AgentStatus::Connecting {
                        attempt,
                        last_error: Some(reason.to_string()),
                    });
                    self.report("connecting", None, Some(reason.to_string()));
                    // The node that just closed (or asked to move) is likely gone: the next one
                    // at once, when there is another.
                    next += 1;
                    if gateways.len() > 1 || moving {
                        tried = 1;
                        continue;
                    }
                    tried = 0;
                }
                Err(LinkError::Fatal(d)) => break Some(d),
                Err(LinkError::Retry(d)) => {
                    // `startupAttempts` counts rounds of all the gateway addresses.
                    let rounds = attempt as usize / gateways.len().max(1);
                    if !ever_connected
                        && self.config.startup_attempts > 0
                        && rounds >= self.config.startup_attempts as usize
                    {
                        break Some(d);
                    }
                    tracing::error!("{}", d.message);
                    tracing::error!("{}", d.cause_line());
                    status.send_replace(AgentStatus::Connecting {
                        attempt,
                        last_error: Some(d.to_string()),
                    });
                    self.report("connecting", None, Some(d.to_string()));
                    next += 1;
                    tried += 1;
                    if tried < gateways.len() {
                        continue;
                    }
                    tried = 0;
                }
            }
            let delay = backoff.next_delay();
            tracing::info!("Retrying the gateway in {} ms", delay.as_millis());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => break None,
            }
        };
        match ended {
            Some(d) => {
                tracing::error!(
                    "{}",
                    if ever_connected { d.message.clone() } else { d.exit_line() }
                );
                tracing::error!("{}", d.cause_line());
                self.report("stopped", None, Some(d.to_string()));
                status.send_replace(AgentStatus::Stopped(Some(d.clone())));
                Err(d)
            }
            None => {
                self.report("stopped", None, None);
                status.send_replace(AgentStatus::Stopped(None));
                Ok(())
            }
        }
    }
}

/// The line for a new session. The node and the endpoint name are the gateway's words, shown
/// escaped so that they cannot forge log lines.
fn connected_line(gateway: &str, node: &str, endpoint_name: &str) -> String {
    format!(
        "Connected to the gateway {} (node {}) as endpoint {}",
        escaped(gateway),
        escaped(node),
        escaped(endpoint_name)
    )
}

/// The line for a session that ended, `moving` when the gateway asked the endpoint to move. The
/// reason may carry the gateway's words (the move's reason): shown escaped.
fn session_ended_line(reason: &ism_tunnel::CloseReason, moving: bool) -> String {
    let reason = escaped(reason);
    if moving {
        format!("The gateway node is draining ({reason}); connecting to another node")
    } else {
        format!("The tunnel to the gateway closed ({reason}); reconnecting")
    }
}

/// Dials each stream the gateway opens, or refuses it with the reason, each in an
/// `endpoint.dial` span that continues the gateway's trace of the scanner's request.
async fn serve_streams(mut incoming: Incoming, dialer: Arc<Dialer>, metrics: Arc<EndpointMetrics>) {
    while let Some(stream) = incoming.next().await {
        if stream.relay().is_some() {
            // Relayed streams travel between gateway nodes, never to an endpoint.
            stream.reject(OpenFailure::NotAllowed, "an endpoint takes no relayed streams");
            continue;
        }
        let (dialer, metrics) = (dialer.clone(), metrics.clone());
        let span = tracing::info_span!(
            "endpoint.dial",
            stream = stream.id().0,
            target = %escaped(stream.target()),
            outcome = Empty,
            to_target = Empty,
            to_scanner = Empty,
            trace_id = Empty,
        );
        context::continue_from(&span, stream.trace());
        // The dial runs in the span; the bytes move outside it (entering a span on every poll
        // would cost the data path), and what they were is recorded on it.
        tokio::spawn(async move {
            let target = stream.target().clone();
            match dialer.dial(&target).instrument(span.clone()).await {
                Ok(tcp) => {
                    metrics.dialed("connected");
                    span.record("outcome", "connected");
                    if let Ok(s) = stream.accept().await {
                        let _open = metrics.stream_started();
                        // The target is this side's socket: what it sent went to the scanner.
                        let report = s.splice(tcp).await;
                        let (to_target, to_scanner) = (report.received, report.sent);
                        metrics.stream_ended(to_target, to_scanner);
                        span.record("to_target", to_target);
                        span.record("to_scanner", to_scanner);
                        span.in_scope(|| tracing::debug!(target = %escaped(&target), to_target, to_scanner, end = ?report.end, "stream ended"));
                    }
                }
                Err(f) => {
                    metrics.dialed(f.reason.label());
                    span.record("outcome", f.reason.label());
                    span.in_scope(|| {
                        tracing::info!(
                            "Refused a scanner stream to {}: {}",
                            escaped(&target),
                            escaped(&f.message)
                        )
                    });
                    stream.reject(f.reason, f.message);
                }
            }
        });
    }
}

/// The runtime an agent runs on: one worker thread. An agent carries one session, and one TLS
/// connection serialises its bytes anyway; a second worker only added wake-ups between the two
/// (the session's driver on one, a stream's task on the other, each socket's readiness waking
/// whichever sat in `epoll_wait`), which cost more CPU per byte than they bought (see
/// "Measured" in ARCHITECTURE.md).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_tunnel::CloseReason;

    #[test]
    fn the_gateways_words_are_logged_escaped() {
        let line = connected_line("gw:443", "node-a\nERROR - forged", "dc1\u{1b}[2J");
        assert_eq!(
            line,
            "Connected to the gateway gw:443 (node node-a\\nERROR - forged) as endpoint dc1\\u{1b}[2J"
        );
        let moved = CloseReason::Local("moving to another node: drain\r\nERROR - forged".into());
        let line = session_ended_line(&moved, true);
        assert!(
            line.contains("drain\\r\\nERROR - forged") && !line.contains(['\r', '\n']),
            "{line}"
        );
        let closed = session_ended_line(&CloseReason::Transport("reset\n".into()), false);
        assert!(closed.contains("reset\\n") && !closed.contains('\n'), "{closed}");
    }
}
