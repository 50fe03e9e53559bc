//! How each event changes the directory, inside one sled transaction with the checkpoint.

use super::views::*;
use ism_events::{AggregateKind, Event, Recorded};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use uuid::Uuid;

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<ism_events::ProjectionError>>;

/// The directory's trees, as seen inside a transaction.
pub(super) struct Tx<'a> {
    pub gateways: &'a TransactionalTree,
    pub endpoints: &'a TransactionalTree,
    pub tunnels: &'a TransactionalTree,
    pub credentials: &'a TransactionalTree,
    pub endpoint_names: &'a TransactionalTree,
    pub users: &'a TransactionalTree,
    pub tokens: &'a TransactionalTree,
    pub meta: &'a TransactionalTree,
}

pub(super) const CHECKPOINT: &[u8] = b"checkpoint";

/// How finely a gateway's last activity is kept. It feeds a rule counted in months, and
/// rewriting the gateway's row for every stream would cost a storage transaction per stream.
pub(super) const ACTIVITY_RESOLUTION_MS: i64 = 60_000;

/// Whether a stream opened at `t` moves a last activity of `last` (by a minute or more).
pub(super) fn activity_advances(last: i64, t: i64) -> bool {
    t >= last.saturating_add(ACTIVITY_RESOLUTION_MS)
}

pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("views always encode")
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
) -> Result<T, ism_events::ProjectionError> {
    rmp_serde::from_slice(bytes).map_err(|e| ism_events::ProjectionError::Corrupt(e.to_string()))
}

/// Key of the (gateway, lower-cased endpoint name) index.
pub(super) fn name_key(gateway: Uuid, name: &str) -> Vec<u8> {
    let mut k = gateway.as_bytes().to_vec();
    k.extend_from_slice(name.to_ascii_lowercase().as_bytes());
    k
}

fn get<T: for<'de> Deserialize<'de>>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(v) => decode(&v).map(Some).map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

/// Changes the row at `key`, if there is one.
fn update<T: Serialize + for<'de> Deserialize<'de>>(
    tree: &TransactionalTree,
    key: &[u8],
    f: impl FnOnce(&mut T),
) -> TxResult<()> {
    if let Some(mut row) = get::<T>(tree, key)? {
        f(&mut row);
        tree.insert(key, encode(&row))?;
    }
    Ok(())
}

pub(super) fn apply(tx: &Tx<'_>, rec: &Recorded) -> TxResult<()> {
    let env = &rec.envelope;
    let (id, seq, t) = (env.aggregate.id, env.sequence, env.time_ms);
    let key = id.as_bytes().as_slice();
    match &env.event {
        // ----- gateway -----
        Event::GatewayCreated { name, description } => {
            let g = GatewayView {
                id,
                version: seq,
                name: name.clone(),
                description: description.clone(),
                status: GatewayStatus::Initializing,
                created_ms: t,
                created_by: env.actor.clone(),
                activated_by_node: None,
                scanner_credentials: Vec::new(),
                endpoint_count: 0,
                deleted_ms: None,
                deleted_reason: None,
                last_activity_ms: t,
            };
            tx.gateways.insert(key, encode(&g))?;
        }
        Event::ScannerCredentialIssued { credential, label, secret_hash, kind } => {
            tx.credentials.insert(
                credential.as_bytes(),
                encode(&ScannerCredentialRow {
                    gateway: id,
                    secret_hash: secret_hash.clone(),
                    kind: *kind,
                    revoked: false,
                }),
            )?;
            update(tx.gateways, key, |g: &mut GatewayView| {
                g.scanner_credentials.push(CredentialView {
                    id: *credential,
                    label: label.clone(),
                    kind: *kind,
                    issued_ms: t,
                    revoked: false,
                })
            })?;
        }
        Event::ScannerCredentialRevoked { credential } => {
            update(tx.credentials, credential.as_bytes(), |c: &mut ScannerCredentialRow| {
                c.revoked = true
            })?;
            update(tx.gateways, key, |g: &mut GatewayView| {
                g.scanner_credentials
                    .iter_mut()
                    .filter(|c| c.id == *credential)
                    .for_each(|c| c.revoked = true)
            })?;
        }
        Event::GatewayActivated { node } => update(tx.gateways, key, |g: &mut GatewayView| {
            g.status = GatewayStatus::Online;
            g.activated_by_node = Some(node.clone());
        })?,
        Event::EndpointAssigned { .. } => {
            update(tx.gateways, key, |g: &mut GatewayView| g.endpoint_count += 1)?
        }
        Event::EndpointReleased { .. } => update(tx.gateways, key, |g: &mut GatewayView| {
            g.endpoint_count = g.endpoint_count.saturating_sub(1)
        })?,
        Event::EndpointAssignmentRenamed { .. } => {}
        Event::GatewayDeleted { reason } => {
            let mut revoke = Vec::new();
            update(tx.gateways, key, |g: &mut GatewayView| {
                g.status = GatewayStatus::Deleted;
                g.deleted_ms = Some(t);
                g.deleted_reason = Some(reason.clone());
                revoke = g.scanner_credentials.iter().map(|c| c.id).collect();
            })?;
            // A deleted gateway's credentials stop working with it.
            for c in revoke {
                update(tx.credentials, c.as_bytes(), |row: &mut ScannerCredentialRow| {
                    row.revoked = true
                })?;
            }
        }

        // ----- endpoint -----
        Event::EndpointAdded { gateway, name, description, platform, key_generation, key_hash } => {
            let e = EndpointView {
                id,
                version: seq,
                gateway: *gateway,
                name: name.clone(),
                description: description.clone(),
                platform: *platform,
                key_generation: *key_generation,
                key_hash: key_hash.clone(),
                status: EndpointStatus::Pending,
                scan_access: true,
                support_access: SupportAccessView::Off,
                machine: None,
                hostname: None,
                agent_version: None,
                agent_platform: None,
                open_tunnels: Vec::new(),
                node: None,
                connected_since_ms: None,
                last_disconnected_ms: None,
                last_refusal: None,
                deleted: false,
            };
            tx.endpoints.insert(key, encode(&e))?;
            tx.endpoint_names.insert(name_key(*gateway, name), key)?;
        }
        Event::EndpointRegistered { machine, hostname, platform, agent_version } => {
            update(tx.endpoints, key, |e: &mut EndpointView| {
                e.machine = Some(machine.clone());
                e.hostname = Some(hostname.clone());
                e.agent_platform = Some(platform.clone());
                e.agent_version = Some(agent_version.clone());
            })?
        }
        Event::EndpointRegistrationRefused { hostname, reason, .. } => {
            update(tx.endpoints, key, |e: &mut EndpointView| {
                e.last_refusal = Some(format!("{reason} (from host {hostname})"))
            })?
        }
        Event::EndpointEdited { name, description } => {
            if let Some(mut e) = get::<EndpointView>(tx.endpoints, key)? {
                tx.endpoint_names.remove(name_key(e.gateway, &e.name))?;
                tx.endpoint_names.insert(name_key(e.gateway, name), key)?;
                e.name = name.clone();
                e.description = description.clone();
                tx.endpoints.insert(key, encode(&e))?;
            }
        }
        Event::EndpointKeyRotated { key_generation, key_hash } => {
            update(tx.endpoints, key, |e: &mut EndpointView| {
                e.key_generation = *key_generation;
                e.key_hash = key_hash.clone();
            })?
        }
        Event::ScanAccessChanged { enabled } => {
            update(tx.endpoints, key, |e: &mut EndpointView| e.scan_access = *enabled)?
        }
        Event::SupportAccessGranted { until_ms } => {
            update(tx.endpoints, key, |e: &mut EndpointView| {
                e.support_access =
                    until_ms.map_or(SupportAccessView::Indefinite, SupportAccessView::Until)
            })?
        }
        Event::SupportAccessRevoked | Event::SupportAccessExpired => {
            update(tx.endpoints, key, |e: &mut EndpointView| {
                e.support_access = SupportAccessView::Off
            })?
        }
        Event::EndpointDeleted => {
            if let Some(mut e) = get::<EndpointView>(tx.endpoints, key)? {
                tx.endpoint_names.remove(name_key(e.gateway, &e.name))?;
                e.deleted = true;
                tx.endpoints.insert(key, encode(&e))?;
            }
        }

        // ----- tunnel -----
        Event::TunnelOpened { endpoint, gateway, node, agent_version, .. } => {
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
        Event::TunnelClosed { .. } => {
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
        Event::StreamOpened { .. } => {
            if let Some(tv) = get::<TunnelView>(tx.tunnels, key)? {
                update(tx.gateways, tv.gateway.as_bytes(), |g: &mut GatewayView| {
                    if activity_advances(g.last_activity_ms, t) {
                        g.last_activity_ms = t;
                    }
                })?;
            }
        }
        Event::StreamRefused { .. }
        | Event::StreamRefusalsRepeated(_)
        | Event::StreamClosed { .. } => {}

        // ----- user -----
        Event::UserCreated { name, role } => {
            let u = UserView {
                id,
                version: seq,
                name: name.clone(),
                role: *role,
                created_ms: t,
                created_by: env.actor.clone(),
                tokens: Vec::new(),
            };
            tx.users.insert(key, encode(&u))?;
        }
        Event::UserRoleChanged { role } => {
            update(tx.users, key, |u: &mut UserView| u.role = *role)?
        }
        Event::ApiTokenIssued { token, label, token_hash } => {
            tx.tokens.insert(
                token.as_bytes(),
                encode(&ApiTokenRow { user: id, token_hash: token_hash.clone(), revoked: false }),
            )?;
            update(tx.users, key, |u: &mut UserView| {
                u.tokens.push(TokenView {
                    id: *token,
                    label: label.clone(),
                    issued_ms: t,
                    revoked: false,
                })
            })?;
        }
        Event::ApiTokenRevoked { token } => {
            update(tx.tokens, token.as_bytes(), |r: &mut ApiTokenRow| r.revoked = true)?;
            update(tx.users, key, |u: &mut UserView| {
                u.tokens.iter_mut().filter(|x| x.id == *token).for_each(|x| x.revoked = true)
            })?;
        }
    }
    // Views carry the version of their own aggregate.
    match env.aggregate.kind {
        AggregateKind::Gateway => update(tx.gateways, key, |g: &mut GatewayView| g.version = seq)?,
        AggregateKind::Endpoint => {
            update(tx.endpoints, key, |e: &mut EndpointView| e.version = seq)?
        }
        AggregateKind::User => update(tx.users, key, |u: &mut UserView| u.version = seq)?,
        AggregateKind::Tunnel => {}
    }
    tx.meta.insert(CHECKPOINT, &rec.position.to_be_bytes())?;
    Ok(())
}
