//! Posting a notification to a webhook: JSON, signed the way Stripe and GitHub sign theirs.
//!
//! `ISM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the receiver
//! recomputes the HMAC over the timestamp and the exact body bytes, compares in constant time,
//! and refuses old timestamps (a replayed request). `ISM-Notification-Id` is the same on every
//! attempt, for the receiver to drop a duplicate. One request per connection (`Connection:
//! close`), any 2xx is delivery, anything else is retried with backoff by the caller.

use ring::hmac;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// How long one delivery (connect, TLS, request, status line) may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of the response read: the status line is all that matters.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// The signature header's value for `body` sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(unix_seconds.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={unix_seconds},v1={}", ism_actors::credentials::hex(ctx.sign().as_ref()))
}

/// Why a POST was not delivered. The texts never repeat the URL (it may carry a token).
#[derive(Debug, PartialEq, Eq)]
pub enum PostError {
    /// It will never be: the URL is unusable or points where webhooks may not go.
    Refused(String),
    /// It may be later.
    Failed(String),
}

/// POSTs `body` to `url`; `Ok` on a 2xx answer.
pub async fn post(
    url: &str,
    secret: &str,
    id: Uuid,
    unix_seconds: i64,
    body: &[u8],
) -> Result<u16, PostError> {
    match tokio::time::timeout(TIMEOUT, exchange(url, secret, id, unix_seconds, body)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(status),
        Ok(Ok(status)) => Err(PostError::Failed(format!("answered HTTP {status}"))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(PostError::Failed(format!("no answer within {TIMEOUT:?}"))),
    }
}

/// Link-local addresses (where clouds serve instance metadata and credentials) and the clouds'
/// other metadata addresses, in every form that reaches them (IPv4-mapped, NAT64, 6to4: the
/// endpoint's list, [`ism_addresses`]): a webhook URL, typed by a manager, must not reach them
/// from a gateway node. This host's own addresses stay allowed (a receiver beside the gateway is
/// the operator's choice), but not a loopback address carried in NAT64 or 6to4 (another host's). Checked on the resolved addresses at each delivery, and on an IP
/// literal when the webhook is added ([`literal_refused`]).
pub fn forbidden(ip: std::net::IpAddr) -> bool {
    let ip = ism_addresses::normalise(ip);
    match ism_addresses::sensitive_range(ip) {
        // Only this host's own forms: carried in NAT64 or 6to4, a loopback address is the
        // translator's or the relay's.
        Some((_, _, ism_addresses::Sensitive::ThisHost)) => {
            !(ip.is_loopback() || ip.is_unspecified())
        }
        Some(_) => true,
        None => false,
    }
}

/// Why `url` may never be delivered to, if its host is an IP literal [`forbidden`] (a host name
/// is resolved, and checked, at each delivery).
pub fn literal_refused(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let ip = match parsed.host()? {
        url::Host::Ipv4(v4) => std::net::IpAddr::V4(v4),
        url::Host::Ipv6(v6) => std::net::IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    forbidden(ip).then(|| {
        format!("{ip} is a link-local, cloud metadata or translated loopback address: webhooks may not go there")
    })
}

async fn exchange(
    url: &str,
    secret: &str,
    id: Uuid,
    unix_seconds: i64,
    body: &[u8],
) -> Result<u16, PostError> {
    let (refused, failed) = (PostError::Refused, PostError::Failed);
    let parsed = url::Url::parse(url).map_err(|e| refused(format!("not a URL: {e}")))?;
    let host = parsed.host_str().ok_or_else(|| refused("no host".into()))?.to_string();
    let port = parsed.port_or_known_default().ok_or_else(|| refused("no port".into()))?;
    let mut target = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        target.push('?');
        target.push_str(q);
    }
    let authority = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ism-gateway/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nISM-Notification-Id: {id}\r\nISM-Signature: {}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len(),
        signature(secret, unix_seconds, body)
    );
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    // Resolved once and checked before any connection: what is checked is what is dialled.
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|e| failed(format!("cannot resolve its host: {e}")))?
        .collect();
    if let Some(bad) = addrs.iter().find(|a| forbidden(a.ip())) {
        return Err(refused(format!(
            "refused: its host is {}, a link-local, cloud metadata or translated loopback address",
            bad.ip()
        )));
    }
    let tcp =
        TcpStream::connect(&addrs[..]).await.map_err(|e| failed(format!("cannot connect: {e}")))?;
    match parsed.scheme() {
        "https" => {
            let connector = tokio_rustls::TlsConnector::from(client_config());
            let name = rustls_pki_types::ServerName::try_from(bare)
                .map_err(|e| refused(format!("bad TLS name: {e}")))?;
            let tls =
                connector.connect(name, tcp).await.map_err(|e| failed(format!("TLS: {e}")))?;
            request(tls, &head, body).await.map_err(failed)
        }
        _ => request(tcp, &head, body).await.map_err(failed),
    }
}

/// The system-independent Mozilla roots: a webhook receiver is a public or corporate service
/// with a real certificate.
fn client_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    head: &str,
    body: &[u8],
) -> Result<u16, String> {
    s.write_all(head.as_bytes()).await.map_err(|e| format!("sending: {e}"))?;
    s.write_all(body).await.map_err(|e| format!("sending: {e}"))?;
    s.flush().await.map_err(|e| format!("sending: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < MAX_RESPONSE_HEAD {
        let n = s.read(&mut chunk).await.map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let status = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|code| code.parse::<u16>().ok());
    status.ok_or_else(|| "the answer is not HTTP".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metadata_and_link_local_addresses_are_refused_before_any_connection() {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://100.100.100.200/",
            "http://[fe80::1]:8080/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://168.63.129.16/",
            "http://[64:ff9b::7f00:1]/",
        ] {
            match post(url, "s", Uuid::nil(), 1, b"{}").await {
                Err(PostError::Refused(why)) => {
                    assert!(why.contains("link-local, cloud metadata"), "{url}: {why}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        let bad = post("not a url", "s", Uuid::nil(), 1, b"").await;
        assert!(matches!(bad, Err(PostError::Refused(_))), "{bad:?}");
    }

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let s = signature("whsec", 1_700_000_000, b"{\"a\":1}");
        assert!(s.starts_with("t=1700000000,v1="), "{s}");
        assert_eq!(s.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(s, signature("whsec", 1_700_000_001, b"{\"a\":1}"));
        assert_ne!(s, signature("whsec", 1_700_000_000, b"{\"a\":2}"));
        assert_ne!(s, signature("other", 1_700_000_000, b"{\"a\":1}"));
        // HMAC-SHA256("key", "1.x") as Python's hmac module computes it.
        assert_eq!(
            signature("key", 1, b"x"),
            "t=1,v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
    }
}
