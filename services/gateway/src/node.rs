//! Assembling and starting one gateway node.
//!
//! A node holds nothing durable of its own: the event log is the truth, the directory a
//! rebuildable cache of it, and the secrets (key secret, admin token, TLS identity) come from
//! configuration or, on the embedded default, from files generated once in the data directory.

use crate::cluster::links::RelayLinks;
use crate::cluster::{
    draining, membership, relay, service, tls as cluster_tls, Cluster, ClusterConfig,
};
use crate::listener::PendingLimits;
use crate::metered_log::MeteredLog;
use crate::metrics::NodeMetrics;
use crate::notify::{Notifier, NotifyConfig};
use crate::public_address::{self, Addresses, PublicAddresses, PublicConfig};
use crate::refusals::{self, Refusals};
use crate::refused_registrations::RefusedRegistrations;
use crate::refused_scanners::RefusedScanners;
use crate::state::{NodeState, StreamLimits};
use crate::tls::{self, TlsSource};
use crate::tunnel_threads::TunnelThreads;
use crate::{api, enforcement, http_proxy, socks5, tunnel_acceptor};
use actix::Arbiter;
use ism_actors::credentials::{hash_secret, hex, random_bytes, unhex, KeySecret};
use ism_actors::gateway::GatewayCommand;
use ism_actors::tunnel::{Tunnel, TunnelCommand};
use ism_actors::NodeActors;
use ism_events::jetstream::Patience;
use ism_events::{spawn_projection, Cause, Clock, EventLog, Principal, SystemClock};
use ism_projectors::{DirectoryProjection, GatewayStatus, NoticeProjection};
use ism_tunnel::SessionConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How one node is configured (the binary fills this from flags and environment).
pub struct NodeConfig {
    /// This node's name in events and logs; must be unique in a cluster and stable across
    /// restarts (a restarted node closes the sessions the log still shows open under its name).
    pub node_id: String,
    pub data_dir: PathBuf,
    /// `nats://...` for JetStream, else the embedded log in `<data_dir>/events`.
    pub event_log: Option<String>,
    pub endpoint_listen: SocketAddr,
    pub socks_listen: SocketAddr,
    /// Where scanners connect as to an HTTP proxy.
    pub http_proxy_listen: SocketAddr,
    pub api_listen: SocketAddr,
    /// The WebSocket path endpoints connect to (`wsendpoint` in their properties).
    pub ws_path: String,
    /// Certificate files; `None` generates a private CA in `<data_dir>/tls`.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Extra names for the generated certificate.
    pub tls_names: Vec<String>,
    /// Shared secret endpoint keys derive from; `None` uses (or creates) `<data_dir>/key-secret`.
    pub key_secret_file: Option<PathBuf>,
    /// Bootstrap administrator token; `None` uses (or creates) `<data_dir>/admin-token`.
    pub admin_token: Option<String>,
    /// Tunnel settings for endpoint sessions; `max_streams` is the per-endpoint cap on open
    /// streams, beyond which scanners get an immediate refusal (SOCKS general failure, HTTP 503).
    pub session: SessionConfig,
    pub clock: Arc<dyn Clock>,
    /// How often the node looks for support-engineer access windows that ran out.
    pub support_sweep_interval: Duration,
    /// How long refusals of one kind are counted after the one recorded in full (see
    /// [`crate::refusals`]).
    pub refusal_window: Duration,
    /// How long refused registrations of one machine for one endpoint are counted after the one
    /// recorded in full (see [`crate::refused_registrations`]).
    pub registration_refusal_window: Duration,
    /// How long a stopping node waits for its sessions to end and for what they did to be
    /// recorded.
    pub stop_grace: Duration,
    /// Quiet scanner streams and per-credential quota.
    pub stream_limits: StreamLimits,
    /// Connections accepted and not yet authenticated, for scanners (across the SOCKS5 and
    /// HTTP-proxy listeners) and, as many again, for endpoints; beyond it new ones are closed at
    /// once.
    pub max_pending_connections: usize,
    /// How this node takes part in a cluster; `None` for a node alone (it relays nothing, and on
    /// the embedded log coordinates in process).
    pub cluster: Option<ClusterConfig>,
    /// The addresses users are shown (a cluster's load balancer, `--public-address`).
    pub public: PublicConfig,
    /// Notification rules, email and retention.
    pub notify: NotifyConfig,
    /// Scans one endpoint runs at once (`--scan-capacity`); more wait in its queue.
    pub scan_capacity: usize,
    /// Threads endpoint sessions live on (`--tunnel-threads`, see [`crate::tunnel_threads`]);
    /// 0 runs them on the node's own runtime.
    pub tunnel_threads: usize,
}

impl NodeConfig {
    /// A node on the embedded default, all listeners on loopback with OS-chosen ports.
    pub fn local(node_id: &str, data_dir: &Path) -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            node_id: node_id.to_string(),
            data_dir: data_dir.to_path_buf(),
            event_log: None,
            endpoint_listen: any_port,
            socks_listen: any_port,
            http_proxy_listen: any_port,
            api_listen: any_port,
            ws_path: "/wsendpoint".into(),
            tls_files: None,
            tls_names: Vec::new(),
            key_secret_file: None,
            admin_token: None,
            session: SessionConfig::default(),
            clock: Arc::new(SystemClock),
            support_sweep_interval: Duration::from_secs(10),
            refusal_window: Duration::from_secs(1),
            registration_refusal_window: Duration::from_secs(600),
            stop_grace: Duration::from_secs(5),
            stream_limits: StreamLimits::default(),
            max_pending_connections: 1024,
            cluster: None,
            public: PublicConfig::default(),
            notify: NotifyConfig::default(),
            scan_capacity: crate::scans::schedule::DEFAULT_CAPACITY,
            tunnel_threads: default_tunnel_threads(),
        }
    }
}

/// One tunnel thread per core.
pub fn default_tunnel_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("could not start {count} tunnel threads: {source}")]
    TunnelThreads { count: usize, source: std::io::Error },
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("secret file {path}: {reason}")]
    Secret { path: PathBuf, reason: String },
    #[error("event log: {0}")]
    Log(#[from] ism_events::LogError),
    #[error("directory projection: {0}")]
    Projection(#[from] ism_events::ProjectionError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("the WebSocket path must start with '/': {0:?}")]
    WsPath(String),
    #[error("cluster coordination: {0}")]
    Coordination(#[from] ism_cluster::CoordError),
    #[error("cluster TLS: {0}")]
    ClusterTls(#[from] crate::cluster::tls::ClusterTlsError),
    #[error("notifications: {0}")]
    Notify(#[from] crate::notify::NotifyError),
}

/// A started node.
pub struct RunningNode {
    pub state: Arc<NodeState>,
    pub addresses: Addresses,
    /// The administrator token (from configuration or the generated file).
    pub admin_token: String,
    /// The file holding the administrator token, unless configuration gave it.
    pub admin_token_file: Option<PathBuf>,
    /// The private CA endpoints must trust, when the certificate was generated.
    pub ca_file: Option<PathBuf>,
    api: actix_web::dev::ServerHandle,
    tasks: Vec<JoinHandle<()>>,
    /// Ends the notifications being delivered.
    notifications: tokio_util::sync::CancellationToken,
    stop_grace: Duration,
    /// Let go once the sessions are gone (the acceptor holds them too, until it is stopped).
    tunnel_threads: Arc<TunnelThreads>,
}

impl RunningNode {
    /// Drains the node: its endpoints move to the other nodes, make before break, and scanners
    /// stop coming (see [`crate::cluster::draining`]). Returns once no endpoint session is left
    /// here and no scanner came for a moment, within `deadline`.
    pub async fn drain(&self, deadline: Duration) {
        if self.state.cluster.start_draining() {
            tracing::info!(node = %self.state.node_id, "draining before stopping");
        }
        let drained = async {
            self.state.sessions.wait_for(|n| n == 0).await;
            draining::scanners_gone(&self.state).await;
        };
        if tokio::time::timeout(deadline, drained).await.is_err() {
            tracing::warn!("drain deadline reached: stopping with sessions or streams left");
        }
    }

    /// Stops listening, closes every endpoint session (endpoints reconnect elsewhere), and waits
    /// a few seconds at most until every fact the data path told (streams closed, refusals
    /// counted, sessions closed) is recorded, so that a stop loses none of them.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.notifications.cancel();
        let state = &self.state;
        // Recorded before the sessions end, so their ends read as the gateway's outage, not
        // the endpoints' own.
        if !state.cluster.others_serving().await {
            let why = format!("gateway node {} stopped and no other node serves it", state.node_id);
            service::record_offline(state, state.clock.now_ms(), &why).await;
        }
        crate::scans::fail_running(state, &format!("gateway node {} stopped", state.node_id)).await;
        state.sessions.close_all("gateway node shutting down");
        // Streams tell their end once their splice is over, sessions their close once their
        // tasks end: both are gone before the last told fact is.
        let settled = async {
            state.sessions.wait_for(|n| n == 0).await;
            state.streams.wait_for(|n| n == 0).await;
            state.refusals.record_all();
            state.refused_registrations.record_all();
            state.refused_scanners.record_all();
            state.tunnels.all_recorded().await;
            state.endpoints.all_recorded().await;
            state.gateways.all_recorded().await;
        };
        if tokio::time::timeout(self.stop_grace, settled).await.is_err() {
            state.refusals.record_all();
            state.refused_registrations.record_all();
            state.refused_scanners.record_all();
            tracing::warn!(
                unrecorded = state.tunnels.unrecorded(),
                sessions = state.sessions.len(),
                "stopping before every stream fact was recorded"
            );
        }
        state.refusal_logs.log_unreported();
        // The others stop counting on this node at once rather than after its lease.
        state.cluster.close_links().await;
        if let Err(e) = state.cluster.coordination.withdraw(&state.node_id).await {
            tracing::warn!(error = %e, "could not withdraw this node from the cluster");
        }
        self.api.stop(true).await;
        drop(self.tunnel_threads);
    }
}

/// Reads a secret file, or creates it (owner-only, whole or not at all) with `make()` when it
/// does not exist.
fn secret_file(path: &Path, make: impl FnOnce() -> String) -> Result<String, NodeError> {
    let err = |reason: String| NodeError::Secret { path: path.into(), reason };
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => {
            warn_if_readable(path);
            Ok(s.trim().to_string())
        }
        Ok(_) => Err(err("the file is empty".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = make();
            ism_files::create_new(path, format!("{value}\n").as_bytes(), 0o600)
                .map_err(|e| err(e.to_string()))?;
            Ok(value)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// A secret file others may read is used as it is (an operator may have shared it on purpose,
/// or mounted it so), but the operator is told, as for a shared data directory.
fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the secret file is open to other users; chmod 600 it");
        }
    }
}

/// Creates `dir` (and any missing parent) for the owner alone: the data directory holds every
/// event, every read model and the node's secrets.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// A data directory others may enter is left as it is (it may be shared on purpose, and the
/// stores inside it are closed anyway), but the operator is told.
fn warn_if_shared(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(dir) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the data directory is open to other users; chmod 700 it");
        }
    }
}

/// Makes everything below `path` the owner's alone: directories 0700, files 0600. Symbolic links
/// are not followed.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(path)? {
            owner_only(&entry?.path())?;
        }
    } else if meta.is_file() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Starts a node. Must run inside an actix `System` (its actors live on the calling arbiter).
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !config.ws_path.starts_with('/') {
        return Err(NodeError::WsPath(config.ws_path));
    }
    let data = &config.data_dir;
    let data_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NodeError::DataDir { path, source }
    };
    private_dir(data).map_err(data_err(data))?;
    warn_if_shared(data);
    let (events, projections) = (data.join("events"), data.join("projections"));

    // The stores create their files with the process's umask: what they made is tightened.
    let log: Arc<dyn EventLog> = match &config.event_log {
        Some(spec) => ism_events::open_log(spec, Patience::WaitForServers).await?,
        None => {
            private_dir(&events).map_err(data_err(&events))?;
            let log = ism_events::open_log(&events.display().to_string(), Patience::WaitForServers)
                .await?;
            owner_only(&events).map_err(data_err(&events))?;
            log
        }
    };
    let metrics = Arc::new(NodeMetrics::default());
    let log: Arc<dyn EventLog> = Arc::new(MeteredLog::new(log, metrics.clone()));
    private_dir(&projections).map_err(data_err(&projections))?;
    let directory = Arc::new(DirectoryProjection::open(&projections.join("directory"))?);
    let notices =
        Arc::new(NoticeProjection::open(&projections.join("notices"), config.notify.settings)?);
    owner_only(&projections).map_err(data_err(&projections))?;
    let progress = spawn_projection(log.clone(), directory.clone())?;
    let notices_progress = spawn_projection(log.clone(), notices.clone())?;
    let applied_events = progress.applied_events();
    let head = log.head().await?;
    progress.wait_for(head, Duration::from_secs(60)).await?;
    // The notifier acts on the notices' view: one still replaying the log would take a gateway
    // whose later activity it has not applied yet for one idle past the four months, and retire
    // it.
    notices_progress.wait_for(head, Duration::from_secs(60)).await?;

    let secret_path = config.key_secret_file.clone().unwrap_or_else(|| data.join("key-secret"));
    let secret_hex = secret_file(&secret_path, || hex(&KeySecret::generate_bytes()))?;
    let key_secret = unhex(&secret_hex)
        .ok_or_else(|| NodeError::Secret { path: secret_path.clone(), reason: "not hexadecimal (it holds the secret as hex digits: copy the file of the cluster's first node, or delete it on a node alone to have one generated)".into() })
        .and_then(|b| {
            KeySecret::from_bytes(&b)
                .map_err(|e| NodeError::Secret { path: secret_path.clone(), reason: e.to_string() })
        })?;
    let (admin_token, admin_token_file) = match &config.admin_token {
        Some(t) => (t.clone(), None),
        None => {
            let path = data.join("admin-token");
            (secret_file(&path, || format!("isma_{}", hex(&random_bytes())))?, Some(path))
        }
    };

    let tls_source = match &config.tls_files {
        Some((cert, key)) => TlsSource::Files { cert: cert.clone(), key: key.clone() },
        None => TlsSource::Generated { dir: data.join("tls"), sans: config.tls_names.clone() },
    };
    let identity = tls::load(&tls_source)?;

    let bind = |what, addr| async move {
        tokio::net::TcpListener::bind(addr).await.map_err(|source| NodeError::Bind {
            what,
            addr,
            source,
        })
    };
    let wss = bind("endpoint tunnels", config.endpoint_listen).await?;
    let cluster = join_cluster(&config, &bind).await?;
    let socks = bind("SOCKS5 ingress", config.socks_listen).await?;
    let http_proxy = bind("HTTP proxy ingress", config.http_proxy_listen).await?;
    let api_listener = std::net::TcpListener::bind(config.api_listen).map_err(|source| {
        NodeError::Bind { what: "management API", addr: config.api_listen, source }
    })?;
    let local =
        |l: &tokio::net::TcpListener| l.local_addr().expect("bound listener has an address");
    let addresses = Addresses {
        endpoint_wss: local(&wss),
        socks: local(&socks),
        http_proxy: local(&http_proxy),
        api: api_listener.local_addr().expect("bound listener has an address"),
    };

    let arbiter = Arbiter::current();
    let endpoints = Arc::new(NodeActors::new(arbiter.clone(), log.clone(), config.clock.clone()));
    let gateways = Arc::new(NodeActors::new(arbiter.clone(), log.clone(), config.clock.clone()));
    let state = Arc::new(NodeState {
        node_id: config.node_id.clone(),
        log: log.clone(),
        clock: config.clock.clone(),
        directory: directory.clone(),
        progress,
        notices: notices.clone(),
        notices_progress,
        gateways: gateways.clone(),
        endpoints: endpoints.clone(),
        tunnels: NodeActors::new(arbiter.clone(), log.clone(), config.clock.clone()),
        users: NodeActors::new(arbiter.clone(), log.clone(), config.clock.clone()),
        webhooks: NodeActors::new(arbiter.clone(), log.clone(), config.clock.clone()),
        scans: NodeActors::new(arbiter, log.clone(), config.clock.clone()),
        running_scans: Default::default(),
        scan_capacity: config.scan_capacity,
        key_secret,
        sessions: Default::default(),
        streams: Default::default(),
        refusals: Arc::new(Refusals::new(config.refusal_window, config.clock.clone())),
        refused_registrations: Arc::new(RefusedRegistrations::new(
            config.registration_refusal_window,
            endpoints,
            config.clock.clone(),
        )),
        refused_scanners: Arc::new(RefusedScanners::new(
            config.refusal_window,
            gateways,
            config.clock.clone(),
        )),
        admin_token_hash: hash_secret(&admin_token),
        refusal_logs: Default::default(),
        addresses,
        public: PublicAddresses::resolve(&config.public, &addresses, &public_address::hostname()),
        ws_path: config.ws_path.clone(),
        stream_limit: config.session.max_streams,
        window_budget: config.session.budget.clone(),
        stream_limits: config.stream_limits,
        pending: PendingLimits::new(config.max_pending_connections),
        cluster: cluster.cluster,
        sends_email: config.notify.smtp.is_some(),
        gateway_ca_pem: identity.ca_file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()),
        metrics,
    });

    recover(&state, config.event_log.is_none()).await;
    let tunnel_threads = Arc::new(
        TunnelThreads::start(config.tunnel_threads)
            .map_err(|source| NodeError::TunnelThreads { count: config.tunnel_threads, source })?,
    );

    let tasks = vec![
        tokio::spawn(state.enforcement().run(applied_events)),
        tokio::spawn(enforcement::expire_support_windows(
            state.directory.clone(),
            state.endpoints.clone(),
            state.clock.clone(),
            state.node_id.clone(),
            config.support_sweep_interval,
        )),
        // Windows close within a tenth of their length after they are over.
        tokio::spawn({
            let (refusals, scanners) = (state.refusals.clone(), state.refused_scanners.clone());
            refusals::every_tick(config.refusal_window / 10, move || {
                refusals.record_due();
                scanners.record_due();
            })
        }),
        // The ends of bursts of refusals, within a tenth of the log's pace.
        tokio::spawn({
            let state = state.clone();
            let every = Duration::from_millis(crate::log_pace::LOGGED_EVERY_MS.unsigned_abs() / 10);
            refusals::every_tick(every, move || {
                state.refusal_logs.log_overdue(state.clock.now_ms())
            })
        }),
        tokio::spawn({
            let refused = state.refused_registrations.clone();
            let every = config.registration_refusal_window / 10;
            refusals::every_tick(every, move || refused.record_due())
        }),
        tokio::spawn(tunnel_acceptor::serve(
            wss,
            tokio_rustls::TlsAcceptor::from(identity.server_config.clone()),
            state.clone(),
            config.session.clone(),
            tunnel_threads.clone(),
        )),
        tokio::spawn(socks5::ingress::serve(socks, state.clone())),
        tokio::spawn(http_proxy::ingress::serve(http_proxy, state.clone())),
        tokio::spawn(membership::heartbeat(state.clone(), cluster.heartbeat)),
        tokio::spawn(membership::fence_replaced(state.clone(), cluster.drain_timeout)),
        tokio::spawn(draining::drain_when_asked(state.clone(), cluster.drain_timeout)),
        tokio::spawn(crate::scans::schedule::run(state.clone())),
    ];
    let mut tasks = tasks;
    let notifications = tokio_util::sync::CancellationToken::new();
    let notifier = Notifier::new(state.clone(), notices, config.notify.clone(), &notifications)?;
    tasks.push(tokio::spawn(notifier.run()));
    if let Some((listener, tls)) = cluster.relay {
        tasks.push(tokio::spawn(relay::serve(
            listener,
            tls,
            state.clone(),
            config.session.clone(),
        )));
    }
    let api_state = actix_web::web::Data::new(state.clone());
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(api_state.clone())
            .wrap(actix_web::middleware::from_fn(api::request_span::traced))
            .configure(api::routes)
    })
    .workers(2)
    .disable_signals()
    .listen(api_listener)
    .map_err(|source| NodeError::Bind { what: "management API", addr: config.api_listen, source })?
    .run();
    let api = server.handle();
    actix_rt::spawn(server);

    tracing::info!(node = %state.node_id, log = %log.describe(), wss = %addresses.endpoint_wss, socks = %addresses.socks, http_proxy = %addresses.http_proxy, api = %addresses.api, "gateway node started");
    Ok(RunningNode {
        state,
        addresses,
        admin_token,
        admin_token_file,
        ca_file: identity.ca_file,
        api,
        tasks,
        notifications,
        stop_grace: config.stop_grace,
        tunnel_threads,
    })
}

/// What joining the cluster gave the node.
struct Joined {
    cluster: Arc<Cluster>,
    /// The relay listener and the cluster TLS, for a node that relays.
    relay: Option<(tokio::net::TcpListener, cluster_tls::ClusterTls)>,
    heartbeat: Duration,
    drain_timeout: Duration,
}

/// Coordination on the event log's NATS (a cluster) or in process (a node alone), and the relay
/// listener when the node has cluster TLS.
async fn join_cluster<B, F>(config: &NodeConfig, bind: &B) -> Result<Joined, NodeError>
where
    B: Fn(&'static str, SocketAddr) -> F,
    F: std::future::Future<Output = Result<tokio::net::TcpListener, NodeError>>,
{
    let defaults = ClusterConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        cluster_tls::ClusterTlsFiles::in_dir(Path::new("."), ""),
    );
    let settings = config.cluster.as_ref().unwrap_or(&defaults);
    let coordination: Arc<dyn ism_cluster::Coordination> = match &config.event_log {
        Some(url) if ism_events::is_jetstream(url) => {
            let replicas = ism_events::jetstream_replicas();
            // A node record outlives a few missed heartbeats, then expires on its own.
            let ttl = settings.lease * 10;
            Arc::new(ism_cluster::nats::NatsCoordination::connect(url, replicas, ttl).await?)
        }
        _ => Arc::new(ism_cluster::in_process::InProcess::default()),
    };
    let (links, relay, relay_addr) = match &config.cluster {
        Some(c) => {
            let tls = cluster_tls::load(&c.tls)?;
            let listener = bind("relay links", c.relay_listen).await?;
            let bound = listener.local_addr().map_err(|source| NodeError::Bind {
                what: "relay links",
                addr: c.relay_listen,
                source,
            })?;
            let advertised = c.relay_advertise.unwrap_or(bound);
            let links = RelayLinks::new(tls.clone(), config.session.clone());
            (Some(links), Some((listener, tls)), Some(advertised))
        }
        None => {
            if config.event_log.as_deref().is_some_and(ism_events::is_jetstream) {
                tracing::warn!("this node shares a NATS event log but has no cluster TLS (--cluster-tls-dir): it cannot relay scanners to endpoints other nodes hold");
            }
            (None, None, None)
        }
    };
    let cluster = Cluster::new(
        config.node_id.clone(),
        coordination,
        links,
        relay_addr,
        settings.lease,
        settings.heartbeat,
    );
    tracing::info!(coordination = %cluster.coordination.describe(), relay = ?relay_addr, "joined the cluster");
    Ok(Joined {
        cluster: Arc::new(cluster),
        relay,
        heartbeat: settings.heartbeat,
        drain_timeout: settings.drain_timeout,
    })
}

/// Records the end of a session the log still shows open under this node's name, which this node
/// no longer holds (it restarted, perhaps after a crash): first the end of each stream the
/// session carried without its end recorded (the bytes they moved are unknown), then the session's.
/// Repeating it records nothing more.
pub(crate) async fn close_lost_session(
    state: &NodeState,
    tunnel: uuid::Uuid,
    cause: &Cause,
    why: &str,
) -> Result<(), ism_actors::CommandError<ism_actors::tunnel::TunnelError>> {
    let recorded = async {
        let lost = ism_actors::aggregate::load::<Tunnel>(&*state.log, tunnel).await?;
        let carried = lost.state.opened.map(|t| t.open_streams).unwrap_or_default();
        let reason = format!("cut: {why} before recording the end (bytes moved unknown)");
        for stream in carried {
            let cut = TunnelCommand::CutStream { stream, reason: reason.clone() };
            state.tunnels.execute(tunnel, cut, cause.clone()).await?;
        }
        let close = TunnelCommand::Close { reason: why.to_string() };
        state.tunnels.execute(tunnel, close, cause.clone()).await
    }
    .await;
    // Nothing more happens on a lost session: its actor goes (a survivor would otherwise keep
    // one for every session of every node it saw lost).
    state.tunnels.forget(tunnel);
    recorded.map(|_| ())
}

/// Brings the log up to date with this node's restart: sessions it held before are gone,
/// gateways created while no node ran come online now, and gateways recorded offline are served
/// again. On the embedded log this node is the only one: gateways still recorded online were
/// offline since the last event of the previous run, which ended without recording it.
async fn recover(state: &NodeState, alone: bool) {
    if alone {
        let online = state.directory.gateways().unwrap_or_default();
        if online.iter().any(|g| g.status == GatewayStatus::Online && g.offline_since_ms.is_none())
        {
            let since = last_event_ms(state).await.unwrap_or_else(|| state.clock.now_ms());
            let why = format!(
                "gateway node {} stopped without recording it (it crashed or was killed)",
                state.node_id
            );
            service::record_offline(state, since, &why).await;
        }
    }
    let cause = Cause::by(Principal::node(state.node_id.clone()));
    for t in state.directory.open_tunnels_on(&state.node_id).unwrap_or_default() {
        let why = format!("gateway node {} stopped and restarted", state.node_id);
        if let Err(e) = close_lost_session(state, t.id, &cause, &why).await {
            tracing::warn!(tunnel = %t.id, error = %e, "could not close a stale session");
        }
    }
    for g in state
        .directory
        .gateways()
        .unwrap_or_default()
        .into_iter()
        .filter(|g| g.status == GatewayStatus::Initializing)
    {
        if let Err(e) = state
            .gateways
            .execute(g.id, GatewayCommand::Activate { node: state.node_id.clone() }, cause.clone())
            .await
        {
            tracing::warn!(gateway = %g.id, error = %e, "could not bring a gateway online");
        }
    }
    service::record_online(state).await;
}

/// When the newest event of the log was recorded.
async fn last_event_ms(state: &NodeState) -> Option<i64> {
    use futures_util::StreamExt;
    let head = state.log.head().await.ok()?;
    let mut events = state.log.subscribe(head.checked_sub(1)?).await.ok()?;
    Some(events.next().await?.ok()?.envelope.time_ms)
}
