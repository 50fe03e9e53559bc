//! The HTTP proxy protocol for scanners, without I/O: a request head parsed from the bytes
//! received so far, where it wants to go (`CONNECT host:port`, or an absolute URI to forward),
//! the scanner's `Proxy-Authorization`, and the responses the proxy sends.
//!
//! The parser is strict wherever leniency would let it and the target disagree about what was
//! sent (RFC 9112): every line ends with CRLF (a bare LF or CR is refused at once, not guessed
//! at), no obs-fold, no whitespace before a header's colon, a request target of visible ASCII
//! only, header values without control characters, and a body length that leaves no doubt
//! ([`body::framing`]). A forwarded request is rewritten for the origin server (origin-form,
//! `Host` from the URI, no proxy or hop-by-hop headers, `Connection: close`) and is the only
//! request of its connection: its body is passed through up to its end ([`body::Body`]) and
//! nothing after it.

pub mod body;

use crate::host::{self, HostError};
use base64::Engine;
use body::Body;
use ism_tunnel_proto::TargetAddr;

/// Longest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, PartialEq, Eq)]
pub enum Parse<T> {
    Incomplete,
    Done(T, usize),
}

/// Why a request was refused (400). The messages say which rule was broken and never echo the
/// client's bytes, so they are safe to send back and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("bare LF in the request head: lines end with CRLF")]
    BareLf,
    #[error("bare CR in the request head: lines end with CRLF")]
    BareCr,
    #[error("malformed request line")]
    BadRequestLine,
    #[error("the request target holds a space, a control character or a non-ASCII byte")]
    TargetCharacter,
    #[error("unsupported HTTP version: HTTP/1.1 and HTTP/1.0 are served")]
    BadVersion,
    #[error("malformed header line")]
    BadHeader,
    #[error("obs-fold (a header line continued on the next line) is not accepted")]
    ObsFold,
    #[error("a header value holds a control character")]
    HeaderCharacter,
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("request head is not UTF-8")]
    NotUtf8,
    #[error("both Content-Length and Transfer-Encoding: the body's length is ambiguous")]
    BothLengths,
    #[error("Content-Length must be one decimal number, given once")]
    ContentLength,
    #[error("Transfer-Encoding must end with chunked, once, in an HTTP/1.1 request")]
    TransferEncoding,
    #[error("Connection must list header names, and not Content-Length, Transfer-Encoding or Host, which the request needs end to end")]
    ConnectionOption,
    #[error("this is a proxy: send absolute URIs (http://host/path) or CONNECT")]
    NotForProxy,
    #[error("only http:// URIs can be forwarded (use CONNECT for https and other protocols)")]
    NotHttp,
    #[error("the target is not host:port")]
    BadAuthority,
    #[error("CONNECT needs a port: host:port")]
    NoPort,
    #[error("the port is not a number from 1 to 65535")]
    BadPort,
    #[error("invalid target: {0}")]
    BadHost(#[from] HostError),
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

/// Where the head ends (just after its empty line), if it is all there. Every LF must end a
/// CRLF: a bare one is refused as soon as it arrives, rather than waited on until the timeout.
fn head_end(buf: &[u8]) -> Result<Option<usize>, HttpError> {
    let mut line_start = 0;
    let scanned = &buf[..buf.len().min(MAX_HEAD)];
    for i in scanned.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i) {
        if i == 0 || scanned[i - 1] != b'\r' {
            return Err(HttpError::BareLf);
        }
        if line_start > 0 && i == line_start + 1 {
            return Ok(Some(i + 1));
        }
        line_start = i + 1;
    }
    Ok(None)
}

/// A header value may hold visible characters, spaces and tabs (RFC 9110 section 5.5), never
/// another control character.
fn is_field_value(v: &str) -> bool {
    v.chars().all(|c| c == '\t' || !c.is_control())
}

/// Parses a request head (up to and including the blank line).
pub fn parse_head(buf: &[u8]) -> Result<Parse<RequestHead>, HttpError> {
    let Some(end) = head_end(buf)? else {
        return if buf.len() >= MAX_HEAD {
            Err(HttpError::TooLarge)
        } else {
            Ok(Parse::Incomplete)
        };
    };
    // The head without its final empty line's CRLFs.
    let text = std::str::from_utf8(&buf[..end - 4]).map_err(|_| HttpError::NotUtf8)?;
    let mut lines = text.split("\r\n");
    if lines.clone().any(|l| l.contains('\r')) {
        return Err(HttpError::BareCr);
    }
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if is_token(m) && !t.is_empty() => (m, t, v),
        _ => return Err(HttpError::BadRequestLine),
    };
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HttpError::TargetCharacter);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::BadVersion);
    }
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::TooManyHeaders);
        }
        if line.starts_with([' ', '\t']) {
            return Err(HttpError::ObsFold);
        }
        // No whitespace between the name and the colon (RFC 9112 section 5.1): not a token.
        let (name, value) = line.split_once(':').ok_or(HttpError::BadHeader)?;
        if !is_token(name) {
            return Err(HttpError::BadHeader);
        }
        if !is_field_value(value) {
            return Err(HttpError::HeaderCharacter);
        }
        headers.push((name.to_string(), value.trim_matches([' ', '\t']).to_string()));
    }
    Ok(Parse::Done(
        RequestHead {
            method: method.to_string(),
            target: target.to_string(),
            version: version.to_string(),
            headers,
        },
        end,
    ))
}

/// Where a proxy request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `CONNECT`: a raw tunnel to the target.
    Tunnel(TargetAddr),
    /// An absolute URI: the request, rewritten for the origin server, is sent on a fresh stream,
    /// followed by its body as far as `body` says, and nothing else.
    Forward { target: TargetAddr, request: Vec<u8>, body: Body },
}

/// `host:port` (or `[v6]:port`), the port `default_port` when absent.
fn authority(text: &str, default_port: Option<u16>) -> Result<TargetAddr, HttpError> {
    let (host, bracketed, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (h, after) = rest.split_once(']').ok_or(HttpError::BadAuthority)?;
            match after {
                "" => (h, true, None),
                a => (h, true, Some(a.strip_prefix(':').ok_or(HttpError::BadAuthority)?)),
            }
        }
        None => match text.rsplit_once(':') {
            Some((h, p)) => (h, false, Some(p)),
            None => (text, false, None),
        },
    };
    let port = match port.filter(|p| !p.is_empty()) {
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().ok().filter(|p| *p > 0).ok_or(HttpError::BadPort)?
        }
        Some(_) => return Err(HttpError::BadPort),
        None => default_port.ok_or(HttpError::NoPort)?,
    };
    Ok(if bracketed {
        host::ipv6(host.as_bytes(), port)?
    } else {
        host::name_or_ipv4(host.as_bytes(), port)?
    })
}

/// Headers that belong to the hop to the proxy, not to the origin server (RFC 9110 section
/// 7.6.1), and the scanner's credentials. `Transfer-Encoding` is not among them: the body is
/// passed through in the coding it came in, so the origin needs to know it. `Host` is replaced
/// by the URI's authority (RFC 9112 section 3.2.2).
const HOP_BY_HOP: &[&str] = &[
    "proxy-authorization",
    "proxy-connection",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// The header names the client's `Connection` headers list (lower-cased): they are hop-by-hop
/// too. Naming one the request needs end to end would make the rewritten request mean something
/// else (without its `Content-Length`, its body would be read as the next request): refused.
fn connection_options(head: &RequestHead) -> Result<Vec<String>, HttpError> {
    let mut options = Vec::new();
    for (_, value) in head.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("connection")) {
        for option in
            value.split(',').map(|o| o.trim_matches([' ', '\t'])).filter(|o| !o.is_empty())
        {
            let option = option.to_ascii_lowercase();
            if !is_token(&option)
                || ["content-length", "transfer-encoding", "host"].contains(&option.as_str())
            {
                return Err(HttpError::ConnectionOption);
            }
            options.push(option);
        }
    }
    Ok(options)
}

pub fn destination(head: &RequestHead) -> Result<Destination, HttpError> {
    if head.method.eq_ignore_ascii_case("CONNECT") {
        return Ok(Destination::Tunnel(authority(&head.target, None)?));
    }
    let rest = match head.target.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &head.target[7..],
        _ if head.target.starts_with('/') => return Err(HttpError::NotForProxy),
        _ => return Err(HttpError::NotHttp),
    };
    let (authority_text, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let target = authority(authority_text, Some(80))?;
    let body = Body::new(body::framing(head)?);
    let dropped = connection_options(head)?;
    let mut request =
        format!("{} {path} {}\r\nHost: {authority_text}\r\n", head.method, head.version);
    for (k, v) in head.headers.iter() {
        let name = k.to_ascii_lowercase();
        if !HOP_BY_HOP.contains(&name.as_str()) && !dropped.contains(&name) {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    // One request per connection: the origin closes after its response, which ends the exchange.
    request.push_str("Connection: close\r\n\r\n");
    Ok(Destination::Forward { target, request: request.into_bytes(), body })
}

/// A complete response from the proxy itself, with a short plain-text body saying why. The body
/// is sent as given: a caller showing untrusted text in it escapes it first.
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
        let Destination::Forward { target, request, .. } = destination(&h).unwrap() else {
            panic!()
        };
        assert_eq!(target, TargetAddr::Ipv4(Ipv4Addr::new(10, 0, 0, 5), 8080));
        let text = String::from_utf8(request).unwrap();
        assert_eq!(text, "GET /a/b?c=d HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n");
        let bare = head("GET http://app.corp HTTP/1.0\r\n\r\n");
        let Destination::Forward { target, request, .. } = destination(&bare).unwrap() else {
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
        let e = destination(&head("GET / HTTP/1.1\r\n\r\n")).unwrap_err();
        assert!(e == HttpError::NotForProxy && e.to_string().contains("this is a proxy"));
        let e = destination(&head("GET https://x/ HTTP/1.1\r\n\r\n")).unwrap_err();
        assert!(e == HttpError::NotHttp && e.to_string().contains("CONNECT"));
        assert_eq!(parse_head(b"GET /\r\n\r\n"), Err(HttpError::BadRequestLine));
        assert_eq!(parse_head(b"GET / HTTP/2.0\r\n\r\n"), Err(HttpError::BadVersion));
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

    #[test]
    fn lines_end_with_crlf_and_nothing_else() {
        for (raw, err) in [
            (&b"GET http://app/ HTTP/1.1\n\n"[..], HttpError::BareLf),
            (b"GET http://app/ HTTP/1.1\n", HttpError::BareLf),
            (b"GET http://app/\n HTTP/1.1\r\n\r\n", HttpError::BareLf),
            (b"GET http://app/ HTTP/1.1\r\nAccept: */*\nX: y\r\n\r\n", HttpError::BareLf),
            (b"\n", HttpError::BareLf),
            (b"GET http://app/ HTTP/1.1\r\nX: a\rb\r\n\r\n", HttpError::BareCr),
            (b"GET http://app/\r HTTP/1.1\r\n\r\n", HttpError::BareCr),
            (b"GET http://app/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n", HttpError::ObsFold),
            (b"GET http://app/ HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", HttpError::ObsFold),
            (b"GET http://app/ HTTP/1.1\r\nX : a\r\n\r\n", HttpError::BadHeader),
            (b"GET http://app/ HTTP/1.1\r\nX: a\x1b[2Jb\r\n\r\n", HttpError::HeaderCharacter),
            (b"GET http://app/ HTTP/1.1\r\nX: a\0\r\n\r\n", HttpError::HeaderCharacter),
        ] {
            assert_eq!(parse_head(raw), Err(err), "{}", raw.escape_ascii());
        }
        let tab = head("GET http://app/ HTTP/1.1\r\nX:\ta\tb \r\n\r\n");
        assert_eq!(tab.header("x"), Some("a\tb"));
    }

    #[test]
    fn request_targets_are_visible_ascii() {
        for raw in [
            &b"GET http://app/a\x1b[2J HTTP/1.1\r\n\r\n"[..],
            b"GET http://app/a\tb HTTP/1.1\r\n\r\n",
            b"GET http://app/\x7f HTTP/1.1\r\n\r\n",
            b"GET http://app/caf\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"CONNECT evil\x1b[31m.corp:443 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(raw), Err(HttpError::TargetCharacter), "{}", raw.escape_ascii());
        }
        assert_eq!(
            parse_head(b"GET http://app/a b HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequestLine)
        );
        assert_eq!(
            parse_head(b"GET  http://app/ HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequestLine)
        );
    }

    #[test]
    fn only_host_names_and_ip_literals_are_targets() {
        let refused = |raw: &str| destination(&head(raw)).unwrap_err();
        for raw in [
            "CONNECT a%0a.corp:443 HTTP/1.1\r\n\r\n",
            "CONNECT a..corp:443 HTTP/1.1\r\n\r\n",
            "CONNECT ::1:443 HTTP/1.1\r\n\r\n",
            "GET http://user@app/ HTTP/1.1\r\n\r\n",
            "GET http://-app/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(refused(raw), HttpError::BadHost(_)), "{raw}");
        }
        assert_eq!(
            refused("CONNECT [app]:443 HTTP/1.1\r\n\r\n"),
            HttpError::BadHost(HostError::Ipv6)
        );
        assert_eq!(refused("CONNECT app:+443 HTTP/1.1\r\n\r\n"), HttpError::BadPort);
        assert_eq!(refused("CONNECT app:0 HTTP/1.1\r\n\r\n"), HttpError::BadPort);
        assert_eq!(refused("CONNECT app:65536 HTTP/1.1\r\n\r\n"), HttpError::BadPort);
        assert_eq!(refused("CONNECT [::1]x HTTP/1.1\r\n\r\n"), HttpError::BadAuthority);
        assert_eq!(refused("CONNECT app HTTP/1.1\r\n\r\n"), HttpError::NoPort);
        let Destination::Forward { target, .. } =
            destination(&head("GET http://[::1]/ HTTP/1.1\r\n\r\n")).unwrap()
        else {
            panic!()
        };
        assert_eq!(target, TargetAddr::Ipv6(std::net::Ipv6Addr::LOCALHOST, 80));
        let Destination::Tunnel(t) =
            destination(&head("CONNECT _ldap._tcp.corp:389 HTTP/1.1\r\n\r\n")).unwrap()
        else {
            panic!()
        };
        assert_eq!(t, TargetAddr::Domain("_ldap._tcp.corp".into(), 389));
    }

    fn forwarded(raw: &str) -> Result<String, HttpError> {
        match destination(&head(raw))? {
            Destination::Forward { request, .. } => Ok(String::from_utf8(request).unwrap()),
            Destination::Tunnel(_) => panic!("a tunnel"),
        }
    }

    #[test]
    fn proxy_and_hop_by_hop_headers_never_reach_the_origin() {
        let sent = forwarded(
            "POST http://app:8080/x HTTP/1.1\r\nHost: elsewhere\r\nproxy-authorization: Basic eDp5\r\n\
             Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Secret, Upgrade\r\nKeep-Alive: 5\r\n\
             TE: trailers\r\nTrailer: Expires\r\nUpgrade: h2c\r\nX-Secret: s3\r\nAccept: */*\r\n\
             Transfer-Encoding: chunked\r\nConnection: x-other\r\nX-Other: o\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            sent,
            "POST /x HTTP/1.1\r\nHost: app:8080\r\nAccept: */*\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        for options in ["Content-Length", "transfer-encoding, close", "Host", "a b"] {
            let raw = format!("GET http://app/ HTTP/1.1\r\nConnection: {options}\r\n\r\n");
            assert_eq!(forwarded(&raw), Err(HttpError::ConnectionOption), "{options}");
        }
    }

    #[test]
    fn ambiguous_framing_is_refused_before_anything_is_forwarded() {
        let both =
            "POST http://app/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(forwarded(both), Err(HttpError::BothLengths));
        let twice = "POST http://app/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(forwarded(twice), Err(HttpError::ContentLength));
        let Destination::Forward { body, .. } =
            destination(&head("POST http://app/ HTTP/1.1\r\nContent-Length: 3\r\n\r\n")).unwrap()
        else {
            panic!()
        };
        assert_eq!(body, Body::new(body::Framing::Length(3)));
    }

    proptest! {
        #[test]
        fn a_forwarded_request_is_one_clean_head_without_credentials(
            names in proptest::collection::vec(prop_oneof![
                Just("Proxy-Authorization".to_string()), Just("PROXY-AUTHORIZATION".to_string()),
                Just("Connection".to_string()), Just("X-Named".to_string()), "[A-Za-z-]{1,12}",
            ], 0..8),
            values in proptest::collection::vec("[ -~]{0,20}", 8),
        ) {
            let mut raw = "GET http://app.corp:81/p?q HTTP/1.1\r\n".to_string();
            for (n, v) in names.iter().zip(&values) {
                raw.push_str(&format!("{n}: {v}\r\n"));
            }
            raw.push_str("Proxy-Authorization: Basic c2VjcmV0\r\nConnection: X-Named\r\n\r\n");
            let Ok(Parse::Done(h, _)) = parse_head(raw.as_bytes()) else { return Ok(()) };
            if let Ok(Destination::Forward { request, .. }) = destination(&h) {
                let Ok(Parse::Done(sent, used)) = parse_head(&request) else { panic!("{request:?}") };
                prop_assert_eq!(used, request.len());
                prop_assert!(sent.header("proxy-authorization").is_none());
                prop_assert!(sent.header("x-named").is_none());
                prop_assert_eq!(sent.header("host"), Some("app.corp:81"));
                prop_assert_eq!(sent.header("connection"), Some("close"));
            }
        }

        #[test]
        fn no_accepted_target_holds_a_control_character(
            host in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'a'), Just(b'.')], 1..40),
        ) {
            for (before, after) in [(&b"CONNECT "[..], &b":443"[..]), (b"GET http://", b"/p")] {
                let mut raw = before.to_vec();
                raw.extend_from_slice(&host);
                raw.extend_from_slice(after);
                raw.extend_from_slice(b" HTTP/1.1\r\n\r\n");
                if let Ok(Parse::Done(h, _)) = parse_head(&raw) {
                    let target = match destination(&h) {
                        Ok(Destination::Tunnel(t)) | Ok(Destination::Forward { target: t, .. }) => t,
                        Err(_) => continue,
                    };
                    let shown = target.to_string();
                    prop_assert!(shown.bytes().all(|b| b.is_ascii_graphic()), "{shown:?}");
                }
            }
        }

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
