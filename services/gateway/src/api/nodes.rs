//! The nodes of the cluster: who they are, what they hold, and draining one of them.

use super::{ApiError, Caller, State};
use crate::cluster::{membership, Member};
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

/// The cluster's nodes, sorted by name, this one among them even before its first heartbeat has
/// announced it: that beat runs beside the node's start, and a list asked for at once named no
/// node at all.
async fn members(state: &State) -> Result<Vec<Member>, ApiError> {
    let members = state.cluster.members().await.map_err(unavailable)?;
    Ok(with_this_node(members, membership::this_node(state)))
}

/// `members` (sorted by name) with `this` node inserted in its place if it is not among them.
fn with_this_node(mut members: Vec<Member>, this: Member) -> Vec<Member> {
    let name = &this.announcement.node;
    if !members.iter().any(|m| &m.announcement.node == name) {
        let at = members.partition_point(|m| &m.announcement.node < name);
        members.insert(at, this);
    }
    members
}

/// Every node of the cluster, sorted by name.
pub(super) async fn list(state: State, _caller: Caller) -> Result<HttpResponse, ApiError> {
    let members = members(&state).await?;
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
    let members = members(&state).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use ism_cluster::{NodeAnnouncement, NodeRole};

    fn member(node: &str, alive: bool) -> Member {
        let announcement = NodeAnnouncement {
            node: node.into(),
            relay: ([127, 0, 0, 1], 0).into(),
            role: NodeRole::Serving,
            beat: 1,
            sessions: 0,
            streams: 0,
            emails: false,
            protocol: ism_tunnel_proto::PROTOCOL_VERSION,
        };
        Member { announcement, alive }
    }

    fn names(members: &[Member]) -> Vec<&str> {
        members.iter().map(|m| m.announcement.node.as_str()).collect()
    }

    #[test]
    fn this_node_is_listed_in_its_place_before_it_has_announced_itself_and_once_after() {
        let announced = vec![member("a", true), member("c", false)];
        let listed = with_this_node(announced.clone(), member("b", true));
        assert_eq!(names(&listed), ["a", "b", "c"]);
        assert_eq!(names(&with_this_node(vec![], member("b", true))), ["b"], "a lone node");
        let mut this = member("c", true);
        this.announcement.beat = 0;
        let listed = with_this_node(announced, this);
        assert_eq!(names(&listed), ["a", "c"], "announced: listed once");
        assert_eq!(listed[1].announcement.beat, 1, "as it announced itself");
    }
}
