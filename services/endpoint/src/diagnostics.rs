//! The seed's diagnostic tool: `--diagnostics [diagnosticUrl] [diagnosticUrlBatchCount]
//! [diagnosticTunnelBatchCount] [diagnosticTunnelBatchSizeKB]`.
//!
//! *Gateway diagnostics* send batches through a tunnel to the gateway, which echoes them back,
//! and time each round trip. *Destination diagnostics* fetch the URL through the endpoint's own
//! dial path (allowlist, web proxy) and time each fetch. Both print the seed's tables and
//! summaries; a failure is logged as an error with the explanation that fits it (the seed's
//! blames a proxy, right only when one carried the request) and makes the tool exit non-zero.
//! The side session used leaves the endpoint's working session alone.

use crate::agent::Agent;
use crate::config::DiagnosticsDefaults;
use crate::messages::{
    DESTINATION_DIRECT_ADVICE, DESTINATION_NOT_ALLOWED_ADVICE, DESTINATION_VIA_PROXY_ADVICE,
    GATEWAY_DIAGNOSTIC_ADVICE,
};
use bytes::Bytes;
use ism_escape::escaped;
use ism_tunnel_proto::{OpenFailure, TargetAddr, DIAGNOSTIC_ECHO_HOST};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Level;

/// What to run, after the command line, the properties file and the defaults had their say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Params {
    pub url: Option<String>,
    pub url_batch_count: u32,
    pub tunnel_batch_count: u32,
    pub tunnel_batch_size_kb: u32,
}

impl Params {
    /// Positional arguments override the properties file (already merged into `defaults`).
    pub fn from_args(args: &[String], defaults: &DiagnosticsDefaults) -> Result<Self, String> {
        if args.len() > 4 {
            return Err(format!("--diagnostics takes at most 4 arguments (url, urlBatchCount, tunnelBatchCount, tunnelBatchSizeKB), got {}", args.len()));
        }
        let count =
            |i: usize, name: &str, default: u32| -> Result<u32, String> {
                match args.get(i) {
                    None => Ok(default),
                    Some(v) => v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("{name} must be a positive whole number, not {v:?}")
                    }),
                }
            };
        let url = match args.first() {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Some(u.clone()),
            Some(u) => {
                return Err(format!("diagnosticUrl must be an http:// or https:// URL, not {u:?}"))
            }
            None => defaults.url.clone(),
        };
        Ok(Self {
            url,
            url_batch_count: count(1, "diagnosticUrlBatchCount", defaults.url_batch_count)?,
            tunnel_batch_count: count(
                2,
                "diagnosticTunnelBatchCount",
                defaults.tunnel_batch_count,
            )?,
            tunnel_batch_size_kb: count(
                3,
                "diagnosticTunnelBatchSizeKB",
                defaults.tunnel_batch_size_kb,
            )?,
        })
    }
}

/// One measured transfer.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub time_ms: f64,
    pub size_kb: f64,
    pub throughput_mbps: f64,
    pub quality_pct: f64,
}

impl Sample {
    fn new(elapsed: Duration, bytes: usize, intact: usize) -> Self {
        let time_ms = elapsed.as_secs_f64() * 1000.0;
        let size_kb = bytes as f64 / 1000.0;
        Self {
            time_ms,
            size_kb,
            throughput_mbps: size_kb * 8.0 / time_ms.max(0.001),
            quality_pct: if bytes == 0 { 0.0 } else { intact as f64 * 100.0 / bytes as f64 },
        }
    }
}

/// A diagnostic's results, or why it failed and what most likely explains it.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub samples: Vec<Sample>,
    pub error: Option<String>,
    pub advice: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub params: Params,
    pub gateway: Section,
    /// `None` when no diagnosticUrl is configured.
    pub destination: Option<Section>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.gateway.error.is_none() && self.destination.as_ref().is_none_or(|d| d.error.is_none())
    }
}

/// Runs both diagnostics. Progress goes to the log as it happens.
pub async fn run(agent: &Agent, params: Params) -> Report {
    tracing::info!("Running endpoint diagnostics");
    tracing::info!("Running tunnel diagnostics");
    let (gateway, sent, received) = tunnel(agent, &params).await;
    tracing::info!("Tunnel diagnostics complete");
    let destination = match &params.url {
        Some(url) => {
            tracing::info!("Running destination diagnostics");
            let d = destination(agent, url, params.url_batch_count).await;
            tracing::info!("Destination diagnostics complete");
            Some(d)
        }
        None => {
            tracing::info!("No diagnosticUrl configured: skipping destination diagnostics");
            None
        }
    };
    Report { params, gateway, destination, bytes_sent: sent, bytes_received: received }
}

async fn tunnel(agent: &Agent, params: &Params) -> (Section, u64, u64) {
    let link = match agent.side_session().await {
        Ok(l) => l,
        Err(e) => {
            // A refused key or an untrusted certificate carries its own solution; the seed's
            // advice is about the network in between.
            let advice = e.diagnosis().blames_the_network().then_some(GATEWAY_DIAGNOSTIC_ADVICE);
            let error = Some(e.diagnosis().to_string());
            return (Section { samples: Vec::new(), error, advice }, 0, 0);
        }
    };
    let size = params.tunnel_batch_size_kb as usize * 1000;
    let payload: Bytes = (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut samples = Vec::new();
    let mut error = None;
    for _ in 0..params.tunnel_batch_count {
        match echo_batch(&link.session, payload.clone()).await {
            Ok((elapsed, back)) => {
                let intact = back.iter().zip(payload.iter()).filter(|(a, b)| a == b).count();
                sent += size as u64;
                received += back.len() as u64;
                samples.push(Sample::new(elapsed, size, intact));
            }
            Err(e) => {
                error = Some(format!("Error in tunnel diagnostics: {e}"));
                break;
            }
        }
    }
    link.session.close("diagnostics complete");
    let advice = error.is_some().then_some(GATEWAY_DIAGNOSTIC_ADVICE);
    (Section { samples, error, advice }, sent, received)
}

/// One batch through its own tunnel stream: sent while the echo comes back.
async fn echo_batch(
    session: &ism_tunnel::Session,
    payload: Bytes,
) -> Result<(Duration, Vec<u8>), String> {
    let started = Instant::now();
    let stream = session
        .open_stream(TargetAddr::Domain(DIAGNOSTIC_ECHO_HOST.into(), 7))
        .await
        .map_err(|e| e.to_string())?;
    let (mut reader, mut writer) = stream.split();
    let expected = payload.len();
    let send = async move {
        writer.send(payload).await?;
        writer.finish().await
    };
    let recv = async {
        let mut back = Vec::with_capacity(expected);
        while let Some(chunk) = reader.recv().await {
            back.extend_from_slice(&chunk?);
        }
        Ok::<_, ism_tunnel::StreamEnd>(back)
    };
    let (sent, back) = tokio::join!(send, recv);
    sent.map_err(|e| format!("{e:?}"))?;
    let back = back.map_err(|e| format!("{e:?}"))?;
    Ok((started.elapsed(), back))
}

async fn destination(agent: &Agent, url: &str, batches: u32) -> Section {
    let mut samples = Vec::new();
    for _ in 0..batches {
        let started = Instant::now();
        match fetch(agent, url).await {
            Ok((bytes, status)) => {
                let intact = if status < 500 { bytes } else { 0 };
                samples.push(Sample::new(started.elapsed(), bytes, intact));
            }
            Err((e, advice)) => {
                return Section {
                    samples,
                    error: Some(format!("Destination check exception: {e}")),
                    advice: Some(advice),
                }
            }
        }
    }
    Section { samples, error: None, advice: None }
}

/// `GET url` through the endpoint's dial path; returns the bytes received and the HTTP status,
/// or what went wrong and the advice that fits where it went wrong.
async fn fetch(agent: &Agent, url: &str) -> Result<(usize, u16), (String, &'static str)> {
    let direct = |e: String| (e, DESTINATION_DIRECT_ADVICE);
    let (tls, rest) = match url.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        _ => return Err(direct(format!("{url} is not an http:// or https:// URL"))),
    };
    let (authority, path) =
        rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>().map_err(|_| direct(format!("bad port in {url}")))?,
        ),
        _ => (authority.to_string(), if tls { 443 } else { 80 }),
    };
    let target = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => TargetAddr::Ipv4(ip, port),
        Ok(std::net::IpAddr::V6(ip)) => TargetAddr::Ipv6(ip, port),
        Err(_) => TargetAddr::Domain(host.clone(), port),
    };
    let plan = agent.dialer().plan(&target).await.map_err(|f| match f.reason {
        OpenFailure::NotAllowed => (f.message, DESTINATION_NOT_ALLOWED_ADVICE),
        _ => direct(f.message),
    })?;
    let advice =
        if plan.via_proxy() { DESTINATION_VIA_PROXY_ADVICE } else { DESTINATION_DIRECT_ADVICE };
    let failed = |e: String| (e, advice);
    let tcp = agent.dialer().connect(plan, port).await.map_err(|f| failed(f.message))?;
    // The TLS handshake's small writes must not wait on Nagle's algorithm.
    let _ = tcp.set_nodelay(true);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ism-endpoint-diagnostics\r\nConnection: close\r\n\r\n");
    let timeout = agent.config().read_timeout.max(Duration::from_secs(10));
    let exchange = async {
        if tls {
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(agent.tls()));
            let stream =
                connector.connect(name, tcp).await.map_err(|e| format!("TLS with {host}: {e}"))?;
            http_exchange(stream, &request).await
        } else {
            http_exchange(tcp, &request).await
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| failed(format!("no complete answer from {url} within {timeout:?}")))?
        .map_err(failed)
}

async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<(usize, u16), String> {
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A TLS peer that closes without close_notify still delivered what it sent.
    let _ = stream.read_to_end(&mut raw).await;
    let status = std::str::from_utf8(raw.get(..raw.len().min(64)).unwrap_or_default())
        .ok()
        .and_then(|head| head.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "the destination did not answer with HTTP".to_string())?;
    Ok((raw.len(), status))
}

/// Java's way of printing a double, which the seed's summaries show (`47.0`, `42.5531914893617`).
fn java_double(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// A table cell: whole numbers plain, others with `decimals`.
fn cell(v: f64, decimals: usize) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.decimals$}")
    }
}

fn mean_stddev(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    (mean, var.sqrt())
}

fn table(out: &mut Vec<String>, samples: &[Sample]) {
    out.push("# Time(ms) Size(kB) Throughput(Mbps) Quality".into());
    for (i, s) in samples.iter().enumerate() {
        let time =
            if s.time_ms >= 10.0 { s.time_ms.round() } else { (s.time_ms * 10.0).round() / 10.0 };
        out.push(format!(
            "{} {} {} {:.2} {}%",
            i + 1,
            cell(time, 1),
            cell(s.size_kb, 1),
            s.throughput_mbps,
            cell(s.quality_pct, 1)
        ));
    }
}

fn summary(out: &mut Vec<String>, title: &str, samples: &[Sample]) {
    let (t, t_sd) = mean_stddev(&samples.iter().map(|s| s.time_ms).collect::<Vec<_>>());
    let (r, r_sd) = mean_stddev(&samples.iter().map(|s| s.throughput_mbps).collect::<Vec<_>>());
    out.push(title.into());
    out.push(format!(
        "Average Transfer Time:{} +/- {}",
        java_double((t * 10.0).round() / 10.0),
        java_double((t_sd * 1e6).round() / 1e6)
    ));
    out.push(format!(
        "Average Throughput:{} +/- {}",
        java_double(r),
        java_double((r_sd * 1e6).round() / 1e6)
    ));
}

const RULE: &str = "=======================================";

/// The report as the seed prints it, one log line per entry with its level: a failure is an
/// error, followed by the explanation that most likely fits it as a warning.
pub fn render(report: &Report) -> Vec<(Level, String)> {
    let mut out = vec![
        format!(
            "Tunnel diagnose usage stats: {} bytes sent; {} bytes received",
            report.bytes_sent, report.bytes_received
        ),
        "Tunnel diagnose Performance stats:".into(),
    ];
    out.extend([RULE.into(), "Gateway diagnostics results".into(), RULE.into()]);
    table(&mut out, &report.gateway.samples);
    summary(&mut out, "==========Gateway Diagnostics Summary===========", &report.gateway.samples);
    let mut lines: Vec<(Level, String)> = informational(out).collect();
    failure(&mut lines, &report.gateway);
    lines.push((Level::INFO, RULE.into()));
    if let (Some(d), Some(url)) = (&report.destination, &report.params.url) {
        let mut out = vec![
            format!("Destination diagnostics results 1 thread each for target {url}"),
            RULE.into(),
        ];
        table(&mut out, &d.samples);
        summary(&mut out, "==========Destination Diagnostic Summary===========", &d.samples);
        lines.extend(informational(out));
        failure(&mut lines, d);
    }
    lines
}

fn informational(lines: Vec<String>) -> impl Iterator<Item = (Level, String)> {
    lines.into_iter().map(|l| (Level::INFO, l))
}

/// A section's failure and its advice. The error may carry the gateway's words (a refusal's
/// reason) or a target's, so it is shown escaped.
fn failure(lines: &mut Vec<(Level, String)>, section: &Section) {
    if let Some(e) = &section.error {
        lines.push((Level::ERROR, escaped(e).to_string()));
    }
    if let Some(advice) = section.advice {
        lines.push((Level::WARN, advice.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> DiagnosticsDefaults {
        DiagnosticsDefaults {
            url: Some("https://intranet.corp".into()),
            url_batch_count: 10,
            tunnel_batch_count: 10,
            tunnel_batch_size_kb: 1000,
        }
    }

    #[test]
    fn arguments_fall_back_to_the_properties_then_the_defaults() {
        let p = Params::from_args(&[], &defaults()).unwrap();
        assert_eq!(
            (p.url.as_deref(), p.url_batch_count, p.tunnel_batch_count, p.tunnel_batch_size_kb),
            (Some("https://intranet.corp"), 10, 10, 1000)
        );
        let args: Vec<String> =
            ["https://www.example.com", "5", "3", "250"].iter().map(|s| s.to_string()).collect();
        let p = Params::from_args(&args, &defaults()).unwrap();
        assert_eq!(
            (p.url.as_deref(), p.url_batch_count, p.tunnel_batch_count, p.tunnel_batch_size_kb),
            (Some("https://www.example.com"), 5, 3, 250)
        );
        let p = Params::from_args(&args[..2], &defaults()).unwrap();
        assert_eq!(
            (p.url_batch_count, p.tunnel_batch_count, p.tunnel_batch_size_kb),
            (5, 10, 1000)
        );
        assert!(Params::from_args(&["ftp://x".into()], &defaults()).unwrap_err().contains("http"));
        assert!(Params::from_args(&["http://x".into(), "0".into()], &defaults())
            .unwrap_err()
            .contains("diagnosticUrlBatchCount"));
    }

    #[test]
    fn a_failure_is_shown_on_one_line() {
        let error = Some("the gateway refused the key: no\nINFO - forged".to_string());
        let mut lines = Vec::new();
        failure(&mut lines, &Section { samples: Vec::new(), error, advice: None });
        let shown = "the gateway refused the key: no\\nINFO - forged".to_string();
        assert_eq!(lines, [(Level::ERROR, shown)]);
    }

    #[test]
    fn tables_and_summaries_match_the_seed() {
        // The seed's example: destination times 125, 78, 78, 78, 94 ms for 92.3 kB.
        let samples: Vec<Sample> = [125.0, 78.0, 78.0, 78.0, 94.0]
            .iter()
            .map(|t| Sample::new(Duration::from_secs_f64(t / 1000.0), 92_300, 92_300))
            .collect();
        let mut out = Vec::new();
        table(&mut out, &samples);
        assert_eq!(out[0], "# Time(ms) Size(kB) Throughput(Mbps) Quality");
        assert_eq!(out[1], "1 125 92.3 5.91 100%");
        assert_eq!(out[2], "2 78 92.3 9.47 100%");
        let mut sum = Vec::new();
        summary(&mut sum, "==========Destination Diagnostic Summary===========", &samples);
        assert_eq!(sum[1], "Average Transfer Time:90.6 +/- 18.282232");
        assert!(
            sum[2].starts_with("Average Throughput:8.43") && sum[2].contains(" +/- 1.40"),
            "{}",
            sum[2]
        );
        // Gateway: 3 x 250 kB in 47 ms each.
        let g: Vec<Sample> =
            (0..3).map(|_| Sample::new(Duration::from_millis(47), 250_000, 250_000)).collect();
        let mut out = Vec::new();
        table(&mut out, &g);
        summary(&mut out, "x", &g);
        assert_eq!(out[1], "1 47 250 42.55 100%");
        assert_eq!(out[5], "Average Transfer Time:47.0 +/- 0.0");
        assert_eq!(out[6], "Average Throughput:42.5531914893617 +/- 0.0");
    }
}
