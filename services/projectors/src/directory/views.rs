//! What the directory stores, one row type per tree. Every field comes from events (times from
//! envelopes), and lists are kept sorted, so a rebuild writes the same bytes.

use ism_events::{CredentialKind, NoticeKind, Platform, SupportAccess, UserRole};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayStatus {
    Initializing,
    Online,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayView {
    pub id: Uuid,
    /// Version of the gateway aggregate this view reflects.
    pub version: u64,
    pub name: String,
    pub description: String,
    pub status: GatewayStatus,
    pub created_ms: i64,
    pub created_by: Option<String>,
    /// The node that brought it online.
    pub activated_by_node: Option<String>,
    pub scanner_credentials: Vec<CredentialView>,
    pub endpoint_count: usize,
    pub deleted_ms: Option<i64>,
    pub deleted_reason: Option<String>,
    /// When a scan last used the gateway (a stream through one of its endpoints).
    pub last_activity_ms: i64,
    /// Since when no node serves it, as recorded (`GatewayWentOffline`), until one does again.
    #[serde(default)]
    pub offline_since_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    pub id: Uuid,
    pub label: String,
    pub kind: CredentialKind,
    pub issued_ms: i64,
    pub revoked: bool,
}

/// As in the seed: `Pending` until the first connection, `Ready` while connected, `Offline` after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointStatus {
    Pending,
    Ready,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub id: Uuid,
    /// Version of the endpoint aggregate this view reflects (for edits that must not overwrite
    /// a change they did not see).
    pub version: u64,
    pub gateway: Uuid,
    pub name: String,
    pub description: String,
    pub platform: Platform,
    pub key_generation: u32,
    pub key_hash: String,
    pub status: EndpointStatus,
    pub scan_access: bool,
    /// Scans of the built-in engine run at once (`None`: the gateway's default).
    #[serde(default)]
    pub scan_capacity: Option<u32>,
    /// As granted; whether it is active depends on the time asked at.
    pub support_access: SupportAccess,
    /// Machine identity the key is bound to.
    pub machine: Option<String>,
    pub hostname: Option<String>,
    /// What the agent reports about itself.
    pub agent_version: Option<String>,
    pub agent_platform: Option<String>,
    /// Sessions currently open (normally one; two during a make-before-break handover).
    pub open_tunnels: Vec<Uuid>,
    /// The node holding the most recent session.
    pub node: Option<String>,
    pub connected_since_ms: Option<i64>,
    pub last_disconnected_ms: Option<i64>,
    /// The last refused registration ("Token already registered"), for the operator.
    pub last_refusal: Option<String>,
    /// Deleted endpoints stay (flagged) so a half-finished deletion can be completed, and are
    /// left out of every listing.
    pub deleted: bool,
}

/// An open session, to find its endpoint when it closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelView {
    pub id: Uuid,
    pub endpoint: Uuid,
    pub gateway: Uuid,
    pub node: String,
    pub opened_ms: i64,
}

/// What the data path needs to check a scanner credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannerCredentialRow {
    pub gateway: Uuid,
    pub secret_hash: String,
    pub kind: CredentialKind,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub id: Uuid,
    pub version: u64,
    pub name: String,
    pub role: UserRole,
    pub created_ms: i64,
    pub created_by: Option<String>,
    pub tokens: Vec<TokenView>,
    /// Where notifications go; none without it.
    #[serde(default)]
    pub email: Option<String>,
    /// The user's own choice about notifications; `None` follows the role
    /// ([`UserView::notified`]).
    #[serde(default)]
    pub notifications: Option<bool>,
}

impl UserView {
    /// Whether notifications are sent to this user: Security Leads unless they opted out,
    /// Administrators who opted in, never Reviewers (they manage nothing), and only with an
    /// address.
    pub fn notified(&self) -> bool {
        let wanted = match self.role {
            UserRole::SecurityLead => self.notifications.unwrap_or(true),
            UserRole::Administrator => self.notifications.unwrap_or(false),
            UserRole::Reviewer => false,
        };
        wanted && self.email.is_some()
    }
}

/// A webhook subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    /// The signing secret, sealed under the cluster's key secret (never shown).
    pub secret_sealed: String,
    /// Notice kinds it receives (empty: all).
    pub events: Vec<NoticeKind>,
    pub created_ms: i64,
    pub created_by: Option<String>,
}

impl WebhookView {
    pub fn wants(&self, kind: NoticeKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: Uuid,
    pub label: String,
    pub issued_ms: i64,
    pub revoked: bool,
}

/// What the API needs to check a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRow {
    pub user: Uuid,
    pub token_hash: String,
    pub revoked: bool,
}

/// Where a scan is in its life, as the directory shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanStatus {
    Queued,
    Running,
    Finished,
    Failed,
    Cancelled,
}

impl ScanStatus {
    pub const ALL: [ScanStatus; 5] = [
        ScanStatus::Queued,
        ScanStatus::Running,
        ScanStatus::Finished,
        ScanStatus::Failed,
        ScanStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Queued => "queued",
            ScanStatus::Running => "running",
            ScanStatus::Finished => "finished",
            ScanStatus::Failed => "failed",
            ScanStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ScanStatus> {
        ScanStatus::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Still to run or running: what counts against an endpoint's queue and capacity.
    pub fn is_active(self) -> bool {
        matches!(self, ScanStatus::Queued | ScanStatus::Running)
    }
}

/// One scan: its settings, where it is, and how many findings it recorded so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanView {
    pub id: Uuid,
    /// Version of the scan aggregate this view reflects.
    pub version: u64,
    pub endpoint: Uuid,
    pub gateway: Uuid,
    pub settings: ism_events::ScanSettings,
    pub again_of: Option<Uuid>,
    pub status: ScanStatus,
    /// The log position of its `ScanQueued`: the queue's order, the same on every node.
    pub queued_position: u64,
    pub queued_ms: i64,
    pub queued_by: Option<String>,
    pub started_ms: Option<i64>,
    /// The node running (or that ran) it.
    pub node: Option<String>,
    pub ended_ms: Option<i64>,
    pub pages: u32,
    pub requests: u32,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    pub cancelled_by: Option<String>,
    /// How many findings of each severity; the findings themselves are kept apart
    /// (`DirectoryProjection::scan_findings`), so that reading where a scan is stays cheap.
    pub finding_counts: FindingCounts,
}

/// Findings by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingCounts {
    pub high: u32,
    pub medium: u32,
    pub low: u32,
    pub info: u32,
}

impl FindingCounts {
    pub fn total(&self) -> u32 {
        self.high + self.medium + self.low + self.info
    }

    /// Counts one finding of `severity` (`high`, `medium`, `low`; anything else is `info`).
    pub fn add(&mut self, severity: &str) {
        match severity {
            "high" => self.high += 1,
            "medium" => self.medium += 1,
            "low" => self.low += 1,
            _ => self.info += 1,
        }
    }
}
