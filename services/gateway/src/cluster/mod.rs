//! This node in its cluster: who else is alive, who holds which endpoint, and the relay links
//! that let any node serve any scanner (see `ism-cluster` for the shared facts and their rules).
//!
//! - [`membership`]: the heartbeat, the liveness of the others, and what a surviving node
//!   records for a node that was lost;
//! - ownership: a session claims its endpoint when it is installed and lets it go when it ends;
//!   a newer session elsewhere fences this node's ([`membership::fence_replaced`]);
//! - [`draining`]: handing this node's endpoints to the others before it stops;
//! - [`links`] and [`relay`]: the one-hop relay to the node that holds an endpoint;
//! - [`tls`]: the cluster's own CA, which relay links require on both sides;
//! - [`service`]: recording when no node serves the gateways, and when one does again.
//!
//! A single node (the embedded default) runs the same code on in-process coordination, without
//! links: every endpoint it serves is its own.

pub mod draining;
pub mod links;
pub mod membership;
pub mod relay;
pub mod service;
pub mod tls;

use ism_cluster::{CoordError, Coordination, Liveness, NodeAnnouncement, NodeRole, Owner};
use ism_tunnel::{OpenStreamError, TunnelStream};
use ism_tunnel_proto::{Relay, TargetAddr, TraceParent, TRACE_CONTEXT_SINCE};
use links::RelayLinks;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// How a node takes part in a cluster (absent: a single node).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where other nodes open relay links to this one.
    pub relay_listen: SocketAddr,
    /// The address other nodes dial, when `relay_listen` is a wildcard (`0.0.0.0:8444`).
    pub relay_advertise: Option<SocketAddr>,
    /// The cluster CA, this node's certificate and key (`ism-gateway cluster-certs`).
    pub tls: tls::ClusterTlsFiles,
    /// How often the node announces itself.
    pub heartbeat: Duration,
    /// How long a node's heartbeat may stand still before it counts as lost.
    pub lease: Duration,
    /// How long a draining node lets running streams finish before it closes their sessions.
    pub drain_timeout: Duration,
}

impl ClusterConfig {
    /// A cluster node relaying on `relay_listen` with the TLS files in `tls`, heartbeats every
    /// second, lost after three without one.
    pub fn new(relay_listen: SocketAddr, tls: tls::ClusterTlsFiles) -> Self {
        Self {
            relay_listen,
            relay_advertise: None,
            tls,
            heartbeat: Duration::from_secs(1),
            lease: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// This node's view of the cluster and its relay links.
pub struct Cluster {
    pub node_id: String,
    pub coordination: Arc<dyn Coordination>,
    /// Links to the other nodes; `None` for a node that relays nothing (no cluster TLS).
    links: Option<RelayLinks>,
    liveness: Mutex<Liveness>,
    /// Serving or draining.
    role: watch::Sender<NodeRole>,
    /// Where other nodes reach this one.
    relay_addr: Option<SocketAddr>,
    /// Whether a live node serves, as of the last heartbeat (see
    /// [`serving_somewhere`](Self::serving_somewhere)).
    serving_somewhere: watch::Sender<bool>,
    /// Whether this node has read the cluster's nodes once since it started.
    joined: watch::Sender<bool>,
    /// Where each node takes relay links, as of the last heartbeat: a relayed stream looks its
    /// owner up here rather than reading the whole bucket again.
    /// Where each node takes relay links, and the tunnel protocol version it speaks on them.
    relays: Mutex<std::collections::HashMap<String, (SocketAddr, u16)>>,
    /// Who holds each endpoint, as the owner feed last said ([`Self::saw_owner`]): a scanner's
    /// stream is routed by it without a round trip to the coordination store. It may lag a
    /// moment behind a move; the node it names then answers NotHeld and the stream looks the
    /// owner up in the store itself.
    owners: Mutex<std::collections::HashMap<Uuid, Owner>>,
}

/// A node as operators see it (`ism node list`).
#[derive(Debug, Clone)]
pub struct Member {
    pub announcement: NodeAnnouncement,
    /// Its heartbeat moves (this node is always alive to itself).
    pub alive: bool,
}

impl Member {
    /// `serving`, `draining`, or `lost` (its heartbeat stood still for the lease; the others are
    /// recording the end of what it held).
    pub fn state(&self) -> &'static str {
        match (self.alive, self.announcement.role) {
            (false, _) => "lost",
            (true, NodeRole::Serving) => "serving",
            (true, NodeRole::Draining) => "draining",
        }
    }
}

/// Why a stream could not be relayed to the node that holds its endpoint.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("endpoint held by node {node}, which cannot be reached: {reason}")]
    Unreachable { node: String, reason: String },
    #[error(transparent)]
    Open(#[from] OpenStreamError),
}

impl Cluster {
    pub fn new(
        node_id: String,
        coordination: Arc<dyn Coordination>,
        links: Option<RelayLinks>,
        relay_addr: Option<SocketAddr>,
        lease: Duration,
        heartbeat: Duration,
    ) -> Self {
        Self {
            node_id,
            coordination,
            links,
            liveness: Mutex::new(Liveness::new(lease, heartbeat)),
            role: watch::channel(NodeRole::Serving).0,
            relay_addr,
            serving_somewhere: watch::channel(true).0,
            joined: watch::channel(false).0,
            relays: Mutex::default(),
            owners: Mutex::default(),
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Uuid, Owner>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes note of an endpoint's owner from the owner feed.
    pub fn saw_owner(&self, endpoint: Uuid, owner: Option<Owner>) {
        match owner {
            Some(owner) => self.owners().insert(endpoint, owner),
            None => self.owners().remove(&endpoint),
        };
    }

    fn relays(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (SocketAddr, u16)>> {
        self.relays.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes note of where the nodes announced take relay links.
    fn saw(&self, nodes: &[NodeAnnouncement]) {
        *self.relays() = nodes.iter().map(|n| (n.node.clone(), (n.relay, n.protocol))).collect();
    }

    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where other nodes open relay links to this one (`None`: it relays nothing).
    pub fn relay_address(&self) -> Option<SocketAddr> {
        self.relay_addr
    }

    pub fn role(&self) -> NodeRole {
        *self.role.borrow()
    }

    pub fn is_draining(&self) -> bool {
        self.role() == NodeRole::Draining
    }

    /// Stops taking endpoints and scanners (already running streams go on).
    pub fn start_draining(&self) -> bool {
        self.role
            .send_if_modified(|r| std::mem::replace(r, NodeRole::Draining) != NodeRole::Draining)
    }

    /// Waits until this node drains.
    pub async fn draining(&self) {
        let _ = self.role.subscribe().wait_for(|r| *r == NodeRole::Draining).await;
    }

    /// Every node announced, with whether it is alive, sorted by name.
    pub async fn members(&self) -> Result<Vec<Member>, CoordError> {
        let mut nodes = self.coordination.nodes().await?;
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let now = std::time::Instant::now();
        let liveness = self.liveness();
        Ok(nodes
            .into_iter()
            .map(|mut n| {
                // This node's own role as it is now, not as last announced (a drain just asked
                // for shows at once where it was asked).
                if n.node == self.node_id {
                    n.role = self.role();
                }
                Member {
                    alive: n.node == self.node_id || liveness.is_alive(&n.node, now),
                    announcement: n,
                }
            })
            .collect())
    }

    /// Whether a load balancer should send this node new connections: it knows the other nodes
    /// (its first heartbeat is done, so it can relay) and is not draining.
    pub fn is_ready(&self) -> bool {
        *self.joined.borrow() && !self.is_draining()
    }

    /// Whether another live node takes endpoints, so that draining this one hands them over.
    pub async fn others_serving(&self) -> bool {
        self.members().await.unwrap_or_default().iter().any(|m| {
            m.alive
                && m.announcement.node != self.node_id
                && m.announcement.role == NodeRole::Serving
        })
    }

    /// Whether some live node (this one included) takes endpoints: what makes a gateway
    /// `Online`. Follows the heartbeats, so it is at most one beat behind.
    pub fn serving_somewhere(&self) -> bool {
        *self.serving_somewhere.borrow()
    }

    /// The endpoint's owner, when it is another node not known to be lost: as the owner feed
    /// said, or as the coordination store says when `fresh` (the node the feed named no longer
    /// held it) or when the feed names no other node (a claim it has not delivered yet).
    pub async fn owner_elsewhere(&self, endpoint: Uuid, fresh: bool) -> Option<Owner> {
        // The feed naming this node while the caller found no session here (or this node
        // drains) is behind too.
        let followed = match fresh {
            true => None,
            false => self.owners().get(&endpoint).filter(|o| o.node != self.node_id).cloned(),
        };
        // A followed owner that was lost is behind as well: its endpoints' new claims are on
        // their way through the feed.
        let now = std::time::Instant::now();
        let owner = match followed {
            Some(owner) if !self.liveness().is_lost(&owner.node, now) => owner,
            _ => match self.coordination.owner(endpoint).await {
                Ok(owner) => owner?,
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "cannot read who holds the endpoint");
                    return None;
                }
            },
        };
        // An owner this node has not watched yet (it just started) is given the benefit of the
        // doubt: if it is gone, the relay fails as the endpoint being offline would.
        let lost = self.liveness().is_lost(&owner.node, now);
        (owner.node != self.node_id && !lost).then_some(owner)
    }

    /// Opens a stream to `target` through the endpoint `owner` holds, over the link to it, as
    /// part of `trace`.
    pub async fn open_relayed(
        &self,
        owner: &Owner,
        target: TargetAddr,
        relay: Relay,
        trace: Option<TraceParent>,
    ) -> Result<TunnelStream, RelayError> {
        let unreachable =
            |reason: String| RelayError::Unreachable { node: owner.node.clone(), reason };
        let Some(links) = &self.links else {
            return Err(unreachable("this node has no relay links (no cluster TLS)".into()));
        };
        let known = self.relays().get(&owner.node).copied();
        let (addr, protocol) = match known {
            Some(known) => known,
            // A node that joined since the last heartbeat.
            None => {
                let nodes =
                    self.coordination.nodes().await.map_err(|e| unreachable(e.to_string()))?;
                self.saw(&nodes);
                nodes
                    .iter()
                    .find(|n| n.node == owner.node)
                    .map(|n| (n.relay, n.protocol))
                    .ok_or_else(|| unreachable("it does not announce itself".into()))?
            }
        };
        // An owner of an older build is sent no trace context: its decoder would refuse it.
        let trace = trace.filter(|_| protocol >= TRACE_CONTEXT_SINCE);
        let link = links.to(&owner.node, addr).await.map_err(|e| unreachable(e.to_string()))?;
        Ok(link.open_relayed(target, relay, trace).await?)
    }

    /// Closes the relay links (this node is stopping).
    pub async fn close_links(&self) {
        if let Some(links) = &self.links {
            links.close_all().await;
        }
    }
}
