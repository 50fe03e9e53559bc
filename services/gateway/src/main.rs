//! `ism-gateway`: runs one gateway node.

use anyhow::Context;
use clap::Parser;
use ism_gateway::cluster::tls::ClusterTlsFiles;
use ism_gateway::cluster::ClusterConfig;
use ism_gateway::NodeConfig;
use ism_telemetry::{LogFormat, TraceConfig, Tracing};
use std::net::SocketAddr;
use std::path::PathBuf;

/// One node of an internal-scanning gateway: endpoints dial in over TLS WebSocket, scanners
/// connect over SOCKS5, operators use the REST API.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// This node's name in events and logs (unique in a cluster, stable across restarts).
    #[arg(long, env = "ISM_NODE_ID", default_value = "node-1")]
    node_id: String,
    /// Where the node keeps its generated secrets, the embedded event log and its projections.
    #[arg(long, env = "ISM_DATA_DIR", default_value = "./ism-gateway-data")]
    data_dir: PathBuf,
    /// Event log: a `nats://host:port` URL for JetStream (clusters; `nats://user:password@...`
    /// when the servers ask for a login); the embedded log otherwise.
    #[arg(long, env = "ISM_EVENT_LOG", hide_env_values = true)]
    event_log: Option<String>,
    /// Address endpoints connect to (TLS WebSocket).
    #[arg(long, env = "ISM_ENDPOINT_LISTEN", default_value = "0.0.0.0:8443")]
    endpoint_listen: SocketAddr,
    /// Address scanners connect to (SOCKS5).
    #[arg(long, env = "ISM_SOCKS_LISTEN", default_value = "127.0.0.1:1080")]
    socks_listen: SocketAddr,
    /// Address scanners use as an HTTP proxy (CONNECT, or absolute URIs for plain HTTP).
    #[arg(long, env = "ISM_HTTP_PROXY_LISTEN", default_value = "127.0.0.1:3128")]
    http_proxy_listen: SocketAddr,
    /// Address of the management REST API.
    #[arg(long, env = "ISM_API_LISTEN", default_value = "127.0.0.1:7070")]
    api_listen: SocketAddr,
    /// WebSocket path endpoints use (their `wsendpoint` property).
    #[arg(long, env = "ISM_WS_PATH", default_value = "/wsendpoint")]
    ws_path: String,
    /// PEM certificate chain; without it a private CA is generated in the data directory.
    #[arg(long, env = "ISM_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "ISM_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Extra DNS names or IPs for the generated certificate (repeatable).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// File with the hex secret endpoint keys derive from (shared by all nodes of a cluster).
    #[arg(long, env = "ISM_KEY_SECRET_FILE")]
    key_secret_file: Option<PathBuf>,
    /// Most streams open at once through one endpoint's session; more wait in its queue.
    #[arg(long, env = "ISM_MAX_STREAMS_PER_ENDPOINT", default_value_t = 1024)]
    max_streams_per_endpoint: usize,
    /// Streams that may wait for a slot of one endpoint at its --max-streams-per-endpoint; more
    /// are refused at once (SOCKS general failure, HTTP 503). 0: none wait.
    #[arg(long, env = "ISM_STREAM_QUEUE", default_value_t = 256)]
    stream_queue: usize,
    /// Scans of the built-in engine one endpoint runs at once; more wait in its queue (first
    /// in, first out) and start as slots free.
    #[arg(long, env = "ISM_SCAN_CAPACITY", default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..))]
    scan_capacity: u16,
    /// Threads endpoint sessions live on, each with its scanners' streams, so that a stream's
    /// bytes never wake another thread (default: one per core). 0 runs sessions on the node's
    /// shared runtime.
    #[arg(long, env = "ISM_TUNNEL_THREADS")]
    tunnel_threads: Option<usize>,
    /// Memory, in MiB, that streams alone in their endpoint's session may have in flight beyond
    /// the 64 KiB every stream gets, all endpoints together. A lone stream grows to an 8 MiB
    /// window (fast bulk transfers over long links) while this lasts, and keeps 64 KiB when it
    /// is spent, so readers that stop reading cannot make the node hold more than this. 0: no
    /// stream grows.
    #[arg(long, env = "ISM_WINDOW_BUDGET_MIB", default_value_t = ism_tunnel::DEFAULT_WINDOW_BUDGET >> 20)]
    window_budget_mib: u64,
    /// How long a stream waits for a slot before it is refused, e.g. `30s`.
    #[arg(long, env = "ISM_QUEUE_TIMEOUT", default_value = "30s", value_parser = duration_ms)]
    queue_timeout: i64,
    /// Most streams one scanner credential runs at once on this node; more are refused (SOCKS
    /// general failure, HTTP 429), so one scanner cannot take every slot of an endpoint.
    #[arg(long, env = "ISM_MAX_STREAMS_PER_CREDENTIAL", default_value_t = 512)]
    max_streams_per_credential: usize,
    /// Facts the data path told and the event log has not recorded yet, beyond which new scanner
    /// streams are refused until it catches up (SOCKS general failure, HTTP 503): the node's
    /// memory stays bounded when appends cannot keep up.
    #[arg(long, env = "ISM_MAX_UNRECORDED_FACTS", default_value_t = 50_000)]
    max_unrecorded_facts: usize,
    /// Seconds a scanner stream may go without a byte in either direction before it is reset
    /// (0: no limit).
    #[arg(long, env = "ISM_STREAM_IDLE_TIMEOUT", default_value_t = 600)]
    stream_idle_timeout: u64,
    /// Seconds a stream whose one side closed (a scanner that went away) may wait for the other
    /// side's next byte before it is reset and its slot freed.
    #[arg(long, env = "ISM_HALF_CLOSED_TIMEOUT", default_value_t = 60)]
    half_closed_timeout: u64,
    /// Connections accepted and not yet authenticated that the node holds at once for scanners
    /// (across the SOCKS5 and HTTP-proxy listeners) and, as many again, for endpoints; more are
    /// closed at once. Default: a quarter of the open-file limit (which the node raises to its
    /// hard limit at start), between 64 and 16384.
    #[arg(long, env = "ISM_MAX_PENDING_CONNECTIONS")]
    max_pending_connections: Option<usize>,
    /// Administrator API token, at least 32 characters (`openssl rand -hex 32`); by default read
    /// from (or generated into) <data-dir>/admin-token.
    #[arg(long, env = "ISM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The address endpoints are told to dial, `host[:port]` (443 by default): in a cluster the
    /// load balancer's. Shown by `ism gateway show` for outbound allowlists.
    #[arg(long, env = "ISM_PUBLIC_ADDRESS")]
    public_address: Option<String>,
    /// The SOCKS5 address scanners are told (default: the public host, this node's port).
    #[arg(long, env = "ISM_PUBLIC_SOCKS_ADDRESS")]
    public_socks_address: Option<String>,
    /// The HTTP proxy address scanners are told (default: the public host, this node's port).
    #[arg(long, env = "ISM_PUBLIC_HTTP_PROXY_ADDRESS")]
    public_http_proxy_address: Option<String>,
    /// Directory with the cluster CA and this node's certificate (`ism-gateway cluster-certs`):
    /// makes the node relay scanners to endpoints other nodes hold, and theirs to its own.
    #[arg(long, env = "ISM_CLUSTER_TLS_DIR")]
    cluster_tls_dir: Option<PathBuf>,
    /// Where other nodes open relay links to this one (with --cluster-tls-dir).
    #[arg(long, env = "ISM_RELAY_LISTEN", default_value = "0.0.0.0:8444")]
    relay_listen: SocketAddr,
    /// The relay address other nodes dial, when --relay-listen is a wildcard address.
    #[arg(long, env = "ISM_RELAY_ADVERTISE")]
    relay_advertise: Option<SocketAddr>,
    /// Seconds a draining node (SIGTERM in a cluster, `ism node drain`) lets running streams
    /// finish before it closes the sessions still on it.
    #[arg(long, env = "ISM_DRAIN_TIMEOUT", default_value_t = 60)]
    drain_timeout: u64,
    /// SMTP relay for notification emails: `smtp://host:25` (plain, a local relay),
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://user:pass@host:465`.
    /// Without it nothing is emailed (webhooks still are).
    #[arg(long, env = "ISM_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// The From address of notification emails.
    #[arg(long, env = "ISM_MAIL_FROM", default_value = "ISM notifications <ism@localhost>")]
    mail_from: String,
    /// Base URL of the management page, for the links in notifications (default: this node's
    /// API address).
    #[arg(long, env = "ISM_MANAGE_URL")]
    manage_url: Option<String>,
    /// How long an endpoint (or gateway) must stay offline before it is reported, e.g. `120s`,
    /// `2m` (a reconnect within it, after a node loss say, sends nothing).
    #[arg(long, env = "ISM_OFFLINE_GRACE", default_value = "2m", value_parser = duration_ms)]
    offline_grace: i64,
    /// Outages within --unstable-window that make an endpoint unstable: one email, then its
    /// notifications pause for 24 hours.
    #[arg(long, env = "ISM_UNSTABLE_COUNT", default_value_t = 3)]
    unstable_count: usize,
    #[arg(long, env = "ISM_UNSTABLE_WINDOW", default_value = "30m", value_parser = duration_ms)]
    unstable_window: i64,
    /// Log lines as `text` (coloured only on a terminal) or `json` (one object per line, with
    /// the request's span fields, and its trace id when tracing). `RUST_LOG` sets the level
    /// (default info).
    #[arg(long, env = "ISM_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// OTLP/gRPC collector for traces, e.g. `http://127.0.0.1:4317`: each scanner request is
    /// one trace across the nodes and the endpoint. Without it nothing is exported.
    #[arg(long, env = "ISM_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Share of new traces recorded (0 to 1); a request whose caller sampled it is always
    /// recorded (parent-based).
    #[arg(long, env = "ISM_TRACE_SAMPLE_RATIO", default_value_t = 1.0)]
    trace_sample_ratio: f64,
}

/// Shortest `--admin-token` accepted: the token opens everything, so one an operator typed
/// (`change-me`, a word) must not be; a generated one is 69 characters. Checked here, on what an
/// operator passes, rather than in `NodeConfig`, which tests build with short tokens of their own.
const MIN_ADMIN_TOKEN: usize = 32;

/// An operator's administrator token too short to be a secret; the message names the flag and the
/// minimum, never the token.
#[derive(Debug, thiserror::Error)]
#[error("--admin-token / ISM_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN} characters, not {0} (make one with `openssl rand -hex 32`, or leave it out to have one generated in <data-dir>/admin-token)")]
struct WeakAdminToken(usize);

/// The `--admin-token` given, refused if it is weaker than [`MIN_ADMIN_TOKEN`].
fn strong_admin_token(token: Option<String>) -> Result<Option<String>, WeakAdminToken> {
    match token {
        Some(t) if t.chars().count() < MIN_ADMIN_TOKEN => Err(WeakAdminToken(t.chars().count())),
        other => Ok(other),
    }
}

/// `90`, `90s`, `2m`, `24h`, `14d` as milliseconds.
fn duration_ms(raw: &str) -> Result<i64, String> {
    let raw = raw.trim();
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: i64 =
        number.parse().map_err(|_| format!("{raw:?} is not a duration like 90s, 2m, 24h"))?;
    let unit_ms = match unit {
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(unit_ms).ok_or_else(|| format!("{raw:?} is too long"))
}

#[derive(clap::Subcommand)]
enum Command {
    /// Make a cluster CA and a certificate for each node (mutual TLS on relay links), into
    /// DIR: `cluster-ca.pem`, `<node>.pem`, `<node>.key`. Copy the CA and each node's pair to
    /// that node's --cluster-tls-dir.
    ClusterCerts {
        #[arg(long)]
        dir: PathBuf,
        /// The node names (their --node-id).
        #[arg(required = true)]
        nodes: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    // Every file the node creates (event log, projections, secrets, also those the stores add
    // later) is its owner's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let args = Args::parse();
    if let Some(Command::ClusterCerts { dir, nodes }) = &args.command {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        ism_gateway::cluster::tls::generate(dir, nodes).context("making cluster certificates")?;
        println!("cluster CA and certificates for {} in {}", nodes.join(", "), dir.display());
        return Ok(());
    }
    // Before any thread starts: this may start the process again (`ism_glibc`).
    let glibc = ism_glibc::set_up();
    let mut config = NodeConfig::local(&args.node_id, &args.data_dir);
    config.event_log = args.event_log;
    config.endpoint_listen = args.endpoint_listen;
    config.socks_listen = args.socks_listen;
    config.http_proxy_listen = args.http_proxy_listen;
    config.api_listen = args.api_listen;
    config.ws_path = args.ws_path;
    config.tls_files = args.tls_cert.zip(args.tls_key);
    config.tls_names = args.tls_names;
    config.key_secret_file = args.key_secret_file;
    config.admin_token = strong_admin_token(args.admin_token)?;
    config.session.max_streams = args.max_streams_per_endpoint;
    config.session.budget =
        ism_tunnel_proto::CreditBudget::new(args.window_budget_mib.saturating_mul(1 << 20));
    let fd_limit = ism_tunnel::fd_limit::raise();
    config.max_pending_connections = args.max_pending_connections.unwrap_or_else(|| {
        let quarter = fd_limit.map_or(1024, |l| usize::try_from(l / 4).unwrap_or(usize::MAX));
        quarter.clamp(64, 16384)
    });
    config.stream_limits = ism_gateway::state::StreamLimits {
        idle_timeout: (args.stream_idle_timeout > 0)
            .then(|| std::time::Duration::from_secs(args.stream_idle_timeout)),
        half_closed_timeout: std::time::Duration::from_secs(args.half_closed_timeout.max(1)),
        per_credential: args.max_streams_per_credential.max(1),
        max_unrecorded: args.max_unrecorded_facts.max(1),
        queue: ism_gateway::stream_queue::QueueLimits {
            length: args.stream_queue,
            timeout: std::time::Duration::from_millis(args.queue_timeout.max(0) as u64),
        },
    };
    config.public = ism_gateway::public_address::PublicConfig {
        endpoint: args.public_address,
        socks: args.public_socks_address,
        http_proxy: args.public_http_proxy_address,
    };
    config.scan_capacity = usize::from(args.scan_capacity);
    config.tunnel_threads =
        args.tunnel_threads.unwrap_or_else(ism_gateway::node::default_tunnel_threads);
    config.notify.smtp = args.smtp_url.map(|url| (url, args.mail_from));
    config.notify.manage_url = args.manage_url;
    config.notify.settings.offline_grace_ms = args.offline_grace;
    config.notify.settings.unstable_count = args.unstable_count.max(1);
    config.notify.settings.unstable_window_ms = args.unstable_window;
    let drain_timeout = std::time::Duration::from_secs(args.drain_timeout);
    if let Some(dir) = &args.cluster_tls_dir {
        let tls = ClusterTlsFiles::in_dir(dir, &args.node_id);
        let mut cluster = ClusterConfig::new(args.relay_listen, tls);
        cluster.relay_advertise = args.relay_advertise;
        cluster.drain_timeout = drain_timeout;
        config.cluster = Some(cluster);
    }

    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
    })
    .block_on(async move {
        // The exporter's connection runs on this runtime.
        let tracing = Tracing::new(&TraceConfig {
            service: "ism-gateway",
            instance: args.node_id.clone(),
            otlp_endpoint: args.otlp_endpoint.clone(),
            sample_ratio: args.trace_sample_ratio,
        })?;
        ism_telemetry::logs::init(args.log_format, &tracing)?;
        glibc.log();
        let stopped = run(config, drain_timeout).await;
        // The last spans (the stop's own) are exported before the process ends.
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
        stopped
    })
}

/// Runs the node until SIGINT or SIGTERM, then stops it (draining first in a cluster).
async fn run(config: NodeConfig, drain_timeout: std::time::Duration) -> anyhow::Result<()> {
    // systemd stops a service with SIGTERM; a terminal with SIGINT. Both stop it gracefully,
    // from the moment the node says it is up (the handlers are in place before that).
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let node = ism_gateway::start(config).await.context("cannot start the gateway node")?;
    println!("ism-gateway {} node {} is up", env!("CARGO_PKG_VERSION"), node.state.node_id);
    println!("  endpoints connect to  {}", node.state.endpoint_url());
    println!("  scanners connect to   socks5://{}", node.state.public.socks);
    println!("                   or   http://{} (HTTP proxy)", node.state.public.http_proxy);
    println!("  management API        http://{}", node.addresses.api);
    if let Some(relay) = node.state.cluster.relay_address() {
        println!("  relay links           {relay} (the other nodes of the cluster)");
    }
    if let Some(ca) = &node.ca_file {
        println!("  private CA for endpoints (gatewayCaFile): {}", ca.display());
    }
    println!("  event log             {}", node.state.log.describe());
    match &node.admin_token_file {
        Some(file) => {
            println!("  admin token           {} (ism's ISM_API_TOKEN)", file.display())
        }
        None => println!("  admin token           as given by --admin-token / ISM_ADMIN_TOKEN"),
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    // In a cluster, the endpoints move to the other nodes first (make before break); a
    // second signal stops at once.
    if node.state.cluster.others_serving().await {
        println!("draining: endpoints move to the other nodes (up to {drain_timeout:?})");
        tokio::select! {
            _ = node.drain(drain_timeout + ism_gateway::cluster::draining::QUIET) => {}
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    println!("shutting down");
    node.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_admin_token_is_refused_naming_the_flag_and_the_minimum() {
        let args = Args::try_parse_from(["ism-gateway", "--admin-token", "short"]);
        let refused = args.map(|a| strong_admin_token(a.admin_token));
        let message = match refused {
            Ok(Err(weak)) => weak.to_string(),
            other => panic!("a 5-character admin token was not refused: {other:?}"),
        };
        assert!(message.contains("--admin-token") && message.contains("32"), "{message}");
        assert!(!message.contains("short"), "the message shows the token: {message}");
        let generated = format!("isma_{}", "0".repeat(64));
        assert_eq!(strong_admin_token(Some(generated.clone())).ok(), Some(Some(generated)));
        assert!(matches!(strong_admin_token(None), Ok(None)));
    }
}
