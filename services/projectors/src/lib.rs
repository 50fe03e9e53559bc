//! Read models fed from the event log, each in its own sled store with its own checkpoint.
//!
//! - [`audit`]: the log as a readable, filterable timeline (computed on demand, not stored);
//! - [`directory`]: gateways, endpoints, their status and access, which node holds each endpoint,
//!   users and tokens, webhooks, and the lookups that authorise scanners and API callers;
//! - [`notices`]: what the notification and retention rules need (sessions, outages, pauses,
//!   activity) and the notifications recorded, from which the notices due at any time follow.
//!
//! Projections are disposable: delete the store and `ism_events::rebuild` gives it back,
//! byte for byte.
#![forbid(unsafe_code)]

pub mod audit;
pub mod directory;
pub mod notices;
mod store;

pub use directory::{
    DirectoryProjection, EndpointStatus, EndpointView, GatewayStatus, GatewayView, UserView,
    WebhookView,
};
pub use notices::{NoticeProjection, NotificationView};
