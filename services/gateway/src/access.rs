//! Who may use an endpoint right now, and making it so while streams run.
//!
//! [`stream_allowed`] is the one rule, used both when a scanner opens a stream and afterwards:
//! the endpoint must exist, the credential must not be revoked, and the endpoint's *scan access*
//! (for scan credentials) or *support-engineer access* (for support credentials) must be on.
//!
//! Streams in progress are registered in [`ActiveStreams`]. The [`enforce`] task hears every
//! event after the directory applied it and re-checks the streams and sessions of the endpoint it
//! concerns, on every node (each node runs its own), so withdrawing access, rotating a key or
//! deleting an endpoint ends what is running within the time it takes the event to arrive.
//! Admission registers a stream *before* its final check, so a stream admitted just as access is
//! withdrawn is caught by one or the other.

use crate::state::NodeState;
use ism_actors::endpoint::EndpointCommand;
use ism_events::{AggregateKind, Cause, CredentialKind, Event, Recorded};
use ism_projectors::directory::ScannerCredentialRow;
use ism_projectors::EndpointView;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a stream may not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("endpoint {0} no longer exists")]
    EndpointGone(Uuid),
    #[error("the scanner credential was revoked")]
    CredentialRevoked,
    #[error("scan access is disabled for endpoint {0:?}")]
    ScanAccessOff(String),
    #[error("support-engineer access is not granted for endpoint {0:?}")]
    SupportAccessOff(String),
}

/// The rule: may a stream with this credential run through this endpoint at `now_ms`?
pub fn stream_allowed(
    endpoint: Option<&EndpointView>,
    credential: &ScannerCredentialRow,
    endpoint_id: Uuid,
    now_ms: i64,
) -> Result<(), Refusal> {
    let e = endpoint.ok_or(Refusal::EndpointGone(endpoint_id))?;
    if credential.revoked {
        return Err(Refusal::CredentialRevoked);
    }
    match credential.kind {
        CredentialKind::Scan if !e.scan_access => Err(Refusal::ScanAccessOff(e.name.clone())),
        CredentialKind::Support if !e.support_access.is_active(now_ms) => {
            Err(Refusal::SupportAccessOff(e.name.clone()))
        }
        _ => Ok(()),
    }
}

/// One stream in progress, as far as access is concerned.
struct Running {
    credential: Uuid,
    stop: CancellationToken,
}

/// The streams running through this node, by endpoint.
#[derive(Default)]
pub struct ActiveStreams {
    next: AtomicU64,
    by_endpoint: Mutex<HashMap<Uuid, HashMap<u64, Running>>>,
}

/// Deregisters its stream when dropped.
pub struct StreamGuard<'a> {
    streams: &'a ActiveStreams,
    endpoint: Uuid,
    id: u64,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.streams.lock();
        if let Some(m) = map.get_mut(&self.endpoint) {
            m.remove(&self.id);
            if m.is_empty() {
                map.remove(&self.endpoint);
            }
        }
    }
}

impl ActiveStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, HashMap<u64, Running>>> {
        self.by_endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a stream; `stop` is cancelled if access is withdrawn.
    pub fn register(
        &self,
        endpoint: Uuid,
        credential: Uuid,
        stop: CancellationToken,
    ) -> StreamGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(endpoint).or_default().insert(id, Running { credential, stop });
        StreamGuard { streams: self, endpoint, id }
    }

    /// Stops the endpoint's streams whose credential `allowed` refuses; returns how many.
    fn stop_refused(&self, endpoint: Uuid, allowed: impl Fn(Uuid) -> bool) -> usize {
        let map = self.lock();
        let Some(streams) = map.get(&endpoint) else { return 0 };
        let mut stopped = 0;
        for s in streams.values().filter(|s| !allowed(s.credential)) {
            s.stop.cancel();
            stopped += 1;
        }
        stopped
    }

    /// Endpoints with streams on this node.
    fn endpoints(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    /// Streams running through `endpoint` on this node.
    pub fn count(&self, endpoint: Uuid) -> usize {
        self.lock().get(&endpoint).map_or(0, HashMap::len)
    }

    /// Whether no stream runs through this node (a stopping node waits for that).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Re-checks everything running for `endpoint` on this node against the directory.
pub fn reconcile_endpoint(state: &NodeState, endpoint: Uuid) {
    let view = match state.directory.endpoint(endpoint) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%endpoint, error = %e, "cannot read the directory to enforce access");
            return;
        }
    };
    // The session: gone with the endpoint, and with its key when the key was rotated.
    if let Some(live) = state.sessions.get(endpoint) {
        let reason = match &view {
            None => Some("endpoint deleted"),
            Some(v) if v.key_generation != live.key_generation => Some("endpoint key rotated"),
            _ => None,
        };
        if let Some(reason) = reason {
            tracing::info!(%endpoint, reason, "closing the endpoint's session");
            live.session.close(reason);
        }
    }
    let now = state.clock.now_ms();
    let stopped = state.streams.stop_refused(endpoint, |credential| {
        let row = state.directory.scanner_credential(credential).ok().flatten();
        row.is_some_and(|c| stream_allowed(view.as_ref(), &c, endpoint, now).is_ok())
    });
    if stopped > 0 {
        tracing::info!(%endpoint, stopped, "stopped streams whose access was withdrawn");
    }
}

/// The endpoint an event concerns, for enforcement.
fn endpoint_of(rec: &Recorded, state: &NodeState) -> Vec<Uuid> {
    match (rec.envelope.aggregate.kind, &rec.envelope.event) {
        (
            AggregateKind::Endpoint,
            Event::ScanAccessChanged { .. }
            | Event::SupportAccessRevoked
            | Event::SupportAccessExpired
            | Event::EndpointKeyRotated { .. }
            | Event::EndpointDeleted,
        ) => {
            vec![rec.envelope.aggregate.id]
        }
        // A revoked credential may be in use through any endpoint of the gateway.
        (AggregateKind::Gateway, Event::ScannerCredentialRevoked { .. }) => {
            state.streams.endpoints()
        }
        _ => Vec::new(),
    }
}

/// Follows the applied events and enforces access on this node. If it falls behind (the event
/// feed overflowed), it re-checks every endpoint with something running.
pub async fn enforce(state: Arc<NodeState>, mut applied: broadcast::Receiver<Recorded>) {
    loop {
        match applied.recv().await {
            Ok(rec) => {
                for endpoint in endpoint_of(&rec, &state) {
                    reconcile_endpoint(&state, endpoint);
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "access enforcement fell behind the event feed; re-checking everything"
                );
                let mut endpoints = state.streams.endpoints();
                endpoints.extend(state.sessions.endpoints());
                for endpoint in endpoints {
                    reconcile_endpoint(&state, endpoint);
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Every `every`, records the expiry of support-engineer access windows that ran out (the clock
/// is the node's, so tests can move it). Any node may do it; the endpoint actor makes it happen
/// once.
pub async fn expire_support_windows(state: Arc<NodeState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = state.clock.now_ms();
        let due = match state.directory.endpoints() {
            Ok(all) => all.into_iter().filter(|e| e.support_access.expired(now)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the directory to expire support access");
                continue;
            }
        };
        for e in due {
            let cause = Cause::by(state.node_id.clone());
            if let Err(err) =
                state.endpoints.execute(e.id, EndpointCommand::ExpireSupportAccess, cause).await
            {
                tracing::warn!(endpoint = %e.id, error = %err, "could not record the end of a support access window");
            }
        }
    }
}
