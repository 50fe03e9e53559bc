//! An open tunnel measured in the same run as ours, when its binary is given (`--rathole PATH`):
//! rathole with TLS between its server and its client, one service per target. rathole forwards a
//! fixed port to a fixed target, with no SOCKS exchange and no per-connection authorisation, and
//! opens a new TLS connection for every forwarded connection (it does not multiplex).

use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A rathole server and client on loopback; `services[i]` forwards to the `i`-th target given.
pub struct Rathole {
    server: Child,
    client: Child,
    pub services: Vec<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Rathole {
    /// Starts both halves with TLS between them; returns once a 1-byte echo went through
    /// `services[echo]` (the client registers all services at once).
    pub async fn start(bin: &Path, targets: &[SocketAddr], echo: usize) -> anyhow::Result<Rathole> {
        let dir = tempfile::tempdir()?;
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_pem, cert.pem())?;
        std::fs::write(&key_pem, signing_key.serialize_pem())?;
        let pfx = dir.path().join("identity.pfx");
        let status = Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:bench", "-out"])
            .arg(&pfx)
            .arg("-inkey")
            .arg(&key_pem)
            .arg("-in")
            .arg(&cert_pem)
            .status()
            .context("openssl (needed to give rathole its PKCS#12 identity)")?;
        anyhow::ensure!(status.success(), "openssl pkcs12 failed");

        let control = free_port()?;
        let services = targets.iter().map(|_| free_port()).collect::<anyhow::Result<Vec<_>>>()?;
        let mut server = format!(
            "[server]\nbind_addr = \"{control}\"\n[server.transport]\ntype = \"tls\"\n[server.transport.tls]\npkcs12 = \"{}\"\npkcs12_password = \"bench\"\n",
            pfx.display()
        );
        let mut client = format!(
            "[client]\nremote_addr = \"{control}\"\n[client.transport]\ntype = \"tls\"\n[client.transport.tls]\ntrusted_root = \"{}\"\nhostname = \"localhost\"\n",
            cert_pem.display()
        );
        for (i, (service, target)) in services.iter().zip(targets).enumerate() {
            server +=
                &format!("[server.services.s{i}]\ntoken = \"bench\"\nbind_addr = \"{service}\"\n");
            client +=
                &format!("[client.services.s{i}]\ntoken = \"bench\"\nlocal_addr = \"{target}\"\n");
        }
        let spawn = |role: &str, config: String| -> anyhow::Result<Child> {
            let path = dir.path().join(format!("{role}.toml"));
            std::fs::write(&path, config)?;
            Command::new(bin)
                .arg(format!("--{role}"))
                .arg(&path)
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))
        };
        let rathole = Rathole {
            server: spawn("server", server)?,
            client: spawn("client", client)?,
            services,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !echoes(rathole.services[echo]).await {
            anyhow::ensure!(Instant::now() < deadline, "rathole did not forward within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(rathole)
    }

    /// Resident memory of both halves, in KiB.
    pub fn rss_kib(&self) -> u64 {
        crate::roles::rss_kib_of(self.server.id()) + crate::roles::rss_kib_of(self.client.id())
    }
}

impl Drop for Rathole {
    fn drop(&mut self) {
        for child in [&mut self.server, &mut self.client] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether one byte sent to `addr` comes back.
async fn echoes(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"!").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        anyhow::Ok(b == *b"!")
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Ok(true)))
}

/// A loopback port free at the time of asking.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
