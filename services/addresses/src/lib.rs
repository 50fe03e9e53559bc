//! Addresses that reach more than they seem to: this host itself, link-local (where the clouds'
//! instance metadata services answer) and the clouds' other metadata and platform addresses,
//! also when an IPv6 address carries one of them (IPv4-mapped, IPv4-compatible, NAT64, 6to4).
//!
//! One list for everything that dials an address a user named: the endpoint's allowlist refuses
//! them unless a rule names them, and the gateway refuses them as webhook receivers. Pure
//! functions of an address, no I/O: the callers resolve names first and check what they will
//! dial.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What makes an address sensitive: reaching it would reach more than the customer's apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitive {
    /// The host itself: loopback, or the unspecified address (which connects to it).
    ThisHost,
    /// Link-local, where the clouds' instance metadata services answer (169.254.169.254).
    LinkLocal,
    /// A cloud's instance metadata or platform service outside link-local.
    CloudMetadata,
}

impl std::fmt::Display for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sensitive::ThisHost => "an address of the host itself (loopback or unspecified)",
            Sensitive::LinkLocal => "a link-local address (where cloud metadata services answer)",
            Sensitive::CloudMetadata => "a cloud metadata service address",
        })
    }
}

struct Range {
    net: IpAddr,
    bits: u8,
    kind: Sensitive,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, bits: u8, kind: Sensitive) -> Range {
    Range { net: IpAddr::V4(Ipv4Addr::new(a, b, c, d)), bits, kind }
}

const fn v6(segments: [u16; 8], bits: u8, kind: Sensitive) -> Range {
    let [a, b, c, d, e, f, g, h] = segments;
    Range { net: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), bits, kind }
}

/// Addresses refused unless a CIDR rule inside the range names them. The metadata addresses are
/// the ones the providers document for their instances.
const SENSITIVE: &[Range] = &[
    v4(127, 0, 0, 0, 8, Sensitive::ThisHost),
    v4(0, 0, 0, 0, 8, Sensitive::ThisHost),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, Sensitive::ThisHost),
    v6([0; 8], 128, Sensitive::ThisHost),
    // AWS, Google Cloud, Azure, Oracle Cloud, DigitalOcean, OpenStack (169.254.169.254), AWS ECS
    // task credentials (169.254.170.2), Tencent Cloud (169.254.0.23), Scaleway (169.254.42.42).
    v4(169, 254, 0, 0, 16, Sensitive::LinkLocal),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Sensitive::LinkLocal),
    // Alibaba Cloud's metadata service.
    v4(100, 100, 100, 200, 32, Sensitive::CloudMetadata),
    // Azure's WireServer (VM agent and extension configuration, protected settings).
    v4(168, 63, 129, 16, 32, Sensitive::CloudMetadata),
    // Oracle Cloud Infrastructure Classic's metadata service.
    v4(192, 0, 0, 192, 32, Sensitive::CloudMetadata),
    // AWS's IPv6 services: instance metadata (::254), EKS Pod Identity credentials (::23), DNS,
    // time.
    v6([0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0], 32, Sensitive::CloudMetadata),
    // Google Cloud's IPv6 metadata server.
    v6([0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x0254], 128, Sensitive::CloudMetadata),
    // Oracle Cloud's IPv6 metadata service.
    v6([0xfd00, 0x00c1, 0, 0, 0, 0, 0xa9fe, 0xa9fe], 128, Sensitive::CloudMetadata),
    // Scaleway's IPv6 metadata service.
    v6([0xfd00, 0x0042, 0, 0, 0, 0, 0, 0x0042], 128, Sensitive::CloudMetadata),
];

/// An IPv6 prefix whose addresses carry an IPv4 address that traffic to them reaches.
struct Embedding {
    prefix: u128,
    len: u8,
    /// Where the IPv4 address sits: this many bits above the address's last bit.
    ipv4_shift: u32,
}

/// The IPv6 forms that carry an IPv4 address: IPv4-compatible `::a.b.c.d` (deprecated, still
/// tunnelled by some stacks), NAT64 (RFC 6052: the translator connects to the IPv4 address) with
/// the well-known prefix `64:ff9b::/96` or inside the local-use `64:ff9b:1::/48` (RFC 8215; its
/// operators use a /96 inside it, so the IPv4 address is the last 32 bits), and 6to4 `2002::/16`
/// (RFC 3056: the packet is tunnelled to the IPv4 address, the 32 bits after the prefix).
/// IPv4-mapped addresses are not here: the socket connects over IPv4, so they are checked as IPv4
/// addresses ([`normalise`]).
const EMBEDDINGS: &[Embedding] = &[
    Embedding { prefix: 0, len: 96, ipv4_shift: 0 },
    Embedding { prefix: 0x0064_ff9b << 96, len: 96, ipv4_shift: 0 },
    Embedding { prefix: 0x0064_ff9b_0001 << 80, len: 48, ipv4_shift: 0 },
    Embedding { prefix: 0x2002 << 112, len: 16, ipv4_shift: 80 },
];

/// `ip`, an IPv4-mapped IPv6 address as the IPv4 address it maps: the socket connects over IPv4.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `ip` (normalised) lies in `net/bits`.
pub fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (normalise(ip), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            bits == 0 || (u32::from(a) ^ u32::from(n)) >> (32 - u32::from(bits)) == 0
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            bits == 0 || (u128::from(a) ^ u128::from(n)) >> (128 - u32::from(bits)) == 0
        }
        _ => false,
    }
}

/// The sensitive range `ip` falls in (the range a rule must lie within to allow it) and why. For
/// an address that carries an IPv4 address, that is the image of the carried address's range.
pub fn sensitive_range(ip: IpAddr) -> Option<(IpAddr, u8, Sensitive)> {
    let ip = normalise(ip);
    if let Some(r) = SENSITIVE.iter().find(|r| in_cidr(ip, r.net, r.bits)) {
        return Some((r.net, r.bits, r.kind));
    }
    let IpAddr::V6(v6) = ip else { return None };
    EMBEDDINGS.iter().find_map(|e| carried_range(u128::from(v6), e))
}

/// The IPv4 address `ip` carries in one of the IPv6 forms that reach it (IPv4-compatible, NAT64,
/// 6to4; an IPv4-mapped address is that IPv4 address already, [`normalise`]), if it is one.
pub fn carried_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = normalise(ip) else { return None };
    EMBEDDINGS.iter().find_map(|e| carried_by(u128::from(v6), e))
}

/// The IPv4 address `bits` carries in the form `e`, if it has that form.
fn carried_by(bits: u128, e: &Embedding) -> Option<Ipv4Addr> {
    if bits >> (128 - u32::from(e.len)) != e.prefix >> (128 - u32::from(e.len)) {
        return None;
    }
    // The truncation keeps exactly the 32 bits of the carried address.
    Some(Ipv4Addr::from((bits >> e.ipv4_shift) as u32))
}

/// The sensitive range of the IPv4 address `e` carries in `bits`, as IPv6: `bits` above the
/// carried address kept (for the local-use NAT64 prefix, they choose the operator's /96), the
/// carried address's range in its place, anything below free.
fn carried_range(bits: u128, e: &Embedding) -> Option<(IpAddr, u8, Sensitive)> {
    let carried = carried_by(bits, e)?;
    let range = SENSITIVE.iter().find(|r| in_cidr(IpAddr::V4(carried), r.net, r.bits))?;
    let IpAddr::V4(net) = range.net else { return None };
    let field = u128::from(u32::MAX) << e.ipv4_shift;
    let image = (bits & !field) | u128::from(u32::from(net)) << e.ipv4_shift;
    // At least 16 + 8 bits (6to4 carrying a /8) and at most 128: the shift stays in range.
    let len = 128 - e.ipv4_shift - 32 + u32::from(range.bits);
    let network = image & (u128::MAX << (128 - len));
    Some((IpAddr::V6(Ipv6Addr::from(network)), len as u8, range.kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<Sensitive> {
        sensitive_range(ip.parse().unwrap()).map(|(_, _, kind)| kind)
    }

    #[test]
    fn the_ipv4_address_an_ipv6_form_carries_is_read_from_its_place() {
        let carried = |ip: &str| carried_ipv4(ip.parse().unwrap());
        let lan = Some(Ipv4Addr::new(192, 168, 1, 5));
        for ip in
            ["::c0a8:105", "64:ff9b::c0a8:105", "64:ff9b:1:2:3:4:c0a8:105", "2002:c0a8:105::9"]
        {
            assert_eq!(carried(ip), lan, "{ip}");
        }
        for ip in ["192.168.1.5", "::ffff:192.168.1.5", "2001:db8::c0a8:105"] {
            assert_eq!(carried(ip), None, "{ip}");
        }
    }

    #[test]
    fn every_form_of_a_metadata_address_is_sensitive() {
        for ip in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "::a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1:2:3:4:a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "fe80::1",
        ] {
            assert_eq!(kind(ip), Some(Sensitive::LinkLocal), "{ip}");
        }
        for ip in ["100.100.100.200", "168.63.129.16", "fd00:ec2::254", "64:ff9b::6464:64c8"] {
            assert_eq!(kind(ip), Some(Sensitive::CloudMetadata), "{ip}");
        }
        for ip in ["127.0.0.1", "::1", "0.0.0.0", "::", "64:ff9b::7f00:1"] {
            assert_eq!(kind(ip), Some(Sensitive::ThisHost), "{ip}");
        }
        for ip in ["10.0.0.1", "192.0.2.1", "2001:db8::1", "64:ff9b::a00:1"] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn a_carried_address_names_the_image_of_its_range() {
        let (net, bits, _) = sensitive_range("64:ff9b::a9fe:a9fe".parse().unwrap()).unwrap();
        assert_eq!((net, bits), ("64:ff9b::a9fe:0".parse().unwrap(), 112));
        let (net, bits, _) = sensitive_range("2002:a9fe:a9fe::1".parse().unwrap()).unwrap();
        assert_eq!((net, bits), ("2002:a9fe::".parse().unwrap(), 32));
    }
}
