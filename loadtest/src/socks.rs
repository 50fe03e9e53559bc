//! The scanner's side of a SOCKS5 ingress (RFC 1928), step by step: the method offer, the
//! username/password exchange (RFC 1929), the CONNECT. Every SOCKS path goes through this one
//! client, so ours and wstunnel's exchange the same bytes, and
//! [`open_phases`](crate::measure::open_phases) can time each step.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// RFC 1929 credentials; at our gateway, the endpoint's name and a scanner secret.
#[derive(Clone)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// Connects to `proxy` and goes through every step to `target`.
pub async fn connect(
    proxy: SocketAddr,
    login: &Login,
    target: SocketAddr,
) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    s.set_nodelay(true)?;
    offer_method(&mut s).await?;
    authenticate(&mut s, login).await?;
    request_connect(&mut s, target).await?;
    Ok(s)
}

/// The SOCKS5 method number of username/password (RFC 1929).
const USERNAME_PASSWORD: u8 = 2;

/// Offers username/password, the one method every route uses, and checks that the server
/// picked it.
pub async fn offer_method(s: &mut TcpStream) -> anyhow::Result<()> {
    let method = USERNAME_PASSWORD;
    s.write_all(&[5, 1, method]).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await?;
    anyhow::ensure!(
        choice == [5, method],
        "the SOCKS5 server answered {choice:?} to method {method}"
    );
    Ok(())
}

/// The username/password exchange.
pub async fn authenticate(s: &mut TcpStream, login: &Login) -> anyhow::Result<()> {
    let (user, password) = (login.username.as_bytes(), login.password.as_bytes());
    let mut request = vec![1, u8::try_from(user.len())?];
    request.extend_from_slice(user);
    request.push(u8::try_from(password.len())?);
    request.extend_from_slice(password);
    s.write_all(&request).await?;
    let mut status = [0u8; 2];
    s.read_exact(&mut status).await?;
    anyhow::ensure!(status == [1, 0], "authentication refused");
    Ok(())
}

/// Asks for a connection to `target`, sent as an address (no side resolves a name), and reads the
/// whole reply, whatever form of bound address the server chose.
pub async fn request_connect(s: &mut TcpStream, target: SocketAddr) -> anyhow::Result<()> {
    let mut request = vec![5, 1, 0];
    match target {
        SocketAddr::V4(a) => {
            request.push(1);
            request.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            request.push(4);
            request.extend_from_slice(&a.ip().octets());
        }
    }
    request.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&request).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    anyhow::ensure!(head[1] == 0, "CONNECT refused with code {}", head[1]);
    let address_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => usize::from(s.read_u8().await?),
        other => anyhow::bail!("bound address of unknown type {other}"),
    };
    let mut bound = vec![0u8; address_len + 2];
    s.read_exact(&mut bound).await?;
    Ok(())
}
