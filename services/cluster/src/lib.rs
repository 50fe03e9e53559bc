//! How the stateless nodes of a gateway cluster know each other and who holds which endpoint.
//!
//! A TLS socket cannot move between hosts, so the node holding an endpoint's socket *owns* that
//! endpoint, and every other node reaches the endpoint through it (one hop). Three facts are
//! shared:
//!
//! - **membership**: each node announces itself with a heartbeat (its address for other nodes,
//!   whether it serves or drains); a node whose heartbeat stops advancing for a lease is lost
//!   ([`liveness`], a sans-IO rule with time passed in, so no clocks need to agree);
//! - **ownership**: for each connected endpoint, the node and session holding it, written with
//!   compare-and-swap on its revision, so exactly one session owns an endpoint at a time and a
//!   newer session replaces an older one wherever that one lives;
//! - **drain requests**: a node asked to drain, wherever the request was made.
//!
//! [`Coordination`] is the interface; [`in_process::InProcess`] serves a single node (the
//! embedded default, no NATS), [`nats::NatsCoordination`] a cluster (three NATS KV buckets on the
//! JetStream that holds the event log). Both pass `conformance` (feature `testing`).
#![forbid(unsafe_code)]

pub mod coordination;
pub mod in_process;
pub mod liveness;
pub mod nats;

#[cfg(feature = "testing")]
pub mod conformance;

pub use coordination::{
    Claimed, CoordError, Coordination, NodeAnnouncement, NodeRole, Owner, OwnerChange, OwnerFeed,
};
pub use liveness::Liveness;
