//! One live tunnel: the tasks that carry many streams over one WebSocket.
//!
//! Two tasks per session, so that reading never waits on writing (two peers that both stop
//! reading while their writes are blocked would deadlock):
//!
//! - the **driver** reads the WebSocket and feeds every frame, local event and timeout to the
//!   session's protocol state ([`SessionState`], sans-IO, in `ism-tunnel-proto`), then carries out
//!   what it decides. Each stream's local handle (its channels, its opener) lives in that state's
//!   stream table. The driver never blocks on anything but its inputs.
//! - the **writer** sends what senders queue while the WebSocket is busy (`crate::outbox`):
//!   a stream's pump that finds it free writes its frames itself, and the driver only ever
//!   queues. A stream has at most one frame queued (its turn), and a pump that writes waits for
//!   the socket, which is what pushes back on the streams when the WebSocket is slower than the
//!   sockets feeding it.
//!
//! Stream tasks talk to the driver through an unbounded control queue (accepted, consumed,
//! finished, reset), session handles through an open queue; their size is bounded in practice by
//! the streams' credit and the stream limit.

use crate::credit::SendCredit;
use crate::error::{CloseReason, OpenStreamError};
use crate::inbox::{Delivered, Inbound, Inbox, HOLD_PAYLOADS};
use crate::lanes::{Control, Lanes};
use crate::moved::Home;
use crate::outbox::{self, Outbox, SendError};
use crate::socket::TunnelSocket;
use crate::stream::{IncomingStream, TunnelStream};
use bytes::Bytes;
use futures_util::StreamExt;
use ism_tunnel_proto::{
    Action, CreditBudget, Frame, GivenUp, LocalReset, OpenFailure, Relay, ResetReason, Role,
    SessionState, StreamId, TargetAddr, Timing, TraceParent, Windows,
};
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// The default [`SessionConfig::budget`]: 256 MiB, lone 8 MiB windows for 32 streams at once.
pub const DEFAULT_WINDOW_BUDGET: u64 = 256 * 1024 * 1024;

/// Tunables of a session. Both ends use the same defaults.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Receive windows granted per stream: to a stream alone in its session, and to one beside
    /// others.
    pub windows: Windows,
    /// Where a stream reserves its credit above the shared window (alone, or busy beside busy
    /// streams). Clones of a config share it, so every session spawned from one config (a
    /// node's) draws on one budget.
    pub budget: CreditBudget,
    /// Most streams open at once in this session.
    pub max_streams: usize,
    /// Pings, the dead-peer timeout and the open timeout.
    pub timing: Timing,
    /// Largest `Data` payload sent: what the peer's protocol version accepts
    /// ([`ism_tunnel_proto::max_data_len`]; the default suits a peer of any version).
    pub max_data_len: usize,
}

impl SessionConfig {
    /// This configuration for a session whose handshake agreed on protocol `version`.
    pub fn at_version(mut self, version: u16) -> Self {
        self.max_data_len = ism_tunnel_proto::max_data_len(version);
        self
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            windows: Windows { alone: 8 * 1024 * 1024, shared: 64 * 1024 },
            budget: CreditBudget::new(DEFAULT_WINDOW_BUDGET),
            max_streams: 4096,
            timing: Timing::default(),
            max_data_len: ism_tunnel_proto::V2_MAX_DATA_LEN,
        }
    }
}

/// A session handle's request to open a stream towards the peer.
struct OpenRequest {
    target: TargetAddr,
    relay: Option<Relay>,
    trace: Option<TraceParent>,
    reply: oneshot::Sender<Result<TunnelStream, OpenStreamError>>,
}

/// The session's channels carry boxes: an unbounded channel allocates room for 32 items when
/// it is made, and at these items' sizes that was 11 KiB of every idle endpoint's memory.
struct Shared {
    opens: mpsc::UnboundedSender<Box<OpenRequest>>,
    /// Set when the peer (a draining gateway node) asks this side to move.
    move_requested: watch::Sender<Option<String>>,
    closed: watch::Sender<Option<CloseReason>>,
    /// Streams in the table, as the driver last counted them: a plain counter, as nothing waits
    /// on it (a `watch` notified its eight waiter lists after every frame the driver read: about
    /// 1% of the gateway's tunnel thread with 50 keep-alive HTTP clients, in a profile).
    open_streams: Arc<AtomicUsize>,
    /// One wake-up per stream slot freed, for openers waiting at the stream cap, in the order
    /// they began to wait.
    slot_freed: Arc<Notify>,
    outbox: Arc<Outbox>,
    home: Home,
}

/// Handle to a running session. Cheap to clone; the session lives until it is closed or its
/// WebSocket ends, whatever happens to the handles.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

/// Streams the peer opens towards this side.
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<Box<IncomingStream>>,
}

impl Incoming {
    /// The next stream the peer wants opened; `None` once the session is over.
    pub async fn next(&mut self) -> Option<IncomingStream> {
        self.rx.recv().await.map(|stream| *stream)
    }
}

impl Session {
    /// Starts the driver and writer tasks on an established (and authenticated) WebSocket. From
    /// here on the session writes the socket itself and tungstenite only reads it.
    pub fn spawn<S>(
        ws: WebSocketStream<TunnelSocket<S>>,
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
        ws: WebSocketStream<TunnelSocket<S>>,
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
        ws: WebSocketStream<TunnelSocket<S>>,
        role: Role,
        config: SessionConfig,
        greeting: Option<Frame>,
        register: impl FnOnce(&Session),
    ) -> (Session, Incoming)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (opens_tx, opens_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (closed_tx, _) = watch::channel(None);
        let socket = ws.get_ref().take_writer().expect("only a session takes its socket's writer");
        // The writer holds the socket from here on until it has sent the greeting.
        let (outbox, first) = Outbox::new(socket, closed_tx.clone());
        let home = Home::current();
        let max_data = config.max_data_len.clamp(1, ism_tunnel_proto::MAX_DATA_LEN);
        let lanes =
            Lanes { control: control_tx, outbox: outbox.clone(), home: home.clone(), max_data };
        let (move_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            move_requested: move_tx.clone(),
            opens: opens_tx,
            closed: closed_tx,
            open_streams: Arc::default(),
            slot_freed: Arc::default(),
            outbox: outbox.clone(),
            home,
        });
        let session = Session { shared };

        register(&session);
        tokio::spawn(outbox.run_writer(first, greeting));
        let now = Instant::now().into_std();
        let driver = Driver {
            state: SessionState::new(
                role,
                config.windows,
                config.budget,
                config.max_streams,
                config.timing,
                now,
            ),
            open_timeout: config.timing.open_timeout,
            lanes,
            move_requested: move_tx,
            incoming: incoming_tx,
            open_streams: session.shared.open_streams.clone(),
            slot_freed: session.shared.slot_freed.clone(),
            closer: session.clone_closer(),
            queued_prio: Cell::new(false),
            held: Vec::new(),
            reads_holding: 0,
        };
        tokio::spawn(driver.run(ws, control_rx, opens_rx, session.shared.closed.subscribe()));
        (session, Incoming { rx: incoming_rx })
    }

    fn clone_closer(&self) -> Closer {
        Closer(self.shared.closed.clone())
    }

    /// Starts `work` where this session's tasks run, with `tcp` (a scanner's connection) moved
    /// there, and returns at once: the opens it asks for, their answers and its stream's bytes
    /// then wake no other thread, and the caller's task need not wait for it. The work stops
    /// when it ends or when that runtime does.
    pub fn spawn_beside<F, Fut>(&self, tcp: TcpStream, work: F) -> std::io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.shared.home.spawn(tcp, work)
    }

    /// Opens a stream to `target` through the peer and waits for it to connect.
    /// Without an answer within the open timeout, the session gives the open up
    /// ([`OpenStreamError::TimedOut`]). An opener that stops waiting (its future dropped) has its
    /// open reset when the answer comes, or at the next ping.
    pub async fn open_stream(&self, target: TargetAddr) -> Result<TunnelStream, OpenStreamError> {
        self.open(target, None, None).await
    }

    /// As [`open_stream`](Self::open_stream), as part of `trace` (the peer's work joins it).
    pub async fn open_stream_traced(
        &self,
        target: TargetAddr,
        trace: Option<TraceParent>,
    ) -> Result<TunnelStream, OpenStreamError> {
        self.open(target, None, trace).await
    }

    /// Opens a stream to `target` through the endpoint the peer (another gateway node) holds,
    /// for `relay`'s scanner (the one-hop relay of a cluster), as part of `trace`.
    pub async fn open_relayed(
        &self,
        target: TargetAddr,
        relay: Relay,
        trace: Option<TraceParent>,
    ) -> Result<TunnelStream, OpenStreamError> {
        self.open(target, Some(relay), trace).await
    }

    async fn open(
        &self,
        target: TargetAddr,
        relay: Option<Relay>,
        trace: Option<TraceParent>,
    ) -> Result<TunnelStream, OpenStreamError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .opens
            .send(Box::new(OpenRequest { target, relay, trace, reply }))
            .map_err(|_| OpenStreamError::SessionClosed)?;
        rx.await.unwrap_or(Err(OpenStreamError::SessionClosed))
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

    /// Waits until the peer asks this side to move to another node (it is draining); says why.
    pub async fn move_requested(&self) -> String {
        let mut rx = self.shared.move_requested.subscribe();
        let reason = rx.wait_for(Option::is_some).await.map(|r| r.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            // The session is gone, and with it the request: nothing to wait for.
            Err(_) => std::future::pending().await,
        }
    }

    /// Asks the peer (an endpoint) to move to another node: this node is draining.
    pub fn request_move(&self, reason: impl Into<String>) -> Result<(), OpenStreamError> {
        self.shared
            .outbox
            .send_prio(&Frame::Move { reason: reason.into() })
            .map_err(|_| OpenStreamError::SessionClosed)
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Streams currently open in this session.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::Relaxed)
    }

    /// Completes when a stream slot frees (one waiter per slot, first come first served) or
    /// the session ends: when an opener refused at the stream cap may try again. Take it, and
    /// [`enable`](tokio::sync::futures::Notified::enable) it, *before* the open that may be
    /// refused, so that a slot freed in between is not missed.
    pub fn slot_freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.slot_freed.notified()
    }
}

/// Records the first close reason; later ones are ignored.
#[derive(Clone)]
struct Closer(watch::Sender<Option<CloseReason>>);

impl Closer {
    fn close(&self, reason: CloseReason) {
        outbox::close(&self.0, reason);
    }
}

/// The local half of one stream, kept in the stream table as its handle. An open still pending
/// when it is dropped needs no `Reset` from its parts: the driver has dealt with the stream.
struct Local {
    inbox: Arc<Inbox>,
    credit: Arc<SendCredit>,
    /// For streams this side opened: the opener waiting for the answer, and the parts it gets.
    pending_open: Option<(oneshot::Sender<Result<TunnelStream, OpenStreamError>>, TunnelStream)>,
}

impl Local {
    fn new(lanes: &Lanes, stream: StreamId, send_window: u32) -> (Local, TunnelStream) {
        let inbox = Arc::new(Inbox::default());
        let credit = Arc::new(SendCredit::new(send_window));
        let parts = TunnelStream::new(stream, lanes.clone(), inbox.clone(), credit.clone());
        (Local { inbox, credit, pending_open: None }, parts)
    }

    /// Whether this side's opener stopped waiting for the answer.
    fn abandoned(&self) -> bool {
        self.pending_open.as_ref().is_some_and(|(reply, _)| reply.is_closed())
    }

    /// The stream is over for the local side: its pumps hear `inbound`, its opener (if it is
    /// still waiting) `opener`.
    fn end(mut self, inbound: ResetReason, opener: OpenStreamError) {
        self.credit.close();
        self.inbox.end(Inbound::Reset(inbound));
        if let Some((reply, mut parts)) = self.pending_open.take() {
            parts.defuse();
            let _ = reply.send(Err(opener));
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Some((_, parts)) = &mut self.pending_open {
            parts.defuse();
        }
    }
}

/// The current time, for the protocol state (tokio's clock, so paused-time tests move it).
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

struct Driver {
    state: SessionState<Local>,
    open_timeout: std::time::Duration,
    lanes: Lanes,
    move_requested: watch::Sender<Option<String>>,
    incoming: mpsc::UnboundedSender<Box<IncomingStream>>,
    open_streams: Arc<AtomicUsize>,
    slot_freed: Arc<Notify>,
    closer: Closer,
    /// The driver queued a frame for the writer task since it last let the writer run.
    queued_prio: Cell<bool>,
    /// Streams whose inbox holds payloads for the driver to write (`Inbox::flush`) once it has
    /// read what the tunnel holds now, and the messages read since it began holding. A stream is
    /// listed at each payload held unless it was listed last; one listed twice, or flushed on
    /// its own in between (a small payload, a full `writev`, its end), finds nothing at its later
    /// flushes.
    held: Vec<StreamId>,
    reads_holding: usize,
}

/// The most messages the driver reads while it holds payloads before it writes them to the
/// streams' sockets (16 frames of 256 KiB: 4 MiB), so that a held payload waits for at most that
/// much more of the tunnel to be read. Every message counts, not only the held bytes: where other
/// streams keep the tunnel busy with payloads written at once, the driver never runs out of
/// things to read, and a stream with a payload held stalled, its credit waiting with it (a test
/// of four busy uploads caught it in 5 runs of 15).
///
/// Writing each frame as it arrived (256 KiB per `sendto`, where wstunnel's client writes each
/// of its messages whole, 2.8 MiB on average) cost more per byte where the tunnel's processes
/// have a core of their own: with the bench's load on one core and the tunnel on the other, a
/// lone stream moved 3-33% more holding, in 7 pairs of 7, at 3-20% less CPU per MiB; with all of
/// them sharing both cores, no change beyond the noise (ARCHITECTURE.md, Measured, 2026-12-05,
/// twelfth session).
const HOLD_READS: usize = 16;

// A stream's held payloads fit one `writev` (each message delivers at most one payload), so the
// inbox's own limit of `HOLD_PAYLOADS` never has to act.
const _: () = assert!(HOLD_READS <= HOLD_PAYLOADS);

impl Driver {
    async fn run<S>(
        mut self,
        mut ws: WebSocketStream<TunnelSocket<S>>,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut opens: mpsc::UnboundedReceiver<Box<OpenRequest>>,
        mut closed: watch::Receiver<Option<CloseReason>>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let reason = loop {
            let wake = Instant::from_std(self.state.poll_timeout());
            let outcome = tokio::select! {
                biased;
                _ = closed.changed() => break None,
                Some(ctl) = control.recv() => self.on_control(ctl),
                Some(open) = opens.recv() => self.on_open(*open),
                msg = ws.next() => self.on_read(msg).and_then(|()| self.read_while_holding()),
                // Nothing more to read now: what the streams' inboxes hold goes to their sockets.
                () = std::future::ready(()), if !self.held.is_empty() => self.flush_held(),
                _ = tokio::time::sleep_until(wake) => self.on_timeout(),
            };
            let streams = self.state.table().len();
            let before = self.open_streams.swap(streams, Ordering::Relaxed);
            for _ in streams..before {
                self.slot_freed.notify_one();
            }
            if let Err(reason) = outcome {
                break Some(reason);
            }
            if self.queued_prio.take() {
                // What the driver queued (credit above all) goes out only when the writer task
                // runs, and on a busy session the driver would first read on through the bulk
                // frames that had already arrived: a lone upload's grant waited behind two more
                // 256 KiB frames (about 300 µs, timestamps of both processes), and the sender's
                // pump waited on credit a quarter of its time; 15% with the writer let run here.
                // Single stream 0.72-0.75x -> 0.83-0.92x wstunnel, 8 streams 0.78-0.85x ->
                // 0.92-0.96x (`--only single,parallel8,fairness --rounds 3`, two A/B pairs).
                tokio::task::yield_now().await;
            }
        };
        if let Some(reason) = reason {
            self.closer.close(reason);
        }
        self.shutdown();
    }

    fn send_prio(&self, frame: Frame) -> Result<(), CloseReason> {
        self.queued_prio.set(true);
        self.lanes.outbox.send_prio(&frame).map_err(|e| match e {
            SendError::Full => {
                CloseReason::Violation("peer stopped reading; write queue full".into())
            }
            SendError::Closed => CloseReason::Transport("writer stopped".into()),
        })
    }

    fn on_timeout(&mut self) -> Result<(), CloseReason> {
        let due = self.state.handle_timeout(now(), Local::abandoned)?;
        for GivenUp { stream, handle, timed_out } in due.given_up {
            if let Some(local) = handle {
                let opener = match timed_out {
                    true => OpenStreamError::TimedOut(self.open_timeout),
                    false => OpenStreamError::SessionClosed, // nobody is listening
                };
                local.end(ResetReason::Aborted, opener);
            }
            self.send_prio(Frame::Reset { stream, reason: ResetReason::Aborted })?;
        }
        match due.ping {
            Some(ping) => self.send_prio(ping),
            None => Ok(()),
        }
    }

    fn on_read(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), CloseReason> {
        match msg {
            Some(Ok(Message::Binary(b))) => self.on_message(b),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                self.state.heard(now());
                Ok(())
            }
            Some(Ok(Message::Text(_))) => {
                Err(CloseReason::Violation("text message on a tunnel".into()))
            }
            // tungstenite would write its reply at the next read, which never comes: the writer's
            // own Close answers (`Outbox::run_writer`).
            Some(Ok(Message::Close(_))) | None => Err(CloseReason::PeerClosed),
            Some(Err(e)) => Err(CloseReason::Transport(e.to_string())),
        }
    }

    fn on_message(&mut self, bytes: Bytes) -> Result<(), CloseReason> {
        let frame = Frame::decode(bytes).map_err(|e| CloseReason::Violation(e.to_string()))?;
        let action = self.state.handle_frame(frame, now())?;
        self.apply(action)
    }

    fn apply(&mut self, action: Action<Local>) -> Result<(), CloseReason> {
        let table = self.state.table_mut();
        match action {
            Action::None => {}
            Action::Reply(frame) => self.send_prio(frame)?,
            Action::MoveRequested { reason } => {
                self.move_requested.send_replace(Some(reason));
            }
            Action::Accept { stream, target, send_window, relay, trace } => {
                let (local, parts) = Local::new(&self.lanes, stream, send_window);
                match self.incoming.send(Box::new(IncomingStream::new(
                    parts,
                    target,
                    relay.map(|r| *r),
                    trace,
                ))) {
                    Ok(()) => table.attach(stream, local),
                    Err(mpsc::error::SendError(mut unwanted)) => {
                        // Nobody accepts streams on this side.
                        unwanted.defuse();
                        table.remove(stream);
                        self.send_prio(Frame::OpenFailed {
                            stream,
                            reason: OpenFailure::General,
                            message: "this side accepts no streams".into(),
                        })?;
                    }
                }
            }
            Action::Opened { stream, send_window } => {
                let Some(local) = table.handle_mut(stream) else { return Ok(()) };
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
            Action::OpenFailed { reason, message, handle, .. } => {
                if let Some(local) = handle {
                    local.end(ResetReason::Aborted, OpenStreamError::Refused { reason, message });
                }
            }
            Action::Deliver { stream, payload } => {
                match table.handle(stream).map(|l| l.inbox.deliver(payload)) {
                    Some(Ok(Delivered::Held)) => {
                        if self.held.last() != Some(&stream) {
                            self.held.push(stream);
                        }
                    }
                    Some(Ok(Delivered::Flush)) => return self.flush(stream),
                    Some(Err(_)) => return self.reset(stream, ResetReason::Aborted),
                    Some(Ok(Delivered::Queued)) | None => {}
                }
            }
            Action::Credit { stream, increment } => {
                let granted = table.handle(stream).map(|l| l.credit.grant(increment));
                if matches!(granted, Some(Err(_))) {
                    return self.reset(stream, ResetReason::ProtocolViolation);
                }
            }
            Action::RemoteFin { stream, ended } => match ended {
                Some(local) => {
                    local.credit.close();
                    local.inbox.end(Inbound::Fin);
                }
                None => {
                    if let Some(local) = table.handle(stream) {
                        local.inbox.end(Inbound::Fin);
                    }
                }
            },
            Action::RemoteReset { reason, handle, .. } => {
                if let Some(local) = handle {
                    local.end(reason, OpenStreamError::Reset(reason));
                }
            }
            Action::Refuse { reply, local_reset } => {
                if let Some(LocalReset { reason, handle: Some(local), .. }) = local_reset {
                    local.end(reason, OpenStreamError::Reset(reason));
                }
                self.send_prio(reply)?;
            }
        }
        Ok(())
    }

    /// Writes what `stream`'s inbox holds to its socket; what the socket took is consumed now.
    fn flush(&mut self, stream: StreamId) -> Result<(), CloseReason> {
        let table = self.state.table_mut();
        let written = table.handle(stream).map_or(0, |local| local.inbox.flush());
        match written > 0 {
            true => table.consumed(stream, written).map_or(Ok(()), |credit| self.send_prio(credit)),
            false => Ok(()),
        }
    }

    /// One more message read while payloads are held: at [`HOLD_READS`] (the one that began the
    /// hold counted) they are written.
    fn read_while_holding(&mut self) -> Result<(), CloseReason> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.reads_holding += 1;
        match self.reads_holding < HOLD_READS {
            true => Ok(()),
            false => self.flush_held(),
        }
    }

    fn flush_held(&mut self) -> Result<(), CloseReason> {
        let mut held = std::mem::take(&mut self.held);
        self.reads_holding = 0;
        for stream in held.drain(..) {
            self.flush(stream)?;
        }
        // Its allocation is kept for the next burst.
        self.held = held;
        Ok(())
    }

    fn on_open(
        &mut self,
        OpenRequest { target, relay, trace, reply }: OpenRequest,
    ) -> Result<(), CloseReason> {
        let mut reply = Some(reply);
        let lanes = &self.lanes;
        let opened = self.state.open(
            target,
            relay,
            trace,
            |stream| {
                let (mut local, parts) = Local::new(lanes, stream, 0);
                local.pending_open = reply.take().map(|reply| (reply, parts));
                local
            },
            now(),
        );
        match opened {
            Ok((_, frame)) => self.send_prio(frame),
            Err(e) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e.clone().into()));
                }
                match e {
                    // Every later open would fail too, while the session still answered pings:
                    // ended, the endpoint reconnects with a session of fresh ids.
                    ism_tunnel_proto::OpenError::IdsExhausted => {
                        Err(CloseReason::Local("stream ids exhausted: reconnect".into()))
                    }
                    ism_tunnel_proto::OpenError::LimitReached(_) => Ok(()),
                }
            }
        }
    }

    fn on_control(&mut self, ctl: Control) -> Result<(), CloseReason> {
        let table = self.state.table_mut();
        match ctl {
            Control::Accept { stream, reply } => {
                let _ = reply.send(table.accepted(stream));
                Ok(())
            }
            Control::Reject { stream, reason, message } => {
                table.remove(stream);
                self.send_prio(Frame::OpenFailed { stream, reason, message })
            }
            Control::Consumed { stream, len } => match table.consumed(stream, len) {
                Some(frame) => self.send_prio(frame),
                None => Ok(()),
            },
            Control::LocalFin { stream } => {
                if let Some(local) = table.local_finished(stream) {
                    local.credit.close();
                }
                Ok(())
            }
            Control::LocalReset { stream, reason } => self.reset(stream, reason),
        }
    }

    /// Tears a stream down locally and tells the peer.
    fn reset(&mut self, stream: StreamId, reason: ResetReason) -> Result<(), CloseReason> {
        if let Some(local) = self.state.table_mut().remove(stream) {
            local.end(reason, OpenStreamError::Reset(reason));
        }
        self.send_prio(Frame::Reset { stream, reason })
    }

    fn shutdown(&mut self) {
        for (_, local) in self.state.table_mut().drain() {
            if let Some(local) = local {
                local.end(ResetReason::SessionClosed, OpenStreamError::SessionClosed);
            }
        }
        self.open_streams.store(0, Ordering::Relaxed);
        // Whoever waits for a slot learns the session is over (its next open says so).
        self.slot_freed.notify_waiters();
    }
}
