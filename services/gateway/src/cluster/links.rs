//! Relay links between gateway nodes: one TLS WebSocket from this node to each node it relays
//! to, carrying many streams with the tunnel's own protocol and credit (the same multiplexing as
//! an endpoint's session), dialed on first use and reused.
//!
//! Each node dials its own links (it opens the streams, odd ids); the acceptor only answers
//! them, so two nodes that relay to each other hold a link each way.

use super::tls::ClusterTls;
use ism_tunnel::{Session, SessionConfig, TunnelSocket};
use ism_tunnel_proto::Role;
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long dialing a node (TCP, TLS, WebSocket) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("node {node} at {addr}: {reason}")]
    Dial { node: String, addr: SocketAddr, reason: String },
}

/// This node's links to the others, by node name. Each node has its own slot, locked while its
/// link is dialled: two streams for one node share one dial, and a node that does not answer
/// holds up only the streams for it, not those for every other node.
pub struct RelayLinks {
    tls: ClusterTls,
    session: SessionConfig,
    links: std::sync::Mutex<HashMap<String, Arc<Slot>>>,
    /// [`DIAL_TIMEOUT`]; longer in a test that must see a dial still waiting.
    dial_timeout: Duration,
}

/// One node's link, if open (or dialled and since closed).
type Slot = tokio::sync::Mutex<Option<Session>>;

impl RelayLinks {
    pub fn new(tls: ClusterTls, session: SessionConfig) -> Self {
        Self { tls, session, links: std::sync::Mutex::default(), dial_timeout: DIAL_TIMEOUT }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The link to `node` at `addr`: the open one, or a new one.
    pub async fn to(&self, node: &str, addr: SocketAddr) -> Result<Session, LinkError> {
        let slot = self.slots().entry(node.to_string()).or_default().clone();
        let mut link = slot.lock().await;
        if let Some(open) = link.as_ref().filter(|l| !l.is_closed()) {
            return Ok(open.clone());
        }
        let session = self.dial(node, addr).await?;
        tracing::info!(%node, %addr, "relay link open");
        *link = Some(session.clone());
        Ok(session)
    }

    /// A new link to `node` at `addr` (TCP, TLS, WebSocket), within the dial timeout.
    async fn dial(&self, node: &str, addr: SocketAddr) -> Result<Session, LinkError> {
        let failed = |reason: String| LinkError::Dial { node: node.into(), addr, reason };
        let dial = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| failed(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(node.to_string()).map_err(|e| failed(e.to_string()))?;
            let connector = TlsConnector::from(self.tls.client.clone());
            let tls = crate::tunnel_tls::connect(connector, name, tcp)
                .await
                .map_err(|e| failed(format!("TLS: {e}")))?;
            let (ws, _) = tokio_tungstenite::client_async_with_config(
                format!("wss://{node}/relay"),
                TunnelSocket::client(tls),
                Some(ism_tunnel::ws::websocket_config()),
            )
            .await
            .map_err(|e| failed(format!("WebSocket: {e}")))?;
            Ok::<_, LinkError>(ws)
        };
        let ws = tokio::time::timeout(self.dial_timeout, dial)
            .await
            .map_err(|_| failed(format!("no link within {:?}", self.dial_timeout)))??;
        Ok(Session::spawn(ws, Role::Gateway, self.session.clone()).0)
    }

    /// Closes every link (this node is stopping).
    pub async fn close_all(&self) {
        let slots: Vec<Arc<Slot>> = self.slots().drain().map(|(_, slot)| slot).collect();
        for slot in slots {
            if let Some(link) = slot.lock().await.take() {
                link.close("gateway node stopping");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tls::{self, ClusterTlsFiles};
    use tokio::net::TcpListener;

    /// A node of a generated cluster answering relay links on loopback as far as the link's
    /// dial needs: TLS, then the WebSocket upgrade; the link then stays open.
    async fn answering(tls: &ClusterTls) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let tls = crate::tunnel_tls::accept(&acceptor, tcp).await.unwrap();
                    let ws = tokio_tungstenite::accept_async(tls).await.unwrap();
                    std::future::pending::<()>().await;
                    drop(ws);
                });
            }
        });
        addr
    }

    /// A link to a node that accepts connections and then says nothing (a host gone silent)
    /// does not hold up the link to another node while it is being dialled.
    #[tokio::test]
    async fn a_node_that_does_not_answer_holds_up_only_the_links_to_it() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        tls::generate(dir.path(), &["node-a".into(), "node-b".into(), "node-c".into()]).unwrap();
        let load = |node| tls::load(&ClusterTlsFiles::in_dir(dir.path(), node)).unwrap();
        // Node b's dial must still wait when node c's link is open, however slow the machine.
        let links = RelayLinks::new(load("node-a"), SessionConfig::default());
        let links = Arc::new(RelayLinks { dial_timeout: Duration::from_secs(600), ..links });
        let to_c = answering(&load("node-c")).await;
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to_b = silent.local_addr().unwrap();

        let dialling_b = tokio::spawn({
            let links = links.clone();
            async move { links.to("node-b", to_b).await.map(drop) }
        });
        // Node b has taken the connection: its link's dial is under way, and waits.
        let (_held, _) = silent.accept().await.unwrap();
        // Bounded, so that links serialised again fail here instead of waiting out b's dial.
        let to_c = tokio::time::timeout(Duration::from_secs(60), links.to("node-c", to_c)).await;
        to_c.expect("node c's link opens while node b's dial waits").expect("node c's link opens");
        assert!(!dialling_b.is_finished(), "node c's link opened while node b's dial waited");
        dialling_b.abort();
        links.close_all().await;
    }
}
