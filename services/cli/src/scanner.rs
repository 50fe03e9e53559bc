//! The scanner's side of the gateway: a SOCKS5 client (RFC 1928 + 1929), and one plain HTTP GET
//! through it. The `ism fetch` command, the demo and the tests use it to check a path end to end.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ScannerError {
    #[error("cannot connect to the SOCKS5 ingress {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the gateway refused the credentials (wrong endpoint name or scanner secret)")]
    AuthRefused,
    #[error("the gateway accepts no username/password authentication")]
    NoMethod,
    #[error("SOCKS5 reply {code:#04x}: {meaning}")]
    Refused { code: u8, meaning: &'static str },
    #[error("SOCKS5 protocol error: {0}")]
    Protocol(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// What a SOCKS5 reply code means (RFC 1928 section 6).
pub fn reply_meaning(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset (the endpoint's allowlist)",
        3 => "network unreachable (is the endpoint connected?)",
        4 => "host unreachable",
        5 => "connection refused by the target",
        6 => "TTL expired (the target did not answer in time)",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned reply code",
    }
}

/// Opens a connection to `host:port` through the SOCKS5 server at `proxy`, authenticating as
/// `username` / `password`. The host is sent as a name, resolved by the endpoint.
pub async fn connect(
    proxy: &str,
    username: &str,
    password: &str,
    host: &str,
    port: u16,
) -> Result<TcpStream, ScannerError> {
    let mut s = TcpStream::connect(proxy)
        .await
        .map_err(|e| ScannerError::Connect { addr: proxy.to_string(), reason: e.to_string() })?;
    s.set_nodelay(true)?;
    s.write_all(&[5, 1, 2]).await?;
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await?;
    match two {
        [5, 2] => {}
        [5, 0xff] => return Err(ScannerError::NoMethod),
        other => {
            return Err(ScannerError::Protocol(format!("unexpected method selection {other:?}")))
        }
    }
    if username.len() > 255 || password.len() > 255 || host.len() > 255 {
        return Err(ScannerError::Protocol(
            "username, password and host must each be at most 255 bytes".into(),
        ));
    }
    let mut auth = vec![1, username.len() as u8];
    auth.extend_from_slice(username.as_bytes());
    auth.push(password.len() as u8);
    auth.extend_from_slice(password.as_bytes());
    s.write_all(&auth).await?;
    s.read_exact(&mut two).await?;
    if two != [1, 0] {
        return Err(ScannerError::AuthRefused);
    }
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[1] != 0 {
        return Err(ScannerError::Refused { code: head[1], meaning: reply_meaning(head[1]) });
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            len[0] as usize + 2
        }
        other => return Err(ScannerError::Protocol(format!("bad bound address type {other}"))),
    };
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).await?;
    Ok(s)
}

/// An HTTP response as read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// `GET path` over `stream` with `Connection: close`, reading the whole response.
pub async fn http_get(
    mut stream: TcpStream,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse, ScannerError> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ism-scanner-check\r\nConnection: close\r\n\r\n");
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ScannerError::TimedOut(timeout))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        ScannerError::Protocol("no HTTP header terminator in the response".into())
    })?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse { status_line, headers, body: body.to_string() })
}
