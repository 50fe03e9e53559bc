//! The session's way out: one WebSocket that every sender shares.
//!
//! A stream's pump that finds the WebSocket free writes its frame itself, after whatever was
//! queued before it, lets the other tasks of the runtime's tick run, writes what they queued
//! meanwhile and flushes once: no task hop between reading a socket and writing the tunnel,
//! which on a two-core machine costs more than the copy and the encryption (each cross-thread
//! wake-up is tens of microseconds), and many streams' frames in one write. A sender that finds
//! the WebSocket busy queues its frame and leaves it to whoever writes next, or to the writer
//! task, which a queued frame wakes. Two queues: frames that may overtake data (credit, resets,
//! pings) go first; frames that must stay in order with their stream's bytes (`OpenOk`, `Data`,
//! `Fin`) follow. A stream has at most one frame queued (its *turn*, held until the frame is in
//! the WebSocket), so a small request waits behind at most one frame of each other stream, never
//! behind all of a bulk transfer's.
//!
//! The driver (which reads the WebSocket) only ever queues: it must never wait on writing, or
//! two peers that both stop reading while their writes block would deadlock.

use crate::error::CloseReason;
use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use ism_tunnel_proto::Frame;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedMutexGuard, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The WebSocket's sending half, whatever stream it runs over.
pub(crate) type WsSink = Pin<Box<dyn Sink<Message, Error = WsError> + Send>>;

/// Priority frames queued at once beyond which the peer is taken to have stopped reading: they
/// are small and few (credit, resets, pongs) unless the other side is gone.
const PRIO_LIMIT: usize = 4096;

/// A frame that must stay in order with its stream's other frames, with the stream's turn.
struct Ordered {
    frame: Bytes,
    /// Held, not read: dropping it (once the frame is written) gives the stream its turn back.
    _turn: Option<OwnedSemaphorePermit>,
}

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

pub(crate) struct Outbox {
    sink: Arc<tokio::sync::Mutex<WsSink>>,
    queued: Mutex<Queued>,
    /// Wakes the writer task when a frame is queued.
    queued_frame: Notify,
    closed: tokio::sync::watch::Sender<Option<CloseReason>>,
}

impl Outbox {
    /// An outbox for `sink`, and the sink's guard for the writer task, which writes the session's
    /// first frame (a greeting) before anyone else can write.
    pub fn new(
        sink: WsSink,
        closed: tokio::sync::watch::Sender<Option<CloseReason>>,
    ) -> (Arc<Outbox>, OwnedMutexGuard<WsSink>) {
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        let first = match sink.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => unreachable!("a new mutex is free"),
        };
        let outbox = Outbox { sink, queued: Mutex::default(), queued_frame: Notify::new(), closed };
        (Arc::new(outbox), first)
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
            q.prio.push_back(frame.encode());
        }
        self.queued_frame.notify_one();
        Ok(())
    }

    /// Sends a frame that must stay in order with its stream's other frames: written at once
    /// (after what was queued before it) if the WebSocket is free, else queued with the stream's
    /// `turn` for whoever writes next.
    pub async fn send_ordered(
        &self,
        frame: Bytes,
        turn: Option<OwnedSemaphorePermit>,
    ) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let Ok(mut sink) = self.sink.try_lock() else {
            self.queued().ordered.push_back(Ordered { frame, _turn: turn });
            self.queued_frame.notify_one();
            return Ok(());
        };
        let written = async {
            self.write_queued(&mut sink).await?;
            sink.feed(Message::Binary(frame)).await?;
            drop(turn);
            // The flush waits for the other tasks this tick has made ready: their frames, queued
            // meanwhile, go out in the same flush (one write, TLS records filled, one wake-up of
            // the peer) instead of a write each. Measured with 50 keep-alive HTTP clients on one
            // endpoint: 0.77-0.91x wstunnel's requests per second without, 0.99-1.14x with.
            tokio::task::yield_now().await;
            self.write_queued(&mut sink).await?;
            sink.flush().await
        }
        .await;
        written.map_err(|e| self.failed(e))
    }

    /// Feeds everything queued, priority frames first (not flushed).
    async fn write_queued(&self, sink: &mut WsSink) -> Result<(), WsError> {
        loop {
            let next = {
                let mut q = self.queued();
                match q.prio.pop_front() {
                    Some(frame) => Some((frame, None)),
                    None => q.ordered.pop_front().map(|o| (o.frame, Some(o._turn))),
                }
            };
            let Some((frame, turn)) = next else { return Ok(()) };
            sink.feed(Message::Binary(frame)).await?;
            drop(turn);
        }
    }

    fn failed(&self, e: WsError) -> SendError {
        close(&self.closed, CloseReason::Transport(e.to_string()));
        SendError::Closed
    }

    /// The writer task: sends `greeting` first (holding the sink since the session was made),
    /// then whatever senders queue while the WebSocket is busy, until the session closes.
    pub async fn run_writer(
        self: Arc<Self>,
        mut first: OwnedMutexGuard<WsSink>,
        greeting: Option<Frame>,
    ) {
        let mut closed = self.closed.subscribe();
        let greeted = match greeting {
            Some(g) => first.send(Message::Binary(g.encode())).await,
            None => Ok(()),
        };
        drop(first);
        if let Err(e) = greeted {
            self.failed(e);
        }
        loop {
            tokio::select! {
                biased;
                _ = closed.wait_for(|c| c.is_some()) => break,
                _ = self.queued_frame.notified() => {}
            }
            let mut sink = self.sink.lock().await;
            let written = async {
                self.write_queued(&mut sink).await?;
                sink.flush().await
            }
            .await;
            if let Err(e) = written {
                self.failed(e);
                break;
            }
        }
        let mut sink = self.sink.lock().await;
        let _ = sink.close().await;
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
