//! How the `ism` command prints things when `--json` is not given, and the offline audit.

use anyhow::Context;
use futures_util::StreamExt;
use ism_projectors::audit::{parse_time, AuditEntry, AuditFilter, Timeline};
use serde_json::Value;
use std::collections::VecDeque;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_array().into_iter().flatten()
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn print_gateways(list: &Value, json: bool) {
    if json {
        return print_json(list);
    }
    println!("{:<36}  {:<20}  {:<12}  {:<9}  ENDPOINT URL", "ID", "NAME", "STATUS", "ENDPOINTS");
    for g in items(list) {
        println!(
            "{:<36}  {:<20}  {:<12}  {:<9}  {}",
            s(&g["id"]),
            s(&g["name"]),
            s(&g["status"]),
            g["endpoint_count"],
            s(&g["endpoint_url"])
        );
    }
}

pub fn print_deleted(list: &Value, json: bool) {
    if json {
        return print_json(list);
    }
    println!("{:<36}  {:<20}  {:<24}  REASON", "ID", "NAME", "DELETED");
    for g in items(list) {
        let when =
            g["deleted_ms"].as_i64().map(ism_projectors::audit::format_time).unwrap_or_default();
        println!(
            "{:<36}  {:<20}  {:<24}  {}",
            s(&g["id"]),
            s(&g["name"]),
            when,
            s(&g["deleted_reason"])
        );
    }
}

pub fn print_endpoints(list: &Value, json: bool) {
    if json {
        return print_json(list);
    }
    println!(
        "{:<36}  {:<20}  {:<8}  {:<8}  {:<4}  {:<8}  {:<11}  NODE",
        "ID", "NAME", "STATUS", "VERSION", "SCAN", "SUPPORT", "STREAMS"
    );
    for e in items(list) {
        let scan = if e["scan_access"] == true { "on" } else { "off" };
        println!(
            "{:<36}  {:<20}  {:<8}  {:<8}  {:<4}  {:<8}  {:<11}  {}",
            s(&e["id"]),
            s(&e["name"]),
            s(&e["status"]),
            s(&e["agent_version"]),
            scan,
            s(&e["support_access"]["state"]),
            format!("{}/{}", e["open_streams"], e["stream_limit"]),
            s(&e["node"])
        );
    }
}

pub fn print_users(list: &Value, json: bool) {
    if json {
        return print_json(list);
    }
    println!("{:<24}  {:<14}  TOKENS (active)", "NAME", "ROLE");
    for u in items(list) {
        let active = items(&u["tokens"]).filter(|t| t["revoked"] == false).count();
        println!("{:<24}  {:<14}  {active}", s(&u["name"]), s(&u["role"]));
    }
}

pub fn print_audit(report: &Value, json: bool) {
    if json {
        return print_json(report);
    }
    for e in items(&report["entries"]) {
        println!(
            "{}  #{:<6} {:<28} {} (by {})",
            s(&e["time"]),
            e["position"],
            s(&e["event"]),
            s(&e["summary"]),
            e["actor"].as_str().unwrap_or("system")
        );
    }
    if report["truncated"] == true {
        println!("(older entries left out; raise --limit)");
    }
}

pub fn print_verify(report: &Value) {
    for p in items(&report["projections"]) {
        let verdict =
            if p["matches"] == true { "matches the replay" } else { "DIFFERS from the replay" };
        println!(
            "{}: {} rows at log position {}: {verdict}",
            s(&p["name"]),
            p["rows"],
            p["position"]
        );
    }
}

/// The audit timeline read straight from an event log, without a node.
pub async fn offline_audit(
    spec: &str,
    gateway: Option<&str>,
    endpoint: Option<&str>,
    actor: Option<String>,
    since: Option<&str>,
    until: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<AuditEntry>> {
    let is_url = spec.starts_with("nats://") || spec.starts_with("tls://");
    if !is_url && !std::path::Path::new(spec).is_dir() {
        anyhow::bail!("no event log at {spec}: give a nats:// URL or an embedded log directory (<data-dir>/events)");
    }
    let id = |what: &str, raw: Option<&str>| {
        raw.map(|r| {
            uuid::Uuid::try_parse(r).with_context(|| format!("--{what} must be an id, not {r:?}"))
        })
        .transpose()
    };
    let time = |what: &str, raw: Option<&str>| {
        raw.map(|r| {
            parse_time(r).with_context(|| {
                format!("--{what} must be a date, a UTC time or milliseconds, not {r:?}")
            })
        })
        .transpose()
    };
    let filter = AuditFilter {
        gateway: id("gateway", gateway)?,
        endpoint: id("endpoint", endpoint)?,
        actor,
        since_ms: time("since", since)?,
        until_ms: time("until", until)?,
    };
    let log = ism_events::open_log(spec).await.with_context(|| format!("opening {spec} (an embedded log cannot be read while a node has it open: ask the node instead)"))?;
    let head = log.head().await?;
    let mut timeline = Timeline::new(filter);
    let mut kept = VecDeque::new();
    if head > 0 {
        let mut events = log.subscribe(0).await?;
        while let Some(rec) = events.next().await {
            let rec = rec?;
            if let Some(e) = timeline.push(&rec) {
                if kept.len() == limit.max(1) {
                    kept.pop_front();
                }
                kept.push_back(e);
            }
            if rec.position >= head {
                break;
            }
        }
    }
    Ok(kept.into())
}
