//! The notice projection: what the notification and retention rules need to know, and the
//! notifications recorded so far.
//!
//! Rows are facts from events ([`rules`]); which notices are due is computed from them and the
//! time when asked ([`NoticeProjection::due`]). A notification's own events (claimed, sent,
//! suppressed) mark it finished in its subject's row, so a rebuild from the log knows everything
//! that was sent, and sends nothing again.

pub mod rules;

pub use rules::{Action, Notice, Settings};

use crate::store::{self, decode, encode, get, storage, update, TxResult, CHECKPOINT};
use ism_events::projection::Row;
use ism_events::{Event, NoticeKind, Projection, ProjectionError, Recorded};
use rules::{EndpointWatch, GatewayWatch};
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionalTree;
use sled::Transactional;
use std::path::Path;
use uuid::Uuid;

/// One notification as `ism notifications list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationView {
    pub id: Uuid,
    pub kind: NoticeKind,
    /// The endpoint or gateway it is about.
    pub subject: Uuid,
    pub first_ms: i64,
    pub last_ms: i64,
    /// The node that claimed it last.
    pub node: Option<String>,
    pub channels: Vec<String>,
    pub sent: Vec<SentView>,
    pub failures: u32,
    pub last_error: Option<String>,
    /// Channels given up on (not delivered).
    pub abandoned: Vec<String>,
    pub suppressed: Option<String>,
    pub paused_until_ms: Option<i64>,
    pub resumed: bool,
}

impl NotificationView {
    fn new(id: Uuid, kind: NoticeKind, subject: Uuid, t: i64) -> Self {
        Self {
            id,
            kind,
            subject,
            first_ms: t,
            last_ms: t,
            node: None,
            channels: Vec::new(),
            sent: Vec::new(),
            failures: 0,
            last_error: None,
            abandoned: Vec::new(),
            suppressed: None,
            paused_until_ms: None,
            resumed: false,
        }
    }

    /// Nothing is left to do about it.
    pub fn finished(&self) -> bool {
        self.suppressed.is_some()
            || self.resumed
            || (self.node.is_some()
                && self.channels.iter().all(|c| {
                    self.abandoned.contains(c) || self.sent.iter().any(|s| &s.channel == c)
                }))
    }

    /// One word for its state: `sent`, `suppressed`, `resumed`, `failed` (given up on a
    /// channel), `failing` (being retried), `sending`.
    pub fn state(&self) -> &'static str {
        match () {
            _ if self.resumed => "resumed",
            _ if self.suppressed.is_some() => "suppressed",
            _ if self.finished() && !self.abandoned.is_empty() => "failed",
            _ if self.finished() => "sent",
            _ if self.failures > 0 => "failing",
            _ => "sending",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentView {
    pub channel: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub time_ms: i64,
}

pub struct NoticeProjection {
    endpoints: sled::Tree,
    gateways: sled::Tree,
    /// Session -> (endpoint, gateway).
    tunnels: sled::Tree,
    /// Scan still to end -> its gateway (whose activity its start and end are).
    scans: sled::Tree,
    notifications: sled::Tree,
    meta: sled::Tree,
    settings: Settings,
    _db: sled::Db,
}

/// The settings the rows were made under.
const SETTINGS: &[u8] = b"settings";

struct Tx<'a> {
    endpoints: &'a TransactionalTree,
    gateways: &'a TransactionalTree,
    tunnels: &'a TransactionalTree,
    scans: &'a TransactionalTree,
    notifications: &'a TransactionalTree,
}

impl NoticeProjection {
    /// Opens (or creates) the store in `path`. `settings` decide when an endpoint is unstable,
    /// which the rows record, so a store is rebuilt when they change.
    pub fn open(path: &Path, settings: Settings) -> Result<Self, ProjectionError> {
        let db = ism_events::embedded::open_sled(path).map_err(storage)?;
        let tree = |n: &str| db.open_tree(n).map_err(storage);
        let p = Self {
            endpoints: tree("endpoints")?,
            gateways: tree("gateways")?,
            tunnels: tree("tunnels")?,
            scans: tree("scans")?,
            notifications: tree("notifications")?,
            meta: tree("meta")?,
            settings,
            _db: db,
        };
        // Rows made under other instability settings would differ from a rebuild, and records an
        // older build passed over this one reads: start over.
        let settings_changed =
            p.meta.get(SETTINGS).map_err(storage)?.is_some_and(|s| *s != p.settings_key()[..]);
        if settings_changed || store::must_start_over(&p.meta, ism_events::SCHEMA_VERSION)? {
            p.reset()?;
        }
        p.meta.insert(SETTINGS, p.settings_key()).map_err(storage)?;
        Ok(p)
    }

    /// The settings the rows depend on, as stored beside them (a reset keeps them).
    fn settings_key(&self) -> Vec<u8> {
        let s = &self.settings;
        encode(&(s.unstable_count, s.unstable_window_ms, s.pause_ms))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn trees(&self) -> [(&'static str, &sled::Tree); 6] {
        [
            ("endpoints", &self.endpoints),
            ("gateways", &self.gateways),
            ("tunnels", &self.tunnels),
            ("scans", &self.scans),
            ("notifications", &self.notifications),
            ("meta", &self.meta),
        ]
    }

    /// Every notice due at `now` and not yet finished, oldest first.
    pub fn due(&self, now: i64) -> Result<Vec<Notice>, ProjectionError> {
        let mut out = Vec::new();
        let gateways: std::collections::HashMap<Uuid, GatewayWatch> =
            store::all::<GatewayWatch>(&self.gateways)?
                .into_iter()
                .map(|g| (g.gateway, g))
                .collect();
        for e in store::all::<EndpointWatch>(&self.endpoints)? {
            let down = gateways.get(&e.gateway).map(|g| &g.outages[..]).unwrap_or_default();
            out.extend(e.due(&self.settings, now, down));
        }
        for g in gateways.values() {
            out.extend(g.due(&self.settings, now));
        }
        out.sort_by_key(|n| (n.due_ms, n.id));
        Ok(out)
    }

    /// When the gateway will be deleted for inactivity if nothing happens before.
    pub fn deletion_due(&self, gateway: Uuid) -> Result<Option<i64>, ProjectionError> {
        Ok(self
            .gateways
            .get(gateway.as_bytes())
            .map_err(storage)?
            .map(|v| decode::<GatewayWatch>(&v))
            .transpose()?
            .filter(|g| g.deleted_ms.is_none())
            .map(|g| g.deadline_ms(&self.settings)))
    }

    /// Notifications, newest first, at most `limit`.
    pub fn notifications(&self, limit: usize) -> Result<Vec<NotificationView>, ProjectionError> {
        let mut all: Vec<NotificationView> = store::all(&self.notifications)?;
        all.sort_by_key(|n| std::cmp::Reverse((n.first_ms, n.id)));
        all.truncate(limit);
        Ok(all)
    }

    /// Events that change no row, decided without a transaction: most stream facts.
    fn changes_nothing(&self, rec: &Recorded) -> Result<bool, ProjectionError> {
        Ok(match &rec.envelope.event {
            Event::StreamOpened { .. } => {
                let Some(t) =
                    self.tunnels.get(rec.envelope.aggregate.id.as_bytes()).map_err(storage)?
                else {
                    return Ok(true);
                };
                let (_, gateway): (Uuid, Uuid) = decode(&t)?;
                match self.gateways.get(gateway.as_bytes()).map_err(storage)? {
                    Some(g) => !decode::<GatewayWatch>(&g)?.moved_by(rec.envelope.time_ms),
                    None => true,
                }
            }
            Event::GatewayCreated { .. }
            | Event::GatewayDeleted { .. }
            | Event::GatewayWentOffline { .. }
            | Event::GatewayCameOnline { .. }
            | Event::EndpointAdded { .. }
            | Event::EndpointDeleted
            | Event::TunnelOpened { .. }
            | Event::TunnelClosed { .. }
            | Event::ScanQueued { .. }
            | Event::ScanStarted { .. }
            | Event::ScanFinished { .. }
            | Event::ScanFailed { .. }
            | Event::ScanCancelled { .. }
            | Event::NotificationClaimed { .. }
            | Event::NotificationSent { .. }
            | Event::NotificationFailed { .. }
            | Event::NotificationSuppressed { .. }
            | Event::NotificationsPaused { .. }
            | Event::NotificationsResumed { .. } => false,
            _ => true,
        })
    }

    fn apply_in(&self, tx: &Tx<'_>, rec: &Recorded) -> TxResult<()> {
        let env = &rec.envelope;
        let (id, t, s) = (env.aggregate.id, env.time_ms, &self.settings);
        let key = id.as_bytes();
        match &env.event {
            Event::GatewayCreated { .. } => {
                tx.gateways.insert(key, encode(&GatewayWatch::new(id, t)))?;
            }
            Event::GatewayDeleted { .. } => {
                update(tx.gateways, key, |g: &mut GatewayWatch| g.deleted_ms = Some(t))?
            }
            Event::GatewayWentOffline { since_ms, .. } => {
                update(tx.gateways, key, |g: &mut GatewayWatch| g.went_offline(*since_ms, env.id))?
            }
            Event::GatewayCameOnline { .. } => {
                update(tx.gateways, key, |g: &mut GatewayWatch| g.came_online(t, env.id))?
            }
            Event::EndpointAdded { gateway, .. } => {
                tx.endpoints.insert(key, encode(&EndpointWatch::new(id, *gateway)))?;
            }
            Event::EndpointDeleted => {
                update(tx.endpoints, key, |e: &mut EndpointWatch| e.deleted = true)?
            }
            Event::TunnelOpened { endpoint, gateway, .. } => {
                tx.tunnels.insert(key, encode(&(*endpoint, *gateway)))?;
                update(tx.endpoints, endpoint.as_bytes(), |e: &mut EndpointWatch| {
                    e.opened(id, t, env.id)
                })?;
            }
            Event::TunnelClosed { .. } => {
                if let Some((endpoint, gateway)) = get::<(Uuid, Uuid)>(tx.tunnels, key)? {
                    tx.tunnels.remove(key)?;
                    let excused = get::<GatewayWatch>(tx.gateways, gateway.as_bytes())?
                        .is_some_and(|g| g.is_offline());
                    update(tx.endpoints, endpoint.as_bytes(), |e: &mut EndpointWatch| {
                        e.closed(id, t, env.id, excused, s)
                    })?;
                }
            }
            Event::StreamOpened { .. } => {
                if let Some((_, gateway)) = get::<(Uuid, Uuid)>(tx.tunnels, key)? {
                    update(tx.gateways, gateway.as_bytes(), |g: &mut GatewayWatch| g.active(t))?;
                }
            }
            // A scan's start and end are its gateway's activity, as its streams are.
            Event::ScanQueued { gateway, .. } => {
                tx.scans.insert(key, encode(gateway))?;
            }
            Event::ScanStarted { .. } | Event::ScanFinished { .. } => {
                if let Some(gateway) = get::<Uuid>(tx.scans, key)? {
                    update(tx.gateways, gateway.as_bytes(), |g: &mut GatewayWatch| g.active(t))?;
                }
                if matches!(env.event, Event::ScanFinished { .. }) {
                    tx.scans.remove(key)?;
                }
            }
            Event::ScanFailed { .. } | Event::ScanCancelled { .. } => {
                tx.scans.remove(key)?;
            }
            Event::NotificationClaimed { kind, subject, node, channels, .. } => {
                let mut n = get::<NotificationView>(tx.notifications, key)?
                    .unwrap_or_else(|| NotificationView::new(id, *kind, *subject, t));
                (n.node, n.channels, n.last_ms) = (Some(node.clone()), channels.clone(), t);
                self.store(tx, n)?;
            }
            Event::NotificationSent { channel, recipients, subject, .. } => {
                self.change(tx, id, t, |n| {
                    n.sent.push(SentView {
                        channel: channel.clone(),
                        recipients: recipients.clone(),
                        subject: subject.clone(),
                        time_ms: t,
                    })
                })?
            }
            Event::NotificationFailed { channel, error, gave_up, .. } => {
                self.change(tx, id, t, |n| {
                    n.failures += 1;
                    n.last_error = Some(error.clone());
                    if *gave_up {
                        n.abandoned.push(channel.clone());
                    }
                })?
            }
            Event::NotificationSuppressed { kind, why, subject } => {
                // A suppression may be the notification's first event.
                let mut n = get::<NotificationView>(tx.notifications, key)?
                    .unwrap_or_else(|| NotificationView::new(id, *kind, *subject, t));
                (n.suppressed, n.last_ms) = (Some(why.clone()), t);
                self.store(tx, n)?;
            }
            Event::NotificationsPaused { until_ms, .. } => {
                self.change(tx, id, t, |n| n.paused_until_ms = Some(*until_ms))?
            }
            Event::NotificationsResumed { endpoint } => {
                let mut n = NotificationView::new(id, NoticeKind::EndpointUnstable, *endpoint, t);
                n.resumed = true;
                self.store(tx, n)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn change(
        &self,
        tx: &Tx<'_>,
        id: Uuid,
        t: i64,
        f: impl FnOnce(&mut NotificationView),
    ) -> TxResult<()> {
        if let Some(mut n) = get::<NotificationView>(tx.notifications, id.as_bytes())? {
            f(&mut n);
            n.last_ms = t;
            self.store(tx, n)?;
        }
        Ok(())
    }

    /// Stores a notification's view and, once it is finished, marks it so in its subject's row.
    fn store(&self, tx: &Tx<'_>, n: NotificationView) -> TxResult<()> {
        if n.finished() {
            let subject = n.subject.as_bytes();
            update(tx.endpoints, subject, |e: &mut EndpointWatch| e.handled(n.id))?;
            update(tx.gateways, subject, |g: &mut GatewayWatch| g.handled(n.id))?;
        }
        tx.notifications.insert(n.id.as_bytes(), encode(&n))?;
        Ok(())
    }
}

impl Projection for NoticeProjection {
    fn name(&self) -> &'static str {
        "notices"
    }

    fn checkpoint(&self) -> Result<u64, ProjectionError> {
        store::checkpoint(&self.meta)
    }

    fn apply(&self, rec: &Recorded) -> Result<(), ProjectionError> {
        if self.changes_nothing(rec)? {
            return store::advance(&self.meta, rec.position);
        }
        let position = rec.position.to_be_bytes();
        let trees = (
            &self.endpoints,
            &self.gateways,
            &self.tunnels,
            &self.scans,
            &self.notifications,
            &self.meta,
        );
        trees
            .transaction(|(endpoints, gateways, tunnels, scans, notifications, meta)| {
                self.apply_in(&Tx { endpoints, gateways, tunnels, scans, notifications }, rec)?;
                meta.insert(CHECKPOINT, &position)?;
                Ok(())
            })
            .map_err(store::transaction_failed)
    }

    fn reset(&self) -> Result<(), ProjectionError> {
        store::clear(&self.trees())?;
        self.meta.insert(SETTINGS, self.settings_key()).map(|_| ()).map_err(storage)
    }

    fn dump(&self) -> Result<Vec<Row>, ProjectionError> {
        store::dump(&self.trees())
    }

    fn passed_over_newer(&self, schema: u16) -> Result<(), ProjectionError> {
        store::note_passed_over(&self.meta, schema)
    }
}
