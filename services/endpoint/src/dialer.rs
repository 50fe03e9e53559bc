//! Dialing targets for scanners: resolve the name here, inside the private network; check every
//! resolved address against the allowlist; connect only to an address that passed, within the
//! connect timeout, directly or through the web proxy when it is configured for URLs. A refusal
//! carries the reason the scanner will see as a SOCKS reply code.
//!
//! When the proxy resolves URL host names ("let endpoint resolve hostname for URLs" off), the
//! endpoint never looks the name up, so only host-name rules of the allowlist can allow it.

use crate::allowlist::Allowlist;
use crate::proxy::{self, ProxyConfig, ProxyError};
use ism_tunnel_proto::{OpenFailure, TargetAddr};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;

/// Why a dial failed, for the scanner (`reason`) and the log (`message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialFailure {
    pub reason: OpenFailure,
    pub message: String,
}

pub struct Dialer {
    pub allowlist: Allowlist,
    pub connect_timeout: Duration,
    pub proxy: Option<ProxyConfig>,
}

fn fail(reason: OpenFailure, message: String) -> DialFailure {
    DialFailure { reason, message }
}

impl Dialer {
    pub async fn dial(&self, target: &TargetAddr) -> Result<TcpStream, DialFailure> {
        let port = target.port();
        let host = match target {
            TargetAddr::Ipv4(ip, _) => ip.to_string(),
            TargetAddr::Ipv6(ip, _) => ip.to_string(),
            TargetAddr::Domain(name, _) => name.clone(),
        };
        let proxy = self.proxy.as_ref().filter(|p| p.for_url(&host));
        if let (TargetAddr::Domain(name, _), Some(p)) = (target, proxy) {
            if !p.resolve_urls {
                if !self.allowlist.allows_name(name, port) {
                    return Err(fail(OpenFailure::NotAllowed, format!("{target} is not in this endpoint's allowedTargets (the proxy resolves names, so only host-name rules apply)")));
                }
                let tcp = proxy::connect(p, name, port, self.connect_timeout)
                    .await
                    .map_err(|e| proxy_failure(&e))?;
                return Ok(nodelay(tcp));
            }
        }
        let candidates: Vec<IpAddr> = match target {
            TargetAddr::Ipv4(ip, _) => vec![IpAddr::V4(*ip)],
            TargetAddr::Ipv6(ip, _) => vec![IpAddr::V6(*ip)],
            TargetAddr::Domain(name, _) => {
                let resolved = tokio::time::timeout(
                    self.connect_timeout,
                    tokio::net::lookup_host((name.as_str(), port)),
                )
                .await
                .map_err(|_| {
                    fail(OpenFailure::HostUnreachable, format!("resolving {name} timed out"))
                })?
                .map_err(|e| {
                    fail(OpenFailure::HostUnreachable, format!("cannot resolve {name}: {e}"))
                })?;
                resolved.map(|a| a.ip()).collect()
            }
        };
        // The address connected to is exactly one that was checked: no second resolution.
        let allowed: Vec<IpAddr> = candidates
            .iter()
            .copied()
            .filter(|ip| self.allowlist.allows(&host, *ip, port))
            .collect();
        if allowed.is_empty() {
            let resolved: Vec<String> = candidates.iter().map(|ip| ip.to_string()).collect();
            return Err(fail(
                OpenFailure::NotAllowed,
                format!(
                    "{target} (resolved to {}) is not in this endpoint's allowedTargets",
                    resolved.join(", ")
                ),
            ));
        }
        let mut last = None;
        for ip in allowed {
            let attempt = match proxy {
                Some(p) => proxy::connect(p, &ip.to_string(), port, self.connect_timeout)
                    .await
                    .map_err(|e| proxy_failure(&e)),
                None => direct(SocketAddr::new(ip, port), self.connect_timeout).await,
            };
            match attempt {
                Ok(tcp) => return Ok(nodelay(tcp)),
                Err(f) => last = Some(f),
            }
        }
        Err(last.expect("at least one address was tried"))
    }
}

fn nodelay(tcp: TcpStream) -> TcpStream {
    let _ = tcp.set_nodelay(true);
    tcp
}

async fn direct(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, DialFailure> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(e)) => Err(fail(classify(&e), format!("connecting to {addr}: {e}"))),
        Err(_) => Err(fail(
            OpenFailure::TimedOut,
            format!("connecting to {addr} timed out after {timeout:?}"),
        )),
    }
}

fn proxy_failure(e: &ProxyError) -> DialFailure {
    let reason = match e {
        ProxyError::Unreachable { .. } => OpenFailure::NetworkUnreachable,
        ProxyError::TimedOut { .. } => OpenFailure::TimedOut,
        ProxyError::Refused { status, .. } if status.contains(" 403") => OpenFailure::NotAllowed,
        ProxyError::Refused { .. } => OpenFailure::HostUnreachable,
        ProxyError::AuthenticationRequired { .. } | ProxyError::Garbled { .. } => {
            OpenFailure::General
        }
    };
    fail(reason, e.to_string())
}

fn classify(e: &io::Error) -> OpenFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => OpenFailure::ConnectionRefused,
        io::ErrorKind::TimedOut => OpenFailure::TimedOut,
        io::ErrorKind::NetworkUnreachable => OpenFailure::NetworkUnreachable,
        io::ErrorKind::HostUnreachable => OpenFailure::HostUnreachable,
        _ => OpenFailure::General,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn dialer(rules: &str) -> Dialer {
        Dialer {
            allowlist: Allowlist::parse(rules).unwrap(),
            connect_timeout: Duration::from_secs(2),
            proxy: None,
        }
    }

    #[tokio::test]
    async fn refuses_what_the_allowlist_does_not_name() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let d = dialer(&format!("127.0.0.1:{}", port + 1));
        let err = d.dial(&TargetAddr::Ipv4(Ipv4Addr::LOCALHOST, port)).await.unwrap_err();
        assert_eq!(err.reason, OpenFailure::NotAllowed);
        // `localhost` resolves to 127.0.0.1 here, and is checked as that address.
        let d = dialer(&format!("127.0.0.1:{port}"));
        assert!(d.dial(&TargetAddr::Domain("localhost".into(), port)).await.is_ok());
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused() {
        let port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let err = dialer("127.0.0.1")
            .dial(&TargetAddr::Ipv4(Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap_err();
        assert_eq!(err.reason, OpenFailure::ConnectionRefused);
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_host_unreachable() {
        let err = dialer("*")
            .dial(&TargetAddr::Domain("no-such-host.invalid".into(), 80))
            .await
            .unwrap_err();
        assert_eq!(err.reason, OpenFailure::HostUnreachable);
    }
}
