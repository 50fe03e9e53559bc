//! The addresses users are shown for allowing outbound traffic and configuring endpoints and
//! scanners (`ism gateway show`, the seed's "IP address and domain"): in a cluster the load
//! balancer's (`--public-address`), never a node's wildcard bind address like `0.0.0.0:8443`.

use std::net::SocketAddr;

/// Where this node listens, as reported by the API (for allowlists and endpoint configuration).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub endpoint_wss: SocketAddr,
    pub socks: SocketAddr,
    pub http_proxy: SocketAddr,
    pub api: SocketAddr,
}

/// What the operator configured; each `None` falls back to what the node can tell by itself.
#[derive(Debug, Clone, Default)]
pub struct PublicConfig {
    /// `host[:port]` endpoints dial (443 when the port is left out).
    pub endpoint: Option<String>,
    /// `host:port` scanners use for SOCKS5; by default the public host with this node's port.
    pub socks: Option<String>,
    /// `host:port` scanners use as an HTTP proxy; likewise.
    pub http_proxy: Option<String>,
}

/// The addresses shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicAddresses {
    /// `host:port` endpoints dial.
    pub endpoint: String,
    pub socks: String,
    pub http_proxy: String,
}

impl PublicAddresses {
    /// Resolves `config` against the addresses the node is bound to and its host name.
    pub fn resolve(config: &PublicConfig, bound: &Addresses, hostname: &str) -> Self {
        let public_host = config.endpoint.as_deref().map(host_of);
        let shown = |addr: SocketAddr| match public_host {
            Some(host) => join(host, addr.port()),
            None if addr.ip().is_unspecified() => join(hostname, addr.port()),
            None => addr.to_string(),
        };
        Self {
            endpoint: match &config.endpoint {
                Some(e) if has_port(e) => e.clone(),
                Some(e) => join(e, 443),
                None => shown(bound.endpoint_wss),
            },
            socks: config.socks.clone().unwrap_or_else(|| shown(bound.socks)),
            http_proxy: config.http_proxy.clone().unwrap_or_else(|| shown(bound.http_proxy)),
        }
    }
}

/// This machine's host name (what a wildcard bind is shown as).
pub fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

fn has_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
}

fn host_of(address: &str) -> &str {
    if has_port(address) {
        address.rsplit_once(':').map_or(address, |(host, _)| host)
    } else {
        address
    }
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(ip: &str) -> Addresses {
        let at = |port: u16| SocketAddr::new(ip.parse().unwrap(), port);
        Addresses { endpoint_wss: at(8443), socks: at(1080), http_proxy: at(3128), api: at(7070) }
    }

    #[test]
    fn a_wildcard_bind_is_shown_as_the_host_name() {
        let shown = PublicAddresses::resolve(&PublicConfig::default(), &bound("0.0.0.0"), "gw1");
        assert_eq!(shown.endpoint, "gw1:8443");
        assert_eq!(shown.socks, "gw1:1080");
        let specific = PublicAddresses::resolve(&PublicConfig::default(), &bound("192.0.2.3"), "x");
        assert_eq!(specific.endpoint, "192.0.2.3:8443");
    }

    #[test]
    fn the_public_address_is_the_load_balancers() {
        let config =
            PublicConfig { endpoint: Some("scan.example.com".into()), ..Default::default() };
        let shown = PublicAddresses::resolve(&config, &bound("0.0.0.0"), "node-a");
        assert_eq!(shown.endpoint, "scan.example.com:443");
        assert_eq!(shown.socks, "scan.example.com:1080", "the public host, this node's port");
        let config = PublicConfig {
            endpoint: Some("[2001:db8::1]:9443".into()),
            socks: Some("socks.example.com:1080".into()),
            http_proxy: None,
        };
        let shown = PublicAddresses::resolve(&config, &bound("0.0.0.0"), "node-a");
        assert_eq!(shown.endpoint, "[2001:db8::1]:9443");
        assert_eq!(shown.socks, "socks.example.com:1080");
        assert_eq!(shown.http_proxy, "[2001:db8::1]:3128");
    }
}
