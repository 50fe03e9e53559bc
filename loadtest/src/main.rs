//! `ism-bench`: one run measures a direct loopback baseline and the same work through the whole
//! path (scanner -> gateway SOCKS5 -> TLS WebSocket -> endpoint -> target), and prints ratios.

mod measure;
mod targets;

use clap::Parser;
use ism_tests::cluster::{connected, provision, Backend, TestMachine, TestNode};
use measure::{quantile, Route};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Side-by-side benchmark of the tunnel against direct loopback.")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let d = Duration::from_secs(args.seconds);
    // The gateway node runs on its own thread and runtime, as its own process would.
    let node = TestNode::start("bench-node", Backend::Embedded);
    let p = actix_rt::System::new().block_on(provision(&node.api(), "bench"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let figures = runtime.block_on(async {
        let (sink, echo, http) = (targets::sink().await, targets::echo().await, targets::http().await);
        let machine = TestMachine::new();
        let agent = machine.start_endpoint(&node, &p.key, "127.0.0.1");
        connected(&agent).await;
        let tunnel = Route::Socks { proxy: node.socks(), endpoint: p.endpoint_name.clone(), secret: p.scanner_secret.clone() };
        let direct = Route::Direct;

        let single = (measure::bulk(&direct, sink, 1, d).await?, measure::bulk(&tunnel, sink, 1, d).await?);
        let parallel = (measure::bulk(&direct, sink, 8, d).await?, measure::bulk(&tunnel, sink, 8, d).await?);
        let (direct_rps, direct_lat) = measure::http(&direct, http, 50, d).await?;
        let (tunnel_rps, tunnel_lat) = measure::http(&tunnel, http, 50, d).await?;
        let opens = (measure::open_rate(&direct, echo, d).await?, measure::open_rate(&tunnel, echo, d).await?);
        agent.stop();
        Ok::<_, anyhow::Error>(serde_json::json!({
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
        }))
    })?;

    let f = &figures;
    println!("{:<34} {:>12} {:>12} {:>8}", "measurement", "direct", "tunnel", "ratio");
    let row = |name: &str, d: f64, t: f64, r: f64| println!("{name:<34} {d:>12.2} {t:>12.2} {r:>8.2}");
    row("single stream (Gbit/s)", f["single_stream_gbps"]["direct"].as_f64().unwrap(), f["single_stream_gbps"]["tunnel"].as_f64().unwrap(), f["single_stream_ratio"].as_f64().unwrap());
    row("8 parallel streams (Gbit/s)", f["parallel8_gbps"]["direct"].as_f64().unwrap(), f["parallel8_gbps"]["tunnel"].as_f64().unwrap(), f["parallel8_ratio"].as_f64().unwrap());
    row("HTTP 1 KiB, 50 conns (req/s)", f["http_rps"]["direct"].as_f64().unwrap(), f["http_rps"]["tunnel"].as_f64().unwrap(), f["http_rps_ratio"].as_f64().unwrap());
    row("HTTP p50 (ms)", f["direct_http_p50_ms"].as_f64().unwrap(), f["http_p50_ms"].as_f64().unwrap(), f["http_p50_ms"].as_f64().unwrap() / f["direct_http_p50_ms"].as_f64().unwrap());
    row("HTTP p99 (ms)", f["direct_http_p99_ms"].as_f64().unwrap(), f["http_p99_ms"].as_f64().unwrap(), f["http_p99_ms"].as_f64().unwrap() / f["direct_http_p99_ms"].as_f64().unwrap());
    row("open + 1-byte echo + close (/s)", f["open_rate_per_s"]["direct"].as_f64().unwrap(), f["open_rate_per_s"]["tunnel"].as_f64().unwrap(), f["open_rate_ratio"].as_f64().unwrap());
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
