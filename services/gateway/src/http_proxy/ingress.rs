//! Serving scanners as an HTTP proxy: `CONNECT host:port` tunnels and absolute-URI forwarding of
//! plain HTTP, authorised with `Proxy-Authorization: Basic` on the same credentials as SOCKS5
//! (the endpoint's name, the scanner secret). Every refusal is an HTTP status with a one-line
//! reason: 407 without valid credentials, 403 when access or the allowlist refuses, 502 when the
//! endpoint or target cannot be reached, 503 at capacity, 504 on a timeout.

use crate::scanner_auth::authorise;
use crate::scanner_stream::{self, NotOpened};
use crate::state::NodeState;
use bytes::{Buf, BytesMut};
use ism_ingress_proto::http_proxy::{self as codec, Destination, HttpError, Parse};
use ism_tunnel::OpenStreamError;
use ism_tunnel_proto::{OpenError, OpenFailure};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, state: Arc<NodeState>) {
    let pending = state.pending.clone();
    crate::listener::accept_forever(listener, "HTTP proxy", pending, move |tcp, peer, pending| {
        let state = state.clone();
        async move {
            if let Err(e) = handle(tcp, peer, &state, pending).await {
                tracing::info!(%peer, error = %e, "HTTP proxy request refused");
            }
        }
    })
    .await
}

#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("no request head within {HEAD_TIMEOUT:?}")]
    TimedOut,
    #[error("client closed the connection before its request was complete")]
    Eof,
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{0}")]
    NotOpened(#[from] NotOpened),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

async fn read_head(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<codec::RequestHead, ProxyError> {
    loop {
        if let Parse::Done(head, used) = codec::parse_head(buf)? {
            buf.advance(used);
            return Ok(head);
        }
        if tcp.read_buf(buf).await? == 0 {
            return Err(ProxyError::Eof);
        }
    }
}

/// Serves one proxy connection; `pending` is its place among the connections not yet
/// authenticated, given back once it is.
async fn handle(
    mut tcp: TcpStream,
    peer: SocketAddr,
    state: &NodeState,
    pending: OwnedSemaphorePermit,
) -> Result<(), ProxyError> {
    let _ = tcp.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(4096);
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut tcp, &mut buf)).await {
        Err(_) => return Err(ProxyError::TimedOut),
        Ok(Err(ProxyError::Http(e))) => {
            tcp.write_all(&codec::response(400, "Bad Request", "", &format!("{e}\n"))).await?;
            return Err(e.into());
        }
        Ok(other) => other?,
    };
    // A request that is not for a proxy is answered as such, credentials or not.
    let destination = match codec::destination(&head) {
        Ok(d) => d,
        Err(e) => {
            tcp.write_all(&codec::response(400, "Bad Request", "", &format!("{e}\n"))).await?;
            return Err(e.into());
        }
    };
    let challenge = "Proxy-Authenticate: Basic realm=\"ism gateway\"\r\n";
    let Some((user, password)) = head.proxy_credentials() else {
        let body = "proxy authentication required: user = the endpoint's name, password = a scanner credential\n";
        tcp.write_all(&codec::response(407, "Proxy Authentication Required", challenge, body))
            .await?;
        return Err(ProxyError::Auth("no Proxy-Authorization: Basic header".into()));
    };
    let scanner = match authorise(&state.directory, &user, &password) {
        Ok(s) => s,
        Err(e) => {
            tcp.write_all(&codec::response(
                407,
                "Proxy Authentication Required",
                challenge,
                "invalid proxy credentials\n",
            ))
            .await?;
            return Err(ProxyError::Auth(e.to_string()));
        }
    };
    drop(pending);
    let (target, initial) = match destination {
        Destination::Tunnel(t) => (t, None),
        Destination::Forward { target, request } => (target, Some(request)),
    };
    match scanner_stream::open(&state.scanner_path(), &scanner, target).await {
        Ok(stream) => {
            tracing::debug!(%peer, endpoint = %scanner.endpoint.name, method = %head.method, "HTTP proxy stream open");
            let first = match initial {
                // CONNECT: the client speaks to the target once told the tunnel is up.
                None => {
                    tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
                    buf.freeze()
                }
                // Forwarding: the rewritten request, then whatever body bytes already arrived.
                Some(request) => {
                    let mut first = BytesMut::from(&request[..]);
                    first.extend_from_slice(&buf);
                    first.freeze()
                }
            };
            stream.splice(tcp, first).await;
            Ok(())
        }
        Err(not_opened) => {
            let (status, reason) = match &not_opened {
                NotOpened::Access(_)
                | NotOpened::Open {
                    error: OpenStreamError::Refused { reason: OpenFailure::NotAllowed, .. },
                    ..
                } => (403, "Forbidden"),
                NotOpened::Open {
                    error:
                        OpenStreamError::Refused { reason: OpenFailure::Busy, .. }
                        | OpenStreamError::Local(OpenError::LimitReached(_)),
                    ..
                } => (503, "Service Unavailable"),
                NotOpened::CredentialQuota(_) => (429, "Too Many Requests"),
                NotOpened::Open {
                    error:
                        OpenStreamError::Refused { reason: OpenFailure::TimedOut, .. }
                        | OpenStreamError::TimedOut(_),
                    ..
                } => (504, "Gateway Timeout"),
                NotOpened::EndpointOffline(_) | NotOpened::Open { .. } => (502, "Bad Gateway"),
            };
            tcp.write_all(&codec::response(status, reason, "", &format!("{not_opened}\n"))).await?;
            Err(not_opened.into())
        }
    }
}
