//! Read models fed from the event log, each in its own sled store with its own checkpoint.
//!
//! - [`directory`]: gateways, endpoints, their status, which node holds each endpoint, and the
//!   lookups the data path needs to authorise scanners.
//!
//! Projections are disposable: delete the store and `ism_events::rebuild` gives it back,
//! byte for byte.
#![forbid(unsafe_code)]

pub mod directory;

pub use directory::{DirectoryProjection, EndpointStatus, EndpointView, GatewayStatus, GatewayView};
