//! Shared support for the integration tests: real processes and servers on port 0.
//!
//! - [`nats`]: a private `nats-server -js` per test;
//! - [`cluster`]: an in-process gateway node on either backend, its REST API, endpoints and
//!   scanner clients.

pub mod nats;
