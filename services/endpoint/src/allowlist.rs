//! The customer's target allowlist: which hosts and ports scanners may reach through this
//! endpoint. The endpoint must never become an open door into the network.
//!
//! Rules are checked **after** DNS resolution, against the exact address the endpoint will
//! connect to, so a name that re-resolves to another address (DNS rebinding) gains nothing.
//! IPv4-mapped IPv6 addresses are checked as IPv4, and odd spellings (`127.1`, `0x7f.0.0.1`)
//! are whatever the resolver makes of them. Link-local and cloud-metadata addresses
//! (169.254.0.0/16, fe80::/10, fd00:ec2::254) are refused unless a CIDR rule names them.
//!
//! Syntax (comma-separated): `host[:ports]` where host is `*`, an IP, a CIDR (IPv6 in
//! brackets), a name, or `*.suffix`; ports is `*`, `443` or `8000-8100` (default `*`).

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Any,
    Cidr(IpAddr, u8),
    Name(String),
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    host: HostRule,
    ports: (u16, u16),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    #[error("allowlist entry {entry:?}: {reason}")]
    Bad { entry: String, reason: String },
}

/// Addresses refused unless a CIDR rule names them explicitly: link-local (where cloud metadata
/// services live), the IPv6 metadata address, and the unspecified addresses (which reach this
/// host).
const SENSITIVE: &[(&str, u8)] =
    &[("169.254.0.0", 16), ("fe80::", 10), ("fd00:ec2::254", 128), ("0.0.0.0", 8), ("::", 128)];

fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
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

/// The sensitive range `ip` falls in, if any.
fn sensitive_range(ip: IpAddr) -> Option<(IpAddr, u8)> {
    SENSITIVE
        .iter()
        .map(|(net, bits)| (net.parse().expect("constant"), *bits))
        .find(|(net, bits)| in_cidr(ip, *net, *bits))
}

impl Allowlist {
    /// Parses the `allowedTargets` value.
    pub fn parse(spec: &str) -> Result<Self, AllowlistError> {
        let mut rules = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |reason: &str| AllowlistError::Bad {
                entry: entry.to_string(),
                reason: reason.to_string(),
            };
            let (host, ports) =
                split_host_ports(entry).ok_or_else(|| bad("unbalanced brackets"))?;
            let ports = match ports {
                None | Some("*") => (1, u16::MAX),
                Some(p) => parse_ports(p)
                    .ok_or_else(|| bad("ports must be *, a port or a range like 8000-8100"))?,
            };
            let host = parse_host(host).map_err(|r| bad(&r))?;
            rules.push(Rule { host, ports });
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a connection to the *name* `requested` on `port` may be made without the endpoint
    /// knowing the address (a web proxy resolves it). Only host-name rules can say yes: `*`, CIDRs
    /// and addresses need an address to check, so they do not.
    pub fn allows_name(&self, requested: &str, port: u16) -> bool {
        let requested = requested.trim_end_matches('.').to_ascii_lowercase();
        self.rules.iter().any(|r| {
            in_range(port, r.ports)
                && match &r.host {
                    HostRule::Name(n) => *n == requested,
                    HostRule::Suffix(s) => {
                        requested.ends_with(s.as_str()) && requested.len() > s.len()
                    }
                    HostRule::Any | HostRule::Cidr(..) => false,
                }
        })
    }

    /// Whether connecting to `ip:port`, reached by asking for `requested` (a name or an IP
    /// literal), is allowed.
    pub fn allows(&self, requested: &str, ip: IpAddr, port: u16) -> bool {
        let ip = normalise(ip);
        let requested = requested.trim_end_matches('.').to_ascii_lowercase();
        // A sensitive address needs a CIDR rule *inside* its sensitive range (`169.254.169.254/32`),
        // not one that merely contains it (`0.0.0.0/0` means "anything", not "the metadata service").
        if let Some((range, range_bits)) = sensitive_range(ip) {
            let named = self.rules.iter().any(|r| {
                matches!(r.host, HostRule::Cidr(n, b) if b >= range_bits && in_cidr(n, range, range_bits) && in_cidr(ip, n, b)) && in_range(port, r.ports)
            });
            if !named {
                return false;
            }
        }
        self.rules.iter().any(|r| {
            in_range(port, r.ports)
                && match &r.host {
                    HostRule::Any => true,
                    HostRule::Cidr(n, b) => in_cidr(ip, *n, *b),
                    HostRule::Name(n) => *n == requested,
                    HostRule::Suffix(s) => {
                        requested.ends_with(s.as_str()) && requested.len() > s.len()
                    }
                }
        })
    }
}

fn in_range(port: u16, (lo, hi): (u16, u16)) -> bool {
    lo <= port && port <= hi
}

fn split_host_ports(entry: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = entry.strip_prefix('[') {
        let close = rest.find(']')?;
        let host = &rest[..close];
        let after = &rest[close + 1..];
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match entry.rsplit_once(':') {
        // A bare IPv6 address without brackets has several colons: treat it all as the host.
        Some((h, _)) if h.contains(':') => Some((entry, None)),
        Some((h, p)) => Some((h, Some(p))),
        None => Some((entry, None)),
    }
}

fn parse_ports(p: &str) -> Option<(u16, u16)> {
    match p.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
            (a >= 1 && a <= b).then_some((a, b))
        }
        None => p.trim().parse::<u16>().ok().filter(|p| *p >= 1).map(|p| (p, p)),
    }
}

fn parse_host(h: &str) -> Result<HostRule, String> {
    let h = h.trim();
    if h == "*" {
        return Ok(HostRule::Any);
    }
    if let Some((net, bits)) = h.split_once('/') {
        let net: IpAddr = net.parse().map_err(|_| format!("{net:?} is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("prefix length must be 0..={max}"))?;
        // An IPv4-mapped IPv6 network is the IPv4 network it maps.
        return match normalise(net) {
            IpAddr::V4(v4) if net.is_ipv6() => {
                let bits = bits
                    .checked_sub(96)
                    .ok_or("an IPv4-mapped network needs a prefix of at least 96")?;
                Ok(HostRule::Cidr(IpAddr::V4(v4), bits))
            }
            n => Ok(HostRule::Cidr(n, bits)),
        };
    }
    if let Ok(ip) = h.parse::<IpAddr>() {
        let ip = normalise(ip);
        return Ok(HostRule::Cidr(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    if !h.is_ascii() || h.is_empty() || h.contains(char::is_whitespace) {
        return Err(
            "host names must be ASCII (use the punycode form of international names)".into()
        );
    }
    let h = h.to_ascii_lowercase();
    match h.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => Ok(HostRule::Suffix(suffix.to_string())),
        Some(suffix) if !suffix.is_empty() => Ok(HostRule::Suffix(suffix.to_string())),
        Some(_) => Err("a wildcard needs a suffix, like *.corp.example".into()),
        None if h.contains('*') => {
            Err("a wildcard may only lead the name, like *.corp.example".into())
        }
        None => Ok(HostRule::Name(h)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_and_port_rules() {
        let a = Allowlist::parse("10.0.0.0/8:80-443, 192.168.1.5").unwrap();
        assert!(a.allows("10.2.3.4", ip("10.2.3.4"), 443));
        assert!(!a.allows("10.2.3.4", ip("10.2.3.4"), 444));
        assert!(!a.allows("11.0.0.1", ip("11.0.0.1"), 80));
        assert!(a.allows("192.168.1.5", ip("192.168.1.5"), 22));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_checked_as_ipv4() {
        let a = Allowlist::parse("127.0.0.1:8080").unwrap();
        assert!(a.allows("::ffff:127.0.0.1", ip("::ffff:127.0.0.1"), 8080));
        let deny = Allowlist::parse("10.0.0.0/8").unwrap();
        assert!(!deny.allows("::ffff:127.0.0.1", ip("::ffff:127.0.0.1"), 80));
    }

    #[test]
    fn names_match_the_requested_name_not_the_address() {
        let a = Allowlist::parse("intranet.corp:443, *.apps.corp").unwrap();
        assert!(a.allows("INTRANET.corp.", ip("10.9.9.9"), 443));
        assert!(a.allows("billing.apps.corp", ip("10.1.1.1"), 8443));
        assert!(
            !a.allows("apps.corp", ip("10.1.1.1"), 8443),
            "the suffix rule needs a label in front"
        );
        assert!(!a.allows("evil.corp", ip("10.9.9.9"), 443));
        // A name rule does not allow the same address asked for by IP literal.
        assert!(!a.allows("10.9.9.9", ip("10.9.9.9"), 443));
    }

    #[test]
    fn metadata_and_link_local_need_an_explicit_cidr() {
        let any = Allowlist::parse("*").unwrap();
        assert!(!any.allows("169.254.169.254", ip("169.254.169.254"), 80));
        assert!(!any.allows("fd00:ec2::254", ip("fd00:ec2::254"), 80));
        assert!(!any.allows("fe80::1", ip("fe80::1"), 80));
        // A name that resolves to the metadata address (DNS rebinding) is refused too.
        let named = Allowlist::parse("app.corp").unwrap();
        assert!(!named.allows("app.corp", ip("169.254.169.254"), 80));
        let explicit = Allowlist::parse("169.254.169.254/32:80").unwrap();
        assert!(explicit.allows("169.254.169.254", ip("169.254.169.254"), 80));
        assert!(any.allows("10.0.0.1", ip("10.0.0.1"), 80));
        // "Everything" written as a CIDR is still not the metadata service, nor this host.
        for all in ["0.0.0.0/0", "[::/0]", "169.0.0.0/8"] {
            let a = Allowlist::parse(all).unwrap();
            assert!(!a.allows("169.254.169.254", ip("169.254.169.254"), 80), "{all}");
            assert!(!a.allows("::", ip("::"), 80), "{all}");
            assert!(!a.allows("0.0.0.0", ip("0.0.0.0"), 80), "{all}");
        }
        assert!(Allowlist::parse("0.0.0.0/0").unwrap().allows("10.1.2.3", ip("10.1.2.3"), 80));
    }

    #[test]
    fn ipv4_mapped_networks_are_ipv4_networks() {
        let a = Allowlist::parse("[::ffff:10.0.0.0/104]").unwrap();
        assert!(a.allows("10.200.0.1", ip("10.200.0.1"), 80));
        assert!(!a.allows("11.0.0.1", ip("11.0.0.1"), 80));
        assert!(Allowlist::parse("[::ffff:10.0.0.0/64]").is_err());
    }

    #[test]
    fn without_an_address_only_name_rules_allow() {
        let a = Allowlist::parse("*, 10.0.0.0/8, intranet.corp:443, *.apps.corp").unwrap();
        assert!(a.allows_name("intranet.corp", 443) && a.allows_name("x.apps.corp", 8080));
        assert!(!a.allows_name("intranet.corp", 80) && !a.allows_name("elsewhere.com", 443));
    }

    #[test]
    fn ipv6_rules_in_brackets() {
        let a = Allowlist::parse("[fd12::/16]:443, [::1]").unwrap();
        assert!(a.allows("fd12::5", ip("fd12::5"), 443));
        assert!(!a.allows("fd13::5", ip("fd13::5"), 443));
        assert!(a.allows("::1", ip("::1"), 9999));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["10.0.0.0/33", "host:0", "host:9-1", "a*b", "caf\u{e9}.corp", "[::1"] {
            let err = Allowlist::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(Allowlist::parse("").unwrap().is_empty());
    }
}
