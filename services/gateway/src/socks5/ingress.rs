//! Serving scanners over SOCKS5: negotiate, authorise, open a stream through the endpoint's
//! tunnel, reply, splice. Each refusal gets the closest SOCKS reply code and a log line that says
//! why; the data path records what it did through the tunnel actor, without waiting for it.

use super::codec::{self, Parse, Reply, SocksError};
use crate::scanner_auth::{authorise, AuthorisedScanner};
use crate::state::NodeState;
use bytes::{Buf, BytesMut};
use ism_actors::host::Tell;
use ism_actors::tunnel::TunnelCommand;
use ism_events::Cause;
use ism_tunnel::{OpenStreamError, StreamEnd};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Time a client has to finish negotiation and send its request.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest SOCKS message (RFC 1929 auth: 1 + 1 + 255 + 1 + 255).
const MAX_MESSAGE: usize = 513;

pub async fn serve(listener: TcpListener, state: Arc<NodeState>) {
    crate::listener::accept_forever(listener, "scanner", move |tcp, peer| {
        let state = state.clone();
        async move {
            if let Err(e) = handle(tcp, peer, &state).await {
                tracing::info!(%peer, error = %e, "SOCKS5 request refused");
            }
        }
    })
    .await
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
    #[error("endpoint {0} is not connected to this gateway")]
    EndpointOffline(String),
    #[error("access refused: {0}")]
    Access(#[from] crate::access::Refusal),
    #[error("stream to {target} refused: {error}")]
    Open { target: String, error: OpenStreamError },
    #[error("message longer than {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("client closed the connection during negotiation")]
    Eof,
    #[error("client too slow: no request within {NEGOTIATION_TIMEOUT:?}")]
    TimedOut,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

async fn read_message<T>(tcp: &mut TcpStream, buf: &mut BytesMut, parse: fn(&[u8]) -> Result<Parse<T>, SocksError>) -> Result<T, IngressError> {
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

async fn handle(mut tcp: TcpStream, peer: SocketAddr, state: &NodeState) -> Result<(), IngressError> {
    let _ = tcp.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(MAX_MESSAGE);
    let negotiated = tokio::time::timeout(NEGOTIATION_TIMEOUT, negotiate(&mut tcp, &mut buf, state)).await.map_err(|_| IngressError::TimedOut)??;
    let (scanner, request) = negotiated;
    let target = request.target.to_string();
    let endpoint = scanner.endpoint.id;

    // Access is checked, the stream registered, and access checked again: a withdrawal that
    // lands in between is seen by this check or stops the registered stream.
    let allowed = |state: &NodeState| {
        let view = state.directory.endpoint(endpoint).ok().flatten();
        crate::access::stream_allowed(view.as_ref(), &scanner.credential, endpoint, state.clock.now_ms())
    };
    let stop = CancellationToken::new();
    let _registered = state.streams.register(endpoint, scanner.credential_id, stop.clone());
    if let Err(refusal) = allowed(state) {
        tcp.write_all(&codec::reply(Reply::NotAllowed)).await?;
        return Err(refusal.into());
    }
    let Some(live) = state.sessions.get(endpoint) else {
        tcp.write_all(&codec::reply(Reply::NetworkUnreachable)).await?;
        return Err(IngressError::EndpointOffline(scanner.endpoint.name.clone()));
    };
    let cause = Cause::by(scanner.audit_name());
    // Holding the tunnel actor's address keeps it alive until this stream's facts are recorded,
    // even if the session ends first.
    let recorder = state.tunnels.recorder(live.tunnel);
    let record = |command| recorder.do_send(Tell { command, cause: cause.clone() });
    match live.session.open_stream(request.target).await {
        Ok(stream) => {
            tcp.write_all(&codec::reply(Reply::Succeeded)).await?;
            let id = stream.id().0;
            record(TunnelCommand::RecordStreamOpened { stream: id, target: target.clone(), scanner: scanner.audit_name() });
            tracing::debug!(%peer, endpoint = %scanner.endpoint.name, %target, stream = id, "stream open");
            let report = stream.splice_with(tcp, buf.freeze(), stop).await;
            let end = match &report.end {
                StreamEnd::Finished => "finished".to_string(),
                StreamEnd::Reset(r) => format!("reset: {r:?}"),
                StreamEnd::SocketError(e) => format!("scanner socket error: {e}"),
                StreamEnd::Cancelled => "terminated: access withdrawn".to_string(),
            };
            record(TunnelCommand::RecordStreamClosed { stream: id, sent: report.sent, received: report.received, end });
            Ok(())
        }
        Err(error) => {
            let code = match &error {
                OpenStreamError::Refused { reason, .. } => Reply::from(*reason),
                OpenStreamError::TimedOut(_) => Reply::TtlExpired,
                OpenStreamError::SessionClosed => Reply::NetworkUnreachable,
                OpenStreamError::Local(_) | OpenStreamError::Reset(_) => Reply::GeneralFailure,
            };
            tcp.write_all(&codec::reply(code)).await?;
            record(TunnelCommand::RecordStreamRefused { target: target.clone(), scanner: scanner.audit_name(), reason: error.to_string() });
            Err(IngressError::Open { target, error })
        }
    }
}

/// Method selection, authentication and the request.
async fn negotiate(tcp: &mut TcpStream, buf: &mut BytesMut, state: &NodeState) -> Result<(AuthorisedScanner, codec::Request), IngressError> {
    let greeting = read_message(tcp, buf, codec::parse_greeting).await?;
    if !greeting.methods.contains(&codec::METHOD_USER_PASS) {
        tcp.write_all(&codec::method_selection(codec::METHOD_NONE_ACCEPTABLE)).await?;
        return Err(IngressError::NoAcceptableMethod(greeting.methods));
    }
    tcp.write_all(&codec::method_selection(codec::METHOD_USER_PASS)).await?;
    let creds = read_message(tcp, buf, codec::parse_auth).await?;
    let scanner = match authorise(state, &creds.username, &creds.password) {
        Ok(s) => s,
        Err(e) => {
            tcp.write_all(&codec::auth_status(false)).await?;
            return Err(e.into());
        }
    };
    tcp.write_all(&codec::auth_status(true)).await?;
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
    Ok((scanner, request))
}
