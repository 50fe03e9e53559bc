//! Whether any node serves the gateways, recorded as events (`GatewayWentOffline`,
//! `GatewayCameOnline`) so that the gateway notifications follow from the log like every other
//! notification.
//!
//! Every node serves every gateway, so the gateways go offline together: when the last serving
//! node stops (recorded by that node as it stops), when every node drains or is lost (recorded by
//! a node that sees it in its heartbeat), or when a node alone on the embedded log crashed (found
//! at its next start: nothing recorded the stop, and no other node can have served). A node that
//! serves again records them back online.

use crate::state::NodeState;
use ism_actors::gateway::GatewayCommand;
use ism_events::{Cause, Principal};
use ism_projectors::GatewayStatus;

/// Records every online gateway offline since `since_ms`, for `why`.
pub async fn record_offline(state: &NodeState, since_ms: i64, why: &str) {
    record(state, |g| {
        (g.offline_since_ms.is_none())
            .then(|| GatewayCommand::RecordOffline { since_ms, why: why.to_string() })
    })
    .await
}

/// Records every gateway recorded offline as served again, by this node.
pub async fn record_online(state: &NodeState) {
    let node = state.node_id.clone();
    record(state, |g| {
        g.offline_since_ms.is_some().then(|| GatewayCommand::RecordOnline { node: node.clone() })
    })
    .await
}

async fn record(
    state: &NodeState,
    command: impl Fn(&ism_projectors::GatewayView) -> Option<GatewayCommand>,
) {
    let cause = Cause::by(Principal::node(state.node_id.clone()));
    let gateways = match state.directory.gateways() {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the gateways to record whether they are served");
            return;
        }
    };
    let mut last = None;
    for g in gateways.iter().filter(|g| g.status == GatewayStatus::Online) {
        let Some(c) = command(g) else { continue };
        match state.gateways.execute(g.id, c, cause.clone()).await {
            Ok(done) => last = done.position().or(last),
            Err(e) => {
                tracing::warn!(gateway = %g.id, error = %e, "cannot record whether the gateway is served")
            }
        }
    }
    // The next decision reads the directory: let it show these first.
    if let Err(e) = state.caught_up(last).await {
        tracing::warn!(error = %e, "the directory is behind the gateways' service records");
    }
}
