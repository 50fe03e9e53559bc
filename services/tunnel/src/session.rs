//! One live tunnel: the tasks that carry many streams over one WebSocket.
//!
//! Two tasks per session, so that reading never waits on writing (two peers that both stop
//! reading while their writes are blocked would deadlock):
//!
//! - the **driver** reads the WebSocket, owns the [`StreamTable`] and every stream's local
//!   handle, and applies what the table decides. It never blocks on anything but its inputs.
//! - the **writer** drains two queues into the WebSocket: a priority queue for frames that may
//!   overtake data (credit, resets, pings) and a bounded, ordered queue for the frames that must
//!   stay in order with a stream's bytes (`OpenOk`, `Data`, `Fin`). The bound is what pushes back
//!   on the streams when the WebSocket is slower than the sockets feeding it.
//!
//! Stream tasks talk to the driver through an unbounded control queue (open, accepted, consumed,
//! finished, reset); its size is bounded in practice by the streams' credit.

use crate::credit::SendCredit;
use crate::stream::{Inbound, IncomingStream, TunnelStream};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use ism_tunnel_proto::{
    Action, Frame, OpenError, OpenFailure, ResetReason, Role, StreamId, StreamTable, TargetAddr,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Tunables of a session. Both ends use the same defaults.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Receive window granted per stream.
    pub recv_window: u32,
    /// Most streams open at once in this session.
    pub max_streams: usize,
    /// How often to ping the peer.
    pub ping_interval: Duration,
    /// Silence after which the peer is declared dead.
    pub idle_timeout: Duration,
    /// How long an opener waits for `OpenOk`/`OpenFailed`.
    pub open_timeout: Duration,
    /// Ordered frames queued for the writer before stream pumps wait.
    pub write_queue: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            recv_window: 256 * 1024,
            max_streams: 4096,
            // A dead peer is declared within 7 s of its last word (the goal is 10 s, with room
            // for a busy machine's timers); a healthy one speaks at least every 2 s.
            ping_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(7),
            open_timeout: Duration::from_secs(20),
            write_queue: 256,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the WebSocket.
    PeerClosed,
    /// Nothing arrived from the peer within the idle timeout.
    IdleTimeout,
    /// The peer broke the protocol.
    Violation(String),
    /// The socket failed.
    Transport(String),
    /// This side closed it (fenced by a newer session, access revoked, shutting down).
    Local(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => write!(f, "peer closed the tunnel"),
            CloseReason::IdleTimeout => write!(f, "peer silent beyond the idle timeout"),
            CloseReason::Violation(m) => write!(f, "protocol violation: {m}"),
            CloseReason::Transport(m) => write!(f, "transport error: {m}"),
            CloseReason::Local(m) => write!(f, "closed locally: {m}"),
        }
    }
}

/// Why opening a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenStreamError {
    #[error("endpoint refused: {message}")]
    Refused { reason: OpenFailure, message: String },
    #[error("{0}")]
    Local(#[from] OpenError),
    #[error("no answer from the endpoint within {0:?}")]
    TimedOut(Duration),
    #[error("the endpoint reset the stream while opening it ({0:?})")]
    Reset(ResetReason),
    #[error("tunnel closed")]
    SessionClosed,
}

impl OpenStreamError {
    /// The kind of failure in a few words, the same for every failure of that kind (the
    /// message of a refusal may name the target): what refusals are counted by.
    pub fn class(&self) -> &'static str {
        match self {
            OpenStreamError::Refused { reason, .. } => match reason {
                OpenFailure::General => "refused by the endpoint",
                OpenFailure::NotAllowed => "not allowed by the endpoint's allowlist",
                OpenFailure::NetworkUnreachable => "network unreachable from the endpoint",
                OpenFailure::HostUnreachable => "host unreachable from the endpoint",
                OpenFailure::ConnectionRefused => "connection refused by the target",
                OpenFailure::TimedOut => "the target did not answer in time",
                OpenFailure::Busy => "the endpoint is at its stream capacity",
            },
            OpenStreamError::Local(OpenError::LimitReached(_)) => {
                "the endpoint's stream limit is reached"
            }
            OpenStreamError::Local(OpenError::IdsExhausted) => {
                "the tunnel's stream ids are exhausted"
            }
            OpenStreamError::TimedOut(_) => "no answer from the endpoint in time",
            OpenStreamError::Reset(_) => "reset while opening",
            OpenStreamError::SessionClosed => "the tunnel closed",
        }
    }
}

pub(crate) enum Control {
    Open { target: TargetAddr, reply: oneshot::Sender<Result<TunnelStream, OpenStreamError>> },
    Accept { stream: StreamId, reply: oneshot::Sender<Option<Frame>> },
    Reject { stream: StreamId, reason: OpenFailure, message: String },
    Consumed { stream: StreamId, len: usize },
    LocalFin { stream: StreamId },
    LocalReset { stream: StreamId, reason: ResetReason },
}

/// The queues a stream task needs to reach its session.
#[derive(Clone)]
pub(crate) struct Lanes {
    pub control: mpsc::UnboundedSender<Control>,
    pub ordered: mpsc::Sender<Outgoing>,
}

/// An encoded frame for the ordered queue. A data frame carries its stream's turn, released when
/// the writer takes the frame: each stream has at most one data frame waiting, so the frames of
/// a small request interleave with a bulk transfer's instead of queuing behind all of them.
pub(crate) struct Outgoing {
    pub frame: Bytes,
    /// Held, not read: dropping it gives the stream its turn back.
    pub _turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl From<Bytes> for Outgoing {
    fn from(frame: Bytes) -> Self {
        Outgoing { frame, _turn: None }
    }
}

struct Shared {
    lanes: Lanes,
    closed: watch::Sender<Option<CloseReason>>,
    open_streams: Arc<AtomicUsize>,
    config: SessionConfig,
}

/// Handle to a running session. Cheap to clone; the session lives until it is closed or its
/// WebSocket ends, whatever happens to the handles.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

/// Streams the peer opens towards this side.
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<IncomingStream>,
}

impl Incoming {
    /// The next stream the peer wants opened; `None` once the session is over.
    pub async fn next(&mut self) -> Option<IncomingStream> {
        self.rx.recv().await
    }
}

impl Session {
    /// Starts the driver and writer tasks on an established (and authenticated) WebSocket.
    pub fn spawn<S>(
        ws: WebSocketStream<S>,
        role: Role,
        config: SessionConfig,
    ) -> (Session, Incoming)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(ws, role, config, None, |_| {})
    }

    /// As [`spawn`](Self::spawn), with `greeting` sent before any other frame, and `register`
    /// run with the session before the greeting can be sent. The gateway registers the session
    /// and greets with `Welcome`: once the endpoint learns it is connected, scanners find it.
    pub fn spawn_with_greeting<S>(
        ws: WebSocketStream<S>,
        role: Role,
        config: SessionConfig,
        greeting: Frame,
        register: impl FnOnce(&Session),
    ) -> (Session, Incoming)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(ws, role, config, Some(greeting), register)
    }

    fn start<S>(
        ws: WebSocketStream<S>,
        role: Role,
        config: SessionConfig,
        greeting: Option<Frame>,
        register: impl FnOnce(&Session),
    ) -> (Session, Incoming)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (ordered_tx, ordered_rx) = mpsc::channel(config.write_queue);
        // Priority frames are small and few (credit, resets, pongs); the bound only trips when the
        // peer stops reading, and then the session is dead anyway.
        let (prio_tx, prio_rx) = mpsc::channel(4096);
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (closed_tx, _) = watch::channel(None);
        let open_streams = Arc::new(AtomicUsize::new(0));
        let lanes = Lanes { control: control_tx, ordered: ordered_tx };
        let shared = Arc::new(Shared {
            lanes: lanes.clone(),
            closed: closed_tx,
            open_streams: open_streams.clone(),
            config: config.clone(),
        });
        let session = Session { shared };
        let (sink, stream) = ws.split();

        register(&session);
        tokio::spawn(writer(
            sink,
            greeting,
            prio_rx,
            ordered_rx,
            session.shared.closed.subscribe(),
            session.clone_closer(),
        ));
        let driver = Driver {
            table: StreamTable::new(role, config.recv_window, config.max_streams),
            locals: HashMap::new(),
            lanes,
            prio: prio_tx,
            incoming: incoming_tx,
            open_streams,
            closer: session.clone_closer(),
        };
        tokio::spawn(driver.run(stream, control_rx, session.shared.closed.subscribe(), config));
        (session, Incoming { rx: incoming_rx })
    }

    fn clone_closer(&self) -> Closer {
        Closer(self.shared.closed.clone())
    }

    /// Opens a stream to `target` through the peer and waits for it to connect.
    pub async fn open_stream(&self, target: TargetAddr) -> Result<TunnelStream, OpenStreamError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .lanes
            .control
            .send(Control::Open { target, reply })
            .map_err(|_| OpenStreamError::SessionClosed)?;
        let timeout = self.shared.config.open_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(OpenStreamError::SessionClosed),
            // Dropping `rx` marks the open abandoned: the driver resets it if the answer comes
            // late, or at its next sweep if none comes.
            Err(_) => Err(OpenStreamError::TimedOut(timeout)),
        }
    }

    /// Ends the session: every stream is reset and the WebSocket closed. The first reason wins.
    pub fn close(&self, reason: impl Into<String>) {
        self.clone_closer().close(CloseReason::Local(reason.into()));
    }

    /// Waits until the session has ended and says why.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.shared.closed.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return CloseReason::Local("session dropped".into());
            }
        }
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Streams currently open in this session.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::Relaxed)
    }
}

/// Records the first close reason; later ones are ignored.
#[derive(Clone)]
struct Closer(watch::Sender<Option<CloseReason>>);

impl Closer {
    fn close(&self, reason: CloseReason) {
        self.0.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

async fn writer<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    greeting: Option<Frame>,
    mut prio: mpsc::Receiver<Frame>,
    mut ordered: mpsc::Receiver<Outgoing>,
    mut closed: watch::Receiver<Option<CloseReason>>,
    closer: Closer,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Frames fed before one flush: enough to fill TLS records, few enough to keep latency low.
    const BATCH: usize = 64;
    let result: Result<(), tokio_tungstenite::tungstenite::Error> = async {
        if let Some(greeting) = greeting {
            sink.send(Message::Binary(greeting.encode())).await?;
        }
        loop {
            let first = tokio::select! {
                biased;
                _ = closed.changed() => return Ok(()),
                Some(f) = prio.recv() => f.encode(),
                Some(o) = ordered.recv() => o.frame,
            };
            sink.feed(Message::Binary(first)).await?;
            for _ in 1..BATCH {
                let next = match prio.try_recv() {
                    Ok(f) => f.encode(),
                    Err(_) => match ordered.try_recv() {
                        Ok(o) => o.frame,
                        Err(_) => break,
                    },
                };
                sink.feed(Message::Binary(next)).await?;
            }
            sink.flush().await?;
        }
    }
    .await;
    if let Err(e) = result {
        closer.close(CloseReason::Transport(e.to_string()));
    }
    let _ = sink.close().await;
}

/// The local half of one stream, held by the driver. An open still pending when it is dropped
/// needs no `Reset` from its parts: the driver has dealt with the stream.
struct Local {
    inbound: mpsc::UnboundedSender<Inbound>,
    credit: Arc<SendCredit>,
    /// For streams this side opened: the opener waiting for the answer, and the parts it gets.
    pending_open: Option<(oneshot::Sender<Result<TunnelStream, OpenStreamError>>, TunnelStream)>,
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Some((_, parts)) = &mut self.pending_open {
            parts.defuse();
        }
    }
}

struct Driver {
    table: StreamTable,
    locals: HashMap<StreamId, Local>,
    lanes: Lanes,
    prio: mpsc::Sender<Frame>,
    incoming: mpsc::UnboundedSender<IncomingStream>,
    open_streams: Arc<AtomicUsize>,
    closer: Closer,
}

impl Driver {
    async fn run<S>(
        mut self,
        mut ws: futures_util::stream::SplitStream<WebSocketStream<S>>,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut closed: watch::Receiver<Option<CloseReason>>,
        config: SessionConfig,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut ping = tokio::time::interval(config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping_nonce = 0u64;
        let mut last_heard = Instant::now();
        let reason = loop {
            let outcome = tokio::select! {
                biased;
                _ = closed.changed() => break None,
                Some(ctl) = control.recv() => { self.on_control(ctl); Ok(()) }
                msg = ws.next() => {
                    last_heard = Instant::now();
                    match msg {
                        Some(Ok(Message::Binary(b))) => self.on_message(b),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
                        Some(Ok(Message::Text(_))) => Err(CloseReason::Violation("text message on a tunnel".into())),
                        Some(Ok(Message::Close(_))) | None => Err(CloseReason::PeerClosed),
                        Some(Err(e)) => Err(CloseReason::Transport(e.to_string())),
                    }
                }
                _ = tokio::time::sleep_until(last_heard + config.idle_timeout) => Err(CloseReason::IdleTimeout),
                _ = ping.tick() => {
                    ping_nonce += 1;
                    self.abandon_unwanted_opens().and_then(|()| self.send_prio(Frame::Ping { nonce: ping_nonce }))
                }
            };
            if let Err(reason) = outcome {
                break Some(reason);
            }
        };
        if let Some(reason) = reason {
            self.closer.close(reason);
        }
        self.shutdown();
    }

    fn send_prio(&self, frame: Frame) -> Result<(), CloseReason> {
        self.prio.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                CloseReason::Violation("peer stopped reading; write queue full".into())
            }
            mpsc::error::TrySendError::Closed(_) => CloseReason::Transport("writer stopped".into()),
        })
    }

    /// Resets the opens whose opener stopped waiting (timed out), so an endpoint that never
    /// answers cannot fill the stream table.
    fn abandon_unwanted_opens(&mut self) -> Result<(), CloseReason> {
        for stream in self.table.opening() {
            let abandoned = self
                .locals
                .get(&stream)
                .and_then(|l| l.pending_open.as_ref())
                .is_some_and(|(reply, _)| reply.is_closed());
            if abandoned {
                self.reset(stream, ResetReason::Aborted)?;
            }
        }
        Ok(())
    }

    fn on_message(&mut self, bytes: Bytes) -> Result<(), CloseReason> {
        let frame = Frame::decode(bytes).map_err(|e| CloseReason::Violation(e.to_string()))?;
        match frame {
            Frame::Ping { nonce } => return self.send_prio(Frame::Pong { nonce }),
            Frame::Pong { .. } => return Ok(()),
            Frame::Challenge { .. }
            | Frame::Hello(_)
            | Frame::Welcome { .. }
            | Frame::Rejected { .. } => {
                return Err(CloseReason::Violation("handshake frame after the handshake".into()))
            }
            _ => {}
        }
        let action =
            self.table.on_frame(frame).map_err(|v| CloseReason::Violation(v.to_string()))?;
        self.apply(action)
    }

    fn apply(&mut self, action: Action) -> Result<(), CloseReason> {
        match action {
            Action::None => {}
            Action::Accept { stream, target, send_window } => {
                let (local, parts) = self.new_local(stream, send_window);
                let incoming = IncomingStream::new(parts, target);
                if let Err(mpsc::error::SendError(mut unwanted)) = self.incoming.send(incoming) {
                    unwanted.defuse();
                    // Nobody accepts streams on this side.
                    self.forget(stream);
                    self.send_prio(Frame::OpenFailed {
                        stream,
                        reason: OpenFailure::General,
                        message: "this side accepts no streams".into(),
                    })?;
                } else {
                    self.insert_local(stream, local);
                }
            }
            Action::Opened { stream, send_window } => {
                if let Some(local) = self.locals.get_mut(&stream) {
                    if local.credit.grant(send_window).is_err() {
                        return self.reset(stream, ResetReason::ProtocolViolation);
                    }
                    if let Some((reply, parts)) = local.pending_open.take() {
                        if let Err(Ok(mut parts)) = reply.send(Ok(parts)) {
                            // The opener gave up waiting.
                            parts.defuse();
                            return self.reset(stream, ResetReason::Aborted);
                        }
                    }
                }
            }
            Action::OpenFailed { stream, reason, message } => {
                if let Some(mut local) = self.remove_local(stream) {
                    if let Some((reply, mut parts)) = local.pending_open.take() {
                        parts.defuse();
                        let _ = reply.send(Err(OpenStreamError::Refused { reason, message }));
                    }
                }
            }
            Action::Deliver { stream, payload } => {
                let delivered = self
                    .locals
                    .get(&stream)
                    .map(|l| l.inbound.send(Inbound::Data(payload)).is_ok());
                if delivered == Some(false) {
                    return self.reset(stream, ResetReason::Aborted);
                }
            }
            Action::Credit { stream, increment } => {
                if let Some(local) = self.locals.get(&stream) {
                    if local.credit.grant(increment).is_err() {
                        return self.reset(stream, ResetReason::ProtocolViolation);
                    }
                }
            }
            Action::RemoteFin { stream } => {
                if let Some(local) = self.locals.get(&stream) {
                    let _ = local.inbound.send(Inbound::Fin);
                }
                self.sync_local(stream);
            }
            Action::RemoteReset { stream, reason } => self.end_local(stream, reason),
            Action::Refuse { reply, local_reset } => {
                if let Some((stream, reason)) = local_reset {
                    self.end_local(stream, reason);
                }
                self.send_prio(reply)?;
            }
        }
        Ok(())
    }

    fn on_control(&mut self, ctl: Control) {
        let result = match ctl {
            Control::Open { target, reply } => match self.table.open(target) {
                Ok((stream, frame)) => {
                    let (mut local, parts) = self.new_local(stream, 0);
                    local.pending_open = Some((reply, parts));
                    self.insert_local(stream, local);
                    self.send_prio(frame)
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    Ok(())
                }
            },
            Control::Accept { stream, reply } => {
                let _ = reply.send(self.table.accepted(stream));
                Ok(())
            }
            Control::Reject { stream, reason, message } => {
                self.forget(stream);
                self.send_prio(Frame::OpenFailed { stream, reason, message })
            }
            Control::Consumed { stream, len } => match self.table.consumed(stream, len) {
                Some(frame) => self.send_prio(frame),
                None => Ok(()),
            },
            Control::LocalFin { stream } => {
                self.table.local_finished(stream);
                self.sync_local(stream);
                Ok(())
            }
            Control::LocalReset { stream, reason } => self.reset(stream, reason),
        };
        if let Err(reason) = result {
            self.closer.close(reason);
        }
    }

    /// Tears a stream down locally and tells the peer.
    fn reset(&mut self, stream: StreamId, reason: ResetReason) -> Result<(), CloseReason> {
        self.end_local(stream, reason);
        self.send_prio(Frame::Reset { stream, reason })
    }

    /// Tears a stream down locally only (the peer already knows, or never will).
    fn end_local(&mut self, stream: StreamId, reason: ResetReason) {
        self.table.remove(stream);
        if let Some(mut local) = self.remove_local(stream) {
            let _ = local.inbound.send(Inbound::Reset(reason));
            if let Some((reply, mut parts)) = local.pending_open.take() {
                parts.defuse();
                let _ = reply.send(Err(OpenStreamError::Reset(reason)));
            }
        }
    }

    fn forget(&mut self, stream: StreamId) {
        self.table.remove(stream);
        self.remove_local(stream);
    }

    /// Drops the local half once the table has forgotten the stream (both sides finished).
    fn sync_local(&mut self, stream: StreamId) {
        if !self.table.contains(stream) {
            self.remove_local(stream);
        }
    }

    fn new_local(&self, stream: StreamId, send_window: u32) -> (Local, TunnelStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        let credit = Arc::new(SendCredit::new(send_window));
        let parts = TunnelStream::new(stream, self.lanes.clone(), rx, credit.clone());
        (Local { inbound: tx, credit, pending_open: None }, parts)
    }

    fn insert_local(&mut self, stream: StreamId, local: Local) {
        self.locals.insert(stream, local);
        self.open_streams.store(self.locals.len(), Ordering::Relaxed);
    }

    fn remove_local(&mut self, stream: StreamId) -> Option<Local> {
        let local = self.locals.remove(&stream);
        if let Some(l) = &local {
            l.credit.close();
        }
        self.open_streams.store(self.locals.len(), Ordering::Relaxed);
        local
    }

    fn shutdown(&mut self) {
        for stream in self.table.drain() {
            self.end_local(stream, ResetReason::SessionClosed);
        }
        for (_, mut local) in self.locals.drain() {
            local.credit.close();
            let _ = local.inbound.send(Inbound::Reset(ResetReason::SessionClosed));
            if let Some((reply, mut parts)) = local.pending_open.take() {
                parts.defuse();
                let _ = reply.send(Err(OpenStreamError::SessionClosed));
            }
        }
        self.open_streams.store(0, Ordering::Relaxed);
    }
}
