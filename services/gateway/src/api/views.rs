//! How the API shows things: the JSON shapes of `openapi.json`, built from directory views.

use crate::state::NodeState;
use ism_events::SupportAccess;
use ism_events::{CredentialKind, NoticeKind, Platform, UserRole};
use ism_projectors::directory::{FindingCounts, ScanStatus, ScanView, TokenView, UserView};
use ism_projectors::{
    EndpointStatus, EndpointView, GatewayStatus, GatewayView, NotificationView, WebhookView,
};
use serde::Serialize;
use uuid::Uuid;

#[derive(Serialize)]
pub struct GatewayOut {
    id: Uuid,
    version: u64,
    name: String,
    description: String,
    status: &'static str,
    created_ms: i64,
    created_by: Option<String>,
    /// What endpoints connect to: add it (and its IP address) to the network allowlist.
    endpoint_url: String,
    /// Where scanners connect (SOCKS5).
    socks_address: String,
    /// Where scanners connect as to an HTTP proxy.
    http_proxy_address: String,
    endpoint_count: usize,
    scanner_credentials: Vec<CredentialOut>,
    last_activity_ms: i64,
    /// When the gateway will be deleted for inactivity if no scan uses it before.
    deletion_due_ms: Option<i64>,
    deleted_ms: Option<i64>,
    deleted_reason: Option<String>,
}

#[derive(Serialize)]
pub struct CredentialOut {
    id: Uuid,
    label: String,
    kind: CredentialKind,
    issued_ms: i64,
    revoked: bool,
}

#[derive(Serialize)]
pub struct DeletedGatewayOut {
    id: Uuid,
    name: String,
    deleted_ms: Option<i64>,
    deleted_reason: Option<String>,
}

#[derive(Serialize)]
pub struct SupportAccessOut {
    /// `off`, `active` or `expired` (a window that ran out before the node recorded it).
    state: &'static str,
    until_ms: Option<i64>,
    indefinite: bool,
}

#[derive(Serialize)]
pub struct EndpointOut {
    id: Uuid,
    version: u64,
    gateway: Uuid,
    name: String,
    description: String,
    platform: Platform,
    status: &'static str,
    scan_access: bool,
    support_access: SupportAccessOut,
    /// Streams through this endpoint on the node that answered.
    open_streams: usize,
    /// Most streams the endpoint carries at once on that node; more wait in its queue.
    stream_limit: usize,
    /// Streams waiting for a slot on that node.
    queued_streams: usize,
    /// Scans of the built-in engine running through the endpoint, and its capacity for them.
    running_scans: usize,
    scan_capacity: usize,
    /// Scans waiting for a free slot.
    queued_scans: usize,
    agent_version: Option<String>,
    agent_platform: Option<String>,
    hostname: Option<String>,
    machine: Option<String>,
    node: Option<String>,
    connected_since_ms: Option<i64>,
    last_disconnected_ms: Option<i64>,
    key_generation: u32,
    last_refusal: Option<String>,
}

#[derive(Serialize)]
pub struct UserOut {
    name: String,
    role: UserRole,
    version: u64,
    created_ms: i64,
    created_by: Option<String>,
    tokens: Vec<TokenOut>,
    email: Option<String>,
    /// Whether notifications are sent to this user (role, choice and address together).
    notified: bool,
    /// The user's own choice; `null` follows the role (Security Leads yes, Administrators no).
    notifications: Option<bool>,
}

#[derive(Serialize)]
pub struct WebhookOut {
    id: Uuid,
    url: String,
    /// Notice kinds it receives; empty: all.
    events: Vec<NoticeKind>,
    created_ms: i64,
    created_by: Option<String>,
}

#[derive(Serialize)]
pub struct SentOut {
    channel: String,
    recipients: Vec<String>,
    subject: String,
    time_ms: i64,
}

#[derive(Serialize)]
pub struct NotificationOut {
    id: Uuid,
    kind: NoticeKind,
    /// `sent`, `suppressed`, `resumed`, `failed` (given up), `failing` (retrying) or `sending`.
    state: &'static str,
    /// The endpoint or gateway it is about, and its name.
    subject: Uuid,
    subject_name: Option<String>,
    first_ms: i64,
    last_ms: i64,
    node: Option<String>,
    channels: Vec<String>,
    sent: Vec<SentOut>,
    failures: u32,
    last_error: Option<String>,
    suppressed: Option<String>,
    paused_until_ms: Option<i64>,
}

#[derive(Serialize)]
pub struct TokenOut {
    id: Uuid,
    label: String,
    issued_ms: i64,
    revoked: bool,
}

/// A gateway's status as shown: `Online` once a node served it and while a live node serves
/// (takes endpoints), `Offline` while none does (every node draining or lost).
pub fn gateway_status(s: GatewayStatus, serving_somewhere: bool) -> &'static str {
    match s {
        GatewayStatus::Initializing => "Initializing",
        GatewayStatus::Online if serving_somewhere => "Online",
        GatewayStatus::Online => "Offline",
        GatewayStatus::Deleted => "Deleted",
    }
}

pub fn gateway(g: GatewayView, state: &NodeState) -> GatewayOut {
    GatewayOut {
        id: g.id,
        version: g.version,
        name: g.name,
        description: g.description,
        status: gateway_status(g.status, state.cluster.serving_somewhere()),
        created_ms: g.created_ms,
        created_by: g.created_by,
        endpoint_url: state.endpoint_url(),
        socks_address: state.public.socks.clone(),
        http_proxy_address: state.public.http_proxy.clone(),
        endpoint_count: g.endpoint_count,
        scanner_credentials: g
            .scanner_credentials
            .into_iter()
            .map(|c| CredentialOut {
                id: c.id,
                label: c.label,
                kind: c.kind,
                issued_ms: c.issued_ms,
                revoked: c.revoked,
            })
            .collect(),
        last_activity_ms: g.last_activity_ms,
        deletion_due_ms: state.notices.deletion_due(g.id).ok().flatten(),
        deleted_ms: g.deleted_ms,
        deleted_reason: g.deleted_reason,
    }
}

pub fn deleted_gateway(g: GatewayView) -> DeletedGatewayOut {
    DeletedGatewayOut {
        id: g.id,
        name: g.name,
        deleted_ms: g.deleted_ms,
        deleted_reason: g.deleted_reason,
    }
}

pub fn endpoint(e: EndpointView, state: &NodeState) -> EndpointOut {
    let now = state.clock.now_ms();
    let scans = state.directory.active_scans_of(e.id).unwrap_or_default();
    let count = |status| scans.iter().filter(|s| s.status == status).count();
    let (running_scans, queued_scans) = (count(ScanStatus::Running), count(ScanStatus::Queued));
    let scan_capacity = crate::scans::schedule::scan_capacity(Some(&e), state.scan_capacity);
    let support_access = SupportAccessOut {
        state: e.support_access.state_name(now),
        until_ms: match e.support_access {
            SupportAccess::Until(t) => Some(t),
            SupportAccess::Off | SupportAccess::Indefinite => None,
        },
        indefinite: e.support_access == SupportAccess::Indefinite,
    };
    EndpointOut {
        id: e.id,
        version: e.version,
        gateway: e.gateway,
        name: e.name,
        description: e.description,
        platform: e.platform,
        status: match e.status {
            EndpointStatus::Pending => "Pending",
            EndpointStatus::Ready => "Ready",
            EndpointStatus::Offline => "Offline",
        },
        scan_access: e.scan_access,
        support_access,
        open_streams: state.running_streams(e.id),
        stream_limit: state.stream_limit,
        queued_streams: state.sessions.waiting(e.id),
        running_scans,
        scan_capacity,
        queued_scans,
        agent_version: e.agent_version,
        agent_platform: e.agent_platform,
        hostname: e.hostname,
        machine: e.machine,
        node: e.node,
        connected_since_ms: e.connected_since_ms,
        last_disconnected_ms: e.last_disconnected_ms,
        key_generation: e.key_generation,
        last_refusal: e.last_refusal,
    }
}

pub fn user(u: UserView) -> UserOut {
    let notified = u.notified();
    UserOut {
        email: u.email,
        notified,
        notifications: u.notifications,
        name: u.name,
        role: u.role,
        version: u.version,
        created_ms: u.created_ms,
        created_by: u.created_by,
        tokens: u
            .tokens
            .into_iter()
            .map(|t: TokenView| TokenOut {
                id: t.id,
                label: t.label,
                issued_ms: t.issued_ms,
                revoked: t.revoked,
            })
            .collect(),
    }
}

pub fn webhook(w: WebhookView) -> WebhookOut {
    WebhookOut {
        id: w.id,
        url: w.url,
        events: w.events,
        created_ms: w.created_ms,
        created_by: w.created_by,
    }
}

pub fn notification(n: NotificationView, state: &NodeState) -> NotificationOut {
    let dir = &state.directory;
    let subject_name = match dir.gateway(n.subject) {
        Ok(Some(g)) => Some(g.name),
        _ => dir.endpoint_any(n.subject).ok().flatten().map(|e| e.name),
    };
    NotificationOut {
        id: n.id,
        kind: n.kind,
        state: n.state(),
        subject: n.subject,
        subject_name,
        first_ms: n.first_ms,
        last_ms: n.last_ms,
        node: n.node,
        channels: n.channels,
        sent: n
            .sent
            .into_iter()
            .map(|s| SentOut {
                channel: s.channel,
                recipients: s.recipients,
                subject: s.subject,
                time_ms: s.time_ms,
            })
            .collect(),
        failures: n.failures,
        last_error: n.last_error,
        suppressed: n.suppressed,
        paused_until_ms: n.paused_until_ms,
    }
}

/// A scan in a list: where it is, how far it got, how many findings of each severity.
#[derive(Serialize)]
pub struct ScanOut {
    id: Uuid,
    version: u64,
    endpoint: Uuid,
    endpoint_name: Option<String>,
    gateway: Uuid,
    targets: Vec<String>,
    max_pages: u32,
    max_depth: u32,
    rate: u32,
    again_of: Option<Uuid>,
    /// `queued`, `running`, `finished`, `failed` or `cancelled`.
    state: &'static str,
    /// Its place in the endpoint's queue while it waits (1: next).
    queue_position: Option<usize>,
    queued_ms: i64,
    queued_by: Option<String>,
    started_ms: Option<i64>,
    node: Option<String>,
    ended_ms: Option<i64>,
    pages: u32,
    requests: u32,
    findings: FindingCounts,
    /// Why it failed or was cancelled.
    reason: Option<String>,
}

/// A scan with its findings.
#[derive(Serialize)]
pub struct ScanDetailOut {
    #[serde(flatten)]
    scan: ScanOut,
    finding_list: Vec<ism_events::ScanFinding>,
}

pub fn scan(s: &ScanView, queue_position: Option<usize>, state: &NodeState) -> ScanOut {
    ScanOut {
        id: s.id,
        version: s.version,
        endpoint: s.endpoint,
        endpoint_name: state.directory.endpoint_any(s.endpoint).ok().flatten().map(|e| e.name),
        gateway: s.gateway,
        targets: s.settings.targets.clone(),
        max_pages: s.settings.max_pages,
        max_depth: s.settings.max_depth,
        rate: s.settings.rate,
        again_of: s.again_of,
        state: s.status.as_str(),
        queue_position,
        queued_ms: s.queued_ms,
        queued_by: s.queued_by.clone(),
        started_ms: s.started_ms,
        node: s.node.clone(),
        ended_ms: s.ended_ms,
        pages: s.pages,
        requests: s.requests,
        findings: s.finding_counts,
        reason: s.reason.clone(),
    }
}

pub fn scan_detail(s: ScanView, queue_position: Option<usize>, state: &NodeState) -> ScanDetailOut {
    let finding_list = state.directory.scan_findings(s.id).unwrap_or_default();
    ScanDetailOut { scan: scan(&s, queue_position, state), finding_list }
}
