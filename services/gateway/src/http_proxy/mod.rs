//! The HTTP proxy ingress for scanners (ZAP and many others prefer it to SOCKS5): [`codec`]
//! parses, [`ingress`] serves.

pub mod codec;
pub mod ingress;
