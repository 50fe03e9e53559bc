//! The session's way out: one WebSocket that every sender shares, written through the socket's
//! writing half ([`crate::socket`]) as whole frames the senders built ([`crate::ws_frame`]).
//!
//! A stream's pump that finds the WebSocket free writes its frame itself, after whatever was
//! queued before it, lets the other tasks of the runtime's tick run, writes what they queued
//! meanwhile and flushes once: no task hop between reading a socket and writing the tunnel,
//! which on a two-core machine costs more than the copy and the encryption (each cross-thread
//! wake-up is tens of microseconds), and many streams' frames in one write. A sender that finds
//! the WebSocket busy queues its frame and leaves it to whoever writes next, or to the writer
//! task, which a queued frame wakes. Two queues: frames that may overtake data (credit, resets,
//! pings) go first; frames that must stay in order with their stream's bytes (`OpenOk`, `Data`,
//! `Fin`) follow. A stream has at most one frame queued (its *turn*, held until the frame is
//! written), so a small request waits behind at most one frame of each other stream, never
//! behind all of a bulk transfer's.
//!
//! The driver (which reads the WebSocket) only ever queues: it must never wait on writing, or
//! two peers that both stop reading while their writes block would deadlock.

use crate::error::CloseReason;
use crate::socket::{Replies, SocketWriter};
use crate::ws_frame::{self, Masking};
use bytes::{Buf, Bytes};
use ism_tunnel_proto::Frame;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedMutexGuard, OwnedSemaphorePermit};

/// Priority frames queued at once beyond which the peer is taken to have stopped reading: they
/// are small and few (credit, resets, pongs) unless the other side is gone.
const PRIO_LIMIT: usize = 4096;

/// Frames handed to one vectored write. rustls gathers them into records whatever their number;
/// this only bounds the array on the stack.
const SLICES_PER_WRITE: usize = 64;

/// A WebSocket frame that must stay in order with its stream's other frames, with the stream's
/// turn.
struct Ordered {
    frame: Bytes,
    /// Held, not read: dropping it (once the frame is written) gives the stream its turn back.
    _turn: Option<OwnedSemaphorePermit>,
}

/// Whole WebSocket frames waiting for whoever writes next.
#[derive(Default)]
struct Queued {
    prio: VecDeque<Bytes>,
    ordered: VecDeque<Ordered>,
}

/// Why a frame could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The session is over.
    Closed,
    /// Priority frames piled up: the peer stopped reading.
    Full,
}

/// How long the session's Close may take to go out: a peer that stopped reading must not hold
/// the writer task, and the socket, for ever.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Wakes the writer task if dropped before [`done`](Unfinished::done): a sender whose future is
/// dropped mid-write leaves frames in the writer's batch (the first perhaps partly written, the
/// others holding their streams' turns), which only the next write finishes.
struct Unfinished<'a>(Option<&'a Notify>);

impl Unfinished<'_> {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(writer_task) = self.0 {
            writer_task.notify_one();
        }
    }
}

/// The socket's writing half and the frames taken from the queues to go out through it.
pub(crate) struct Writer {
    io: Pin<Box<dyn AsyncWrite + Send>>,
    /// Frames not yet wholly written, in order; the first may be partly written.
    batch: VecDeque<Bytes>,
    /// The turns of the ordered frames in `batch`, given back once it is written.
    turns: Vec<OwnedSemaphorePermit>,
    /// The session's Close went out, or writing failed: nothing more is written.
    done: bool,
}

impl Writer {
    fn push(&mut self, frame: Bytes, turn: Option<OwnedSemaphorePermit>) {
        self.batch.push_back(frame);
        self.turns.extend(turn);
    }

    /// One vectored write of the batch's first frames. The slices live only within the call: kept
    /// across an await, they sat in every pump's future, idle streams' included (1 KiB each; a
    /// held connection cost 1.7 KiB more at the gateway and the agent together, measured).
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
        let n = self.batch.len().min(SLICES_PER_WRITE);
        for (slice, frame) in slices.iter_mut().zip(&self.batch) {
            *slice = IoSlice::new(frame);
        }
        self.io.as_mut().poll_write_vectored(cx, &slices[..n])
    }

    /// Writes the whole batch, many frames per vectored write (rustls fills its records across
    /// them), and gives the streams their turns back, also when writing fails: they then learn
    /// at their next send that the session is over. Not flushed.
    async fn write_batch(&mut self) -> io::Result<()> {
        let written = self.write_frames().await;
        self.turns.clear();
        if written.is_err() {
            self.batch.clear();
            self.done = true;
        }
        written
    }

    async fn write_frames(&mut self) -> io::Result<()> {
        while !self.batch.is_empty() {
            let mut written = std::future::poll_fn(|cx| self.poll_write_some(cx)).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while let Some(front) = self.batch.front_mut() {
                if front.len() > written {
                    front.advance(written);
                    break;
                }
                written -= front.len();
                self.batch.pop_front();
            }
        }
        Ok(())
    }
}

pub(crate) struct Outbox {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    queued: Mutex<Queued>,
    /// Wakes the writer task when a frame is queued.
    queued_frame: Notify,
    replies: Arc<Replies>,
    masking: Masking,
    closed: tokio::sync::watch::Sender<Option<CloseReason>>,
}

impl Outbox {
    /// An outbox writing to `socket`, and the writer's guard for the writer task, which writes
    /// the session's first frame (a greeting) before anyone else can write.
    pub fn new(
        socket: SocketWriter,
        closed: tokio::sync::watch::Sender<Option<CloseReason>>,
    ) -> (Arc<Outbox>, OwnedMutexGuard<Writer>) {
        let SocketWriter { io, replies, masking } = socket;
        let writer = Writer { io, batch: VecDeque::new(), turns: Vec::new(), done: false };
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let first = match writer.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => unreachable!("a new mutex is free"),
        };
        let outbox = Outbox {
            writer,
            queued: Mutex::default(),
            queued_frame: Notify::new(),
            replies,
            masking,
            closed,
        };
        (Arc::new(outbox), first)
    }

    /// Whether this side masks its frames: a buffer sealed for this outbox must be.
    pub fn masking(&self) -> Masking {
        self.masking
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Queues a frame that may overtake data; the writer sends it. Never waits.
    pub fn send_prio(&self, frame: &Frame) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        {
            let mut q = self.queued();
            if q.prio.len() >= PRIO_LIMIT {
                return Err(SendError::Full);
            }
            q.prio.push_back(ws_frame::wrap(frame, self.masking));
        }
        self.queued_frame.notify_one();
        Ok(())
    }

    /// As [`send_sealed`](Self::send_sealed), for a frame not yet in a WebSocket frame (copied
    /// into one: Fin, OpenOk, data a caller hands over).
    pub async fn send_ordered(
        &self,
        frame: &Frame,
        turn: Option<OwnedSemaphorePermit>,
    ) -> Result<(), SendError> {
        self.send_sealed(ws_frame::wrap(frame, self.masking), turn).await
    }

    /// Sends a whole WebSocket frame that must stay in order with its stream's other frames:
    /// written at once (after what was queued before it) if the socket is free, else queued with
    /// the stream's `turn` for whoever writes next.
    pub async fn send_sealed(
        &self,
        frame: Bytes,
        turn: Option<OwnedSemaphorePermit>,
    ) -> Result<(), SendError> {
        self.send_parts(None, frame, turn).await
    }

    /// As [`send_sealed`](Self::send_sealed), for a frame in two parts: its head
    /// ([`ws_frame::seal_apart`]), then its payload, written one after the other.
    pub async fn send_sealed_apart(
        &self,
        head: Bytes,
        payload: Bytes,
        turn: Option<OwnedSemaphorePermit>,
    ) -> Result<(), SendError> {
        self.send_parts(Some(head), payload, turn).await
    }

    /// Sends `head` (if any) and `frame` next to each other, `turn` held until both are written.
    async fn send_parts(
        &self,
        head: Option<Bytes>,
        frame: Bytes,
        turn: Option<OwnedSemaphorePermit>,
    ) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let Ok(mut writer) = self.writer.try_lock() else {
            let mut q = self.queued();
            q.ordered.extend(head.map(|frame| Ordered { frame, _turn: None }));
            q.ordered.push_back(Ordered { frame, _turn: turn });
            drop(q);
            self.queued_frame.notify_one();
            return Ok(());
        };
        if writer.done {
            return Err(SendError::Closed);
        }
        let unfinished = Unfinished(Some(&self.queued_frame));
        let written = async {
            self.take_queued(&mut writer);
            if let Some(head) = head {
                writer.push(head, None);
            }
            writer.push(frame, turn);
            writer.write_batch().await?;
            // The flush waits for the other tasks this tick has made ready: their frames, queued
            // meanwhile, go out in the same flush (one write, TLS records filled, one wake-up of
            // the peer) instead of a write each. Measured with 50 keep-alive HTTP clients on one
            // endpoint: 0.77-0.91x wstunnel's requests per second without, 0.99-1.14x with.
            tokio::task::yield_now().await;
            self.write_out(&mut writer).await
        }
        .await;
        unfinished.done();
        written.map_err(|e| self.failed(e))
    }

    /// Moves everything queued into the writer's batch: what tungstenite wrote since (pongs; it
    /// writes its reply to a Close only at the read after it returned the Close, which the driver
    /// never makes, so the writer's own Close answers), then priority frames, then ordered ones.
    fn take_queued(&self, writer: &mut Writer) {
        if let Some(replies) = self.replies.take() {
            writer.push(replies, None);
        }
        let mut q = self.queued();
        while let Some(frame) = q.prio.pop_front() {
            writer.push(frame, None);
        }
        while let Some(Ordered { frame, _turn }) = q.ordered.pop_front() {
            writer.push(frame, _turn);
        }
    }

    /// Writes the batch, then everything queued, and flushes.
    async fn write_out(&self, writer: &mut Writer) -> io::Result<()> {
        self.take_queued(writer);
        writer.write_batch().await?;
        writer.io.flush().await
    }

    fn failed(&self, e: io::Error) -> SendError {
        close(&self.closed, CloseReason::Transport(e.to_string()));
        SendError::Closed
    }

    /// The writer task: sends `greeting` first (holding the writer since the session was made),
    /// then whatever senders and tungstenite queue while the socket is busy, until the session
    /// closes; then a Close frame.
    pub async fn run_writer(
        self: Arc<Self>,
        mut first: OwnedMutexGuard<Writer>,
        greeting: Option<Frame>,
    ) {
        let mut closed = self.closed.subscribe();
        if let Some(greeting) = greeting {
            first.push(ws_frame::wrap(&greeting, self.masking), None);
            if let Err(e) = self.write_out(&mut first).await {
                self.failed(e);
            }
        }
        drop(first);
        loop {
            tokio::select! {
                biased;
                _ = closed.wait_for(|c| c.is_some()) => break,
                _ = self.queued_frame.notified() => {}
                _ = self.replies.ready.notified() => {}
            }
            let mut writer = self.writer.lock().await;
            if writer.done {
                break;
            }
            if let Err(e) = self.write_out(&mut writer).await {
                self.failed(e);
                break;
            }
        }
        let mut writer = self.writer.lock().await;
        if !writer.done {
            // After what a sender left partly written (its future dropped mid-write), if anything.
            writer.push(ws_frame::close(self.masking), None);
            writer.done = true;
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                writer.write_batch().await?;
                writer.io.flush().await
            })
            .await;
        }
        // What waits in the queues will never be sent: give the streams their turns back.
        *self.queued() = Queued::default();
    }
}

/// Records the first close reason; later ones are ignored.
pub(crate) fn close(closed: &tokio::sync::watch::Sender<Option<CloseReason>>, reason: CloseReason) {
    closed.send_if_modified(|r| {
        if r.is_none() {
            *r = Some(reason);
            true
        } else {
            false
        }
    });
}
