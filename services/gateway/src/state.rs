//! What one gateway node shares between its listeners and its API, in parts that each consumer
//! takes only what it uses of: the scanner path takes a [`ScannerPath`], enforcement an
//! [`crate::enforcement::Enforcement`], `authorise` the directory.

use crate::cluster::Cluster;
use crate::enforcement::Enforcement;
use crate::listener::PendingLimits;
use crate::metrics::NodeMetrics;
use crate::public_address::{Addresses, PublicAddresses};
use crate::refusals::Refusals;
use crate::refused_registrations::RefusedRegistrations;
use crate::refused_scanners::RefusedScanners;
use crate::running_scans::RunningScans;
use crate::running_streams::RunningStreams;
use crate::sessions::Sessions;
use crate::stream_queue::QueueLimits;
use ism_actors::credentials::KeySecret;
use ism_actors::endpoint::Endpoint;
use ism_actors::gateway::Gateway;
use ism_actors::scan::Scan;
use ism_actors::tunnel::Tunnel;
use ism_actors::user::User;
use ism_actors::webhook::Webhook;
use ism_actors::NodeActors;
use ism_events::{Clock, EventLog, ProjectionError, ProjectionProgress};
use ism_projectors::{DirectoryProjection, NoticeProjection};
use std::sync::Arc;
use std::time::Duration;

/// How long a request waits for the directory to show its own write: generous, since giving up
/// means answering with an error for a write that did happen.
pub const READ_YOUR_WRITES: Duration = Duration::from_secs(30);

pub struct NodeState {
    /// This node's name in events (`TunnelOpened.node`) and logs.
    pub node_id: String,
    pub log: Arc<dyn EventLog>,
    pub clock: Arc<dyn Clock>,
    pub directory: Arc<DirectoryProjection>,
    pub progress: ProjectionProgress,
    /// What the notification and retention rules know, and the notifications recorded.
    pub notices: Arc<NoticeProjection>,
    pub notices_progress: ProjectionProgress,
    pub gateways: Arc<NodeActors<Gateway>>,
    pub endpoints: Arc<NodeActors<Endpoint>>,
    pub tunnels: NodeActors<Tunnel>,
    pub users: NodeActors<User>,
    pub webhooks: NodeActors<Webhook>,
    pub scans: NodeActors<Scan>,
    /// The scans this node runs.
    pub running_scans: Arc<RunningScans>,
    /// Scans one endpoint runs at once; more wait in its queue.
    pub scan_capacity: usize,
    pub key_secret: KeySecret,
    pub sessions: Arc<Sessions>,
    /// Scanner streams running through this node, for enforcing access while they run.
    pub streams: Arc<RunningStreams>,
    /// Refused scanner streams being counted before they are recorded.
    pub refusals: Arc<Refusals>,
    /// Refused registrations of endpoint keys, likewise.
    pub refused_registrations: Arc<RefusedRegistrations>,
    /// Scanners turned away before any stream was opened, being counted before they are
    /// recorded.
    pub refused_scanners: Arc<RefusedScanners>,
    /// SHA-256 of the bootstrap administrator token.
    pub admin_token_hash: String,
    /// The log's pace for refusals that anyone who reaches a port can cause.
    pub refusal_logs: crate::log_pace::RefusalLogs,
    pub addresses: Addresses,
    /// What users are shown as the gateway's addresses.
    pub public: PublicAddresses,
    pub ws_path: String,
    /// Most streams one endpoint's session carries at once on this node (admission control).
    pub stream_limit: usize,
    /// The budget every session of this node reserves lone streams' large windows from (a clone
    /// of `NodeConfig::session`'s), read by `/metrics`.
    pub window_budget: ism_tunnel_proto::CreditBudget,
    pub stream_limits: StreamLimits,
    /// Connections not yet authenticated, capped for scanners and endpoints apart.
    pub pending: PendingLimits,
    /// This node in its cluster: who holds which endpoint, relay links, draining.
    pub cluster: Arc<Cluster>,
    /// It has an SMTP relay for notification emails (`--smtp-url`).
    pub sends_email: bool,
    /// The private CA this node generated for its certificate (PEM), which endpoints must trust:
    /// the web page's install step offers it. None when the operator gave the certificate.
    pub gateway_ca_pem: Option<String>,
    /// What `/metrics` shows.
    pub metrics: Arc<NodeMetrics>,
}

/// How long scanner streams may stay quiet and how many one credential may run.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// A stream on which no byte moves for this long is reset (`--stream-idle-timeout`).
    pub idle_timeout: Option<Duration>,
    /// A stream whose one side finished (a scanner that closed and left) is reset once the other
    /// side has been silent this long, so its slot is freed.
    pub half_closed_timeout: Duration,
    /// Streams one scanner credential may run at once on this node
    /// (`--max-streams-per-credential`).
    pub per_credential: usize,
    /// Facts the data path told and the event log has not recorded yet, beyond which new streams
    /// are refused until it catches up (`--max-unrecorded-facts`): when appends cannot keep up,
    /// scanners slow down to the log's pace instead of the node queueing without bound.
    pub max_unrecorded: usize,
    /// Streams beyond an endpoint's stream cap that wait for a slot, and how long.
    pub queue: QueueLimits,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(600)),
            half_closed_timeout: Duration::from_secs(60),
            per_credential: 512,
            max_unrecorded: 50_000,
            queue: QueueLimits::default(),
        }
    }
}

/// What a scanner's stream goes through, from access check to recorded end.
pub struct ScannerPath<'a> {
    pub directory: &'a DirectoryProjection,
    pub clock: &'a dyn Clock,
    pub streams: &'a RunningStreams,
    pub sessions: &'a Sessions,
    pub tunnels: &'a NodeActors<Tunnel>,
    pub refusals: &'a Refusals,
    pub refused_scanners: &'a RefusedScanners,
    pub limits: StreamLimits,
    /// Where endpoints other nodes hold are reached.
    pub cluster: &'a Cluster,
    pub metrics: &'a NodeMetrics,
}

impl NodeState {
    /// Waits until the directory has applied `position` (no-op for `None`).
    pub async fn caught_up(&self, position: Option<u64>) -> Result<(), ProjectionError> {
        match position {
            Some(p) => self.progress.wait_for(p, READ_YOUR_WRITES).await,
            None => Ok(()),
        }
    }

    pub fn scanner_path(&self) -> ScannerPath<'_> {
        ScannerPath {
            directory: &self.directory,
            clock: &*self.clock,
            streams: &self.streams,
            sessions: &self.sessions,
            tunnels: &self.tunnels,
            refusals: &self.refusals,
            refused_scanners: &self.refused_scanners,
            limits: self.stream_limits,
            cluster: &self.cluster,
            metrics: &self.metrics,
        }
    }

    /// Scanner streams through `endpoint` running on this node: registered, less those still
    /// waiting for a slot of its session here.
    pub fn running_streams(&self, endpoint: uuid::Uuid) -> usize {
        self.streams.count(endpoint).saturating_sub(self.sessions.waiting(endpoint))
    }

    /// The URL endpoints dial, as users are shown it.
    pub fn endpoint_url(&self) -> String {
        format!("wss://{}{}", self.public.endpoint, self.ws_path)
    }

    pub fn enforcement(&self) -> Enforcement {
        Enforcement {
            directory: self.directory.clone(),
            sessions: self.sessions.clone(),
            streams: self.streams.clone(),
            clock: self.clock.clone(),
        }
    }
}
