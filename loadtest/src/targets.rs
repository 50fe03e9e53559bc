//! The servers the benchmark talks to, the same ones for the direct and the tunnelled runs.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Where the targets listen; every path reaches the same ones.
#[derive(Clone, Copy)]
pub struct Targets {
    /// [`sink`]: bulk uploads, and downloads.
    pub sink: SocketAddr,
    /// [`echo`]: opens.
    pub echo: SocketAddr,
    /// [`http`]: small requests.
    pub http: SocketAddr,
    /// [`hold`], in a child process of its own: held connections.
    pub hold: SocketAddr,
}

/// Bytes in each chunk of a bulk upload; an upload is whole chunks.
pub const UPLOAD_CHUNK: usize = 256 * 1024;

/// The first byte of an upload's last chunk; every other chunk starts with another.
pub const LAST_CHUNK: u8 = 0;

/// The first byte of a chunk that asks the sink for a download instead of an upload.
pub const DOWNLOAD: u8 = 0xd0;

/// Counts what it receives, in chunks of [`UPLOAD_CHUNK`], up to the [`LAST_CHUNK`], then answers
/// with the count (8 bytes, big-endian). The last chunk ends the upload rather than a half-close
/// because wstunnel closes a connection both ways at its first FIN: the count would be lost.
/// A first chunk that starts with [`DOWNLOAD`] asks for the other direction: the sink sends
/// chunks until the client goes away (the client counts them).
pub async fn sink() -> SocketAddr {
    serve(|mut s| async move {
        let mut chunk = vec![0u8; UPLOAD_CHUNK];
        let mut total = 0u64;
        loop {
            if s.read_exact(&mut chunk).await.is_err() {
                return;
            }
            if total == 0 && chunk[0] == DOWNLOAD {
                while s.write_all(&chunk).await.is_ok() {}
                return;
            }
            total += chunk.len() as u64;
            if chunk[0] == LAST_CHUNK {
                break;
            }
        }
        let _ = s.write_all(&total.to_be_bytes()).await;
    })
    .await
}

/// Echoes everything.
pub async fn echo() -> SocketAddr {
    serve(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// The response every HTTP request gets: 1 KiB of body, keep-alive.
pub fn http_response() -> Vec<u8> {
    let body = vec![b'x'; 1024];
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(&body);
    r
}

/// An HTTP/1.1 keep-alive server answering each request with [`http_response`].
pub async fn http() -> SocketAddr {
    serve(|mut s| async move {
        let _ = s.set_nodelay(true);
        let response = http_response();
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                buf.drain(..end + 4);
                if s.write_all(&response).await.is_err() {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(handler(s));
        }
    });
    addr
}

/// Holds each connection open, reading and discarding, until the client closes it.
pub async fn hold() -> SocketAddr {
    serve(|mut s| async move {
        let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
    })
    .await
}
