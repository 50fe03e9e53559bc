//! A scan's report, as JSON of our own stable schema and as SARIF 2.1.0 (what code-scanning
//! dashboards import). Both are built from the scan's summary and its findings, so a report can
//! be made at any time from what the event log recorded.
//!
//! # The JSON report, `ism-scan-report/1`
//!
//! ```text
//! {
//!   "schema": "ism-scan-report/1",       the schema's name and version: a change that removes or
//!                                        renames a field gets a new version
//!   "scan": {
//!     "id": string,                      the scan's id
//!     "endpoint": string,                the endpoint's name (the network scanned)
//!     "gateway": string,                 the gateway's name
//!     "targets": [string],               the URLs the crawl started from
//!     "state": string,                   queued | running | finished | failed | cancelled
//!     "queued_ms": integer,              when it was queued (ms since the Unix epoch, UTC)
//!     "started_ms": integer | null,      when a node started it
//!     "ended_ms": integer | null,        when it ended
//!     "pages": integer,                  responses other than redirects
//!     "requests": integer,               requests sent, redirects and failures included
//!     "reason": string | null            why it failed or was cancelled
//!   },
//!   "counts": {                          findings by severity (all four keys always present)
//!     "high": integer, "medium": integer, "low": integer, "info": integer
//!   },
//!   "findings": [                        most severe first, then by URL, then by rule
//!     {
//!       "rule": string,                  the rule's stable id (`missing-csp`, `tls-expired`...)
//!       "name": string,                  the rule's title (the id for a rule this engine
//!                                        does not know)
//!       "severity": string,              high | medium | low | info
//!       "url": string,                   where it was seen (for per-origin rules: the first
//!                                        URL of the origin)
//!       "evidence": string,              a short excerpt of what was seen (at most 200
//!                                        characters; the target's own text)
//!       "remediation": string            what to change ("" for an unknown rule)
//!     }
//!   ]
//! }
//! ```

use crate::finding::Finding;
use crate::rules::{self, Rule};
use crate::Severity;
use serde_json::{json, Map, Value};

/// The JSON report's schema name.
pub const JSON_SCHEMA: &str = "ism-scan-report/1";
/// Where the SARIF 2.1.0 schema is published (the value of a SARIF log's `$schema`).
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";
/// The tool's name in SARIF.
pub const TOOL_NAME: &str = "ism-scan";

/// What a report says about the scan itself (from the scan's read model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanSummary {
    pub id: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// The gateway's name.
    pub gateway: String,
    pub targets: Vec<String>,
    /// `queued`, `running`, `finished`, `failed` or `cancelled`.
    pub state: String,
    /// Milliseconds since the Unix epoch (UTC), as every time in the event log.
    pub queued_ms: i64,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub pages: u32,
    pub requests: u32,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
}

/// The JSON report (see the module's documentation for its schema).
pub fn json(summary: &ScanSummary, findings: &[Finding]) -> Value {
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let rows: Vec<Value> = sorted(findings)
        .into_iter()
        .map(|f| {
            let rule = rules::find(&f.rule);
            json!({
                "rule": f.rule,
                "name": rule.map_or(f.rule.as_str(), |r| r.name),
                "severity": f.severity.as_str(),
                "url": f.url,
                "evidence": f.evidence,
                "remediation": rule.map_or("", |r| r.remediation),
            })
        })
        .collect();
    json!({
        "schema": JSON_SCHEMA,
        "scan": {
            "id": summary.id,
            "endpoint": summary.endpoint,
            "gateway": summary.gateway,
            "targets": summary.targets,
            "state": summary.state,
            "queued_ms": summary.queued_ms,
            "started_ms": summary.started_ms,
            "ended_ms": summary.ended_ms,
            "pages": summary.pages,
            "requests": summary.requests,
            "reason": summary.reason,
        },
        "counts": {
            "high": count(Severity::High),
            "medium": count(Severity::Medium),
            "low": count(Severity::Low),
            "info": count(Severity::Info),
        },
        "findings": rows,
    })
}

/// The report as a SARIF 2.1.0 log: one run of `ism-scan`, every rule of [`rules::ALL`] as a
/// reporting descriptor, one result per finding located at its URL, and one invocation that
/// tells whether the scan finished (`executionSuccessful` is true for `finished` only) and why
/// it did not.
pub fn sarif(summary: &ScanSummary, findings: &[Finding]) -> Value {
    let descriptors: Vec<Value> = rules::ALL.iter().map(descriptor).collect();
    let results: Vec<Value> = sorted(findings).into_iter().map(result).collect();
    let mut invocation = Map::new();
    invocation.insert("executionSuccessful".into(), json!(summary.state == "finished"));
    if let Some(ms) = summary.started_ms {
        invocation.insert("startTimeUtc".into(), json!(utc(ms)));
    }
    if let Some(ms) = summary.ended_ms {
        invocation.insert("endTimeUtc".into(), json!(utc(ms)));
    }
    if let Some(reason) = &summary.reason {
        let level = if summary.state == "failed" { "error" } else { "note" };
        let ended = format!("scan {}: {reason}", summary.state);
        invocation.insert(
            "toolExecutionNotifications".into(),
            json!([{ "level": level, "message": { "text": ended } }]),
        );
    }
    json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": TOOL_NAME,
                    "version": env!("CARGO_PKG_VERSION"),
                    "semanticVersion": env!("CARGO_PKG_VERSION"),
                    "rules": descriptors,
                }
            },
            "automationDetails": { "id": format!("{TOOL_NAME}/{}", summary.id) },
            "invocations": [Value::Object(invocation)],
            "results": results,
            "properties": {
                "scan": summary.id,
                "endpoint": summary.endpoint,
                "gateway": summary.gateway,
                "targets": summary.targets,
                "state": summary.state,
                "pages": summary.pages,
                "requests": summary.requests,
            },
        }],
    })
}

/// SARIF's level for a severity: what a dashboard shows as error, warning or note.
pub fn sarif_level(severity: Severity) -> &'static str {
    match severity {
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// The CVSS-like score code-scanning dashboards rank security results by (GitHub: 7.0 and
/// above is high, 4.0 to 6.9 medium, below 4.0 low).
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::High => "8.0",
        Severity::Medium => "5.0",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn descriptor(rule: &Rule) -> Value {
    json!({
        "id": rule.id,
        "name": pascal_case(rule.id),
        "shortDescription": { "text": rule.name },
        "fullDescription": { "text": rule.description },
        "help": { "text": rule.remediation },
        "defaultConfiguration": { "level": sarif_level(rule.severity) },
        "properties": {
            "security-severity": security_severity(rule.severity),
            "tags": ["security"],
        },
    })
}

fn result(finding: &Finding) -> Value {
    let rule = rules::find(&finding.rule);
    let mut out = Map::new();
    out.insert("ruleId".into(), json!(finding.rule));
    if let Some(index) = rules::index(&finding.rule) {
        out.insert("ruleIndex".into(), json!(index));
    }
    out.insert("level".into(), json!(sarif_level(finding.severity)));
    let title = rule.map_or(finding.rule.as_str(), |r| r.name);
    out.insert("message".into(), json!({ "text": format!("{title}: {}", finding.evidence) }));
    out.insert(
        "locations".into(),
        json!([{ "physicalLocation": { "artifactLocation": { "uri": finding.url } } }]),
    );
    out.insert("properties".into(), json!({ "severity": finding.severity.as_str() }));
    Value::Object(out)
}

/// Most severe first, then by URL, then by rule: the order both reports list findings in.
fn sorted(findings: &[Finding]) -> Vec<&Finding> {
    let mut out: Vec<&Finding> = findings.iter().collect();
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.url.cmp(&b.url))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    out
}

/// `missing-csp` -> `MissingCsp`: SARIF's descriptor names are identifiers.
fn pascal_case(id: &str) -> String {
    id.split(|c: char| !c.is_ascii_alphanumeric())
        .flat_map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars)
        })
        .collect()
}

/// RFC 3339 UTC with milliseconds, as SARIF's date-time properties want.
fn utc(ms: i64) -> String {
    format!("{}Z", ism_time::format_utc(ms, '.').replacen(' ', "T", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> ScanSummary {
        ScanSummary {
            id: "7f3c".into(),
            endpoint: "dc1".into(),
            gateway: "eu".into(),
            targets: vec!["http://intranet/".into()],
            state: "finished".into(),
            queued_ms: 1_700_000_000_000,
            started_ms: Some(1_700_000_001_000),
            ended_ms: Some(1_700_000_061_500),
            pages: 12,
            requests: 14,
            reason: None,
        }
    }

    fn finding(rule: &str, severity: Severity, url: &str) -> Finding {
        Finding { rule: rule.into(), severity, url: url.into(), evidence: "seen".into() }
    }

    #[test]
    fn json_counts_and_orders_findings() {
        let findings = [
            finding("missing-csp", Severity::Low, "http://intranet/"),
            finding("password-over-http", Severity::High, "http://intranet/z"),
            finding("verbose-error", Severity::Medium, "http://intranet/error"),
            finding("password-over-http", Severity::High, "http://intranet/a"),
            finding("from-a-newer-engine", Severity::Info, "http://intranet/"),
        ];
        let report = json(&summary(), &findings);
        assert_eq!(report["schema"], "ism-scan-report/1");
        assert_eq!(report["counts"], json!({"high": 2, "medium": 1, "low": 1, "info": 1}));
        let urls: Vec<&str> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["url"].as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                "http://intranet/a",
                "http://intranet/z",
                "http://intranet/error",
                "http://intranet/",
                "http://intranet/"
            ]
        );
        assert_eq!(report["findings"][0]["name"], "Password sent over plain http");
        assert_eq!(report["findings"][4]["name"], "from-a-newer-engine");
        assert_eq!(report["findings"][4]["remediation"], "");
        assert_eq!(report["scan"]["reason"], Value::Null);
    }

    #[test]
    fn sarif_maps_levels_rules_and_times() {
        let mut s = summary();
        s.state = "failed".into();
        s.reason = Some("endpoint dc1 went offline".into());
        let log = sarif(&s, &[finding("tls-self-signed", Severity::Medium, "https://intranet/")]);
        let run = &log["runs"][0];
        assert_eq!(run["tool"]["driver"]["rules"].as_array().unwrap().len(), rules::ALL.len());
        let result = &run["results"][0];
        assert_eq!(result["level"], "warning");
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(run["tool"]["driver"]["rules"][index]["id"], "tls-self-signed");
        assert_eq!(run["tool"]["driver"]["rules"][index]["name"], "TlsSelfSigned");
        let invocation = &run["invocations"][0];
        assert_eq!(invocation["executionSuccessful"], false);
        assert_eq!(invocation["startTimeUtc"], "2023-11-14T22:13:21.000Z");
        assert_eq!(invocation["endTimeUtc"], "2023-11-14T22:14:21.500Z");
        assert_eq!(
            invocation["toolExecutionNotifications"][0]["message"]["text"],
            "scan failed: endpoint dc1 went offline"
        );
        assert_eq!(pascal_case("tls-below-1.2"), "TlsBelow12");
    }
}
