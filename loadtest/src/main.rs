//! `ism-bench`: one run measures the same work direct on loopback, through the whole path
//! (scanner -> gateway SOCKS5 -> TLS WebSocket -> endpoint -> target) and through wstunnel (and
//! rathole, and two bare relays), the paths in turn round after round, and prints them side by
//! side; plus the memory a held connection and an idle endpoint cost, fairness under a bulk
//! transfer, and a firehose of opens beyond the cap. `ism-bench endpoints --count N` drives N
//! simulated endpoints (each a real wss connection with its own key) against one node;
//! `ism-bench cluster` measures a three-node cluster behind HAProxy (see [`cluster`]);
//! `ism-bench events` the event plane on both logs (see [`events`]).
//!
//! The gateway node, the endpoints and the other tunnels run as child processes (this binary in
//! other roles, or theirs), so the CPU and memory figures are theirs, not the load generator's.

mod anchor;
mod cluster;
mod compare;
mod events;
mod link_delay;
mod measure;
mod relay;
mod report;
mod roles;
mod socks;
mod targets;

use anyhow::Context;
use clap::{Parser, Subcommand};
use compare::{ByPath, Workload};
use ism_cli::ApiClient;
use measure::Route;
use roles::{endpoint_config, ChildRole, NodeInfo};
use serde_json::json;
use socks::Login;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use targets::Targets;

/// The wstunnel the comparison uses unless told otherwise: the anchor build beside the workspace
/// (`../shared/anchors/wstunnel` from the workspace root; see the README there).
const ANCHOR_WSTUNNEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/anchors/wstunnel");

#[derive(Parser)]
#[command(about = "Side-by-side benchmark of the tunnel against direct loopback and wstunnel.")]
struct Args {
    /// Seconds per throughput or latency measurement (each runs once per path and round).
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Rounds of the single, download, parallel8, http and open measurements: each round runs
    /// every path in turn, and the figures are the medians over the rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Connections held open through each tunnel to measure their memory.
    #[arg(long, default_value_t = 10_000)]
    idle_streams: usize,
    /// Idle endpoints connected to measure their memory.
    #[arg(long, default_value_t = 1_000)]
    idle_endpoints: usize,
    /// Stream opens in the firehose beyond the cap.
    #[arg(long, default_value_t = 50_000)]
    firehose: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only these measurements (comma-separated): single, download, parallel8, http, open,
    /// limits (the relay chains as further paths; alone, with all five of the former), fairness,
    /// idle-streams (held connections, and the firehose), idle-endpoints. Handy under a profiler.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The wstunnel binary (10.6.2) to measure beside ours, or `none`. Default: the anchor build
    /// at `../shared/anchors/wstunnel` from the workspace root, when it is there.
    #[arg(long)]
    wstunnel: Option<PathBuf>,
    /// Milliseconds of latency each way between each tunnel's two halves (ours: the agent and
    /// the gateway; wstunnel: its client and server), from a delaying relay: a scanner reaching
    /// an endpoint across the internet. 0 (the default): loopback as it is.
    #[arg(long, default_value_t = 0)]
    link_delay_ms: u64,
    /// Also measure rathole (TLS transport) with the same work in the same run: the path to its
    /// binary (`cargo install rathole`; not needed for anything else).
    #[arg(long)]
    rathole: Option<PathBuf>,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand)]
enum Role {
    /// Simulate COUNT endpoints against one node and report connect rate and memory.
    Endpoints {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
    /// A three-node cluster (deploy/cluster/local.sh) behind HAProxy: the relay hop's cost, ENDPOINTS
    /// simulated endpoints connecting, and `kill -9` of a node: how long until its endpoints are
    /// back, how many scanner streams failed.
    Cluster(cluster::Options),
    /// The event plane on both logs: appends per second (1, 16, 256 writers; one hot aggregate;
    /// batches of told facts), a stored history replayed into a fresh directory, and `ism audit`
    /// over it (time to first line, total, peak RSS).
    Events(events::Options),
    /// (internal) Run a gateway node.
    #[command(hide = true)]
    GatewayNode {
        data_dir: PathBuf,
        max_streams: usize,
        /// A `nats://` URL: JetStream instead of the embedded log.
        #[arg(long)]
        event_log: Option<String>,
    },
    /// (internal) Run the endpoints installed under this directory.
    #[command(hide = true)]
    EndpointAgents { dir: PathBuf },
    /// (internal) Run a target that holds connections open.
    #[command(hide = true)]
    HoldTarget,
    /// (internal) Run two relays in front of each TARGET, with TLS between them or not.
    #[command(hide = true)]
    RelayChains {
        targets: Vec<std::net::SocketAddr>,
        #[arg(long)]
        tls: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.role {
        Some(Role::GatewayNode { data_dir, max_streams, event_log }) => {
            roles::run_gateway(data_dir, *max_streams, event_log.clone())
        }
        Some(Role::EndpointAgents { dir }) => roles::run_endpoints(dir),
        Some(Role::HoldTarget) => roles::run_hold_target(),
        Some(Role::RelayChains { targets, tls }) => roles::run_relay_chains(targets, *tls),
        Some(Role::Endpoints { count }) => many_endpoints(*count),
        Some(Role::Cluster(options)) => cluster::run(options),
        Some(Role::Events(options)) => events::run(options),
        None => benchmark(&args),
    }
}

/// A gateway node child and an administrator client for it.
struct Node {
    info: NodeInfo,
    process: ChildRole,
    _data: tempfile::TempDir,
}

impl Node {
    fn start(max_streams: usize) -> anyhow::Result<Node> {
        Self::start_on(max_streams, None)
    }

    /// A node on `event_log` (a `nats://` URL), or on the embedded log.
    fn start_on(max_streams: usize, event_log: Option<&str>) -> anyhow::Result<Node> {
        let data = tempfile::tempdir()?;
        let dir = data.path().display().to_string();
        let max = max_streams.to_string();
        let mut role = vec!["gateway-node", &dir, &max];
        if let Some(url) = event_log {
            role.extend(["--event-log", url]);
        }
        let mut process = ChildRole::spawn(role)?;
        let info: NodeInfo =
            serde_json::from_str(&process.line()?).context("the node's addresses")?;
        Ok(Node { info, process, _data: data })
    }

    fn api(&self) -> ApiClient {
        ApiClient::new(&format!("http://{}", self.info.api), &self.info.admin_token)
    }

    /// A gateway and an endpoint called `name` on it, its agent connected (a child process
    /// installed under `dir`, allowed to reach loopback), and a scanner credential's secret.
    /// The agent dials `wss`, the node's endpoint URL or a relay's in front of it.
    fn with_endpoint(
        &self,
        name: &str,
        dir: &std::path::Path,
        wss: &str,
    ) -> anyhow::Result<(ChildRole, String)> {
        let (key, secret) = actix_rt::System::new().block_on(async {
            let api = self.api();
            let gw = api.create_gateway(name, "").await?;
            let gw = gw["id"].as_str().context("gateway id")?.to_string();
            let added = api.add_endpoint(&gw, name, "", "linux").await?;
            let secret = api.issue_scanner_credential(&gw, name).await?["secret"]
                .as_str()
                .context("secret")?
                .to_string();
            anyhow::Ok((added["key"].as_str().context("key")?.to_string(), secret))
        })?;
        let wss = wss.to_string();
        let keys = [key];
        let (agents, _) =
            start_endpoints(|_| wss.clone(), &self.info.ca_file, &keys, "127.0.0.1", dir)?;
        Ok((agents, secret))
    }
}

/// Adds `count` endpoints to `gateway` (16 requests at a time); returns their keys.
async fn add_endpoints(
    api: &ApiClient,
    gateway: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::with_capacity(count);
    let names: Vec<String> = (0..count).map(|i| format!("sim{i}")).collect();
    for chunk in names.chunks(16) {
        let adds = chunk.iter().map(|name| api.add_endpoint(gateway, name, "", "linux"));
        for added in futures_util::future::join_all(adds).await {
            keys.push(added?["key"].as_str().context("key")?.to_string());
        }
    }
    Ok(keys)
}

/// Starts a process of endpoint agents, one per key, the `i`th dialling `gateway_of(i)` (whose
/// certificate `ca_file` signed); returns it once all are connected, with the seconds that took.
fn start_endpoints(
    gateway_of: impl Fn(usize) -> String,
    ca_file: &std::path::Path,
    keys: &[String],
    allowed: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(ChildRole, f64)> {
    for (i, key) in keys.iter().enumerate() {
        let install = dir.join(format!("ep{i}"));
        endpoint_config(&install, &gateway_of(i), ca_file, key, allowed, 65_536)?;
    }
    let mut process = ChildRole::spawn(["endpoint-agents", &dir.display().to_string()])?;
    let line = process.line()?;
    let seconds = line
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .context("connected <n> <seconds>")?;
    Ok((process, seconds))
}

fn benchmark(args: &Args) -> anyhow::Result<()> {
    ism_tunnel::fd_limit::raise();
    let want = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let d = Duration::from_secs(args.seconds);
    // The cap is what the idle streams fill, so that the firehose after them is all beyond it.
    let node = Node::start(args.idle_streams.max(64))?;
    let mut hold_target = ChildRole::spawn(["hold-target"])?;
    let hold: std::net::SocketAddr =
        hold_target.line()?.parse().context("the hold target's address")?;
    let work = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let link_delay = Duration::from_millis(args.link_delay_ms);
    // The relay's tasks run on the runtime's workers between the `block_on`s.
    let wss = match link_delay.is_zero() {
        true => node.info.wss.clone(),
        false => runtime.block_on(link_delay::in_front_of(&node.info.wss, link_delay))?,
    };
    let (endpoint, secret) = node.with_endpoint("bench", work.path(), &wss)?;
    let mut f = json!({
        "rounds": args.rounds,
        "seconds": args.seconds,
        "link_delay_ms": args.link_delay_ms,
        "tcp_congestion_control": tcp_congestion_control(),
        // Every process of the run inherits it, and on this project's VM it moves the bulk
        // figures (loadtest/README.md, `glibc_tunables`).
        "glibc_tunables": std::env::var("GLIBC_TUNABLES").ok(),
        // Ours and the relays restart with glibc's vector copies on such a CPU, as the product's
        // binaries do; wstunnel and the load tools run as they are (`ism_glibc::copies`).
        "vector_copies": ism_glibc::copies::restart_planned(),
        // And they fix glibc's heap thresholds, as the product's binaries do (`ism_glibc::heap`).
        "heap_thresholds": ism_glibc::heap::thresholds_planned(),
    });
    let mut by_path = ByPath::new();
    runtime.block_on(async {
        let targets = Targets {
            sink: targets::sink().await,
            echo: targets::echo().await,
            http: targets::http().await,
            hold,
        };
        let login = Login { username: "bench".into(), password: secret };
        let socks: std::net::SocketAddr = node.info.socks.parse()?;
        let ours = compare::Path {
            key: "tunnel",
            route: Route::Socks { proxy: socks, login },
            processes: vec![node.process.id(), endpoint.id()],
        };
        let wstunnel = wstunnel_binary(args.wstunnel.as_deref());
        let anchors = anchor::Anchors::start(
            wstunnel.as_deref(),
            args.rathole.as_deref(),
            want("limits"),
            &targets,
            link_delay,
        )
        .await?;
        let paths = [
            vec![compare::Path::direct(), ours.clone()],
            anchors.tunnels(),
            anchors.relay_chains(),
        ]
        .concat();
        let workloads = rate_workloads(&want);
        by_path = compare::interleave_all(&workloads, &paths, args.rounds, &targets, d).await?;
        if want("open") {
            // Where an open's time goes through each SOCKS ingress, ours and wstunnel's.
            let names =
                ["tcp_connect", "socks_methods", "socks_auth", "socks_connect", "first_echo"];
            for path in std::iter::once(ours.clone()).chain(anchors.tunnels()) {
                let Route::Socks { proxy, login } = &path.route else { continue };
                let (proxy, login, echo) = (*proxy, login.clone(), targets.echo);
                let phases = measure::on_client_thread(move || async move {
                    measure::open_phases(proxy, &login, echo, d).await
                })
                .await?;
                f["open_phases_us"][path.key] =
                    json!(names.into_iter().zip(phases).collect::<compare::Figures>());
            }
        }
        if want("fairness") {
            let (alone, beside_bulk) =
                measure::fairness(&ours.route, targets.http, targets.sink, d).await?;
            f["fairness_p99_ms"] = json!({ "alone": alone, "beside_bulk": beside_bulk });
            f["fairness_p99_ratio"] = json!(beside_bulk / alone);
            // The same on loopback alone: what the machine's scheduling costs small requests
            // while a bulk transfer keeps the cores busy.
            let (alone, beside_bulk) =
                measure::fairness(&Route::Direct, targets.http, targets.sink, d).await?;
            f["direct_fairness_p99_ms"] = json!({ "alone": alone, "beside_bulk": beside_bulk });
        }
        if want("idle-streams") {
            let count = args.idle_streams.min(anchor::holdable_connections());
            for tunnel in anchors.tunnels() {
                let (kib, _held) = compare::held_connections(&tunnel, hold, count).await?;
                by_path.entry(tunnel.key).or_default().insert("idle_connection_kib", kib);
                f["idle_connections"] = json!(count);
            }
            // What the gateway and the endpoint hold per open, silent stream; the streams stay
            // open for the firehose, which they put beyond the endpoint's cap.
            let (kib, idle) = compare::held_connections(&ours, hold, args.idle_streams).await?;
            by_path.entry(ours.key).or_default().insert("idle_connection_kib", kib);
            f["idle_streams"] = json!(args.idle_streams);
            firehose(&mut f, &node.process, &ours.route, hold, args.firehose).await;
            drop(idle);
        }
        Ok::<_, anyhow::Error>(())
    })?;
    drop(endpoint);
    drop(hold_target);

    drop(node);

    if want("idle-endpoints") {
        let e = connect_endpoints(args.idle_endpoints)?;
        f["idle_endpoints"] = json!(args.idle_endpoints);
        f["idle_endpoint_kib"] = json!(e.kib_per_endpoint());
        f["endpoint_connect_per_s"] = json!(e.connected_per_s);
    }

    report::record_paths(&mut f, &by_path);
    report::print_table(&f, &by_path);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&f)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// The machine's TCP congestion control, which every path's loopback sockets use. It moves the
/// figures on a VM: with BBR, TCP paces its sends with timers, and on this project's KVM guest the
/// hypervisor's share of those interrupts lands on whatever the sending thread was running
/// (ARCHITECTURE.md, "Measured", 2026-12-03 late).
fn tcp_congestion_control() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The wstunnel binary to measure: `--wstunnel PATH`, none for `--wstunnel none`, else the
/// anchor build if it is there.
fn wstunnel_binary(given: Option<&std::path::Path>) -> Option<PathBuf> {
    match given {
        Some(path) if path == std::path::Path::new("none") => None,
        Some(path) => Some(path.to_path_buf()),
        None => Some(PathBuf::from(ANCHOR_WSTUNNEL)).filter(|path| path.exists()),
    }
}

/// The rate workloads `--only` names; all five when it names none of them but `limits` (the
/// relay chains are paths of these workloads, so `--only limits` alone means them all).
fn rate_workloads(want: &impl Fn(&str) -> bool) -> Vec<Workload> {
    let named: Vec<Workload> = Workload::ALL.into_iter().filter(|w| want(w.name())).collect();
    if named.is_empty() && want("limits") {
        Workload::ALL.to_vec()
    } else {
        named
    }
}

/// A firehose of `count` opens while the endpoint is at its cap: all refused, memory bounded, no
/// descriptor kept at the gateway once the refused connections are gone (10 s at most).
async fn firehose(
    f: &mut serde_json::Value,
    gateway: &ChildRole,
    route: &Route,
    hold: std::net::SocketAddr,
    count: usize,
) {
    let (rss, fds) = (gateway.rss_kib(), gateway.open_fds());
    let (refused, secs) = measure::firehose(route, hold, count).await;
    f["firehose_opens"] = json!(count);
    f["firehose_refused"] = json!(refused);
    f["firehose_opens_per_s"] = json!(count as f64 / secs);
    f["firehose_rss_mib"] = json!(gateway.rss_kib().saturating_sub(rss) as f64 / 1024.0);
    let settle = Instant::now() + Duration::from_secs(10);
    while gateway.open_fds() > fds && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f["firehose_fds_left"] = json!(gateway.open_fds().saturating_sub(fds));
}

/// What connecting many silent endpoints to one node cost.
struct EndpointFigures {
    count: usize,
    connected_per_s: f64,
    gateway_kib_before: u64,
    gateway_kib_after: u64,
    agents_kib: u64,
}

impl EndpointFigures {
    /// Gateway RSS growth per connected endpoint.
    fn kib_per_endpoint(&self) -> f64 {
        self.gateway_kib_after.saturating_sub(self.gateway_kib_before) as f64 / self.count as f64
    }
}

/// Adds `count` endpoints to a fresh node (a node that served the other measurements has freed
/// heap that new sessions would reuse, hiding their cost), then connects them all from one
/// process of agents and reads the node's RSS before and after.
fn connect_endpoints(count: usize) -> anyhow::Result<EndpointFigures> {
    let node = Node::start(64)?;
    let work = tempfile::tempdir()?;
    let started = Instant::now();
    let keys = actix_rt::System::new().block_on(async {
        let api = node.api();
        let gw = api.create_gateway("many", "").await?;
        add_endpoints(&api, gw["id"].as_str().context("gateway id")?, count).await
    })?;
    eprintln!(
        "added {count} endpoints through the API in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let gateway_kib_before = node.process.rss_kib();
    let (agents, secs) = start_endpoints(
        |_| node.info.wss.clone(),
        &node.info.ca_file,
        &keys,
        "127.0.0.1",
        work.path(),
    )?;
    let gateway_kib_after = node.process.rss_kib();
    Ok(EndpointFigures {
        count,
        connected_per_s: count as f64 / secs,
        gateway_kib_before,
        gateway_kib_after,
        agents_kib: agents.rss_kib(),
    })
}

fn many_endpoints(count: usize) -> anyhow::Result<()> {
    let e = connect_endpoints(count)?;
    println!(
        "{count} endpoints connected in {:.1} s ({:.0}/s); gateway RSS {} MiB -> {} MiB: {:.1} KiB per endpoint; endpoint process {} MiB",
        count as f64 / e.connected_per_s,
        e.connected_per_s,
        e.gateway_kib_before / 1024,
        e.gateway_kib_after / 1024,
        e.kib_per_endpoint(),
        e.agents_kib / 1024
    );
    Ok(())
}
