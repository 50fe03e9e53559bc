//! Scans on this node: which queued scans start now (the endpoint's capacity, first in first
//! out: [`schedule`]), running one with the built-in engine through the endpoint's tunnel
//! ([`runner`], [`tunnel_connector`]); what a stopping node or the loss of a node means for the
//! scans it ran. The scans this node runs are registered in [`crate::running_scans`], so that a
//! cancel reaches the engine at once on this node (on another, at its scheduler's next look).
//!
//! A scan runs on the node holding its endpoint's session: its streams open locally, and the
//! node that counts the endpoint's running scans is the one that starts them. The start is an
//! append with the expected version, so a scan starts once even if two nodes both believed they
//! held the endpoint; the capacity may then be exceeded by that one scan for as long as the move
//! lasts.

pub mod runner;
pub mod schedule;
pub mod tunnel_connector;

use crate::state::NodeState;
use ism_actors::scan::ScanCommand;
use ism_events::{Cause, Principal};
use uuid::Uuid;

/// Records every scan this node runs as failed for `why` and stops their engines: what a
/// stopping node does before its sessions end, so the scans' users learn they must start them
/// again.
pub async fn fail_running(state: &NodeState, why: &str) {
    for id in state.running_scans.ids() {
        record_failed(state, id, why).await;
        state.running_scans.stop(id);
    }
}

/// This node as the cause of what it records about scans.
pub(crate) fn node_cause(state: &NodeState) -> Cause {
    Cause::by(node(state))
}

fn node(state: &NodeState) -> Principal {
    Principal::node(state.node_id.clone())
}

/// This node cancelling a scan for `reason`.
pub(crate) fn cancel_by_node(state: &NodeState, reason: String) -> ScanCommand {
    ScanCommand::Cancel { by: node(state).to_string(), reason }
}

/// Why scan `id` failed, and how to start it again.
pub(crate) fn failure(why: &str, id: Uuid) -> String {
    format!("{why}; start it again (ism scan start --again {id})")
}

/// Records scan `id` as failed for `why`, saying how to start it again.
pub(crate) async fn record_failed(state: &NodeState, id: Uuid, why: &str) {
    let reason = failure(why, id);
    if let Err(e) = state.scans.execute(id, ScanCommand::Fail { reason }, node_cause(state)).await {
        tracing::warn!(scan = %id, error = %e, "could not record a scan as failed");
    }
}

/// Records the scans the log shows running on `node`, which was lost, as failed for `why`.
pub async fn fail_lost(state: &NodeState, node: &str, why: &str) {
    let scans = state.directory.active_scans().unwrap_or_default();
    for scan in scans.iter().filter(|s| s.node.as_deref() == Some(node)) {
        record_failed(state, scan.id, why).await;
    }
}
