//! The HTTP proxy protocol for scanners, without I/O: a request head parsed from the bytes
//! received so far, where it wants to go (`CONNECT host:port`, or an absolute URI to forward),
//! the scanner's `Proxy-Authorization`, and the responses the proxy sends.

use base64::Engine;
use ism_tunnel_proto::TargetAddr;
use std::net::IpAddr;

/// Longest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, PartialEq, Eq)]
pub enum Parse<T> {
    Incomplete,
    Done(T, usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request line")]
    BadRequestLine,
    #[error("unsupported HTTP version {0:?}")]
    BadVersion(String),
    #[error("malformed header line")]
    BadHeader,
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("request head is not UTF-8")]
    NotUtf8,
    #[error("{0}")]
    BadTarget(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The scanner's credentials from `Proxy-Authorization: Basic`.
    pub fn proxy_credentials(&self) -> Option<(String, String)> {
        let value = self.header("proxy-authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
        let (user, pass) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        Some((user.to_string(), pass.to_string()))
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a request head (up to and including the blank line).
pub fn parse_head(buf: &[u8]) -> Result<Parse<RequestHead>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Err(HttpError::TooLarge)
        } else {
            Ok(Parse::Incomplete)
        };
    };
    if end + 4 > MAX_HEAD {
        return Err(HttpError::TooLarge);
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| HttpError::NotUtf8)?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if is_token(m) && !t.is_empty() => (m, t, v),
        _ => return Err(HttpError::BadRequestLine),
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::BadVersion(version.to_string()));
    }
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::TooManyHeaders);
        }
        let (name, value) = line.split_once(':').ok_or(HttpError::BadHeader)?;
        if !is_token(name) || value.contains(['\r', '\n']) {
            return Err(HttpError::BadHeader);
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Parse::Done(
        RequestHead {
            method: method.to_string(),
            target: target.to_string(),
            version: version.to_string(),
            headers,
        },
        end + 4,
    ))
}

/// Where a proxy request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `CONNECT`: a raw tunnel to the target.
    Tunnel(TargetAddr),
    /// An absolute URI: the request, rewritten for the origin server, is sent on a fresh stream.
    Forward { target: TargetAddr, request: Vec<u8> },
}

fn target_of(authority: &str, default_port: Option<u16>) -> Result<TargetAddr, HttpError> {
    let bad = || HttpError::BadTarget(format!("{authority:?} is not host:port"));
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(bad()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
        None => default_port.ok_or_else(bad)?,
    };
    if host.is_empty() || host.len() > 255 || host.contains(['/', '@', ' ']) {
        return Err(bad());
    }
    Ok(match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => TargetAddr::Ipv4(ip, port),
        Ok(IpAddr::V6(ip)) => TargetAddr::Ipv6(ip, port),
        Err(_) => TargetAddr::Domain(host.to_string(), port),
    })
}

/// Headers that belong to the hop to the proxy, not to the origin server.
const HOP_BY_HOP: &[&str] = &[
    "proxy-authorization",
    "proxy-connection",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

pub fn destination(head: &RequestHead) -> Result<Destination, HttpError> {
    if head.method.eq_ignore_ascii_case("CONNECT") {
        return Ok(Destination::Tunnel(target_of(&head.target, None)?));
    }
    let rest = head.target.strip_prefix("http://").ok_or_else(|| {
        HttpError::BadTarget(if head.target.starts_with('/') {
            "this is a proxy: send absolute URIs (http://host/path) or CONNECT".into()
        } else {
            format!("only http:// URIs can be forwarded (use CONNECT for {:?})", head.target)
        })
    })?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let target = target_of(authority, Some(80))?;
    let mut request = format!("{} {path} {}\r\n", head.method, head.version);
    if head.header("host").is_none() {
        request.push_str(&format!("Host: {authority}\r\n"));
    }
    for (k, v) in
        head.headers.iter().filter(|(k, _)| !HOP_BY_HOP.contains(&k.to_ascii_lowercase().as_str()))
    {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    // One request per connection: the next request may be for another host.
    request.push_str("Connection: close\r\n\r\n");
    Ok(Destination::Forward { target, request: request.into_bytes() })
}

/// A complete response from the proxy itself, with a short plain-text body saying why.
pub fn response(status: u16, reason: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} {reason}\r\n{extra_headers}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn head(raw: &str) -> RequestHead {
        match parse_head(raw.as_bytes()).unwrap() {
            Parse::Done(h, n) => {
                assert_eq!(n, raw.len());
                h
            }
            Parse::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn connect_requests_name_the_tunnel_target() {
        let h = head("CONNECT intranet.corp:443 HTTP/1.1\r\nHost: intranet.corp:443\r\nProxy-Authorization: Basic ZGMxOnNlY3JldA==\r\n\r\n");
        assert_eq!(
            destination(&h).unwrap(),
            Destination::Tunnel(TargetAddr::Domain("intranet.corp".into(), 443))
        );
        assert_eq!(h.proxy_credentials(), Some(("dc1".into(), "secret".into())));
        let v6 = head("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n");
        assert_eq!(
            destination(&v6).unwrap(),
            Destination::Tunnel(TargetAddr::Ipv6(std::net::Ipv6Addr::LOCALHOST, 8443))
        );
        assert!(
            destination(&head("CONNECT intranet.corp HTTP/1.1\r\n\r\n")).is_err(),
            "CONNECT needs a port"
        );
    }

    #[test]
    fn absolute_uris_are_rewritten_for_the_origin() {
        let h = head("GET http://10.0.0.5:8080/a/b?c=d HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nProxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n");
        let Destination::Forward { target, request } = destination(&h).unwrap() else { panic!() };
        assert_eq!(target, TargetAddr::Ipv4(Ipv4Addr::new(10, 0, 0, 5), 8080));
        let text = String::from_utf8(request).unwrap();
        assert_eq!(text, "GET /a/b?c=d HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n");
        let bare = head("GET http://app.corp HTTP/1.0\r\n\r\n");
        let Destination::Forward { target, request } = destination(&bare).unwrap() else {
            panic!()
        };
        assert_eq!(target, TargetAddr::Domain("app.corp".into(), 80));
        assert!(String::from_utf8(request)
            .unwrap()
            .starts_with("GET / HTTP/1.0\r\nHost: app.corp\r\n"));
        let query = head("GET http://app.corp?x=1 HTTP/1.1\r\n\r\n");
        let Destination::Forward { request, .. } = destination(&query).unwrap() else { panic!() };
        assert!(String::from_utf8(request).unwrap().starts_with("GET /?x=1 HTTP/1.1"));
    }

    #[test]
    fn non_proxy_requests_and_garbage_are_refused_with_a_reason() {
        assert!(
            matches!(destination(&head("GET / HTTP/1.1\r\n\r\n")), Err(HttpError::BadTarget(m)) if m.contains("this is a proxy"))
        );
        assert!(
            matches!(destination(&head("GET https://x/ HTTP/1.1\r\n\r\n")), Err(HttpError::BadTarget(m)) if m.contains("CONNECT"))
        );
        assert_eq!(parse_head(b"GET /\r\n\r\n"), Err(HttpError::BadRequestLine));
        assert_eq!(
            parse_head(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HttpError::BadVersion("HTTP/2.0".into()))
        );
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"), Err(HttpError::BadHeader));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x"), Ok(Parse::Incomplete));
        assert_eq!(parse_head(&vec![b'a'; MAX_HEAD]), Err(HttpError::TooLarge));
        assert_eq!(parse_head(b"\x05\x01\x02"), Ok(Parse::Incomplete));
        assert_eq!(
            parse_head(b"\x05\x01\x02\r\n\r\n"),
            Err(HttpError::BadRequestLine),
            "SOCKS bytes on the HTTP port"
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Parse::Done(h, n)) = parse_head(&bytes) {
                prop_assert!(n <= bytes.len());
                let _ = destination(&h);
                let _ = h.proxy_credentials();
            }
        }
    }
}
