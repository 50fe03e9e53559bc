//! Reaching the gateway: TCP (directly, or through the web proxy with `CONNECT`), TLS and the
//! WebSocket upgrade, then the handshake that proves the key and the machine identity. Used by
//! the agent for its working session, and by the diagnostic tool and the installer's key check
//! for a side session that leaves the working one alone.
//!
//! Each failure comes back as the seed's diagnosis, and says whether retrying can help.

use crate::config::{EndpointConfig, WsProtocol};
use crate::identity::MachineIdentity;
use crate::messages::{self, Diagnosis};
use crate::proxy::{self, ProxyError};
use ism_tunnel::ws::{recv_frame, send_frame, websocket_config, TLS_BUFFER_LIMIT};
use ism_tunnel::{Incoming, Session, SessionConfig, TunnelSocket};
use ism_tunnel_proto::handshake::{challenge_message, expect_challenge, expect_verdict};
use ism_tunnel_proto::{Frame, Hello, Purpose, RejectCode, Role};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The connection under the WebSocket: TLS, or plain TCP to a gateway behind a TLS-terminating
/// load balancer (`websocketProtocol = ws`). Boxed, since tokio's `Box` passes vectored writes on,
/// which the session's writer relies on to fill TLS records.
trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// A failed attempt: fatal ones end the endpoint (retrying cannot fix them).
#[derive(Debug, Clone)]
pub enum LinkError {
    Retry(Diagnosis),
    Fatal(Diagnosis),
}

impl LinkError {
    pub fn diagnosis(&self) -> &Diagnosis {
        match self {
            LinkError::Retry(d) | LinkError::Fatal(d) => d,
        }
    }
}

/// An established, authenticated session.
pub struct Link {
    pub session: Session,
    pub incoming: Incoming,
    /// The gateway address dialed (one of `gateway = a,b,c`).
    pub gateway: String,
    /// The gateway node that holds the session.
    pub node: String,
    /// The endpoint's name, as the gateway knows it.
    pub endpoint_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("gatewayCaFile {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// The TLS settings for the gateway: the public web PKI plus `gatewayCaFile`.
pub fn tls_config(config: &EndpointConfig) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &config.gateway_ca_file {
        let err = |reason: String| TlsSetupError::CaFile { path: ca.display().to_string(), reason };
        let pem = std::fs::read(ca).map_err(|e| err(e.to_string()))?;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
        if certs.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// Connects to each address `host` resolves to in turn, each within `timeout` (a name for the
/// nodes of a cluster: one address that black-holes does not use up the others' time); what went
/// wrong with the last one otherwise.
async fn dial_each_address(
    host: &str,
    port: u16,
    timeout: std::time::Duration,
) -> Result<TcpStream, String> {
    let addresses = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| format!("resolving {host} timed out after {timeout:?}"))?
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("{host} resolves to no address");
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = format!("{address}: {e}"),
            Err(_) => last = format!("{address}: timed out after {timeout:?}"),
        }
    }
    Err(last)
}

/// The TCP connection to the gateway, through the proxy when one is configured for it.
async fn dial(cfg: &EndpointConfig) -> Result<TcpStream, LinkError> {
    let (host, port) = cfg.gateway_host_port();
    let timeout = cfg.connect_timeout;
    let tcp = match cfg.proxy.as_ref().filter(|p| p.for_gateway(&host)) {
        Some(p) => {
            // With "let endpoint resolve hostname for gateway" on, the proxy is asked for the
            // address; off, for the name, and the endpoint never looks it up.
            let target = if p.resolve_gateway {
                let resolved = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next());
                resolved.map(|a| a.ip().to_string()).ok_or_else(|| {
                    LinkError::Retry(messages::gateway_unreachable(
                        port,
                        format!("cannot resolve {host}"),
                    ))
                })?
            } else {
                host.clone()
            };
            proxy::connect(p, &target, port, timeout).await.map_err(|e| match e {
                ProxyError::Refused { .. } => {
                    LinkError::Retry(messages::websocket_failed(port, e.to_string()))
                }
                _ => LinkError::Retry(messages::gateway_unreachable(port, e.to_string())),
            })?
        }
        None => dial_each_address(&host, port, timeout).await.map_err(|why| {
            LinkError::Retry(messages::gateway_unreachable(
                port,
                format!("connecting to {}: {why}", cfg.gateway),
            ))
        })?,
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// One attempt to open a session for `purpose`.
pub async fn connect(
    cfg: &EndpointConfig,
    tls: Arc<rustls::ClientConfig>,
    identity: &MachineIdentity,
    purpose: Purpose,
    session: SessionConfig,
) -> Result<Link, LinkError> {
    let tcp = dial(cfg).await?;
    let (_, port) = cfg.gateway_host_port();
    let ws_failed = |cause: String| LinkError::Retry(messages::websocket_failed(port, cause));
    let request = cfg
        .url()
        .into_client_request()
        .map_err(|e| ws_failed(format!("bad gateway URL {}: {e}", cfg.url())))?;
    let Some(host) = request.uri().host() else {
        return Err(ws_failed(format!("no host name in {}", cfg.url())));
    };
    // rustls wants an IPv6 address without its brackets.
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| ws_failed(format!("bad gateway host in {}: {e}", cfg.url())))?;
    let upgrade = async {
        let transport: Box<dyn Transport> = match cfg.protocol {
            WsProtocol::Wss => {
                let mut tls = TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| {
                    match untrusted_certificate(&e) {
                        Some(problem) => LinkError::Retry(messages::gateway_certificate_untrusted(
                            format!("{}: {problem}", cfg.url()),
                        )),
                        None => ws_failed(format!("{}: TLS: {e}", cfg.url())),
                    }
                })?;
                tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
                Box::new(tls)
            }
            WsProtocol::Ws => Box::new(tcp),
        };
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            request,
            TunnelSocket::client(transport),
            Some(websocket_config()),
        )
        .await
        .map_err(|e| ws_failed(format!("{}: {e}", cfg.url())))?;
        Ok(ws)
    };
    let mut ws = tokio::time::timeout(cfg.read_timeout, upgrade).await.map_err(|_| {
        ws_failed(format!("no WebSocket upgrade from {} within {:?}", cfg.url(), cfg.read_timeout))
    })??;
    let challenge = recv_frame(&mut ws, cfg.read_timeout)
        .await
        .map_err(|e| ws_failed(format!("handshake: {e}")))?;
    let (nonce, node, version) =
        expect_challenge(challenge).map_err(|e| ws_failed(e.to_string()))?;
    let hello = Hello {
        version,
        purpose,
        key: cfg.token.clone(),
        machine_key: identity.public_key(),
        signature: identity.sign(&challenge_message(&nonce, &node)),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        platform: std::env::consts::OS.to_string(),
        hostname: hostname(),
        instance: Some(identity.instance()),
    };
    send_frame(&mut ws, &Frame::Hello(Box::new(hello)))
        .await
        .map_err(|e| ws_failed(format!("handshake: {e}")))?;
    let verdict = recv_frame(&mut ws, cfg.read_timeout)
        .await
        .map_err(|e| ws_failed(format!("handshake: {e}")))?;
    match expect_verdict(verdict).map_err(|e| ws_failed(e.to_string()))? {
        Ok(welcomed) => {
            let (session, incoming) =
                Session::spawn(ws, Role::Endpoint, session.at_version(version));
            Ok(Link {
                session,
                incoming,
                gateway: cfg.gateway.clone(),
                node: welcomed.node,
                endpoint_name: welcomed.endpoint_name,
            })
        }
        Err(refused) => {
            let retry = refused.is_retryable();
            let diagnosis = match refused.code {
                RejectCode::TokenAlreadyRegistered => messages::token_already_registered(),
                RejectCode::UnsupportedVersion => messages::unsupported_version(refused.message),
                RejectCode::InvalidKey | RejectCode::BadHandshake => {
                    messages::invalid_key(refused.message)
                }
                RejectCode::EndpointDeleted => messages::endpoint_deleted(refused.message),
                RejectCode::MachineKeyCopied => messages::machine_key_copied(refused.message),
                RejectCode::Unavailable => messages::websocket_failed(
                    port,
                    format!("the gateway is unavailable: {}", refused.message),
                ),
            };
            Err(if retry { LinkError::Retry(diagnosis) } else { LinkError::Fatal(diagnosis) })
        }
    }
}

/// What TLS found wrong with the gateway's certificate, when that is why the upgrade failed.
fn untrusted_certificate(e: &std::io::Error) -> Option<&rustls::CertificateError> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(problem) => Some(problem),
        _ => None,
    }
}

/// This machine's name, as the gateway is told it (and traces show it).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_tunnel_proto::PROTOCOL_VERSION;
    use std::path::Path;
    use std::time::Duration;
    use tokio::net::TcpListener;

    /// Bounds a failure, not a figure.
    const PATIENCE: Duration = Duration::from_secs(60);

    fn config(text: &str) -> EndpointConfig {
        let path = Path::new("/opt/ism/config/application.properties");
        EndpointConfig::from_text(text, path, &[]).unwrap()
    }

    /// A gateway behind a TLS-terminating load balancer: the upgrade and the handshake go out in
    /// plain text, and the agent hears the gateway's answer.
    #[tokio::test]
    async fn a_ws_gateway_is_reached_without_tls() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let gateway = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let challenge =
                Frame::Challenge { version: PROTOCOL_VERSION, nonce: [7; 32], node: "n1".into() };
            send_frame(&mut ws, &challenge).await.unwrap();
            let hello = recv_frame(&mut ws, PATIENCE).await.unwrap();
            let no = Frame::Rejected { code: RejectCode::InvalidKey, message: "no".into() };
            send_frame(&mut ws, &no).await.unwrap();
            hello
        });
        let cfg =
            config(&format!("token = abc\ngateway = 127.0.0.1:{port}\nwebsocketProtocol = ws\n"));
        let dir = tempfile::tempdir().unwrap();
        let identity = MachineIdentity::load_or_create(&dir.path().join("machine.key")).unwrap();
        let tls = tls_config(&cfg).unwrap();
        let link = connect(&cfg, tls, &identity, Purpose::Serve, SessionConfig::default()).await;
        assert!(matches!(link, Err(LinkError::Fatal(_))), "the gateway's refusal is heard");
        let hello = tokio::time::timeout(PATIENCE, gateway).await.unwrap().unwrap();
        let Frame::Hello(hello) = hello else { panic!("expected a Hello, got {hello:?}") };
        assert_eq!(hello.key, "abc");
    }
}
