//! The customer's target allowlist: which hosts and ports scanners may reach through this
//! endpoint. The endpoint must never become an open door into the network.
//!
//! Rules are checked **after** DNS resolution, against the exact address the endpoint will
//! connect to, so a name that re-resolves to another address (DNS rebinding) gains nothing.
//! IPv4-mapped IPv6 addresses are checked as IPv4, and odd spellings (`127.1`, `0x7f.0.0.1`)
//! are whatever the resolver makes of them.
//!
//! Some addresses are refused unless a CIDR rule inside their range names them, however broad the
//! other rules (`*`, `0.0.0.0/0`): this host itself (loopback, the unspecified address), link-local
//! (where cloud metadata services live) and the clouds' metadata addresses outside it. An IPv6
//! address that carries an IPv4 address the network delivers to (IPv4-compatible, NAT64 with the
//! well-known prefix `64:ff9b::/96` or inside the local-use `64:ff9b:1::/48`, 6to4) is as
//! sensitive as the address it carries, since reaching it reaches that address. The list and the
//! forms are [`ism_addresses`]'s, shared with the gateway's webhooks.
//!
//! The endpoint's own web proxy is refused the same way, by the dialer (only it knows the proxy),
//! unless a rule names exactly its address and port ([`Allowlist::names_address_and_port`]): a
//! stream to the proxy would let a scanner send its own `CONNECT` anywhere, past these rules.
//! So are the addresses of the endpoint's own host on its other interfaces
//! (`crate::own_addresses`), unless a rule names the address exactly
//! ([`Allowlist::names_address`]): its services answer there as on its loopback.
//!
//! Syntax (comma-separated): `host[:ports]` where host is `*`, an IP, a CIDR (IPv6 in
//! brackets), a name, `*.domain` (names below the domain) or `*domain` (the domain and the names
//! below it; `*corp.example` never matches `evilcorp.example`); ports is `*`, `443` or
//! `8000-8100` (default `*`).

pub use ism_addresses::Sensitive;
use ism_addresses::{in_cidr, normalise, sensitive_range};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Any,
    Cidr(IpAddr, u8),
    Name(String),
    /// `*.domain` (names below `domain`), or with `apex` `*domain` (the domain itself too).
    Domain {
        domain: String,
        apex: bool,
    },
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

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No rule allows the host and port.
    NotListed,
    /// The address is sensitive and no CIDR rule inside its range names it.
    Sensitive(Sensitive),
}

/// Whether `name` is really an address: a name whose last label is a number (`10.0.0.1`,
/// `0x7f.1`, `2130706433`) is an IPv4 address to URL parsers and resolvers (the WHATWG URL
/// standard's "ends in a number"), and one with a colon is IPv6. Host-name rules never match them.
fn spells_an_address(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last.strip_prefix("0x").is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    name.contains(':') || hex || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

impl HostRule {
    /// Whether this rule names `requested` (lower case, no trailing dot).
    fn names(&self, requested: &str) -> bool {
        if spells_an_address(requested) {
            return false;
        }
        match self {
            HostRule::Name(n) => n == requested,
            // On a label boundary: `*corp.example` is not `evilcorp.example`.
            HostRule::Domain { domain, apex } => match requested.strip_suffix(domain.as_str()) {
                Some("") => *apex,
                Some(below) => below.len() > 1 && below.ends_with('.'),
                None => false,
            },
            HostRule::Any | HostRule::Cidr(..) => false,
        }
    }
}

/// `name` as rules compare it: lower case, without its trailing dot.
pub(crate) fn canonical_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
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
    /// and addresses need an address to check, so they do not, and neither does a name that
    /// spells an address.
    pub fn allows_name(&self, requested: &str, port: u16) -> bool {
        let requested = canonical_name(requested);
        self.rules.iter().any(|r| in_range(port, r.ports) && r.host.names(&requested))
    }

    /// Whether any address `requested` (a name) resolves to could be allowed on `port`: a rule for
    /// that port is `*`, a CIDR or names `requested`. When none is, the name need not be looked
    /// up, and is not: a refusal then tells a scanner nothing about what an internal name
    /// resolves to.
    pub fn may_allow_name(&self, requested: &str, port: u16) -> bool {
        let requested = canonical_name(requested);
        self.rules.iter().any(|r| {
            in_range(port, r.ports)
                && match &r.host {
                    HostRule::Any | HostRule::Cidr(..) => true,
                    host => host.names(&requested),
                }
        })
    }

    /// Whether a rule names exactly `ip` and only `port` (`10.0.0.9:3128`, `[fd00::9]:3128`): the
    /// one way to allow what no broad rule may, the endpoint's own web proxy. Port and address
    /// both, since a rule for a proxy host's address says nothing about handing scanners the
    /// proxy itself.
    pub fn names_address_and_port(&self, ip: IpAddr, port: u16) -> bool {
        self.naming(ip).any(|r| r.ports == (port, port))
    }

    /// Whether a rule for `port` names exactly `ip` (`10.0.0.9`, `10.0.0.9/32:443`): the one way
    /// to allow an address of the endpoint's own host, which no broad rule may.
    pub fn names_address(&self, ip: IpAddr, port: u16) -> bool {
        self.naming(ip).any(|r| in_range(port, r.ports))
    }

    /// The rules whose host is exactly `ip`.
    fn naming(&self, ip: IpAddr) -> impl Iterator<Item = &Rule> {
        let ip = normalise(ip);
        let whole = if ip.is_ipv4() { 32 } else { 128 };
        self.rules.iter().filter(move |r| r.host == HostRule::Cidr(ip, whole))
    }

    /// Whether connecting to `ip:port`, reached by asking for `requested` (a name or an IP
    /// literal), is allowed; if not, why.
    pub fn check(&self, requested: &str, ip: IpAddr, port: u16) -> Result<(), Refusal> {
        let ip = normalise(ip);
        let requested = canonical_name(requested);
        // A sensitive address needs a CIDR rule *inside* its sensitive range (`169.254.169.254/32`),
        // not one that merely contains it (`0.0.0.0/0` means "anything", not "the metadata service").
        if let Some((range, range_bits, kind)) = sensitive_range(ip) {
            let named = self.rules.iter().any(|r| {
                matches!(r.host, HostRule::Cidr(n, b) if b >= range_bits && in_cidr(n, range, range_bits) && in_cidr(ip, n, b)) && in_range(port, r.ports)
            });
            return if named { Ok(()) } else { Err(Refusal::Sensitive(kind)) };
        }
        let allowed = self.rules.iter().any(|r| {
            in_range(port, r.ports)
                && match &r.host {
                    HostRule::Any => true,
                    HostRule::Cidr(n, b) => in_cidr(ip, *n, *b),
                    host => host.names(&requested),
                }
        });
        if allowed {
            Ok(())
        } else {
            Err(Refusal::NotListed)
        }
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
    let h = canonical_name(h);
    let (name, wildcard) = match h.strip_prefix('*') {
        Some(rest) => match rest.strip_prefix('.') {
            Some(below) => (below, Some(false)),
            None => (rest, Some(true)),
        },
        None => (h.as_str(), None),
    };
    if name.is_empty() || name.starts_with('.') {
        return Err("a wildcard needs a domain, like *.corp.example".into());
    }
    if name.contains('*') {
        return Err("a wildcard may only lead the name, like *.corp.example".into());
    }
    if spells_an_address(name) {
        return Err(
            "this is neither an IP address nor a host name: write the address or a CIDR".into()
        );
    }
    Ok(match wildcard {
        Some(apex) => HostRule::Domain { domain: name.to_string(), apex },
        None => HostRule::Name(name.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Whether `rules` let a scanner that asked for `requested` reach `address` on `port`.
    fn allows(rules: &str, requested: &str, address: &str, port: u16) -> bool {
        Allowlist::parse(rules).unwrap().check(requested, ip(address), port).is_ok()
    }

    /// As [`allows`], for a scanner that asked for the address itself.
    fn allows_ip(rules: &str, address: &str, port: u16) -> bool {
        allows(rules, address, address, port)
    }

    fn refusal(rules: &str, address: &str) -> Result<(), Refusal> {
        Allowlist::parse(rules).unwrap().check(address, ip(address), 80)
    }

    #[test]
    fn cidr_and_port_rules() {
        let rules = "10.0.0.0/8:80-443, 192.168.1.5";
        assert!(allows_ip(rules, "10.2.3.4", 443));
        assert!(!allows_ip(rules, "10.2.3.4", 444));
        assert_eq!(refusal(rules, "11.0.0.1"), Err(Refusal::NotListed));
        assert!(allows_ip(rules, "192.168.1.5", 22));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_checked_as_ipv4() {
        assert!(allows_ip("127.0.0.1:8080", "::ffff:127.0.0.1", 8080));
        assert!(!allows_ip("10.0.0.0/8", "::ffff:127.0.0.1", 80));
    }

    #[test]
    fn names_match_the_requested_name_not_the_address() {
        let rules = "intranet.corp:443, *.apps.corp";
        assert!(allows(rules, "INTRANET.corp.", "10.9.9.9", 443));
        assert!(allows(rules, "billing.apps.corp", "10.1.1.1", 8443));
        assert!(
            !allows(rules, "apps.corp", "10.1.1.1", 8443),
            "*.apps.corp needs a label in front"
        );
        assert!(!allows(rules, "evil.corp", "10.9.9.9", 443));
        // A name rule does not allow the same address asked for by IP literal.
        assert!(!allows_ip(rules, "10.9.9.9", 443));
    }

    #[test]
    fn wildcards_match_on_label_boundaries() {
        let rules = "*corp.test";
        assert!(allows(rules, "corp.test", "10.0.0.1", 80), "the domain itself");
        assert!(allows(rules, "x.corp.test", "10.0.0.1", 80));
        assert!(allows(rules, "a.b.corp.test", "10.0.0.1", 80));
        for other in ["evilcorp.test", "x.evilcorp.test", "corp.test.evil", ".corp.test"] {
            assert!(!allows(rules, other, "10.0.0.1", 80), "{other}");
        }
        assert!(!allows("*.corp.test", "evilcorp.test", "10.0.0.1", 80));
        let a = Allowlist::parse(rules).unwrap();
        assert!(a.allows_name("corp.test", 80) && a.allows_name("x.corp.test", 80));
        assert!(!a.allows_name("evilcorp.test", 80));
    }

    #[test]
    fn metadata_and_link_local_need_an_explicit_cidr() {
        for (address, why) in [
            ("169.254.169.254", Sensitive::LinkLocal),
            ("169.254.170.2", Sensitive::LinkLocal),
            ("fe80::1", Sensitive::LinkLocal),
            ("fd00:ec2::254", Sensitive::CloudMetadata),
        ] {
            assert_eq!(refusal("*", address), Err(Refusal::Sensitive(why)), "{address}");
        }
        // A name that resolves to the metadata address (DNS rebinding) is refused too.
        assert!(!allows("app.corp", "app.corp", "169.254.169.254", 80));
        assert!(allows_ip("169.254.169.254/32:80", "169.254.169.254", 80));
        assert!(allows_ip("*", "10.0.0.1", 80));
        // "Everything" written as a CIDR is still not the metadata service, nor this host.
        for all in ["0.0.0.0/0", "[::/0]", "169.0.0.0/8"] {
            for address in ["169.254.169.254", "::", "0.0.0.0"] {
                assert!(refusal(all, address).is_err(), "{all} {address}");
            }
        }
        assert!(allows_ip("0.0.0.0/0", "10.1.2.3", 80));
    }

    #[test]
    fn the_clouds_metadata_addresses_outside_link_local_are_sensitive() {
        for address in [
            "100.100.100.200",
            "168.63.129.16",
            "192.0.0.192",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "fd20:ce::254",
            "fd00:c1::a9fe:a9fe",
            "fd00:42::42",
            "::ffff:100.100.100.200",
        ] {
            for rules in ["*", "0.0.0.0/0, [::/0]", "100.64.0.0/10, 168.63.0.0/16, [fd00::/8]"] {
                assert_eq!(
                    refusal(rules, address),
                    Err(Refusal::Sensitive(Sensitive::CloudMetadata)),
                    "{rules} {address}"
                );
            }
        }
        // Their neighbours are ordinary addresses, and a rule naming one allows it.
        assert!(allows_ip("*", "100.100.100.201", 80) && allows_ip("*", "fd20:ce::253", 80));
        assert!(allows_ip("100.100.100.200", "100.100.100.200", 80));
        assert!(allows_ip("[fd00:ec2::254]:80", "fd00:ec2::254", 80));
    }

    #[test]
    fn ipv6_addresses_carrying_a_sensitive_ipv4_address_are_as_sensitive() {
        for (address, why) in [
            ("::169.254.169.254", Sensitive::LinkLocal),
            ("::ffff:169.254.169.254", Sensitive::LinkLocal),
            ("64:ff9b::169.254.169.254", Sensitive::LinkLocal),
            ("64:ff9b::a9fe:a9fe", Sensitive::LinkLocal),
            ("2002:a9fe:a9fe::", Sensitive::LinkLocal),
            ("2002:a9fe:a9fe:1::5", Sensitive::LinkLocal),
            ("64:ff9b::100.100.100.200", Sensitive::CloudMetadata),
            ("2002:6464:64c8::1", Sensitive::CloudMetadata),
            ("::127.0.0.1", Sensitive::ThisHost),
            ("64:ff9b::7f00:1", Sensitive::ThisHost),
            ("2002:7f00:1::", Sensitive::ThisHost),
        ] {
            for rules in ["*", "[::/0]", "[64:ff9b::/96], [2002::/16], [::/96]"] {
                assert_eq!(
                    refusal(rules, address),
                    Err(Refusal::Sensitive(why)),
                    "{rules} {address}"
                );
            }
        }
        // The same forms of ordinary addresses are ordinary.
        for address in ["64:ff9b::10.0.0.1", "2002:a00:1::1", "::10.0.0.1"] {
            assert!(allows_ip("*", address, 80), "{address}");
        }
        // A rule naming the carried address in that form allows it; the bare IPv4 rule does not.
        assert!(allows_ip("[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe", 80));
        assert!(allows_ip("[2002:a9fe:a9fe::/48]", "2002:a9fe:a9fe::1", 80));
        assert!(!allows_ip("169.254.169.254", "64:ff9b::a9fe:a9fe", 80));
    }

    #[test]
    fn the_local_use_nat64_prefix_carries_the_ipv4_address_in_its_last_32_bits() {
        let link_local = Err(Refusal::Sensitive(Sensitive::LinkLocal));
        assert_eq!(refusal("*", "64:ff9b:1::a9fe:a9fe"), link_local);
        // Whichever /96 inside the /48 the operator translates with.
        assert_eq!(refusal("[::/0]", "64:ff9b:1:2:3:4:a9fe:a9fe"), link_local);
        assert_eq!(refusal("*", "64:ff9b:1::7f00:1"), Err(Refusal::Sensitive(Sensitive::ThisHost)));
        assert!(allows_ip("*", "64:ff9b:1::a00:1", 80), "10.0.0.1 is ordinary");
        // A rule naming that address allows it; one merely containing it does not.
        assert!(allows_ip("[64:ff9b:1::a9fe:a9fe/128]", "64:ff9b:1::a9fe:a9fe", 80));
        assert!(allows_ip("[64:ff9b:1:2:3:4:a9fe:a9fe/128]", "64:ff9b:1:2:3:4:a9fe:a9fe", 80));
        for broad in ["[64:ff9b:1::/48]", "[64:ff9b:1::/96]", "169.254.169.254"] {
            assert!(!allows_ip(broad, "64:ff9b:1::a9fe:a9fe", 80), "{broad}");
        }
    }

    #[test]
    fn a_name_is_worth_resolving_only_when_a_rule_for_its_port_could_allow_it() {
        let a = Allowlist::parse("app.corp:443, *.apps.corp:8443").unwrap();
        assert!(a.may_allow_name("APP.corp.", 443) && a.may_allow_name("x.apps.corp", 8443));
        for (name, port) in [("localhost", 22), ("localhost", 443), ("app.corp", 22)] {
            assert!(!a.may_allow_name(name, port), "{name}:{port}");
        }
        let a = Allowlist::parse("10.0.0.0/8:80").unwrap();
        assert!(a.may_allow_name("anything.corp", 80) && !a.may_allow_name("anything.corp", 81));
    }

    #[test]
    fn only_a_rule_for_exactly_one_address_and_port_names_them() {
        let a = Allowlist::parse("10.0.0.9:3128, 10.0.0.0/8, [fd00::9]:3128, 10.0.0.7").unwrap();
        for (address, port) in [("10.0.0.9", 3128), ("::ffff:10.0.0.9", 3128), ("fd00::9", 3128)] {
            assert!(a.names_address_and_port(ip(address), port), "{address}");
        }
        assert!(!a.names_address_and_port(ip("10.0.0.9"), 3129));
        assert!(!a.names_address_and_port(ip("10.0.0.8"), 3128), "only inside the /8");
        assert!(!a.names_address_and_port(ip("10.0.0.7"), 3128), "every port is not this one");
    }

    #[test]
    fn the_endpoint_hosts_loopback_needs_a_rule_naming_it() {
        for address in ["127.0.0.1", "127.5.6.7", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::"] {
            for rules in ["*", "0.0.0.0/0, [::/0]", "*.corp"] {
                assert_eq!(
                    refusal(rules, address),
                    Err(Refusal::Sensitive(Sensitive::ThisHost)),
                    "{rules} {address}"
                );
            }
        }
        // `localhost` is refused by name rules and `*` alike: what counts is the address.
        assert!(!allows("localhost, *", "localhost", "127.0.0.1", 80));
        assert!(allows("127.0.0.1:8080", "localhost", "127.0.0.1", 8080));
        assert!(allows_ip("127.0.0.0/8", "127.5.6.7", 80));
        assert!(allows_ip("[::1]", "::1", 80));
    }

    #[test]
    fn ipv4_mapped_networks_are_ipv4_networks() {
        assert!(allows_ip("[::ffff:10.0.0.0/104]", "10.200.0.1", 80));
        assert!(!allows_ip("[::ffff:10.0.0.0/104]", "11.0.0.1", 80));
        assert!(Allowlist::parse("[::ffff:10.0.0.0/64]").is_err());
    }

    #[test]
    fn without_an_address_only_name_rules_allow() {
        let a = Allowlist::parse("*, 10.0.0.0/8, intranet.corp:443, *.apps.corp").unwrap();
        assert!(a.allows_name("intranet.corp", 443) && a.allows_name("x.apps.corp", 8080));
        assert!(!a.allows_name("intranet.corp", 80) && !a.allows_name("elsewhere.com", 443));
    }

    #[test]
    fn names_that_spell_addresses_are_not_names() {
        // A proxy that resolves names would take these for addresses the endpoint never checks.
        let a = Allowlist::parse("*.254, *.corp, *.0x7f.corp").unwrap_err();
        assert!(a.to_string().contains("*.254"), "{a}");
        let a = Allowlist::parse("*.corp, *corp").unwrap();
        for name in ["169.254.169.254.corp.1", "0x7f.corp.0x1", "2130706433", "[::1]", "::1"] {
            assert!(!a.allows_name(name, 80), "{name}");
        }
        assert!(a.allows_name("0x7f.corp", 80), "a label that is not the last may be anything");
    }

    #[test]
    fn ipv6_rules_in_brackets() {
        let rules = "[fd12::/16]:443, [::1]";
        assert!(allows_ip(rules, "fd12::5", 443));
        assert!(!allows_ip(rules, "fd13::5", 443));
        assert!(allows_ip(rules, "::1", 9999));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "10.0.0.0/33",
            "host:0",
            "host:9-1",
            "a*b",
            "caf\u{e9}.corp",
            "[::1",
            "*.",
            "**.x",
            "10.0.0",
        ] {
            let err = Allowlist::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(Allowlist::parse("").unwrap().is_empty());
    }
}
