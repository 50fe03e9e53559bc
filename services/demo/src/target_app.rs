//! A small internal web app for the demo: it listens on loopback, as an intranet app would be
//! reachable only from inside the private network, and answers every request with one page.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PAGE: &str = "<!doctype html><html><head><title>Intranet payroll</title></head><body><h1>Payroll (internal)</h1><form action=\"/login\" method=\"post\"><input name=\"user\"><input name=\"password\" type=\"password\"></form></body></html>\n";

/// Starts the app on 127.0.0.1 with an OS-chosen port; returns the port.
pub async fn start() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nServer: internal-app/1.0 (Debian)\r\nContent-Type: text/html\r\nSet-Cookie: session=4f2a9c; Path=/\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    Ok(port)
}
