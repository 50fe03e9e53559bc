//! `ism-bench cluster`: the gateway cluster as `deploy/cluster/local.sh` runs it from the
//! project's own files (three nats-servers as one JetStream cluster with R3 streams, three gateway
//! nodes, HAProxy in front), measured in three parts:
//!
//! 1. the relay hop: the same work as the main benchmark through the node holding an endpoint and
//!    through another node, which relays each stream one hop to it;
//! 2. thousands of simulated endpoints connecting through HAProxy: how fast, what each costs each
//!    node, how evenly they spread;
//! 3. `kill -9` of the node holding the most: how long until each of its endpoints has a session
//!    on another node (p50 / p99 / max), and how many scanner streams, opened through HAProxy all
//!    along, failed meanwhile and after.

use crate::compare::{self, ByPath, Figures, Workload};
use crate::measure::{self, quantile, Route};
use crate::roles::rss_kib_of;
use crate::socks::Login;
use crate::targets::{self, Targets};
use anyhow::{bail, ensure, Context};
use ism_cli::ApiClient;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// `deploy/cluster/local.sh`, from the workspace root.
const LOCAL_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/cluster/local.sh");

/// The nodes `deploy/cluster` runs (its HAProxy configuration names three).
const NODES: [usize; 3] = [1, 2, 3];

/// Port offsets `local.sh` uses (see its header): HAProxy's at the base, node N's at N * 100.
const ENDPOINT_PORT: u16 = 43;
const SOCKS_PORT: u16 = 80;
const API_PORT: u16 = 70;

/// Scanner endpoints the streams during the kill go to (spread over the nodes like the rest).
const SCANNED_ENDPOINTS: usize = 300;

#[derive(clap::Args)]
pub struct Options {
    /// Gateway nodes: `deploy/cluster` runs three.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Simulated endpoints connected through HAProxy (one process of agents).
    #[arg(long, default_value_t = 10_000)]
    endpoints: usize,
    /// Scanners opening streams through HAProxy, one after another each, during the kill.
    #[arg(long, default_value_t = 8)]
    scanners: usize,
    /// Seconds per relay-hop measurement.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Rounds of the relay-hop measurements (medians over them).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The cluster's ports start here (`ISM_CLUSTER_PORT_BASE`), apart from a `local.sh up`
    /// cluster's 20000.
    #[arg(long, default_value_t = 31_000)]
    port_base: u16,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run the cluster in this directory and keep it afterwards, with each process's log
    /// (default: a temporary directory, deleted).
    #[arg(long)]
    cluster_dir: Option<PathBuf>,
}

/// The cluster `local.sh up` started in a directory of its own; `local.sh down` when dropped.
struct LocalCluster {
    dir: ClusterDir,
    base: u16,
}

/// Where the cluster keeps its state and logs.
enum ClusterDir {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl ClusterDir {
    fn path(&self) -> &Path {
        match self {
            ClusterDir::Temporary(dir) => dir.path(),
            ClusterDir::Kept(dir) => dir,
        }
    }
}

impl LocalCluster {
    fn up(base: u16, max_connections: usize, kept: Option<&Path>) -> anyhow::Result<LocalCluster> {
        let dir = match kept {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                ClusterDir::Kept(dir.to_path_buf())
            }
            None => ClusterDir::Temporary(tempfile::tempdir()?),
        };
        let cluster = LocalCluster { dir, base };
        eprintln!("starting the cluster: deploy/cluster/local.sh up (ports from {base})");
        cluster.local_sh("up", &[("ISM_LB_MAXCONN", max_connections.to_string())])?;
        Ok(cluster)
    }

    fn local_sh(&self, command: &str, env: &[(&str, String)]) -> anyhow::Result<()> {
        let status = std::process::Command::new("bash")
            .arg(LOCAL_SH)
            .arg(command)
            .env("ISM_CLUSTER_DIR", self.dir.path())
            .env("ISM_CLUSTER_PORT_BASE", self.base.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .status()?;
        ensure!(status.success(), "deploy/cluster/local.sh {command} failed: {status}");
        Ok(())
    }

    /// HAProxy's address for `offset`.
    fn balancer(&self, offset: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + offset))
    }

    /// Node `n`'s address for `offset`.
    fn node(&self, n: usize, offset: u16) -> SocketAddr {
        let n = u16::try_from(n).unwrap_or(0);
        SocketAddr::from(([127, 0, 0, 1], self.base + n * 100 + offset))
    }

    fn pid(&self, n: usize) -> anyhow::Result<u32> {
        let file = self.dir.path().join(format!("run/node-{n}.pid"));
        let pid = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
        Ok(pid.trim().parse()?)
    }

    fn admin_token(&self) -> anyhow::Result<String> {
        let token = std::fs::read_to_string(self.dir.path().join("secrets/admin-token"))?;
        Ok(token.trim().to_string())
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        eprintln!("stopping the cluster: deploy/cluster/local.sh down");
        if let Err(e) = self.local_sh("down", &[]) {
            eprintln!("{e}");
        }
    }
}

/// What each part of the run works with.
#[derive(Clone, Copy)]
struct Bench<'a> {
    o: &'a Options,
    cluster: &'a LocalCluster,
    setup: &'a Setup,
    targets: &'a Targets,
    runtime: &'a tokio::runtime::Runtime,
    /// Where the endpoints' install directories go.
    work: &'a Path,
}

/// The gateway objects the benchmark made.
struct Setup {
    secret: String,
    relay_key: String,
    keys: Vec<String>,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    ensure!(o.nodes == NODES.len(), "deploy/cluster runs three nodes: --nodes 3");
    ism_tunnel::fd_limit::raise();
    let cluster = LocalCluster::up(o.port_base, balancer_connections(), o.cluster_dir.as_deref())?;
    let started = Instant::now();
    let api =
        ApiClient::new(&format!("http://{}", cluster.balancer(API_PORT)), &cluster.admin_token()?);
    let setup = actix_rt::System::new().block_on(async {
        let gw = api.create_gateway("bench-cluster", "").await?;
        let gw = gw["id"].as_str().context("gateway id")?.to_string();
        let relay = api.add_endpoint(&gw, "relay", "", "linux").await?;
        let secret = api.issue_scanner_credential(&gw, "bench").await?["secret"]
            .as_str()
            .context("secret")?
            .to_string();
        let keys = crate::add_endpoints(&api, &gw, o.endpoints).await?;
        let relay_key = relay["key"].as_str().context("key")?.to_string();
        Ok::<_, anyhow::Error>(Setup { secret, relay_key, keys })
    })?;
    eprintln!(
        "added {} endpoints through the API in {:.1} s",
        o.endpoints + 1,
        started.elapsed().as_secs_f64()
    );
    let work = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let targets = runtime.block_on(async {
        let echo = targets::echo().await;
        Targets { sink: targets::sink().await, echo, http: targets::http().await, hold: echo }
    });
    let mut f = json!({ "nodes": o.nodes, "endpoints": o.endpoints, "rounds": o.rounds });
    let bench = Bench {
        o,
        cluster: &cluster,
        setup: &setup,
        targets: &targets,
        runtime: &runtime,
        work: work.path(),
    };
    let by_path = relay_hop(bench)?;
    f["relay_hop"] = json!(by_path);
    let spread = connect_and_kill(bench, &mut f)?;
    print_report(&f, &by_path, &spread);
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_string_pretty(&f)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// The same work through the node holding an endpoint (node-1, which the endpoint dials
/// directly) and through node-2, which relays each stream to node-1.
fn relay_hop(bench: Bench<'_>) -> anyhow::Result<ByPath> {
    let Bench { o, cluster, setup, targets, runtime, work } = bench;
    let (agent, _) = crate::start_endpoints(
        |_| cluster.node(1, ENDPOINT_PORT).to_string(),
        &cluster.ca_file(),
        std::slice::from_ref(&setup.relay_key),
        "127.0.0.1",
        &work.join("relay"),
    )?;
    let login = Login { username: "relay".into(), password: setup.secret.clone() };
    let through = |n: usize, key: &'static str, processes: Vec<u32>| compare::Path {
        key,
        route: Route::Socks { proxy: cluster.node(n, SOCKS_PORT), login: login.clone() },
        processes,
    };
    let (owner, other) = (cluster.pid(1)?, cluster.pid(2)?);
    let paths = [
        through(1, "owner", vec![owner, agent.id()]),
        through(2, "relayed", vec![other, owner, agent.id()]),
    ];
    let d = Duration::from_secs(o.seconds);
    runtime.block_on(async {
        // node-2 learns who holds the endpoint from the ownership records it watches.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = measure::echo_once(&paths[1].route, targets.echo).await {
            ensure!(Instant::now() < deadline, "no stream relayed through node-2 within 30 s: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        compare::interleave_all(&Workload::ALL, &paths, o.rounds, targets, d).await
    })
}

/// Where the endpoints landed: count by node name.
type Spread = BTreeMap<String, usize>;

/// Connects the endpoints through HAProxy, then kills the node holding the most of them while
/// scanners open streams through HAProxy; writes the figures into `f`.
fn connect_and_kill(bench: Bench<'_>, f: &mut serde_json::Value) -> anyhow::Result<Spread> {
    let Bench { o, cluster, setup, runtime, work, .. } = bench;
    let pids: Vec<u32> = NODES.iter().map(|&n| cluster.pid(n)).collect::<Result<_, _>>()?;
    let rss_before: Vec<u64> = pids.iter().map(|&pid| rss_kib_of(pid)).collect();
    // HAProxy holds two descriptors per connection and will not start with more connections
    // than its descriptor limit allows: endpoints beyond what it can hold beside the scanners
    // are given the three nodes' addresses instead (each starting with another node), as a
    // deployment without a load balancer would.
    let via_balancer = o.endpoints.min(balancer_connections().saturating_sub(2 * o.scanners + 50));
    f["via_haproxy"] = json!(via_balancer);
    eprintln!(
        "connecting {} endpoints: {via_balancer} through HAProxy, {} to the nodes directly",
        o.endpoints,
        o.endpoints - via_balancer
    );
    let balancer = cluster.balancer(ENDPOINT_PORT).to_string();
    let nodes: Vec<String> =
        NODES.iter().map(|&n| cluster.node(n, ENDPOINT_PORT).to_string()).collect();
    let gateway_of = |i: usize| match i < via_balancer {
        true => balancer.clone(),
        false => {
            let first = i % nodes.len();
            [&nodes[first..], &nodes[..first]].concat().join(",")
        }
    };
    let (mut agents, seconds) = crate::start_endpoints(
        gateway_of,
        &cluster.ca_file(),
        &setup.keys,
        "127.0.0.1",
        &work.join("endpoints"),
    )?;
    let rss_after: Vec<u64> = pids.iter().map(|&pid| rss_kib_of(pid)).collect();
    let spread = parse_spread(&agents.line()?)?;
    f["connect_seconds"] = json!(seconds);
    f["connect_per_s"] = json!(o.endpoints as f64 / seconds);
    f["spread"] = json!(spread);
    f["simulator_mib"] = json!(agents.rss_kib() as f64 / 1024.0);
    let mut per_endpoint = BTreeMap::new();
    for (i, &n) in NODES.iter().enumerate() {
        let name = format!("node-{n}");
        let count = spread.get(&name).copied().unwrap_or(0).max(1) as f64;
        let grown = rss_after[i].saturating_sub(rss_before[i]) as f64;
        per_endpoint.insert(name, grown / count);
    }
    f["kib_per_endpoint"] = json!(per_endpoint);
    f["node_rss_mib"] = json!(rss_after.iter().map(|k| *k as f64 / 1024.0).collect::<Vec<_>>());

    let (victim_name, victim_count) =
        spread.iter().max_by_key(|(_, n)| **n).context("no endpoint connected")?;
    let victim = NODES
        .iter()
        .position(|n| format!("node-{n}") == *victim_name)
        .context("an endpoint on a node the benchmark did not start")?;
    let scanners = Scanners::start(bench);
    // Measurement windows, not waits for a state: the scanners' streams before the kill, and
    // after every endpoint is back.
    std::thread::sleep(BEFORE_KILL);
    let killed_ms = unix_ms();
    let killed_at = Instant::now();
    eprintln!("kill -9 {victim_name} (pid {}), holding {victim_count} endpoints", pids[victim]);
    let pid = rustix::process::Pid::from_raw(i32::try_from(pids[victim])?).context("a pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)?;
    agents.tell(&format!("lost {victim_name} {killed_ms}"))?;
    let back = agents.line()?;
    let all_back_at = Instant::now();
    let (not_back, mut back_ms) = parse_back(&back)?;
    std::thread::sleep(AFTER_ALL_BACK);
    let streams = scanners.stop(runtime);
    back_ms.sort_by(|a, b| a.total_cmp(b));
    f["killed"] = json!({
        "node": victim_name,
        "endpoints": victim_count,
        "not_back": not_back,
        "back_p50_ms": quantile(&back_ms, 0.5),
        "back_p99_ms": quantile(&back_ms, 0.99),
        "back_max_ms": back_ms.last(),
    });
    // Each stream counted in the phase it started in (a stream started before the kill may have
    // failed because of it).
    let mut phases = [[0usize; 2]; 3];
    let mut failures = BTreeMap::<String, usize>::new();
    for (at, failure) in &streams {
        let phase = match () {
            _ if *at < killed_at => 0,
            _ if *at < all_back_at => 1,
            _ => 2,
        };
        phases[phase][0] += 1;
        phases[phase][1] += usize::from(failure.is_some());
        if let Some(failure) = failure {
            let phase = ["started before the kill", "until all back", "after"][phase];
            *failures.entry(format!("{phase}: {failure}")).or_default() += 1;
        }
    }
    f["scanner_failures"] = json!(failures);
    let phase = |[streams, failed]: [usize; 2]| json!({ "streams": streams, "failed": failed });
    f["scanner_streams"] = json!({
        "before_kill": phase(phases[0]),
        "until_all_back": phase(phases[1]),
        "after_all_back": phase(phases[2]),
    });
    drop(agents);
    Ok(spread)
}

/// Scanners opening streams through HAProxy one after another, each a 1-byte round trip to the
/// echo target through one of the first endpoints in turn; every outcome kept with its start.
struct Scanners {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
}

impl Scanners {
    fn start(bench: Bench<'_>) -> Scanners {
        let Bench { o, cluster, setup, targets, runtime, .. } = bench;
        let echo = targets.echo;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let endpoints = o.endpoints.clamp(1, SCANNED_ENDPOINTS);
        let tasks = (0..o.scanners)
            .map(|s| {
                let (stop, outcomes) = (stop.clone(), outcomes.clone());
                let (proxy, password) = (cluster.balancer(SOCKS_PORT), setup.secret.clone());
                runtime.spawn(async move {
                    let mut turn = s;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        turn += 1;
                        let login = Login {
                            username: format!("sim{}", turn % endpoints),
                            password: password.clone(),
                        };
                        let route = Route::Socks { proxy, login };
                        let (once, started) = (measure::echo_once(&route, echo), Instant::now());
                        let failure = match tokio::time::timeout(STREAM_DEADLINE, once).await {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(e.to_string()),
                            Err(_) => Some(format!("no answer within {STREAM_DEADLINE:?}")),
                        };
                        outcomes.lock().expect("outcomes").push((started, failure));
                    }
                })
            })
            .collect();
        Scanners { stop, tasks, outcomes }
    }

    fn stop(self, runtime: &tokio::runtime::Runtime) -> Vec<Outcome> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(futures_util::future::join_all(self.tasks));
        std::mem::take(&mut *self.outcomes.lock().expect("outcomes"))
    }
}

/// The connections HAProxy can hold at once here: two descriptors each, within the descriptor
/// limit this process (and HAProxy, started the same way) may raise itself to, less a margin
/// for its listeners and health checks.
fn balancer_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let limit = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    (limit.saturating_sub(100) / 2).min(100_000)
}

/// When a scanner stream started, and why it failed if it did.
type Outcome = (Instant, Option<String>);

/// How long the scanners run before the kill, and after every endpoint is back.
const BEFORE_KILL: Duration = Duration::from_secs(2);
const AFTER_ALL_BACK: Duration = Duration::from_secs(3);

/// How long one scanner stream may take before it counts as failed.
const STREAM_DEADLINE: Duration = Duration::from_secs(10);

fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// `nodes node-1=3334 node-2=3333 ...` from the agents' process.
fn parse_spread(line: &str) -> anyhow::Result<Spread> {
    let Some(rest) = line.strip_prefix("nodes ") else {
        bail!("expected `nodes ...`, got {line:?}")
    };
    rest.split_whitespace()
        .map(|pair| {
            let (node, count) = pair.split_once('=').context("node=count")?;
            Ok((node.to_string(), count.parse()?))
        })
        .collect()
}

/// `back <not back> <ms>...` from the agents' process.
fn parse_back(line: &str) -> anyhow::Result<(usize, Vec<f64>)> {
    let mut words = line.strip_prefix("back ").context("expected `back ...`")?.split_whitespace();
    let not_back = words.next().context("not back")?.parse()?;
    let ms = words.map(|w| w.parse::<f64>()).collect::<Result<_, _>>()?;
    Ok((not_back, ms))
}

fn print_report(f: &serde_json::Value, by_path: &ByPath, spread: &Spread) {
    let empty = Figures::new();
    let (owner, relayed) =
        (by_path.get("owner").unwrap_or(&empty), by_path.get("relayed").unwrap_or(&empty));
    println!("\nthe relay hop (scanner -> node-2 -> node-1 -> endpoint, against node-1 directly):");
    println!("| measurement | through the owner | through another node | relayed / owner |");
    println!("|---|---|---|---|");
    for (figure, label) in crate::report::ROWS {
        let (Some(a), Some(b)) = (owner.get(figure), relayed.get(figure)) else { continue };
        println!("| {label} | {a:.2} | {b:.2} | {:.2} |", b / a);
    }
    let spread: Vec<String> = spread.iter().map(|(n, c)| format!("{n} {c}")).collect();
    let kib: Vec<String> = f["kib_per_endpoint"]
        .as_object()
        .map(|o| {
            o.iter().map(|(n, k)| format!("{n} {:.1}", k.as_f64().unwrap_or(f64::NAN))).collect()
        })
        .unwrap_or_default();
    let number = |key: &str| f[key].as_f64().unwrap_or(f64::NAN);
    println!(
        "\n{} endpoints ({} through HAProxy, the rest to the nodes directly): connected in {:.1} s ({:.0}/s); spread {}; KiB per endpoint: {}; simulator {:.0} MiB",
        f["endpoints"],
        f["via_haproxy"],
        number("connect_seconds"),
        number("connect_per_s"),
        spread.join(", "),
        kib.join(", "),
        number("simulator_mib"),
    );
    let k = &f["killed"];
    println!(
        "kill -9 {} holding {} endpoints: back on another node p50 {} ms, p99 {} ms, max {} ms; not back within 2 min: {}",
        k["node"], k["endpoints"], k["back_p50_ms"], k["back_p99_ms"], k["back_max_ms"], k["not_back"]
    );
    println!("scanner streams through HAProxy (failed / all): {}", f["scanner_streams"]);
    println!("why they failed: {}", f["scanner_failures"]);
}
