//! WebSocket plumbing shared by both ends: the limits every tunnel socket uses and the
//! one-frame-at-a-time send/receive used during the handshake (before the session driver runs).

use futures_util::{SinkExt, StreamExt};
use ism_tunnel_proto::{DecodeError, Frame, MAX_FRAME_LEN};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What tungstenite reserves up front for reading each socket. Its default, 128 KiB, was most of
/// what an idle endpoint cost a gateway (130 of about 170 KiB, measured with heaptrack over
/// 2000 endpoints); the buffer still grows to the largest frame a busy tunnel receives.
const READ_BUFFER: usize = 16 * 1024;

/// Unsent TLS a tunnel's connection may hold (`rustls::ConnectionCommon::set_buffer_limit`):
/// room for two whole frames. At rustls' default, 64 KiB, even a 64 KiB Data frame and its headers
/// did not fit: every frame went out as two writes, the second a record of a few bytes. Set where
/// a tunnel's TLS is made: the gateway's `tunnel_tls.rs`, the agent's `gateway_link.rs`.
pub const TLS_BUFFER_LIMIT: usize = 2 * MAX_FRAME_LEN;

/// The most tungstenite holds of what it writes itself before the session takes the socket over
/// (the handshake's frames, pongs): its default has no bound, and a peer that sends pings and
/// never reads would grow it for the whole handshake. Beyond it the handshake fails.
const MAX_WRITE_BUFFER: usize = 1 << 20;

/// WebSocket settings for tunnel sockets: a small initial read buffer, a bounded write buffer,
/// and a message never exceeds one frame, so anything larger is refused by tungstenite before it
/// is buffered.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// Handshake-time I/O failures.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeIoError {
    #[error("websocket error: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("no handshake frame within {0:?}")]
    TimedOut(Duration),
    #[error("expected a binary frame, got a text message")]
    UnexpectedText,
}

/// Sends one frame and flushes it.
pub async fn send_frame<S>(
    ws: &mut WebSocketStream<S>,
    frame: &Frame,
) -> Result<(), HandshakeIoError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::Binary(frame.encode())).await?;
    Ok(())
}

/// Receives the next frame, skipping WebSocket-level pings, within `timeout`.
pub async fn recv_frame<S>(
    ws: &mut WebSocketStream<S>,
    timeout: Duration,
) -> Result<Frame, HandshakeIoError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let next = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => return Ok(Frame::decode(b)?),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(_))) => return Err(HandshakeIoError::UnexpectedText),
                Some(Ok(Message::Close(_))) | None => return Err(HandshakeIoError::Closed),
                Some(Err(e)) => return Err(e.into()),
            }
        }
    };
    tokio::time::timeout(timeout, next).await.map_err(|_| HandshakeIoError::TimedOut(timeout))?
}
