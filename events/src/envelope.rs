//! The envelope every event travels in, and the identity of the aggregate it belongs to.

use crate::event::{AggregateKind, Event};
use crate::principal::Principal;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// One aggregate: its kind and id. Renders as `kind.uuid`, which is also a valid NATS subject
/// suffix (no spaces, no wildcards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AggregateId {
    pub kind: AggregateKind,
    pub id: Uuid,
}

impl AggregateId {
    pub fn gateway(id: Uuid) -> Self {
        Self { kind: AggregateKind::Gateway, id }
    }
    pub fn endpoint(id: Uuid) -> Self {
        Self { kind: AggregateKind::Endpoint, id }
    }
    pub fn tunnel(id: Uuid) -> Self {
        Self { kind: AggregateKind::Tunnel, id }
    }
    pub fn user(id: Uuid) -> Self {
        Self { kind: AggregateKind::User, id }
    }
}

impl fmt::Display for AggregateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind.as_str(), self.id.simple())
    }
}

/// An event with everything needed to audit and replay it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id of this event; also the de-duplication id when appending to JetStream, so a
    /// retried append is recorded once.
    pub id: Uuid,
    pub aggregate: AggregateId,
    /// Version of the aggregate after this event, 1-based and gapless per aggregate.
    pub sequence: u64,
    /// When the event was decided, in milliseconds since the Unix epoch (from the injected clock).
    pub time_ms: i64,
    /// The event (or request) that caused this one, when there is one.
    #[serde(default)]
    pub causation: Option<Uuid>,
    /// W3C `traceparent` of the request that caused this event, to follow it across nodes.
    #[serde(default)]
    pub trace: Option<String>,
    /// Who made the change, in events recorded before principals were typed: plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Who made the change, by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    /// Catalogue version that introduced the event ([`Event::schema`]).
    pub schema: u16,
    pub event: Event,
}

/// What an actor supplies about why an event happened; the log-independent part of an envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cause {
    pub causation: Option<Uuid>,
    pub trace: Option<String>,
    pub principal: Option<Principal>,
}

impl Cause {
    /// A change made by `principal`.
    pub fn by(principal: Principal) -> Self {
        Self { principal: Some(principal), ..Default::default() }
    }
}

impl Envelope {
    /// Wraps `event` as version `sequence` of `aggregate`.
    pub fn new(
        aggregate: AggregateId,
        sequence: u64,
        time_ms: i64,
        cause: Cause,
        event: Event,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            aggregate,
            sequence,
            time_ms,
            causation: cause.causation,
            trace: cause.trace,
            actor: None,
            principal: cause.principal,
            schema: event.schema(),
            event,
        }
    }
}

impl Envelope {
    /// Who made the change, as the audit shows it: the typed principal (`user:alice`,
    /// `node:node-a`), or the plain text an older event holds; `None` for nobody recorded.
    pub fn actor_shown(&self) -> Option<String> {
        match (&self.principal, &self.actor) {
            (Some(p), _) => Some(p.to_string()),
            (None, Some(legacy)) => Some(legacy.clone()),
            (None, None) => None,
        }
    }

    /// Whether `who` names this event's actor: its display form (`user:alice`) or its name
    /// within its kind (`alice`), case-insensitively; for older events, their plain text.
    pub fn caused_by(&self, who: &str) -> bool {
        match (&self.principal, &self.actor) {
            (Some(p), _) => {
                p.to_string().eq_ignore_ascii_case(who) || p.name().eq_ignore_ascii_case(who)
            }
            (None, Some(legacy)) => legacy.eq_ignore_ascii_case(who),
            (None, None) => false,
        }
    }
}

/// An envelope as stored: with its position in the whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Position in the global log, 1-based and increasing. Projections checkpoint on it.
    pub position: u64,
    pub envelope: Envelope,
}
