//! One scanner stream, whichever ingress it came through (SOCKS5 or HTTP proxy): access checked,
//! the stream registered for enforcement and checked again, the endpoint's session found, the
//! stream opened through it, and every outcome recorded on the tunnel (refusals through the
//! [`Refusals`](crate::refusals::Refusals)). The ingresses only speak
//! their protocol around it.
//!
//! Each connection is a span (`scanner.connection`, the root of the request's trace) with
//! children for the open (`stream.open`: `endpoint.lookup`, then `tunnel.open` or `relay.open`,
//! whose context travels in the `Open` frame so the owner node's and the endpoint's spans join
//! the trace); the connection's span records the bytes and how the stream ended.

use crate::access::{current_credential, stream_allowed, AccessDenied};
use crate::cluster::RelayError;
use crate::metrics::NodeMetrics;
use crate::refusals::RefusedStream;
use crate::refused_scanners::TurnedAway;
use crate::running_streams::StreamGuard;
use crate::scanner_auth::AuthorisedScanner;
use crate::sessions::LiveSession;
use crate::state::{NodeState, ScannerPath, StreamLimits};
use crate::stream_queue::{self, QueueLimits};
use bytes::Bytes;
use ism_actors::host::Recorder;
use ism_actors::tunnel::{Tunnel, TunnelCommand};
use ism_events::{escaped, Cause};
use ism_telemetry::context;
use ism_tunnel::{
    Exchanged, Expiry, OpenStreamError, SpliceOptions, StreamEnd, StreamReader, StreamWriter,
    TunnelStream,
};
use ism_tunnel_proto::{OpenError, OpenFailure, Relay, TargetAddr};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::field::{display, Empty};
use tracing::{Instrument, Span};

/// Why a scanner's stream was not opened.
#[derive(Debug, thiserror::Error)]
pub enum NotOpened {
    #[error("access refused: {0}")]
    Access(#[from] AccessDenied),
    #[error("endpoint {0} is not connected to this gateway")]
    EndpointOffline(String),
    #[error("this scanner credential already has {0} streams open on this node (--max-streams-per-credential)")]
    CredentialQuota(usize),
    #[error("stream to {target} refused: {error}")]
    Open { target: String, error: OpenStreamError },
    #[error("{0}")]
    OwnerUnreachable(String),
    #[error("this node has {0} facts still to record (its event log is behind): new streams are refused until it catches up; try again shortly")]
    LogBehind(usize),
}

impl NotOpened {
    /// What the scanner is told (the HTTP proxy's response body). As the log and the audit say,
    /// except for what is the operator's business, not a scanner's: an unreachable owner's text
    /// names the cluster's nodes, their addresses and the link's error; a target not allowed is
    /// told only that: the endpoint's text names the addresses it resolved the target to and why
    /// each was withheld, which would let a scanner look names up in the customer's DNS past the
    /// allowlist (the same reason also carries the gateway's own refusals: access withdrawn while
    /// queued, or denied by the node holding the endpoint; and a web proxy's 403).
    pub fn for_scanner(&self) -> String {
        match self {
            NotOpened::OwnerUnreachable(_) => {
                "the gateway node holding the endpoint cannot be reached; try again shortly".into()
            }
            NotOpened::Open {
                target,
                error: OpenStreamError::Refused { reason: OpenFailure::NotAllowed, .. },
            } => format!(
                "stream to {target} refused: not allowed (by the endpoint's allowedTargets, or by \
                 this scanner's access)"
            ),
            other => other.to_string(),
        }
    }

    /// The reason in `ism_stream_refusals_total{reason}`: a closed list.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            NotOpened::Access(_) => "access_denied",
            NotOpened::EndpointOffline(_) => "endpoint_offline",
            NotOpened::CredentialQuota(_) => "credential_quota",
            NotOpened::OwnerUnreachable(_) => "owner_unreachable",
            NotOpened::LogBehind(_) => "log_behind",
            NotOpened::Open { error, .. } => match error {
                OpenStreamError::Refused { reason, .. } => reason.label(),
                OpenStreamError::TimedOut(_) => "timed_out",
                OpenStreamError::Local(OpenError::LimitReached(_)) => "busy",
                OpenStreamError::Local(OpenError::IdsExhausted) => "ids_exhausted",
                OpenStreamError::Reset(_) => "reset",
                OpenStreamError::SessionClosed => "endpoint_offline",
            },
        }
    }
}

/// The way a scanner came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ingress {
    Socks5,
    HttpProxy,
}

impl Ingress {
    /// Its name in metrics and spans.
    pub fn label(self) -> &'static str {
        match self {
            Ingress::Socks5 => "socks5",
            Ingress::HttpProxy => "http_proxy",
        }
    }

    /// Its name in log lines.
    fn name(self) -> &'static str {
        match self {
            Ingress::Socks5 => "SOCKS5",
            Ingress::HttpProxy => "HTTP proxy",
        }
    }
}

/// The span of one scanner connection on the node it came to, from accept to its end: the root
/// of the request's trace. Its log lines carry the trace id.
pub fn connection_span(ingress: Ingress, peer: SocketAddr) -> Span {
    let span = tracing::info_span!(
        "scanner.connection",
        ingress = ingress.label(),
        %peer,
        endpoint = Empty,
        target = Empty,
        to_target = Empty,
        to_scanner = Empty,
        end = Empty,
        trace_id = Empty,
    );
    context::record_trace_id(&span);
    span
}

/// Counts a scanner's connection or request that `ingress` refused for `kind` (a closed list),
/// and logs it in the connection's `span` within [`crate::log_pace`]'s pace, each ingress's
/// kinds apart: a scanner may be refused thousands of times a minute (a crawl of a target it may
/// not reach).
pub fn request_refused(
    state: &NodeState,
    ingress: Ingress,
    span: &Span,
    peer: SocketAddr,
    kind: &'static str,
    error: &dyn std::fmt::Display,
) {
    let pace = &state.refusal_logs.scanner_requests;
    let due = pace.refused((ingress.label(), kind), state.clock.now_ms());
    // Counted after the pace has seen it: a refusal the metrics show is one the log's pace holds.
    state.metrics.scanner_request_refused(ingress.label(), kind);
    if let Some(refused) = due {
        let ingress = ingress.name();
        span.in_scope(|| {
            tracing::info!(%peer, error = %escaped(error), kind, refused_since_last_line = refused, "{ingress} request refused");
        });
    }
}

/// Opens a stream to `target` through the endpoint's session `live` (waiting in its queue while
/// the session is at its cap) in a `tunnel.open` span, whose context the endpoint's dial
/// continues (when its agent reads trace contexts).
pub async fn open_traced(
    live: &LiveSession,
    target: TargetAddr,
    queue: QueueLimits,
) -> Result<TunnelStream, OpenStreamError> {
    let span = tracing::info_span!("tunnel.open", stream = Empty, refused = Empty);
    let trace = context::of(&span).filter(|_| live.traced);
    let opened = stream_queue::open(&live.session, &live.waiting, target, trace, queue)
        .instrument(span.clone())
        .await;
    match &opened {
        Ok(stream) => span.record("stream", stream.id().0),
        Err(e) => span.record("refused", display(escaped(e))),
    };
    opened
}

/// Returns once the scanner at the other end of `tcp` has closed its side (or its socket failed),
/// without taking anything it sent: what an ingress races a stream's open with, so that a scanner
/// that gave up while its stream waited for a slot leaves the queue at once.
pub async fn scanner_left(tcp: &TcpStream) {
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        // It sent more (a pipelined request): it is still there.
        Ok(_) => std::future::pending().await,
    }
}

/// An open stream, registered for access enforcement, whose end will be recorded.
pub struct OpenedStream<'a> {
    stream: TunnelStream,
    limits: StreamLimits,
    stop: CancellationToken,
    _registered: StreamGuard<'a>,
    end: EndRecord<'a>,
}

/// Where and how a stream's end is recorded. A stream dropped before its end was recorded (the
/// scanner's connection failed as its reply was written, or the task was dropped) is recorded as
/// ended by its drop, so the audit never shows an open without its close.
struct EndRecord<'a> {
    stream: u32,
    /// Its tunnel's actor. `None` for a stream relayed to the node holding the endpoint, which
    /// records it there.
    recorder: Option<Recorder<Tunnel>>,
    cause: Cause,
    metrics: &'a NodeMetrics,
    /// The scanner's connection, whose span says what the stream carried.
    connection: Span,
    recorded: bool,
}

impl<'a> EndRecord<'a> {
    fn new(
        path: &ScannerPath<'a>,
        stream: &TunnelStream,
        recorder: Option<Recorder<Tunnel>>,
        cause: Cause,
        connection: &Span,
    ) -> Self {
        Self {
            stream: stream.id().0,
            recorder,
            cause,
            metrics: path.metrics,
            connection: connection.clone(),
            recorded: false,
        }
    }

    /// Counts and traces how the stream ended, and tells the tunnel actor.
    fn ended(mut self, to_target: u64, to_scanner: u64, end: &StreamEnd) {
        self.record(to_target, to_scanner, end);
    }

    fn record(&mut self, to_target: u64, to_scanner: u64, end: &StreamEnd) {
        self.recorded = true;
        self.metrics.stream_ended(to_target, to_scanner);
        let end = match end {
            StreamEnd::Finished => "finished".to_string(),
            StreamEnd::Reset(r) => format!("reset: {r:?}"),
            StreamEnd::SocketError(e) => format!("scanner socket error: {e}"),
            StreamEnd::Cancelled => "terminated: access withdrawn".to_string(),
            StreamEnd::Expired(Expiry::Idle) => "reset: idle beyond the stream idle timeout".into(),
            StreamEnd::Expired(Expiry::HalfClosed) => {
                "reset: one side closed and the other stayed silent".into()
            }
        };
        self.connection.record("to_target", to_target);
        self.connection.record("to_scanner", to_scanner);
        self.connection.record("end", display(escaped(&end)));
        if let Some(recorder) = self.recorder.take() {
            let (stream, sent, received) = (self.stream, to_target, to_scanner);
            let closed = TunnelCommand::RecordStreamClosed { stream, sent, received, end };
            recorder.tell(closed, self.cause.clone());
        }
    }
}

impl Drop for EndRecord<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            // Before the scanner's connection was joined to it (its reply failed), or while it
            // ran (its task dropped, the node stopping): the bytes it moved are not known here.
            let unrecorded = "the stream was dropped before its end could be recorded";
            self.record(0, 0, &StreamEnd::SocketError(unrecorded.into()));
        }
    }
}

/// Opens a stream to `target` through the scanner's endpoint, in a `stream.open` span, and
/// counts the open or the refusal. Call it in the connection's span.
pub async fn open<'a>(
    path: &ScannerPath<'a>,
    scanner: &AuthorisedScanner,
    target: TargetAddr,
) -> Result<OpenedStream<'a>, NotOpened> {
    let connection = Span::current();
    connection.record("endpoint", display(scanner.endpoint.id));
    connection.record("target", display(escaped(&target)));
    let opened = open_stream(path, scanner, target, &connection)
        .instrument(tracing::info_span!("stream.open"))
        .await;
    match &opened {
        Ok(_) => path.metrics.stream_opened(),
        Err(not_opened) => path.metrics.stream_refused(not_opened.metric_reason()),
    }
    opened
}

async fn open_stream<'a>(
    path: &ScannerPath<'a>,
    scanner: &AuthorisedScanner,
    target: TargetAddr,
    connection: &Span,
) -> Result<OpenedStream<'a>, NotOpened> {
    let endpoint = scanner.endpoint.id;
    // Access is checked, the stream registered, and access checked again: a withdrawal that
    // lands in between is seen by this check or stops the registered stream. Both read the
    // credential afresh: one revoked since its scanner logged in (a SOCKS client may wait up to
    // the negotiation timeout between its login and its request) is revoked here too.
    let allowed = || {
        let view = path.directory.endpoint(endpoint).ok().flatten();
        let credential = current_credential(path.directory, scanner.credential_id)
            .ok_or(AccessDenied::CredentialRevoked)?;
        stream_allowed(view.as_ref(), &credential, endpoint, path.clock.now_ms())
    };
    // Turned away before any stream: recorded on the gateway (counted when repeated).
    let turned_away = |not_opened: NotOpened| {
        let class = match &not_opened {
            NotOpened::Access(_) => "access denied",
            NotOpened::CredentialQuota(_) => "the credential's stream quota is reached",
            NotOpened::EndpointOffline(_) | NotOpened::Open { .. } => "endpoint not connected",
            NotOpened::OwnerUnreachable(_) => "the node holding the endpoint is unreachable",
            NotOpened::LogBehind(_) => "the node's event log is behind",
        };
        path.refused_scanners.refused(TurnedAway {
            gateway: scanner.endpoint.gateway,
            scanner: scanner.principal(),
            endpoint: &scanner.endpoint.name,
            class,
            reason: not_opened.to_string(),
        });
        not_opened
    };
    allowed().map_err(|e| turned_away(e.into()))?;
    let behind = path.tunnels.unrecorded();
    if behind >= path.limits.max_unrecorded {
        return Err(turned_away(NotOpened::LogBehind(behind)));
    }
    let stop = CancellationToken::new();
    let registered = path
        .streams
        .register(endpoint, scanner.credential_id, stop.clone(), path.limits.per_credential)
        .map_err(|full| turned_away(NotOpened::CredentialQuota(full.0)))?;
    allowed().map_err(|e| turned_away(e.into()))?;
    let cause = Cause::by(scanner.principal());
    // Another node holds the endpoint: one hop to it. A draining node sends new streams to the
    // endpoint's new session elsewhere as soon as there is one, so that its old one winds down.
    // An owner that no longer holds the endpoint when the stream reaches it (it just moved) says
    // so, and the owner is looked up again.
    let mut relays_left = RELAY_ATTEMPTS;
    loop {
        if relays_left < RELAY_ATTEMPTS {
            // The endpoint is moving: give its new owner's record a moment to be seen.
            tokio::time::sleep(LOOKUP_AGAIN_AFTER).await;
        }
        let lookup = tracing::info_span!("endpoint.lookup", holder = Empty);
        let local = path.sessions.get(endpoint);
        let elsewhere = match &local {
            Some(_) if !path.cluster.is_draining() => None,
            // After a lost race the store itself is asked: the feed may lag behind the move.
            _ => {
                path.cluster
                    .owner_elsewhere(endpoint, relays_left < RELAY_ATTEMPTS)
                    .instrument(lookup.clone())
                    .await
            }
        };
        let holder = match (&elsewhere, &local) {
            (Some(owner), _) => owner.node.as_str(),
            (None, Some(_)) => path.cluster.node_id.as_str(),
            (None, None) => "none",
        };
        lookup.record("holder", holder);
        drop(lookup);
        let owner = match (elsewhere, local) {
            (Some(owner), _) => owner,
            (None, Some(live)) => {
                let retry = relays_left > 1;
                match open_local(path, &live, target.clone(), scanner, &cause, retry, &stop).await {
                    Err(OpenStreamError::SessionClosed) if relays_left > 1 => {
                        // The session ended between the lookup and the open: the endpoint moved on
                        // (or is gone), so it is looked up again.
                        relays_left -= 1;
                        continue;
                    }
                    Ok((stream, recorder)) => {
                        let end = EndRecord::new(path, &stream, Some(recorder), cause, connection);
                        return Ok(OpenedStream {
                            stream,
                            limits: path.limits,
                            stop,
                            _registered: registered,
                            end,
                        });
                    }
                    Err(error) => {
                        return Err(NotOpened::Open { target: target.to_string(), error })
                    }
                }
            }
            (None, None) => {
                return Err(turned_away(NotOpened::EndpointOffline(scanner.endpoint.name.clone())))
            }
        };
        let relay = Relay {
            endpoint: *endpoint.as_bytes(),
            scanner: scanner.credential_id.simple().to_string(),
            ingress_node: path.cluster.node_id.clone(),
        };
        let target_text = target.to_string();
        let span = tracing::info_span!("relay.open", node = %owner.node);
        let trace = context::of(&span);
        let relayed =
            path.cluster.open_relayed(&owner, target.clone(), relay, trace).instrument(span).await;
        return match relayed {
            Ok(stream) => {
                let end = EndRecord::new(path, &stream, None, cause, connection);
                Ok(OpenedStream { stream, limits: path.limits, stop, _registered: registered, end })
            }
            Err(RelayError::Open(OpenStreamError::Refused {
                reason: OpenFailure::NotHeld,
                ..
            })) if relays_left > 1 => {
                relays_left -= 1;
                continue;
            }
            // The owner recorded the refusal (the endpoint's, or access withdrawn); one it cannot
            // record (its log behind, the endpoint gone from it) it logs.
            Err(RelayError::Open(error)) => Err(NotOpened::Open { target: target_text, error }),
            Err(unreachable) => {
                Err(turned_away(NotOpened::OwnerUnreachable(unreachable.to_string())))
            }
        };
    }
}

/// Opens a stream on the endpoint's session on this node and records its opening, or its
/// refusal, on the endpoint's tunnel; a session that closed meanwhile is not recorded as a
/// refusal when the caller `will_retry` (the endpoint moved on, and the stream goes there).
async fn open_local(
    path: &ScannerPath<'_>,
    live: &LiveSession,
    target: TargetAddr,
    scanner: &AuthorisedScanner,
    cause: &Cause,
    will_retry: bool,
    stop: &CancellationToken,
) -> Result<(TunnelStream, Recorder<Tunnel>), OpenStreamError> {
    // Holding the tunnel actor's address keeps it alive until this stream's facts are recorded,
    // even if the session ends first.
    let recorder = path.tunnels.recorder(live.tunnel);
    let target_text = target.to_string();
    let opened = tokio::select! {
        biased;
        // Access withdrawn while the stream waited for a slot: it never opens.
        _ = stop.cancelled() => Err(OpenStreamError::Refused {
            reason: OpenFailure::NotAllowed,
            message: "access was withdrawn while the stream waited for a slot".into(),
        }),
        opened = open_traced(live, target, path.limits.queue) => opened,
    };
    match opened {
        Ok(stream) => {
            let command = TunnelCommand::RecordStreamOpened {
                via: None,
                stream: stream.id().0,
                target: target_text,
                scanner: scanner.audit_name(),
            };
            recorder.tell(command, cause.clone());
            Ok((stream, recorder))
        }
        Err(OpenStreamError::SessionClosed) if will_retry => Err(OpenStreamError::SessionClosed),
        Err(error) => {
            path.refusals.refused(RefusedStream {
                tunnel: live.tunnel,
                recorder: &recorder,
                scanner: scanner.audit_name(),
                target: &target_text,
                error: &error,
                cause: cause.clone(),
            });
            Err(error)
        }
    }
}

/// How many times a stream looks the endpoint's owner up when each says the endpoint just moved
/// on.
const RELAY_ATTEMPTS: usize = 4;

/// The pause before looking the owner up again.
const LOOKUP_AGAIN_AFTER: Duration = Duration::from_millis(50);

impl OpenedStream<'_> {
    /// Joins the stream to the scanner's socket (after sending `initial`, bytes already read
    /// from it) until it ends, and records how it ended.
    pub async fn splice(self, tcp: TcpStream, initial: Bytes) {
        let options = self.options(initial);
        // The scanner is this side's socket: what it sent goes to the target. Spliced on its
        // session's tunnel thread (see `crate::tunnel_threads`).
        let report = self.stream.splice_beside_session(tcp, options).await;
        self.end.ended(report.sent, report.received, &report.end);
    }

    /// Runs `exchange` on the stream, for a caller that moves the bytes itself rather than
    /// splicing a socket (the HTTP proxy's one forwarded request, the scan engine's connections),
    /// under the splice's limits ([`TunnelStream::exchange`]); records how it ended, and returns
    /// it.
    pub async fn exchange(
        self,
        exchange: impl AsyncFnOnce(&mut StreamReader, &mut StreamWriter, &Exchanged) -> StreamEnd,
    ) -> StreamEnd {
        let options = self.options(Bytes::new());
        let report = self.stream.exchange(options, exchange).await;
        self.end.ended(report.sent, report.received, &report.end);
        report.end
    }

    /// How the stream gives up: access withdrawn, the node's quiet limits.
    fn options(&self, initial: Bytes) -> SpliceOptions {
        SpliceOptions {
            initial,
            stop: self.stop.clone(),
            idle_timeout: self.limits.idle_timeout,
            half_closed_timeout: Some(self.limits.half_closed_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scanner_is_not_told_the_clusters_nodes_or_addresses() {
        let unreachable =
            NotOpened::OwnerUnreachable("endpoint held by node node-b, which cannot be reached: node node-b at 10.1.2.3:7443: TLS: handshake failed".into());
        let told = unreachable.for_scanner();
        assert!(!told.contains("node-b") && !told.contains("10.1.2.3"), "{told}");
        assert!(unreachable.to_string().contains("10.1.2.3"), "the operator's log keeps it");
        let offline = NotOpened::EndpointOffline("dc1".into());
        assert_eq!(offline.for_scanner(), offline.to_string());
    }

    #[test]
    fn a_scanner_is_not_told_what_a_target_off_the_allowlist_resolved_to() {
        let message = "meta.corp:80 (resolved to 169.254.169.254) is not in this endpoint's \
                       allowedTargets: 169.254.169.254 is link-local";
        let off = NotOpened::Open {
            target: "meta.corp:80".into(),
            error: OpenStreamError::Refused {
                reason: OpenFailure::NotAllowed,
                message: message.into(),
            },
        };
        let told = off.for_scanner();
        assert_eq!(
            told,
            "stream to meta.corp:80 refused: not allowed (by the endpoint's allowedTargets, or by \
             this scanner's access)"
        );
        assert!(off.to_string().contains("169.254.169.254"), "the operator's log keeps it");
        let closed = NotOpened::Open {
            target: "app.corp:81".into(),
            error: OpenStreamError::Refused {
                reason: OpenFailure::ConnectionRefused,
                message: "connect to 10.0.0.5:81: connection refused".into(),
            },
        };
        assert_eq!(closed.for_scanner(), closed.to_string(), "an allowed target's failure");
    }
}
