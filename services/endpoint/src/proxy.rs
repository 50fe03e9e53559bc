//! The customer's web proxy, as the seed describes it: host and port; used for the gateway only
//! or for the gateway and the URLs scanned; "let endpoint resolve hostname" on or off for each
//! (off: the proxy resolves, and the endpoint never looks the name up); basic authentication with
//! credentials stored once by `--authenticate`; and `proxyExclusionList` of hosts that bypass it.
//!
//! Connections through the proxy use HTTP `CONNECT`.

use base64::Engine;
use ism_escape::escaped;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the proxy is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScope {
    /// "For gateway connection" (`--proxygatewayonly`).
    Gateway,
    /// "For gateway and URL connections".
    GatewayAndUrls,
}

/// `proxyExclusionList`: exact host names and `*suffix` wildcards, case-insensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExclusionList {
    exact: Vec<String>,
    suffixes: Vec<String>,
}

impl ExclusionList {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut list = Self::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let item = item.to_ascii_lowercase();
            match item.strip_prefix('*') {
                Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                    list.suffixes.push(suffix.to_string())
                }
                Some(_) => {
                    return Err(format!("{item:?}: a wildcard needs a suffix, like *code.com"))
                }
                None if item.contains('*') => {
                    return Err(format!("{item:?}: a wildcard may only lead, like *code.com"))
                }
                None => list.exact.push(item),
            }
        }
        Ok(list)
    }

    /// Whether connections to `host` bypass the proxy.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.exact.contains(&host) || self.suffixes.iter().any(|s| host.ends_with(s.as_str()))
    }
}

/// Basic-authentication credentials for the proxy. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl ProxyCredentials {
    /// Reads the credentials file written by [`store`](Self::store), if there is one.
    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut lines = text.lines();
                match (lines.next(), lines.next()) {
                    (Some(u), Some(p)) if !u.is_empty() => {
                        Ok(Some(Self { username: u.to_string(), password: p.to_string() }))
                    }
                    _ => Err(format!(
                        "{}: expected a user name line and a password line",
                        path.display()
                    )),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the credentials readable by the owner only, whole or not at all: credentials that
    /// worked stay until the new ones are written in full.
    pub fn store(&self, path: &Path) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let contents = format!("{}\n{}\n", self.username, self.password);
        ism_files::replace(path, contents.as_bytes(), 0o600).map_err(err)
    }

    fn header(&self) -> String {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password));
        format!("Proxy-Authorization: Basic {token}\r\n")
    }
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub host: String,
    pub port: u16,
    pub scope: ProxyScope,
    /// "Let endpoint resolve hostname for gateway".
    pub resolve_gateway: bool,
    /// "Let endpoint resolve hostname for URLs".
    pub resolve_urls: bool,
    pub exclusions: ExclusionList,
    pub credentials: Option<ProxyCredentials>,
}

impl ProxyConfig {
    /// Whether the gateway connection to `host` goes through the proxy.
    pub fn for_gateway(&self, host: &str) -> bool {
        !self.exclusions.matches(host)
    }

    /// Whether a connection to the scanned `host` goes through the proxy.
    pub fn for_url(&self, host: &str) -> bool {
        self.scope == ProxyScope::GatewayAndUrls && !self.exclusions.matches(host)
    }
}

/// Why a connection through the proxy failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot reach the proxy {proxy}: {reason}")]
    Unreachable { proxy: String, reason: String },
    #[error("the proxy {proxy} requires authentication (run the endpoint once with --authenticate to store the credentials)")]
    AuthenticationRequired { proxy: String },
    /// The status line is the proxy's words, shown escaped.
    #[error("the proxy {proxy} refused CONNECT {target}: {}", escaped(.status))]
    Refused { proxy: String, target: String, status: String },
    #[error("the proxy {proxy} did not answer within {timeout:?}")]
    TimedOut { proxy: String, timeout: Duration },
    #[error("the proxy {proxy} answered something that is not HTTP")]
    Garbled { proxy: String },
}

/// Opens a tunnel to `target_host:port` through the proxy. `target_host` is sent as given: a name
/// (the proxy resolves it) or an address (the endpoint resolved it).
pub async fn connect(
    proxy: &ProxyConfig,
    target_host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ProxyError> {
    let name = format!("{}:{}", proxy.host, proxy.port);
    let target = if target_host.contains(':') {
        format!("[{target_host}]:{port}")
    } else {
        format!("{target_host}:{port}")
    };
    let work = async {
        let mut tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
            .await
            .map_err(|e| ProxyError::Unreachable { proxy: name.clone(), reason: e.to_string() })?;
        let _ = tcp.set_nodelay(true);
        let auth = proxy.credentials.as_ref().map(ProxyCredentials::header).unwrap_or_default();
        let request = format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}User-Agent: ism-endpoint\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| ProxyError::Unreachable { proxy: name.clone(), reason: e.to_string() })?;
        let head =
            read_head(&mut tcp).await.map_err(|_| ProxyError::Garbled { proxy: name.clone() })?;
        let status_line = head.lines().next().unwrap_or_default().to_string();
        let code = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| ProxyError::Garbled { proxy: name.clone() })?;
        match code {
            200..=299 => Ok(tcp),
            407 => Err(ProxyError::AuthenticationRequired { proxy: name.clone() }),
            _ => Err(ProxyError::Refused {
                proxy: name.clone(),
                target: target.clone(),
                status: status_line,
            }),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ProxyError::TimedOut { proxy: name.clone(), timeout })?
}

/// Reads an HTTP response head byte by byte (so nothing of the tunnelled stream is consumed).
async fn read_head(tcp: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || tcp.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions_take_exact_names_and_leading_wildcards() {
        let l = ExclusionList::parse("veracode.com, *code.com ,intranet").unwrap();
        assert!(l.matches("veracode.com") && l.matches("www.mycode.com") && l.matches("INTRANET."));
        assert!(!l.matches("www.veracode.com.evil") && !l.matches("example.com"));
        assert!(ExclusionList::parse("a*b").is_err() && ExclusionList::parse("*").is_err());
    }

    #[test]
    fn a_refusal_shows_the_proxys_status_line_escaped() {
        let e = ProxyError::Refused {
            proxy: "proxy:3128".into(),
            target: "app.corp:443".into(),
            status: "HTTP/1.1 403 No\u{1b}[2J\u{85}forged".into(),
        };
        assert_eq!(
            e.to_string(),
            "the proxy proxy:3128 refused CONNECT app.corp:443: HTTP/1.1 403 No\\u{1b}[2J\\u{85}forged"
        );
    }

    #[test]
    fn credentials_are_stored_owner_only_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/proxy-credentials");
        let c =
            ProxyCredentials { username: "svc-ism".into(), password: "s3cr3t:with:colons".into() };
        c.store(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(ProxyCredentials::load(&path).unwrap(), Some(c.clone()));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert_eq!(ProxyCredentials::load(&dir.path().join("none")).unwrap(), None);
    }
}
