//! Dialing targets for scanners: resolve the name here, inside the private network; check every
//! resolved address against the allowlist; connect only to an address that passed, within the
//! connect timeout, directly or through the web proxy when it is configured for URLs. A refusal
//! carries the reason the scanner will see as a SOCKS reply code.
//!
//! When the proxy resolves URL host names ("let endpoint resolve hostname for URLs" off), the
//! endpoint never looks the name up, so only host-name rules of the allowlist can allow it.

use crate::allowlist::{Allowlist, Refusal};
use crate::proxy::{self, ProxyConfig, ProxyError};
use ism_tunnel_proto::{OpenFailure, TargetAddr};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::field::Empty;
use tracing::Instrument;

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

/// Where a dial goes once the allowlist has had its say. Making one connects to nothing, so every
/// refusal is decided before any connection is attempted.
#[derive(Debug)]
pub enum Plan<'a> {
    /// The proxy is given the name and resolves it.
    ProxyByName(&'a ProxyConfig, &'a str),
    /// These addresses, each allowed, tried in order (through the proxy when it carries URLs).
    Addresses(Vec<IpAddr>, Option<&'a ProxyConfig>),
}

impl Plan<'_> {
    /// Whether the web proxy carries the connection.
    pub fn via_proxy(&self) -> bool {
        matches!(self, Plan::ProxyByName(..) | Plan::Addresses(_, Some(_)))
    }
}

impl Dialer {
    /// Plans and connects, in spans of the caller's (`dns.resolve`, `allowlist.check`,
    /// `target.connect`), so a trace shows where a slow or refused dial spent its time.
    pub async fn dial(&self, target: &TargetAddr) -> Result<TcpStream, DialFailure> {
        let plan = self.plan(target).await?;
        let span = tracing::info_span!("target.connect", via_proxy = plan.via_proxy());
        self.connect(plan, target.port()).instrument(span).await
    }

    /// Connects as `plan` says, to `port`. `TCP_NODELAY` is left to the caller: a stream's
    /// splice sets it, once per target socket.
    pub async fn connect(&self, plan: Plan<'_>, port: u16) -> Result<TcpStream, DialFailure> {
        let (allowed, proxy) = match plan {
            Plan::ProxyByName(p, name) => {
                let tcp = proxy::connect(p, name, port, self.connect_timeout)
                    .await
                    .map_err(|e| proxy_failure(&e))?;
                return Ok(tcp);
            }
            Plan::Addresses(addresses, proxy) => (addresses, proxy),
        };
        let mut last = None;
        for ip in allowed {
            let attempt = match proxy {
                Some(p) => proxy::connect(p, &ip.to_string(), port, self.connect_timeout)
                    .await
                    .map_err(|e| proxy_failure(&e)),
                None => direct(SocketAddr::new(ip, port), self.connect_timeout).await,
            };
            match attempt {
                Ok(tcp) => return Ok(tcp),
                Err(f) => last = Some(f),
            }
        }
        Err(last.unwrap_or_else(|| fail(OpenFailure::General, "no address to connect to".into())))
    }

    /// Resolves `target` (unless the proxy resolves names) and checks it against the allowlist.
    pub async fn plan<'a>(&'a self, target: &'a TargetAddr) -> Result<Plan<'a>, DialFailure> {
        let port = target.port();
        let host = match target {
            TargetAddr::Ipv4(ip, _) => ip.to_string(),
            TargetAddr::Ipv6(ip, _) => ip.to_string(),
            TargetAddr::Domain(name, _) => name.clone(),
        };
        let proxy = self.proxy.as_ref().filter(|p| p.for_url(&host));
        // A name that is an IP literal is that address: there is nothing to resolve.
        let literal = host.parse::<IpAddr>().ok();
        if let (TargetAddr::Domain(name, _), Some(p), None) = (target, proxy, literal) {
            if !p.resolve_urls {
                let allowed = self.allowlist.allows_name(name, port);
                let _check =
                    tracing::info_span!("allowlist.check", by = "name", allowed = allowed as usize);
                if !allowed {
                    return Err(fail(OpenFailure::NotAllowed, format!("{target} is not in this endpoint's allowedTargets (the proxy resolves names, so only host-name rules apply)")));
                }
                return Ok(Plan::ProxyByName(p, name));
            }
        }
        let candidates: Vec<IpAddr> = match literal {
            Some(ip) => vec![ip],
            None => {
                let resolved = tokio::time::timeout(
                    self.connect_timeout,
                    tokio::net::lookup_host((host.as_str(), port)),
                )
                .instrument(tracing::info_span!("dns.resolve"))
                .await
                .map_err(|_| {
                    fail(OpenFailure::HostUnreachable, format!("resolving {host} timed out"))
                })?
                .map_err(|e| {
                    fail(OpenFailure::HostUnreachable, format!("cannot resolve {host}: {e}"))
                })?;
                resolved.map(|a| a.ip()).collect()
            }
        };
        // The address connected to is exactly one that was checked: no second resolution.
        let check = tracing::info_span!("allowlist.check", by = "address", allowed = Empty);
        let mut allowed = Vec::new();
        let mut sensitive = None;
        for ip in &candidates {
            match self.allowlist.check(&host, *ip, port) {
                Ok(()) => allowed.push(*ip),
                Err(Refusal::Sensitive(why)) => sensitive = sensitive.or(Some((*ip, why))),
                Err(Refusal::NotListed) => {}
            }
        }
        check.record("allowed", allowed.len());
        drop(check);
        if allowed.is_empty() {
            let resolved: Vec<String> = candidates.iter().map(|ip| ip.to_string()).collect();
            let why = match sensitive {
                Some((ip, why)) => format!(
                    ": {ip} is {why}, allowed only by a rule that names it (like {})",
                    naming_rule(ip)
                ),
                None => String::new(),
            };
            return Err(fail(
                OpenFailure::NotAllowed,
                format!(
                    "{target} (resolved to {}) is not in this endpoint's allowedTargets{why}",
                    resolved.join(", ")
                ),
            ));
        }
        Ok(Plan::Addresses(allowed, proxy))
    }
}

/// The allowlist entry that would allow exactly `ip`.
fn naming_rule(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("[{v6}/128]"),
    }
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
    use crate::proxy::{ExclusionList, ProxyScope};
    use std::net::{Ipv4Addr, Ipv6Addr};

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

    /// The refusal of a plan, which never connects anywhere.
    async fn refused(d: &Dialer, target: TargetAddr) -> DialFailure {
        match d.plan(&target).await {
            Err(f) => f,
            Ok(plan) => panic!("{target} should be refused before any connect: {plan:?}"),
        }
    }

    #[tokio::test]
    async fn sensitive_addresses_are_refused_before_any_connect_and_say_why() {
        let d = dialer("*, 0.0.0.0/0, [::/0]");
        let v4 = |s: &str| TargetAddr::Ipv4(s.parse().unwrap(), 80);
        let v6 = |s: &str| TargetAddr::Ipv6(s.parse::<Ipv6Addr>().unwrap(), 80);
        for target in [
            v4("169.254.169.254"),
            v4("100.100.100.200"),
            v4("127.0.0.1"),
            v6("fd00:ec2::254"),
            v6("::ffff:169.254.169.254"),
            v6("::169.254.169.254"),
            v6("64:ff9b::a9fe:a9fe"),
            v6("2002:a9fe:a9fe::1"),
            v6("::1"),
            // An IP literal sent as a name is that address: nothing is resolved.
            TargetAddr::Domain("169.254.169.254".into(), 80),
        ] {
            let f = refused(&d, target.clone()).await;
            assert_eq!(f.reason, OpenFailure::NotAllowed, "{target}");
            assert!(f.message.contains("allowed only by a rule that names it"), "{}", f.message);
        }
        let f = refused(&d, v4("169.254.169.254")).await;
        assert!(
            f.message.contains("link-local") && f.message.contains("169.254.169.254/32"),
            "{}",
            f.message
        );
    }

    #[tokio::test]
    async fn a_proxy_that_resolves_names_gets_no_address_spelled_as_a_name() {
        let mut d = dialer("*.corp, *corp");
        d.proxy = Some(ProxyConfig {
            host: "proxy.invalid".into(),
            port: 3128,
            scope: ProxyScope::GatewayAndUrls,
            resolve_gateway: true,
            resolve_urls: false,
            exclusions: ExclusionList::default(),
            credentials: None,
        });
        let named = TargetAddr::Domain("app.corp".into(), 80);
        assert!(matches!(d.plan(&named).await, Ok(Plan::ProxyByName(_, "app.corp"))));
        for spelled in ["169.254.169.254", "0xa9fea9fe", "2852039166", "app.corp.0x7f"] {
            let f = refused(&d, TargetAddr::Domain(spelled.into(), 80)).await;
            assert_eq!(f.reason, OpenFailure::NotAllowed, "{spelled}");
        }
    }
}
