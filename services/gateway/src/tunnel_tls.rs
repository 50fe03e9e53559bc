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
    use crate::tls::{self, TlsSource};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpSocket;

    /// Small socket buffers on both ends, so that a peer that does not read stops a writer after
    /// a few KiB: what a write then takes is what rustls agreed to hold.
    const SOCKET_BUFFER: u32 = 4096;

    /// A tunnel's TLS both ways on loopback, through this module's `accept` and `connect`.
    async fn tunnel_pair() -> (server::TlsStream<TcpStream>, client::TlsStream<TcpStream>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let source = TlsSource::Generated { dir: dir.path().into(), sans: Vec::new() };
        let identity = tls::load(&source).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(identity.ca_file.as_ref().unwrap()).unwrap();
        roots.add(CertificateDer::from_pem_slice(&ca).unwrap()).unwrap();
        let client_config =
            rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();

        let listening = TcpSocket::new_v4().unwrap();
        listening.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
        listening.set_send_buffer_size(SOCKET_BUFFER).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let dialling = TcpSocket::new_v4().unwrap();
        dialling.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
        dialling.set_send_buffer_size(SOCKET_BUFFER).unwrap();
        let (dialled, accepted) =
            tokio::join!(dialling.connect(listener.local_addr().unwrap()), listener.accept());
        let acceptor = TlsAcceptor::from(identity.server_config);
        let connector = TlsConnector::from(Arc::new(client_config));
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(
            accept(&acceptor, accepted.unwrap().0),
            connect(connector, name, dialled.unwrap())
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
