//! Tunnel events: open sessions, endpoint status, gateway activity.

use super::{activity_advances, encode, get, update, At, Tx, TxResult};
use crate::directory::views::*;
use ism_events::TunnelEvent;

pub(super) fn apply(tx: &Tx<'_>, at: &At<'_>, event: &TunnelEvent) -> TxResult<()> {
    let (id, key, t) = (at.id, at.key, at.time_ms);
    match event {
        TunnelEvent::TunnelOpened { endpoint, gateway, node, agent_version, .. } => {
            tx.tunnels.insert(
                key,
                encode(&TunnelView {
                    id,
                    endpoint: *endpoint,
                    gateway: *gateway,
                    node: node.clone(),
                    opened_ms: t,
                }),
            )?;
            update(tx.endpoints, endpoint.as_bytes(), |e: &mut EndpointView| {
                if let Err(i) = e.open_tunnels.binary_search(&id) {
                    e.open_tunnels.insert(i, id);
                }
                e.status = EndpointStatus::Ready;
                e.node = Some(node.clone());
                e.connected_since_ms = Some(t);
                e.agent_version = Some(agent_version.clone());
            })?;
        }
        TunnelEvent::TunnelClosed { .. } => {
            if let Some(tv) = get::<TunnelView>(tx.tunnels, key)? {
                tx.tunnels.remove(key)?;
                update(tx.endpoints, tv.endpoint.as_bytes(), |e: &mut EndpointView| {
                    e.open_tunnels.retain(|x| *x != id);
                    if e.open_tunnels.is_empty() {
                        e.status = EndpointStatus::Offline;
                        e.node = None;
                        e.connected_since_ms = None;
                        e.last_disconnected_ms = Some(t);
                    }
                })?;
            }
        }
        // A scanner stream is the activity that keeps a gateway alive.
        TunnelEvent::StreamOpened { .. } => {
            if let Some(tv) = get::<TunnelView>(tx.tunnels, key)? {
                update(tx.gateways, tv.gateway.as_bytes(), |g: &mut GatewayView| {
                    if activity_advances(g.last_activity_ms, t) {
                        g.last_activity_ms = t;
                    }
                })?;
            }
        }
        TunnelEvent::StreamRefused { .. }
        | TunnelEvent::StreamRefusalsRepeated(_)
        | TunnelEvent::StreamClosed { .. } => {}
    }
    Ok(())
}
