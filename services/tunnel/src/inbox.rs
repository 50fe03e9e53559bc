//! A stream's way in: what the driver delivers for the local side of one stream.
//!
//! For a stream spliced to a socket, the driver writes payloads to the socket itself
//! (`try_write_vectored`, never waiting) when nothing is queued before them and the socket takes
//! them: the common case costs no task hop and its credit is returned at once. It holds payloads
//! of [`HOLD_FROM`] or more until it has read what the tunnel holds now, or up to a limit (the
//! session's `HOLD_READS`; [`Inbox::flush`]), so the frames of one burst reach the socket in one
//! system call; smaller payloads go at once, with what is held before them. What the socket does not
//! take, and every payload after it, queues here for the stream's own task, which waits for the
//! socket; the order of the bytes is kept because the driver holds and writes only while nothing
//! is queued or being written, and an end moves what is held into the queue before it.

use bytes::Bytes;
use ism_tunnel_proto::ResetReason;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
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

/// What became of a payload handed to [`Inbox::deliver`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Held for the driver to write with the stream's next payloads ([`Inbox::flush`]) once it
    /// has read on.
    Held,
    /// Held behind what came before it, all to be written now ([`Inbox::flush`]): the payload is
    /// small, or the held payloads fill one `writev`.
    Flush,
    /// Queued for the stream's task.
    Queued,
}

/// Payloads smaller than this are written at once, with whatever is held before them: a small
/// payload is most likely a whole answer, which should not wait for a burst to end.
pub(crate) const HOLD_FROM: usize = 64 << 10;

/// How many payloads the driver holds at most: the I/O vector of one `writev`.
pub(crate) const HOLD_PAYLOADS: usize = 64;

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
    /// Payloads the driver holds to write together, only while nothing is queued or written.
    held: Vec<Bytes>,
}

impl State {
    /// What is held goes to the queue, in order, for the stream's task.
    fn queue_held(&mut self) {
        self.queue.extend(self.held.drain(..).map(Inbound::Data));
    }
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

    /// Payload for the local side: held for the driver to write with the next ones while the
    /// stream's socket may be written directly, queued for the stream's task otherwise.
    pub fn deliver(&self, payload: Bytes) -> Result<Delivered, ReaderGone> {
        let mut s = self.state();
        if s.reader_gone {
            return Err(ReaderGone);
        }
        if s.queue.is_empty() && !s.writing && s.socket.is_some() {
            let now = payload.len() < HOLD_FROM || s.held.len() + 1 >= HOLD_PAYLOADS;
            s.held.push(payload);
            return Ok(if now { Delivered::Flush } else { Delivered::Held });
        }
        s.queue.push_back(Inbound::Data(payload));
        drop(s);
        self.ready.notify_one();
        Ok(Delivered::Queued)
    }

    /// Writes what the driver holds to the socket in one system call, as far as the socket takes
    /// it, and queues the rest for the stream's task. Returns the bytes written: consumed now,
    /// their credit may go back.
    pub fn flush(&self) -> usize {
        let mut s = self.state();
        if s.held.is_empty() {
            return 0;
        }
        let mut written = 0;
        if let Some(socket) = &s.socket {
            let mut slices = [IoSlice::new(&[]); HOLD_PAYLOADS];
            for (slice, payload) in slices.iter_mut().zip(&s.held) {
                *slice = IoSlice::new(payload);
            }
            // An error other than `WouldBlock` meets the stream's task on its next write, and
            // ends the stream.
            written = socket.try_write_vectored(&slices[..s.held.len()]).unwrap_or(0);
        }
        if written > 0 {
            s.direct_bytes += written as u64;
            s.direct_at = Some(Instant::now());
        }
        let (mut left, mut whole) = (written, 0);
        for payload in &s.held {
            if left < payload.len() {
                break;
            }
            left -= payload.len();
            whole += 1;
        }
        s.held.drain(..whole);
        if let Some(part) = s.held.first_mut() {
            let _ = part.split_to(left);
        }
        if s.held.is_empty() {
            return written;
        }
        s.queue_held();
        drop(s);
        self.ready.notify_one();
        written
    }

    /// The end of the stream (clean or not), after everything delivered before it.
    pub fn end(&self, item: Inbound) {
        let mut s = self.state();
        s.queue_held();
        s.queue.push_back(item);
        drop(s);
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
        s.held.clear();
    }

    /// Bytes the driver wrote to the socket itself so far, and when it last did.
    pub fn direct(&self) -> (u64, Option<Instant>) {
        let s = self.state();
        (s.direct_bytes, s.direct_at)
    }
}

/// Writes all of `bytes` to a socket shared with the driver (readiness-based, by reference).
pub(crate) async fn write_all(socket: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_tunnel_proto::ResetReason;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    const PATIENCE: Duration = Duration::from_secs(60);

    /// Both ends of a loopback connection.
    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (Arc::new(listener.accept().await.unwrap().0), peer)
    }

    /// An inbox attached to one end of a loopback connection; the socket and its peer.
    async fn attached() -> (Inbox, Arc<TcpStream>, TcpStream) {
        let (socket, peer) = pair().await;
        let inbox = Inbox::default();
        inbox.attach(socket.clone());
        (inbox, socket, peer)
    }

    /// What the stream's task does: writes what the inbox queues, until the end.
    async fn stream_task(inbox: &Inbox, socket: &TcpStream) -> Inbound {
        loop {
            match inbox.next().await {
                Inbound::Data(bytes) => {
                    write_all(socket, &bytes).await.unwrap();
                    inbox.written();
                }
                end => {
                    rustix::net::shutdown(socket, rustix::net::Shutdown::Write).unwrap();
                    return end;
                }
            }
        }
    }

    fn payload(byte: u8, len: usize) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    #[tokio::test]
    async fn large_payloads_wait_for_a_flush_and_reach_the_socket_whole_and_in_order() {
        let (inbox, socket, mut peer) = attached().await;
        let payloads =
            [payload(1, HOLD_FROM), payload(2, 3 * HOLD_FROM + 1), payload(3, HOLD_FROM)];
        let expected: Vec<u8> =
            payloads.iter().chain([&Bytes::from_static(b"end")]).flat_map(|b| b.to_vec()).collect();
        for (i, p) in payloads.iter().enumerate() {
            assert_eq!(inbox.deliver(p.clone()).unwrap(), Delivered::Held, "payload {i}");
        }
        let mut probe = [0u8; 1];
        let unwritten = peer.try_read(&mut probe).map_err(|e| e.kind());
        assert_eq!(unwritten, Err(std::io::ErrorKind::WouldBlock), "held, not written");
        assert_eq!(
            inbox.deliver(Bytes::from_static(b"end")).unwrap(),
            Delivered::Flush,
            "a small payload is written at once, with what is held before it"
        );
        let written = inbox.flush();
        assert!(written > 0 && written <= expected.len(), "written {written}");
        assert_eq!(inbox.direct().0, written as u64);
        assert_eq!(inbox.flush(), 0, "nothing held any more");
        // What the socket did not take went to the stream's task, in order, before the end.
        inbox.end(Inbound::Fin);
        let mut received = Vec::new();
        let (end, read) = tokio::time::timeout(PATIENCE, async {
            tokio::join!(stream_task(&inbox, &socket), peer.read_to_end(&mut received))
        })
        .await
        .unwrap();
        read.unwrap();
        assert!(matches!(end, Inbound::Fin));
        assert!(received == expected, "{} bytes received, {} sent", received.len(), expected.len());
    }

    #[tokio::test]
    async fn an_end_after_held_payloads_comes_after_them() {
        let (inbox, _socket, _peer) = attached().await;
        let held = payload(7, HOLD_FROM);
        assert_eq!(inbox.deliver(held.clone()).unwrap(), Delivered::Held);
        inbox.end(Inbound::Reset(ResetReason::Aborted));
        assert!(matches!(inbox.next().await, Inbound::Data(bytes) if bytes == held));
        inbox.written();
        assert!(matches!(inbox.next().await, Inbound::Reset(ResetReason::Aborted)));
        assert_eq!(inbox.flush(), 0, "moved to the queue, not written by the driver");
    }

    #[tokio::test]
    async fn payloads_queue_for_the_stream_task_before_the_splice_and_while_it_writes() {
        let inbox = Inbox::default();
        assert_eq!(inbox.deliver(payload(1, 10)).unwrap(), Delivered::Queued, "not spliced yet");
        let (socket, _peer) = pair().await;
        inbox.attach(socket);
        assert!(matches!(inbox.next().await, Inbound::Data(bytes) if bytes.len() == 10));
        let queued = inbox.deliver(payload(2, HOLD_FROM)).unwrap();
        assert_eq!(queued, Delivered::Queued, "the stream's task is writing");
        inbox.written();
        assert!(matches!(inbox.next().await, Inbound::Data(bytes) if bytes.len() == HOLD_FROM));
        inbox.written();
        let held = inbox.deliver(payload(3, HOLD_FROM)).unwrap();
        assert_eq!(held, Delivered::Held, "nothing queued or written");
    }
}
