//! The node's heartbeat and what it does about the others: announce itself, judge who is alive,
//! record the end of what a lost node held, and fence out sessions a newer one replaced elsewhere.

use super::service;
use crate::state::NodeState;
use futures_util::StreamExt;
use ism_cluster::{NodeAnnouncement, NodeRole};
use ism_events::{Cause, Principal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Announces this node every `every`, watches the others' heartbeats, and records the end of the
/// sessions of every node that stopped beating (each survivor may do it; the tunnel aggregates
/// record each end once).
pub async fn heartbeat(state: Arc<NodeState>, every: Duration) {
    let cluster = &state.cluster;
    let relay = cluster.relay_addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    // A drain request made before this start was for the node that stopped: this one serves.
    if let Err(e) = cluster.coordination.clear_drain(&cluster.node_id).await {
        tracing::warn!(error = %e, "cannot clear an old drain request for this node");
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for beat in 1u64.. {
        tick.tick().await;
        match cluster.coordination.drain_requested(&cluster.node_id).await {
            Ok(true) if cluster.start_draining() => {
                tracing::info!("asked to drain: handing this node's endpoints to the others");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read this node's drain request"),
        }
        let me = NodeAnnouncement {
            node: cluster.node_id.clone(),
            relay,
            role: cluster.role(),
            beat,
            sessions: state.sessions.len(),
            streams: state.streams.total(),
            emails: state.sends_email,
            protocol: ism_tunnel_proto::PROTOCOL_VERSION,
        };
        if let Err(e) = cluster.coordination.announce(&me).await {
            tracing::warn!(error = %e, "cannot announce this node to the cluster");
            continue;
        }
        let nodes = match cluster.coordination.nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's nodes");
                continue;
            }
        };
        let (lost, was_serving, serving) = {
            let mut liveness = cluster.liveness();
            let now = Instant::now();
            liveness.observe(&nodes, now);
            let serving = nodes.iter().any(|n| {
                n.role == NodeRole::Serving
                    && (n.node == cluster.node_id || liveness.is_alive(&n.node, now))
            });
            let was_serving = cluster.serving_somewhere.send_replace(serving);
            cluster.joined.send_replace(true);
            cluster.saw(&nodes);
            (liveness.lost(now), was_serving, serving)
        };
        if was_serving && !serving {
            let why = "no gateway node serves it: every node is draining or lost";
            service::record_offline(&state, state.clock.now_ms(), why).await;
        } else if serving && !was_serving {
            service::record_online(&state).await;
        }
        for node in lost.into_iter().filter(|n| *n != cluster.node_id) {
            record_lost_node(&state, &node).await;
        }
    }
}

/// Records that `node` is gone: the end of every session it held (and of their streams), its
/// endpoints let go, its announcement withdrawn.
async fn record_lost_node(state: &NodeState, node: &str) {
    tracing::warn!(node, "gateway node lost: recording the end of its sessions");
    let cluster = &state.cluster;
    let cause = Cause::by(Principal::node(state.node_id.clone()));
    let why = format!("gateway node {node} lost");
    let owned = match cluster.coordination.owners().await {
        Ok(owned) => owned,
        Err(e) => {
            // Its announcement stays, so the next heartbeat finds it lost and tries again.
            tracing::warn!(node, error = %e, "cannot read whose endpoints the lost node held");
            return;
        }
    };
    let mut tunnels: Vec<uuid::Uuid> =
        owned.iter().filter(|(_, o)| o.node == node).map(|(_, o)| o.tunnel).collect();
    // Sessions the log shows open on the node, claimed or not.
    tunnels.extend(state.directory.open_tunnels_on(node).unwrap_or_default().iter().map(|t| t.id));
    tunnels.sort();
    tunnels.dedup();
    for tunnel in tunnels {
        if let Err(e) = crate::node::close_lost_session(state, tunnel, &cause, &why).await {
            tracing::warn!(%tunnel, error = %e, "could not record the end of a lost session");
        }
    }
    for (endpoint, owner) in owned.into_iter().filter(|(_, o)| o.node == node) {
        let _ = cluster.coordination.release(endpoint, owner.tunnel).await;
    }
    crate::scans::fail_lost(state, node, &why).await;
    let _ = cluster.coordination.withdraw(node).await;
}

/// Follows who holds each endpoint (the routing of scanner streams reads it) and closes this
/// node's session of an endpoint that a newer session on another node claimed: the newest
/// session wins, wherever it lives. A draining node lets the replaced session's running streams
/// finish first (up to `drain_timeout`).
pub async fn fence_replaced(state: Arc<NodeState>, drain_timeout: Duration) {
    let cluster = &state.cluster;
    loop {
        let mut feed = match cluster.coordination.watch_owners().await {
            Ok(feed) => feed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow endpoint owners; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(change) = feed.next().await {
            let change = match change {
                Ok(change) => change,
                Err(e) => {
                    tracing::warn!(error = %e, "endpoint owner feed interrupted; following again");
                    break;
                }
            };
            cluster.saw_owner(change.endpoint, change.owner.clone());
            let Some(live) = state.sessions.get(change.endpoint) else { continue };
            let reason = match change.owner {
                Some(owner) if owner.tunnel == live.tunnel => continue,
                Some(owner) => format!("replaced by a newer session on node {}", owner.node),
                // This node's claim was let go by another node, which took this node for lost
                // and recorded the session's end: the agent starts a fresh session.
                None if live.session.is_closed() => continue,
                None => "another node took this node for lost and recorded its end".to_string(),
            };
            if cluster.is_draining() {
                tokio::spawn(async move {
                    // Make before break: the streams already running finish first.
                    super::draining::streams_finish(&live.session, drain_timeout).await;
                    live.session.close(reason);
                });
            } else {
                tracing::info!(endpoint = %change.endpoint, %reason, "session fenced out");
                live.session.close(reason);
            }
        }
    }
}
