//! Accepting connections on a listener for ever, with the node's cap on connections that have not
//! yet authenticated.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A node's connections accepted but not yet authenticated, capped per kind of peer: scanners
/// (the SOCKS5 and HTTP-proxy listeners share one cap) and endpoints (their own). Separate, so that
/// idle connections to a scanner port cannot keep endpoints from reconnecting (after a drain or a
/// network blip), nor a flood of would-be endpoints keep scanners out.
#[derive(Clone)]
pub struct PendingLimits {
    pub scanners: PendingConnections,
    pub endpoints: PendingConnections,
    /// Relay links from the other nodes of a cluster, before their mutual TLS is done.
    pub relays: PendingConnections,
}

/// Relay links a node accepts at once before their handshake is done: its cluster has a few
/// nodes, each dialling one link.
const PENDING_RELAYS: usize = 64;

impl PendingLimits {
    /// `each` pending connections for scanners and as many for endpoints; a few for relay links.
    pub fn new(each: usize) -> Self {
        Self {
            scanners: PendingConnections::new(each),
            endpoints: PendingConnections::new(each),
            relays: PendingConnections::new(PENDING_RELAYS.min(each)),
        }
    }
}

/// Connections accepted but not yet authenticated (a scanner before its credential checked, an
/// endpoint before its handshake) on some of a node's listeners. Each holds a descriptor and a
/// task until its handshake deadline; capped, a flood of idle connections cannot exhaust the
/// node's descriptors (and with them its API) and is refused at once instead.
#[derive(Clone)]
pub struct PendingConnections {
    permits: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
}

impl PendingConnections {
    pub fn new(limit: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(limit)), refused: Arc::default() }
    }

    /// A place for one more pending connection; the connection gives it back (drops the permit)
    /// once it has authenticated or ended.
    fn admit(&self, what: &'static str, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            // A flood would write a line per connection: the 1st, 2nd, 4th, 8th... are told.
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, "too many {what} connections waiting to authenticate; closing new ones at once");
            }
        }
        permit
    }
}

/// Hands every accepted connection to `handle` on its own task, with its place among the
/// pending connections; beyond the cap a connection is closed at once. A failed accept (out of
/// file descriptors, say) is logged and retried after a short pause instead of spinning.
pub async fn accept_forever<F, Fut>(
    listener: TcpListener,
    what: &'static str,
    pending: PendingConnections,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                if let Some(permit) = pending.admit(what, peer) {
                    tokio::spawn(handle(tcp, peer, permit));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a {what} connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
