//! Making access hold while streams run: every node follows the events its directory applied and,
//! for an event about an endpoint's access, key, machine binding or existence, re-checks that
//! endpoint's running streams and session against the rule ([`crate::access::stream_allowed`]).
//! Withdrawing access, revoking a credential, rotating a key, releasing the machine binding or
//! deleting an endpoint thus ends what is running on every node within the time it takes the
//! event to arrive.
//!
//! Admission registers a stream *before* its final check (see [`crate::scanner_stream`]), so a
//! stream admitted just as access is withdrawn is caught by one or the other.

use crate::access::{current_credential, stream_allowed};
use crate::running_streams::RunningStreams;
use crate::sessions::Sessions;
use ism_actors::endpoint::{Endpoint, EndpointCommand};
use ism_actors::NodeActors;
use ism_events::{AggregateKind, Cause, Clock, Event, Principal, Recorded};
use ism_projectors::DirectoryProjection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use uuid::Uuid;

/// What enforcement reads and acts on.
#[derive(Clone)]
pub struct Enforcement {
    pub directory: Arc<DirectoryProjection>,
    pub sessions: Arc<Sessions>,
    pub streams: Arc<RunningStreams>,
    pub clock: Arc<dyn Clock>,
}

impl Enforcement {
    /// Re-checks everything running for `endpoint` on this node against the directory.
    pub fn reconcile_endpoint(&self, endpoint: Uuid) {
        let view = match self.directory.endpoint(endpoint) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, "cannot read the directory to enforce access");
                return;
            }
        };
        // The session: gone with the endpoint, with its key when the key was rotated, and with
        // the binding of its machine when that was released.
        if let Some(live) = self.sessions.get(endpoint) {
            let reason = match &view {
                None => Some("endpoint deleted"),
                Some(v) if v.key_generation != live.key_generation => Some("endpoint key rotated"),
                Some(v) if v.machine.as_deref() != Some(live.machine.as_str()) => {
                    Some("endpoint machine binding released")
                }
                Some(_) => None,
            };
            if let Some(reason) = reason {
                tracing::info!(%endpoint, reason, "closing the endpoint's session");
                live.session.close(reason);
            }
        }
        let now = self.clock.now_ms();
        let stopped = self.streams.stop_refused(endpoint, |credential| {
            current_credential(&self.directory, credential)
                .is_some_and(|c| stream_allowed(view.as_ref(), &c, endpoint, now).is_ok())
        });
        if stopped > 0 {
            tracing::info!(%endpoint, stopped, "stopped streams whose access was withdrawn");
        }
    }

    /// The endpoints an applied event may withdraw access from.
    fn concerned(&self, rec: &Recorded) -> Vec<Uuid> {
        match (rec.envelope.aggregate.kind, &rec.envelope.event) {
            (
                AggregateKind::Endpoint,
                Event::ScanAccessChanged { .. }
                | Event::SupportAccessRevoked
                | Event::SupportAccessExpired
                | Event::EndpointKeyRotated { .. }
                | Event::EndpointUnbound { .. }
                | Event::EndpointDeleted,
            ) => vec![rec.envelope.aggregate.id],
            // A revoked credential may be in use through any endpoint of the gateway.
            (AggregateKind::Gateway, Event::ScannerCredentialRevoked { .. }) => {
                self.streams.endpoints()
            }
            // A scan that ended stops its streams wherever they run.
            (AggregateKind::Scan, Event::ScanCancelled { .. } | Event::ScanFailed { .. }) => {
                let scan = self.directory.scan(rec.envelope.aggregate.id).ok().flatten();
                scan.map(|s| vec![s.endpoint]).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Follows the applied events and enforces access on this node. If it falls behind (the
    /// event feed overflowed), it re-checks every endpoint with something running.
    pub async fn run(self, mut applied: broadcast::Receiver<Recorded>) {
        loop {
            match applied.recv().await {
                Ok(rec) => {
                    for endpoint in self.concerned(&rec) {
                        self.reconcile_endpoint(endpoint);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "access enforcement fell behind the event feed; re-checking everything"
                    );
                    let mut endpoints = self.streams.endpoints();
                    endpoints.extend(self.sessions.endpoints());
                    for endpoint in endpoints {
                        self.reconcile_endpoint(endpoint);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Every `every`, records the end of support-engineer access windows that ran out at the clock's
/// time (the node's clock, so tests can move it). Any node may do it; the endpoint actor makes
/// it happen once.
pub async fn expire_support_windows(
    directory: Arc<DirectoryProjection>,
    endpoints: Arc<NodeActors<Endpoint>>,
    clock: Arc<dyn Clock>,
    node_id: String,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = clock.now_ms();
        let due = match directory.endpoints() {
            Ok(all) => all.into_iter().filter(|e| e.support_access.expired(now)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the directory to expire support access");
                continue;
            }
        };
        for e in due {
            let cause = Cause::by(Principal::node(node_id.clone()));
            if let Err(err) =
                endpoints.execute(e.id, EndpointCommand::ExpireSupportAccess, cause).await
            {
                tracing::warn!(endpoint = %e.id, error = %err, "could not record the end of a support access window");
            }
        }
    }
}
