//! The SOCKS5 ingress for scanners; the protocol itself is `ism_ingress_proto::socks5`.

pub mod ingress;
