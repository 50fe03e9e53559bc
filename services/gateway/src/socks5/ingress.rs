//! Serving scanners over SOCKS5: negotiate, authorise, open a stream through the endpoint's
//! tunnel, reply, splice. Each refusal gets the closest SOCKS reply code and a log line that says
//! why; the data path records what it did through the tunnel actor, without waiting for it.

use crate::scanner_auth::{authorise, record_refusal, AuthorisedScanner};
use crate::scanner_stream::{self, Ingress, NotOpened, OpenedStream};
use crate::state::NodeState;
use bytes::{Buf, BytesMut};
use ism_events::escaped;
use ism_ingress_proto::socks5::{self as codec, Parse, Reply, SocksError};
use ism_tunnel::OpenStreamError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{Instrument, Span};

/// Time a client has to finish negotiation and send its request.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest SOCKS message (RFC 1929 auth: 1 + 1 + 255 + 1 + 255).
const MAX_MESSAGE: usize = 513;

pub async fn serve(listener: TcpListener, state: Arc<NodeState>) {
    let pending = state.pending.scanners.clone();
    crate::listener::accept_forever(listener, "scanner", pending, move |tcp, peer, pending| {
        let state = state.clone();
        async move {
            let span = scanner_stream::connection_span(Ingress::Socks5, peer);
            if let Err(e) = handle(tcp, peer, state.clone(), pending, &span).await {
                refused(&state, &span, peer, &e);
            }
        }
    })
    .await
}

fn refused(state: &NodeState, span: &Span, peer: SocketAddr, e: &IngressError) {
    scanner_stream::request_refused(state, Ingress::Socks5, span, peer, e.kind(), e);
}

#[derive(Debug, thiserror::Error)]
enum IngressError {
    #[error("{0}")]
    Protocol(#[from] SocksError),
    #[error("client offers no username/password authentication (methods {0:?}); anonymous access is not allowed")]
    NoAcceptableMethod(Vec<u8>),
    #[error("authentication failed: {0}")]
    Auth(#[from] crate::scanner_auth::ScannerAuthError),
    #[error("command {0} is not supported (only CONNECT)")]
    Command(u8),
    #[error("{0}")]
    NotOpened(#[from] NotOpened),
    #[error("message longer than {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("client closed the connection during negotiation")]
    Eof,
    #[error("client closed the connection while its stream waited to open")]
    LeftWaiting,
    #[error("client too slow: no request within {NEGOTIATION_TIMEOUT:?}")]
    TimedOut,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl IngressError {
    /// A name for the kind of refusal, for the log's pace: a closed list.
    fn kind(&self) -> &'static str {
        match self {
            IngressError::Protocol(_) => "protocol",
            IngressError::NoAcceptableMethod(_) => "no_acceptable_method",
            IngressError::Auth(_) => "auth",
            IngressError::Command(_) => "command",
            IngressError::NotOpened(not_opened) => not_opened.metric_reason(),
            IngressError::TooLong => "too_long",
            IngressError::Eof => "eof",
            IngressError::LeftWaiting => "left_waiting",
            IngressError::TimedOut => "negotiation_timed_out",
            IngressError::Io(_) => "io",
        }
    }
}

async fn read_message<T>(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    parse: fn(&[u8]) -> Result<Parse<T>, SocksError>,
) -> Result<T, IngressError> {
    loop {
        if let Parse::Done(msg, used) = parse(buf)? {
            buf.advance(used);
            return Ok(msg);
        }
        if buf.len() >= MAX_MESSAGE {
            return Err(IngressError::TooLong);
        }
        if tcp.read_buf(buf).await? == 0 {
            return Err(IngressError::Eof);
        }
    }
}

/// Serves one scanner connection; `pending` is its place among the connections not yet
/// authenticated, given back once it is. Up to the open it runs in the connection's `span`; the
/// bytes then move outside it (entering a span on every poll of the splice would cost the data
/// path), and the stream's end is recorded on it.
///
/// Once the scanner has authenticated, the rest (its request, the open, the reply, the splice)
/// runs beside its endpoint's session, in a task of the tunnel thread the session lives on: the
/// open's answer and the stream's bytes then wake no other thread, the move itself happens
/// while the scanner's request is on its way, and this task ends there.
async fn handle(
    mut tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<NodeState>,
    pending: OwnedSemaphorePermit,
    span: &Span,
) -> Result<(), IngressError> {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + NEGOTIATION_TIMEOUT;
    let mut buf = BytesMut::with_capacity(MAX_MESSAGE);
    let authenticating =
        Box::pin(authenticate(&mut tcp, &mut buf, &state).instrument(span.clone()));
    let scanner = tokio::time::timeout_at(deadline, authenticating)
        .await
        .map_err(|_| IngressError::TimedOut)??;
    drop(pending);
    let session = state.sessions.get(scanner.endpoint.id).map(|live| live.session);
    let span = span.clone();
    // Boxed: what the closure captures stays in its task's memory for as long as the stream is
    // held, and the scanner's directory rows are most of it.
    let scanner = Box::new(scanner);
    let rest = move |mut tcp: TcpStream| async move {
        // Boxed: the open's future (the open through the cluster) is about ten times the size
        // of the rest, and inline it would stay in the task's memory for as long as the stream
        // is held.
        let opening = Box::pin(
            open(&mut tcp, &mut buf, peer, &state, *scanner, deadline).instrument(span.clone()),
        );
        match opening.await {
            Ok(stream) => stream.splice(tcp, buf.freeze()).await,
            Err(e) => refused(&state, &span, peer, &e),
        }
    };
    match session {
        Some(session) => session.spawn_beside(tcp, rest)?,
        // Held by another node, or by none: the open says which. Boxed, so that this task,
        // which in the usual case above ends at the move, is not sized for all of `rest`.
        None => Box::pin(rest(tcp)).await,
    }
    Ok(())
}

/// The scanner's request and its open, answered to the scanner.
async fn open<'a>(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
    state: &'a NodeState,
    scanner: AuthorisedScanner,
    deadline: Instant,
) -> Result<OpenedStream<'a>, IngressError> {
    let request = tokio::time::timeout_at(deadline, read_request(tcp, buf))
        .await
        .map_err(|_| IngressError::TimedOut)??;
    let path = state.scanner_path();
    let opened = tokio::select! {
        opened = scanner_stream::open(&path, &scanner, request.target) => opened,
        _ = scanner_stream::scanner_left(tcp) => return Err(IngressError::LeftWaiting),
    };
    match opened {
        Ok(stream) => {
            tcp.write_all(&codec::reply(Reply::Succeeded)).await?;
            tracing::debug!(%peer, endpoint = %escaped(&scanner.endpoint.name), "stream open");
            Ok(stream)
        }
        Err(not_opened) => {
            let code = match &not_opened {
                NotOpened::Access(_) => Reply::NotAllowed,
                NotOpened::EndpointOffline(_) | NotOpened::OwnerUnreachable(_) => {
                    Reply::NetworkUnreachable
                }
                NotOpened::CredentialQuota(_) | NotOpened::LogBehind(_) => Reply::GeneralFailure,
                NotOpened::Open { error: OpenStreamError::Refused { reason, .. }, .. } => {
                    Reply::from(*reason)
                }
                NotOpened::Open { error: OpenStreamError::TimedOut(_), .. } => Reply::TtlExpired,
                NotOpened::Open { error: OpenStreamError::SessionClosed, .. } => {
                    Reply::NetworkUnreachable
                }
                NotOpened::Open {
                    error: OpenStreamError::Local(_) | OpenStreamError::Reset(_),
                    ..
                } => Reply::GeneralFailure,
            };
            tcp.write_all(&codec::reply(code)).await?;
            Err(not_opened.into())
        }
    }
}

/// Method selection and authentication.
async fn authenticate(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    state: &NodeState,
) -> Result<AuthorisedScanner, IngressError> {
    let greeting = read_message(tcp, buf, codec::parse_greeting).await?;
    if !greeting.methods.contains(&codec::METHOD_USER_PASS) {
        tcp.write_all(&codec::method_selection(codec::METHOD_NONE_ACCEPTABLE)).await?;
        return Err(IngressError::NoAcceptableMethod(greeting.methods));
    }
    tcp.write_all(&codec::method_selection(codec::METHOD_USER_PASS)).await?;
    let creds = read_credentials(tcp, buf).await?;
    let scanner = match authorise(&state.directory, &creds.username, &creds.password) {
        Ok(s) => s,
        Err(e) => {
            record_refusal(&state.refused_scanners, &e, &creds.username);
            tcp.write_all(&codec::auth_status(false)).await?;
            return Err(e.into());
        }
    };
    tcp.write_all(&codec::auth_status(true)).await?;
    Ok(scanner)
}

/// The scanner's username and password. A malformed sub-negotiation is a failed login: RFC 1929
/// answers it with a failure status before closing, so the scanner reports "authentication
/// failed" rather than a connection closed for no reason.
async fn read_credentials(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<codec::Credentials, IngressError> {
    match read_message(tcp, buf, codec::parse_auth).await {
        Err(IngressError::Protocol(e)) => {
            tcp.write_all(&codec::auth_status(false)).await?;
            Err(e.into())
        }
        read => read,
    }
}

/// The scanner's request: a CONNECT.
async fn read_request(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<codec::Request, IngressError> {
    let request = match read_message(tcp, buf, codec::parse_request).await {
        Ok(r) => r,
        Err(IngressError::Protocol(e)) => {
            tcp.write_all(&codec::reply(e.reply())).await?;
            return Err(e.into());
        }
        Err(e) => return Err(e),
    };
    if request.command != codec::CMD_CONNECT {
        tcp.write_all(&codec::reply(Reply::CommandNotSupported)).await?;
        return Err(IngressError::Command(request.command));
    }
    Ok(request)
}
