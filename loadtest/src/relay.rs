//! The limit the tunnel is measured against: the same bytes through two relays, the hops the
//! tunnel has (scanner -> relay -> relay -> target), with nothing but `copy_bidirectional` in
//! them: no framing, no multiplexing, no flow control, no audit. Once with plain TCP between the
//! relays, once with TLS (what the wss link costs at least). No tunnel can beat these on this
//! machine; the tunnel's ratio to them says how much of the rest is ours.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Copy buffer per direction: the tunnel's largest data frame.
const COPY_BUFFER: usize = 64 * 1024;

/// Starts the two relays in front of `target`; returns the first one's address.
pub async fn chain(target: SocketAddr, tls: bool) -> anyhow::Result<SocketAddr> {
    let (acceptor, connector) =
        if tls { tls_pair().map(|(a, c)| (Some(a), Some(c)))? } else { (None, None) };
    let far = listen(move |scanner| {
        let acceptor = acceptor.clone();
        async move {
            let upstream = TcpStream::connect(target).await?;
            upstream.set_nodelay(true)?;
            match acceptor {
                Some(a) => splice(a.accept(scanner).await?, upstream).await,
                None => splice(scanner, upstream).await,
            }
        }
    })
    .await?;
    listen(move |scanner| {
        let connector = connector.clone();
        async move {
            let next = TcpStream::connect(far).await?;
            next.set_nodelay(true)?;
            match connector {
                Some(c) => splice(scanner, c.connect("localhost".try_into()?, next).await?).await,
                None => splice(scanner, next).await,
            }
        }
    })
    .await
}

async fn splice(
    mut a: impl AsyncRead + AsyncWrite + Unpin,
    mut b: impl AsyncRead + AsyncWrite + Unpin,
) -> anyhow::Result<()> {
    tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, COPY_BUFFER, COPY_BUFFER).await?;
    Ok(())
}

async fn listen<F, Fut>(handle: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(handle(s));
        }
    });
    Ok(addr)
}

/// A self-signed certificate for "localhost", and a server and a client that use it.
fn tls_pair() -> anyhow::Result<(TlsAcceptor, TlsConnector)> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone())?;
    let client =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok((TlsAcceptor::from(Arc::new(server)), TlsConnector::from(Arc::new(client))))
}
