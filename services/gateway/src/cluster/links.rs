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

/// This node's links to the others, by node name.
pub struct RelayLinks {
    tls: ClusterTls,
    session: SessionConfig,
    links: tokio::sync::Mutex<HashMap<String, Session>>,
}

impl RelayLinks {
    pub fn new(tls: ClusterTls, session: SessionConfig) -> Self {
        Self { tls, session, links: tokio::sync::Mutex::default() }
    }

    /// The link to `node` at `addr`: the open one, or a new one.
    pub async fn to(&self, node: &str, addr: SocketAddr) -> Result<Session, LinkError> {
        let mut links = self.links.lock().await;
        if let Some(link) = links.get(node).filter(|l| !l.is_closed()) {
            return Ok(link.clone());
        }
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
        let ws = tokio::time::timeout(DIAL_TIMEOUT, dial)
            .await
            .map_err(|_| failed(format!("no link within {DIAL_TIMEOUT:?}")))??;
        let (session, _) = Session::spawn(ws, Role::Gateway, self.session.clone());
        tracing::info!(%node, %addr, "relay link open");
        links.insert(node.to_string(), session.clone());
        Ok(session)
    }

    /// Closes every link (this node is stopping).
    pub async fn close_all(&self) {
        for (_, link) in self.links.lock().await.drain() {
            link.close("gateway node stopping");
        }
    }
}
