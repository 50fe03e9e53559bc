//! A stream's way in: what the driver delivers for the local side of one stream.
//!
//! For a stream spliced to a socket, the driver writes each payload to the socket itself
//! (`try_write`, never waiting) when nothing is queued before it and the socket takes it: the
//! common case costs no task hop and its credit is returned at once. What the socket does not
//! take, and every payload after it, queues here for the stream's own task, which waits for the
//! socket; the order of the bytes is kept because the driver writes directly only while nothing
//! is queued or being written.

use bytes::Bytes;
use ism_tunnel_proto::ResetReason;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the driver hands a stream's local side.
pub(crate) enum Inbound {
    Data(Bytes),
    Fin,
    Reset(ResetReason),
}

/// The local side is gone (its task ended): nobody will take the stream's bytes.
#[derive(Debug)]
pub(crate) struct ReaderGone;

#[derive(Default)]
struct State {
    queue: VecDeque<Inbound>,
    /// The socket the stream is spliced to, once it is: the driver may write to it directly.
    socket: Option<Arc<TcpStream>>,
    /// The stream's task took an item and is still writing it.
    writing: bool,
    reader_gone: bool,
    /// Bytes the driver wrote to the socket itself, and when it last did.
    direct_bytes: u64,
    direct_at: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct Inbox {
    state: Mutex<State>,
    ready: Notify,
}

impl Inbox {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Payload for the local side. Returns how many bytes were written to the socket at once
    /// (consumed now: their credit may go back); the rest is queued for the stream's task.
    pub fn deliver(&self, mut payload: Bytes) -> Result<usize, ReaderGone> {
        let mut s = self.state();
        if s.reader_gone {
            return Err(ReaderGone);
        }
        let mut direct = 0;
        if s.queue.is_empty() && !s.writing {
            if let Some(socket) = &s.socket {
                match socket.try_write(&payload) {
                    Ok(n) => direct = n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The stream's task meets the same error on its next write, and ends it.
                    Err(_) => {}
                }
            }
        }
        if direct > 0 {
            s.direct_bytes += direct as u64;
            s.direct_at = Some(Instant::now());
            if direct == payload.len() {
                return Ok(direct);
            }
            let _ = payload.split_to(direct);
        }
        s.queue.push_back(Inbound::Data(payload));
        drop(s);
        self.ready.notify_one();
        Ok(direct)
    }

    /// The end of the stream (clean or not), after everything delivered before it.
    pub fn end(&self, item: Inbound) {
        self.state().queue.push_back(item);
        self.ready.notify_one();
    }

    /// The next item for the stream's task, which is then *writing* it until
    /// [`written`](Self::written): meanwhile the driver queues rather than writes.
    pub async fn next(&self) -> Inbound {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.state();
                if let Some(item) = s.queue.pop_front() {
                    s.writing = true;
                    return item;
                }
            }
            notified.await;
        }
    }

    /// The stream's task finished writing the item it took.
    pub fn written(&self) {
        self.state().writing = false;
    }

    /// The stream is spliced to `socket`: from now on the driver may write to it directly.
    pub fn attach(&self, socket: Arc<TcpStream>) {
        self.state().socket = Some(socket);
    }

    /// The stream's task is gone: the socket is let go and later deliveries are refused.
    pub fn reader_gone(&self) {
        let mut s = self.state();
        s.reader_gone = true;
        s.socket = None;
        s.queue.clear();
    }

    /// Bytes the driver wrote to the socket itself so far, and when it last did.
    pub fn direct(&self) -> (u64, Option<Instant>) {
        let s = self.state();
        (s.direct_bytes, s.direct_at)
    }
}
