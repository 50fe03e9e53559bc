//! Serving scanners as an HTTP proxy: `CONNECT host:port` tunnels and absolute-URI forwarding of
//! plain HTTP, authorised with `Proxy-Authorization: Basic` on the same credentials as SOCKS5
//! (the endpoint's name, the scanner secret). Every refusal is an HTTP status with a one-line
//! reason: 400 for a request the parser refuses (ambiguous framing included, before anything is
//! forwarded), 408 without a complete head in time, 407 without valid credentials, 403 when
//! access or the allowlist refuses, 502 when the endpoint or target cannot be reached, 503 at
//! capacity, 504 on a timeout. A forwarded request is the only one of its connection
//! (`super::forward`).

use super::forward::{self, Forward};
use crate::scanner_auth::{authorise, record_refusal};
use crate::scanner_stream::{self, Ingress, NotOpened, OpenedStream};
use crate::state::NodeState;
use bytes::{Buf, BytesMut};
use ism_events::escaped;
use ism_ingress_proto::http_proxy::{self as codec, Destination, HttpError, Parse};
use ism_tunnel::{OpenStreamError, StreamEnd};
use ism_tunnel_proto::{OpenError, OpenFailure};
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, Span};

/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the proxy goes on reading (and dropping) what a client still sends once its last
/// response is written, before the connection is closed anyway.
const LINGER: Duration = Duration::from_secs(2);

pub async fn serve(listener: TcpListener, state: Arc<NodeState>) {
    let pending = state.pending.scanners.clone();
    crate::listener::accept_forever(listener, "HTTP proxy", pending, move |tcp, peer, pending| {
        let state = state.clone();
        async move {
            let span = scanner_stream::connection_span(Ingress::HttpProxy, peer);
            if let Err(e) = handle(tcp, peer, &state, pending, &span).await {
                let ingress = Ingress::HttpProxy;
                scanner_stream::request_refused(&state, ingress, &span, peer, e.kind(), &e);
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
    #[error("client closed the connection while its stream waited to open")]
    LeftWaiting,
    /// Many clients ask without credentials first and again with them after the 407: apart from
    /// failed authentications, which the audit records.
    #[error("authentication failed: no Proxy-Authorization: Basic header")]
    NoCredentials,
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{0}")]
    NotOpened(#[from] NotOpened),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyError {
    /// A name for the kind of refusal, for the log's pace: a closed list.
    fn kind(&self) -> &'static str {
        match self {
            ProxyError::Http(_) => "http",
            ProxyError::TimedOut => "head_timed_out",
            ProxyError::Eof => "eof",
            ProxyError::LeftWaiting => "left_waiting",
            ProxyError::NoCredentials => "no_credentials",
            ProxyError::Auth(_) => "auth",
            ProxyError::NotOpened(not_opened) => not_opened.metric_reason(),
            ProxyError::Io(_) => "io",
        }
    }
}

/// Answers with the proxy's own response (`why` escaped into a one-line body: it may carry what
/// an endpoint said), then closes the connection.
async fn refuse(
    tcp: &mut TcpStream,
    status: u16,
    reason: &str,
    extra_headers: &str,
    why: impl Display,
) -> std::io::Result<()> {
    let body = format!("{}\n", escaped(why));
    tcp.write_all(&codec::response(status, reason, extra_headers, &body)).await?;
    linger_close(tcp).await;
    Ok(())
}

/// Closes the connection after the last byte of a response: the sending side first, then what
/// the client still sends is read and dropped until it closes (for [`LINGER`] at most). Closing
/// with unread bytes would make the kernel send a reset, which can destroy the response before
/// the client reads it (RFC 9112 section 9.6).
async fn linger_close(tcp: &mut TcpStream) {
    let _ = tcp.shutdown().await;
    let mut dropped = [0u8; 4096];
    let drain = async { while matches!(tcp.read(&mut dropped).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Ends the connection with a reset: a response cut short (the target reset, the endpoint went
/// away, access was withdrawn) must not look complete to the client.
fn abort(tcp: TcpStream) {
    let _ = tcp.set_zero_linger();
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
/// authenticated, given back once it is. Up to the open it runs in the connection's `span`; the
/// bytes then move outside it (entering a span on every poll would cost the data path), and the
/// stream's end is recorded on it.
async fn handle(
    mut tcp: TcpStream,
    peer: SocketAddr,
    state: &NodeState,
    pending: OwnedSemaphorePermit,
    span: &Span,
) -> Result<(), ProxyError> {
    let _ = tcp.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(4096);
    // Boxed, as in the SOCKS5 ingress: a held stream's task keeps no room for its open.
    let opening = Box::pin(open(&mut tcp, &mut buf, peer, state, pending).instrument(span.clone()));
    let (stream, forward) = opening.await?;
    match forward {
        // CONNECT: the client speaks to the target once told the tunnel is up; what it sends
        // from then on is its own (TLS, mostly), not parsed.
        None => {
            tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
            stream.splice(tcp, buf.freeze()).await;
        }
        Some(request) => {
            let end = stream
                .exchange(async |reader, writer, moved| {
                    forward::exchange(&mut tcp, request, reader, writer, moved).await
                })
                .await;
            match end {
                StreamEnd::Finished => linger_close(&mut tcp).await,
                _ => abort(tcp),
            }
        }
    }
    Ok(())
}

/// Reads and checks the request, authorises it and opens its stream: the stream and, for a
/// plain-HTTP request, what to forward on it. A refusal is answered to the client here.
async fn open<'a>(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
    state: &'a NodeState,
    pending: OwnedSemaphorePermit,
) -> Result<(OpenedStream<'a>, Option<Forward>), ProxyError> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(tcp, buf)).await {
        Err(_) => {
            let why = ProxyError::TimedOut;
            refuse(tcp, 408, "Request Timeout", "", &why).await?;
            return Err(why);
        }
        Ok(Err(ProxyError::Http(e))) => {
            refuse(tcp, 400, "Bad Request", "", &e).await?;
            return Err(e.into());
        }
        Ok(other) => other?,
    };
    // A request that is not for a proxy is answered as such, credentials or not.
    let destination = match codec::destination(&head) {
        Ok(d) => d,
        Err(e) => {
            refuse(tcp, 400, "Bad Request", "", &e).await?;
            return Err(e.into());
        }
    };
    let challenge = "Proxy-Authenticate: Basic realm=\"ism gateway\"\r\n";
    let Some((user, password)) = head.proxy_credentials() else {
        let body = "proxy authentication required: user = the endpoint's name, password = a scanner credential";
        refuse(tcp, 407, "Proxy Authentication Required", challenge, body).await?;
        return Err(ProxyError::NoCredentials);
    };
    let scanner = match authorise(&state.directory, &user, &password) {
        Ok(s) => s,
        Err(e) => {
            record_refusal(&state.refused_scanners, &e, &user);
            let body = "invalid proxy credentials";
            refuse(tcp, 407, "Proxy Authentication Required", challenge, body).await?;
            return Err(ProxyError::Auth(e.to_string()));
        }
    };
    drop(pending);
    let (target, forward) = match destination {
        Destination::Tunnel(t) => (t, None),
        Destination::Forward { target, request, body } => {
            (target, Some(Forward { request, buffered: std::mem::take(buf), body }))
        }
    };
    let path = state.scanner_path();
    let opening = scanner_stream::open(&path, &scanner, target);
    // A CONNECT client waits for its answer: one that closes meanwhile has left. A plain-HTTP
    // client may have closed its sending side after its request, and still reads the response.
    let opened = match forward {
        None => tokio::select! {
            opened = opening => opened,
            _ = scanner_stream::scanner_left(tcp) => return Err(ProxyError::LeftWaiting),
        },
        Some(_) => opening.await,
    };
    let stream = match opened {
        Ok(stream) => stream,
        Err(not_opened) => {
            let (status, reason) = status_of(&not_opened);
            refuse(tcp, status, reason, "", not_opened.for_scanner()).await?;
            return Err(not_opened.into());
        }
    };
    tracing::debug!(%peer, endpoint = %escaped(&scanner.endpoint.name), method = %head.method, "HTTP proxy stream open");
    Ok((stream, forward))
}

/// The status for a stream that could not be opened.
fn status_of(not_opened: &NotOpened) -> (u16, &'static str) {
    match not_opened {
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
        NotOpened::LogBehind(_) => (503, "Service Unavailable"),
        NotOpened::Open {
            error:
                OpenStreamError::Refused { reason: OpenFailure::TimedOut, .. }
                | OpenStreamError::TimedOut(_),
            ..
        } => (504, "Gateway Timeout"),
        NotOpened::EndpointOffline(_) | NotOpened::OwnerUnreachable(_) | NotOpened::Open { .. } => {
            (502, "Bad Gateway")
        }
    }
}
