//! The four-month rule's action: deleting a gateway that had no scan activity, with its
//! endpoints (their sessions close on every node, as for a deletion through the API).

use crate::state::NodeState;
use ism_actors::gateway::GatewayCommand;
use ism_actors::roster::Roster;
use ism_events::{Cause, Principal};
use ism_projectors::notices::Notice;
use ism_projectors::GatewayStatus;

/// The retirement's own channel: "delivered" once the gateway is deleted, so a node that dies
/// half-way leaves it to another.
pub const CHANNEL: &str = "deletion";

/// How a deletion for inactivity is recorded (its reason starts so).
const REASON: &str = "inactivity:";

/// What the retirement found.
pub enum Retired {
    /// Deleted for inactivity (now, or by a node that held the notification before).
    Deleted,
    /// Someone deleted the gateway first, for this reason.
    ByOthers(String),
    /// The directory shows scan activity after the one the notice was computed from (at this
    /// time): the notice came from a view that had not caught up, and the gateway is kept. The
    /// notices' own view moves the deadline once it sees that activity.
    StillActive(i64),
}

pub async fn retire(state: &NodeState, notice: &Notice, months: u32) -> Result<Retired, String> {
    let gateway = notice.gateway;
    let Some(g) = state.directory.gateway(gateway).map_err(|e| e.to_string())? else {
        return Err(format!("gateway {gateway} is not in this node's directory yet"));
    };
    if g.status == GatewayStatus::Deleted {
        let reason = g.deleted_reason.unwrap_or_default();
        return Ok(if reason.starts_with(REASON) {
            Retired::Deleted
        } else {
            Retired::ByOthers(reason)
        });
    }
    // Checked again here, on this node's directory, at each attempt: activity may have come
    // since the notice was computed, or since a failed attempt.
    if g.last_activity_ms > notice.since_ms {
        return Ok(Retired::StillActive(g.last_activity_ms));
    }
    let cause = Cause::by(Principal::node(state.node_id.clone()));
    let roster =
        Roster { gateways: &state.gateways, endpoints: &state.endpoints, log: &*state.log };
    for e in state.directory.endpoints_of(gateway).map_err(|e| e.to_string())? {
        roster.delete(e.id, gateway, &cause).await.map_err(|e| e.to_string())?;
    }
    let since = ism_projectors::audit::format_time(notice.since_ms);
    let reason = format!("{REASON} no scan activity since {since} ({months} months)");
    let deleted = state.gateways.execute(gateway, GatewayCommand::Delete { reason }, cause).await;
    let deleted = deleted.map_err(|e| e.to_string())?;
    tracing::info!(%gateway, name = %ism_events::escaped(&g.name), "gateway deleted for inactivity");
    // Let this node's directory show it before the notification says so.
    state.caught_up(deleted.position()).await.map_err(|e| e.to_string())?;
    Ok(Retired::Deleted)
}
