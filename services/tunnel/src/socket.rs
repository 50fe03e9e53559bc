//! The socket under a tunnel's WebSocket, which tungstenite reads and the session writes.
//!
//! tungstenite owns the WebSocket it reads and copies every frame it sends into its own buffer
//! (the crate's `ws_frame` module says why the session writes instead). So the WebSocket is built
//! over a [`TunnelSocket`]: until the session starts, what tungstenite writes (the upgrade, the
//! tunnel's handshake frames) goes straight out; then the session takes the socket's writing
//! half, and what tungstenite still writes of its own accord (pongs, whole frames) is queued for
//! the session's writer, which sends it between its frames.

use crate::ws_frame::Masking;
use bytes::{Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::Notify;

/// A tunnel's transport (a TLS stream), split so the session can write it while tungstenite
/// reads it. Build the WebSocket over it, with [`TunnelSocket::server`] on the side that accepted
/// the upgrade and [`TunnelSocket::client`] on the side that asked for it.
pub struct TunnelSocket<S> {
    read: ReadHalf<S>,
    write: Mutex<Out<S>>,
    masking: Masking,
}

enum Out<S> {
    /// Before the session: straight out.
    Direct(WriteHalf<S>),
    /// The session writes; tungstenite's own frames wait for it here.
    Queued(Arc<Replies>),
}

/// What the session takes from the socket when it starts: the writing half, where tungstenite's
/// frames wait from then on, and whether this side masks.
pub(crate) struct SocketWriter {
    pub io: Pin<Box<dyn AsyncWrite + Send>>,
    pub replies: Arc<Replies>,
    pub masking: Masking,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> TunnelSocket<S> {
    /// The socket of the side that accepted the WebSocket upgrade: its frames go unmasked.
    pub fn server(io: S) -> Self {
        Self::new(io, Masking::Unmasked)
    }

    /// The socket of the side that asked for the upgrade: it masks every frame (RFC 6455).
    pub fn client(io: S) -> Self {
        Self::new(io, Masking::Masked)
    }

    fn new(io: S, masking: Masking) -> Self {
        let (read, write) = tokio::io::split(io);
        Self { read, write: Mutex::new(Out::Direct(write)), masking }
    }

    /// The writing half, for the session's writer; from now on tungstenite's writes are queued.
    /// `None` if it was taken before.
    pub(crate) fn take_writer(&self) -> Option<SocketWriter> {
        let replies = Arc::new(Replies::default());
        let mut out = self.out();
        match std::mem::replace(&mut *out, Out::Queued(replies.clone())) {
            Out::Direct(io) => {
                Some(SocketWriter { io: Box::pin(io), replies, masking: self.masking })
            }
            queued @ Out::Queued(_) => {
                *out = queued;
                None
            }
        }
    }
}

impl<S> TunnelSocket<S> {
    fn out(&self) -> MutexGuard<'_, Out<S>> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What [`Replies`] holds at most: tungstenite's pongs, a few bytes each. A peer that pings and
/// does not read would grow it without end; past this its session fails.
const REPLIES_LIMIT: usize = 1 << 20;

/// Frames tungstenite wrote after the session took over the socket, in order.
#[derive(Default)]
pub(crate) struct Replies {
    queued: Mutex<BytesMut>,
    /// Wakes the session's writer when tungstenite flushes.
    pub ready: Notify,
}

impl Replies {
    /// Everything queued so far, if anything.
    pub fn take(&self) -> Option<Bytes> {
        let mut queued = self.queued();
        (!queued.is_empty()).then(|| queued.split().freeze())
    }

    /// Queues `bytes`, unless the peer has left more than [`REPLIES_LIMIT`] unread.
    fn push(&self, bytes: &[u8]) -> io::Result<()> {
        let mut queued = self.queued();
        if queued.len() + bytes.len() > REPLIES_LIMIT {
            return Err(io::Error::other(format!(
                "the peer left more than {REPLIES_LIMIT} bytes of replies to its pings unread"
            )));
        }
        queued.extend_from_slice(bytes);
        Ok(())
    }

    fn queued(&self) -> MutexGuard<'_, BytesMut> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: AsyncRead + AsyncWrite> AsyncRead for TunnelSocket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite> AsyncWrite for TunnelSocket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut out = self.out();
        match &mut *out {
            Out::Direct(io) => Pin::new(io).poll_write(cx, buf),
            // Taken whole: tungstenite hands over its buffer of whole frames in one write, and the
            // writer must never find part of a frame.
            Out::Queued(replies) => Poll::Ready(replies.push(buf).map(|()| buf.len())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.out();
        match &mut *out {
            Out::Direct(io) => Pin::new(io).poll_flush(cx),
            Out::Queued(replies) => {
                replies.ready.notify_one();
                Poll::Ready(Ok(()))
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.out();
        match &mut *out {
            Out::Direct(io) => Pin::new(io).poll_shutdown(cx),
            // The session's writer ends the connection.
            Out::Queued(_) => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_go_straight_out_until_the_writer_is_taken_then_wait_as_replies() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut socket = TunnelSocket::server(near);
        socket.write_all(b"upgrade").await.unwrap();
        let mut got = [0; 7];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"upgrade");

        let mut writer = socket.take_writer().unwrap();
        assert_eq!(writer.masking, Masking::Unmasked);
        assert!(socket.take_writer().is_none(), "the writer is taken once");
        socket.write_all(b"pong").await.unwrap();
        socket.flush().await.unwrap();
        writer.replies.ready.notified().await;
        assert_eq!(writer.replies.take().unwrap(), &b"pong"[..]);
        assert!(writer.replies.take().is_none());

        writer.io.write_all(b"frame").await.unwrap();
        far.write_all(b"peer").await.unwrap();
        let mut got = [0; 5];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"frame");
        let mut got = [0; 4];
        socket.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"peer", "tungstenite still reads the socket");
    }

    #[test]
    fn a_client_socket_masks() {
        let (near, _far) = tokio::io::duplex(64);
        let writer = TunnelSocket::client(near).take_writer().unwrap();
        assert_eq!(writer.masking, Masking::Masked);
    }

    /// A peer that pings and never reads cannot grow the queue of replies without end: past the
    /// limit, tungstenite's write fails (and with it the session), and what was queued stays.
    #[tokio::test]
    async fn replies_a_peer_leaves_unread_are_bounded() {
        let (near, _far) = tokio::io::duplex(64);
        let mut socket = TunnelSocket::server(near);
        let writer = socket.take_writer().unwrap();
        let pong = [0x8a_u8; 127];
        let mut queued = 0;
        let refused = loop {
            match socket.write(&pong).await {
                Ok(n) => queued += n,
                Err(e) => break e,
            }
            assert!(queued <= REPLIES_LIMIT, "queued {queued} bytes");
        };
        assert!(refused.to_string().contains("unread"), "{refused}");
        assert_eq!(writer.replies.take().unwrap().len(), queued);
    }
}
