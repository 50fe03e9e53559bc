//! The audit timeline: the event log replayed as readable history, filtered by gateway, endpoint,
//! actor (user, node, endpoint, credential) and time.
//!
//! A filter on a gateway must also catch its endpoints' and tunnels' events, which do not name
//! the gateway themselves; the timeline learns those relations as it reads the log in order.

use futures_util::stream::{self, Stream, StreamExt};
use ism_events::{
    codec::CodecError, escaped, AggregateId, AggregateKind, Event, EventLog, LogError, Recorded,
    RepeatedRefusals, RepeatedRegistrationRefusals,
};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub gateway: Option<Uuid>,
    pub endpoint: Option<Uuid>,
    /// Who made the change, as recorded (`alice`, `admin`, `endpoint:dc1`, a node id ...);
    /// case-insensitive.
    pub actor: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// One line of history.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub position: u64,
    pub time_ms: i64,
    pub time: String,
    pub aggregate: String,
    pub gateway: Option<Uuid>,
    pub endpoint: Option<Uuid>,
    pub actor: Option<String>,
    pub event: &'static str,
    /// What happened, in words, with the names known at that point of the history; escaped
    /// (`ism_events::escape`), since it quotes what scanners, endpoints and users supplied.
    pub summary: String,
    /// The trace of the request that caused it (32 hex digits), to find its spans in a trace
    /// viewer; none for events no traced request caused.
    pub trace_id: Option<String>,
}

/// The entry on one line, whatever its event holds: the whole line is shown escaped
/// (`ism_events::escape`), the recorded actor included.
impl fmt::Display for AuditEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = format_args!(
            "{}  #{:<6} {:<28} {} (by {})",
            self.time,
            self.position,
            self.event,
            self.summary,
            self.actor.as_deref().unwrap_or("system")
        );
        write!(f, "{}", escaped(line))
    }
}

/// The trace id of a recorded W3C `traceparent` (`00-<trace id>-<span id>-<flags>`); anything
/// else recorded there (older events, tests) is not shown.
fn trace_id(traceparent: Option<&str>) -> Option<String> {
    let id = traceparent?.split('-').nth(1)?;
    let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (hex && id.bytes().any(|b| b != b'0')).then(|| id.to_string())
}

/// Which entries of the history to read: those after `after` (a log position, 0 for all) and
/// before `before` (none: up to the log's head when the reading began), at most `limit` of them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Page {
    pub after: u64,
    pub before: Option<u64>,
    pub limit: Option<usize>,
}

/// The entries of the history that pass `filter`, oldest first, as they are read, and the log's
/// head they end at: the log is read once, in order (the timeline learns which gateway each
/// endpoint and session belongs to from the start, so entries before `page.after` are read but
/// not kept; a page far into a long history costs a read of all before it), and only the
/// relations and one entry at a time are held, however long the history.
pub async fn entries(
    log: Arc<dyn EventLog>,
    filter: AuditFilter,
    page: Page,
) -> Result<(u64, impl Stream<Item = Result<AuditEntry, LogError>>), LogError> {
    let head = log.head().await?;
    // The last position read: the log is read no further than the page needs.
    let end = page.before.map_or(head, |b| head.min(b.saturating_sub(1)));
    let events = if end > page.after { Some(log.subscribe(0).await?) } else { None };
    let timeline = Timeline::new(filter);
    let left = page.limit.unwrap_or(usize::MAX);
    let entries =
        stream::unfold((events, timeline, left), move |(events, mut timeline, left)| async move {
            let mut events = events?;
            if left == 0 {
                return None;
            }
            while let Some(rec) = events.next().await {
                let (position, entry) = match rec {
                    Ok(rec) => (rec.position, timeline.push(&rec)),
                    Err(LogError::Undecodable { position, source }) => {
                        (position, timeline.undecodable(position, &source))
                    }
                    Err(e) => return Some((Err(e), (None, timeline, 0))),
                };
                let last = position >= end;
                let entry = entry.filter(|e| e.position > page.after);
                match (entry, last) {
                    (Some(e), true) => return Some((Ok(e), (None, timeline, left - 1))),
                    (Some(e), false) => return Some((Ok(e), (Some(events), timeline, left - 1))),
                    (None, true) => return None,
                    (None, false) => {}
                }
            }
            None
        });
    Ok((head, entries))
}

/// Reads the log in order and yields the entries that pass the filter.
#[derive(Default)]
pub struct Timeline {
    filter: AuditFilter,
    gateway_names: HashMap<Uuid, String>,
    endpoint_names: HashMap<Uuid, String>,
    endpoint_gateway: HashMap<Uuid, Uuid>,
    tunnel_endpoint: HashMap<Uuid, Uuid>,
    /// What each notification is about (an endpoint or a gateway).
    notification_subject: HashMap<Uuid, Uuid>,
    /// The endpoint each scan runs on.
    scan_endpoint: HashMap<Uuid, Uuid>,
}

impl Timeline {
    pub fn new(filter: AuditFilter) -> Self {
        Self { filter, ..Default::default() }
    }

    /// Feeds the next event of the log; returns its entry if the filter keeps it.
    pub fn push(&mut self, rec: &Recorded) -> Option<AuditEntry> {
        let env = &rec.envelope;
        self.learn(env.aggregate, &env.event);
        let (gateway, endpoint) = self.relations(env.aggregate, &env.event);
        let f = &self.filter;
        let keep = f.gateway.is_none_or(|g| gateway == Some(g))
            && f.endpoint.is_none_or(|e| endpoint == Some(e))
            && f.actor.as_deref().is_none_or(|a| env.caused_by(a))
            && f.since_ms.is_none_or(|s| env.time_ms >= s)
            && f.until_ms.is_none_or(|u| env.time_ms < u);
        keep.then(|| AuditEntry {
            position: rec.position,
            time_ms: env.time_ms,
            time: format_time(env.time_ms),
            aggregate: env.aggregate.to_string(),
            gateway,
            endpoint,
            actor: env.actor_shown(),
            event: env.event.name(),
            summary: escaped(self.describe(env.aggregate, &env.event)).to_string(),
            trace_id: trace_id(env.trace.as_deref()),
        })
    }

    /// The entry for a record at `position` that does not decode (not an event, or one of a newer
    /// build): shown, not skipped, so an audit of the history says what it could not read, and not
    /// stopped at (the history goes on after it). Nothing in it can be filtered on: a filtered
    /// view leaves it out.
    pub fn undecodable(&mut self, position: u64, error: &CodecError) -> Option<AuditEntry> {
        (self.filter == AuditFilter::default()).then(|| AuditEntry {
            position,
            time_ms: 0,
            time: "(unknown time)".into(),
            aggregate: String::new(),
            gateway: None,
            endpoint: None,
            actor: None,
            event: "Undecodable",
            summary: escaped(format!(
                "this record does not decode ({error}): written by a newer build, or not an event"
            ))
            .to_string(),
            trace_id: None,
        })
    }

    fn learn(&mut self, agg: AggregateId, event: &Event) {
        match event {
            Event::GatewayCreated { name, .. } => {
                self.gateway_names.insert(agg.id, name.clone());
            }
            Event::EndpointAdded { gateway, name, .. } => {
                self.endpoint_gateway.insert(agg.id, *gateway);
                self.endpoint_names.insert(agg.id, name.clone());
            }
            Event::EndpointEdited { name, .. } => {
                self.endpoint_names.insert(agg.id, name.clone());
            }
            Event::TunnelOpened { endpoint, .. } => {
                self.tunnel_endpoint.insert(agg.id, *endpoint);
            }
            Event::NotificationClaimed { subject, .. } => {
                self.notification_subject.insert(agg.id, *subject);
            }
            Event::ScanQueued { endpoint, .. } => {
                self.scan_endpoint.insert(agg.id, *endpoint);
            }
            _ => {}
        }
    }

    fn relations(&self, agg: AggregateId, event: &Event) -> (Option<Uuid>, Option<Uuid>) {
        match agg.kind {
            AggregateKind::Gateway => {
                let endpoint = match event {
                    Event::EndpointAssigned { endpoint, .. }
                    | Event::EndpointAssignmentRenamed { endpoint, .. }
                    | Event::EndpointReleased { endpoint } => Some(*endpoint),
                    _ => None,
                };
                (Some(agg.id), endpoint)
            }
            AggregateKind::Endpoint => (self.endpoint_gateway.get(&agg.id).copied(), Some(agg.id)),
            AggregateKind::Tunnel | AggregateKind::Scan => {
                let endpoint = match agg.kind {
                    AggregateKind::Tunnel => self.tunnel_endpoint.get(&agg.id),
                    _ => self.scan_endpoint.get(&agg.id),
                };
                let endpoint = endpoint.copied();
                (endpoint.and_then(|e| self.endpoint_gateway.get(&e).copied()), endpoint)
            }
            AggregateKind::User | AggregateKind::Webhook => (None, None),
            AggregateKind::Notification => match self.notification_subject.get(&agg.id) {
                Some(s) if self.gateway_names.contains_key(s) => (Some(*s), None),
                Some(s) => (self.endpoint_gateway.get(s).copied(), Some(*s)),
                None => (None, None),
            },
        }
    }

    fn gateway_name(&self, id: Uuid) -> String {
        self.gateway_names
            .get(&id)
            .map(|n| format!("gateway {n:?}"))
            .unwrap_or_else(|| format!("gateway {id}"))
    }

    fn endpoint_name(&self, id: Uuid) -> String {
        self.endpoint_names
            .get(&id)
            .map(|n| format!("endpoint {n:?}"))
            .unwrap_or_else(|| format!("endpoint {id}"))
    }

    /// The endpoint or gateway a notification is about.
    fn subject_name(&self, id: Uuid) -> String {
        if self.gateway_names.contains_key(&id) {
            self.gateway_name(id)
        } else {
            self.endpoint_name(id)
        }
    }

    fn describe(&self, agg: AggregateId, event: &Event) -> String {
        let gw = || self.gateway_name(agg.id);
        let ep = || self.endpoint_name(agg.id);
        let tunnel_ep = || {
            self.tunnel_endpoint
                .get(&agg.id)
                .map(|e| self.endpoint_name(*e))
                .unwrap_or_else(|| "an endpoint".into())
        };
        match event {
            Event::GatewayCreated { name, description } => {
                format!("created gateway {name:?} ({description})")
            }
            Event::GatewayActivated { node } => format!("{} online, served by node {node}", gw()),
            Event::ScannerCredentialIssued { credential, label, kind, .. } => {
                format!("{}: issued {} credential {credential} {label:?}", gw(), kind.as_str())
            }
            Event::ScannerCredentialRevoked { credential } => {
                format!("{}: revoked credential {credential}", gw())
            }
            Event::EndpointAssigned { name, .. } => {
                format!("{}: name {name:?} taken by a new endpoint", gw())
            }
            Event::EndpointAssignmentRenamed { name, .. } => {
                format!("{}: an endpoint renamed to {name:?}", gw())
            }
            Event::EndpointReleased { endpoint } => {
                format!("{}: {} left the gateway", gw(), self.endpoint_name(*endpoint))
            }
            Event::GatewayDeleted { reason } => format!("deleted {}: {reason}", gw()),
            Event::GatewayWentOffline { since_ms, why } => {
                format!("{} offline since {}: {why}", gw(), format_time(*since_ms))
            }
            Event::GatewayCameOnline { node } => {
                format!("{} back online, served by node {node}", gw())
            }
            Event::ScannerRefused { scanner, endpoint, reason } => {
                format!(
                    "{}: {scanner} asking for endpoint {endpoint:?} turned away: {reason}",
                    gw()
                )
            }
            Event::ScannerRefusalsRepeated(RepeatedRefusals {
                scanner,
                reason,
                count,
                targets,
                other_targets,
                first_ms,
                last_ms,
            }) => {
                let others = if *other_targets > 0 {
                    format!(" and {other_targets} others")
                } else {
                    String::new()
                };
                format!(
                    "{}: {scanner} turned away {count} more times ({reason}) from {} to {}, asking for {}{others}",
                    gw(),
                    format_time(*first_ms),
                    format_time(*last_ms),
                    targets.join(", ")
                )
            }
            Event::EndpointAdded { gateway, name, platform, .. } => format!(
                "added endpoint {name:?} ({}) to {}",
                platform.as_str(),
                self.gateway_name(*gateway)
            ),
            Event::EndpointRegistered { hostname, agent_version, machine, .. } => {
                format!(
                    "{} key bound to machine {} (host {hostname}, version {agent_version})",
                    ep(),
                    &machine[..machine.len().min(16)]
                )
            }
            Event::EndpointRegistrationRefused { hostname, reason, .. } => {
                format!("{} refused host {hostname}: {reason}", ep())
            }
            Event::EndpointRegistrationRefusalsRepeated(RepeatedRegistrationRefusals {
                machine,
                reason,
                count,
                hostnames,
                other_hostnames,
                first_ms,
                last_ms,
            }) => {
                let others = if *other_hostnames > 0 {
                    format!(" and {other_hostnames} under other host names")
                } else {
                    String::new()
                };
                format!(
                    "{} refused machine {} {count} more times from {} to {} ({reason}): as host {}{others}",
                    ep(),
                    &machine[..machine.len().min(16)],
                    format_time(*first_ms),
                    format_time(*last_ms),
                    hostnames.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>().join(", ")
                )
            }
            Event::EndpointUnbound { machine } => format!(
                "{} key released from machine {}: the next machine that presents it binds it",
                ep(),
                &machine[..machine.len().min(16)]
            ),
            Event::EndpointEdited { name, description } => {
                format!("{} edited: name {name:?}, description {description:?}", ep())
            }
            Event::EndpointKeyRotated { key_generation, .. } => format!(
                "{} key rotated (generation {key_generation}); the old key stops working",
                ep()
            ),
            Event::ScanCapacitySet { capacity: Some(c) } => {
                format!("{} runs at most {c} scans at once", ep())
            }
            Event::ScanCapacitySet { capacity: None } => {
                format!("{} runs the gateway's default number of scans at once", ep())
            }
            Event::ScanAccessChanged { enabled } => {
                format!("{} scan access {}", ep(), if *enabled { "enabled" } else { "disabled" })
            }
            Event::SupportAccessGranted { until_ms: Some(t) } => {
                format!("{} support-engineer access granted until {}", ep(), format_time(*t))
            }
            Event::SupportAccessGranted { until_ms: None } => {
                format!("{} support-engineer access granted indefinitely", ep())
            }
            Event::SupportAccessRevoked => format!("{} support-engineer access revoked", ep()),
            Event::SupportAccessExpired => format!("{} support-engineer access expired", ep()),
            Event::EndpointDeleted => format!("deleted {}", ep()),
            Event::TunnelOpened { node, remote_addr, agent_version, .. } => format!(
                "{} connected to node {node} from {remote_addr} (version {agent_version})",
                tunnel_ep()
            ),
            Event::StreamOpened { stream, target, scanner, via } => {
                let via =
                    via.as_ref().map(|n| format!(", relayed from node {n}")).unwrap_or_default();
                format!("{}: stream {stream} to {target} for {scanner}{via}", tunnel_ep())
            }
            Event::StreamRefused { target, scanner, reason } => {
                format!("{}: stream to {target} for {scanner} refused: {reason}", tunnel_ep())
            }
            Event::StreamRefusalsRepeated(RepeatedRefusals {
                scanner,
                reason,
                count,
                targets,
                other_targets,
                first_ms,
                last_ms,
            }) => {
                let others = if *other_targets > 0 {
                    format!(" and {other_targets} to other targets")
                } else {
                    String::new()
                };
                format!(
                    "{}: {count} more streams for {scanner} refused ({reason}) from {} to {}: to {}{others}",
                    tunnel_ep(),
                    format_time(*first_ms),
                    format_time(*last_ms),
                    targets.join(", ")
                )
            }
            Event::StreamClosed { stream, sent, received, end } => format!(
                "{}: stream {stream} closed ({end}; {sent} bytes up, {received} down)",
                tunnel_ep()
            ),
            Event::TunnelClosed { reason } => format!("{} disconnected: {reason}", tunnel_ep()),
            Event::UserCreated { name, role } => {
                format!("created user {name:?} as {}", role.as_str())
            }
            Event::UserRoleChanged { role } => format!("user {} is now {}", agg.id, role.as_str()),
            Event::ApiTokenIssued { token, label, .. } => {
                format!("API token {token} {label:?} issued")
            }
            Event::ApiTokenRevoked { token } => format!("API token {token} revoked"),
            // The address itself stays out: every role reads the audit, and the users list (with
            // the addresses) is the Administrators'.
            Event::UserEmailChanged { email: Some(_) } => {
                format!("user {} email address set", agg.id)
            }
            Event::UserEmailChanged { email: None } => format!("user {} email removed", agg.id),
            Event::UserNotificationsChanged { enabled } => {
                format!("user {} notifications {}", agg.id, if *enabled { "on" } else { "off" })
            }
            Event::WebhookAdded { url, events, .. } => {
                // Its path and query may carry a token: only where it goes is shown.
                let url = url.split(['/', '?', '#']).take(3).collect::<Vec<_>>().join("/");
                let kinds = if events.is_empty() {
                    "every notification".to_string()
                } else {
                    events.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                };
                format!("webhook {} added: {url} for {kinds}", agg.id)
            }
            Event::WebhookRemoved => format!("webhook {} removed", agg.id),
            Event::NotificationClaimed { kind, subject, node, .. } => format!(
                "{} notification about {} taken on by node {node}",
                kind.as_str(),
                self.subject_name(*subject)
            ),
            Event::NotificationSent { channel, recipients, kind, subject, .. } => format!(
                "{} notification sent by {channel} ({} recipients): {subject:?}",
                kind.as_str(),
                recipients.len()
            ),
            Event::NotificationFailed { channel, error, attempt, gave_up } => {
                let next = if *gave_up { "given up" } else { "retrying" };
                format!("notification by {channel} failed (attempt {attempt}, {next}): {error}")
            }
            Event::NotificationSuppressed { kind, why, .. } => {
                format!("{} notification not sent: {why}", kind.as_str())
            }
            Event::NotificationsPaused { endpoint, until_ms } => format!(
                "notifications about {} paused until {}",
                self.endpoint_name(*endpoint),
                format_time(*until_ms)
            ),
            Event::NotificationsResumed { endpoint } => {
                format!("notifications about {} resumed", self.endpoint_name(*endpoint))
            }
            Event::ScanQueued { endpoint, settings, again_of, .. } => {
                let again = again_of.map(|s| format!(" (again, as scan {s})")).unwrap_or_default();
                format!(
                    "scan {} of {} queued{again}: {} (at most {} pages, depth {}, {} requests/s)",
                    agg.id,
                    self.endpoint_name(*endpoint),
                    settings.targets.join(", "),
                    settings.max_pages,
                    settings.max_depth,
                    settings.rate
                )
            }
            Event::ScanStarted { node } => format!("scan {} started on node {node}", agg.id),
            Event::ScanProgressed { pages, requests, findings } => format!(
                "scan {}: {pages} pages, {requests} requests, {} new findings",
                agg.id,
                findings.len()
            ),
            Event::ScanFinished { pages, requests, .. } => {
                format!("scan {} finished: {pages} pages, {requests} requests", agg.id)
            }
            Event::ScanFailed { reason } => format!("scan {} failed: {reason}", agg.id),
            Event::ScanCancelled { by, reason } => {
                format!("scan {} cancelled by {by}: {reason}", agg.id)
            }
        }
    }
}

/// `2026-11-23 16:40:01.123Z` (UTC).
pub fn format_time(ms: i64) -> String {
    format!("{}Z", ism_time::format_utc(ms, '.'))
}

pub use ism_time::parse_utc as parse_time;

#[cfg(test)]
mod tests {
    use super::*;
    use ism_events::{Cause, Envelope, Platform};

    #[test]
    fn an_entry_names_the_trace_of_a_recorded_traceparent_only() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(Some(header)).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for other in [
            None,
            Some("trace-1"),
            Some("00-zz-00f067aa0ba902b7-01"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            assert_eq!(trace_id(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_gateway_filter_catches_its_endpoints_and_tunnels() {
        let (gw, other, ep, tun) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let events = [
            (
                AggregateId::gateway(gw),
                Event::GatewayCreated { name: "corp".into(), description: String::new() },
                "alice",
            ),
            (
                AggregateId::gateway(other),
                Event::GatewayCreated { name: "lab".into(), description: String::new() },
                "bob",
            ),
            (
                AggregateId::endpoint(ep),
                Event::EndpointAdded {
                    gateway: gw,
                    name: "dc1".into(),
                    description: String::new(),
                    platform: Platform::Linux,
                    key_generation: 1,
                    key_hash: "h".into(),
                },
                "alice",
            ),
            (
                AggregateId::tunnel(tun),
                Event::TunnelOpened {
                    endpoint: ep,
                    gateway: gw,
                    node: "n1".into(),
                    machine: "m".into(),
                    remote_addr: "10.0.0.9:5".into(),
                    agent_version: "0.1.0".into(),
                },
                "endpoint:dc1",
            ),
        ];
        let recs: Vec<Recorded> = events
            .into_iter()
            .enumerate()
            .map(|(i, (agg, ev, actor))| Recorded {
                position: i as u64 + 1,
                envelope: Envelope::new(
                    agg,
                    1,
                    1_000 * i as i64,
                    Cause::by(ism_events::Principal::user(actor)),
                    ev,
                ),
            })
            .collect();
        let mut t = Timeline::new(AuditFilter { gateway: Some(gw), ..Default::default() });
        let kept: Vec<AuditEntry> = recs.iter().filter_map(|r| t.push(r)).collect();
        assert_eq!(kept.iter().map(|e| e.position).collect::<Vec<_>>(), vec![1, 3, 4]);
        assert!(
            kept[2].summary.contains("endpoint \"dc1\" connected to node n1"),
            "{}",
            kept[2].summary
        );
        let mut by_bob =
            Timeline::new(AuditFilter { actor: Some("BOB".into()), ..Default::default() });
        assert_eq!(recs.iter().filter_map(|r| by_bob.push(r)).count(), 1);
        let mut window = Timeline::new(AuditFilter {
            since_ms: Some(1_000),
            until_ms: Some(3_000),
            ..Default::default()
        });
        assert_eq!(
            recs.iter().filter_map(|r| window.push(r)).map(|e| e.position).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[test]
    fn what_events_hold_is_shown_escaped_on_one_line() {
        let (ep, tun) = (Uuid::new_v4(), Uuid::new_v4());
        let forged = "\n2026-11-23 16:40:01.123Z  #202    EndpointDeleted              deleted endpoint \"dc1\" (by admin)";
        let events = [
            (
                AggregateId::endpoint(ep),
                Event::EndpointRegistered {
                    machine: "m".repeat(64),
                    hostname: format!("host\u{1b}[2J{forged}"),
                    platform: "linux".into(),
                    agent_version: "0.1\u{2028}0\u{202e}".into(),
                },
                "machine:\u{9b}31m",
            ),
            (
                AggregateId::tunnel(tun),
                Event::StreamRefused {
                    target: format!("evil{forged}:80"),
                    scanner: "credential:x".into(),
                    reason: "refused\r\u{7}".into(),
                },
                "credential:x\u{85}",
            ),
        ];
        let mut timeline = Timeline::new(AuditFilter::default());
        for (i, (agg, event, actor)) in events.into_iter().enumerate() {
            let rec = Recorded {
                position: i as u64 + 1,
                envelope: Envelope::new(
                    agg,
                    1,
                    1_000,
                    Cause::by(ism_events::Principal::user(actor)),
                    event,
                ),
            };
            let entry = timeline.push(&rec).unwrap();
            for text in [entry.summary.clone(), entry.to_string()] {
                assert!(!text.chars().any(ism_events::escape::needs_escape), "{text:?}");
                assert!(text.contains("\\n2026-11-23"), "{text}");
            }
            assert!(entry.to_string().starts_with("1970-01-01 00:00:01.000Z  #"), "{entry}");
        }
    }

    #[test]
    fn counted_refusals_read_as_one_line_with_their_count_and_targets() {
        let tun = Uuid::new_v4();
        let event = Event::StreamRefusalsRepeated(RepeatedRefusals {
            scanner: "credential:zap".into(),
            reason: "the endpoint's stream limit is reached".into(),
            count: 12_344,
            targets: vec!["10.0.0.1:80".into(), "10.0.0.2:80".into()],
            other_targets: 3,
            first_ms: 1_764_000_000_000,
            last_ms: 1_764_000_000_999,
        });
        let rec = Recorded {
            position: 7,
            envelope: Envelope::new(
                AggregateId::tunnel(tun),
                3,
                1_764_000_001_000,
                Cause::by(ism_events::Principal::user("credential:zap")),
                event,
            ),
        };
        let entry = Timeline::new(AuditFilter::default()).push(&rec).unwrap();
        assert_eq!(entry.event, "StreamRefusalsRepeated");
        assert_eq!(
            entry.summary,
            "an endpoint: 12344 more streams for credential:zap refused (the endpoint's stream limit is reached) \
             from 2025-11-24 16:00:00.000Z to 2025-11-24 16:00:00.999Z: to 10.0.0.1:80, 10.0.0.2:80 and 3 to other targets"
        );
    }

    /// Every role reads the audit; the users' email addresses are the Administrators' (the users
    /// list), so an entry says that an address was set, not which.
    #[test]
    fn an_email_change_does_not_show_the_address() {
        let user = AggregateId::user(Uuid::new_v4());
        let set = Event::UserEmailChanged { email: Some("alice@corp.example".into()) };
        let rec =
            Recorded { position: 1, envelope: Envelope::new(user, 1, 0, Cause::default(), set) };
        let entry = Timeline::new(AuditFilter::default()).push(&rec).unwrap();
        assert!(entry.summary.contains("email address set"), "{}", entry.summary);
        assert!(!entry.summary.contains("corp.example"), "{}", entry.summary);
    }
}
