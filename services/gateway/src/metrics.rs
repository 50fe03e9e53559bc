//! The node's metrics, served at `/metrics` in Prometheus' text format.
//!
//! Counters move where things happen (a stream opened or refused, a handshake failed, an append,
//! a notification); gauges of what the node holds (sessions, streams per endpoint, projection
//! lag) are read at scrape time from the parts that hold it, so they cannot drift. Label sets
//! are bounded: endpoint and gateway ids (no names, which users choose), and closed lists of
//! reasons; never a target.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use uuid::Uuid;

type One = [(&'static str, &'static str); 1];
type PerEndpoint = [(&'static str, String); 2];

/// Everything the node counts, and the registry it is encoded from.
pub struct NodeMetrics {
    registry: Mutex<Registry>,
    sessions: Gauge,
    streams_open: Family<PerEndpoint, Gauge>,
    streams_queued: Family<PerEndpoint, Gauge>,
    stream_limit: Gauge,
    window_budget: Gauge,
    window_budget_reserved: Gauge,
    window_budget_shortfalls: Counter,
    stream_opens: Counter,
    stream_refusals: Family<One, Counter>,
    stream_bytes: Family<One, Counter>,
    handshake_failures: Family<One, Counter>,
    api_token_refusals: Family<One, Counter>,
    scanner_request_refusals: Family<[(&'static str, &'static str); 2], Counter>,
    appends: Family<One, Counter>,
    append_seconds: Histogram,
    projection_lag_events: Family<One, Gauge>,
    projection_lag_seconds: Family<One, Gauge<f64, AtomicU64>>,
    projection_undecodable: Family<One, Counter>,
    notifications: Family<[(&'static str, &'static str); 2], Counter>,
    unrecorded_facts: Gauge,
    scans: Family<One, Gauge>,
    scans_run_here: Gauge,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix("ism")),
            sessions: Gauge::default(),
            streams_open: Family::default(),
            streams_queued: Family::default(),
            stream_limit: Gauge::default(),
            window_budget: Gauge::default(),
            window_budget_reserved: Gauge::default(),
            window_budget_shortfalls: Counter::default(),
            stream_opens: Counter::default(),
            stream_refusals: Family::default(),
            stream_bytes: Family::default(),
            handshake_failures: Family::default(),
            api_token_refusals: Family::default(),
            scanner_request_refusals: Family::default(),
            appends: Family::default(),
            append_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            projection_lag_events: Family::default(),
            projection_lag_seconds: Family::default(),
            projection_undecodable: Family::default(),
            notifications: Family::default(),
            unrecorded_facts: Gauge::default(),
            scans: Family::default(),
            scans_run_here: Gauge::default(),
        };
        metrics.register();
        metrics
    }
}

impl NodeMetrics {
    fn register(&self) {
        let mut r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "sessions_connected",
            "Endpoint sessions (tunnels) this node holds",
            self.sessions.clone(),
        );
        r.register(
            "streams_open",
            "Scanner streams running through this node, per endpoint (label endpoint, gateway: ids)",
            self.streams_open.clone(),
        );
        r.register(
            "streams_queued",
            "Scanner streams waiting for a slot of an endpoint at its stream cap (--stream-queue), per endpoint",
            self.streams_queued.clone(),
        );
        r.register(
            "stream_limit",
            "Most streams one endpoint's session carries at once on this node (--max-streams-per-endpoint); opens beyond it wait in the endpoint's queue",
            self.stream_limit.clone(),
        );
        r.register(
            "window_budget_bytes",
            "Credit the node's streams alone in their session may hold above the shared window, all sessions together (--window-budget-mib); a stream that finds it spent keeps the shared window",
            self.window_budget.clone(),
        );
        r.register(
            "window_budget_reserved_bytes",
            "Part of window_budget_bytes that lone streams hold now",
            self.window_budget_reserved.clone(),
        );
        r.register(
            "window_budget_shortfalls",
            "Grants at which a stream alone in its session stayed at the shared window because the budget was spent (raise --window-budget-mib if bulk transfers over long links need it)",
            self.window_budget_shortfalls.clone(),
        );
        r.register(
            "stream_opens",
            "Scanner streams opened through this node's ingresses",
            self.stream_opens.clone(),
        );
        r.register(
            "stream_refusals",
            "Scanner streams refused at this node's ingresses, by reason",
            self.stream_refusals.clone(),
        );
        r.register(
            "stream_bytes",
            "Bytes of ended scanner streams (direction: to_target, to_scanner), counted when a stream ends",
            self.stream_bytes.clone(),
        );
        r.register(
            "tunnel_handshake_failures",
            "Endpoint connections that did not become a session, by reason",
            self.handshake_failures.clone(),
        );
        r.register(
            "scanner_request_refusals",
            "Scanners' connections or requests an ingress refused, by ingress (socks5, http_proxy) and kind (a refused stream's reason, or what failed before one)",
            self.scanner_request_refusals.clone(),
        );
        r.register(
            "api_token_refusals",
            "Management API requests refused for their bearer token, by reason (missing: no Authorization header of the Bearer scheme; invalid)",
            self.api_token_refusals.clone(),
        );
        r.register(
            "event_appends",
            "Appends to the event log by outcome (ok, conflict, error); a batch counts once",
            self.appends.clone(),
        );
        r.register(
            "event_append_seconds",
            "Time an append (or a batch) to the event log took",
            self.append_seconds.clone(),
        );
        r.register(
            "projection_lag_events",
            "Events in the log this node's projection has not applied yet",
            self.projection_lag_events.clone(),
        );
        r.register(
            "projection_lag_seconds",
            "Age of the oldest event the projection has not applied (0 when caught up)",
            self.projection_lag_seconds.clone(),
        );
        r.register(
            "projection_undecodable_events",
            "Records of the event log the projection passed over since the node started because they do not decode (written by a newer build, or not events); each is logged at error level",
            self.projection_undecodable.clone(),
        );
        r.register(
            "notifications",
            "Notification deliveries by channel (email, webhook, deletion) and outcome (sent, failed, gave_up)",
            self.notifications.clone(),
        );
        r.register(
            "unrecorded_facts",
            "Facts the data path told the tunnel actors and the log has not recorded yet (--max-unrecorded-facts)",
            self.unrecorded_facts.clone(),
        );
        r.register(
            "scans",
            "Scans of the built-in engine queued or running in the cluster, by state (queued, running), as this node's directory shows them",
            self.scans.clone(),
        );
        r.register(
            "scans_run_here",
            "Scans of the built-in engine this node is running",
            self.scans_run_here.clone(),
        );
    }

    pub fn stream_opened(&self) {
        self.stream_opens.inc();
    }

    /// A stream refused for `reason`, one of a closed list (see `NotOpened::metric_reason`).
    pub fn stream_refused(&self, reason: &'static str) {
        self.stream_refusals.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn stream_ended(&self, to_target: u64, to_scanner: u64) {
        self.stream_bytes.get_or_create(&[("direction", "to_target")]).inc_by(to_target);
        self.stream_bytes.get_or_create(&[("direction", "to_scanner")]).inc_by(to_scanner);
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures.get_or_create(&[("reason", reason)]).inc();
    }

    /// A scanner's connection or request refused by `ingress`, for `kind` (a closed list).
    pub fn scanner_request_refused(&self, ingress: &'static str, kind: &'static str) {
        self.scanner_request_refusals.get_or_create(&[("ingress", ingress), ("kind", kind)]).inc();
    }

    /// An API request refused for its bearer token (`missing` or `invalid`).
    pub fn api_token_refused(&self, reason: &'static str) {
        self.api_token_refusals.get_or_create(&[("reason", reason)]).inc();
    }

    /// An append (or a batch) that took `seconds` and ended as `outcome`.
    pub fn appended(&self, outcome: &'static str, seconds: f64) {
        self.appends.get_or_create(&[("outcome", outcome)]).inc();
        self.append_seconds.observe(seconds);
    }

    /// A notification's delivery on a `channel` kind.
    pub fn notification(&self, channel: &'static str, outcome: &'static str) {
        self.notifications.get_or_create(&[("channel", channel), ("outcome", outcome)]).inc();
    }

    /// The text exposition, with the gauges set from `now` (what the node holds at scrape time).
    pub fn render(&self, now: &Snapshot) -> String {
        // One scrape at a time: another must not encode between the clearing and the refilling.
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        self.sessions.set(now.sessions as i64);
        self.stream_limit.set(now.stream_limit as i64);
        self.window_budget.set(i64::try_from(now.window_budget).unwrap_or(i64::MAX));
        self.window_budget_reserved
            .set(i64::try_from(now.window_budget_reserved).unwrap_or(i64::MAX));
        // The count lives in the budget the sessions share, so it is set here, not added to (it
        // only grows, as a counter must).
        self.window_budget_shortfalls
            .inner()
            .store(now.window_budget_shortfalls, Ordering::Relaxed);
        self.unrecorded_facts.set(now.unrecorded_facts as i64);
        self.scans.get_or_create(&[("state", "queued")]).set(now.scans_queued as i64);
        self.scans.get_or_create(&[("state", "running")]).set(now.scans_running as i64);
        self.scans_run_here.set(now.scans_run_here as i64);
        // Endpoints whose streams all ended (or none wait) leave the family, not a row stuck at 0
        // for ever.
        for (family, rows) in
            [(&self.streams_open, &now.streams), (&self.streams_queued, &now.queued)]
        {
            family.clear();
            for (endpoint, gateway, count) in rows {
                let labels = [("endpoint", endpoint.to_string()), ("gateway", gateway.to_string())];
                family.get_or_create(&labels).set(*count as i64);
            }
        }
        // Without the log's head the lag is unknown: no row rather than a reassuring 0.
        self.projection_lag_events.clear();
        self.projection_lag_seconds.clear();
        for lag in now.projections.iter().filter(|_| now.log_head.is_some()) {
            let labels = [("projection", lag.name)];
            self.projection_lag_events.get_or_create(&labels).set(lag.behind as i64);
            let age_s = lag.oldest_unapplied_ms.map_or(0.0, |at| (now.time_ms - at).max(0) as f64);
            self.projection_lag_seconds.get_or_create(&labels).set(age_s / 1000.0);
        }
        // Counted by the projection's feed, so set here, like the shortfalls above.
        for lag in &now.projections {
            let labels = [("projection", lag.name)];
            let count = self.projection_undecodable.get_or_create(&labels);
            count.inner().store(lag.undecodable, Ordering::Relaxed);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}

/// What the node holds at scrape time.
#[derive(Debug)]
pub struct Snapshot {
    pub time_ms: i64,
    pub sessions: usize,
    pub stream_limit: usize,
    /// The node's budget for lone streams' windows (`--window-budget-mib`) and what is reserved.
    pub window_budget: u64,
    pub window_budget_reserved: u64,
    pub window_budget_shortfalls: u64,
    pub unrecorded_facts: usize,
    /// Scans queued and running in the cluster, and those this node runs.
    pub scans_queued: usize,
    pub scans_running: usize,
    pub scans_run_here: usize,
    /// Streams running per endpoint: (endpoint, its gateway, streams).
    pub streams: Vec<(Uuid, Uuid, usize)>,
    /// Streams waiting for a slot, per endpoint (those with any).
    pub queued: Vec<(Uuid, Uuid, usize)>,
    /// The log's head, when the log answered (without it the lag is not shown).
    pub log_head: Option<u64>,
    pub projections: Vec<ProjectionLag>,
}

/// How far behind the log one projection is, and what of it the projection passed over.
#[derive(Debug)]
pub struct ProjectionLag {
    pub name: &'static str,
    /// Events in the log it has not applied.
    pub behind: u64,
    /// When the first of them was recorded (`None` when caught up): the age of the state the
    /// projection shows.
    pub oldest_unapplied_ms: Option<i64>,
    /// Records it passed over because they do not decode (`ProjectionProgress::undecodable`).
    pub undecodable: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(projections: Vec<ProjectionLag>) -> Snapshot {
        Snapshot {
            time_ms: 0,
            sessions: 0,
            stream_limit: 0,
            window_budget: 0,
            window_budget_reserved: 0,
            window_budget_shortfalls: 0,
            unrecorded_facts: 0,
            scans_queued: 0,
            scans_running: 0,
            scans_run_here: 0,
            streams: Vec::new(),
            queued: Vec::new(),
            log_head: None,
            projections,
        }
    }

    /// Shown even while the log does not answer: it is a count of what happened, not a lag.
    #[test]
    fn records_a_projection_passed_over_are_shown_per_projection() {
        let lag = |name, undecodable| ProjectionLag {
            name,
            behind: 0,
            oldest_unapplied_ms: None,
            undecodable,
        };
        let text =
            NodeMetrics::default().render(&snapshot(vec![lag("directory", 2), lag("notices", 0)]));
        assert!(
            text.contains("ism_projection_undecodable_events_total{projection=\"directory\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("ism_projection_undecodable_events_total{projection=\"notices\"} 0\n"),
            "{text}"
        );
    }
}
