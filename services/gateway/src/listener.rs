//! Accepting connections on a listener for ever.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Hands every accepted connection to `handle`, on its own task. A failed accept (out of file
/// descriptors, say) is logged and retried after a short pause instead of spinning.
pub async fn accept_forever<F, Fut>(listener: TcpListener, what: &'static str, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(handle(tcp, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a {what} connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
