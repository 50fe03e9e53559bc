//! Refused registrations of an endpoint key, recorded so that a machine trying again and again
//! cannot fill the log: a second machine presenting a bound key ("Token already registered") is
//! refused on every attempt, and an agent restarted by its service manager, or a script, attempts
//! for as long as it runs.
//!
//! The rule is the refused streams' ([`RefusalLedger`]), per endpoint and machine: the first
//! refusal is recorded at once and in full (`EndpointRegistrationRefused`, before the agent is
//! told), the ones that follow within the window are counted with the host names they gave, and
//! recorded as one `EndpointRegistrationRefusalsRepeated` once it is over. The window is long
//! (ten minutes by default, `NodeConfig::registration_refusal_window`) since a machine retries
//! every few seconds, not thousands of times a second: a loop then writes two events per window.

use crate::refusals::{Counted, RefusalLedger};
use ism_actors::endpoint::{Endpoint, EndpointCommand, TOKEN_ALREADY_REGISTERED};
use ism_actors::NodeActors;
use ism_events::{Cause, Clock, RepeatedRegistrationRefusals};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Which refusals are counted together: one endpoint, one machine identity.
type Kind = (Uuid, String);

/// A node's ledger of refused registrations, shared by its endpoint handshakes.
pub struct RefusedRegistrations {
    ledger: Mutex<RefusalLedger<Kind, Cause>>,
    endpoints: Arc<NodeActors<Endpoint>>,
    clock: Arc<dyn Clock>,
}

impl RefusedRegistrations {
    pub fn new(
        window: Duration,
        endpoints: Arc<NodeActors<Endpoint>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { ledger: Mutex::new(RefusalLedger::new(window)), endpoints, clock }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, RefusalLedger<Kind, Cause>> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `machine`, calling itself `hostname`, was refused the key of `endpoint`: recorded in full
    /// (and waited for) when it is the first of its window, counted otherwise.
    pub async fn refused(&self, endpoint: Uuid, machine: &str, hostname: &str, cause: Cause) {
        let kind = (endpoint, machine.to_string());
        let now = self.clock.now_ms();
        let (first, closed) = {
            let mut ledger = self.ledger();
            let first = ledger.refused(&kind, hostname, now, cause.clone());
            (first, ledger.due(now))
        };
        self.record(closed);
        if first {
            let command = EndpointCommand::RecordRegistrationRefused {
                machine: kind.1,
                hostname: hostname.to_string(),
            };
            if let Err(e) = self.endpoints.execute(endpoint, command, cause).await {
                tracing::warn!(%endpoint, error = %e, "could not record a refused registration");
            }
        }
    }

    /// Records the windows that are over.
    pub fn record_due(&self) {
        let closed = self.ledger().due(self.clock.now_ms());
        self.record(closed);
    }

    /// Records what every window counted so far (the node is stopping).
    pub fn record_all(&self) {
        let closed = self.ledger().drain();
        self.record(closed);
    }

    fn record(&self, closed: Vec<Counted<Kind, Cause>>) {
        for ((endpoint, machine), cause, tally) in closed {
            let counted = RepeatedRegistrationRefusals {
                machine,
                reason: TOKEN_ALREADY_REGISTERED.into(),
                count: tally.count,
                hostnames: tally.listed,
                other_hostnames: tally.others,
                first_ms: tally.first_ms,
                last_ms: tally.last_ms,
            };
            let command = EndpointCommand::RecordRegistrationRefusalsRepeated(counted);
            self.endpoints.tell(endpoint, command, cause);
        }
    }
}
