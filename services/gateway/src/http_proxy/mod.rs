//! The HTTP proxy ingress for scanners (ZAP and many others prefer it to SOCKS5); the protocol
//! itself is `ism_ingress_proto::http_proxy`.

mod forward;
pub mod ingress;
