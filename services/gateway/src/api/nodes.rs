//! The nodes of the cluster: who they are, what they hold, and draining one of them.

use super::{ApiError, Caller, State};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

#[derive(Serialize)]
pub(super) struct NodeOut {
    node: String,
    /// `serving`, `draining` or `lost`.
    state: &'static str,
    /// Where the other nodes open relay links to it.
    relay_address: String,
    /// Endpoint sessions it holds.
    endpoints: usize,
    /// Scanner streams running through it.
    streams: usize,
    /// The node answering this request.
    this_node: bool,
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("cluster coordination: {e}"))
}

/// Every node of the cluster, sorted by name.
pub(super) async fn list(state: State, _caller: Caller) -> Result<HttpResponse, ApiError> {
    let members = state.cluster.members().await.map_err(unavailable)?;
    let nodes: Vec<NodeOut> = members
        .iter()
        .map(|m| NodeOut {
            node: m.announcement.node.clone(),
            state: m.state(),
            relay_address: m.announcement.relay.to_string(),
            endpoints: m.announcement.sessions,
            streams: m.announcement.streams,
            this_node: m.announcement.node == state.node_id,
        })
        .collect();
    Ok(HttpResponse::Ok().json(nodes))
}

/// Asks a node to drain: it takes no new endpoints and hands those it holds to the other nodes,
/// make before break (it sees the request at its next heartbeat, whichever node took it).
pub(super) async fn drain(
    state: State,
    caller: Caller,
    node: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.must_be_administrator()?;
    let node = node.into_inner();
    let members = state.cluster.members().await.map_err(unavailable)?;
    let Some(member) = members.iter().find(|m| m.announcement.node == node) else {
        let known: Vec<&str> = members.iter().map(|m| m.announcement.node.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no node {} in the cluster (nodes: {})",
                ism_events::escaped(&node),
                known.join(", ")
            ),
        ));
    };
    state.cluster.coordination.request_drain(&node).await.map_err(unavailable)?;
    if node == state.node_id {
        state.cluster.start_draining();
    }
    tracing::info!(node = %ism_events::escaped(&node), by = %caller.principal, "node drain requested");
    Ok(HttpResponse::Accepted().json(NodeOut {
        node: node.clone(),
        state: "draining",
        relay_address: member.announcement.relay.to_string(),
        endpoints: member.announcement.sessions,
        streams: member.announcement.streams,
        this_node: node == state.node_id,
    }))
}
