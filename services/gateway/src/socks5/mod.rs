//! The SOCKS5 ingress for scanners: [`codec`] parses, [`ingress`] serves.

pub mod codec;
pub mod ingress;
