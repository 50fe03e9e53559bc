//! The servers the benchmark talks to, the same ones for the direct and the tunnelled runs.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counts what it receives until EOF, then answers with the count (8 bytes, big-endian).
pub async fn sink() -> SocketAddr {
    serve(|mut s| async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(_) => return,
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
