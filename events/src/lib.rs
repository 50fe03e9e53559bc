//! Events: what happened, in what envelope, stored where.
//!
//! - [`event`]: the versioned event catalogue (gateways, endpoints, tunnels, users, webhooks,
//!   notifications);
//! - [`envelope`]: id, aggregate, sequence, time, causation, trace context, actor;
//! - [`principal`]: who caused an event, by kind (user, bootstrap administrator, endpoint, node...);
//! - [`codec`]: MessagePack encoding (`rmp-serde`, named fields) and upcasting;
//! - [`log`]: the one event-log interface, with optimistic concurrency;
//! - [`embedded`] (sled, the single-node default) and [`jetstream`] (NATS, clusters): its two
//!   backends, both held to `conformance` (behind the `testing` feature);
//! - [`projection`]: feeding read models from the log, with checkpoints and rebuilds;
//! - [`clock`]: injectable time;
//! - [`escape`]: untrusted text shown on one line (logs, audit, error bodies), never obeyed;
//! - [`support_access`]: the support-engineer access window as a value (one home for its rule).
#![forbid(unsafe_code)]

pub mod clock;
pub mod codec;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod embedded;
pub mod envelope;
pub mod event;
pub mod jetstream;
pub mod log;
pub mod principal;
pub mod projection;
pub mod support_access;

pub use clock::{Clock, ManualClock, SystemClock};
pub use envelope::{AggregateId, Cause, Envelope, Recorded};
pub use event::{
    AggregateEvent, AggregateKind, CredentialKind, EndpointEvent, Event, GatewayEvent, NoticeKind,
    NotificationEvent, Platform, RepeatedRefusals, RepeatedRegistrationRefusals, ScanEvent,
    ScanFinding, ScanSettings, TunnelEvent, UserEvent, UserRole, WebhookEvent, SCHEMA_VERSION,
};
/// The one rule for showing untrusted text (see `ism_escape`).
pub use ism_escape as escape;
pub use ism_escape::escaped;
pub use log::{AppendError, EventLog, EventStream, LogError};
pub use principal::Principal;
pub use projection::{
    rebuild, rebuild_to, spawn_projection, Projection, ProjectionError, ProjectionProgress,
};
pub use support_access::SupportAccess;

use std::sync::Arc;

/// Whether `spec` names NATS servers (a `nats://` or `tls://` URL, or a list of them): the
/// JetStream log, shared by the nodes of a cluster, rather than an embedded log's directory.
pub fn is_jetstream(spec: &str) -> bool {
    spec.starts_with("nats://") || spec.starts_with("tls://")
}

/// How many copies a JetStream stream or bucket this process creates keeps:
/// `ISM_JETSTREAM_REPLICAS`, default 1 (one server). The event log and the cluster's buckets
/// alike.
pub fn jetstream_replicas() -> usize {
    std::env::var("ISM_JETSTREAM_REPLICAS").ok().and_then(|r| r.parse().ok()).unwrap_or(1)
}

/// Opens the backend named by `spec`: a `nats://` (or `tls://`) URL selects JetStream (with
/// `ISM_JETSTREAM_REPLICAS` copies when it creates the stream, default 1), anything else is a
/// directory for the embedded log. `patience` says what a JetStream client does when no server
/// answers its first attempt.
pub async fn open_log(
    spec: &str,
    patience: jetstream::Patience,
) -> Result<Arc<dyn EventLog>, LogError> {
    if is_jetstream(spec) {
        let replicas = jetstream_replicas();
        Ok(Arc::new(jetstream::JetStreamLog::connect_with(spec, replicas, patience).await?))
    } else {
        Ok(Arc::new(embedded::EmbeddedLog::open(std::path::Path::new(spec))?))
    }
}
