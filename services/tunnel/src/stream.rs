//! One stream of a session, and the pumps that join it to a TCP socket.
//!
//! Bytes never pass through an actor: the upstream pump reads the socket straight into a buffer
//! with room for the frame header and writes it to the tunnel itself when the WebSocket is free
//! (`crate::outbox`); downstream, the driver writes delivered payloads to the socket itself when
//! it takes them, a burst's large ones together (`crate::inbox`), and the stream's task writes
//! what it did not and reports what it consumed, which is what returns credit to the peer.
//!
//! A stream ends as it ended on the far side: a clean end (both sides finished) closes the socket
//! with FIN; anything else (the far side reset, the session died, access was withdrawn, the stream
//! timed out) aborts it with RST (`SO_LINGER` 0), discarding what the socket had not sent yet, so
//! that a scanner sees a truncated transfer as an error and never as a complete page.

use crate::credit::SendCredit;
use crate::error::OpenStreamError;
use crate::inbox::{write_all, Inbound, Inbox};
use crate::lanes::{Control, Lanes};
use crate::outbox::SendError;
use crate::ws_frame::{self, HEADER_ROOM};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use ism_tunnel_proto::frame::write_data_header;
use ism_tunnel_proto::{
    Frame, OpenFailure, Relay, ResetReason, StreamId, TargetAddr, TraceParent, HEADER_LEN,
};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How a spliced stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Both sides finished cleanly.
    Finished,
    /// The peer reset the stream (or its session ended, with `SessionClosed`).
    Reset(ResetReason),
    /// The local socket failed.
    SocketError(String),
    /// This side stopped the stream (access withdrawn): the peer was sent `Reset(Revoked)`.
    Cancelled,
    /// Nothing moved for too long: the peer was sent `Reset(Aborted)`.
    Expired(Expiry),
}

/// Which of a stream's time limits ran out (see [`SpliceOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No byte in either direction for the idle timeout.
    Idle,
    /// One side had finished and the other sent nothing for the half-closed timeout.
    HalfClosed,
}

/// How a splice starts and when it gives up.
#[derive(Debug, Clone, Default)]
pub struct SpliceOptions {
    /// Sent first: bytes the caller already read from the socket (a client that pipelined data
    /// behind its SOCKS request, a rewritten HTTP request).
    pub initial: Bytes,
    /// Ends the stream when cancelled (access withdrawn while the stream runs).
    pub stop: CancellationToken,
    /// Ends a stream on which no byte moves for this long.
    pub idle_timeout: Option<Duration>,
    /// Ends a stream whose one side finished (a scanner that closed and went away) once the other
    /// side has sent nothing for this long, so its slot does not stay taken.
    pub half_closed_timeout: Option<Duration>,
}

impl SpliceOptions {
    /// The options' time limits.
    pub(crate) fn limits(&self) -> QuietLimits {
        QuietLimits { idle: self.idle_timeout, half_closed: self.half_closed_timeout }
    }
}

/// When a quiet stream expires: the rule, with time passed in, applied by a splice's pumps with
/// their count of when a byte last moved and by an exchange (`crate::exchange`) with its caller's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuietLimits {
    /// See [`SpliceOptions::idle_timeout`].
    pub idle: Option<Duration>,
    /// See [`SpliceOptions::half_closed_timeout`].
    pub half_closed: Option<Duration>,
}

impl QuietLimits {
    /// The deadline after the last byte moved at `last`, with one side finished or not; `None`
    /// when no limit applies.
    pub(crate) fn deadline(
        &self,
        last: tokio::time::Instant,
        half_closed: bool,
    ) -> Option<(tokio::time::Instant, Expiry)> {
        let idle = self.idle.map(|d| (last + d, Expiry::Idle));
        let half = self.half_closed.filter(|_| half_closed).map(|d| (last + d, Expiry::HalfClosed));
        match (idle, half) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// Bytes moved by a spliced stream (or an [`exchange`](TunnelStream::exchange)) and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceReport {
    /// Into the tunnel: from the socket, or sent by the exchange.
    pub sent: u64,
    /// Out of the tunnel: to the socket, or received by the exchange.
    pub received: u64,
    pub end: StreamEnd,
}

/// An open stream. Splice it to a socket; dropping it unspliced resets it.
pub struct TunnelStream {
    id: StreamId,
    lanes: Lanes,
    inbox: Arc<Inbox>,
    credit: Arc<SendCredit>,
    /// One permit: this stream's place among the frames waiting to be written (see
    /// [`crate::outbox`]).
    turn: Arc<Semaphore>,
    settled: bool,
    /// Bytes moved so far, kept here so a cancelled splice still reports them.
    sent: u64,
    received: u64,
}

impl TunnelStream {
    pub(crate) fn new(
        id: StreamId,
        lanes: Lanes,
        inbox: Arc<Inbox>,
        credit: Arc<SendCredit>,
    ) -> Self {
        Self {
            id,
            lanes,
            inbox,
            credit,
            turn: Arc::new(Semaphore::new(1)),
            settled: false,
            sent: 0,
            received: 0,
        }
    }

    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The driver already settled this stream: dropping these parts must not reset it again.
    pub(crate) fn defuse(&mut self) {
        self.settled = true;
    }

    /// Joins the stream to `tcp` until both directions are finished or either side fails.
    /// Sets `TCP_NODELAY`: without it, small request/response exchanges stall ~40 ms on
    /// Nagle's algorithm meeting delayed ACKs.
    pub async fn splice(self, tcp: TcpStream) -> SpliceReport {
        self.splice_with(tcp, SpliceOptions::default()).await
    }

    /// Like [`splice`](Self::splice), with `options`: bytes to send first, a stop token, time
    /// limits. A stream that does not finish cleanly is aborted on both sides: the peer gets a
    /// `Reset`, the local socket an RST.
    pub async fn splice_with(mut self, tcp: TcpStream, options: SpliceOptions) -> SpliceReport {
        let _ = tcp.set_nodelay(true);
        let tcp = Arc::new(tcp);
        self.inbox.attach(tcp.clone());
        let limits = options.limits();
        let mut report = tokio::select! {
            r = self.pump(&tcp, options.initial, limits) => r,
            _ = options.stop.cancelled() => SpliceReport { sent: 0, received: 0, end: StreamEnd::Cancelled },
        };
        // The driver lets go of the socket, so that this is its last owner.
        self.inbox.reader_gone();
        let reset = match &report.end {
            StreamEnd::SocketError(_) | StreamEnd::Expired(_) => Some(ResetReason::Aborted),
            StreamEnd::Cancelled => Some(ResetReason::Revoked),
            StreamEnd::Finished | StreamEnd::Reset(_) => None,
        };
        if let Some(reason) = reset {
            let _ = self.lanes.control.send(Control::LocalReset { stream: self.id, reason });
        }
        if report.end != StreamEnd::Finished {
            // An abort, not an end: RST, and what the socket had not sent yet is discarded.
            let _ = tcp.set_zero_linger();
        }
        // The pumps counted as they went (a cancelled splice keeps its counts); the driver's own
        // writes to the socket are the inbox's.
        self.received += self.inbox.direct().0;
        (report.sent, report.received) = (self.sent, self.received);
        self.settled = true;
        report
    }

    /// As [`splice_with`](Self::splice_with), on the runtime the stream's session runs on, with
    /// the socket moved there: where each session lives on a thread of its own (the gateway's
    /// tunnel threads), the stream's bytes then move without waking another thread, which on a
    /// small machine costs more than the bytes' copies. Dropping the returned future stops the
    /// splice, as dropping `splice_with`'s would.
    pub async fn splice_beside_session(
        self,
        tcp: TcpStream,
        options: SpliceOptions,
    ) -> SpliceReport {
        let home = self.lanes.home.clone();
        // Dropping `self` on a failure resets the stream.
        home.run(tcp, move |tcp| self.splice_with(tcp, options)).await.unwrap_or_else(|e| {
            SpliceReport { sent: 0, received: 0, end: StreamEnd::SocketError(e.to_string()) }
        })
    }

    async fn pump(&mut self, tcp: &TcpStream, initial: Bytes, limits: QuietLimits) -> SpliceReport {
        let Self { id, lanes, inbox, credit, turn, sent, received, .. } = self;
        let started = tokio::time::Instant::now();
        // When a byte last moved, in ms since `started`: both pumps write it, the timer reads it
        // (with when the driver last wrote to the socket itself).
        let moved = AtomicU64::new(0);
        let activity = Activity { started, moved: &moved, inbox };
        let end = {
            let up = upstream(*id, tcp, initial, Sending { credit, turn, lanes }, sent, activity);
            let down = downstream(tcp, inbox, &lanes.control, *id, received, activity);
            tokio::pin!(up, down);
            let (mut up_done, mut down_done) = (false, false);
            loop {
                let deadline = limits.deadline(activity.last(), up_done || down_done);
                let expiry = async {
                    match deadline {
                        Some((at, expiry)) => {
                            tokio::time::sleep_until(at).await;
                            expiry
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = &mut up, if !up_done => match r {
                        Ok(()) => up_done = true,
                        Err(end) => break end,
                    },
                    r = &mut down, if !down_done => match r {
                        Ok(()) => down_done = true,
                        Err(end) => break end,
                    },
                    expiry = expiry => {
                        // Bytes may have moved while the timer slept: only a real silence ends it.
                        let due = limits.deadline(activity.last(), up_done || down_done);
                        if due.is_some_and(|(at, _)| at <= tokio::time::Instant::now()) {
                            break StreamEnd::Expired(expiry);
                        }
                    }
                }
                if up_done && down_done {
                    break StreamEnd::Finished;
                }
            }
        };
        SpliceReport { sent: *sent, received: *received, end }
    }

    /// Splits the stream into halves that can be driven at once, for code that produces and
    /// consumes bytes itself rather than through a socket (the diagnostic tool, the gateway's
    /// echo). Halves dropped before both sides finished leave the stream to end with the session.
    pub fn split(mut self) -> (StreamReader, StreamWriter) {
        self.settled = true;
        let reader = StreamReader {
            id: self.id,
            control: self.lanes.control.clone(),
            inbox: self.inbox.clone(),
        };
        let writer = StreamWriter {
            id: self.id,
            lanes: self.lanes.clone(),
            credit: self.credit.clone(),
            turn: self.turn.clone(),
        };
        (reader, writer)
    }

    /// Sends back everything the peer sends until it finishes, then finishes: the gateway's
    /// diagnostic echo. Returns the bytes echoed.
    pub async fn echo(self) -> Result<u64, StreamEnd> {
        let (mut reader, mut writer) = self.split();
        let mut echoed = 0u64;
        while let Some(chunk) = reader.recv().await {
            let chunk = chunk?;
            echoed += chunk.len() as u64;
            writer.send(chunk).await?;
        }
        writer.finish().await?;
        Ok(echoed)
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        if !self.settled {
            self.inbox.reader_gone();
            let _ = self
                .lanes
                .control
                .send(Control::LocalReset { stream: self.id, reason: ResetReason::Aborted });
        }
    }
}

/// When a byte last moved through a splice: the pumps record it, and the driver's own writes to
/// the socket count too.
#[derive(Clone, Copy)]
struct Activity<'a> {
    started: tokio::time::Instant,
    moved: &'a AtomicU64,
    inbox: &'a Inbox,
}

impl Activity<'_> {
    fn moved_now(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.moved.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        let pumped = self.started + Duration::from_millis(self.moved.load(Ordering::Relaxed));
        self.inbox.direct().1.map_or(pumped, |direct| direct.max(pumped))
    }
}

/// What a stream needs to send: credit from the peer, its turn in the queue, the queue.
struct Sending<'a> {
    credit: &'a SendCredit,
    turn: &'a Arc<Semaphore>,
    lanes: &'a Lanes,
}

impl Sending<'_> {
    /// Waits for this stream's turn, then for credit; returns both (the credit: at most `max`
    /// bytes). `None` once the stream is closed.
    async fn reserve(&self, max: usize) -> Option<(OwnedSemaphorePermit, usize)> {
        let turn = self.next_turn().await?;
        Some((turn, self.credit.take(max).await?))
    }

    /// Waits for this stream's turn: its previous frame written. `None` once the stream is closed.
    async fn next_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.turn.clone().acquire_owned().await.ok()
    }

    /// Sends `frame`, copied into a WebSocket frame of its own.
    async fn send(&self, frame: &Frame, turn: OwnedSemaphorePermit) -> Result<(), StreamEnd> {
        session_open(self.lanes.outbox.send_ordered(frame, Some(turn)).await)
    }

    /// Sends what one read put in a [`frame_buffer`], as Data frames of at most a frame's
    /// payload each, none of it copied again. The first frame's headers are written in the room
    /// in front; each later frame's head goes out as a slice of its own before its payload
    /// ([`ws_frame::seal_apart`]). Each frame waits for the stream's turn, as every frame does:
    /// the rest of the read waits here, not in the outbox's queue.
    async fn send_read(
        &self,
        mut buf: BytesMut,
        id: StreamId,
        turn: OwnedSemaphorePermit,
    ) -> Result<(), StreamEnd> {
        let outbox = &self.lanes.outbox;
        let first_end = HEADER_ROOM + HEADER_LEN + self.lanes.max_data;
        let mut rest = match buf.len() > first_end {
            true => buf.split_off(first_end),
            false => BytesMut::new(),
        };
        write_data_header(&mut buf[HEADER_ROOM..], id);
        ws_frame::seal(&mut buf, outbox.masking());
        session_open(outbox.send_sealed(buf.freeze(), Some(turn)).await)?;
        let mut header = [0; HEADER_LEN];
        write_data_header(&mut header, id);
        while !rest.is_empty() {
            let mut payload = rest.split_to(rest.len().min(self.lanes.max_data));
            let turn =
                self.next_turn().await.ok_or(StreamEnd::Reset(ResetReason::SessionClosed))?;
            let head = ws_frame::seal_apart(&header, &mut payload, outbox.masking());
            session_open(outbox.send_sealed_apart(head, payload.freeze(), Some(turn)).await)?;
        }
        Ok(())
    }
}

/// A send's outcome as a stream sees it: a frame the outbox refused means the session is over.
fn session_open(sent: Result<(), SendError>) -> Result<(), StreamEnd> {
    sent.map_err(|_| StreamEnd::Reset(ResetReason::SessionClosed))
}

/// What a pump reads at first and after a short read (see [`next_read`]).
const FIRST_READ: usize = 16 * 1024;

/// Frames' worth a pump may read at once, credit allowing (a stream alone on its session has
/// 8 MiB of it; a stream beside busy ones, 64 KiB): 4 MiB with 256 KiB frames, which glibc's
/// heap thresholds must exceed (`ism_glibc::heap`), or each such read is mapped and faulted in
/// anew. Under BBR, reads of up to 4 MiB took a lone stream's CPU per MiB from 1.03-1.11x
/// wstunnel's to 0.92-0.99x in A/B pairs; 1 MiB frames and 3.5 MiB reads did not (Measured,
/// 2026-12-05, eleventh session). Our reading, not measured: fewer, larger reads of the
/// scanner's socket answer it with fewer ACKs, each of which runs its sender's paced transmit
/// path.
const READ_FRAMES: usize = 16;

/// How much a pump reads next after a read of `last` bytes: twice that, at least [`FIRST_READ`],
/// at most `max` ([`READ_FRAMES`] frames; `max` wins over `FIRST_READ`). A small request (most of
/// a scanner's) then costs a small buffer, and a bulk transfer's reads, which fill theirs, double
/// to the largest read within a few reads. Reading every time into room for the largest frame
/// (256 KiB) made the allocator grow and trim its heap for every small request: 9% of the
/// gateway's CPU in page faults with 50 keep-alive HTTP clients, CPU per request 0.72-0.82x
/// wstunnel's; 0.64-0.72x with this.
fn next_read(last: usize, max: usize) -> usize {
    (last * 2).max(FIRST_READ).min(max)
}

/// Where a frame buffer's payload starts: on a cache-line boundary.
const PAYLOAD_ALIGN: usize = 64;

/// An empty Data frame of room `payload`, with room for its WebSocket header ([`HEADER_ROOM`])
/// and its own header's bytes in place, whose payload starts on a 64-byte boundary. The kernel
/// copies a socket's bytes into it with `rep movsb`, which on AMD CPUs with FSRM is several times
/// slower when the destination lies 1-15 bytes past the source modulo 64; behind a 5-byte header,
/// one payload in four (malloc places buffers at 16-byte steps) started 5 bytes past a boundary,
/// squarely in that band for an aligned sender. On the boundary, the copy is fast whenever the
/// sender's bytes lie on one in the kernel's buffers (ARCHITECTURE.md, Measured, 2026-12-04,
/// sixth session). The slack makes `freeze` allocate the small shared header `Bytes` needs for a
/// buffer it cannot take whole.
fn frame_buffer(payload: usize) -> BytesMut {
    const HEADERS: usize = HEADER_ROOM + HEADER_LEN;
    let mut buf = BytesMut::with_capacity(PAYLOAD_ALIGN + HEADERS + payload);
    let pad = (buf.as_ptr() as usize + HEADERS).wrapping_neg() % PAYLOAD_ALIGN;
    // Moved past, not split off: the buffer stays one allocation.
    buf.put_bytes(0, pad);
    buf.advance(pad);
    buf.put_bytes(0, HEADERS);
    buf
}

/// Socket -> tunnel. Waits for the socket to be readable *before* taking its turn, credit and a
/// buffer, so an idle stream holds none of them.
async fn upstream(
    id: StreamId,
    rd: &TcpStream,
    mut initial: Bytes,
    out: Sending<'_>,
    sent: &mut u64,
    activity: Activity<'_>,
) -> Result<(), StreamEnd> {
    let closed = || StreamEnd::Reset(ResetReason::SessionClosed);
    while !initial.is_empty() {
        let Some((turn, allowed)) = out.reserve(initial.len().min(out.lanes.max_data)).await else {
            return Err(closed());
        };
        let chunk = initial.split_to(allowed);
        out.send(&Frame::Data { stream: id, payload: chunk }, turn).await?;
        *sent += allowed as u64;
    }
    let max_read = out.lanes.max_data * READ_FRAMES;
    let mut want = next_read(0, max_read);
    loop {
        rd.readable().await.map_err(socket_error)?;
        let Some((turn, allowed)) = out.reserve(want).await else {
            return Err(closed());
        };
        let mut buf = frame_buffer(allowed);
        let n = match read_some(rd, &mut (&mut buf).limit(allowed)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = out.credit.grant(allowed as u32);
                continue;
            }
            Err(e) => return Err(socket_error(e)),
        };
        if n < allowed {
            let _ = out.credit.grant((allowed - n) as u32);
        }
        want = next_read(n, max_read);
        if n == 0 {
            out.send(&Frame::Fin { stream: id }, turn).await?;
            let _ = out.lanes.control.send(Control::LocalFin { stream: id });
            return Ok(());
        }
        out.send_read(buf, id, turn).await?;
        *sent += n as u64;
        activity.moved_now();
    }
}

/// Tunnel -> socket: what the driver could not write to the socket itself.
async fn downstream(
    wr: &TcpStream,
    inbox: &Inbox,
    control: &mpsc::UnboundedSender<Control>,
    id: StreamId,
    received: &mut u64,
    activity: Activity<'_>,
) -> Result<(), StreamEnd> {
    loop {
        match inbox.next().await {
            Inbound::Data(bytes) => {
                activity.moved_now();
                write_all(wr, &bytes).await.map_err(socket_error)?;
                inbox.written();
                *received += bytes.len() as u64;
                let _ = control.send(Control::Consumed { stream: id, len: bytes.len() });
            }
            Inbound::Fin => {
                // Half-close: the target sees EOF, and may still answer.
                let _ = rustix::net::shutdown(wr, rustix::net::Shutdown::Write);
                inbox.written();
                return Ok(());
            }
            Inbound::Reset(reason) => return Err(StreamEnd::Reset(reason)),
        }
    }
}

/// Reads what the socket holds into `buf`, as `try_read_buf` does, and after a short read marks
/// the socket not readable, as tokio's own `poll_read` does: a stream socket that returned fewer
/// bytes than asked for had no more queued, and new bytes raise a new readiness event. Otherwise
/// the pump's next turn took credit, a frame buffer and a `recv` only to learn `WouldBlock`: one
/// system call in three on each side of a keep-alive request (see "Measured" in ARCHITECTURE.md).
fn read_some(socket: &TcpStream, buf: &mut impl BufMut) -> io::Result<usize> {
    let room = buf.remaining_mut();
    let mut short = None;
    // `try_io` clears the readiness it saw when its closure reports `WouldBlock`; the bytes a
    // short read got are handed out beside that report.
    let read = socket.try_io(tokio::io::Interest::READABLE, || match socket.try_read_buf(buf)? {
        n if n > 0 && n < room => {
            short = Some(n);
            Err(io::ErrorKind::WouldBlock.into())
        }
        n => Ok(n),
    });
    match (read, short) {
        (Err(_), Some(n)) => Ok(n),
        (read, _) => read,
    }
}

fn socket_error(e: io::Error) -> StreamEnd {
    StreamEnd::SocketError(e.to_string())
}

/// The receiving half of a split stream.
pub struct StreamReader {
    id: StreamId,
    control: mpsc::UnboundedSender<Control>,
    inbox: Arc<Inbox>,
}

impl StreamReader {
    /// The next bytes from the peer; `None` once the peer finished its side.
    pub async fn recv(&mut self) -> Option<Result<Bytes, StreamEnd>> {
        let item = self.inbox.next().await;
        self.inbox.written();
        match item {
            Inbound::Data(b) => {
                let _ = self.control.send(Control::Consumed { stream: self.id, len: b.len() });
                Some(Ok(b))
            }
            Inbound::Fin => None,
            Inbound::Reset(r) => Some(Err(StreamEnd::Reset(r))),
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.inbox.reader_gone();
    }
}

/// The sending half of a split stream.
pub struct StreamWriter {
    id: StreamId,
    lanes: Lanes,
    credit: Arc<SendCredit>,
    turn: Arc<Semaphore>,
}

impl StreamWriter {
    fn sending(&self) -> Sending<'_> {
        Sending { credit: &self.credit, turn: &self.turn, lanes: &self.lanes }
    }

    /// Sends `data`, waiting for its turn and credit as needed.
    pub async fn send(&mut self, mut data: Bytes) -> Result<(), StreamEnd> {
        let out = self.sending();
        while !data.is_empty() {
            let (turn, n) = out
                .reserve(data.len().min(self.lanes.max_data))
                .await
                .ok_or(StreamEnd::Reset(ResetReason::SessionClosed))?;
            let payload = data.split_to(n);
            out.send(&Frame::Data { stream: self.id, payload }, turn).await?;
        }
        Ok(())
    }

    /// Ends this side (half-close): the peer's reader sees the end.
    pub async fn finish(&mut self) -> Result<(), StreamEnd> {
        let closed = || StreamEnd::Reset(ResetReason::SessionClosed);
        let turn = self.turn.clone().acquire_owned().await.map_err(|_| closed())?;
        session_open(
            self.lanes.outbox.send_ordered(&Frame::Fin { stream: self.id }, Some(turn)).await,
        )?;
        let _ = self.lanes.control.send(Control::LocalFin { stream: self.id });
        Ok(())
    }

    /// Ends the whole stream at once, both directions, telling the peer why: for a caller that
    /// moves the bytes itself and must give up (its socket failed, access was withdrawn), since
    /// dropping the halves leaves the stream open until the session ends.
    pub fn reset(self, reason: ResetReason) {
        let _ = self.lanes.control.send(Control::LocalReset { stream: self.id, reason });
    }
}

/// A stream the peer asked this side to open. Accept it once the target is connected, or reject
/// it with the reason; dropping it rejects it.
pub struct IncomingStream {
    parts: Option<TunnelStream>,
    target: TargetAddr,
    relay: Option<Relay>,
    trace: Option<TraceParent>,
}

impl IncomingStream {
    pub(crate) fn new(
        parts: TunnelStream,
        target: TargetAddr,
        relay: Option<Relay>,
        trace: Option<TraceParent>,
    ) -> Self {
        Self { parts: Some(parts), target, relay, trace }
    }

    /// The opener's span, for this side's work on the stream to join the opener's trace.
    pub fn trace(&self) -> Option<TraceParent> {
        self.trace
    }

    /// For a stream relayed between gateway nodes: whom it is for.
    pub fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref()
    }

    pub fn target(&self) -> &TargetAddr {
        &self.target
    }

    pub fn id(&self) -> StreamId {
        self.parts.as_ref().map(|p| p.id).unwrap_or(StreamId(0))
    }

    /// The driver already refused this stream: dropping it must not refuse it again.
    pub(crate) fn defuse(&mut self) {
        if let Some(mut parts) = self.parts.take() {
            parts.defuse();
        }
    }

    /// Confirms the stream to the peer. The `OpenOk` goes through the ordered queue, so it
    /// reaches the peer before any of this stream's data.
    pub async fn accept(mut self) -> Result<TunnelStream, OpenStreamError> {
        let parts = self.parts.take().expect("parts present until accepted or rejected");
        let (reply, rx) = oneshot::channel();
        parts
            .lanes
            .control
            .send(Control::Accept { stream: parts.id, reply })
            .map_err(|_| OpenStreamError::SessionClosed)?;
        let ok = rx.await.ok().flatten().ok_or(OpenStreamError::SessionClosed)?;
        // In order with the stream's data: the first data frame waits for this one's turn.
        let turn =
            parts.turn.clone().acquire_owned().await.map_err(|_| OpenStreamError::SessionClosed)?;
        parts
            .lanes
            .outbox
            .send_ordered(&ok, Some(turn))
            .await
            .map_err(|_| OpenStreamError::SessionClosed)?;
        Ok(parts)
    }

    /// Tells the peer why the stream could not be opened.
    pub fn reject(mut self, reason: OpenFailure, message: impl Into<String>) {
        if let Some(mut parts) = self.parts.take() {
            parts.settled = true;
            let _ = parts.lanes.control.send(Control::Reject {
                stream: parts.id,
                reason,
                message: message.into(),
            });
        }
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if let Some(mut parts) = self.parts.take() {
            parts.settled = true;
            let _ = parts.lanes.control.send(Control::Reject {
                stream: parts.id,
                reason: OpenFailure::General,
                message: "stream dropped before it was answered".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn a_quiet_stream_expires_at_the_nearer_limit_that_applies() {
        let s = Duration::from_secs(1);
        let last = Instant::now();
        let both = QuietLimits { idle: Some(300 * s), half_closed: Some(30 * s) };
        assert_eq!(both.deadline(last, false), Some((last + 300 * s, Expiry::Idle)));
        assert_eq!(both.deadline(last, true), Some((last + 30 * s, Expiry::HalfClosed)));
        let idle_only = QuietLimits { idle: Some(300 * s), half_closed: None };
        assert_eq!(idle_only.deadline(last, true), Some((last + 300 * s, Expiry::Idle)));
        let half_only = QuietLimits { idle: None, half_closed: Some(30 * s) };
        assert_eq!(half_only.deadline(last, false), None, "both sides open: no limit");
        let short_idle = QuietLimits { idle: Some(10 * s), half_closed: Some(30 * s) };
        assert_eq!(short_idle.deadline(last, true), Some((last + 10 * s, Expiry::Idle)));
    }

    #[test]
    fn a_frame_buffers_payload_starts_on_a_cache_line_with_room_for_both_headers_and_payload() {
        for payload in [1, 100, 16 * 1024, 64 * 1024 + 3] {
            let buf = frame_buffer(payload);
            let headers = HEADER_ROOM + HEADER_LEN;
            assert_eq!(buf.len(), headers);
            assert_eq!((buf.as_ptr() as usize + headers) % PAYLOAD_ALIGN, 0);
            assert!(buf.capacity() >= headers + payload, "{} for {payload}", buf.capacity());
        }
    }

    #[test]
    fn reads_start_small_double_while_full_and_never_exceed_a_frame() {
        const KIB: usize = 1024;
        let frame = 256 * KIB;
        assert_eq!(next_read(0, frame), 16 * KIB, "first read");
        assert_eq!(next_read(33, frame), 16 * KIB, "after a small request");
        let mut want = next_read(0, frame);
        let mut sizes = Vec::new();
        while want < frame {
            want = next_read(want, frame);
            sizes.push(want / KIB);
        }
        assert_eq!(sizes, [32, 64, 128, 256], "a bulk transfer's reads, each filling its buffer");
        assert_eq!(next_read(frame, frame), frame, "capped at a frame");
        assert_eq!(next_read(0, 8 * KIB), 8 * KIB, "a frame below the first read wins");
    }

    /// Whether `socket` says it is readable without waiting.
    async fn readable_now(socket: &TcpStream) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(socket.poll_read_ready(cx).is_ready()))
            .await
    }

    /// Reads with room for `room` bytes.
    fn read_at_most(socket: &TcpStream, room: usize) -> io::Result<Bytes> {
        let mut buf = BytesMut::with_capacity(room);
        read_some(socket, &mut (&mut buf).limit(room))?;
        Ok(buf.freeze())
    }

    #[tokio::test]
    async fn after_a_short_read_a_socket_waits_for_new_bytes_and_still_sees_them_and_the_end() {
        use tokio::io::AsyncWriteExt;
        let patience = Duration::from_secs(60);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        peer.write_all(b"hello").await.unwrap();
        socket.readable().await.unwrap();
        assert_eq!(read_at_most(&socket, 3).unwrap(), "hel", "a full read");
        assert!(readable_now(&socket).await, "a read that filled its room may have left bytes");
        assert_eq!(read_at_most(&socket, 64).unwrap(), "lo", "a short read");
        assert!(!readable_now(&socket).await, "after a short read the socket waits");
        peer.write_all(b"more").await.unwrap();
        tokio::time::timeout(patience, socket.readable()).await.unwrap().unwrap();
        assert_eq!(read_at_most(&socket, 64).unwrap(), "more", "new bytes wake it");
        peer.write_all(b"bye").await.unwrap();
        peer.shutdown().await.unwrap();
        tokio::time::timeout(patience, socket.readable()).await.unwrap().unwrap();
        assert_eq!(read_at_most(&socket, 64).unwrap(), "bye");
        tokio::time::timeout(patience, socket.readable()).await.unwrap().unwrap();
        assert_eq!(read_at_most(&socket, 64).unwrap(), "", "the end after a short read");
    }
}
