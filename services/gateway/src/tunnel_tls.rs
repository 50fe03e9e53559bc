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
