//! `ism-bench`: one run measures a direct loopback baseline and the same work through the whole
//! path (scanner -> gateway SOCKS5 -> TLS WebSocket -> endpoint -> target), and prints ratios;
//! plus the memory an idle stream and an idle endpoint cost, fairness under a bulk transfer, and
//! a firehose of opens beyond the cap. `ism-bench endpoints --count N` drives N simulated
//! endpoints (each a real wss connection with its own key) against one node.
//!
//! The gateway node and the endpoints run as child processes (this binary in other roles), so
//! the memory figures are theirs, not the load generator's.

mod measure;
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
    /// (internal) Run the endpoints configured by these files.
    #[command(hide = true)]
    EndpointAgents { configs: Vec<PathBuf> },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.role {
        Some(Role::GatewayNode { data_dir, max_streams }) => roles::run_gateway(data_dir, *max_streams),
        Some(Role::EndpointAgents { configs }) => roles::run_endpoints(configs),
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
        let mut process = ChildRole::spawn(&["gateway-node", &data.path().display().to_string(), &max_streams.to_string()])?;
        let info: NodeInfo = serde_json::from_str(&process.line()?).context("the node's addresses")?;
        Ok(Node { info, process, _data: data })
    }

    fn api(&self) -> ApiClient {
        ApiClient::new(&format!("http://{}", self.info.api), &self.info.admin_token)
    }
}

/// Adds `count` endpoints to `gateway` (16 requests at a time); returns their keys.
async fn add_endpoints(api: &ApiClient, gateway: &str, prefix: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(16) {
        let adds = chunk.iter().map(|i| api.add_endpoint(gateway, &format!("{prefix}{i}"), "", "linux"));
        for added in futures_util::future::join_all(adds).await {
            keys.push(added?["key"].as_str().context("key")?.to_string());
        }
    }
    Ok(keys)
}

/// Starts a process of endpoint agents, one per key; returns it once all are connected, with the
/// seconds that took.
fn start_endpoints(node: &NodeInfo, keys: &[String], allowed: &str, dir: &std::path::Path) -> anyhow::Result<(ChildRole, f64)> {
    let mut configs = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        configs.push(endpoint_config(&dir.join(format!("ep{i}")), node, key, allowed, 65_536)?.display().to_string());
    }
    let mut args = vec!["endpoint-agents"];
    args.extend(configs.iter().map(String::as_str));
    let mut process = ChildRole::spawn(&args)?;
    let line = process.line()?;
    let seconds = line.split_whitespace().nth(2).and_then(|s| s.parse().ok()).context("connected <n> <seconds>")?;
    Ok((process, seconds))
}

fn benchmark(args: &Args) -> anyhow::Result<()> {
    let d = Duration::from_secs(args.seconds);
    let node = Node::start(args.idle_streams + 64)?;
    let work = tempfile::tempdir()?;
    let (gateway, key, secret) = actix_rt::System::new().block_on(async {
        let api = node.api();
        let gw = api.create_gateway("bench", "").await?;
        let gw = gw["id"].as_str().context("gateway id")?.to_string();
        let added = api.add_endpoint(&gw, "bench", "", "linux").await?;
        let secret = api.issue_scanner_credential(&gw, "bench").await?["secret"].as_str().context("secret")?.to_string();
        Ok::<_, anyhow::Error>((gw, added["key"].as_str().context("key")?.to_string(), secret))
    })?;
    let (endpoint, _) = start_endpoints(&node.info, std::slice::from_ref(&key), "127.0.0.1", work.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut figures = runtime.block_on(async {
        let (sink, echo, http, hold) = (targets::sink().await, targets::echo().await, targets::http().await, targets::hold().await);
        let tunnel = Route::Socks { proxy: node.info.socks.clone(), endpoint: "bench".into(), secret: secret.clone() };
        let direct = Route::Direct;

        let single = (measure::bulk(&direct, sink, 1, d).await?, measure::bulk(&tunnel, sink, 1, d).await?);
        let parallel = (measure::bulk(&direct, sink, 8, d).await?, measure::bulk(&tunnel, sink, 8, d).await?);
        let (direct_rps, direct_lat) = measure::http(&direct, http, 50, d).await?;
        let (tunnel_rps, tunnel_lat) = measure::http(&tunnel, http, 50, d).await?;
        let opens = (measure::open_rate(&direct, echo, d).await?, measure::open_rate(&tunnel, echo, d).await?);
        let fairness = measure::fairness(&tunnel, http, sink, d).await?;

        // Idle streams: what the gateway and the endpoint hold per open, silent stream.
        let before = node.process.rss_kib() + endpoint.rss_kib();
        let idle = measure::idle_streams(&tunnel, hold, args.idle_streams).await?;
        let after = node.process.rss_kib() + endpoint.rss_kib();
        let idle_stream_kib = after.saturating_sub(before) as f64 / args.idle_streams as f64;

        // A firehose of opens while the endpoint is at its cap: all refused, memory bounded.
        let rss = node.process.rss_kib();
        let (refused, firehose_secs) = measure::firehose(&tunnel, hold, args.firehose).await;
        let firehose_mib = node.process.rss_kib().saturating_sub(rss) as f64 / 1024.0;
        drop(idle);

        Ok::<_, anyhow::Error>(json!({
            "single_stream_gbps": { "direct": single.0, "tunnel": single.1 },
            "single_stream_ratio": single.1 / single.0,
            "parallel8_gbps": { "direct": parallel.0, "tunnel": parallel.1 },
            "parallel8_ratio": parallel.1 / parallel.0,
            "http_rps": { "direct": direct_rps, "tunnel": tunnel_rps },
            "http_rps_ratio": tunnel_rps / direct_rps,
            "direct_http_p50_ms": quantile(&direct_lat, 0.5),
            "http_p50_ms": quantile(&tunnel_lat, 0.5),
            "direct_http_p99_ms": quantile(&direct_lat, 0.99),
            "http_p99_ms": quantile(&tunnel_lat, 0.99),
            "open_rate_per_s": { "direct": opens.0, "tunnel": opens.1 },
            "open_rate_ratio": opens.1 / opens.0,
            "fairness_p99_ms": { "alone": fairness.0, "beside_bulk": fairness.1 },
            "fairness_p99_ratio": fairness.1 / fairness.0,
            "idle_streams": args.idle_streams,
            "idle_stream_kib": idle_stream_kib,
            "firehose_opens": args.firehose,
            "firehose_refused": refused,
            "firehose_opens_per_s": args.firehose as f64 / firehose_secs,
            "firehose_rss_mib": firehose_mib,
        }))
    })?;
    drop(endpoint);

    // Idle endpoints: what the gateway holds per connected, silent endpoint.
    let keys = actix_rt::System::new().block_on(add_endpoints(&node.api(), &gateway, "idle", args.idle_endpoints))?;
    let before = node.process.rss_kib();
    let (idle_endpoints, connect_secs) = start_endpoints(&node.info, &keys, "127.0.0.1", &work.path().join("idle"))?;
    let after = node.process.rss_kib();
    drop(idle_endpoints);
    figures["idle_endpoints"] = json!(args.idle_endpoints);
    figures["idle_endpoint_kib"] = json!(after.saturating_sub(before) as f64 / args.idle_endpoints as f64);
    figures["endpoint_connect_per_s"] = json!(args.idle_endpoints as f64 / connect_secs);

    print_table(&figures);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

fn many_endpoints(count: usize) -> anyhow::Result<()> {
    let node = Node::start(64)?;
    let work = tempfile::tempdir()?;
    let started = Instant::now();
    let keys = actix_rt::System::new().block_on(async {
        let api = node.api();
        let gw = api.create_gateway("many", "").await?;
        add_endpoints(&api, gw["id"].as_str().context("gateway id")?, "sim", count).await
    })?;
    println!("added {count} endpoints through the API in {:.1} s", started.elapsed().as_secs_f64());
    let before = node.process.rss_kib();
    let (endpoints, secs) = start_endpoints(&node.info, &keys, "127.0.0.1", work.path())?;
    let after = node.process.rss_kib();
    println!(
        "{count} endpoints connected in {secs:.1} s ({:.0}/s); gateway RSS {} MiB -> {} MiB: {:.1} KiB per endpoint; endpoint process {} MiB",
        count as f64 / secs,
        before / 1024,
        after / 1024,
        after.saturating_sub(before) as f64 / count as f64,
        endpoints.rss_kib() / 1024
    );
    Ok(())
}

fn print_table(f: &Value) {
    let n = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!("{:<40} {:>12} {:>12} {:>8}", "measurement", "direct", "tunnel", "ratio");
    let row = |name: &str, d: f64, t: f64, r: f64| println!("{name:<40} {d:>12.2} {t:>12.2} {r:>8.2}");
    row("single stream (Gbit/s)", n(&f["single_stream_gbps"]["direct"]), n(&f["single_stream_gbps"]["tunnel"]), n(&f["single_stream_ratio"]));
    row("8 parallel streams (Gbit/s)", n(&f["parallel8_gbps"]["direct"]), n(&f["parallel8_gbps"]["tunnel"]), n(&f["parallel8_ratio"]));
    row("HTTP 1 KiB, 50 conns (req/s)", n(&f["http_rps"]["direct"]), n(&f["http_rps"]["tunnel"]), n(&f["http_rps_ratio"]));
    row("HTTP p50 (ms)", n(&f["direct_http_p50_ms"]), n(&f["http_p50_ms"]), n(&f["http_p50_ms"]) / n(&f["direct_http_p50_ms"]));
    row("HTTP p99 (ms)", n(&f["direct_http_p99_ms"]), n(&f["http_p99_ms"]), n(&f["http_p99_ms"]) / n(&f["direct_http_p99_ms"]));
    row("open + 1-byte echo + close (/s)", n(&f["open_rate_per_s"]["direct"]), n(&f["open_rate_per_s"]["tunnel"]), n(&f["open_rate_ratio"]));
    row("small-request p99 beside a bulk stream (ms)", n(&f["fairness_p99_ms"]["alone"]), n(&f["fairness_p99_ms"]["beside_bulk"]), n(&f["fairness_p99_ratio"]));
    println!("idle stream: {:.1} KiB (gateway + endpoint, {} streams)", n(&f["idle_stream_kib"]), f["idle_streams"]);
    println!("idle endpoint: {:.1} KiB at the gateway ({} endpoints, {:.0} connected/s)", n(&f["idle_endpoint_kib"]), f["idle_endpoints"], n(&f["endpoint_connect_per_s"]));
    println!("firehose: {} opens beyond the cap, {} refused, {:.0}/s, gateway RSS +{:.1} MiB", f["firehose_opens"], f["firehose_refused"], n(&f["firehose_opens_per_s"]), n(&f["firehose_rss_mib"]));
}
