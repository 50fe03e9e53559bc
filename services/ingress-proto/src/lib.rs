//! The protocols scanners speak to a gateway node, without I/O: [`socks5`] (RFC 1928 with RFC
//! 1929 username/password) and [`http_proxy`] (CONNECT and absolute-URI forwarding with
//! `Proxy-Authorization: Basic`). Each parser takes the bytes received so far and never panics;
//! the gateway's ingresses do the I/O around them, and the fuzz targets in `fuzz/` hammer them.
//! Both accept as a target only what [`host`] accepts: an IP literal or a host name.
#![forbid(unsafe_code)]

pub mod host;
pub mod http_proxy;
pub mod socks5;
