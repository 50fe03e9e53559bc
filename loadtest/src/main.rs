//! `ism-bench`: one run measures a direct loopback baseline and the same work through the whole
//! path (scanner -> gateway SOCKS5 -> TLS WebSocket -> endpoint -> target), and prints ratios;
//! plus the memory an idle stream and an idle endpoint cost, fairness under a bulk transfer, and
//! a firehose of opens beyond the cap. `ism-bench endpoints --count N` drives N simulated
//! endpoints (each a real wss connection with its own key) against one node.
//!
//! The gateway node and the endpoints run as child processes (this binary in other roles), so
//! the memory figures are theirs, not the load generator's.

mod anchor;
mod measure;
mod relay;
mod roles;
mod targets;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ism_cli::ApiClient;
use measure::{quantile, Route};
use roles::{endpoint_config, ChildRole, NodeInfo};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Side-by-side benchmark of the tunnel against direct loopback.")]
struct Args {
    /// Seconds per throughput or latency measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Idle streams opened to measure their memory.
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
    /// Run only these measurements (comma-separated): single, parallel8, http, open, limits (the
    /// relay chains), fairness, idle-streams (with the firehose), idle-endpoints. Handy under a
    /// profiler.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
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
    /// (internal) Run a gateway node.
    #[command(hide = true)]
    GatewayNode { data_dir: PathBuf, max_streams: usize },
    /// (internal) Run the endpoints installed under this directory.
    #[command(hide = true)]
    EndpointAgents { dir: PathBuf },
    /// (internal) Run a target that holds connections open.
    #[command(hide = true)]
    HoldTarget,
    /// (internal) Run two relays in front of TARGET, with TLS between them or not.
    #[command(hide = true)]
    RelayChain {
        target: std::net::SocketAddr,
        #[arg(long)]
        tls: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.role {
        Some(Role::GatewayNode { data_dir, max_streams }) => {
            roles::run_gateway(data_dir, *max_streams)
        }
        Some(Role::EndpointAgents { dir }) => roles::run_endpoints(dir),
        Some(Role::HoldTarget) => roles::run_hold_target(),
        Some(Role::RelayChain { target, tls }) => roles::run_relay_chain(*target, *tls),
        Some(Role::Endpoints { count }) => many_endpoints(*count),
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
        let data = tempfile::tempdir()?;
        let mut process = ChildRole::spawn(&[
            "gateway-node",
            &data.path().display().to_string(),
            &max_streams.to_string(),
        ])?;
        let info: NodeInfo =
            serde_json::from_str(&process.line()?).context("the node's addresses")?;
        Ok(Node { info, process, _data: data })
    }

    fn api(&self) -> ApiClient {
        ApiClient::new(&format!("http://{}", self.info.api), &self.info.admin_token)
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

/// Starts a process of endpoint agents, one per key; returns it once all are connected, with the
/// seconds that took.
fn start_endpoints(
    node: &NodeInfo,
    keys: &[String],
    allowed: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(ChildRole, f64)> {
    for (i, key) in keys.iter().enumerate() {
        endpoint_config(&dir.join(format!("ep{i}")), node, key, allowed, 65_536)?;
    }
    let mut process = ChildRole::spawn(&["endpoint-agents", &dir.display().to_string()])?;
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
    let mut hold_target = ChildRole::spawn(&["hold-target"])?;
    let hold: std::net::SocketAddr =
        hold_target.line()?.parse().context("the hold target's address")?;
    let work = tempfile::tempdir()?;
    let (key, secret) = actix_rt::System::new().block_on(async {
        let api = node.api();
        let gw = api.create_gateway("bench", "").await?;
        let gw = gw["id"].as_str().context("gateway id")?.to_string();
        let added = api.add_endpoint(&gw, "bench", "", "linux").await?;
        let secret = api.issue_scanner_credential(&gw, "bench").await?["secret"]
            .as_str()
            .context("secret")?
            .to_string();
        Ok::<_, anyhow::Error>((added["key"].as_str().context("key")?.to_string(), secret))
    })?;
    let (endpoint, _) =
        start_endpoints(&node.info, std::slice::from_ref(&key), "127.0.0.1", work.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut f = json!({});
    runtime.block_on(async {
        let (sink, echo, http) = (targets::sink().await, targets::echo().await, targets::http().await);
        let tunnel = Route::Socks { proxy: node.info.socks.clone(), endpoint: "bench".into(), secret: secret.clone() };
        let direct = Route::Direct;

        if want("single") {
            let direct = measure::bulk(&direct, sink, 1, d).await?;
            let (tunnel, cpu) = bulk_with_cpu(&tunnel, sink, d, &[&node.process, &endpoint]).await?;
            f["single_stream_gbps"] = json!({ "direct": direct, "tunnel": tunnel });
            f["single_stream_ratio"] = json!(tunnel / direct);
            f["single_stream_cpu_us_per_mib"] = json!(cpu);
        }
        if want("limits") {
            // The same work through two bare relays, plain and with TLS between them.
            for (key, tls) in [("relay_chain", None), ("tls_relay_chain", Some("--tls"))] {
                let chain = |target: std::net::SocketAddr| -> anyhow::Result<(ChildRole, Route)> {
                    let target = target.to_string();
                    let mut chain = ChildRole::spawn(&[&["relay-chain", target.as_str()][..], tls.as_slice()].concat())?;
                    let route = Route::Via(chain.line()?.parse().context("the relay chain's address")?);
                    Ok((chain, route))
                };
                let (_to_sink, route) = chain(sink)?;
                let (_to_echo, echo_route) = chain(echo)?;
                let (_to_http, http_route) = chain(http)?;
                let (http_rps, http_lat) = measure::http(&http_route, http, 50, d).await?;
                let (single, cpu) = bulk_with_cpu(&route, sink, d, &[&_to_sink]).await?;
                f[key] = json!({
                    "single_gbps": single,
                    "single_cpu_us_per_mib": cpu,
                    "parallel8_gbps": measure::bulk(&route, sink, 8, d).await?,
                    "http_rps": http_rps,
                    "http_p99_ms": quantile(&http_lat, 0.99),
                    "open_rate_per_s": measure::open_rate(&echo_route, echo, d).await?,
                });
            }
        }
        if want("parallel8") {
            let (direct, tunnel) = (measure::bulk(&direct, sink, 8, d).await?, measure::bulk(&tunnel, sink, 8, d).await?);
            f["parallel8_gbps"] = json!({ "direct": direct, "tunnel": tunnel });
            f["parallel8_ratio"] = json!(tunnel / direct);
        }
        if want("http") {
            let (direct_rps, direct_lat) = measure::http(&direct, http, 50, d).await?;
            let (tunnel_rps, tunnel_lat) = measure::http(&tunnel, http, 50, d).await?;
            f["http_rps"] = json!({ "direct": direct_rps, "tunnel": tunnel_rps });
            f["http_rps_ratio"] = json!(tunnel_rps / direct_rps);
            f["direct_http_p50_ms"] = json!(quantile(&direct_lat, 0.5));
            f["http_p50_ms"] = json!(quantile(&tunnel_lat, 0.5));
            f["direct_http_p99_ms"] = json!(quantile(&direct_lat, 0.99));
            f["http_p99_ms"] = json!(quantile(&tunnel_lat, 0.99));
        }
        if want("open") {
            let (direct, tunnel) = (measure::open_rate(&direct, echo, d).await?, measure::open_rate(&tunnel, echo, d).await?);
            f["open_rate_per_s"] = json!({ "direct": direct, "tunnel": tunnel });
            f["open_rate_ratio"] = json!(tunnel / direct);
            let phases = measure::open_phases(&node.info.socks, "bench", &secret, echo, d).await?;
            f["open_phases_us"] = json!({ "tcp_connect": phases[0], "socks_methods": phases[1], "socks_auth": phases[2], "socks_connect": phases[3], "first_echo": phases[4] });
        }
        if want("fairness") {
            let (alone, beside_bulk) = measure::fairness(&tunnel, http, sink, d).await?;
            f["fairness_p99_ms"] = json!({ "alone": alone, "beside_bulk": beside_bulk });
            f["fairness_p99_ratio"] = json!(beside_bulk / alone);
            // The same on loopback alone: what the machine's scheduling costs small requests
            // while a bulk transfer keeps the cores busy.
            let (alone, beside_bulk) = measure::fairness(&direct, http, sink, d).await?;
            f["direct_fairness_p99_ms"] = json!({ "alone": alone, "beside_bulk": beside_bulk });
        }
        if let Some(bin) = &args.rathole {
            // The same work through an open tunnel that does not multiplex, for comparison.
            let rathole = anchor::Rathole::start(bin, &[sink, echo, http, hold], 1).await?;
            let [to_sink, to_echo, to_http, to_hold] = [0, 1, 2, 3].map(|i| Route::Via(rathole.services[i]));
            let (http_rps, http_lat) = measure::http(&to_http, http, 50, d).await?;
            let rss = rathole.rss_kib();
            let idle = measure::idle_streams(&to_hold, hold, args.idle_streams).await?;
            let idle_kib = rathole.rss_kib().saturating_sub(rss) as f64 / args.idle_streams as f64;
            drop(idle);
            f["rathole"] = json!({
                "single_gbps": measure::bulk(&to_sink, sink, 1, d).await?,
                "parallel8_gbps": measure::bulk(&to_sink, sink, 8, d).await?,
                "http_rps": http_rps,
                "http_p99_ms": quantile(&http_lat, 0.99),
                "open_rate_per_s": measure::open_rate(&to_echo, echo, d).await?,
                "idle_connection_kib": idle_kib,
            });
        }
        if want("idle-streams") {
            // What the gateway and the endpoint hold per open, silent stream.
            let before = node.process.rss_kib() + endpoint.rss_kib();
            let idle = measure::idle_streams(&tunnel, hold, args.idle_streams).await?;
            let after = node.process.rss_kib() + endpoint.rss_kib();
            f["idle_streams"] = json!(args.idle_streams);
            f["idle_stream_kib"] = json!(after.saturating_sub(before) as f64 / args.idle_streams as f64);

            // A firehose of opens while the endpoint is at its cap: all refused, memory bounded,
            // no descriptor kept once the refused connections are gone.
            let (rss, fds) = (node.process.rss_kib(), node.process.open_fds());
            let (refused, secs) = measure::firehose(&tunnel, hold, args.firehose).await;
            f["firehose_opens"] = json!(args.firehose);
            f["firehose_refused"] = json!(refused);
            f["firehose_opens_per_s"] = json!(args.firehose as f64 / secs);
            f["firehose_rss_mib"] = json!(node.process.rss_kib().saturating_sub(rss) as f64 / 1024.0);
            let settle = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while node.process.open_fds() > fds && std::time::Instant::now() < settle {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            f["firehose_fds_left"] = json!(node.process.open_fds().saturating_sub(fds));
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

    print_table(&f);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&f)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// Gbit/s of one bulk upload through `route`, and the CPU time `path` (the processes it crosses)
/// spent per MiB moved, in microseconds.
async fn bulk_with_cpu(
    route: &Route,
    sink: std::net::SocketAddr,
    d: Duration,
    path: &[&ChildRole],
) -> anyhow::Result<(f64, f64)> {
    let cpu = || path.iter().map(|p| p.cpu_seconds()).sum::<f64>();
    let (cpu_before, started) = (cpu(), Instant::now());
    let gbps = measure::bulk(route, sink, 1, d).await?;
    let mib = gbps * 1e9 / 8.0 * started.elapsed().as_secs_f64() / (1024.0 * 1024.0);
    Ok((gbps, (cpu() - cpu_before) * 1e6 / mib))
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
    let (agents, secs) = start_endpoints(&node.info, &keys, "127.0.0.1", work.path())?;
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

fn print_table(f: &Value) {
    let n = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!("{:<34} {:>12} {:>12} {:>8}", "measurement", "direct", "tunnel", "ratio");
    let row =
        |name: &str, d: f64, t: f64, r: f64| println!("{name:<34} {d:>12.2} {t:>12.2} {r:>8.2}");
    let pair = |name: &str, key: &str, ratio: &str| {
        if !f[key].is_null() {
            row(name, n(&f[key]["direct"]), n(&f[key]["tunnel"]), n(&f[ratio]));
        }
    };
    pair("single stream (Gbit/s)", "single_stream_gbps", "single_stream_ratio");
    pair("8 parallel streams (Gbit/s)", "parallel8_gbps", "parallel8_ratio");

    pair("HTTP 1 KiB, 50 conns (req/s)", "http_rps", "http_rps_ratio");
    if !f["http_rps"].is_null() {
        row(
            "HTTP p50 (ms)",
            n(&f["direct_http_p50_ms"]),
            n(&f["http_p50_ms"]),
            n(&f["http_p50_ms"]) / n(&f["direct_http_p50_ms"]),
        );
        row(
            "HTTP p99 (ms)",
            n(&f["direct_http_p99_ms"]),
            n(&f["http_p99_ms"]),
            n(&f["http_p99_ms"]) / n(&f["direct_http_p99_ms"]),
        );
    }
    pair("open + 1-byte echo + close (/s)", "open_rate_per_s", "open_rate_ratio");
    for (key, name) in [
        ("relay_chain", "limit, two plain relays"),
        ("tls_relay_chain", "limit, two relays, TLS between"),
        ("rathole", "rathole 0.5 (TLS)"),
    ] {
        if !f[key].is_null() {
            println!("{name} instead of the tunnel:");
            for (limit, measured, direct) in [
                ("single_gbps", "single stream", "single_stream_gbps"),
                ("parallel8_gbps", "8 parallel streams", "parallel8_gbps"),
                ("http_rps", "HTTP 1 KiB, 50 conns", "http_rps"),
                ("open_rate_per_s", "open + echo + close", "open_rate_per_s"),
            ] {
                let (limit, direct) = (n(&f[key][limit]), n(&f[direct]["direct"]));
                row(&format!("  {measured}"), direct, limit, limit / direct);
            }
            row(
                "  HTTP p99 (ms)",
                n(&f["direct_http_p99_ms"]),
                n(&f[key]["http_p99_ms"]),
                n(&f[key]["http_p99_ms"]) / n(&f["direct_http_p99_ms"]),
            );
        }
    }
    if !f["single_stream_cpu_us_per_mib"].is_null() {
        let limit = |key: &str| {
            f[key]["single_cpu_us_per_mib"]
                .as_f64()
                .map(|v| format!(", two relays {v:.0}"))
                .unwrap_or_default()
        };
        let tls = f["tls_relay_chain"]["single_cpu_us_per_mib"]
            .as_f64()
            .map(|v| format!(", two relays with TLS {v:.0}"))
            .unwrap_or_default();
        println!("CPU per MiB of a single stream, in µs (the processes on the path): tunnel {:.0}{}{tls}", n(&f["single_stream_cpu_us_per_mib"]), limit("relay_chain"));
    }
    if let Some(phases) = f["open_phases_us"].as_object() {
        let parts: Vec<String> = phases.iter().map(|(k, v)| format!("{k} {:.0}", n(v))).collect();
        println!("  an open through the tunnel, in µs: {}", parts.join(", "));
    }
    if !f["fairness_p99_ms"].is_null() {
        let p = &f["fairness_p99_ms"];
        println!("fairness: small-request p99 through the tunnel {:.2} ms alone, {:.2} ms beside a bulk stream ({:.2}x)", n(&p["alone"]), n(&p["beside_bulk"]), n(&f["fairness_p99_ratio"]));
        let p = &f["direct_fairness_p99_ms"];
        println!("          on loopback without the tunnel {:.2} ms alone, {:.2} ms beside a bulk stream ({:.2}x)", n(&p["alone"]), n(&p["beside_bulk"]), n(&p["beside_bulk"]) / n(&p["alone"]));
    }
    if !f["idle_stream_kib"].is_null() {
        println!(
            "idle stream: {:.1} KiB (gateway + endpoint, {} streams)",
            n(&f["idle_stream_kib"]),
            f["idle_streams"]
        );
        if !f["rathole"].is_null() {
            println!(
                "  rathole: {:.1} KiB per idle connection (server + client)",
                n(&f["rathole"]["idle_connection_kib"])
            );
        }
        println!(
            "firehose: {} opens beyond the cap, {} refused, {:.0}/s, gateway RSS +{:.1} MiB, {} descriptors left",
            f["firehose_opens"],
            f["firehose_refused"],
            n(&f["firehose_opens_per_s"]),
            n(&f["firehose_rss_mib"]),
            f["firehose_fds_left"]
        );
    }
    if !f["idle_endpoint_kib"].is_null() {
        println!(
            "idle endpoint: {:.1} KiB at the gateway ({} endpoints, {:.0} connected/s)",
            n(&f["idle_endpoint_kib"]),
            f["idle_endpoints"],
            n(&f["endpoint_connect_per_s"])
        );
    }
}
