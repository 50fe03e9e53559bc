//! What ours is measured against in the same run, beside direct loopback:
//!
//! - wstunnel 10.6.2 (`--wstunnel PATH`, by default the anchor build beside the workspace), the
//!   tunnel our users would pick instead: its reverse SOCKS5 over wss, as
//!   `../shared/anchors/README.md` starts it, with a login on its SOCKS5 listener as ours has
//!   (`?login=..&password=..`), so that a scanner goes through the same exchange on both; it
//!   opens a new TLS WebSocket for every SOCKS connection (it does not multiplex), and it answers
//!   a CONNECT as soon as it has read it, before the tunnel or the target has been reached.
//! - rathole 0.5 (`--rathole PATH`): one service per target, a fixed port to a fixed target, with
//!   no SOCKS exchange and no per-connection authorisation; a new TLS connection for every
//!   forwarded connection.
//! - The relay chains of [`crate::relay`] (with `limits`): what any two-hop design pays here.
//!
//! Each open tunnel is a server (the cloud side) and a client (inside the private network) on
//! loopback, with TLS between them.

use crate::compare::Path;
use crate::measure::Route;
use crate::roles::ChildRole;
use crate::socks::Login;
use crate::targets::Targets;
use anyhow::Context;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The anchors of this run, running: wstunnel and rathole when their binaries are given, the relay
/// chains when the limits are measured.
pub struct Anchors {
    wstunnel: Option<Wstunnel>,
    rathole: Option<Rathole>,
    relay_chains: Vec<RelayChains>,
}

impl Anchors {
    pub async fn start(
        wstunnel: Option<&std::path::Path>,
        rathole: Option<&std::path::Path>,
        limits: bool,
        t: &Targets,
        link_delay: Duration,
    ) -> anyhow::Result<Anchors> {
        let wstunnel = match wstunnel {
            Some(bin) => Some(Wstunnel::start(bin, t.echo, link_delay).await?),
            None => None,
        };
        let rathole = match rathole {
            Some(bin) => {
                Some(Rathole::start(bin, &[t.sink, t.echo, t.http, t.hold], t.echo).await?)
            }
            None => None,
        };
        let relay_chains = if limits {
            vec![
                RelayChains::start("relay_chain", false, t)?,
                RelayChains::start("tls_relay_chain", true, t)?,
            ]
        } else {
            Vec::new()
        };
        Ok(Anchors { wstunnel, rathole, relay_chains })
    }

    /// The open tunnels' paths: they go through every workload, held connections included.
    pub fn tunnels(&self) -> Vec<Path> {
        self.wstunnel
            .iter()
            .map(Wstunnel::path)
            .chain(self.rathole.iter().map(Rathole::path))
            .collect()
    }

    /// The relay chains' paths: the rate workloads only. Their copy buffers, allocated up front,
    /// would make a held connection cost what the relays reserve, not what a tunnel needs.
    pub fn relay_chains(&self) -> Vec<Path> {
        self.relay_chains.iter().map(|chains| chains.path.clone()).collect()
    }
}

/// Descriptors an open tunnel's process keeps for other things than held connections.
const OTHER_DESCRIPTORS: u64 = 100;

/// Connections an open tunnel can hold at once. Each of its processes keeps two sockets per
/// connection (wstunnel's server: the scanner's and its TLS WebSocket; its client: that
/// WebSocket and the target's), within the open-file limit they inherit from the benchmark.
pub fn holdable_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let per_process = limit.map_or(u64::MAX, |l| l.saturating_sub(OTHER_DESCRIPTORS) / 2);
    usize::try_from(per_process).unwrap_or(usize::MAX)
}

/// A child process running a relay chain in front of the sink, the echo and the HTTP targets.
struct RelayChains {
    path: Path,
    _process: ChildRole,
}

impl RelayChains {
    fn start(key: &'static str, tls: bool, t: &Targets) -> anyhow::Result<RelayChains> {
        let targets = [t.sink, t.echo, t.http];
        let args = std::iter::once("relay-chains".to_string())
            .chain(targets.map(|target| target.to_string()))
            .chain(tls.then(|| "--tls".to_string()));
        let mut process = ChildRole::spawn(args)?;
        let in_front = process
            .line()?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<SocketAddr>, _>>()
            .context("the relay chains' addresses")?;
        let path = Path {
            key,
            route: Route::Forwarders(Arc::new(targets.into_iter().zip(in_front).collect())),
            processes: vec![process.id()],
        };
        Ok(RelayChains { path, _process: process })
    }
}

/// An open tunnel's two processes, killed when dropped.
struct Halves {
    server: Child,
    client: Child,
}

impl Halves {
    fn pids(&self) -> Vec<u32> {
        vec![self.server.id(), self.client.id()]
    }
}

impl Drop for Halves {
    fn drop(&mut self) {
        for child in [&mut self.server, &mut self.client] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A wstunnel server and client on loopback; scanners enter at the server's SOCKS5 listener.
pub struct Wstunnel {
    halves: Halves,
    socks: SocketAddr,
    login: Login,
}

impl Wstunnel {
    /// Starts both halves, `link_delay` apart each way (see [`crate::link_delay`]), scanners let
    /// in with a login made for this run; returns once a 1-byte echo went through to `echo`.
    pub async fn start(
        bin: &std::path::Path,
        echo: SocketAddr,
        link_delay: Duration,
    ) -> anyhow::Result<Wstunnel> {
        // The password goes into the listener's URL, so it is hex.
        let login =
            Login { username: "bench".into(), password: uuid::Uuid::new_v4().simple().to_string() };
        let socks = free_port()?;
        let wss = format!("wss://{}", free_port()?);
        let listen =
            format!("socks5://{socks}?login={}&password={}", login.username, login.password);
        let dial = match link_delay.is_zero() {
            true => wss.clone(),
            false => crate::link_delay::in_front_of(&wss, link_delay).await?,
        };
        let spawn = |args: &[&str]| {
            Command::new(bin)
                .args(args)
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))
        };
        let wstunnel = Wstunnel {
            halves: Halves {
                server: spawn(&["server", "--log-lvl", "WARN", &wss])?,
                client: spawn(&["client", "--log-lvl", "WARN", "-R", &listen, &dial])?,
            },
            socks,
            login,
        };
        until_echoed(&wstunnel.path().route, echo, "wstunnel").await?;
        Ok(wstunnel)
    }

    pub fn path(&self) -> Path {
        Path {
            key: "wstunnel",
            route: Route::Socks { proxy: self.socks, login: self.login.clone() },
            processes: self.halves.pids(),
        }
    }
}

/// A rathole server and client on loopback, one service in front of each target.
pub struct Rathole {
    halves: Halves,
    in_front: Arc<HashMap<SocketAddr, SocketAddr>>,
    _dir: tempfile::TempDir,
}

impl Rathole {
    /// Starts both halves with TLS between them; returns once a 1-byte echo went through to
    /// `echo`, one of the `targets` (the client registers all services at once).
    pub async fn start(
        bin: &std::path::Path,
        targets: &[SocketAddr],
        echo: SocketAddr,
    ) -> anyhow::Result<Rathole> {
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
            halves: Halves { server: spawn("server", server)?, client: spawn("client", client)? },
            in_front: Arc::new(targets.iter().copied().zip(services).collect()),
            _dir: dir,
        };
        until_echoed(&rathole.path().route, echo, "rathole").await?;
        Ok(rathole)
    }

    pub fn path(&self) -> Path {
        Path {
            key: "rathole",
            route: Route::Forwarders(self.in_front.clone()),
            processes: self.halves.pids(),
        }
    }
}

/// Returns once one byte sent to `echo` through `route` comes back; fails after 20 s.
async fn until_echoed(route: &Route, echo: SocketAddr, tunnel: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !echoes(route, echo).await {
        anyhow::ensure!(Instant::now() < deadline, "{tunnel} did not forward within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Whether one byte sent to `echo` through `route` comes back.
async fn echoes(route: &Route, echo: SocketAddr) -> bool {
    let attempt = async {
        let mut s = route.connect(echo).await?;
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
