//! Shared support for the integration tests: real processes and servers on port 0.
//!
//! - [`nats`]: a private `nats-server -js` per test;
//! - [`install`]: the endpoint as its own process, in its own install folder;
//! - [`http_proxy`]: a customer's web proxy (CONNECT, basic auth, a log of requests);
//! - [`contract`]: the OpenAPI document every API response in the tests is checked against;
//! - [`cluster`]: a gateway node on either backend (on its own thread and actix system), endpoint
//!   machines, loopback targets, and polling helpers with deadlines;
//! - [`gateway_cluster`]: several nodes sharing one `nats-server`, certificates and secrets;
//! - [`gateway_process`]: a node as its own `ism-gateway` process.
//!
//! Test support: a failure panics with its message, as the tests that call it do.
#![allow(clippy::unwrap_used)]

pub mod cluster;
pub mod contract;
pub mod gateway_cluster;
pub mod gateway_process;
pub mod http_proxy;
pub mod install;
pub mod nats;
