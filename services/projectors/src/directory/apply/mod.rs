//! How each event changes the directory, inside one sled transaction with the checkpoint: one
//! module per aggregate, each matching its aggregate's events exhaustively.

mod endpoint;
mod gateway;
mod scan;
mod tunnel;
mod user;
mod webhook;

use super::views::*;
use crate::store::CHECKPOINT;
pub(super) use crate::store::{encode, get, update, TxResult};
use ism_events::{AggregateEvent, Envelope, Recorded};
use sled::transaction::TransactionalTree;
use uuid::Uuid;

/// The directory's trees, as seen inside a transaction.
pub(super) struct Tx<'a> {
    pub gateways: &'a TransactionalTree,
    pub endpoints: &'a TransactionalTree,
    pub tunnels: &'a TransactionalTree,
    pub credentials: &'a TransactionalTree,
    pub endpoint_names: &'a TransactionalTree,
    pub users: &'a TransactionalTree,
    pub tokens: &'a TransactionalTree,
    pub webhooks: &'a TransactionalTree,
    pub scans: &'a TransactionalTree,
    pub scans_by_endpoint: &'a TransactionalTree,
    pub active_scans: &'a TransactionalTree,
    pub scan_findings: &'a TransactionalTree,
    pub meta: &'a TransactionalTree,
}

/// How finely a gateway's last activity is kept (here and in the notice projection). It feeds a
/// rule counted in months, and rewriting a gateway's row for every stream would cost a storage
/// transaction per stream.
const ACTIVITY_RESOLUTION_MS: i64 = 60_000;

/// Whether a stream opened at `t` moves a last activity of `last` (by a minute or more).
pub(crate) fn activity_advances(last: i64, t: i64) -> bool {
    t >= last.saturating_add(ACTIVITY_RESOLUTION_MS)
}

/// Key of the (gateway, lower-cased endpoint name) index.
pub(super) fn name_key(gateway: Uuid, name: &str) -> Vec<u8> {
    let mut k = gateway.as_bytes().to_vec();
    k.extend_from_slice(name.to_ascii_lowercase().as_bytes());
    k
}

/// What the per-aggregate modules need of an event's envelope.
pub(super) struct At<'a> {
    /// The aggregate's id, and its row's key in the tree of its kind.
    pub id: uuid::Uuid,
    pub key: &'a [u8],
    /// The event's sequence within its aggregate (the view's version).
    pub seq: u64,
    pub time_ms: i64,
    pub envelope: &'a Envelope,
}

/// Applies `event` (the record's event as its aggregate's type) and moves the checkpoint.
pub(super) fn apply(tx: &Tx<'_>, rec: &Recorded, event: &AggregateEvent) -> TxResult<()> {
    let env = &rec.envelope;
    let id = env.aggregate.id;
    let at = At { id, key: id.as_bytes(), seq: env.sequence, time_ms: env.time_ms, envelope: env };
    // Views carry the version of their own aggregate.
    match event {
        AggregateEvent::Gateway(e) => {
            gateway::apply(tx, &at, e)?;
            update(tx.gateways, at.key, |g: &mut GatewayView| g.version = at.seq)?
        }
        AggregateEvent::Endpoint(e) => {
            endpoint::apply(tx, &at, e)?;
            update(tx.endpoints, at.key, |e: &mut EndpointView| e.version = at.seq)?
        }
        AggregateEvent::User(e) => {
            user::apply(tx, &at, e)?;
            update(tx.users, at.key, |u: &mut UserView| u.version = at.seq)?
        }
        AggregateEvent::Tunnel(e) => tunnel::apply(tx, &at, e)?,
        AggregateEvent::Webhook(e) => webhook::apply(tx, &at, e)?,
        AggregateEvent::Scan(e) => scan::apply(tx, &at, rec.position, e)?,
        // Notifications are the notice projection's (`crate::notices`).
        AggregateEvent::Notification(_) => {}
    }
    tx.meta.insert(CHECKPOINT, &rec.position.to_be_bytes())?;
    Ok(())
}
