//! Shared support for the integration tests: real processes and servers on port 0.
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
//! - [`webhook`]: a webhook receiver that checks signatures as a subscriber would.
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

/// A loopback port free now (the OS may hand it out again later: good enough for ports a test
/// binds at once; [`ReservedPort`] for one it binds later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback port held bound but not listening: connections to it are refused (a service that
/// is down), and no other process can take it until [`release`](Self::release) hands it over.
pub struct ReservedPort {
    pub port: u16,
    _socket: std::os::fd::OwnedFd,
}

impl ReservedPort {
    pub fn new() -> Self {
        use rustix::net::{bind, getsockname, socket, AddressFamily, SocketType};
        let socket = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        bind(&socket, &std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
        let bound = std::net::SocketAddrV4::try_from(getsockname(&socket).unwrap()).unwrap();
        Self { port: bound.port(), _socket: socket }
    }

    /// Gives the port up, for the service that will listen on it now.
    pub fn release(self) -> u16 {
        self.port
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}

pub mod cluster;
pub mod contract;
pub mod gateway_cluster;
pub mod gateway_process;
pub mod http_proxy;
pub mod install;
pub mod metrics;
pub mod nats;
pub mod otlp;
pub mod smtp;
pub mod webhook;
