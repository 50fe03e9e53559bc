//! The endpoint's configuration: `config/application.properties` in the install folder with the
//! seed's keys (plus ours), overridable by environment (`ISM_<KEY_IN_SNAKE_CASE>`) and flags, and
//! validated with errors that name the key and where it was set.
//!
//! The install folder is the parent of the properties file's `config/` directory (or the file's
//! own directory otherwise); the machine identity, logs, status file and proxy credentials live
//! under it unless configured elsewhere, and relative file names in settings are relative to it.

use crate::allowlist::Allowlist;
use crate::properties::{self, Entry, PropertiesError};
use crate::proxy::{ExclusionList, ProxyConfig, ProxyScope};
use ism_tunnel::Timing;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Line(usize),
    Environment(String),
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::Environment(v) => write!(f, "environment variable {v}"),
            Origin::Flag(s) => write!(f, "flag {s}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Syntax { path: PathBuf, source: PropertiesError },
    #[error("{path} {origin}: unknown key {key:?} (known keys: {known})")]
    UnknownKey { path: PathBuf, origin: Origin, key: String, known: String },
    #[error("{path} {origin}: {key}: {reason}")]
    BadValue { path: PathBuf, origin: Origin, key: String, reason: String },
    #[error("{path}: {key} is required")]
    Missing { path: PathBuf, key: &'static str },
    #[error("{path}: {reason}")]
    Inconsistent { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsProtocol {
    Wss,
    /// Plain WebSocket, for a gateway behind a TLS-terminating load balancer on a trusted path.
    Ws,
}

/// Where the endpoint keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallLayout {
    /// The install folder.
    pub root: PathBuf,
    /// `machineKeyFile` (default `data/machine.key`).
    pub machine_key_file: PathBuf,
    /// `logDir` (default `logs/`): `smartendpoint.log` goes here.
    pub log_dir: PathBuf,
    /// `statusFile` (default `run/status.json`): what `ism-endpoint status` reads.
    pub status_file: PathBuf,
    /// `proxyCredentialsFile` (default `config/proxy-credentials`): written by `--authenticate`.
    pub proxy_credentials_file: PathBuf,
}

impl InstallLayout {
    fn for_properties(path: &Path) -> Self {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let root = if dir.file_name().is_some_and(|n| n == "config") {
            dir.parent().unwrap_or(dir).to_path_buf()
        } else {
            dir.to_path_buf()
        };
        Self {
            machine_key_file: root.join("data/machine.key"),
            log_dir: root.join("logs"),
            status_file: root.join("run/status.json"),
            proxy_credentials_file: root.join("config/proxy-credentials"),
            root,
        }
    }
}

/// The diagnostic tool's parameters (the seed's keys and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosticsDefaults {
    pub url: Option<String>,
    pub url_batch_count: u32,
    pub tunnel_batch_count: u32,
    pub tunnel_batch_size_kb: u32,
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The endpoint key (`token`).
    pub token: String,
    /// Gateway host, with `:port` (443 when left out): the one dialed now.
    pub gateway: String,
    /// Every gateway address (`gateway = a:443,b:443,c:443`, the nodes of a cluster): tried in
    /// turn, the next at once when one fails.
    pub gateways: Vec<String>,
    pub protocol: WsProtocol,
    /// WebSocket path (`wsendpoint`).
    pub ws_path: String,
    /// `socketConnectionTimeoutMs`: for the gateway, the proxy and targets.
    pub connect_timeout: Duration,
    /// `socketReadTimeoutMs`: longest wait for the gateway or proxy during a handshake.
    pub read_timeout: Duration,
    /// `gatewayCaFile`: extra CA to trust for the gateway (a private CA, or a TLS-inspecting
    /// proxy's). The public web PKI is always trusted too.
    pub gateway_ca_file: Option<PathBuf>,
    /// `allowedTargets`: what scanners may reach through this endpoint.
    pub allowed_targets: Allowlist,
    /// `maxStreams`: concurrent streams this endpoint serves.
    pub max_streams: usize,
    /// `heartbeatIntervalMs` and `deadPeerTimeoutMs`: how often the tunnel pings the gateway and
    /// how long a silent gateway (or link) is trusted before the endpoint reconnects.
    pub tunnel_timing: Timing,
    /// `startupAttempts`: tries to reach the gateway at start before exiting with the seed's
    /// "Exit due to initialization failure" (the service manager restarts it); 0 = keep trying.
    /// Once connected, the endpoint reconnects for ever.
    pub startup_attempts: u32,
    pub install: InstallLayout,
    /// The web proxy, when `proxyHost` is set.
    pub proxy: Option<ProxyConfig>,
    pub diagnostics: DiagnosticsDefaults,
    pub observability: Observability,
}

/// What the endpoint tells an operator beyond its log.
#[derive(Debug, Clone)]
pub struct Observability {
    /// `otlpEndpoint`: an OTLP/gRPC collector (`http://collector:4317`) for the spans of each
    /// dial, which join the gateway's trace of the scanner's request. None: nothing exported.
    pub otlp_endpoint: Option<String>,
    /// `traceSampleRatio` (0 to 1, default 1): share of traces begun here that are recorded;
    /// a dial follows the gateway's decision.
    pub sample_ratio: f64,
    /// `metricsListen`: `host:port` where the endpoint serves Prometheus metrics at `/metrics`
    /// (e.g. `127.0.0.1:9464`); none by default.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

const KEYS: &[&str] = &[
    "token",
    "gateway",
    "websocketProtocol",
    "wsendpoint",
    "socketConnectionTimeoutMs",
    "socketReadTimeoutMs",
    "diagnosticUrl",
    "diagnosticTunnelBatchSizeKB",
    "diagnosticTunnelBatchCount",
    "diagnosticUrlBatchCount",
    "proxyExclusionList",
    "proxyHost",
    "proxyPort",
    "proxyScope",
    "proxyResolveGatewayHostname",
    "proxyResolveUrlHostname",
    "proxyCredentialsFile",
    "gatewayCaFile",
    "allowedTargets",
    "machineKeyFile",
    "logDir",
    "statusFile",
    "maxStreams",
    "startupAttempts",
    "heartbeatIntervalMs",
    "deadPeerTimeoutMs",
    "otlpEndpoint",
    "traceSampleRatio",
    "metricsListen",
];

/// `socketConnectionTimeoutMs` -> `ISM_SOCKET_CONNECTION_TIMEOUT_MS`.
pub fn env_name(key: &str) -> String {
    let mut out = String::from("ISM_");
    let mut prev_lower = false;
    for c in key.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Settings given outside the file, later ones winning: `(key, value, origin)`.
pub type Overrides = Vec<(String, String, Origin)>;

/// The overrides the process environment holds for every known key.
pub fn environment_overrides() -> Overrides {
    KEYS.iter()
        .filter_map(|k| {
            let var = env_name(k);
            std::env::var(&var).ok().map(|v| (k.to_string(), v, Origin::Environment(var)))
        })
        .collect()
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

impl EndpointConfig {
    /// Reads `path` and applies `overrides` on top.
    pub fn load(path: &Path, overrides: &[(String, String, Origin)]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::from_text(&text, path, overrides)
    }

    /// As [`load`](Self::load), from text already read (`path` is for messages and the layout).
    pub fn from_text(
        text: &str,
        path: &Path,
        overrides: &[(String, String, Origin)],
    ) -> Result<Self, ConfigError> {
        let entries = properties::parse(text)
            .map_err(|source| ConfigError::Syntax { path: path.into(), source })?;
        let mut settings: Vec<(Entry, Origin)> = entries
            .into_iter()
            .map(|e| {
                let o = Origin::Line(e.line);
                (e, o)
            })
            .collect();
        for (key, value, origin) in overrides {
            settings.retain(|(e, _)| &e.key != key);
            settings
                .push((Entry { key: key.clone(), value: value.clone(), line: 0 }, origin.clone()));
        }
        let install = InstallLayout::for_properties(path);
        let root = install.root.clone();
        let bad = |e: &Entry, o: &Origin, reason: String| ConfigError::BadValue {
            path: path.into(),
            origin: o.clone(),
            key: e.key.clone(),
            reason,
        };

        let mut cfg = EndpointConfig {
            token: String::new(),
            gateway: String::new(),
            gateways: Vec::new(),
            protocol: WsProtocol::Wss,
            ws_path: "/wsendpoint".into(),
            connect_timeout: Duration::from_millis(5000),
            read_timeout: Duration::from_millis(5000),
            gateway_ca_file: None,
            allowed_targets: Allowlist::default(),
            max_streams: 1024,
            startup_attempts: 5,
            tunnel_timing: Timing::default(),
            install,
            proxy: None,
            diagnostics: DiagnosticsDefaults {
                url: None,
                url_batch_count: 10,
                tunnel_batch_count: 10,
                tunnel_batch_size_kb: 1000,
            },
            observability: Observability {
                otlp_endpoint: None,
                sample_ratio: 1.0,
                metrics_listen: None,
            },
        };
        let (mut proxy_host, mut proxy_port) = (None::<String>, None::<u16>);
        let mut scope = ProxyScope::GatewayAndUrls;
        let (mut resolve_gateway, mut resolve_urls) = (true, true);
        let mut exclusions = ExclusionList::default();
        for (e, o) in &settings {
            let v = e.value.as_str();
            let millis = || {
                v.parse::<u64>().ok().filter(|m| *m > 0).map(Duration::from_millis).ok_or_else(
                    || bad(e, o, format!("{v:?} is not a positive whole number of milliseconds")),
                )
            };
            let count = |max: u32| {
                v.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                    bad(e, o, format!("{v:?} is not a whole number from 1 to {max}"))
                })
            };
            let boolean =
                || parse_bool(v).ok_or_else(|| bad(e, o, format!("{v:?} is not true or false")));
            let file = || {
                (!v.is_empty())
                    .then(|| root.join(v))
                    .ok_or_else(|| bad(e, o, "a file name is required".into()))
            };
            match e.key.as_str() {
                "token" => cfg.token = v.to_string(),
                "gateway" => {
                    // Several nodes, comma-separated: tried in turn.
                    let mut gateways = Vec::new();
                    for one in v.split(',').map(str::trim) {
                        if one.is_empty() || one.contains('/') || one.contains(char::is_whitespace)
                        {
                            return Err(bad(
                                e,
                                o,
                                format!(
                                    "{one:?} is not a host name or host:port (no scheme, no path)"
                                ),
                            ));
                        }
                        gateways.push(with_default_port(one));
                    }
                    cfg.gateway = gateways[0].clone();
                    cfg.gateways = gateways;
                }
                "websocketProtocol" => {
                    cfg.protocol = match v.to_ascii_lowercase().as_str() {
                        "wss" => WsProtocol::Wss,
                        "ws" => WsProtocol::Ws,
                        _ => return Err(bad(e, o, format!("{v:?} must be wss or ws"))),
                    }
                }
                "wsendpoint" => {
                    if !v.starts_with('/') {
                        return Err(bad(e, o, format!("{v:?} must be a path starting with '/'")));
                    }
                    cfg.ws_path = v.to_string();
                }
                "socketConnectionTimeoutMs" => cfg.connect_timeout = millis()?,
                "socketReadTimeoutMs" => cfg.read_timeout = millis()?,
                "heartbeatIntervalMs" => cfg.tunnel_timing.ping_interval = millis()?,
                "deadPeerTimeoutMs" => cfg.tunnel_timing.idle_timeout = millis()?,
                "diagnosticUrl" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(bad(e, o, format!("{v:?} must be an http:// or https:// URL")));
                    }
                    cfg.diagnostics.url = Some(v.to_string());
                }
                "diagnosticTunnelBatchSizeKB" => {
                    cfg.diagnostics.tunnel_batch_size_kb = count(1_000_000)?
                }
                "diagnosticTunnelBatchCount" => cfg.diagnostics.tunnel_batch_count = count(10_000)?,
                "diagnosticUrlBatchCount" => cfg.diagnostics.url_batch_count = count(10_000)?,
                "proxyExclusionList" => {
                    exclusions = ExclusionList::parse(v).map_err(|r| bad(e, o, r))?
                }
                "proxyHost" => proxy_host = (!v.is_empty()).then(|| v.to_string()),
                "proxyPort" => {
                    proxy_port = Some(
                        v.parse::<u16>()
                            .ok()
                            .filter(|p| *p > 0)
                            .ok_or_else(|| bad(e, o, format!("{v:?} is not a port number")))?,
                    )
                }
                "proxyScope" => {
                    scope = match v.to_ascii_lowercase().replace(['-', '_', ' '], "").as_str() {
                        "gateway" | "gatewayonly" => ProxyScope::Gateway,
                        "gatewayandurls" | "all" => ProxyScope::GatewayAndUrls,
                        _ => {
                            return Err(bad(
                                e,
                                o,
                                format!("{v:?} must be gateway or gatewayAndUrls"),
                            ))
                        }
                    }
                }
                "proxyResolveGatewayHostname" => resolve_gateway = boolean()?,
                "proxyResolveUrlHostname" => resolve_urls = boolean()?,
                "proxyCredentialsFile" => cfg.install.proxy_credentials_file = file()?,
                "gatewayCaFile" => cfg.gateway_ca_file = Some(file()?),
                "allowedTargets" => {
                    cfg.allowed_targets =
                        Allowlist::parse(v).map_err(|err| bad(e, o, err.to_string()))?
                }
                "machineKeyFile" => cfg.install.machine_key_file = file()?,
                "logDir" => cfg.install.log_dir = file()?,
                "statusFile" => cfg.install.status_file = file()?,
                "maxStreams" => {
                    cfg.max_streams = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(e, o, format!("{v:?} is not a positive number")))?
                }
                "otlpEndpoint" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(bad(e, o, format!("{v:?} must be an http:// or https:// URL (OTLP over gRPC, port 4317)")));
                    }
                    cfg.observability.otlp_endpoint = Some(v.to_string());
                }
                "traceSampleRatio" => {
                    cfg.observability.sample_ratio = v
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| bad(e, o, format!("{v:?} is not a ratio from 0 to 1")))?
                }
                "metricsListen" => {
                    cfg.observability.metrics_listen = Some(v.parse().map_err(|_| {
                        bad(e, o, format!("{v:?} is not an address like 127.0.0.1:9464"))
                    })?)
                }
                "startupAttempts" => {
                    cfg.startup_attempts = v.parse::<u32>().map_err(|_| {
                        bad(e, o, format!("{v:?} is not a number (0 = keep trying)"))
                    })?
                }
                _ => {
                    return Err(ConfigError::UnknownKey {
                        path: path.into(),
                        origin: o.clone(),
                        key: e.key.clone(),
                        known: KEYS.join(", "),
                    });
                }
            }
        }
        if cfg.token.is_empty() {
            return Err(ConfigError::Missing { path: path.into(), key: "token" });
        }
        if cfg.gateway.is_empty() {
            return Err(ConfigError::Missing { path: path.into(), key: "gateway" });
        }
        cfg.proxy = match (proxy_host, proxy_port) {
            (Some(host), Some(port)) => Some(ProxyConfig {
                host,
                port,
                scope,
                resolve_gateway,
                resolve_urls,
                exclusions,
                credentials: None,
            }),
            (Some(_), None) => {
                return Err(ConfigError::Missing { path: path.into(), key: "proxyPort" })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing { path: path.into(), key: "proxyHost" })
            }
            (None, None) => None,
        };
        let timing = cfg.tunnel_timing;
        if timing.idle_timeout <= timing.ping_interval {
            return Err(ConfigError::Inconsistent {
                path: path.into(),
                reason: format!(
                    "deadPeerTimeoutMs ({} ms) must be longer than heartbeatIntervalMs ({} ms), \
                     or a healthy gateway would be taken for dead",
                    timing.idle_timeout.as_millis(),
                    timing.ping_interval.as_millis()
                ),
            });
        }
        Ok(cfg)
    }

    /// This configuration aimed at `gateway`, one of [`gateways`](Self::gateways).
    pub fn at(&self, gateway: &str) -> EndpointConfig {
        EndpointConfig { gateway: gateway.to_string(), ..self.clone() }
    }

    /// The URL the endpoint dials.
    pub fn url(&self) -> String {
        let scheme = match self.protocol {
            WsProtocol::Wss => "wss",
            WsProtocol::Ws => "ws",
        };
        format!("{scheme}://{}{}", self.gateway, self.ws_path)
    }

    /// The gateway's host and port.
    pub fn gateway_host_port(&self) -> (String, u16) {
        split_host_port(&self.gateway)
    }
}

/// `host` -> `host:443`; `host:port` and `[v6]:port` unchanged; a bare IPv6 gets brackets.
fn with_default_port(v: &str) -> String {
    if let Some(rest) = v.strip_prefix('[') {
        return if rest.contains("]:") { v.to_string() } else { format!("{v}:443") };
    }
    match v.matches(':').count() {
        0 => format!("{v}:443"),
        1 if v.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) => v.to_string(),
        1 => format!("{v}:443"),
        _ => format!("[{v}]:443"),
    }
}

/// Splits `host:port` (as normalised by [`with_default_port`]); IPv6 hosts lose their brackets.
fn split_host_port(v: &str) -> (String, u16) {
    let (h, p) = v.rsplit_once(':').unwrap_or((v, "443"));
    (h.trim_start_matches('[').trim_end_matches(']').to_string(), p.parse().unwrap_or(443))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<EndpointConfig, ConfigError> {
        EndpointConfig::from_text(text, Path::new("/opt/ism/config/application.properties"), &[])
    }

    #[test]
    fn the_seed_example_loads_with_defaults_and_the_install_layout() {
        let c = load("token = abc\ngateway = gw.example.com\nwebsocketProtocol = wss\nwsendpoint = /wsendpoint\nsocketConnectionTimeoutMs = 5000\nsocketReadTimeoutMs = 5000\ndiagnosticUrl = https://www.veracode.com\ndiagnosticTunnelBatchSizeKB = 500\ndiagnosticTunnelBatchCount = 5\ndiagnosticUrlBatchCount = 5\n").unwrap();
        assert_eq!(c.url(), "wss://gw.example.com:443/wsendpoint");
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.install.root, PathBuf::from("/opt/ism"));
        assert_eq!(c.install.machine_key_file, PathBuf::from("/opt/ism/data/machine.key"));
        assert_eq!(c.install.log_dir, PathBuf::from("/opt/ism/logs"));
        assert_eq!(
            c.diagnostics,
            DiagnosticsDefaults {
                url: Some("https://www.veracode.com".into()),
                url_batch_count: 5,
                tunnel_batch_count: 5,
                tunnel_batch_size_kb: 500
            }
        );
        assert!(c.proxy.is_none());
        let defaults = load("token = a\ngateway = gw\n").unwrap();
        assert_eq!(
            (
                defaults.diagnostics.tunnel_batch_size_kb,
                defaults.diagnostics.tunnel_batch_count,
                defaults.diagnostics.url_batch_count
            ),
            (1000, 10, 10)
        );
    }

    #[test]
    fn heartbeats_and_the_dead_peer_timeout_are_set_together_sensibly() {
        let defaults = load("token = a\ngateway = gw\n").unwrap();
        assert_eq!(defaults.tunnel_timing, Timing::default());
        let fast =
            load("token = a\ngateway = gw\nheartbeatIntervalMs = 200\ndeadPeerTimeoutMs = 1000\n")
                .unwrap();
        assert_eq!(fast.tunnel_timing.ping_interval, Duration::from_millis(200));
        assert_eq!(fast.tunnel_timing.idle_timeout, Duration::from_secs(1));
        let err = load("token = a\ngateway = gw\ndeadPeerTimeoutMs = 1500\n").unwrap_err();
        assert!(err.to_string().contains("must be longer than heartbeatIntervalMs"), "{err}");
    }

    #[test]
    fn observability_settings_are_checked() {
        let defaults = load("token = a\ngateway = gw\n").unwrap().observability;
        assert_eq!((defaults.otlp_endpoint, defaults.sample_ratio), (None, 1.0));
        assert_eq!(defaults.metrics_listen, None);
        let set = load("token = a\ngateway = gw\notlpEndpoint = http://127.0.0.1:4317\ntraceSampleRatio = 0.25\nmetricsListen = 127.0.0.1:9464\n").unwrap().observability;
        assert_eq!(set.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(set.sample_ratio, 0.25);
        assert_eq!(set.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        for (line, says) in [
            ("otlpEndpoint = collector:4317", "must be an http:// or https:// URL"),
            ("traceSampleRatio = 2", "is not a ratio from 0 to 1"),
            ("metricsListen = :9464", "is not an address like"),
        ] {
            let err = load(&format!("token = a\ngateway = gw\n{line}\n")).unwrap_err();
            assert!(err.to_string().contains(says), "{line}: {err}");
        }
    }

    #[test]
    fn gateway_ports_default_to_443() {
        assert_eq!(with_default_port("gw"), "gw:443");
        assert_eq!(with_default_port("gw:8443"), "gw:8443");
        assert_eq!(with_default_port("[::1]:9"), "[::1]:9");
        assert_eq!(with_default_port("[::1]"), "[::1]:443");
        assert_eq!(with_default_port("::1"), "[::1]:443");
        assert_eq!(split_host_port("[::1]:9"), ("::1".to_string(), 9));
    }

    #[test]
    fn several_gateway_nodes_are_listed_with_commas() {
        let c = load("token = a\ngateway = gw-a, gw-b:8443 ,gw-c\n").unwrap();
        assert_eq!(c.gateways, ["gw-a:443", "gw-b:8443", "gw-c:443"]);
        assert_eq!(c.gateway, "gw-a:443");
        assert_eq!(c.at("gw-b:8443").url(), "wss://gw-b:8443/wsendpoint");
        let err = load("token = a\ngateway = gw-a,,gw-b\n").unwrap_err().to_string();
        assert!(err.contains("\"\" is not a host name"), "{err}");
        let single = load("token = a\ngateway = gw\n").unwrap();
        assert_eq!(single.gateways, ["gw:443"]);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let err = load("token = abc\ngateway = gw:8443\nsocketConnectionTimeoutMs = soon\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3")
                && err.contains("socketConnectionTimeoutMs")
                && err.contains("soon"),
            "{err}"
        );
        let err = load("token = abc\ngateway = gw\ntokn = x\n").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("unknown key \"tokn\""), "{err}");
        let err = load("gateway = gw\n").unwrap_err().to_string();
        assert!(err.contains("token is required"), "{err}");
        let err = load("token = a\ngateway = https://gw/x\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("no scheme"), "{err}");
        let err = load("token = a\ngateway = gw\ndiagnosticTunnelBatchCount = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("1 to 10000"), "{err}");
        let err =
            load("token = a\ngateway = gw\nproxyHost = proxy.corp\n").unwrap_err().to_string();
        assert!(err.contains("proxyPort is required"), "{err}");
        let err = load("token = a\ngateway = gw\nproxyResolveUrlHostname = maybe\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("true or false"), "{err}");
    }

    #[test]
    fn environment_then_flags_override_the_file_and_are_named_in_errors() {
        let path = Path::new("app.properties");
        let over = vec![
            ("token".to_string(), "from-env".to_string(), Origin::Environment("ISM_TOKEN".into())),
            ("token".to_string(), "from-flag".to_string(), Origin::Flag("--token".into())),
        ];
        let c = EndpointConfig::from_text("token = file\ngateway = gw:9\n", path, &over).unwrap();
        assert_eq!((c.token.as_str(), c.gateway.as_str()), ("from-flag", "gw:9"));
        let over = vec![(
            "maxStreams".to_string(),
            "-1".to_string(),
            Origin::Environment("ISM_MAX_STREAMS".into()),
        )];
        let err = EndpointConfig::from_text("token = a\ngateway = gw\n", path, &over)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable ISM_MAX_STREAMS") && err.contains("maxStreams"),
            "{err}"
        );
    }

    #[test]
    fn environment_names_follow_the_keys() {
        assert_eq!(env_name("socketConnectionTimeoutMs"), "ISM_SOCKET_CONNECTION_TIMEOUT_MS");
        assert_eq!(env_name("diagnosticTunnelBatchSizeKB"), "ISM_DIAGNOSTIC_TUNNEL_BATCH_SIZE_KB");
        assert_eq!(env_name("token"), "ISM_TOKEN");
    }

    #[test]
    fn proxy_settings() {
        let c = load("token = a\ngateway = gw\nproxyHost = proxy.corp\nproxyPort = 3128\nproxyScope = gateway\nproxyResolveGatewayHostname = false\nproxyExclusionList = veracode.com, *code.com\n").unwrap();
        let p = c.proxy.unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.scope, p.resolve_gateway, p.resolve_urls),
            ("proxy.corp", 3128, ProxyScope::Gateway, false, true)
        );
        assert!(
            p.exclusions.matches("mycode.com")
                && p.exclusions.matches("VERACODE.com")
                && !p.exclusions.matches("example.com")
        );
    }
}
