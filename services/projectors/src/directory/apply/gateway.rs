//! Gateway events: the gateway rows, their credentials, the endpoint count.

use super::{encode, update, At, Tx, TxResult};
use crate::directory::views::*;
use ism_events::GatewayEvent;

pub(super) fn apply(tx: &Tx<'_>, at: &At<'_>, event: &GatewayEvent) -> TxResult<()> {
    let (id, key, seq, t) = (at.id, at.key, at.seq, at.time_ms);
    match event {
        // Turned-away scanners change no row (the audit shows them).
        GatewayEvent::ScannerRefused { .. } | GatewayEvent::ScannerRefusalsRepeated(_) => {}
        GatewayEvent::GatewayCreated { name, description } => {
            let g = GatewayView {
                id,
                version: seq,
                name: name.clone(),
                description: description.clone(),
                status: GatewayStatus::Initializing,
                created_ms: t,
                created_by: at.envelope.actor_shown(),
                activated_by_node: None,
                scanner_credentials: Vec::new(),
                endpoint_count: 0,
                deleted_ms: None,
                deleted_reason: None,
                last_activity_ms: t,
                offline_since_ms: None,
            };
            tx.gateways.insert(key, encode(&g))?;
        }
        GatewayEvent::ScannerCredentialIssued { credential, label, secret_hash, kind } => {
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
        GatewayEvent::ScannerCredentialRevoked { credential } => {
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
        GatewayEvent::GatewayActivated { node } => {
            update(tx.gateways, key, |g: &mut GatewayView| {
                g.status = GatewayStatus::Online;
                g.activated_by_node = Some(node.clone());
            })?
        }
        GatewayEvent::EndpointAssigned { .. } => {
            update(tx.gateways, key, |g: &mut GatewayView| g.endpoint_count += 1)?
        }
        GatewayEvent::EndpointReleased { .. } => {
            update(tx.gateways, key, |g: &mut GatewayView| {
                g.endpoint_count = g.endpoint_count.saturating_sub(1)
            })?
        }
        GatewayEvent::EndpointAssignmentRenamed { .. } => {}
        GatewayEvent::GatewayWentOffline { since_ms, .. } => {
            update(tx.gateways, key, |g: &mut GatewayView| g.offline_since_ms = Some(*since_ms))?
        }
        GatewayEvent::GatewayCameOnline { .. } => {
            update(tx.gateways, key, |g: &mut GatewayView| g.offline_since_ms = None)?
        }
        GatewayEvent::GatewayDeleted { reason } => {
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
    }
    Ok(())
}
