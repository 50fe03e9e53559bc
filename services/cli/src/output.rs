//! What the `ism` command prints: for people, text made from the API's JSON; with `--json`, the
//! JSON itself. Each command's text is rendered whole before anything is written, so that the
//! writing (which may meet a closed pipe) happens in one place. Also the offline audit.

use anyhow::Context;
use futures_util::StreamExt;
use ism_events::escaped;
use ism_projectors::audit::{entries, format_time, parse_time, AuditEntry, AuditFilter, Page};
use serde_json::Value;
use std::collections::VecDeque;

/// Renders a command's JSON as text.
pub type Render = fn(&Value) -> String;

/// Text for a terminal, by the one rule for untrusted text (`ism_events::escape`): a forged line
/// break or an escape sequence is shown escaped, never obeyed.
fn shown(text: &str) -> String {
    escaped(text).to_string()
}

/// A string field, or `-` when there is none or it is empty.
fn s(v: &Value) -> String {
    v.as_str().filter(|t| !t.is_empty()).map(shown).unwrap_or_else(|| "-".into())
}

/// A string field in quotes (a name, a label).
fn quoted(v: &Value) -> String {
    format!("\"{}\"", v.as_str().map(shown).unwrap_or_default())
}

/// A time field (milliseconds), or `-` when there is none.
fn time(v: &Value) -> String {
    v.as_i64().map(format_time).unwrap_or_else(|| "-".into())
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_array().into_iter().flatten()
}

/// A heading and its labelled rows, one per line.
fn card(heading: String, rows: &[(&str, String)]) -> String {
    let mut out = heading;
    for (label, value) in rows {
        out.push_str(&format!("\n  {label:<22}{value}"));
    }
    out.push('\n');
    out
}

pub fn json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

pub fn status(v: &Value) -> String {
    card(
        format!("node {}: event log {}", s(&v["node"]), s(&v["event_log"])),
        &[
            ("log head", format!("{} (directory at {})", v["log_head"], v["directory_position"])),
            ("connected endpoints", v["connected_endpoints"].to_string()),
            (
                "open streams",
                format!(
                    "{} (at most {} per endpoint), {} waiting for a slot",
                    v["open_streams"],
                    v["stream_limit_per_endpoint"],
                    v["queued_streams"].as_u64().unwrap_or(0)
                ),
            ),
            ("endpoints connect to", s(&v["endpoint_url"])),
            (
                "scanners connect to",
                format!(
                    "socks5://{}, or http://{} as an HTTP proxy",
                    s(&v["socks_address"]),
                    s(&v["http_proxy_address"])
                ),
            ),
        ],
    )
}

pub fn whoami(v: &Value) -> String {
    let may = if v["may_manage"] == true {
        "may manage gateways and endpoints"
    } else {
        "may read, not change"
    };
    format!("{}: {} ({may})\n", s(&v["name"]), s(&v["role"]))
}

pub fn gateway(v: &Value) -> String {
    let mut rows = vec![
        ("description", s(&v["description"])),
        ("endpoints", v["endpoint_count"].to_string()),
        ("endpoints connect to", format!("{} (allow it in your network)", s(&v["endpoint_url"]))),
        (
            "scanners connect to",
            format!(
                "socks5://{}, or http://{} as an HTTP proxy",
                s(&v["socks_address"]),
                s(&v["http_proxy_address"])
            ),
        ),
        ("created", format!("{} by {}", time(&v["created_ms"]), s(&v["created_by"]))),
    ];
    if !v["deleted_ms"].is_null() {
        rows.push(("deleted", format!("{}: {}", time(&v["deleted_ms"]), s(&v["deleted_reason"]))));
    } else if !v["deletion_due_ms"].is_null() {
        rows.push((
            "last scan activity",
            format!(
                "{}; deleted {} unless a scan uses it before",
                time(&v["last_activity_ms"]),
                time(&v["deletion_due_ms"])
            ),
        ));
    }
    let credentials: Vec<String> = items(&v["scanner_credentials"])
        .map(|c| {
            let revoked = if c["revoked"] == true { ", revoked" } else { "" };
            format!(
                "{} {} {} issued {}{revoked}",
                s(&c["id"]),
                s(&c["kind"]),
                quoted(&c["label"]),
                time(&c["issued_ms"])
            )
        })
        .collect();
    rows.push((
        "scanner credentials",
        if credentials.is_empty() {
            "none".into()
        } else {
            credentials.join(&format!("\n  {:<22}", ""))
        },
    ));
    card(format!("gateway {} {}: {}", quoted(&v["name"]), s(&v["id"]), s(&v["status"])), &rows)
}

pub fn gateways(list: &Value) -> String {
    let mut out = format!(
        "{:<36}  {:<20}  {:<12}  {:<9}  ENDPOINT URL\n",
        "ID", "NAME", "STATUS", "ENDPOINTS"
    );
    for g in items(list) {
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<12}  {:<9}  {}\n",
            s(&g["id"]),
            s(&g["name"]),
            s(&g["status"]),
            g["endpoint_count"],
            s(&g["endpoint_url"])
        ));
    }
    out
}

pub fn nodes(list: &Value) -> String {
    let mut out = format!(
        "{:<24}  {:<9}  {:>9}  {:>7}  RELAY ADDRESS\n",
        "NODE", "STATE", "ENDPOINTS", "STREAMS"
    );
    for n in items(list) {
        let this = if n["this_node"] == true { "  (answered this)" } else { "" };
        // A node that relays nothing (a single node) announces the unspecified address.
        let relay = match s(&n["relay_address"]) {
            r if r.starts_with("0.0.0.0:0") || r.starts_with("[::]:0") => "-".to_string(),
            r => r,
        };
        out.push_str(&format!(
            "{:<24}  {:<9}  {:>9}  {:>7}  {relay}{this}\n",
            s(&n["node"]),
            s(&n["state"]),
            n["endpoints"].as_u64().unwrap_or(0),
            n["streams"].as_u64().unwrap_or(0),
        ));
    }
    out
}

pub fn drained(v: &Value) -> String {
    format!(
        "node {} is draining: its {} endpoint(s) move to the other nodes, its running streams finish first\n",
        s(&v["node"]),
        v["endpoints"]
    )
}

pub fn deleted(list: &Value) -> String {
    let mut out = format!("{:<36}  {:<20}  {:<24}  REASON\n", "ID", "NAME", "DELETED");
    for g in items(list) {
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<24}  {}\n",
            s(&g["id"]),
            s(&g["name"]),
            time(&g["deleted_ms"]),
            s(&g["deleted_reason"])
        ));
    }
    out
}

fn support_access(v: &Value) -> String {
    match (v["state"].as_str(), v["indefinite"] == true) {
        (Some("active"), true) => "on, indefinitely".into(),
        (Some("active"), false) => format!("on until {}", time(&v["until_ms"])),
        (Some("expired"), _) => format!("expired {}", time(&v["until_ms"])),
        _ => "off".into(),
    }
}

pub fn endpoint(v: &Value) -> String {
    let agent = match v["agent_version"].as_str() {
        Some(version) => format!(
            "version {} on {} ({})",
            shown(version),
            s(&v["hostname"]),
            s(&v["agent_platform"])
        ),
        None => "never connected".into(),
    };
    card(
        format!("endpoint {} {}: {}", quoted(&v["name"]), s(&v["id"]), s(&v["status"])),
        &[
            ("gateway", s(&v["gateway"])),
            ("description", s(&v["description"])),
            ("platform", s(&v["platform"])),
            ("scan access", if v["scan_access"] == true { "on" } else { "off" }.into()),
            ("support access", support_access(&v["support_access"])),
            ("streams", streams(v)),
            ("scans", scans_in_use(v)),
            ("agent", agent),
            ("machine", machine(&v["machine"])),
            ("node", s(&v["node"])),
            ("connected since", time(&v["connected_since_ms"])),
            ("last disconnected", time(&v["last_disconnected_ms"])),
            ("last refusal", s(&v["last_refusal"])),
            ("key generation", v["key_generation"].to_string()),
            ("record version", v["version"].to_string()),
        ],
    )
}

/// The machine identity the key is bound to (its first 16 hex digits, as the audit shows it).
fn machine(v: &Value) -> String {
    match v.as_str() {
        Some(m) => format!("bound to {}", shown(&m.chars().take(16).collect::<String>())),
        None => "bound to no machine: the next machine that presents the key binds it".into(),
    }
}

pub fn endpoint_added(v: &Value) -> String {
    format!(
        "{}  {:<22}{}\nInstall the endpoint with this key; `ism endpoint key {}` shows it again.\n",
        endpoint(&v["endpoint"]),
        "key",
        s(&v["key"]),
        s(&v["endpoint"]["id"])
    )
}

pub fn endpoints(list: &Value) -> String {
    let mut out = format!(
        "{:<36}  {:<20}  {:<8}  {:<8}  {:<4}  {:<8}  {:<11}  {:<11}  NODE\n",
        "ID", "NAME", "STATUS", "VERSION", "SCAN", "SUPPORT", "STREAMS", "SCANS"
    );
    for e in items(list) {
        let scan = if e["scan_access"] == true { "on" } else { "off" };
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<8}  {:<8}  {:<4}  {:<8}  {:<11}  {:<11}  {}\n",
            s(&e["id"]),
            s(&e["name"]),
            s(&e["status"]),
            s(&e["agent_version"]),
            scan,
            s(&e["support_access"]["state"]),
            streams(e),
            scans_in_use(e),
            s(&e["node"])
        ));
    }
    out
}

pub fn endpoint_deleted(v: &Value) -> String {
    format!(
        "deleted endpoint {} ({}): its key no longer works\n",
        quoted(&v["name"]),
        s(&v["deleted"])
    )
}

/// The key alone, so that it can be copied or piped.
pub fn key(v: &Value) -> String {
    format!("{}\n", s(&v["key"]))
}

pub fn rotated_key(v: &Value) -> String {
    format!(
        "new key for endpoint {} (generation {}), the old one no longer works:\n{}\n",
        s(&v["endpoint"]),
        v["key_generation"],
        s(&v["key"])
    )
}

pub fn unbound(v: &Value) -> String {
    format!(
        "endpoint {} ({}) is bound to no machine: the next machine that presents its key binds it\n",
        quoted(&v["name"]),
        s(&v["id"])
    )
}

pub fn credential(v: &Value) -> String {
    card(
        format!(
            "scanner credential {} ({}) for gateway {}",
            s(&v["id"]),
            s(&v["kind"]),
            s(&v["gateway"])
        ),
        &[
            ("secret", format!("{} (shown only now)", s(&v["secret"]))),
            ("SOCKS5 ingress", s(&v["socks_address"])),
            ("usage", s(&v["usage"])),
        ],
    )
}

pub fn user(v: &Value) -> String {
    let tokens: Vec<String> = items(&v["tokens"])
        .map(|t| {
            let revoked = if t["revoked"] == true { ", revoked" } else { "" };
            format!(
                "{} {} issued {}{revoked}",
                s(&t["id"]),
                quoted(&t["label"]),
                time(&t["issued_ms"])
            )
        })
        .collect();
    card(
        format!("user {}: {}", quoted(&v["name"]), s(&v["role"])),
        &[
            ("created", format!("{} by {}", time(&v["created_ms"]), s(&v["created_by"]))),
            ("email", v["email"].as_str().map(shown).unwrap_or_else(|| "none".into())),
            (
                "notifications",
                match (v["notified"] == true, v["notifications"].as_bool()) {
                    (true, _) => "sent to this user".into(),
                    (false, Some(false)) => "off (opted out)".into(),
                    (false, _) if v["email"].is_null() => "not sent (no email address)".into(),
                    (false, _) => "not sent (opt in with --notifications on)".into(),
                },
            ),
            (
                "API tokens",
                if tokens.is_empty() {
                    "none".into()
                } else {
                    tokens.join(&format!("\n  {:<22}", ""))
                },
            ),
        ],
    )
}

pub fn users(list: &Value) -> String {
    let mut out = format!("{:<24}  {:<14}  {:<8}  TOKENS (active)\n", "NAME", "ROLE", "NOTIFIED");
    for u in items(list) {
        let active = items(&u["tokens"]).filter(|t| t["revoked"] == false).count();
        let notified = if u["notified"] == true { "yes" } else { "no" };
        out.push_str(&format!(
            "{:<24}  {:<14}  {notified:<8}  {active}\n",
            s(&u["name"]),
            s(&u["role"])
        ));
    }
    out
}

fn kinds(events: &Value) -> String {
    let list: Vec<String> = items(events).map(s).collect();
    if list.is_empty() {
        "all".into()
    } else {
        list.join(",")
    }
}

pub fn webhook_added(v: &Value) -> String {
    let w = &v["webhook"];
    format!(
        "webhook {} posts {} notifications to {}\nsigning secret, shown only now (ISM-Signature: t=<unix>,v1=<HMAC-SHA256 of \"<t>.<body>\">):\n{}\n",
        s(&w["id"]),
        kinds(&w["events"]),
        s(&w["url"]),
        s(&v["secret"])
    )
}

pub fn webhooks(list: &Value) -> String {
    let mut out = format!("{:<36}  {:<40}  EVENTS\n", "ID", "URL");
    for w in items(list) {
        out.push_str(&format!(
            "{:<36}  {:<40}  {}\n",
            s(&w["id"]),
            s(&w["url"]),
            kinds(&w["events"])
        ));
    }
    out
}

pub fn webhook_removed(v: &Value) -> String {
    format!("webhook {} removed\n", s(&v["removed"]))
}

pub fn notifications(list: &Value) -> String {
    let mut out =
        format!("{:<24}  {:<18}  {:<10}  {:<20}  DETAIL\n", "TIME", "KIND", "STATE", "ABOUT");
    for n in items(list) {
        let detail = match n["state"].as_str() {
            Some("suppressed") => s(&n["suppressed"]),
            Some("failing") => format!("{} failures, last: {}", n["failures"], s(&n["last_error"])),
            _ => items(&n["sent"])
                .map(|x| {
                    let to: Vec<String> = items(&x["recipients"]).map(s).collect();
                    format!("{} to {}", s(&x["channel"]), to.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; "),
        };
        let about = n["subject_name"].as_str().map(shown).unwrap_or_else(|| s(&n["subject"]));
        out.push_str(&format!(
            "{:<24}  {:<18}  {:<10}  {:<20}  {}\n",
            time(&n["first_ms"]),
            s(&n["kind"]),
            s(&n["state"]),
            about,
            shown(&detail)
        ));
    }
    out
}

pub fn api_token(v: &Value) -> String {
    format!(
        "API token {} for user {}, shown only now:\n{}\n",
        s(&v["id"]),
        quoted(&v["user"]),
        s(&v["token"])
    )
}

pub fn audit(report: &Value) -> String {
    let mut out = String::new();
    for e in items(&report["entries"]) {
        out.push_str(&format!(
            "{}  #{:<6} {:<28} {} (by {})\n",
            s(&e["time"]),
            e["position"],
            s(&e["event"]),
            s(&e["summary"]),
            e["actor"].as_str().map(shown).unwrap_or_else(|| "system".into())
        ));
    }
    if report["truncated"] == true {
        out.push_str("(older entries left out; raise --limit)\n");
    }
    out
}

pub fn verify(report: &Value) -> String {
    let mut out = String::new();
    for p in items(&report["projections"]) {
        let verdict =
            if p["matches"] == true { "matches the replay" } else { "DIFFERS from the replay" };
        out.push_str(&format!(
            "{}: {} rows at log position {}: {verdict}\n",
            s(&p["name"]),
            p["rows"],
            p["position"]
        ));
    }
    out
}

/// A response fetched through the ingress (the body is the scanned page's), line by line with
/// each line's control characters escaped: a hostile target could otherwise drive the operator's
/// terminal (`ESC ]` sequences, cursor moves). `--json` gives the body exactly.
pub fn fetched(v: &Value) -> String {
    let mut out = format!("{}\n", s(&v["status_line"]));
    for h in items(&v["headers"]) {
        out.push_str(&format!("{}: {}\n", s(&h[0]), s(&h[1])));
    }
    out.push('\n');
    let body = v["body"].as_str().unwrap_or_default();
    let lines: Vec<String> = body.split('\n').map(|l| escaped(l).to_string()).collect();
    out.push_str(&lines.join("\n"));
    out
}

/// What `ism audit` asks for: the filters as typed, and the page.
pub struct AuditQuery<'a> {
    pub gateway: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub actor: Option<String>,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub page: Page,
}

/// The audit timeline read straight from an event log, without a node: the entries as they are
/// read (see `ism_projectors::audit::entries`).
pub async fn offline_audit(
    spec: &str,
    q: AuditQuery<'_>,
) -> anyhow::Result<impl futures_util::Stream<Item = Result<AuditEntry, ism_events::LogError>>> {
    let is_url = ism_events::is_jetstream(spec);
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
        gateway: id("gateway", q.gateway)?,
        endpoint: id("endpoint", q.endpoint)?,
        actor: q.actor,
        since_ms: time("since", q.since)?,
        until_ms: time("until", q.until)?,
    };
    let shown = ism_events::jetstream::shown(spec);
    // A node waits for its NATS servers; a person at a terminal is told at once why none
    // answered, or after a while that the log is still not ready (servers slow to answer,
    // JetStream off or without a quorum).
    let opening = ism_events::open_log(spec, ism_events::jetstream::Patience::FirstAttempt);
    let log = tokio::time::timeout(OPEN_PATIENCE, opening)
        .await
        .map_err(|_| anyhow::anyhow!("the event log at {shown} was not ready within {OPEN_PATIENCE:?} (connecting, or setting up its stream): are its servers reachable, is JetStream enabled there, and in a cluster are most of its servers up?"))?
        .with_context(|| {
            let hint = if is_url { "" } else { " (an embedded log cannot be read while a node has it open: ask the node instead)" };
            format!("opening {shown}{hint}")
        })?;
    Ok(entries(log, filter, q.page).await?.1)
}

/// How long `ism audit --event-log` waits for the log to open.
const OPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// The last `keep` of `entries` (all of them for a page, which has its own limit).
pub async fn last_entries(
    entries: impl futures_util::Stream<Item = Result<AuditEntry, ism_events::LogError>>,
    keep: usize,
) -> anyhow::Result<Vec<AuditEntry>> {
    let mut entries = std::pin::pin!(entries);
    let mut kept = VecDeque::new();
    while let Some(e) = entries.next().await {
        if kept.len() == keep.max(1) {
            kept.pop_front();
        }
        kept.push_back(e?);
    }
    Ok(kept.into())
}

/// An endpoint's streams on the node that answered: `open/limit`, and `+N queued` while some
/// wait for a slot.
fn streams(e: &Value) -> String {
    in_use(e, "open_streams", "stream_limit", "queued_streams")
}

/// Scans running of the endpoint's capacity, and those waiting: `3/30 +4 queued`.
fn scans_in_use(e: &Value) -> String {
    in_use(e, "running_scans", "scan_capacity", "queued_scans")
}

/// `used/limit`, and `+N queued` while some wait.
fn in_use(e: &Value, used: &str, limit: &str, queued: &str) -> String {
    match e[queued].as_u64().unwrap_or(0) {
        0 => format!("{}/{}", e[used], e[limit]),
        n => format!("{}/{} +{n} queued", e[used], e[limit]),
    }
}

/// Findings per severity, highest first: `2 high, 1 medium, 4 low, 3 info`.
fn finding_counts(v: &Value) -> String {
    ["high", "medium", "low", "info"]
        .iter()
        .map(|k| format!("{} {k}", v[*k].as_u64().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A scan's state, with its place in the queue while it waits.
fn scan_state(v: &Value) -> String {
    match v["queue_position"].as_u64() {
        Some(place) => format!("{} (#{place})", s(&v["state"])),
        None => s(&v["state"]),
    }
}

pub fn scans(list: &Value) -> String {
    let mut out = format!(
        "{:<36}  {:<16}  {:<14}  {:>5}  {:<28}  TARGET\n",
        "ID", "ENDPOINT", "STATE", "PAGES", "FINDINGS (H/M/L/I)"
    );
    for v in items(list) {
        let f = &v["findings"];
        let counts = format!("{}/{}/{}/{}", f["high"], f["medium"], f["low"], f["info"]);
        let more = v["targets"].as_array().map_or(0, |t| t.len().saturating_sub(1));
        let more = if more > 0 { format!(" (+{more})") } else { String::new() };
        out.push_str(&format!(
            "{:<36}  {:<16}  {:<14}  {:>5}  {:<28}  {}{more}\n",
            s(&v["id"]),
            s(&v["endpoint_name"]),
            scan_state(v),
            v["pages"],
            counts,
            s(&v["targets"][0]),
        ));
    }
    out
}

pub fn scan(v: &Value) -> String {
    let targets: Vec<String> = items(&v["targets"]).map(s).collect();
    let mut out = card(
        format!("scan {}: {}", s(&v["id"]), scan_state(v)),
        &[
            ("endpoint", format!("{} ({})", s(&v["endpoint_name"]), s(&v["endpoint"]))),
            ("targets", targets.join(", ")),
            (
                "limits",
                format!(
                    "{} pages, depth {}, {} requests/s",
                    v["max_pages"], v["max_depth"], v["rate"]
                ),
            ),
            ("queued", format!("{} by {}", time(&v["queued_ms"]), s(&v["queued_by"]))),
            ("started", format!("{} on node {}", time(&v["started_ms"]), s(&v["node"]))),
            ("ended", time(&v["ended_ms"])),
            ("reason", s(&v["reason"])),
            ("progress", format!("{} pages, {} requests", v["pages"], v["requests"])),
            ("findings", finding_counts(&v["findings"])),
        ],
    );
    for f in items(&v["finding_list"]) {
        out.push_str(&format!(
            "  {:<7} {:<26} {}\n          {}\n",
            s(&f["severity"]),
            s(&f["rule"]),
            s(&f["url"]),
            s(&f["evidence"])
        ));
    }
    out
}

pub fn report_written(v: &Value) -> String {
    format!("{} report written to {}\n", s(&v["format"]), s(&v["written"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_body_keeps_its_lines_and_loses_its_terminal_controls() {
        let response = serde_json::json!({
            "status_line": "HTTP/1.1 200 OK",
            "headers": [["Content-Type", "text/html"]],
            "body": "<p>one</p>\n\u{1b}]0;pwned\u{7}<p>two</p>",
        });
        let shown = fetched(&response);
        assert!(!shown.contains('\u{1b}') && !shown.contains('\u{7}'), "{shown:?}");
        assert!(shown.ends_with("<p>one</p>\n\\u{1b}]0;pwned\\u{7}<p>two</p>"), "{shown:?}");
    }
}
