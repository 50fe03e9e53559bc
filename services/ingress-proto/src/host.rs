//! The host a scanner names (a SOCKS5 domain, the host of `CONNECT host:port` or of an absolute
//! URI): an IP literal or a host name DNS could hold, nothing else. A target is carried through
//! the tunnel, recorded in the event log and shown in logs and the audit; a name with a line
//! break or an escape sequence in it could forge lines there and would never resolve anyway, so
//! it is refused here, before anything is opened or recorded.

use ism_tunnel_proto::TargetAddr;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest host name, without its trailing dot (RFC 1035 section 2.3.4 gives 255 octets on the
/// wire: 253 characters written out).
pub const MAX_NAME: usize = 253;
/// Longest label (RFC 1035 section 2.3.4).
pub const MAX_LABEL: usize = 63;

/// Why a host was refused. The messages never echo the refused bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host name")]
    Empty,
    #[error("host name longer than {MAX_NAME} characters")]
    TooLong,
    #[error("host name with an empty label (a leading dot or two dots in a row)")]
    EmptyLabel,
    #[error("host name label longer than {MAX_LABEL} characters")]
    LongLabel,
    #[error("host name label that begins or ends with '-'")]
    Hyphen,
    #[error("host name with a character other than a letter, digit, '-', '_' or '.' at byte {0}")]
    Character(usize),
    #[error("not an IPv6 address between the brackets")]
    Ipv6,
}

/// Checks a host name (RFC 1123 section 2.1): labels of ASCII letters, digits and `-` (not first
/// or last), 1..63 characters each, 253 in all, and one trailing dot allowed. `_` is allowed
/// too, as DNS itself allows it: service names (`_ldap._tcp.corp`) and internal hosts whose
/// names carry one, which scanners must be able to reach. Works on bytes, so that anything that
/// is not ASCII is refused before it becomes text.
pub fn host_name(name: &[u8]) -> Result<&str, HostError> {
    let bare = name.strip_suffix(b".").unwrap_or(name);
    if bare.is_empty() {
        return Err(HostError::Empty);
    }
    if bare.len() > MAX_NAME {
        return Err(HostError::TooLong);
    }
    if let Some(at) =
        name.iter().position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    {
        return Err(HostError::Character(at));
    }
    for label in bare.split(|b| *b == b'.') {
        match label {
            [] => return Err(HostError::EmptyLabel),
            l if l.len() > MAX_LABEL => return Err(HostError::LongLabel),
            [b'-', ..] | [.., b'-'] => return Err(HostError::Hyphen),
            _ => {}
        }
    }
    // Only ASCII letters, digits and `-_.` are left, so this cannot fail.
    std::str::from_utf8(name).map_err(|_| HostError::Character(0))
}

/// The target for a host written without brackets and its port: a dotted IPv4 address is that
/// address; anything else must be a host name, which the endpoint resolves.
pub fn name_or_ipv4(host: &[u8], port: u16) -> Result<TargetAddr, HostError> {
    let name = host_name(host)?;
    Ok(match name.parse::<Ipv4Addr>() {
        Ok(ip) => TargetAddr::Ipv4(ip, port),
        Err(_) => TargetAddr::Domain(name.to_string(), port),
    })
}

/// An IPv6 address as written between brackets.
pub fn ipv6(text: &[u8], port: u16) -> Result<TargetAddr, HostError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<Ipv6Addr>().ok())
        .map(|ip| TargetAddr::Ipv6(ip, port))
        .ok_or(HostError::Ipv6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn host_names_as_dns_holds_them() {
        for ok in [
            "intranet",
            "app.corp.example",
            "app.corp.example.",
            "x-1.b2",
            "_ldap._tcp.corp",
            "web_01.corp",
            "0x7f.1",
            &format!("{}.corp", "a".repeat(63)),
            &["b".repeat(63), "c".repeat(63), "d".repeat(63), "e".repeat(61)].join("."),
        ] {
            assert_eq!(host_name(ok.as_bytes()), Ok(ok), "{ok}");
        }
    }

    #[test]
    fn anything_else_is_refused_without_echoing_it() {
        let cases: &[(&[u8], HostError)] = &[
            (b"", HostError::Empty),
            (b".", HostError::Empty),
            (b"evil\n2026-01-01 #202 EndpointDeleted", HostError::Character(4)),
            (b"x\x1b[2J.corp", HostError::Character(1)),
            (b"a b", HostError::Character(1)),
            (b"a\0", HostError::Character(1)),
            (b"caf\xc3\xa9.corp", HostError::Character(3)),
            (b"\xff", HostError::Character(0)),
            (b"user@host", HostError::Character(4)),
            (b"a/b", HostError::Character(1)),
            (b"::1", HostError::Character(0)),
            (b"[::1]", HostError::Character(0)),
            (b"a%0a.corp", HostError::Character(1)),
            (b"a..b", HostError::EmptyLabel),
            (b".a", HostError::EmptyLabel),
            (b"a..", HostError::EmptyLabel),
            (b"-a.corp", HostError::Hyphen),
            (b"a-.corp", HostError::Hyphen),
        ];
        for (bytes, err) in cases {
            assert_eq!(host_name(bytes), Err(*err), "{}", bytes.escape_ascii());
            assert!(!err.to_string().contains("evil"));
        }
        let long_label = format!("{}.corp", "a".repeat(64));
        assert_eq!(host_name(long_label.as_bytes()), Err(HostError::LongLabel));
        let long_name = ["b".repeat(63), "c".repeat(63), "d".repeat(63), "e".repeat(62)].join(".");
        assert_eq!(long_name.len(), 254);
        assert_eq!(host_name(long_name.as_bytes()), Err(HostError::TooLong));
    }

    #[test]
    fn ip_literals() {
        assert_eq!(
            name_or_ipv4(b"10.0.0.5", 80),
            Ok(TargetAddr::Ipv4(Ipv4Addr::new(10, 0, 0, 5), 80))
        );
        assert_eq!(name_or_ipv4(b"app", 80), Ok(TargetAddr::Domain("app".into(), 80)));
        assert_eq!(ipv6(b"::1", 443), Ok(TargetAddr::Ipv6(Ipv6Addr::LOCALHOST, 443)));
        assert_eq!(ipv6(b"fe80::1%eth0", 443), Err(HostError::Ipv6));
        assert_eq!(ipv6(b"10.0.0.1", 443), Err(HostError::Ipv6));
        assert_eq!(ipv6(b"::1\n", 443), Err(HostError::Ipv6));
    }

    proptest! {
        #[test]
        fn an_accepted_host_is_printable_ascii_without_controls(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(target) = name_or_ipv4(&bytes, 80) {
                let shown = target.to_string();
                prop_assert!(shown.bytes().all(|b| b.is_ascii_graphic()), "{shown:?}");
            }
        }

        #[test]
        fn names_from_the_allowed_alphabet_are_accepted(labels in proptest::collection::vec("[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?", 1..4)) {
            let name = labels.join(".");
            prop_assert_eq!(host_name(name.as_bytes()), Ok(name.as_str()));
        }
    }
}
