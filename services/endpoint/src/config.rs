//! The endpoint's configuration: `application.properties` with the seed's keys (plus ours),
//! overridable by flags and environment, validated with errors that name the key and the line.

use crate::allowlist::Allowlist;
use crate::properties::{self, Entry, PropertiesError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Line(usize),
    Override(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::Override(s) => f.write_str(s),
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsProtocol {
    Wss,
    /// Plain WebSocket, for a gateway behind a TLS-terminating load balancer on a trusted path.
    Ws,
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The endpoint key (`token`).
    pub token: String,
    /// Gateway host, with `:port` (443 when left out).
    pub gateway: String,
    pub protocol: WsProtocol,
    /// WebSocket path (`wsendpoint`).
    pub ws_path: String,
    /// `socketConnectionTimeoutMs`: for the gateway and for targets.
    pub connect_timeout: Duration,
    /// `socketReadTimeoutMs`: longest wait for the gateway during the handshake.
    pub read_timeout: Duration,
    /// `gatewayCaFile`: extra CA to trust for the gateway (a private CA, or a TLS-inspecting
    /// proxy's). The public web PKI is always trusted too.
    pub gateway_ca_file: Option<PathBuf>,
    /// `allowedTargets`: what scanners may reach through this endpoint.
    pub allowed_targets: Allowlist,
    /// `machineKeyFile`: the machine identity.
    pub machine_key_file: PathBuf,
    /// `maxStreams`: concurrent streams this endpoint serves.
    pub max_streams: usize,
}

/// Keys of the seed's file that belong to features this version does not have yet (diagnostics,
/// web proxy). They are accepted so a seed-style file loads, and a warning says they are unused.
const RECOGNISED_UNUSED: &[&str] = &["diagnosticUrl", "diagnosticTunnelBatchSizeKB", "diagnosticTunnelBatchCount", "diagnosticUrlBatchCount", "proxyExclusionList"];

const KEYS: &[&str] = &[
    "token",
    "gateway",
    "websocketProtocol",
    "wsendpoint",
    "socketConnectionTimeoutMs",
    "socketReadTimeoutMs",
    "gatewayCaFile",
    "allowedTargets",
    "machineKeyFile",
    "maxStreams",
];

impl EndpointConfig {
    /// Reads `path` and applies `overrides` (`key`, `value`, where it came from) on top.
    pub fn load(path: &Path, overrides: &[(String, String, String)]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::from_text(&text, path, overrides)
    }

    /// As [`load`](Self::load), from text already read (`path` is for messages and relative paths).
    pub fn from_text(text: &str, path: &Path, overrides: &[(String, String, String)]) -> Result<Self, ConfigError> {
        let entries = properties::parse(text).map_err(|source| ConfigError::Syntax { path: path.into(), source })?;
        let mut settings: Vec<(Entry, Origin)> = entries.into_iter().map(|e| { let o = Origin::Line(e.line); (e, o) }).collect();
        for (key, value, source) in overrides {
            settings.retain(|(e, _)| &e.key != key);
            settings.push((Entry { key: key.clone(), value: value.clone(), line: 0 }, Origin::Override(source.clone())));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let bad = |e: &Entry, o: &Origin, reason: String| ConfigError::BadValue { path: path.into(), origin: o.clone(), key: e.key.clone(), reason };

        let mut cfg = EndpointConfig {
            token: String::new(),
            gateway: String::new(),
            protocol: WsProtocol::Wss,
            ws_path: "/wsendpoint".into(),
            connect_timeout: Duration::from_millis(5000),
            read_timeout: Duration::from_millis(5000),
            gateway_ca_file: None,
            allowed_targets: Allowlist::default(),
            machine_key_file: base.join("machine.key"),
            max_streams: 1024,
        };
        for (e, o) in &settings {
            let v = e.value.as_str();
            let millis = || -> Result<Duration, ConfigError> {
                v.parse::<u64>().ok().filter(|m| *m > 0).map(Duration::from_millis).ok_or_else(|| bad(e, o, format!("{v:?} is not a positive whole number of milliseconds")))
            };
            match e.key.as_str() {
                "token" => cfg.token = v.to_string(),
                "gateway" => {
                    if v.is_empty() || v.contains('/') || v.contains(char::is_whitespace) {
                        return Err(bad(e, o, format!("{v:?} is not a host name or host:port (no scheme, no path)")));
                    }
                    cfg.gateway = with_default_port(v);
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
                "gatewayCaFile" => cfg.gateway_ca_file = (!v.is_empty()).then(|| base.join(v)),
                "allowedTargets" => cfg.allowed_targets = Allowlist::parse(v).map_err(|err| bad(e, o, err.to_string()))?,
                "machineKeyFile" => cfg.machine_key_file = base.join(v),
                "maxStreams" => cfg.max_streams = v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| bad(e, o, format!("{v:?} is not a positive number")))?,
                k if RECOGNISED_UNUSED.contains(&k) => tracing::warn!(key = k, "setting recognised but not used by this version of the endpoint"),
                _ => {
                    return Err(ConfigError::UnknownKey {
                        path: path.into(),
                        origin: o.clone(),
                        key: e.key.clone(),
                        known: KEYS.iter().chain(RECOGNISED_UNUSED).copied().collect::<Vec<_>>().join(", "),
                    })
                }
            }
        }
        if cfg.token.is_empty() {
            return Err(ConfigError::Missing { path: path.into(), key: "token" });
        }
        if cfg.gateway.is_empty() {
            return Err(ConfigError::Missing { path: path.into(), key: "gateway" });
        }
        if cfg.allowed_targets.is_empty() {
            tracing::warn!("allowedTargets is empty: every scanner request will be refused until you list the hosts and ports to allow");
        }
        Ok(cfg)
    }

    /// The URL the endpoint dials.
    pub fn url(&self) -> String {
        let scheme = match self.protocol {
            WsProtocol::Wss => "wss",
            WsProtocol::Ws => "ws",
        };
        format!("{scheme}://{}{}", self.gateway, self.ws_path)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<EndpointConfig, ConfigError> {
        EndpointConfig::from_text(text, Path::new("/opt/ism/config/application.properties"), &[])
    }

    #[test]
    fn the_seed_example_loads_with_defaults() {
        let c = load("token = abc\ngateway = gw.example.com\nwebsocketProtocol = wss\nwsendpoint = /wsendpoint\nsocketConnectionTimeoutMs = 5000\nsocketReadTimeoutMs = 5000\ndiagnosticUrl = https://www.veracode.com\ndiagnosticTunnelBatchSizeKB = 500\n").unwrap();
        assert_eq!(c.url(), "wss://gw.example.com:443/wsendpoint");
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.machine_key_file, PathBuf::from("/opt/ism/config/machine.key"));
    }

    #[test]
    fn gateway_ports_default_to_443() {
        assert_eq!(with_default_port("gw"), "gw:443");
        assert_eq!(with_default_port("gw:8443"), "gw:8443");
        assert_eq!(with_default_port("[::1]:9"), "[::1]:9");
        assert_eq!(with_default_port("[::1]"), "[::1]:443");
        assert_eq!(with_default_port("::1"), "[::1]:443");
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let err = load("token = abc\ngateway = gw:8443\nsocketConnectionTimeoutMs = soon\n").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("socketConnectionTimeoutMs") && err.contains("soon"), "{err}");
        let err = load("token = abc\ngateway = gw\ntokn = x\n").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("unknown key \"tokn\""), "{err}");
        let err = load("gateway = gw\n").unwrap_err().to_string();
        assert!(err.contains("token is required"), "{err}");
        let err = load("token = a\ngateway = https://gw/x\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("no scheme"), "{err}");
    }

    #[test]
    fn overrides_win_and_are_named_in_errors() {
        let path = Path::new("app.properties");
        let over = vec![("token".to_string(), "from-flag".to_string(), "--token".to_string())];
        let c = EndpointConfig::from_text("token = file\ngateway = gw:9\n", path, &over).unwrap();
        assert_eq!((c.token.as_str(), c.gateway.as_str()), ("from-flag", "gw:9"));
        let over = vec![("maxStreams".to_string(), "-1".to_string(), "ISM_MAX_STREAMS".to_string())];
        let err = EndpointConfig::from_text("token = a\ngateway = gw\n", path, &over).unwrap_err().to_string();
        assert!(err.contains("ISM_MAX_STREAMS") && err.contains("maxStreams"), "{err}");
    }
}
