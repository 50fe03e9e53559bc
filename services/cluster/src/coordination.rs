//! The coordination interface and the facts it shares.

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use uuid::Uuid;

/// What a node does at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Takes endpoints and scanners.
    Serving,
    /// Hands its endpoints to the others and takes no new ones.
    Draining,
}

/// A node's heartbeat: who it is, where other nodes reach it, and a counter that advances with
/// every beat (liveness is judged on the counter, not on anyone's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAnnouncement {
    pub node: String,
    /// Where other nodes open relay links to this one.
    pub relay: SocketAddr,
    pub role: NodeRole,
    pub beat: u64,
    /// Endpoint sessions and scanner streams it holds now, for operators.
    #[serde(default)]
    pub sessions: usize,
    #[serde(default)]
    pub streams: usize,
    /// It can send notification emails (it has an SMTP relay): a node that cannot leaves
    /// notifications with email recipients to one that can.
    #[serde(default)]
    pub emails: bool,
    /// The tunnel protocol version it speaks on relay links (absent: 1, a build from before
    /// trace contexts): another node sends it only what that version reads.
    #[serde(default = "first_protocol")]
    pub protocol: u16,
}

fn first_protocol() -> u16 {
    1
}

/// The session that holds an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub node: String,
    pub tunnel: Uuid,
}

/// What a claim replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The session that held the endpoint before, if any (now fenced out).
    pub previous: Option<Owner>,
}

/// An endpoint's owner changed: a new session claimed it (`owner` set) or its session let it go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerChange {
    pub endpoint: Uuid,
    pub owner: Option<Owner>,
}

/// A live feed of owner changes.
pub type OwnerFeed = BoxStream<'static, Result<OwnerChange, CoordError>>;

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("cluster coordination unavailable: {0}")]
    Unavailable(String),
    #[error("a cluster record could not be read: {0}")]
    Corrupt(String),
    #[error("too many concurrent claims on endpoint {0}; try again")]
    Contended(Uuid),
}

/// Membership and ownership, as one node sees and changes them.
#[async_trait::async_trait]
pub trait Coordination: Send + Sync {
    /// Announces (or refreshes) this node.
    async fn announce(&self, node: &NodeAnnouncement) -> Result<(), CoordError>;
    /// Removes this node's announcement (it is leaving on purpose).
    async fn withdraw(&self, node: &str) -> Result<(), CoordError>;
    /// Every node's latest announcement.
    async fn nodes(&self) -> Result<Vec<NodeAnnouncement>, CoordError>;

    /// Makes `owner` the endpoint's owner, replacing whichever session held it: the newest
    /// session of an endpoint wins.
    async fn claim(&self, endpoint: Uuid, owner: &Owner) -> Result<Claimed, CoordError>;
    /// Lets the endpoint go if `tunnel` still owns it; whether it did.
    async fn release(&self, endpoint: Uuid, tunnel: Uuid) -> Result<bool, CoordError>;
    /// The endpoint's owner.
    async fn owner(&self, endpoint: Uuid) -> Result<Option<Owner>, CoordError>;
    /// Every endpoint and its owner.
    async fn owners(&self) -> Result<Vec<(Uuid, Owner)>, CoordError>;
    /// Every endpoint's current owner, then each change as it happens.
    async fn watch_owners(&self) -> Result<OwnerFeed, CoordError>;

    /// Asks `node` to drain; it sees the request at its next heartbeat, wherever it was made.
    async fn request_drain(&self, node: &str) -> Result<(), CoordError>;
    /// Whether `node` was asked to drain and the request still stands.
    async fn drain_requested(&self, node: &str) -> Result<bool, CoordError>;
    /// Withdraws a drain request (the node restarted and serves again).
    async fn clear_drain(&self, node: &str) -> Result<(), CoordError>;

    /// A short description for logs ("in process", "nats://...").
    fn describe(&self) -> String;
}
