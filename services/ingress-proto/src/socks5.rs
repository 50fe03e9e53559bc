//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929), without I/O.
//!
//! Each parser takes the bytes received so far and answers `Incomplete` (read more), `Done`
//! (the message and how many bytes it used) or an error that says what was wrong and which reply
//! the client should get. Nothing here blocks, allocates beyond the message, or panics.

use crate::host::{self, HostError};
use ism_tunnel_proto::{OpenFailure, TargetAddr};
use std::net::{Ipv4Addr, Ipv6Addr};

pub const VERSION: u8 = 5;
const AUTH_VERSION: u8 = 1;
pub const METHOD_USER_PASS: u8 = 0x02;
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
pub const CMD_CONNECT: u8 = 0x01;

/// A parse that may need more bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<T> {
    Incomplete,
    Done(T, usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocksError {
    #[error("not SOCKS5: version byte {0}")]
    BadVersion(u8),
    #[error("client offered no authentication method")]
    NoMethods,
    #[error("bad username/password sub-negotiation version {0}")]
    BadAuthVersion(u8),
    #[error("empty username")]
    EmptyUsername,
    #[error("username or password is not UTF-8")]
    NotUtf8,
    #[error("address type {0} is not supported")]
    AddressType(u8),
    #[error("invalid target: {0}")]
    BadHost(#[from] HostError),
    #[error("destination port 0: no service can listen there")]
    PortZero,
}

impl SocksError {
    /// The reply code to send for a bad request, when a reply is possible.
    pub fn reply(&self) -> Reply {
        match self {
            SocksError::AddressType(_) => Reply::AddressTypeNotSupported,
            // A domain that is no host name (a control character, a label too long ...) names no
            // host that can be reached: RFC 1928's "host unreachable" (0x04) is what a client
            // reports for a name that does not resolve, the closest to the truth. Not 0x08: the
            // address type (a domain) is supported; not 0x01: nothing failed in the server, and
            // retrying the same name cannot succeed.
            SocksError::BadHost(_) => Reply::HostUnreachable,
            // Port 0 is a malformed request like a bad version: "general failure" (0x01), the
            // code RFC 1928 leaves for a request the server will not carry out. Not 0x08: the
            // address type is supported; not 0x05 ("connection refused"): no target was asked, and
            // a scanner would record a closed port the gateway never tried.
            _ => Reply::GeneralFailure,
        }
    }
}

/// The methods a client offers.
#[derive(Debug, PartialEq, Eq)]
pub struct Greeting {
    pub methods: Vec<u8>,
}

pub fn parse_greeting(buf: &[u8]) -> Result<Parse<Greeting>, SocksError> {
    let Some(&ver) = buf.first() else { return Ok(Parse::Incomplete) };
    if ver != VERSION {
        return Err(SocksError::BadVersion(ver));
    }
    let Some(&n) = buf.get(1) else { return Ok(Parse::Incomplete) };
    if n == 0 {
        return Err(SocksError::NoMethods);
    }
    let end = 2 + n as usize;
    if buf.len() < end {
        return Ok(Parse::Incomplete);
    }
    Ok(Parse::Done(Greeting { methods: buf[2..end].to_vec() }, end))
}

/// Username and password (RFC 1929).
#[derive(PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

pub fn parse_auth(buf: &[u8]) -> Result<Parse<Credentials>, SocksError> {
    let Some(&ver) = buf.first() else { return Ok(Parse::Incomplete) };
    if ver != AUTH_VERSION {
        return Err(SocksError::BadAuthVersion(ver));
    }
    let Some(&ulen) = buf.get(1) else { return Ok(Parse::Incomplete) };
    if ulen == 0 {
        return Err(SocksError::EmptyUsername);
    }
    let ustart = 2;
    let uend = ustart + ulen as usize;
    let Some(&plen) = buf.get(uend) else { return Ok(Parse::Incomplete) };
    let pend = uend + 1 + plen as usize;
    if buf.len() < pend {
        return Ok(Parse::Incomplete);
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SocksError::NotUtf8);
    Ok(Parse::Done(
        Credentials { username: text(&buf[ustart..uend])?, password: text(&buf[uend + 1..pend])? },
        pend,
    ))
}

/// A request: the command and where to.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub command: u8,
    pub target: TargetAddr,
}

pub fn parse_request(buf: &[u8]) -> Result<Parse<Request>, SocksError> {
    if buf.len() < 4 {
        if let Some(&ver) = buf.first() {
            if ver != VERSION {
                return Err(SocksError::BadVersion(ver));
            }
        }
        return Ok(Parse::Incomplete);
    }
    if buf[0] != VERSION {
        return Err(SocksError::BadVersion(buf[0]));
    }
    let command = buf[1];
    let (target, end) = match buf[3] {
        0x01 => {
            if buf.len() < 10 {
                return Ok(Parse::Incomplete);
            }
            let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            (TargetAddr::Ipv4(ip, u16::from_be_bytes([buf[8], buf[9]])), 10)
        }
        0x04 => {
            if buf.len() < 22 {
                return Ok(Parse::Incomplete);
            }
            let mut o = [0u8; 16];
            o.copy_from_slice(&buf[4..20]);
            (TargetAddr::Ipv6(Ipv6Addr::from(o), u16::from_be_bytes([buf[20], buf[21]])), 22)
        }
        0x03 => {
            let Some(&len) = buf.get(4) else { return Ok(Parse::Incomplete) };
            let end = 5 + len as usize + 2;
            if buf.len() < end {
                return Ok(Parse::Incomplete);
            }
            let port = u16::from_be_bytes([buf[end - 2], buf[end - 1]]);
            let name = &buf[5..end - 2];
            // Some clients send an address as a domain: an IPv6 one is taken as the address (it is
            // no host name); a dotted IPv4 one as well (`name_or_ipv4`).
            let target = match host::ipv6(name, port) {
                Ok(v6) => v6,
                Err(_) => host::name_or_ipv4(name, port)?,
            };
            (target, end)
        }
        other => return Err(SocksError::AddressType(other)),
    };
    // Refused as the HTTP proxy refuses `host:0`: nothing listens on port 0, and the request is
    // answered here rather than carried to the endpoint to fail there.
    if target.port() == 0 {
        return Err(SocksError::PortZero);
    }
    Ok(Parse::Done(Request { command, target }, end))
}

/// Reply codes of RFC 1928 section 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    NetworkUnreachable = 0x03,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

impl From<OpenFailure> for Reply {
    fn from(f: OpenFailure) -> Self {
        match f {
            OpenFailure::General | OpenFailure::Busy => Reply::GeneralFailure,
            OpenFailure::NotAllowed => Reply::NotAllowed,
            OpenFailure::NetworkUnreachable | OpenFailure::NotHeld => Reply::NetworkUnreachable,
            OpenFailure::HostUnreachable => Reply::HostUnreachable,
            OpenFailure::ConnectionRefused => Reply::ConnectionRefused,
            OpenFailure::TimedOut => Reply::TtlExpired,
        }
    }
}

/// The server's method choice.
pub fn method_selection(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// The RFC 1929 status: 0 accepts, anything else refuses (and the connection closes).
pub fn auth_status(ok: bool) -> [u8; 2] {
    [AUTH_VERSION, if ok { 0 } else { 1 }]
}

/// A reply to a request. The bound address is not meaningful through a tunnel, so it is
/// 0.0.0.0:0, as many SOCKS servers answer.
pub fn reply(code: Reply) -> [u8; 10] {
    [VERSION, code as u8, 0, 0x01, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn greeting_needs_all_methods() {
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(Parse::Incomplete));
        assert_eq!(
            parse_greeting(&[5, 2, 0, 2, 99]),
            Ok(Parse::Done(Greeting { methods: vec![0, 2] }, 4))
        );
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(SocksError::BadVersion(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(SocksError::NoMethods));
        // An HTTP request sent to the SOCKS port is refused at once.
        assert_eq!(parse_greeting(b"GET / HTTP/1.1"), Err(SocksError::BadVersion(b'G')));
    }

    #[test]
    fn credentials_parse_and_never_print_the_password() {
        let mut b = vec![1, 3];
        b.extend_from_slice(b"dc1");
        b.push(6);
        b.extend_from_slice(b"s3cret");
        let Parse::Done(c, n) = parse_auth(&b).unwrap() else { panic!() };
        assert_eq!((c.username.as_str(), c.password.as_str(), n), ("dc1", "s3cret", b.len()));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(parse_auth(&b[..5]), Ok(Parse::Incomplete));
        assert_eq!(parse_auth(&[1, 0, 0]), Err(SocksError::EmptyUsername));
        assert_eq!(parse_auth(&[1, 1, 0xff, 0]), Err(SocksError::NotUtf8));
    }

    #[test]
    fn requests_for_each_address_type() {
        let Parse::Done(r, 10) = parse_request(&[5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.target, TargetAddr::Ipv4(Ipv4Addr::LOCALHOST, 8080));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 80]);
        let Parse::Done(r, 22) = parse_request(&v6).unwrap() else { panic!() };
        assert_eq!(r.target, TargetAddr::Ipv6(Ipv6Addr::LOCALHOST, 80));
        let mut d = vec![5, 1, 0, 3, 9];
        d.extend_from_slice(b"intranet1");
        d.extend_from_slice(&[1, 187]);
        let Parse::Done(r, n) = parse_request(&d).unwrap() else { panic!() };
        assert_eq!((r.target, n), (TargetAddr::Domain("intranet1".into(), 443), d.len()));
        assert_eq!(parse_request(&d[..8]), Ok(Parse::Incomplete));
        assert_eq!(parse_request(&[5, 1, 0, 9, 0]), Err(SocksError::AddressType(9)));
        let empty = parse_request(&[5, 1, 0, 3, 0, 0, 80]);
        assert_eq!(empty, Err(SocksError::BadHost(HostError::Empty)));
    }

    #[test]
    fn port_zero_is_refused_for_each_address_type_with_a_general_failure() {
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 0]);
        let mut d = domain_request(b"intranet1");
        let at = d.len() - 2;
        d[at..].copy_from_slice(&[0, 0]);
        for request in [&[5, 1, 0, 1, 127, 0, 0, 1, 0, 0][..], &v6, &d] {
            let e = parse_request(request).unwrap_err();
            assert_eq!(e, SocksError::PortZero);
            assert_eq!(e.reply(), Reply::GeneralFailure);
        }
        // Only 0 itself: ports 1 and 256 (a zero in either byte) are fine.
        assert!(parse_request(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 1]).is_ok());
        assert!(parse_request(&[5, 1, 0, 1, 127, 0, 0, 1, 1, 0]).is_ok());
    }

    fn domain_request(name: &[u8]) -> Vec<u8> {
        let mut d = vec![5, 1, 0, 3, name.len() as u8];
        d.extend_from_slice(name);
        d.extend_from_slice(&[0, 80]);
        d
    }

    #[test]
    fn a_domain_that_is_no_host_name_is_host_unreachable() {
        for (name, err) in [
            (&b"evil\n2026-11-23 16:40:01.123Z  #202 EndpointDeleted"[..], HostError::Character(4)),
            (b"x\x1b[31m.corp", HostError::Character(1)),
            (b"caf\xc3\xa9", HostError::Character(3)),
            (b"a..b", HostError::EmptyLabel),
        ] {
            let e = parse_request(&domain_request(name)).unwrap_err();
            assert_eq!(e, SocksError::BadHost(err));
            assert_eq!(e.reply(), Reply::HostUnreachable);
            assert!(!e.to_string().contains('\n') && !e.to_string().contains("evil"), "{e}");
        }
        // The parse waits for the whole name before judging it.
        assert_eq!(parse_request(&domain_request(b"a\nb")[..6]), Ok(Parse::Incomplete));
    }

    #[test]
    fn addresses_written_as_domains_are_addresses() {
        let Parse::Done(r, _) = parse_request(&domain_request(b"::1")).unwrap() else { panic!() };
        assert_eq!(r.target, TargetAddr::Ipv6(Ipv6Addr::LOCALHOST, 80));
        let Parse::Done(r, _) = parse_request(&domain_request(b"10.1.2.3")).unwrap() else {
            panic!()
        };
        assert_eq!(r.target, TargetAddr::Ipv4(Ipv4Addr::new(10, 1, 2, 3), 80));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_greeting(&bytes);
            let _ = parse_auth(&bytes);
            let _ = parse_request(&bytes);
        }

        #[test]
        fn no_accepted_target_holds_a_control_character(name in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Parse::Done(r, _)) = parse_request(&domain_request(&name)) {
                let shown = r.target.to_string();
                prop_assert!(!shown.chars().any(|c| c.is_control() || c == ' '), "{shown:?}");
            }
        }

        #[test]
        fn a_done_parse_never_claims_more_than_it_was_given(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Parse::Done(_, n)) = parse_request(&bytes) { prop_assert!(n <= bytes.len()); }
            if let Ok(Parse::Done(_, n)) = parse_auth(&bytes) { prop_assert!(n <= bytes.len()); }
            if let Ok(Parse::Done(_, n)) = parse_greeting(&bytes) { prop_assert!(n <= bytes.len()); }
        }
    }
}
