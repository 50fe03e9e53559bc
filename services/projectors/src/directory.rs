//! The directory: gateways, endpoints with their status, and which node holds each endpoint.
//!
//! It answers every read of the management API and every lookup of the data path's admission
//! (which gateway a scanner credential belongs to, which endpoint a SOCKS username names). It is
//! derived from events only, with times taken from the envelopes, so a rebuild from the log is
//! byte-identical to the live copy.

use ism_events::{Event, Platform, Projection, ProjectionError, Recorded};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;
use std::path::Path;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayStatus {
    Initializing,
    Online,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub status: GatewayStatus,
    pub created_ms: i64,
    pub created_by: Option<String>,
    /// The node that brought it online.
    pub activated_by_node: Option<String>,
    pub scanner_credentials: Vec<CredentialView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    pub id: Uuid,
    pub label: String,
    pub issued_ms: i64,
}

/// As in the seed: `Pending` until the first connection, `Ready` while connected, `Offline` after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointStatus {
    Pending,
    Ready,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub id: Uuid,
    pub gateway: Uuid,
    pub name: String,
    pub description: String,
    pub platform: Platform,
    pub key_generation: u32,
    pub key_hash: String,
    pub status: EndpointStatus,
    /// Machine identity the key is bound to.
    pub machine: Option<String>,
    pub hostname: Option<String>,
    /// What the agent reports about itself.
    pub agent_version: Option<String>,
    pub agent_platform: Option<String>,
    /// Sessions currently open (normally one; two during a make-before-break handover).
    pub open_tunnels: Vec<Uuid>,
    /// The node holding the most recent session.
    pub node: Option<String>,
    pub connected_since_ms: Option<i64>,
    pub last_disconnected_ms: Option<i64>,
    /// The last refused registration ("Token already registered"), for the operator.
    pub last_refusal: Option<String>,
}

/// An open session, to find its endpoint when it closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelView {
    pub id: Uuid,
    pub endpoint: Uuid,
    pub node: String,
    pub opened_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CredentialRow {
    gateway: Uuid,
    secret_hash: String,
}

pub struct DirectoryProjection {
    gateways: sled::Tree,
    endpoints: sled::Tree,
    tunnels: sled::Tree,
    credentials: sled::Tree,
    endpoint_names: sled::Tree,
    meta: sled::Tree,
    _db: sled::Db,
}

const CHECKPOINT: &[u8] = b"checkpoint";

fn storage(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Storage(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("views always encode")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ProjectionError> {
    rmp_serde::from_slice(bytes).map_err(|e| ProjectionError::Corrupt(e.to_string()))
}

fn name_key(gateway: Uuid, name: &str) -> Vec<u8> {
    let mut k = gateway.as_bytes().to_vec();
    k.extend_from_slice(name.to_ascii_lowercase().as_bytes());
    k
}

type Tx<'a> = (&'a TransactionalTree, &'a TransactionalTree, &'a TransactionalTree, &'a TransactionalTree, &'a TransactionalTree, &'a TransactionalTree);
type TxResult<T> = Result<T, ConflictableTransactionError<ProjectionError>>;

fn tx_get<T: for<'de> Deserialize<'de>>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(v) => decode(&v).map(Some).map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

impl DirectoryProjection {
    /// Opens (or creates) the projection's store in `path`.
    pub fn open(path: &Path) -> Result<Self, ProjectionError> {
        let db = sled::Config::new().path(path).open().map_err(storage)?;
        let tree = |n: &str| db.open_tree(n).map_err(storage);
        Ok(Self {
            gateways: tree("gateways")?,
            endpoints: tree("endpoints")?,
            tunnels: tree("tunnels")?,
            credentials: tree("credentials")?,
            endpoint_names: tree("endpoint_names")?,
            meta: tree("meta")?,
            _db: db,
        })
    }

    fn trees(&self) -> [(&'static str, &sled::Tree); 6] {
        [
            ("gateways", &self.gateways),
            ("endpoints", &self.endpoints),
            ("tunnels", &self.tunnels),
            ("credentials", &self.credentials),
            ("endpoint_names", &self.endpoint_names),
            ("meta", &self.meta),
        ]
    }

    pub fn gateways(&self) -> Result<Vec<GatewayView>, ProjectionError> {
        let mut out: Vec<GatewayView> = self.gateways.iter().values().map(|v| decode(&v.map_err(storage)?)).collect::<Result<_, _>>()?;
        out.sort_by_key(|g| (g.created_ms, g.id));
        Ok(out)
    }

    pub fn gateway(&self, id: Uuid) -> Result<Option<GatewayView>, ProjectionError> {
        self.gateways.get(id.as_bytes()).map_err(storage)?.map(|v| decode(&v)).transpose()
    }

    pub fn endpoint(&self, id: Uuid) -> Result<Option<EndpointView>, ProjectionError> {
        self.endpoints.get(id.as_bytes()).map_err(storage)?.map(|v| decode(&v)).transpose()
    }

    /// Endpoints of one gateway, by name.
    pub fn endpoints_of(&self, gateway: Uuid) -> Result<Vec<EndpointView>, ProjectionError> {
        let mut out = Vec::new();
        for item in self.endpoint_names.scan_prefix(gateway.as_bytes()) {
            let (_, id) = item.map_err(storage)?;
            if let Some(e) = self.endpoint(Uuid::from_slice(&id).map_err(|e| ProjectionError::Corrupt(e.to_string()))?)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The endpoint of `gateway` called `name` (case-insensitive).
    pub fn endpoint_by_name(&self, gateway: Uuid, name: &str) -> Result<Option<EndpointView>, ProjectionError> {
        match self.endpoint_names.get(name_key(gateway, name)).map_err(storage)? {
            Some(id) => self.endpoint(Uuid::from_slice(&id).map_err(|e| ProjectionError::Corrupt(e.to_string()))?),
            None => Ok(None),
        }
    }

    /// The gateway a scanner credential belongs to, and the hash of its secret.
    pub fn scanner_credential(&self, id: Uuid) -> Result<Option<(Uuid, String)>, ProjectionError> {
        Ok(self.credentials.get(id.as_bytes()).map_err(storage)?.map(|v| decode::<CredentialRow>(&v)).transpose()?.map(|r| (r.gateway, r.secret_hash)))
    }

    /// Sessions recorded as open on `node`: after a restart of that node they are stale.
    pub fn open_tunnels_on(&self, node: &str) -> Result<Vec<TunnelView>, ProjectionError> {
        let mut out = Vec::new();
        for v in self.tunnels.iter().values() {
            let t: TunnelView = decode(&v.map_err(storage)?)?;
            if t.node == node {
                out.push(t);
            }
        }
        Ok(out)
    }

    fn apply_in(tx: Tx<'_>, rec: &Recorded) -> TxResult<()> {
        let (gateways, endpoints, tunnels, credentials, names, meta) = tx;
        let env = &rec.envelope;
        let id = env.aggregate.id;
        let key = id.as_bytes();
        let t = env.time_ms;
        let update_endpoint = |eid: Uuid, f: &dyn Fn(&mut EndpointView)| -> TxResult<()> {
            if let Some(mut e) = tx_get::<EndpointView>(endpoints, eid.as_bytes())? {
                f(&mut e);
                endpoints.insert(eid.as_bytes(), encode(&e))?;
            }
            Ok(())
        };
        match &env.event {
            Event::GatewayCreated { name, description } => {
                let g = GatewayView {
                    id,
                    name: name.clone(),
                    description: description.clone(),
                    status: GatewayStatus::Initializing,
                    created_ms: t,
                    created_by: env.actor.clone(),
                    activated_by_node: None,
                    scanner_credentials: Vec::new(),
                };
                gateways.insert(key, encode(&g))?;
            }
            Event::GatewayActivated { node } => {
                if let Some(mut g) = tx_get::<GatewayView>(gateways, key)? {
                    g.status = GatewayStatus::Online;
                    g.activated_by_node = Some(node.clone());
                    gateways.insert(key, encode(&g))?;
                }
            }
            Event::ScannerCredentialIssued { credential, label, secret_hash } => {
                if let Some(mut g) = tx_get::<GatewayView>(gateways, key)? {
                    g.scanner_credentials.push(CredentialView { id: *credential, label: label.clone(), issued_ms: t });
                    gateways.insert(key, encode(&g))?;
                    credentials.insert(credential.as_bytes(), encode(&CredentialRow { gateway: id, secret_hash: secret_hash.clone() }))?;
                }
            }
            Event::EndpointAdded { gateway, name, description, platform, key_generation, key_hash } => {
                let e = EndpointView {
                    id,
                    gateway: *gateway,
                    name: name.clone(),
                    description: description.clone(),
                    platform: *platform,
                    key_generation: *key_generation,
                    key_hash: key_hash.clone(),
                    status: EndpointStatus::Pending,
                    machine: None,
                    hostname: None,
                    agent_version: None,
                    agent_platform: None,
                    open_tunnels: Vec::new(),
                    node: None,
                    connected_since_ms: None,
                    last_disconnected_ms: None,
                    last_refusal: None,
                };
                endpoints.insert(key, encode(&e))?;
                names.insert(name_key(*gateway, name), key.as_slice())?;
            }
            Event::EndpointRegistered { machine, hostname, platform, agent_version } => update_endpoint(id, &|e| {
                e.machine = Some(machine.clone());
                e.hostname = Some(hostname.clone());
                e.agent_platform = Some(platform.clone());
                e.agent_version = Some(agent_version.clone());
            })?,
            Event::EndpointRegistrationRefused { hostname, reason, .. } => {
                update_endpoint(id, &|e| e.last_refusal = Some(format!("{reason} (from host {hostname})")))?
            }
            Event::TunnelOpened { endpoint, node, agent_version, .. } => {
                tunnels.insert(key, encode(&TunnelView { id, endpoint: *endpoint, node: node.clone(), opened_ms: t }))?;
                update_endpoint(*endpoint, &|e| {
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
                if let Some(tv) = tx_get::<TunnelView>(tunnels, key)? {
                    tunnels.remove(key)?;
                    update_endpoint(tv.endpoint, &|e| {
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
            Event::StreamOpened { .. } | Event::StreamRefused { .. } | Event::StreamClosed { .. } => {}
        }
        meta.insert(CHECKPOINT, &rec.position.to_be_bytes())?;
        Ok(())
    }
}

impl Projection for DirectoryProjection {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn checkpoint(&self) -> Result<u64, ProjectionError> {
        Ok(self.meta.get(CHECKPOINT).map_err(storage)?.map(|v| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&v[..8]);
            u64::from_be_bytes(a)
        }).unwrap_or(0))
    }

    fn apply(&self, rec: &Recorded) -> Result<(), ProjectionError> {
        (&self.gateways, &self.endpoints, &self.tunnels, &self.credentials, &self.endpoint_names, &self.meta)
            .transaction(|(g, e, t, c, n, m)| Self::apply_in((g, e, t, c, n, m), rec))
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(e) => e,
                sled::transaction::TransactionError::Storage(e) => storage(e),
            })
    }

    fn reset(&self) -> Result<(), ProjectionError> {
        for (_, tree) in self.trees() {
            tree.clear().map_err(storage)?;
        }
        Ok(())
    }

    fn dump(&self) -> Result<Vec<ism_events::projection::Row>, ProjectionError> {
        let mut out = Vec::new();
        for (name, tree) in self.trees() {
            for item in tree.iter() {
                let (k, v) = item.map_err(storage)?;
                let mut key = name.as_bytes().to_vec();
                key.push(0);
                key.extend_from_slice(&k);
                out.push((key, v.to_vec()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_events::{AggregateId, Cause, Envelope};

    fn rec(position: u64, aggregate: AggregateId, sequence: u64, event: Event) -> Recorded {
        Recorded { position, envelope: Envelope::new(aggregate, sequence, position as i64 * 1000, Cause::by("alice"), event) }
    }

    #[test]
    fn endpoint_status_follows_its_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let p = DirectoryProjection::open(dir.path()).unwrap();
        let (gw, ep, t1, t2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let opened = |node: &str| Event::TunnelOpened {
            endpoint: ep,
            gateway: gw,
            node: node.into(),
            machine: "m".into(),
            remote_addr: "r".into(),
            agent_version: "0.1.0".into(),
        };
        let events = vec![
            rec(1, AggregateId::gateway(gw), 1, Event::GatewayCreated { name: "corp".into(), description: String::new() }),
            rec(2, AggregateId::endpoint(ep), 1, Event::EndpointAdded { gateway: gw, name: "DC1".into(), description: String::new(), platform: Platform::Linux, key_generation: 1, key_hash: "h".into() }),
        ];
        for r in &events {
            p.apply(r).unwrap();
        }
        assert_eq!(p.endpoint(ep).unwrap().unwrap().status, EndpointStatus::Pending);
        assert_eq!(p.endpoint_by_name(gw, "dc1").unwrap().unwrap().id, ep, "names match case-insensitively");
        p.apply(&rec(3, AggregateId::tunnel(t1), 1, opened("n1"))).unwrap();
        // Make-before-break: a second session opens before the first closes.
        p.apply(&rec(4, AggregateId::tunnel(t2), 1, opened("n2"))).unwrap();
        p.apply(&rec(5, AggregateId::tunnel(t1), 2, Event::TunnelClosed { reason: "drained".into() })).unwrap();
        let e = p.endpoint(ep).unwrap().unwrap();
        assert_eq!((e.status, e.node.as_deref(), e.open_tunnels.clone()), (EndpointStatus::Ready, Some("n2"), vec![t2]));
        p.apply(&rec(6, AggregateId::tunnel(t2), 2, Event::TunnelClosed { reason: "peer closed".into() })).unwrap();
        let e = p.endpoint(ep).unwrap().unwrap();
        assert_eq!((e.status, e.last_disconnected_ms), (EndpointStatus::Offline, Some(6000)));
        assert_eq!(p.checkpoint().unwrap(), 6);
        assert!(p.open_tunnels_on("n2").unwrap().is_empty());
    }
}
