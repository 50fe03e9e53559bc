//! One stream of a session, and the pumps that join it to a TCP socket.
//!
//! Bytes never pass through an actor or a lock: the upstream pump reads the socket straight into a
//! buffer with room for the frame header and hands it to the writer; the downstream pump writes
//! delivered payloads to the socket and reports what it consumed, which is what returns credit to
//! the peer.

use crate::credit::SendCredit;
use crate::error::OpenStreamError;
use crate::lanes::{Control, Lanes, Outgoing};
use bytes::{BufMut, Bytes, BytesMut};
use ism_tunnel_proto::frame::write_data_header;
use ism_tunnel_proto::{
    Frame, OpenFailure, ResetReason, StreamId, TargetAddr, HEADER_LEN, MAX_DATA_LEN,
};
use std::io;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// What the driver hands a stream's downstream pump.
pub(crate) enum Inbound {
    Data(Bytes),
    Fin,
    Reset(ResetReason),
}

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
}

/// Bytes moved by a spliced stream and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceReport {
    /// Socket -> tunnel.
    pub sent: u64,
    /// Tunnel -> socket.
    pub received: u64,
    pub end: StreamEnd,
}

/// An open stream. Splice it to a socket; dropping it unspliced resets it.
pub struct TunnelStream {
    id: StreamId,
    lanes: Lanes,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    credit: Arc<SendCredit>,
    /// One permit: this stream's place in the ordered queue (see [`Outgoing`]).
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
        inbound: mpsc::UnboundedReceiver<Inbound>,
        credit: Arc<SendCredit>,
    ) -> Self {
        Self {
            id,
            lanes,
            inbound,
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
        self.splice_with(tcp, Bytes::new(), CancellationToken::new()).await
    }

    /// Like [`splice`](Self::splice), sending `initial` first (bytes the caller already read from
    /// the socket: a client that pipelined data behind its SOCKS request, say), and ending the
    /// stream when `cancel` fires (access withdrawn while the stream runs).
    pub async fn splice_with(
        mut self,
        tcp: TcpStream,
        initial: Bytes,
        cancel: CancellationToken,
    ) -> SpliceReport {
        let _ = tcp.set_nodelay(true);
        let (rd, wr) = tcp.into_split();
        let mut report = tokio::select! {
            r = self.pump(rd, wr, initial) => r,
            _ = cancel.cancelled() => SpliceReport { sent: 0, received: 0, end: StreamEnd::Cancelled },
        };
        let reset = match &report.end {
            StreamEnd::SocketError(_) => Some(ResetReason::Aborted),
            StreamEnd::Cancelled => Some(ResetReason::Revoked),
            StreamEnd::Finished | StreamEnd::Reset(_) => None,
        };
        if let Some(reason) = reset {
            let _ = self.lanes.control.send(Control::LocalReset { stream: self.id, reason });
        }
        (report.sent, report.received) =
            (report.sent.max(self.sent), report.received.max(self.received));
        self.settled = true;
        report
    }

    async fn pump(
        &mut self,
        rd: OwnedReadHalf,
        wr: OwnedWriteHalf,
        initial: Bytes,
    ) -> SpliceReport {
        let Self { id, lanes, inbound, credit, turn, sent, received, .. } = self;
        let end = {
            let up = upstream(*id, rd, initial, Sending { credit, turn, lanes }, sent);
            let down = downstream(*id, wr, inbound, &lanes.control, received);
            tokio::pin!(up, down);
            let (mut up_done, mut down_done) = (false, false);
            loop {
                tokio::select! {
                    r = &mut up, if !up_done => match r {
                        Ok(()) => up_done = true,
                        Err(end) => break end,
                    },
                    r = &mut down, if !down_done => match r {
                        Ok(()) => down_done = true,
                        Err(end) => break end,
                    },
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
        let (_, inbound) = mpsc::unbounded_channel();
        let inbound = std::mem::replace(&mut self.inbound, inbound);
        let reader = StreamReader { id: self.id, control: self.lanes.control.clone(), inbound };
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
            let _ = self
                .lanes
                .control
                .send(Control::LocalReset { stream: self.id, reason: ResetReason::Aborted });
        }
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
        let turn = self.turn.clone().acquire_owned().await.ok()?;
        Some((turn, self.credit.take(max).await?))
    }

    async fn send(&self, frame: Bytes, turn: OwnedSemaphorePermit) -> Result<(), StreamEnd> {
        self.lanes
            .ordered
            .send(Outgoing { frame, _turn: Some(turn) })
            .await
            .map_err(|_| StreamEnd::Reset(ResetReason::SessionClosed))
    }
}

/// Socket -> tunnel. Waits for the socket to be readable *before* taking its turn, credit and a
/// buffer, so an idle stream holds none of them.
async fn upstream(
    id: StreamId,
    rd: OwnedReadHalf,
    mut initial: Bytes,
    out: Sending<'_>,
    sent: &mut u64,
) -> Result<(), StreamEnd> {
    let closed = || StreamEnd::Reset(ResetReason::SessionClosed);
    while !initial.is_empty() {
        let Some((turn, allowed)) = out.reserve(initial.len().min(MAX_DATA_LEN)).await else {
            return Err(closed());
        };
        let chunk = initial.split_to(allowed);
        out.send(Frame::Data { stream: id, payload: chunk }.encode(), turn).await?;
        *sent += allowed as u64;
    }
    loop {
        rd.readable().await.map_err(socket_error)?;
        let Some((turn, allowed)) = out.reserve(MAX_DATA_LEN).await else {
            return Err(closed());
        };
        let mut buf = BytesMut::with_capacity(HEADER_LEN + allowed);
        buf.put_bytes(0, HEADER_LEN);
        let n = match rd.try_read_buf(&mut (&mut buf).limit(allowed)) {
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
        if n == 0 {
            out.send(Frame::Fin { stream: id }.encode(), turn).await?;
            let _ = out.lanes.control.send(Control::LocalFin { stream: id });
            return Ok(());
        }
        write_data_header(&mut buf, id);
        out.send(buf.freeze(), turn).await?;
        *sent += n as u64;
    }
}

/// Tunnel -> socket.
async fn downstream(
    id: StreamId,
    mut wr: OwnedWriteHalf,
    inbound: &mut mpsc::UnboundedReceiver<Inbound>,
    control: &mpsc::UnboundedSender<Control>,
    received: &mut u64,
) -> Result<(), StreamEnd> {
    loop {
        match inbound.recv().await {
            Some(Inbound::Data(bytes)) => {
                wr.write_all(&bytes).await.map_err(socket_error)?;
                *received += bytes.len() as u64;
                let _ = control.send(Control::Consumed { stream: id, len: bytes.len() });
            }
            Some(Inbound::Fin) => {
                // Half-close: the target sees EOF, and may still answer.
                let _ = wr.shutdown().await;
                return Ok(());
            }
            Some(Inbound::Reset(reason)) => return Err(StreamEnd::Reset(reason)),
            None => return Err(StreamEnd::Reset(ResetReason::SessionClosed)),
        }
    }
}

fn socket_error(e: io::Error) -> StreamEnd {
    StreamEnd::SocketError(e.to_string())
}

/// The receiving half of a split stream.
pub struct StreamReader {
    id: StreamId,
    control: mpsc::UnboundedSender<Control>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
}

impl StreamReader {
    /// The next bytes from the peer; `None` once the peer finished its side.
    pub async fn recv(&mut self) -> Option<Result<Bytes, StreamEnd>> {
        match self.inbound.recv().await {
            Some(Inbound::Data(b)) => {
                let _ = self.control.send(Control::Consumed { stream: self.id, len: b.len() });
                Some(Ok(b))
            }
            Some(Inbound::Fin) => None,
            Some(Inbound::Reset(r)) => Some(Err(StreamEnd::Reset(r))),
            None => Some(Err(StreamEnd::Reset(ResetReason::SessionClosed))),
        }
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
                .reserve(data.len().min(MAX_DATA_LEN))
                .await
                .ok_or(StreamEnd::Reset(ResetReason::SessionClosed))?;
            let payload = data.split_to(n);
            out.send(Frame::Data { stream: self.id, payload }.encode(), turn).await?;
        }
        Ok(())
    }

    /// Ends this side (half-close): the peer's reader sees the end.
    pub async fn finish(&mut self) -> Result<(), StreamEnd> {
        self.lanes
            .ordered
            .send(Frame::Fin { stream: self.id }.encode().into())
            .await
            .map_err(|_| StreamEnd::Reset(ResetReason::SessionClosed))?;
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
}

impl IncomingStream {
    pub(crate) fn new(parts: TunnelStream, target: TargetAddr) -> Self {
        Self { parts: Some(parts), target }
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
        parts
            .lanes
            .ordered
            .send(ok.encode().into())
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
