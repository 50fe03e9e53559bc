//! Endpoint events: the endpoint rows and the name index.

use super::{encode, get, name_key, update, At, Tx, TxResult};
use crate::directory::views::*;
use ism_events::{EndpointEvent, SupportAccess};

pub(super) fn apply(tx: &Tx<'_>, at: &At<'_>, event: &EndpointEvent) -> TxResult<()> {
    let (id, key, seq) = (at.id, at.key, at.seq);
    match event {
        EndpointEvent::EndpointAdded {
            gateway,
            name,
            description,
            platform,
            key_generation,
            key_hash,
        } => {
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
                scan_capacity: None,
                support_access: SupportAccess::Off,
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
        EndpointEvent::EndpointRegistered { machine, hostname, platform, agent_version } => {
            update(tx.endpoints, key, |e: &mut EndpointView| {
                e.machine = Some(machine.clone());
                e.hostname = Some(hostname.clone());
                e.agent_platform = Some(platform.clone());
                e.agent_version = Some(agent_version.clone());
            })?
        }
        EndpointEvent::EndpointRegistrationRefused { hostname, reason, .. } => {
            update(tx.endpoints, key, |e: &mut EndpointView| {
                e.last_refusal = Some(format!("{reason} (from host {hostname})"))
            })?
        }
        EndpointEvent::EndpointRegistrationRefusalsRepeated(r) => {
            let host = r.hostnames.first().map_or("unknown", String::as_str);
            update(tx.endpoints, key, |e: &mut EndpointView| {
                e.last_refusal =
                    Some(format!("{} (from host {host}, {} more times)", r.reason, r.count))
            })?
        }
        EndpointEvent::EndpointUnbound { .. } => {
            update(tx.endpoints, key, |e: &mut EndpointView| e.machine = None)?
        }
        EndpointEvent::EndpointEdited { name, description } => {
            if let Some(mut e) = get::<EndpointView>(tx.endpoints, key)? {
                tx.endpoint_names.remove(name_key(e.gateway, &e.name))?;
                tx.endpoint_names.insert(name_key(e.gateway, name), key)?;
                e.name = name.clone();
                e.description = description.clone();
                tx.endpoints.insert(key, encode(&e))?;
            }
        }
        EndpointEvent::EndpointKeyRotated { key_generation, key_hash } => {
            update(tx.endpoints, key, |e: &mut EndpointView| {
                e.key_generation = *key_generation;
                e.key_hash = key_hash.clone();
            })?
        }
        EndpointEvent::ScanAccessChanged { enabled } => {
            update(tx.endpoints, key, |e: &mut EndpointView| e.scan_access = *enabled)?
        }
        EndpointEvent::ScanCapacitySet { capacity } => {
            update(tx.endpoints, key, |e: &mut EndpointView| e.scan_capacity = *capacity)?
        }
        EndpointEvent::SupportAccessGranted { until_ms } => {
            update(tx.endpoints, key, |e: &mut EndpointView| {
                e.support_access = SupportAccess::granted(*until_ms)
            })?
        }
        EndpointEvent::SupportAccessRevoked | EndpointEvent::SupportAccessExpired => {
            update(tx.endpoints, key, |e: &mut EndpointView| e.support_access = SupportAccess::Off)?
        }
        EndpointEvent::EndpointDeleted => {
            if let Some(mut e) = get::<EndpointView>(tx.endpoints, key)? {
                tx.endpoint_names.remove(name_key(e.gateway, &e.name))?;
                e.deleted = true;
                tx.endpoints.insert(key, encode(&e))?;
            }
        }
    }
    Ok(())
}
