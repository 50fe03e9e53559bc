//! Shared support for the integration tests: real processes and servers on free loopback ports.
//!
//! - [`nats`]: a private `nats-server -js` per test;
//! - [`install`]: the endpoint as its own process, in its own install folder;
//! - [`http_proxy`]: a customer's web proxy (CONNECT, basic auth, a log of requests);
//! - [`contract`]: the OpenAPI document every API response in the tests is checked against;
//! - [`cluster`]: a gateway node on either backend (on its own thread and actix system), endpoint
//!   machines, loopback targets, and polling helpers with deadlines;
//! - [`gateway_cluster`]: several nodes sharing one `nats-server`, certificates and secrets;
//! - [`gateway_process`]: a node as its own `ism-gateway` process;
//! - [`smtp`]: a real SMTP server (aiosmtpd) keeping what it receives;
//! - [`otlp`]: a real OTLP trace receiver keeping the spans it is sent; [`metrics`]: `/metrics`
//!   scraped and parsed as Prometheus would;
//! - [`webhook`]: a webhook receiver that checks signatures as a subscriber would;
//! - [`browser`]: a headless Chromium through chromedriver, for the web page.
//!
//! Test support: a failure panics with its message, as the tests that call it do.
#![allow(clippy::unwrap_used)]

/// Whether `GET path` on `addr` (`host:port`) answers 200, as a health check sees it: plain
/// HTTP/1.0 over a blocking socket, 5 s at most for the answer. Call it off the async runtime
/// (`spawn_blocking`) from async code.
pub fn answers_200(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else { return false };
    let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut response = String::new();
    tcp.write_all(request.as_bytes()).is_ok()
        && tcp.read_to_string(&mut response).is_ok()
        && response.lines().next().is_some_and(|status| status.contains(" 200 "))
}

pub use ports::{free_port, ReservedPort};

pub mod browser;
pub mod cluster;
pub mod contract;
pub mod gateway_cluster;
pub mod gateway_process;
pub mod http_proxy;
pub mod install;
pub mod log_capture;
pub mod metrics;
pub mod nats;
pub mod otlp;
mod ports;
pub mod smtp;
pub mod webhook;
