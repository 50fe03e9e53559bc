//! The endpoint agent: the only software a customer runs inside the private network.
//!
//! - [`config`] (over [`properties`]): `config/application.properties` with the seed's keys,
//!   environment and flag overrides, the install layout;
//! - [`identity`]: the machine key pair the endpoint key binds to;
//! - [`gateway_link`]: reaching the gateway (directly or through the [`proxy`]) and the handshake;
//! - [`agent`]: the working session, reconnecting with [`backoff`], the [`status`] file;
//! - [`dialer`] with [`allowlist`]: reaching targets, and only the allowed ones;
//! - [`diagnostics`]: the seed's diagnostic tool;
//! - [`messages`]: the seed's error messages with their causes and fixes, and the [`exit`]
//!   status each failure ends the agent with;
//! - [`logging`]: seed-style log lines in `logs/smartendpoint.log`, rotated, with the spans of
//!   each dial exported as traces; [`metrics`]: Prometheus metrics on `metricsListen`.
#![forbid(unsafe_code)]

pub mod agent;
pub mod allowlist;
pub mod backoff;
pub mod config;
pub mod diagnostics;
pub mod dialer;
pub mod exit;
pub mod gateway_link;
pub mod identity;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod own_addresses;
pub mod properties;
pub mod proxy;
pub mod status;

pub use agent::{Agent, AgentHandle, AgentStatus};
pub use config::EndpointConfig;
