//! Accepting endpoint tunnels: TLS, the WebSocket upgrade on the configured path, the handshake,
//! and the session's life on this node.
//!
//! The handshake proves two things: the key (checked by the endpoint actor against the hash it
//! recorded) and possession of the machine identity (an Ed25519 signature over a fresh nonce).
//! The endpoint actor then binds the key to that machine, or refuses it with "Token already
//! registered" if another machine holds it (recorded through [`crate::refused_registrations`]).
//! A working session of the bound machine is refused too when it comes from a second live agent
//! sharing that identity ([`crate::copied_identity`]).

use crate::sessions::{LiveSession, MAX_SIDE_SESSIONS};
use crate::start_rate;
use crate::state::NodeState;
use crate::tunnel_threads::TunnelThreads;
use ism_actors::credentials::{endpoint_of_key, hash_secret, hex, random_bytes, verify_secret};
use ism_actors::endpoint::{EndpointCommand, EndpointError, TOKEN_ALREADY_REGISTERED};
use ism_actors::tunnel::TunnelCommand;
use ism_actors::CommandError;
use ism_events::{escaped, Cause, Principal};
use ism_tunnel::ws::{recv_frame, send_frame, websocket_config};
use ism_tunnel::{Session, SessionConfig, TunnelSocket};
use ism_tunnel_proto::handshake::{challenge_message, expect_hello, Rejection};
use ism_tunnel_proto::{
    Frame, Hello, OpenFailure, Purpose, RejectCode, Role, TargetAddr, DIAGNOSTIC_ECHO_HOST,
    PROTOCOL_VERSION, TRACE_CONTEXT_SINCE,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

/// An endpoint's WebSocket, over TLS, which the session writes itself.
type TunnelWebSocket = WebSocketStream<TunnelSocket<tokio_rustls::server::TlsStream<TcpStream>>>;

/// Time allowed for TLS, the upgrade and the handshake together: a client that dawdles is
/// dropped rather than holding a socket.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a side session may last: the diagnostic tool's runs and the key check take seconds
/// to minutes. It replaces nothing and is not recorded, so a key rotation or deletion would not
/// end it otherwise.
const SIDE_SESSION_LIFETIME: Duration = Duration::from_secs(600);

/// Why a session the cluster could not record as the endpoint's is ended (the agent logs it, the
/// log records it; the cause stays in this node's log).
const CLAIM_FAILED: &str =
    "the gateway could not record in the cluster that it holds the endpoint; reconnecting";

/// How long a refused peer has to take its refusal. A peer that does not read (its window shut,
/// the socket's buffers full of its pings' pongs) would otherwise hold the connection, a task and
/// its buffers for ever, outside the cap on pending connections it no longer counts against.
const REFUSAL_GRACE: Duration = Duration::from_secs(5);

/// Tells a peer why it is refused and closes, within [`REFUSAL_GRACE`]; the connection is
/// dropped either way.
async fn refuse(ws: &mut TunnelWebSocket, rejection: &Rejection) {
    let told = async {
        let _ = send_frame(ws, &rejection.frame()).await;
        let _ = ws.close(None).await;
    };
    let _ = tokio::time::timeout(REFUSAL_GRACE, told).await;
}

/// Accepts endpoint connections for ever, each on one of the node's tunnel threads.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    state: Arc<NodeState>,
    config: SessionConfig,
    threads: Arc<TunnelThreads>,
) {
    let pending = state.pending.endpoints.clone();
    crate::listener::accept_forever(listener, "endpoint", pending, move |tcp, peer, pending| {
        let (tls, state, config, threads) =
            (tls.clone(), state.clone(), config.clone(), threads.clone());
        async move {
            let accepted = threads.run(tcp, move |tcp| async move {
                if let Err(e) = accept(tcp, peer, tls, state.clone(), config, pending).await {
                    refused(&state, peer, &e);
                }
            });
            if let Err(e) = accepted.await {
                tracing::warn!(%peer, error = %e, "could not move an endpoint connection to a tunnel thread");
            }
        }
    })
    .await
}

/// Counts a refused endpoint connection and logs it: within [`crate::log_pace`]'s pace when it
/// may come in a flood ([`AcceptError::paced`]), each time otherwise (one admitted endpoint's
/// line must not hide another's).
fn refused(state: &NodeState, peer: SocketAddr, e: &AcceptError) {
    let reason = e.metric_reason();
    state.metrics.handshake_failed(reason);
    let refused = if e.paced() {
        state.refusal_logs.endpoints.refused(reason, state.clock.now_ms())
    } else {
        Some(1)
    };
    if let Some(refused) = refused {
        tracing::info!(
            %peer,
            error = %escaped(e),
            reason,
            refused_since_last_line = refused,
            "endpoint connection refused",
        );
    }
}

#[derive(Debug, thiserror::Error)]
enum AcceptError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("WebSocket upgrade failed: {0}")]
    Upgrade(tokio_tungstenite::tungstenite::Error),
    #[error("handshake failed: {0}")]
    Handshake(#[from] ism_tunnel::ws::HandshakeIoError),
    #[error("no complete handshake within {0:?}")]
    TimedOut(Duration),
    #[error("refused ({:?}): {}", .0.code, .0.message)]
    Refused(Rejection),
    /// Refused as unavailable because the endpoint starts sessions too often
    /// ([`crate::start_rate`]): counted apart from the gateway's own unavailability.
    #[error("refused ({:?}): {}", .0.code, .0.message)]
    TooFrequent(Rejection),
    #[error(transparent)]
    OutOfOrder(#[from] ism_tunnel_proto::handshake::OutOfOrder),
}

impl AcceptError {
    /// Whether its log line is paced: anyone who reaches the port could cause it (a stranger's
    /// bytes, keys or versions, a port scanner), or an endpoint starting sessions in a loop
    /// (`too_frequent`, as fast as its loop: the first line names it, the metric counts each).
    /// What only an endpoint the node admitted causes otherwise is logged each time.
    fn paced(&self) -> bool {
        match self {
            AcceptError::Refused(rejection) => matches!(
                rejection.code,
                RejectCode::InvalidKey | RejectCode::UnsupportedVersion | RejectCode::BadHandshake
            ),
            AcceptError::TooFrequent(_) => true,
            AcceptError::Tls(_)
            | AcceptError::Upgrade(_)
            | AcceptError::Handshake(_)
            | AcceptError::TimedOut(_)
            | AcceptError::OutOfOrder(_) => true,
        }
    }

    /// The reason in `ism_tunnel_handshake_failures_total{reason}`: a closed list.
    fn metric_reason(&self) -> &'static str {
        match self {
            AcceptError::Tls(_) => "tls",
            AcceptError::Upgrade(_) => "websocket",
            AcceptError::Handshake(_) => "handshake_io",
            AcceptError::TimedOut(_) => "timed_out",
            AcceptError::Refused(rejection) => rejection.code.label(),
            AcceptError::TooFrequent(_) => "too_frequent",
            AcceptError::OutOfOrder(_) => "out_of_order",
        }
    }
}

/// Accepts one endpoint connection; `pending` is its place among the connections not yet
/// authenticated, given back once the endpoint is admitted (or refused).
async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    state: Arc<NodeState>,
    config: SessionConfig,
    pending: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), AcceptError> {
    // Boxed: a future is as large as its largest state, and the handshake, the admission and
    // the session's start are kilobytes (the TLS and WebSocket handshakes, the WebSocket itself
    // before the session takes it) that this task would otherwise carry for as long as the
    // endpoint stays connected.
    let opened = Box::pin(open_session(tcp, peer, tls, &state, config, pending));
    let Some(Opened { tunnel, endpoint, name, cause, started }) = opened.await? else {
        return Ok(());
    };
    let result = match started {
        Ok(session) => {
            let reason = session.closed().await;
            tracing::info!(endpoint = %escaped(&name), %tunnel, reason = %escaped(&reason), "endpoint disconnected");
            Ok(reason.to_string())
        }
        Err(e) => Err(e),
    };
    // Whatever happened after the session was recorded as opened, it is recorded as closed, and
    // the tunnel actor is let go (streams still ending hold its address; it stops after them).
    let reason = match &result {
        Ok(reason) => reason.clone(),
        Err(e) => e.to_string(),
    };
    state.tunnels.tell(tunnel, TunnelCommand::Close { reason }, cause);
    state.tunnels.forget(tunnel);
    // Only now: a stopping node waits for its sessions to be gone, then for what they told to
    // be recorded (`RunningNode::stop`), so the close must be told first.
    // A session replaced by a newer one on this node lets nothing go: the claim is the newer
    // one's (or is about to be), and releasing it would read as this node being fenced out.
    if state.sessions.remove(endpoint, tunnel) {
        if let Err(e) = Box::pin(state.cluster.coordination.release(endpoint, tunnel)).await {
            tracing::warn!(%tunnel, error = %e, "could not let the endpoint go in the cluster");
        }
    }
    result.map(|_| ())
}

/// An admitted endpoint's working session, as `accept` waits for its end: what it needs then.
struct Opened {
    tunnel: Uuid,
    endpoint: Uuid,
    name: String,
    cause: Cause,
    /// The running session, or why it could not start (its tunnel may have been recorded).
    started: Result<Session, AcceptError>,
}

/// The handshake, the admission and the session's start. `None` for a diagnostic session, served
/// to its end here; an error for a connection that never became a session.
async fn open_session(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    state: &NodeState,
    config: SessionConfig,
    pending: tokio::sync::OwnedSemaphorePermit,
) -> Result<Option<Opened>, AcceptError> {
    let _ = tcp.set_nodelay(true);
    let nonce = random_bytes();
    let handshake = async {
        let tls = crate::tunnel_tls::accept(&tls, tcp).await.map_err(AcceptError::Tls)?;
        let path = state.ws_path.clone();
        // The callback's error type is tungstenite's; its size is not ours to choose.
        #[allow(clippy::result_large_err)]
        let check_path = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            if req.uri().path() == path {
                Ok(resp)
            } else {
                let mut err = ErrorResponse::new(Some(format!(
                    "no tunnel endpoint at {}; expected {path}\n",
                    req.uri().path()
                )));
                *err.status_mut() = StatusCode::NOT_FOUND;
                Err(err)
            }
        };
        let mut ws = tokio_tungstenite::accept_hdr_async_with_config(
            TunnelSocket::server(tls),
            check_path,
            Some(websocket_config()),
        )
        .await
        .map_err(AcceptError::Upgrade)?;
        send_frame(
            &mut ws,
            &Frame::Challenge { version: PROTOCOL_VERSION, nonce, node: state.node_id.clone() },
        )
        .await?;
        let hello = expect_hello(recv_frame(&mut ws, HANDSHAKE_TIMEOUT).await?)?;
        Ok::<_, AcceptError>((ws, hello))
    };
    let (mut ws, hello) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| AcceptError::TimedOut(HANDSHAKE_TIMEOUT))??;
    let admitted = match hello {
        // A draining node takes no new sessions: the endpoint tries another node at once.
        Ok(hello) if state.cluster.is_draining() && hello.purpose == Purpose::Serve => {
            Err(Rejection::unavailable(format!("gateway node {} is draining", state.node_id)))
        }
        Ok(hello) => admit(state, &hello, &nonce).await.map(|a| (hello, a)),
        Err(rejection) => Err(rejection),
    };
    drop(pending);
    let (hello, admitted) = match admitted {
        Ok(admitted) => admitted,
        Err(rejection) => {
            refuse(&mut ws, &rejection).await;
            return Err(AcceptError::Refused(rejection));
        }
    };
    let hello = &hello;
    // The endpoint answered with the lower of the two sides' versions.
    let config = config.at_version(hello.version);

    if hello.purpose == Purpose::Diagnostics {
        let Some(place) = state.sessions.side_session(admitted.endpoint) else {
            let rejection = Rejection::unavailable(format!(
                "endpoint {} holds {MAX_SIDE_SESSIONS} diagnostic sessions on this node already; try again when one has ended",
                admitted.name
            ));
            refuse(&mut ws, &rejection).await;
            return Err(AcceptError::Refused(rejection));
        };
        let served = serve_diagnostics(state, ws, peer, &admitted, config).await;
        drop(place);
        return served.map(|()| None);
    }
    if let Err(wait) = state.sessions.may_start(admitted.endpoint, state.clock.now_ms()) {
        let rejection = Rejection::unavailable(format!(
            "endpoint {} starts sessions on this node too often (more than {} at once, then one \
             every {} s); connect again in {} s",
            admitted.name,
            start_rate::BURST,
            start_rate::INTERVAL.as_secs(),
            wait.as_secs_f64().ceil()
        ));
        refuse(&mut ws, &rejection).await;
        return Err(AcceptError::TooFrequent(rejection));
    }
    let tunnel = Uuid::new_v4();
    let cause = Cause::by(Principal::Endpoint { name: admitted.name.clone() });
    let started = start_session(state, ws, peer, hello, &admitted, tunnel, &cause, config).await;
    Ok(Some(Opened { tunnel, endpoint: admitted.endpoint, name: admitted.name, cause, started }))
}

/// Records the session, installs it and welcomes the endpoint; returns the running session.
#[allow(clippy::too_many_arguments)]
async fn start_session(
    state: &NodeState,
    mut ws: TunnelWebSocket,
    peer: SocketAddr,
    hello: &Hello,
    admitted: &Admitted,
    tunnel: Uuid,
    cause: &Cause,
    config: SessionConfig,
) -> Result<Session, AcceptError> {
    let opened = state
        .tunnels
        .execute(
            tunnel,
            TunnelCommand::Open {
                endpoint: admitted.endpoint,
                gateway: admitted.gateway,
                node: state.node_id.clone(),
                machine: admitted.machine.clone(),
                remote_addr: peer.to_string(),
                agent_version: hello.agent_version.clone(),
            },
            cause.clone(),
        )
        .await;
    if let Err(e) = opened {
        let rejection =
            Rejection::unavailable(format!("the gateway could not record the session: {e}"));
        refuse(&mut ws, &rejection).await;
        return Err(AcceptError::Refused(rejection));
    }
    // The session is installed before the endpoint reads its welcome: once the endpoint says it
    // is connected, scanners find it. Endpoints open no streams towards the gateway (yet):
    // dropping the incoming side makes the driver refuse any they try.
    let welcome = Frame::Welcome {
        session: *tunnel.as_bytes(),
        node: state.node_id.clone(),
        endpoint_name: admitted.name.clone(),
    };
    let mut replaced = None;
    let (session, _) =
        Session::spawn_with_greeting(ws, Role::Gateway, config, welcome, |session| {
            let live = LiveSession {
                tunnel,
                endpoint: admitted.endpoint,
                gateway: admitted.gateway,
                key_generation: admitted.key_generation,
                machine: admitted.machine.clone(),
                instance: hello.instance,
                hostname: hello.hostname.clone(),
                traced: hello.version >= TRACE_CONTEXT_SINCE,
                session: session.clone(),
                waiting: Default::default(),
            };
            replaced = state.sessions.install(live, state.clock.now_ms());
        });
    tracing::info!(endpoint = %escaped(&admitted.name), %tunnel, %peer, "endpoint connected");
    // The cluster learns that this session holds the endpoint now; a session that held it on
    // another node is fenced out there. A session the cluster does not know of is ended: other
    // nodes would route its scanners to whichever session the cluster still names (or find the
    // endpoint offline), and this node's owner feed would fence it at the next change anyway;
    // the agent reconnects, and its next session claims afresh, here or on another node.
    let owner = ism_cluster::Owner { node: state.node_id.clone(), tunnel };
    match state.cluster.coordination.claim(admitted.endpoint, &owner).await {
        Ok(claimed) => {
            if let Some(previous) = claimed.previous.filter(|p| p.node != state.node_id) {
                tracing::info!(endpoint = %escaped(&admitted.name), replaced_on = %previous.node, "the endpoint moved here");
            }
        }
        Err(e) => {
            tracing::warn!(endpoint = %escaped(&admitted.name), error = %e, "could not claim the endpoint in the cluster; ending the session so that the endpoint connects again");
            session.close(CLAIM_FAILED);
        }
    }
    // Only once this session holds the claim: the old one's end cannot take the claim with it.
    if let Some(previous) = replaced {
        previous.session.close("replaced by a newer session of the same endpoint");
    }
    // A key rotation, deletion or release of the binding that landed while this session was
    // being admitted.
    state.enforcement().reconcile_endpoint(admitted.endpoint);
    Ok(session)
}

/// A side session for the endpoint's diagnostic tool or key check: it does not replace the
/// endpoint's working session, is not a connection in the directory, and may only open echo
/// streams, which the gateway answers by sending back what it receives.
async fn serve_diagnostics(
    state: &NodeState,
    mut ws: TunnelWebSocket,
    peer: SocketAddr,
    admitted: &Admitted,
    config: SessionConfig,
) -> Result<(), AcceptError> {
    let welcome = Frame::Welcome {
        session: *Uuid::new_v4().as_bytes(),
        node: state.node_id.clone(),
        endpoint_name: admitted.name.clone(),
    };
    // Bounded like the handshake: a peer that does not read does not hold the connection.
    tokio::time::timeout(HANDSHAKE_TIMEOUT, send_frame(&mut ws, &welcome))
        .await
        .map_err(|_| AcceptError::TimedOut(HANDSHAKE_TIMEOUT))??;
    let (session, mut incoming) = Session::spawn(ws, Role::Gateway, config);
    tracing::info!(endpoint = %escaped(&admitted.name), %peer, "diagnostic session opened");
    let serve = async {
        while let Some(stream) = incoming.next().await {
            if matches!(stream.target(), TargetAddr::Domain(host, _) if host == DIAGNOSTIC_ECHO_HOST)
            {
                tokio::spawn(async move {
                    if let Ok(s) = stream.accept().await {
                        let _ = s.echo().await;
                    }
                });
            } else {
                stream.reject(
                    OpenFailure::NotAllowed,
                    "a gateway accepts only diagnostic echo streams from endpoints",
                );
            }
        }
        session.closed().await
    };
    let reason = match tokio::time::timeout(SIDE_SESSION_LIFETIME, serve).await {
        Ok(reason) => reason,
        Err(_) => {
            session.close("the diagnostic session's time is up");
            session.closed().await
        }
    };
    tracing::info!(endpoint = %escaped(&admitted.name), %peer, reason = %escaped(&reason), "diagnostic session closed");
    Ok(())
}

struct Admitted {
    endpoint: Uuid,
    gateway: Uuid,
    name: String,
    machine: String,
    key_generation: u32,
}

/// Decides whether the endpoint in `hello` (of this protocol version) may open a session.
async fn admit(state: &NodeState, hello: &Hello, nonce: &[u8; 32]) -> Result<Admitted, Rejection> {
    let signed =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &hello.machine_key);
    if signed.verify(&challenge_message(nonce, &state.node_id), &hello.signature).is_err() {
        return Err(Rejection::bad_signature());
    }
    let endpoint = endpoint_of_key(&hello.key).map_err(|_| Rejection::invalid_key())?;
    // Unknown endpoints are refused from the directory, before any actor is started for them: a
    // stranger with a made-up key costs a lookup, nothing more. Only the holder of a deleted
    // endpoint's key learns that it was deleted, so that its agent says so.
    match state.directory.endpoint_any(endpoint).map_err(Rejection::unavailable)? {
        None => return Err(Rejection::invalid_key()),
        Some(e) if e.deleted => {
            return Err(if verify_secret(hello.key.trim(), &e.key_hash) {
                Rejection::endpoint_deleted()
            } else {
                Rejection::invalid_key()
            });
        }
        Some(_) => {}
    }
    let machine = hex(&hello.machine_key);
    let command = EndpointCommand::Register {
        presented_key_hash: hash_secret(hello.key.trim()),
        machine: machine.clone(),
        hostname: hello.hostname.clone(),
        platform: hello.platform.clone(),
        agent_version: hello.agent_version.clone(),
    };
    let cause = Cause::by(Principal::Machine { id: machine[..16].to_string() });
    let executed = match state.endpoints.execute(endpoint, command, cause.clone()).await {
        Ok(x) => x,
        Err(CommandError::Rejected(EndpointError::NotFound(_))) => {
            state.endpoints.forget(endpoint);
            return Err(Rejection::invalid_key());
        }
        Err(CommandError::Rejected(EndpointError::InvalidKey)) => {
            return Err(Rejection::invalid_key())
        }
        Err(CommandError::Rejected(EndpointError::TokenAlreadyRegistered)) => {
            let refused = &state.refused_registrations;
            refused.refused(endpoint, &machine, &hello.hostname, cause).await;
            return Err(Rejection::token_already_registered(TOKEN_ALREADY_REGISTERED));
        }
        Err(e) => {
            return Err(Rejection::unavailable(format!(
                "the gateway cannot check the key right now: {e}"
            )))
        }
    };
    if hello.purpose == Purpose::Serve {
        let now = state.clock.now_ms();
        if let Some(holder) = state.sessions.held_by_a_copy(endpoint, hello.instance, now) {
            return Err(Rejection::machine_key_copied(&holder.hostname));
        }
    }
    // The directory must show everything up to now (a key rotation included), since the session
    // is admitted with the key generation it shows.
    let head = state.log.head().await.map_err(Rejection::unavailable)?;
    state
        .caught_up(Some(head.max(executed.position().unwrap_or(0))))
        .await
        .map_err(Rejection::unavailable)?;
    let view = state.directory.endpoint(endpoint).ok().flatten().ok_or_else(|| {
        Rejection::unavailable("the gateway's directory does not show this endpoint yet; retrying")
    })?;
    Ok(Admitted {
        endpoint,
        gateway: view.gateway,
        name: view.name,
        machine,
        key_generation: view.key_generation,
    })
}
