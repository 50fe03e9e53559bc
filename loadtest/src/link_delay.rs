//! A link with latency between a tunnel's two halves (`--link-delay-ms`): what a scanner in the
//! cloud reaching an endpoint across the internet has and loopback has not. This machine's kernel
//! has no netem (`sch_netem`), so a relay in front of the gateway holds every chunk for the delay
//! before passing it on, in each direction. Flow control that waits on a round trip (our
//! per-stream credit, a WebSocket's or TCP's window) then shows what that costs.
//!
//! The relay takes bytes from its sender at once, which would hide TCP's own window from the
//! sender (the relay would buffer whatever it is sent, and acknowledge it at once); so what a
//! direction has in flight is capped at what one TCP connection could have unacknowledged here
//! (the machine's `tcp_wmem` maximum, [`in_flight`]), and a byte counts as in flight until
//! the delay after its delivery, when its acknowledgement would have come back: a TCP window,
//! like our credit, has to cover the whole round trip.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bytes one direction of a connection may have in flight on the link: the largest send buffer
/// the machine gives a TCP socket (the third figure of `net.ipv4.tcp_wmem`; 4 MiB, Linux's
/// default, if it cannot be read).
fn in_flight() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 * 1024 * 1024)
}

/// Read buffer per direction.
const CHUNK: usize = 64 * 1024;

/// Starts a delaying relay in front of `target` on the current runtime; returns its address.
pub async fn in_front(target: SocketAddr, one_way: Duration) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((near, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(far) = TcpStream::connect(target).await else { return };
                let _ = (near.set_nodelay(true), far.set_nodelay(true));
                let (near_read, near_write) = near.into_split();
                let (far_read, far_write) = far.into_split();
                tokio::join!(
                    delayed(near_read, far_write, one_way),
                    delayed(far_read, near_write, one_way)
                );
            });
        }
    });
    Ok(addr)
}

/// `address` (`host:port`, or a URL such as `wss://host:port/path`) with its host and port
/// replaced by a delaying relay's in front of it.
pub async fn in_front_of(address: &str, one_way: Duration) -> anyhow::Result<String> {
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), address),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let relay = in_front(authority.parse()?, one_way).await?;
    Ok(format!("{scheme}{relay}{path}"))
}

/// Copies `from` to `to`, each chunk `one_way` after it was read, with at most [`in_flight`]
/// bytes held.
async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, one_way: Duration) {
    let room = Arc::new(Semaphore::new(in_flight().max(CHUNK)));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>, OwnedSemaphorePermit)>();
    let reader = async move {
        loop {
            let Ok(mut permit) = room.clone().acquire_many_owned(CHUNK as u32).await else {
                break;
            };
            let mut chunk = vec![0u8; CHUNK];
            match from.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    // Only what was read stays taken.
                    drop(permit.split(CHUNK - n));
                    if tx.send((Instant::now() + one_way, chunk, permit)).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk, permit)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
            // The acknowledgement's way back.
            tokio::spawn(async move {
                tokio::time::sleep(one_way).await;
                drop(permit);
            });
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
