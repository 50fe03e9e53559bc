//! The directory: gateways (deleted ones too), endpoints with their status and access, which node
//! holds each endpoint, users and their tokens, webhook subscriptions, scans with their findings.
//!
//! It answers every read of the management API and every lookup of admission on the data path
//! (which gateway a scanner credential belongs to, which endpoint a SOCKS username names, whose
//! bearer token this is). It is derived from events only, so a rebuild from the log is
//! byte-identical to the live copy.

mod apply;
mod views;

pub use views::*;

use crate::store::{self, storage};
pub(crate) use apply::activity_advances;
use apply::{name_key, Tx};
use ism_events::projection::Row;
use ism_events::{AggregateEvent, Event, Projection, ProjectionError, Recorded};
use sled::Transactional;
use std::path::Path;
use uuid::Uuid;

pub struct DirectoryProjection {
    gateways: sled::Tree,
    endpoints: sled::Tree,
    tunnels: sled::Tree,
    credentials: sled::Tree,
    endpoint_names: sled::Tree,
    users: sled::Tree,
    tokens: sled::Tree,
    webhooks: sled::Tree,
    scans: sled::Tree,
    /// Endpoint id + queue position -> scan id.
    scans_by_endpoint: sled::Tree,
    /// Queue position -> scan id, of the scans queued or running.
    active_scans: sled::Tree,
    /// Scan id + the finding's number (in the order recorded) -> the finding.
    scan_findings: sled::Tree,
    meta: sled::Tree,
    _db: sled::Db,
}

fn uuid(bytes: &[u8]) -> Result<Uuid, ProjectionError> {
    Uuid::from_slice(bytes).map_err(|e| ProjectionError::Corrupt(e.to_string()))
}

impl DirectoryProjection {
    /// Opens (or creates) the projection's store in `path`.
    pub fn open(path: &Path) -> Result<Self, ProjectionError> {
        let db = ism_events::embedded::open_sled(path).map_err(storage)?;
        let tree = |n: &str| db.open_tree(n).map_err(storage);
        let p = Self {
            gateways: tree("gateways")?,
            endpoints: tree("endpoints")?,
            tunnels: tree("tunnels")?,
            credentials: tree("credentials")?,
            endpoint_names: tree("endpoint_names")?,
            users: tree("users")?,
            tokens: tree("tokens")?,
            webhooks: tree("webhooks")?,
            scans: tree("scans")?,
            scans_by_endpoint: tree("scans_by_endpoint")?,
            active_scans: tree("active_scans")?,
            scan_findings: tree("scan_findings")?,
            meta: tree("meta")?,
            _db: db,
        };
        // Records an older build passed over, this one reads: start over to apply them.
        if store::must_start_over(&p.meta, ism_events::SCHEMA_VERSION)? {
            p.reset()?;
        }
        Ok(p)
    }

    fn trees(&self) -> [(&'static str, &sled::Tree); 13] {
        [
            ("gateways", &self.gateways),
            ("endpoints", &self.endpoints),
            ("tunnels", &self.tunnels),
            ("credentials", &self.credentials),
            ("endpoint_names", &self.endpoint_names),
            ("users", &self.users),
            ("tokens", &self.tokens),
            ("webhooks", &self.webhooks),
            ("scans", &self.scans),
            ("scans_by_endpoint", &self.scans_by_endpoint),
            ("active_scans", &self.active_scans),
            ("scan_findings", &self.scan_findings),
            ("meta", &self.meta),
        ]
    }

    /// Every gateway, deleted ones included, oldest first.
    pub fn gateways(&self) -> Result<Vec<GatewayView>, ProjectionError> {
        let mut out: Vec<GatewayView> = store::all(&self.gateways)?;
        out.sort_by_key(|g| (g.created_ms, g.id));
        Ok(out)
    }

    pub fn gateway(&self, id: Uuid) -> Result<Option<GatewayView>, ProjectionError> {
        store::row(&self.gateways, id.as_bytes())
    }

    /// The endpoint, unless it was deleted.
    pub fn endpoint(&self, id: Uuid) -> Result<Option<EndpointView>, ProjectionError> {
        Ok(self.endpoint_any(id)?.filter(|e| !e.deleted))
    }

    /// The endpoint, deleted or not.
    pub fn endpoint_any(&self, id: Uuid) -> Result<Option<EndpointView>, ProjectionError> {
        store::row(&self.endpoints, id.as_bytes())
    }

    /// Endpoints of one gateway, by name.
    pub fn endpoints_of(&self, gateway: Uuid) -> Result<Vec<EndpointView>, ProjectionError> {
        let mut out = Vec::new();
        for item in self.endpoint_names.scan_prefix(gateway.as_bytes()) {
            let (_, id) = item.map_err(storage)?;
            if let Some(e) = self.endpoint(uuid(&id)?)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Every endpoint of every gateway (not the deleted ones).
    pub fn endpoints(&self) -> Result<Vec<EndpointView>, ProjectionError> {
        Ok(store::all::<EndpointView>(&self.endpoints)?
            .into_iter()
            .filter(|e| !e.deleted)
            .collect())
    }

    /// The endpoint of `gateway` called `name` (case-insensitive).
    pub fn endpoint_by_name(
        &self,
        gateway: Uuid,
        name: &str,
    ) -> Result<Option<EndpointView>, ProjectionError> {
        match self.endpoint_names.get(name_key(gateway, name)).map_err(storage)? {
            Some(id) => self.endpoint(uuid(&id)?),
            None => Ok(None),
        }
    }

    pub fn scanner_credential(
        &self,
        id: Uuid,
    ) -> Result<Option<ScannerCredentialRow>, ProjectionError> {
        store::row(&self.credentials, id.as_bytes())
    }

    /// Sessions recorded as open on `node`: after a restart of that node they are stale.
    pub fn open_tunnels_on(&self, node: &str) -> Result<Vec<TunnelView>, ProjectionError> {
        Ok(store::all::<TunnelView>(&self.tunnels)?
            .into_iter()
            .filter(|t| t.node == node)
            .collect())
    }

    pub fn users(&self) -> Result<Vec<UserView>, ProjectionError> {
        let mut out: Vec<UserView> = store::all(&self.users)?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn user(&self, id: Uuid) -> Result<Option<UserView>, ProjectionError> {
        store::row(&self.users, id.as_bytes())
    }

    pub fn api_token(&self, id: Uuid) -> Result<Option<ApiTokenRow>, ProjectionError> {
        store::row(&self.tokens, id.as_bytes())
    }

    pub fn scan(&self, id: Uuid) -> Result<Option<ScanView>, ProjectionError> {
        store::row(&self.scans, id.as_bytes())
    }

    /// Every scan, in the order they were queued.
    pub fn scans(&self) -> Result<Vec<ScanView>, ProjectionError> {
        let mut out: Vec<ScanView> = store::all(&self.scans)?;
        out.sort_by_key(|s| s.queued_position);
        Ok(out)
    }

    /// The findings of scan `id`, in the order recorded.
    pub fn scan_findings(&self, id: Uuid) -> Result<Vec<ism_events::ScanFinding>, ProjectionError> {
        self.scan_findings
            .scan_prefix(id.as_bytes())
            .values()
            .map(|v| store::decode(&v.map_err(storage)?))
            .collect()
    }

    /// The scans queued or running, in the order they were queued (the queues' order).
    pub fn active_scans(&self) -> Result<Vec<ScanView>, ProjectionError> {
        self.scans_listed(self.active_scans.iter())
    }

    /// The scans of one endpoint queued or running, in the order they were queued (its queue).
    pub fn active_scans_of(&self, endpoint: Uuid) -> Result<Vec<ScanView>, ProjectionError> {
        Ok(self.active_scans()?.into_iter().filter(|s| s.endpoint == endpoint).collect())
    }

    /// The scans of one endpoint, in the order they were queued.
    pub fn scans_of(&self, endpoint: Uuid) -> Result<Vec<ScanView>, ProjectionError> {
        self.scans_listed(self.scans_by_endpoint.scan_prefix(endpoint.as_bytes()))
    }

    fn scans_listed(
        &self,
        index: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    ) -> Result<Vec<ScanView>, ProjectionError> {
        let mut out = Vec::new();
        for item in index {
            let (_, id) = item.map_err(storage)?;
            out.extend(self.scan(uuid(&id)?)?);
        }
        Ok(out)
    }

    /// Every webhook subscription, oldest first.
    pub fn webhooks(&self) -> Result<Vec<WebhookView>, ProjectionError> {
        let mut out: Vec<WebhookView> = store::all(&self.webhooks)?;
        out.sort_by_key(|w| (w.created_ms, w.id));
        Ok(out)
    }
}

impl DirectoryProjection {
    /// Events that leave every row as it is: the stream facts, but for a stream that moves its
    /// gateway's last activity (see [`apply::activity_advances`]). Decided from the rows as
    /// they stand, which only this projection writes.
    fn changes_nothing(&self, rec: &Recorded) -> Result<bool, ProjectionError> {
        Ok(match &rec.envelope.event {
            Event::StreamRefused { .. }
            | Event::StreamRefusalsRepeated(_)
            | Event::StreamClosed { .. } => true,
            Event::StreamOpened { .. } => {
                match store::row::<TunnelView>(&self.tunnels, rec.envelope.aggregate.id.as_bytes())?
                {
                    Some(tunnel) => match self.gateway(tunnel.gateway)? {
                        Some(g) => {
                            !apply::activity_advances(g.last_activity_ms, rec.envelope.time_ms)
                        }
                        None => true,
                    },
                    None => true,
                }
            }
            _ => false,
        })
    }
}

impl Projection for DirectoryProjection {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn checkpoint(&self) -> Result<u64, ProjectionError> {
        store::checkpoint(&self.meta)
    }

    fn apply(&self, rec: &Recorded) -> Result<(), ProjectionError> {
        if self.changes_nothing(rec)? {
            return store::advance(&self.meta, rec.position);
        }
        let event = AggregateEvent::from(rec.envelope.event.clone());
        (
            &self.gateways,
            &self.endpoints,
            &self.tunnels,
            &self.credentials,
            &self.endpoint_names,
            &self.users,
            &self.tokens,
            &self.webhooks,
            &self.scans,
            &self.scans_by_endpoint,
            &self.active_scans,
            &self.scan_findings,
            &self.meta,
        )
            .transaction(
                |(
                    gateways,
                    endpoints,
                    tunnels,
                    credentials,
                    endpoint_names,
                    users,
                    tokens,
                    webhooks,
                    scans,
                    scans_by_endpoint,
                    active_scans,
                    scan_findings,
                    meta,
                )| {
                    apply::apply(
                        &Tx {
                            gateways,
                            endpoints,
                            tunnels,
                            credentials,
                            endpoint_names,
                            users,
                            tokens,
                            webhooks,
                            scans,
                            scans_by_endpoint,
                            active_scans,
                            scan_findings,
                            meta,
                        },
                        rec,
                        &event,
                    )
                },
            )
            .map_err(store::transaction_failed)
    }

    fn reset(&self) -> Result<(), ProjectionError> {
        store::clear(&self.trees())
    }

    fn dump(&self) -> Result<Vec<Row>, ProjectionError> {
        store::dump(&self.trees())
    }

    fn passed_over_newer(&self, schema: u16) -> Result<(), ProjectionError> {
        store::note_passed_over(&self.meta, schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_events::{AggregateId, Cause, CredentialKind, Envelope, Event, Platform};

    struct Feed {
        p: DirectoryProjection,
        position: u64,
        _dir: tempfile::TempDir,
    }

    impl Feed {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            Self { p: DirectoryProjection::open(dir.path()).unwrap(), position: 0, _dir: dir }
        }
        fn push(&mut self, aggregate: AggregateId, sequence: u64, event: Event) {
            self.position += 1;
            let env = Envelope::new(
                aggregate,
                sequence,
                self.position as i64 * 1000,
                Cause::by(ism_events::Principal::user("alice")),
                event,
            );
            self.p.apply(&Recorded { position: self.position, envelope: env }).unwrap();
        }
    }

    fn added(gateway: Uuid, name: &str) -> Event {
        Event::EndpointAdded {
            gateway,
            name: name.into(),
            description: String::new(),
            platform: Platform::Linux,
            key_generation: 1,
            key_hash: "h".into(),
        }
    }

    #[test]
    fn endpoint_status_follows_its_sessions() {
        let mut f = Feed::new();
        let (gw, ep, t1, t2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let opened = |node: &str| Event::TunnelOpened {
            endpoint: ep,
            gateway: gw,
            node: node.into(),
            machine: "m".into(),
            remote_addr: "r".into(),
            agent_version: "0.1.0".into(),
        };
        f.push(
            AggregateId::gateway(gw),
            1,
            Event::GatewayCreated { name: "corp".into(), description: String::new() },
        );
        f.push(AggregateId::endpoint(ep), 1, added(gw, "DC1"));
        assert_eq!(f.p.endpoint(ep).unwrap().unwrap().status, EndpointStatus::Pending);
        assert_eq!(
            f.p.endpoint_by_name(gw, "dc1").unwrap().unwrap().id,
            ep,
            "names match case-insensitively"
        );
        f.push(AggregateId::tunnel(t1), 1, opened("n1"));
        // Make-before-break: a second session opens before the first closes.
        f.push(AggregateId::tunnel(t2), 1, opened("n2"));
        f.push(AggregateId::tunnel(t1), 2, Event::TunnelClosed { reason: "drained".into() });
        let e = f.p.endpoint(ep).unwrap().unwrap();
        assert_eq!(
            (e.status, e.node.as_deref(), e.open_tunnels.clone()),
            (EndpointStatus::Ready, Some("n2"), vec![t2])
        );
        f.push(AggregateId::tunnel(t2), 2, Event::TunnelClosed { reason: "peer closed".into() });
        let e = f.p.endpoint(ep).unwrap().unwrap();
        assert_eq!((e.status, e.last_disconnected_ms), (EndpointStatus::Offline, Some(6000)));
        assert_eq!(e.version, 1, "tunnel events do not change the endpoint aggregate's version");
        assert_eq!(f.p.checkpoint().unwrap(), 6);
        assert!(f.p.open_tunnels_on("n2").unwrap().is_empty());
    }

    #[test]
    fn renames_move_the_name_index_and_deletes_remove_it() {
        let mut f = Feed::new();
        let (gw, ep) = (Uuid::new_v4(), Uuid::new_v4());
        f.push(
            AggregateId::gateway(gw),
            1,
            Event::GatewayCreated { name: "corp".into(), description: String::new() },
        );
        f.push(AggregateId::endpoint(ep), 1, added(gw, "dc1"));
        f.push(
            AggregateId::endpoint(ep),
            2,
            Event::EndpointEdited { name: "dc-east".into(), description: "moved".into() },
        );
        assert!(f.p.endpoint_by_name(gw, "dc1").unwrap().is_none());
        let e = f.p.endpoint_by_name(gw, "DC-EAST").unwrap().unwrap();
        assert_eq!((e.description.as_str(), e.version), ("moved", 2));
        f.push(AggregateId::endpoint(ep), 3, Event::EndpointDeleted);
        assert!(f.p.endpoint(ep).unwrap().is_none());
        assert!(f.p.endpoint_any(ep).unwrap().unwrap().deleted);
        assert!(f.p.endpoints_of(gw).unwrap().is_empty());
        assert!(f.p.endpoints().unwrap().is_empty());
    }

    #[test]
    fn deleting_a_gateway_keeps_its_name_and_revokes_its_credentials() {
        let mut f = Feed::new();
        let (gw, cred) = (Uuid::new_v4(), Uuid::new_v4());
        f.push(
            AggregateId::gateway(gw),
            1,
            Event::GatewayCreated { name: "old".into(), description: String::new() },
        );
        f.push(
            AggregateId::gateway(gw),
            2,
            Event::ScannerCredentialIssued {
                credential: cred,
                label: "zap".into(),
                secret_hash: "h".into(),
                kind: CredentialKind::Scan,
            },
        );
        f.push(
            AggregateId::gateway(gw),
            3,
            Event::GatewayDeleted { reason: "deleted by alice".into() },
        );
        let g = f.p.gateway(gw).unwrap().unwrap();
        assert_eq!(
            (g.status, g.name.as_str(), g.deleted_reason.as_deref(), g.version),
            (GatewayStatus::Deleted, "old", Some("deleted by alice"), 3)
        );
        assert!(f.p.scanner_credential(cred).unwrap().unwrap().revoked);
    }

    /// A node that passed over records of a newer build keeps its rows while it cannot read
    /// them, and starts over once opened by a build that can, so the upgraded node applies them.
    #[test]
    fn records_passed_over_are_applied_once_a_build_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let newer = dir.path().join("newer");
        let p = DirectoryProjection::open(&newer).unwrap();
        store::advance(&p.meta, 7).unwrap();
        p.passed_over_newer(ism_events::SCHEMA_VERSION + 1).unwrap();
        drop(p);
        let p = DirectoryProjection::open(&newer).unwrap();
        assert_eq!(p.checkpoint().unwrap(), 7, "a schema this build does not read: kept");

        // As a build of that schema finds it (here: a schema this build reads).
        let readable = dir.path().join("readable");
        let p = DirectoryProjection::open(&readable).unwrap();
        store::advance(&p.meta, 7).unwrap();
        p.passed_over_newer(ism_events::SCHEMA_VERSION).unwrap();
        drop(p);
        let p = DirectoryProjection::open(&readable).unwrap();
        assert_eq!(p.checkpoint().unwrap(), 0, "started over, to apply what was passed over");
        drop(p);
        let p = DirectoryProjection::open(&readable).unwrap();
        assert_eq!(p.checkpoint().unwrap(), 0, "once: the mark went with the reset");
        store::advance(&p.meta, 3).unwrap();
        drop(p);
        assert_eq!(DirectoryProjection::open(&readable).unwrap().checkpoint().unwrap(), 3);
    }
}
