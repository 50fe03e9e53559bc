//! The TLS under every tunnel the gateway carries: an endpoint's, and the relay links between
//! nodes, accepted or dialled here and nowhere else, so that each gets the tunnel's buffer limit
//! (a relay link once went without it, set by hand at each call site).

use ism_tunnel::ws::TLS_BUFFER_LIMIT;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// Accepts a tunnel's TLS on `tcp`, rustls allowed to hold [`TLS_BUFFER_LIMIT`] unsent.
pub async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> std::io::Result<server::TlsStream<TcpStream>> {
    let mut tls = acceptor.accept(tcp).await?;
    tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    Ok(tls)
}

/// Dials a tunnel's TLS to `name` over `tcp`, rustls allowed to hold [`TLS_BUFFER_LIMIT`]
/// unsent.
pub async fn connect(
    connector: TlsConnector,
    name: ServerName<'static>,
    tcp: TcpStream,
) -> std::io::Result<client::TlsStream<TcpStream>> {
    let mut tls = connector.connect(name, tcp).await?;
    tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tls::{self, ClusterTlsFiles};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpSocket;

    /// Small socket buffers on both ends, so that a peer that does not read stops a writer after
    /// a few KiB: what a write then takes is what rustls agreed to hold.
    fn small_buffered() -> TcpSocket {
        const SOCKET_BUFFER: u32 = 4096;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
        socket.set_send_buffer_size(SOCKET_BUFFER).unwrap();
        socket
    }

    /// A tunnel's TLS both ways on loopback, through this module's `accept` and `connect`: a
    /// relay link between two nodes of a generated cluster.
    async fn tunnel_pair() -> (server::TlsStream<TcpStream>, client::TlsStream<TcpStream>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        tls::generate(dir.path(), &["node-1".into()]).unwrap();
        let cluster = tls::load(&ClusterTlsFiles::in_dir(dir.path(), "node-1")).unwrap();
        let listening = small_buffered();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let (dialled, accepted) = tokio::join!(
            small_buffered().connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        let name = ServerName::try_from("node-1").unwrap();
        let acceptor = TlsAcceptor::from(cluster.server);
        let (server, client) = tokio::join!(
            accept(&acceptor, accepted.unwrap().0),
            connect(TlsConnector::from(cluster.client), name, dialled.unwrap())
        );
        (server.unwrap(), client.unwrap())
    }

    /// Both ends of a tunnel's TLS take a whole largest frame in one write while the peer reads
    /// nothing: at rustls' default limit (64 KiB) a frame went out as two writes, the second a
    /// record of a few bytes.
    #[tokio::test]
    async fn a_tunnels_tls_takes_a_whole_frame_in_one_write() {
        let (mut server, mut client) = tunnel_pair().await;
        let frame = vec![0x5a_u8; TLS_BUFFER_LIMIT / 2];
        assert_eq!(server.write(&frame).await.unwrap(), frame.len(), "the gateway's end");
        assert_eq!(client.write(&frame).await.unwrap(), frame.len(), "the dialling end");
        // A limit, not none: rustls takes no more than it may hold.
        let more = vec![0x5a_u8; 2 * TLS_BUFFER_LIMIT];
        let taken = client.write(&more).await.unwrap();
        assert!(taken <= TLS_BUFFER_LIMIT, "took {taken} bytes");
    }
}
