//! The owner's side of the one-hop relay: accepting relay links from the other nodes, and for
//! each relayed stream opening the stream through the endpoint this node holds and joining the
//! two. Allowlist, stream limits and records behave as for a local scanner; access was checked
//! by the node the scanner came to, which keeps enforcing it (a withdrawal there resets the
//! relayed stream, and the reset travels on), and is checked again here at the open
//! ([`crate::access::relayed_stream_allowed`]).

use super::tls::ClusterTls;
use crate::access::{current_credential, relayed_stream_allowed, AccessDenied};
use crate::refusals::RefusedStream;
use crate::refused_scanners::TurnedAway;
use crate::scanner_stream::open_traced;
use crate::state::NodeState;
use crate::stream_queue::QueueLimits;
use ism_actors::tunnel::TunnelCommand;
use ism_events::{escaped, Cause, Principal};
use ism_projectors::EndpointView;
use ism_telemetry::context;
use ism_tunnel::{
    IncomingStream, OpenStreamError, Session, SessionConfig, StreamEnd, TunnelSocket, TunnelStream,
};
use ism_tunnel_proto::{OpenError, OpenFailure, ResetReason, Role};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::field::{display, Empty};
use tracing::{Instrument, Span};
use uuid::Uuid;

/// Time a dialing node has for TLS and the WebSocket upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts relay links from the other nodes for ever.
pub async fn serve(
    listener: TcpListener,
    tls: ClusterTls,
    state: Arc<NodeState>,
    config: SessionConfig,
) {
    let acceptor = TlsAcceptor::from(tls.server);
    // Handshakes not yet done hold places of their own: anyone who reaches the relay port can
    // open connections, and without a cap a flood of them would exhaust the node's descriptors.
    let pending = state.pending.relays.clone();
    crate::listener::accept_forever(listener, "relay link", pending, move |tcp, peer, pending| {
        let (acceptor, state, config) = (acceptor.clone(), state.clone(), config.clone());
        async move {
            let _ = tcp.set_nodelay(true);
            let handshake = async {
                let tls = crate::tunnel_tls::accept(&acceptor, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                tokio_tungstenite::accept_async_with_config(
                    TunnelSocket::server(tls),
                    Some(ism_tunnel::ws::websocket_config()),
                )
                .await
                .map_err(|e| format!("WebSocket: {e}"))
            };
            let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => {
                    return tracing::info!(%peer, error = %escaped(&e), "relay link refused")
                }
                Err(_) => return tracing::info!(%peer, "relay link refused: no handshake in time"),
            };
            drop(pending);
            // A relayed stream waits for a slot at most half the time the ingress node waits for
            // its answer (the same open timeout): the endpoint's dial and the way back need the
            // rest.
            let mut queue = state.stream_limits.queue;
            queue.timeout = queue.timeout.min(config.timing.open_timeout / 2);
            let (link, mut incoming) = Session::spawn(ws, Role::Endpoint, config);
            tracing::info!(%peer, "relay link accepted");
            while let Some(stream) = incoming.next().await {
                let state = state.clone();
                let span = relayed_span(&stream);
                tokio::spawn(async move { serve_relayed(&state, stream, span, queue).await });
            }
            let reason = link.closed().await;
            tracing::info!(%peer, %reason, "relay link closed");
        }
    })
    .await
}

/// The refusal an opener hears for `e`.
fn failure_of(e: &OpenStreamError) -> OpenFailure {
    match e {
        OpenStreamError::Refused { reason, .. } => *reason,
        OpenStreamError::TimedOut(_) => OpenFailure::TimedOut,
        OpenStreamError::Local(OpenError::LimitReached(_)) => OpenFailure::Busy,
        OpenStreamError::Local(OpenError::IdsExhausted) | OpenStreamError::Reset(_) => {
            OpenFailure::General
        }
        // The endpoint's session here ended while the stream opened: this node no longer holds
        // the endpoint (it moved on, or is gone), and the ingress looks its owner up again.
        OpenStreamError::SessionClosed => OpenFailure::NotHeld,
    }
}

/// The span of a relayed stream on this node, continuing the ingress node's trace.
fn relayed_span(stream: &IncomingStream) -> Span {
    let span = tracing::info_span!(
        "relay.serve",
        ingress_node = Empty,
        endpoint = Empty,
        target = %escaped(stream.target()),
        to_target = Empty,
        to_scanner = Empty,
        end = Empty,
        trace_id = Empty,
    );
    if let Some(relay) = stream.relay() {
        span.record("ingress_node", display(escaped(&relay.ingress_node)));
        span.record("endpoint", display(Uuid::from_bytes(relay.endpoint)));
    }
    context::continue_from(&span, stream.trace());
    span
}

/// One relayed stream: through the endpoint this node holds, recorded on its tunnel as the
/// ingress node's scanner's. The open runs in the stream's `span`; the bytes move outside it
/// (entering a span on every poll would cost the data path), and what they were is recorded on it.
async fn serve_relayed(
    state: &NodeState,
    incoming: IncomingStream,
    span: Span,
    queue: QueueLimits,
) {
    let Some(relay) = incoming.relay().cloned() else {
        return incoming
            .reject(OpenFailure::NotAllowed, "a relay link carries relayed streams only");
    };
    // What the opener is told is what its scanner may be told too: no node of the cluster is
    // named (the owner's logs and the ingress node's say which).
    let endpoint = Uuid::from_bytes(relay.endpoint);
    let Some(live) = state.sessions.get(endpoint) else {
        let message = format!("endpoint {endpoint} is not connected to the node asked");
        return incoming.reject(OpenFailure::NotHeld, message);
    };
    let view = state.directory.endpoint(endpoint).ok().flatten();
    if let Err(denied) = relayed_access(state, &relay.scanner, endpoint, view.as_ref()) {
        // Recorded here, as the ingress node would have: it counts on the owner for refusals.
        state.refused_scanners.refused(TurnedAway {
            gateway: live.gateway,
            scanner: Principal::Credential { id: relay.scanner.clone() },
            endpoint: view.as_ref().map_or("", |e| e.name.as_str()),
            class: "access denied",
            reason: format!("access refused: {denied}"),
        });
        return incoming.reject(OpenFailure::NotAllowed, format!("access refused: {denied}"));
    }
    // The owner records the relayed stream's facts: its own log's backlog decides.
    let behind = state.tunnels.unrecorded();
    if behind >= state.stream_limits.max_unrecorded {
        let message = format!(
            "the node holding the endpoint has {behind} facts still to record (its event log is behind)"
        );
        tracing::warn!(%endpoint, behind, "relayed stream refused: this node's event log is behind");
        return incoming.reject(OpenFailure::Busy, message);
    }
    let scanner = Principal::Credential { id: relay.scanner.clone() };
    let cause = Cause::by(scanner.clone());
    let recorder = state.tunnels.recorder(live.tunnel);
    let target = incoming.target().clone();
    let to_endpoint = match open_traced(&live, target.clone(), queue).instrument(span.clone()).await
    {
        Ok(stream) => stream,
        Err(error) => {
            state.refusals.refused(RefusedStream {
                tunnel: live.tunnel,
                recorder: &recorder,
                scanner: scanner.to_string(),
                target: &target.to_string(),
                error: &error,
                cause,
            });
            return incoming.reject(failure_of(&error), error.to_string());
        }
    };
    let Ok(from_ingress) = incoming.accept().await else { return };
    let stream = to_endpoint.id().0;
    let opened = TunnelCommand::RecordStreamOpened {
        stream,
        target: target.to_string(),
        scanner: scanner.to_string(),
        via: Some(relay.ingress_node.clone()),
    };
    recorder.tell(opened, cause.clone());
    let (sent, received, end) = join(from_ingress, to_endpoint).await;
    let end = match end {
        StreamEnd::Finished => "finished".to_string(),
        other => format!("reset: {other:?}"),
    };
    span.record("to_target", sent);
    span.record("to_scanner", received);
    span.record("end", display(escaped(&end)));
    recorder.tell(TunnelCommand::RecordStreamClosed { stream, sent, received, end }, cause);
}

/// The owner's check of a relayed stream's access ([`relayed_stream_allowed`]) on `endpoint` as
/// this node's directory shows it (`view`); `scanner` is the credential's id as the ingress node sent it.
fn relayed_access(
    state: &NodeState,
    scanner: &str,
    endpoint: Uuid,
    view: Option<&EndpointView>,
) -> Result<(), AccessDenied> {
    let id = Uuid::parse_str(scanner).map_err(|_| AccessDenied::NotACredential)?;
    let credential = current_credential(&state.directory, id);
    relayed_stream_allowed(view, credential.as_ref(), endpoint, state.clock.now_ms())
}

/// Moves bytes both ways between the ingress node's stream and the endpoint's, until both sides
/// finished or one reset (then both are reset). Returns the bytes towards the endpoint, the
/// bytes back, and how it ended.
async fn join(ingress: TunnelStream, endpoint: TunnelStream) -> (u64, u64, StreamEnd) {
    let (mut from_ingress, mut to_ingress) = ingress.split();
    let (mut from_endpoint, mut to_endpoint) = endpoint.split();
    let (mut up, mut down) = (0u64, 0u64);
    let ended = {
        let upstream = async {
            while let Some(chunk) = from_ingress.recv().await {
                let chunk = chunk?;
                up += chunk.len() as u64;
                to_endpoint.send(chunk).await?;
            }
            to_endpoint.finish().await
        };
        let downstream = async {
            while let Some(chunk) = from_endpoint.recv().await {
                let chunk = chunk?;
                down += chunk.len() as u64;
                to_ingress.send(chunk).await?;
            }
            to_ingress.finish().await
        };
        tokio::pin!(upstream, downstream);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut upstream, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(end) => break end,
                },
                r = &mut downstream, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(end) => break end,
                },
            }
            if up_done && down_done {
                break StreamEnd::Finished;
            }
        }
    };
    if ended != StreamEnd::Finished {
        let reason = match &ended {
            StreamEnd::Reset(reason) => *reason,
            _ => ResetReason::Aborted,
        };
        to_ingress.reset(reason);
        to_endpoint.reset(reason);
    }
    (up, down, ended)
}
