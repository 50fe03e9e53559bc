//! The status file: what the running agent last knew about its connection, for
//! `ism-endpoint status` (and for operators reading it directly). Written atomically (a new file
//! renamed over the old), so a reader never sees half of it.

use ism_escape::escaped;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub pid: u32,
    /// `connecting`, `connected` or `stopped`.
    pub state: String,
    pub gateway: String,
    /// The gateway node holding the session.
    pub node: Option<String>,
    pub endpoint_name: Option<String>,
    /// When the current session started (ms since the epoch).
    pub since_ms: Option<i64>,
    pub open_streams: usize,
    pub last_error: Option<String>,
    pub version: String,
    pub updated_ms: i64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn write(path: &Path, report: &StatusReport) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(report).expect("status encodes"))?;
    std::fs::rename(tmp, path)
}

pub fn read(path: &Path) -> Result<StatusReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "no status at {}: {e} (is the endpoint running with this configuration?)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: unreadable status: {e}", path.display()))
}

/// Whether the process that wrote the report still runs.
pub fn writer_alive(report: &StatusReport) -> bool {
    Path::new(&format!("/proc/{}", report.pid)).exists()
}

/// The report in words.
pub fn describe(report: &StatusReport) -> String {
    if !writer_alive(report) {
        return format!(
            "Endpoint is not running (last seen {}: {}).",
            ism_time(report.updated_ms),
            report.state
        );
    }
    // The endpoint's and the node's names and the last error may carry the gateway's words.
    let shown =
        |text: &Option<String>, none: &str| escaped(text.as_deref().unwrap_or(none)).to_string();
    match report.state.as_str() {
        "connected" => format!(
            "Endpoint {} is connected to gateway {} (node {}) since {}, with {} open stream(s). Version {}.",
            shown(&report.endpoint_name, "?"),
            report.gateway,
            shown(&report.node, "?"),
            report.since_ms.map(ism_time).unwrap_or_default(),
            report.open_streams,
            report.version
        ),
        "connecting" => format!("Endpoint is not connected; it is trying to reach gateway {} (last error: {}).", report.gateway, shown(&report.last_error, "none")),
        _ => format!("Endpoint stopped: {}.", shown(&report.last_error, "asked to stop")),
    }
}

/// `2026-11-23 16:40:01` (UTC).
fn ism_time(ms: i64) -> String {
    crate::logging::timestamp(ms)[..19].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_roundtrip_and_describe_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/status.json");
        let r = StatusReport {
            pid: std::process::id(),
            state: "connected".into(),
            gateway: "gw:443".into(),
            node: Some("node-a".into()),
            endpoint_name: Some("dc1".into()),
            since_ms: Some(0),
            open_streams: 3,
            last_error: None,
            version: "0.1.0".into(),
            updated_ms: 0,
        };
        write(&path, &r).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back, r);
        let text = describe(&back);
        assert!(text.contains("connected to gateway gw:443 (node node-a) since 1970-01-01 00:00:00, with 3 open stream(s)"), "{text}");
        let forged = StatusReport {
            node: Some("node-a\nforged".into()),
            state: "connecting".into(),
            last_error: Some("moving: drain\r\nforged".into()),
            ..r.clone()
        };
        assert!(describe(&forged).contains("(last error: moving: drain\\r\\nforged)."));
        let forged = StatusReport { state: "connected".into(), ..forged };
        assert!(describe(&forged).contains("(node node-a\\nforged)"));
        let dead = StatusReport { pid: u32::MAX, ..r };
        assert!(describe(&dead).starts_with("Endpoint is not running"));
        assert!(read(&dir.path().join("missing.json"))
            .unwrap_err()
            .contains("is the endpoint running"));
    }
}
