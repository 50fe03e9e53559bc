//! Dialing targets for scanners: resolve the name here, inside the private network; check every
//! resolved address against the allowlist; connect only to an address that passed, within the
//! connect timeout, directly or through the web proxy when it is configured for URLs, and the
//! whole dial within [`DIAL_DEADLINE`]. A refusal carries the reason the scanner will see as a
//! SOCKS reply code.
//!
//! Nothing is looked up for a name that is not a plausible DNS host name (the rule the gateway's
//! ingress applies, [`ism_ingress_proto::host::host_name`]: the endpoint does not rely on the
//! gateway for it, and a name goes verbatim into the proxy's `CONNECT`), nor for one no rule for
//! its port could allow, so refusals tell a scanner nothing about what internal names resolve to.
//!
//! The endpoint's own web proxy is no target, whatever the rules, unless one names exactly its
//! address and port ([`Allowlist::names_address_and_port`]): a stream to it would let a scanner
//! send its own `CONNECT` anywhere, past the allowlist. It is recognised by address, the proxy
//! host resolved as `proxy::connect` resolves it, whenever a target's port is the proxy's,
//! whether the proxy carries URLs or only the gateway connection.
//!
//! When the proxy resolves URL host names ("let endpoint resolve hostname for URLs" off), only
//! host-name rules of the allowlist can allow a name; `localhost`, the names below it and those
//! whose first label it is are refused (the proxy would reach its own loopback); and the endpoint
//! still tries to resolve the name itself, refusing it when an address is sensitive or the
//! proxy's own. A name only the proxy can resolve (why this mode exists) goes to the proxy
//! unchecked: in this mode those checks rely on local resolution, as the agent warns at start-up.

use crate::allowlist::{canonical_name, Allowlist, Refusal, Sensitive};
use crate::own_addresses::OwnAddresses;
use crate::proxy::{self, ProxyConfig, ProxyError, ProxyScope};
use ism_ingress_proto::host;
use ism_tunnel_proto::{OpenFailure, TargetAddr};
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::field::Empty;
use tracing::Instrument;

/// The most a whole dial may take: the lookups, then the attempts on every allowed address (each
/// bounded by the connect timeout), direct or through the proxy. It must stay below the gateway's
/// open timeout (20 s, [`ism_tunnel_proto::Timing`], which no option changes), leaving time for
/// the answer to travel back: past it the scanner has been told the open timed out, and a
/// connection made later would only be dropped. Without it, a name with several unreachable
/// addresses took a full connect timeout for each, 20 s and more. Not enough for a relayed
/// stream that waited in the owner's queue first (up to half the open timeout): that one can
/// still be answered after its ingress node gave up.
pub const DIAL_DEADLINE: Duration = Duration::from_secs(15);

/// How long the endpoint tries to resolve a name the proxy resolves, to check its addresses: in
/// that mode the name usually does not resolve here, and the dial's time is the proxy's.
const LOCAL_CHECK: Duration = Duration::from_secs(1);

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
    /// This host's addresses, withheld from broad rules as its loopback is.
    pub own_addresses: OwnAddresses,
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
    /// Whether the web proxy is given the names of URL targets to resolve, so that sensitive
    /// addresses are caught only when the name also resolves here.
    pub fn proxy_resolves_names(&self) -> bool {
        self.proxy
            .as_ref()
            .is_some_and(|p| p.scope == ProxyScope::GatewayAndUrls && !p.resolve_urls)
    }

    /// Plans and connects, in spans of the caller's (`dns.resolve`, `allowlist.check`,
    /// `target.connect`), so a trace shows where a slow or refused dial spent its time. All of it
    /// within [`DIAL_DEADLINE`].
    pub async fn dial(&self, target: &TargetAddr) -> Result<TcpStream, DialFailure> {
        let deadline = Instant::now() + DIAL_DEADLINE;
        let plan = timeout_at(deadline, self.plan(target)).await.map_err(|_| {
            out_of_time("looking the target up took it all: no address was tried")
        })??;
        let span = tracing::info_span!("target.connect", via_proxy = plan.via_proxy());
        self.connect_by(plan, target.port(), deadline).instrument(span).await
    }

    /// Connects as `plan` says, to `port`, within [`DIAL_DEADLINE`] from now. `TCP_NODELAY` is
    /// left to the caller: a stream's splice sets it, once per target socket.
    pub async fn connect(&self, plan: Plan<'_>, port: u16) -> Result<TcpStream, DialFailure> {
        self.connect_by(plan, port, Instant::now() + DIAL_DEADLINE).await
    }

    /// Connects as `plan` says, to `port`, giving up at `deadline`.
    async fn connect_by(
        &self,
        plan: Plan<'_>,
        port: u16,
        deadline: Instant,
    ) -> Result<TcpStream, DialFailure> {
        match plan {
            Plan::ProxyByName(p, name) => {
                in_turn(&[name], deadline, |name| self.via_proxy(p, name, port)).await
            }
            Plan::Addresses(addresses, proxy) => {
                in_turn(&addresses, deadline, |ip| self.attempt(proxy, *ip, port)).await
            }
        }
    }

    /// One attempt on `ip:port`, through `proxy` if given, within the connect timeout.
    async fn attempt(
        &self,
        proxy: Option<&ProxyConfig>,
        ip: IpAddr,
        port: u16,
    ) -> Result<TcpStream, DialFailure> {
        match proxy {
            Some(p) => self.via_proxy(p, &ip.to_string(), port).await,
            None => direct(SocketAddr::new(ip, port), self.connect_timeout).await,
        }
    }

    /// A `CONNECT` to `host:port` through `p`, within the connect timeout.
    async fn via_proxy(
        &self,
        p: &ProxyConfig,
        host: &str,
        port: u16,
    ) -> Result<TcpStream, DialFailure> {
        proxy::connect(p, host, port, self.connect_timeout).await.map_err(|e| proxy_failure(&e))
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
        if literal.is_none() {
            check_host_name(&host)?;
        }
        if let (TargetAddr::Domain(name, _), Some(p), None) = (target, proxy, literal) {
            if !p.resolve_urls {
                return self.plan_by_name(target, p, name).await;
            }
        }
        let candidates = match literal {
            Some(ip) => vec![ip],
            None if self.allowlist.may_allow_name(&host, port) => self.resolve(&host, port, self.connect_timeout).await?,
            None => return Err(fail(OpenFailure::NotAllowed, format!("{target} is not in this endpoint's allowedTargets: no rule for port {port} could allow it, so it was not looked up"))),
        };
        let own_proxy = self.own_proxy(port).await?;
        let allowed = self.allowed_addresses(target, &host, &candidates, &own_proxy)?;
        Ok(Plan::Addresses(allowed, proxy))
    }

    /// Those of `candidates`, resolved from `host`, that may be connected to; if none, why not.
    fn allowed_addresses(
        &self,
        target: &TargetAddr,
        host: &str,
        candidates: &[IpAddr],
        own_proxy: &[IpAddr],
    ) -> Result<Vec<IpAddr>, DialFailure> {
        let port = target.port();
        // The address connected to is exactly one that was checked: no second resolution.
        let check = tracing::info_span!("allowlist.check", by = "address", allowed = Empty);
        let mut allowed = Vec::new();
        let mut withheld = None;
        for ip in candidates {
            match self.verdict(host, *ip, port, own_proxy) {
                Verdict::Allowed => allowed.push(*ip),
                Verdict::Withheld(w) => withheld = withheld.or(Some(w)),
                Verdict::NotListed => {}
            }
        }
        check.record("allowed", allowed.len());
        if !allowed.is_empty() {
            return Ok(allowed);
        }
        let resolved: Vec<String> = candidates.iter().map(|ip| ip.to_string()).collect();
        let why = withheld.map(|w| format!(": {}", w.explain(port))).unwrap_or_default();
        Err(fail(
            OpenFailure::NotAllowed,
            format!(
                "{target} (resolved to {}) is not in this endpoint's allowedTargets{why}",
                resolved.join(", ")
            ),
        ))
    }

    /// The plan when the proxy resolves `name`: allowed by host-name rules alone, never the
    /// proxy's own loopback or the proxy itself, and checked by address too when the name also
    /// resolves here.
    async fn plan_by_name<'a>(
        &self,
        target: &TargetAddr,
        p: &'a ProxyConfig,
        name: &'a str,
    ) -> Result<Plan<'a>, DialFailure> {
        let port = target.port();
        let allowed = self.allowlist.allows_name(name, port);
        let _check =
            tracing::info_span!("allowlist.check", by = "name", allowed = allowed as usize);
        if !allowed {
            return Err(fail(OpenFailure::NotAllowed, format!("{target} is not in this endpoint's allowedTargets (the proxy resolves names, so only host-name rules apply)")));
        }
        if names_loopback(name) {
            return Err(fail(OpenFailure::NotAllowed, format!("{target} names the loopback of the host that resolves it, here the web proxy's own, which is never a target while the proxy resolves names")));
        }
        if p.port == port && canonical_name(name) == canonical_name(&p.host) {
            return Err(fail(
                OpenFailure::NotAllowed,
                format!("{target} is the endpoint's own web proxy, never a target by name"),
            ));
        }
        // Usually the name does not resolve here (why the proxy resolves it): then it goes as is,
        // and a resolver that does not answer costs the dial at most LOCAL_CHECK of its time.
        let within = self.connect_timeout.min(LOCAL_CHECK);
        if let Ok(addresses) = self.resolve(name, port, within).await {
            let own_proxy = self.own_proxy(port).await?;
            self.check_resolved_here(target, name, &addresses, &own_proxy)?;
        }
        Ok(Plan::ProxyByName(p, name))
    }

    /// Refuses `name`, which the proxy will resolve, when an address it resolves to here is one
    /// no broad rule may allow: the proxy most likely resolves it alike.
    fn check_resolved_here(
        &self,
        target: &TargetAddr,
        name: &str,
        addresses: &[IpAddr],
        own_proxy: &[IpAddr],
    ) -> Result<(), DialFailure> {
        let port = target.port();
        let withheld =
            addresses.iter().find_map(|ip| match self.verdict(name, *ip, port, own_proxy) {
                Verdict::Withheld(w) => Some(w),
                Verdict::Allowed | Verdict::NotListed => None,
            });
        match withheld {
            Some(w) => Err(fail(
                OpenFailure::NotAllowed,
                format!("{target} resolves here to {}: {}", w.ip(), w.explain(port)),
            )),
            None => Ok(()),
        }
    }

    /// What the rules say of `ip:port`, asked for as `requested`, with the endpoint's own proxy
    /// (at `own_proxy`, for this port) and its own host's addresses withheld like a sensitive
    /// address.
    fn verdict(&self, requested: &str, ip: IpAddr, port: u16, own_proxy: &[IpAddr]) -> Verdict {
        let ip = ism_addresses::normalise(ip);
        match self.allowlist.check(requested, ip, port) {
            Err(Refusal::Sensitive(why)) => Verdict::Withheld(Withheld::Sensitive(ip, why)),
            Err(Refusal::NotListed) => Verdict::NotListed,
            Ok(())
                if own_proxy.contains(&ip) && !self.allowlist.names_address_and_port(ip, port) =>
            {
                Verdict::Withheld(Withheld::OwnProxy(ip))
            }
            Ok(()) if self.is_own(ip) && !self.allowlist.names_address(ip, port) => {
                Verdict::Withheld(Withheld::OwnHost(ip))
            }
            Ok(()) => Verdict::Allowed,
        }
    }

    /// Whether `ip` (normalised) reaches this host on one of its interfaces: one of their
    /// addresses, or an IPv6 form that carries one (as a sensitive address's forms are).
    fn is_own(&self, ip: IpAddr) -> bool {
        let own = self.own_addresses.get();
        own.contains(&ip)
            || ism_addresses::carried_ipv4(ip).is_some_and(|v4| own.contains(&IpAddr::V4(v4)))
    }

    /// The addresses of the endpoint's web proxy when `port` is its port (none otherwise),
    /// resolved as `proxy::connect` resolves them. When they cannot be, no target on that port can
    /// be told apart from the proxy, and the dial is refused.
    async fn own_proxy(&self, port: u16) -> Result<Vec<IpAddr>, DialFailure> {
        let Some(p) = self.proxy.as_ref().filter(|p| p.port == port) else { return Ok(Vec::new()) };
        match self.resolve(&p.host, port, self.connect_timeout).await {
            Ok(addresses) => Ok(addresses.into_iter().map(ism_addresses::normalise).collect()),
            // Perhaps later (the resolver's trouble, not the target's): retryable.
            Err(_) => Err(fail(OpenFailure::HostUnreachable, format!("the endpoint's own web proxy {}:{port} does not resolve, so a target on its port cannot be told apart from it", p.host))),
        }
    }

    /// The addresses `host` resolves to, within the connect timeout. `lookup_host` runs
    /// getaddrinfo on tokio's blocking pool, which cannot be cancelled: the timeout (and
    /// [`DIAL_DEADLINE`]) only stop waiting for it, and its thread stays busy until the system
    /// resolver gives up, so slow DNS under load can hold many blocking threads.
    async fn resolve(
        &self,
        host: &str,
        port: u16,
        within: Duration,
    ) -> Result<Vec<IpAddr>, DialFailure> {
        let resolved = tokio::time::timeout(within, tokio::net::lookup_host((host, port)))
            .instrument(tracing::info_span!("dns.resolve"))
            .await
            .map_err(|_| fail(OpenFailure::HostUnreachable, format!("resolving {host} timed out")))?
            .map_err(|e| {
                fail(OpenFailure::HostUnreachable, format!("cannot resolve {host}: {e}"))
            })?;
        Ok(resolved.map(|a| a.ip()).collect())
    }
}

/// What the allowlist (and the proxy rule) make of one resolved address.
enum Verdict {
    Allowed,
    NotListed,
    /// Refused however broad the rules, unless one names it.
    Withheld(Withheld),
}

/// Why an address broad rules would allow is refused.
enum Withheld {
    Sensitive(IpAddr, Sensitive),
    OwnProxy(IpAddr),
    /// An address of the endpoint's own host (`crate::own_addresses`).
    OwnHost(IpAddr),
}

impl Withheld {
    fn ip(&self) -> IpAddr {
        match self {
            Withheld::Sensitive(ip, _) | Withheld::OwnProxy(ip) | Withheld::OwnHost(ip) => *ip,
        }
    }

    /// Why, and the rule that would allow it, for the operator.
    fn explain(&self, port: u16) -> String {
        match self {
            Withheld::Sensitive(ip, why) => format!(
                "{ip} is {why}, allowed only by a rule that names it (like {})",
                naming_rule(*ip)
            ),
            Withheld::OwnProxy(ip) => {
                let proxy = SocketAddr::new(*ip, port);
                format!("{proxy} is the endpoint's own web proxy (a scanner could send it CONNECT to anything), allowed only by a rule that names exactly that address and port (like {proxy})")
            }
            Withheld::OwnHost(ip) => format!(
                "{ip} is an address of the endpoint's own host (its services answer there as on its loopback), allowed only by a rule that names exactly that address (like {})",
                naming_rule(*ip)
            ),
        }
    }
}

/// Refuses a name that is not a plausible DNS host name, by the gateway ingress's rule. The
/// message says what is wrong without echoing the name's bytes.
fn check_host_name(name: &str) -> Result<(), DialFailure> {
    host::host_name(name.as_bytes())
        .map(drop)
        .map_err(|e| fail(OpenFailure::NotAllowed, format!("the target is not a host name: {e}")))
}

/// Whether `name` is the loopback of whichever host resolves it: `localhost` and the names below
/// it (RFC 6761), and a name whose first label is `localhost` (RFC 1912 zones often hold
/// `localhost.corp.example`).
fn names_loopback(name: &str) -> bool {
    let name = canonical_name(name);
    name.split('.').next() == Some("localhost") || name.ends_with(".localhost")
}

/// The allowlist entry that would allow exactly `ip`.
fn naming_rule(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("[{v6}/128]"),
    }
}

/// The first success of `attempt` on `targets`, tried in order, or the last failure. At `deadline`
/// the attempt under way is dropped (closing its socket, so nothing connects after the scanner
/// was told the open failed) and the dial fails, naming the targets tried.
async fn in_turn<A, T, Fut>(
    targets: &[A],
    deadline: Instant,
    mut attempt: impl FnMut(&A) -> Fut,
) -> Result<T, DialFailure>
where
    A: Display,
    Fut: Future<Output = Result<T, DialFailure>>,
{
    let mut last = None;
    for (i, target) in targets.iter().enumerate() {
        match timeout_at(deadline, attempt(target)).await {
            Ok(Ok(reached)) => return Ok(reached),
            Ok(Err(f)) => last = Some(f),
            Err(_) => return Err(out_of_time(&tried(&targets[..=i], targets.len()))),
        }
    }
    Err(last.unwrap_or_else(|| fail(OpenFailure::General, "no address to connect to".into())))
}

/// The failure of a dial that ran out of [`DIAL_DEADLINE`], saying how far it got.
fn out_of_time(how_far: &str) -> DialFailure {
    fail(
        OpenFailure::TimedOut,
        format!("no connection within {DIAL_DEADLINE:?}, the most a dial may take: {how_far}"),
    )
}

/// Which of `total` allowed addresses (the name, when the proxy resolves it) were tried.
fn tried<A: Display>(tried: &[A], total: usize) -> String {
    let list: Vec<String> = tried.iter().map(ToString::to_string).collect();
    format!("tried {} of {total} allowed addresses ({})", list.len(), list.join(", "))
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
            own_addresses: OwnAddresses::fixed([]),
        }
    }

    /// An address of this endpoint's own host (a documentation address, so that a mistake
    /// connects nowhere real: the plans below connect to nothing anyway) is refused by broad
    /// rules, a subnet's included, and allowed by a rule naming exactly it, for its ports.
    #[tokio::test]
    async fn the_hosts_own_addresses_need_a_rule_naming_them() {
        let own = Ipv4Addr::new(192, 0, 2, 10);
        let on_own_host = |rules: &str| {
            let mut d = dialer(rules);
            d.own_addresses =
                OwnAddresses::fixed([IpAddr::V4(own), "2001:db8::10".parse().unwrap()]);
            d
        };
        let target = TargetAddr::Ipv4(own, 80);
        for broad in ["*", "0.0.0.0/0", "192.0.2.0/24", "192.0.2.0/24:80", "192.0.2.10/31"] {
            let f = refused(&on_own_host(broad), target.clone()).await;
            assert_eq!(f.reason, OpenFailure::NotAllowed, "{broad}");
            assert!(
                f.message.contains("the endpoint's own host")
                    && f.message.contains("192.0.2.10/32"),
                "{broad}: {}",
                f.message
            );
        }
        for naming in ["192.0.2.10", "192.0.2.10/32:80", "*, 192.0.2.10:70-90"] {
            let d = on_own_host(naming);
            let plan = d.plan(&target).await;
            let allowed = matches!(&plan, Ok(Plan::Addresses(a, None)) if a == &[IpAddr::V4(own)]);
            assert!(allowed, "{naming}: {plan:?}");
        }
        // Another address of the subnet is no concern of this rule.
        let other = TargetAddr::Ipv4(Ipv4Addr::new(192, 0, 2, 11), 80);
        let d = on_own_host("192.0.2.0/24");
        assert!(d.plan(&other).await.is_ok());
        // The IPv6 forms that reach it are the same address.
        let d = on_own_host("*");
        for form in [own.to_ipv6_mapped(), "64:ff9b::c000:20a".parse().unwrap()] {
            let f = refused(&d, TargetAddr::Ipv6(form, 80)).await;
            assert!(f.message.contains("own host"), "{form}: {}", f.message);
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
        // Held bound, not listening: a freed port could be taken by a test running beside this.
        let down = ism_tests::ReservedPort::new();
        let port = down.port;
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

    /// Stands in for the addresses of one name: the first two refuse at once, the third takes
    /// a full connect timeout (unreachable), the rest would connect.
    async fn fake_attempt(ip: IpAddr) -> Result<IpAddr, DialFailure> {
        match ip.to_string().as_str() {
            "10.0.0.1" | "10.0.0.2" => Err(fail(OpenFailure::ConnectionRefused, "refused".into())),
            "10.0.0.3" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Err(fail(OpenFailure::TimedOut, "timed out".into()))
            }
            _ => Ok(ip),
        }
    }

    /// On tokio's paused clock: the refusals take no time, the third attempt's 5 s outlast the
    /// deadline, however slow the machine.
    #[tokio::test(start_paused = true)]
    async fn a_dial_gives_up_at_its_deadline_and_says_how_many_addresses_it_tried() {
        let addresses: Vec<IpAddr> =
            (1..=5).map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))).collect();
        let mut attempted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        let f = in_turn(&addresses, deadline, |ip| {
            attempted.push(*ip);
            fake_attempt(*ip)
        })
        .await
        .unwrap_err();
        assert_eq!(attempted, addresses[..3], "no attempt starts after the deadline");
        assert_eq!(f.reason, OpenFailure::TimedOut);
        assert!(
            f.message.contains("tried 3 of 5 allowed addresses (10.0.0.1, 10.0.0.2, 10.0.0.3)"),
            "{}",
            f.message
        );
    }

    #[test]
    fn the_dial_deadline_leaves_the_gateway_time_to_hear_the_answer() {
        let open_timeout = ism_tunnel_proto::Timing::default().open_timeout;
        assert!(DIAL_DEADLINE + Duration::from_secs(5) <= open_timeout, "{open_timeout:?}");
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

    /// The endpoint's web proxy at `host:port`, used as `scope` says.
    fn proxy_at(host: &str, port: u16, scope: ProxyScope, resolve_urls: bool) -> ProxyConfig {
        ProxyConfig {
            host: host.into(),
            port,
            scope,
            resolve_gateway: true,
            resolve_urls,
            exclusions: ExclusionList::default(),
            credentials: None,
        }
    }

    /// A dialer with `rules` whose web proxy resolves the names of URL targets. Its own name and
    /// the names the tests ask it for are under `.invalid`, which never resolves (RFC 6761).
    fn by_name(rules: &str) -> Dialer {
        let mut d = dialer(rules);
        d.proxy = Some(proxy_at("proxy.invalid", 3128, ProxyScope::GatewayAndUrls, false));
        d
    }

    fn domain(name: &str, port: u16) -> TargetAddr {
        TargetAddr::Domain(name.into(), port)
    }

    #[tokio::test]
    async fn a_proxy_that_resolves_names_gets_no_address_spelled_as_a_name() {
        let d = by_name("*.invalid, *invalid");
        assert!(d.proxy_resolves_names() && !dialer("*").proxy_resolves_names());
        for name in ["app.invalid", "app_1.invalid"] {
            let target = domain(name, 80);
            let plan = d.plan(&target).await;
            assert!(matches!(plan, Ok(Plan::ProxyByName(_, n)) if n == name), "{name}: {plan:?}");
        }
        for spelled in ["169.254.169.254", "0xa9fea9fe", "2852039166", "app.invalid.0x7f"] {
            let f = refused(&d, domain(spelled, 80)).await;
            assert_eq!(f.reason, OpenFailure::NotAllowed, "{spelled}");
        }
    }

    #[tokio::test]
    async fn a_proxy_that_resolves_names_never_gets_its_own_loopback_or_itself() {
        let d = by_name("*.corp, *.invalid, localhost, *.localhost");
        for name in ["localhost.corp", "LOCALHOST.corp.", "localhost", "app.localhost"] {
            let f = refused(&d, domain(name, 80)).await;
            assert_eq!(f.reason, OpenFailure::NotAllowed, "{name}");
            assert!(f.message.contains("names the loopback"), "{}", f.message);
        }
        let f = refused(&d, domain("Proxy.invalid.", 3128)).await;
        assert!(f.message.contains("the endpoint's own web proxy"), "{}", f.message);
    }

    #[test]
    fn a_name_the_proxy_resolves_is_refused_when_it_resolves_here_to_what_no_broad_rule_allows() {
        let d = by_name("*.corp, 10.0.0.9:3128");
        let ips = |list: &[&str]| list.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpAddr>>();
        let meta = domain("meta.corp", 80);
        assert!(d.check_resolved_here(&meta, "meta.corp", &ips(&["10.1.1.1"]), &[]).is_ok());
        let f = d
            .check_resolved_here(&meta, "meta.corp", &ips(&["10.1.1.1", "169.254.169.254"]), &[])
            .unwrap_err();
        assert_eq!(f.reason, OpenFailure::NotAllowed);
        assert!(
            f.message.contains(
                "resolves here to 169.254.169.254: 169.254.169.254 is a link-local address"
            ),
            "{}",
            f.message
        );
        // Another name of the proxy, and the one proxy address a rule names exactly.
        let alias = domain("alias.corp", 3128);
        let own = ips(&["10.0.0.8", "10.0.0.9"]);
        let f = d.check_resolved_here(&alias, "alias.corp", &ips(&["10.0.0.8"]), &own).unwrap_err();
        assert!(f.message.contains("own web proxy"), "{}", f.message);
        assert!(d.check_resolved_here(&alias, "alias.corp", &ips(&["10.0.0.9"]), &own).is_ok());
    }

    #[tokio::test]
    async fn names_that_are_not_host_names_are_refused_before_any_lookup() {
        for d in [dialer("*, *.corp"), by_name("*, *.corp")] {
            for name in ["a\r\nb.corp", "x\0.corp", "app.corp/x", "a b.corp", "[::1]"] {
                let f = refused(&d, domain(name, 80)).await;
                assert_eq!(f.reason, OpenFailure::NotAllowed, "{name:?}");
                assert!(f.message.starts_with("the target is not a host name"), "{:?}", f.message);
                assert!(!f.message.contains(['\r', '\n', '\0', '/']), "{:?}", f.message);
            }
        }
        assert_eq!(check_host_name("app_1.corp"), Ok(()));
    }

    #[tokio::test]
    async fn a_name_no_rule_for_its_port_could_allow_is_not_looked_up() {
        let d = dialer("app.corp:443");
        for target in [domain("localhost", 22), domain("localhost", 443)] {
            let f = refused(&d, target.clone()).await;
            assert_eq!(f.reason, OpenFailure::NotAllowed, "{target}");
            assert!(!f.message.contains("127.0.0.1"), "{}", f.message);
            assert!(f.message.contains("not looked up"), "{}", f.message);
        }
    }

    #[tokio::test]
    async fn the_endpoints_own_web_proxy_is_no_target_unless_a_rule_names_it() {
        let at = |a: [u8; 4], port| TargetAddr::Ipv4(Ipv4Addr::from(a), port);
        let proxy = at([10, 0, 0, 9], 3128);
        for scope in [ProxyScope::Gateway, ProxyScope::GatewayAndUrls] {
            let mut d = dialer("10.0.0.0/8");
            d.proxy = Some(proxy_at("10.0.0.9", 3128, scope, true));
            let mapped = TargetAddr::Ipv6("::ffff:10.0.0.9".parse().unwrap(), 3128);
            for target in [proxy.clone(), mapped] {
                let f = refused(&d, target.clone()).await;
                assert_eq!(f.reason, OpenFailure::NotAllowed, "{target}");
                assert!(
                    f.message.contains("is the endpoint's own web proxy")
                        && f.message.contains("(like 10.0.0.9:3128)"),
                    "{}",
                    f.message
                );
            }
            for other in [at([10, 0, 0, 9], 80), at([10, 0, 0, 10], 3128)] {
                assert!(d.plan(&other).await.is_ok(), "{other}");
            }
            d.allowlist = Allowlist::parse("10.0.0.0/8, 10.0.0.9:3128").unwrap();
            assert!(d.plan(&proxy).await.is_ok(), "a rule names it");
        }
        // A proxy whose name does not resolve cannot be told apart from a target on its port.
        let mut d = dialer("10.0.0.0/8");
        d.proxy = Some(proxy_at("proxy.invalid", 3128, ProxyScope::Gateway, true));
        let f = refused(&d, at([10, 0, 0, 1], 3128)).await;
        assert!(f.message.contains("cannot be told apart"), "{}", f.message);
        assert!(d.plan(&at([10, 0, 0, 1], 80)).await.is_ok());
    }
}
