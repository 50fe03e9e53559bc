//! The run's figures: the paths' figures written into the JSON, and the printed table.

use crate::compare::ByPath;
use serde_json::{json, Value};

/// Our figures beside direct's under the keys earlier runs used: (figure, key of the
/// `{direct, tunnel}` pair, key of tunnel / direct).
const PAIRS: [(&str, &str, &str); 5] = [
    ("single_gbps", "single_stream_gbps", "single_stream_ratio"),
    ("download_gbps", "download_gbps", "download_ratio"),
    ("parallel8_gbps", "parallel8_gbps", "parallel8_ratio"),
    ("http_rps", "http_rps", "http_rps_ratio"),
    ("open_rate_per_s", "open_rate_per_s", "open_rate_ratio"),
];

/// Single figures of ours and of direct under the keys earlier runs used: (path, figure, key).
const SINGLES: [(&str, &str, &str); 9] = [
    ("tunnel", "single_cpu_us_per_mib", "single_stream_cpu_us_per_mib"),
    ("tunnel", "download_cpu_us_per_mib", "download_cpu_us_per_mib"),
    ("tunnel", "http_cpu_us_per_request", "http_cpu_us_per_request"),
    ("tunnel", "open_cpu_us", "open_cpu_us"),
    ("tunnel", "http_p50_ms", "http_p50_ms"),
    ("tunnel", "http_p99_ms", "http_p99_ms"),
    ("tunnel", "idle_connection_kib", "idle_stream_kib"),
    ("direct", "http_p50_ms", "direct_http_p50_ms"),
    ("direct", "http_p99_ms", "direct_http_p99_ms"),
];

/// The ratios of ours to wstunnel: (key in `vs_wstunnel`, figure).
const VS_WSTUNNEL: [(&str, &str); 10] = [
    ("single", "single_gbps"),
    ("download", "download_gbps"),
    ("parallel8", "parallel8_gbps"),
    ("http_rps", "http_rps"),
    ("open_rate", "open_rate_per_s"),
    ("cpu_per_mib", "single_cpu_us_per_mib"),
    ("cpu_per_mib_download", "download_cpu_us_per_mib"),
    ("idle_connection", "idle_connection_kib"),
    ("cpu_per_request", "http_cpu_us_per_request"),
    ("cpu_per_open", "open_cpu_us"),
];

/// The table's columns: the paths in this order (those the run measured).
const COLUMNS: [(&str, &str); 6] = [
    ("direct", "direct"),
    ("tunnel", "ours"),
    ("wstunnel", "wstunnel"),
    ("rathole", "rathole"),
    ("relay_chain", "2 relays"),
    ("tls_relay_chain", "TLS relays"),
];

/// The ratio columns after them: ours / each of these paths (those the run measured).
const RATIOS: [(&str, &str); 2] = [("wstunnel", "ours/wst"), ("direct", "ours/dir")];

/// The table's rows: (figure, label).
pub const ROWS: [(&str, &str); 12] = [
    ("single_gbps", "single stream (Gbit/s)"),
    ("download_gbps", "single download (Gbit/s)"),
    ("parallel8_gbps", "8 parallel streams (Gbit/s)"),
    ("http_rps", "HTTP 1 KiB, 50 conns (req/s)"),
    ("http_p50_ms", "HTTP p50 (ms)"),
    ("http_p99_ms", "HTTP p99 (ms)"),
    ("http_cpu_us_per_request", "CPU per HTTP request (µs)"),
    ("open_rate_per_s", "open + 1-byte echo + close (/s)"),
    ("open_cpu_us", "CPU per open (µs)"),
    ("single_cpu_us_per_mib", "CPU per MiB, single stream (µs)"),
    ("download_cpu_us_per_mib", "CPU per MiB, single download (µs)"),
    ("idle_connection_kib", "held connection (KiB)"),
];

/// Writes the paths' figures into `f`: ours and direct under the keys earlier runs used, every
/// other path as an object of its own, and ours / wstunnel as `vs_wstunnel`.
pub fn record_paths(f: &mut Value, by_path: &ByPath) {
    for (name, key, ratio) in PAIRS {
        if let (Some(direct), Some(tunnel)) =
            (figure(by_path, "direct", name), figure(by_path, "tunnel", name))
        {
            f[key] = json!({ "direct": direct, "tunnel": tunnel });
            f[ratio] = json!(tunnel / direct);
        }
    }
    for (path, name, key) in SINGLES {
        if let Some(value) = figure(by_path, path, name) {
            f[key] = json!(value);
        }
    }
    for (path, figures) in by_path.iter().filter(|(path, _)| !["direct", "tunnel"].contains(path)) {
        f[*path] = json!(figures);
    }
    if by_path.contains_key("wstunnel") {
        f["vs_wstunnel"] = VS_WSTUNNEL
            .iter()
            .filter_map(|&(key, name)| {
                Some((key.to_string(), json!(ours_over(by_path, "wstunnel", name)?)))
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
}

/// One figure of one path, if the run measured it.
fn figure(by_path: &ByPath, path: &str, name: &str) -> Option<f64> {
    by_path.get(path)?.get(name).copied()
}

/// Ours / `other` for one figure, if the run measured both.
fn ours_over(by_path: &ByPath, other: &str, name: &str) -> Option<f64> {
    Some(figure(by_path, "tunnel", name)? / figure(by_path, other, name)?)
}

/// Prints the paths side by side, one row per figure, then what only ours is measured for.
pub fn print_table(f: &Value, by_path: &ByPath) {
    let n = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    if by_path.contains_key("direct") {
        println!(
            "medians of {} rounds, {} s per measurement, the paths in turn; loopback TCP: {}",
            f["rounds"],
            f["seconds"],
            f["tcp_congestion_control"].as_str().unwrap_or("unknown")
        );
        if f["vector_copies"].as_bool() == Some(true) {
            println!("ours and the relays with glibc's vector copies (AMD CPU with FSRM)");
        }
        if f["heap_thresholds"].as_bool() == Some(true) {
            println!("ours and the relays with fixed heap thresholds (ism-glibc)");
        }
        if let Some(tunables) = f["glibc_tunables"].as_str() {
            println!("every process with GLIBC_TUNABLES={}", ism_events::escaped(tunables));
        }
        if let Some(ms @ 1..) = f["link_delay_ms"].as_u64() {
            println!(
                "the tunnels' halves {ms} ms apart each way (direct and the relay chains: not)"
            );
        }
    }
    if !by_path.is_empty() {
        print_paths(by_path);
    }
    for (path, phases) in f["open_phases_us"].as_object().into_iter().flatten() {
        let Some(phases) = phases.as_object() else { continue };
        let parts: Vec<String> = phases.iter().map(|(k, v)| format!("{k} {:.0}", n(v))).collect();
        let name = COLUMNS.iter().find(|(key, _)| key == path).map_or(path.as_str(), |c| c.1);
        println!("an open through {name}, in µs: {}", parts.join(", "));
    }
    if !f["fairness_p99_ms"].is_null() {
        let p = &f["fairness_p99_ms"];
        println!("fairness: small-request p99 through ours {:.2} ms alone, {:.2} ms beside a bulk stream ({:.2}x)", n(&p["alone"]), n(&p["beside_bulk"]), n(&f["fairness_p99_ratio"]));
        let p = &f["direct_fairness_p99_ms"];
        println!("          on loopback without a tunnel {:.2} ms alone, {:.2} ms beside a bulk stream ({:.2}x)", n(&p["alone"]), n(&p["beside_bulk"]), n(&p["beside_bulk"]) / n(&p["alone"]));
    }
    if !f["idle_stream_kib"].is_null() {
        let others = f["idle_connections"]
            .as_u64()
            .map(|count| format!(", {count} through each other tunnel"))
            .unwrap_or_default();
        println!("held connections: {} through ours{others}", f["idle_streams"]);
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

/// One row per figure measured, one column per path measured, then the ratios of ours to the
/// paths of [`RATIOS`] measured.
fn print_paths(by_path: &ByPath) {
    let measured = |&&(path, _): &&(&str, &str)| by_path.contains_key(path);
    let columns: Vec<_> = COLUMNS.iter().filter(measured).collect();
    let ratios: Vec<_> = RATIOS.iter().filter(measured).collect();
    let mut header = format!("{:<32}", "measurement");
    for (_, title) in columns.iter().chain(&ratios) {
        header += &format!(" {title:>10}");
    }
    println!("{header}");
    for (name, label) in ROWS {
        if columns.iter().all(|(path, _)| figure(by_path, path, name).is_none()) {
            continue;
        }
        let mut row = format!("{label:<32}");
        for (path, _) in &columns {
            row += &format!(" {:>10}", cell(figure(by_path, path, name)));
        }
        for (other, _) in &ratios {
            row += &format!(" {:>10}", cell(ours_over(by_path, other, name)));
        }
        println!("{row}");
    }
}

/// A figure with two decimals below 100 and none above; blank when not measured.
fn cell(value: Option<f64>) -> String {
    match value {
        Some(v) if v.abs() < 100.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.0}"),
        None => String::new(),
    }
}
