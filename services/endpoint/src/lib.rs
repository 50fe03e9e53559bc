//! The endpoint agent: the only software a customer runs inside the private network.
//!
//! - [`config`] (over [`properties`]): `application.properties` with the seed's keys;
//! - [`identity`]: the machine key pair the endpoint key binds to;
//! - [`agent`]: dialing out, the handshake, reconnecting with [`backoff`];
//! - [`dialer`] with [`allowlist`]: reaching targets, and only the allowed ones;
//! - [`messages`]: the seed's error messages with their causes and fixes.
#![forbid(unsafe_code)]

pub mod agent;
pub mod allowlist;
pub mod backoff;
pub mod config;
pub mod dialer;
pub mod identity;
pub mod messages;
pub mod properties;

pub use agent::{Agent, AgentHandle, AgentStatus};
pub use config::EndpointConfig;
