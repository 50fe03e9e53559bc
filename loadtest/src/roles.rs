//! The benchmark's other processes: a gateway node and a process of endpoint agents. They run as
//! children of the benchmark (this same binary, in another role), so the memory the benchmark
//! reports is theirs alone, not the load generator's. Each starts as the product's binaries do:
//! `ism_glibc::set_up` (on an AMD CPU with FSRM it first starts itself again with glibc's vector
//! copies, then it fixes its heap's thresholds); so do the relay chains, so that they stay the
//! reference for ours.

use anyhow::{bail, Context};
use ism_endpoint::{Agent, AgentHandle, AgentStatus, EndpointConfig};
use ism_gateway::NodeConfig;
use ism_telemetry::{LogFormat, TraceConfig, Tracing};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// What the gateway child tells the benchmark once it listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub wss: String,
    pub socks: String,
    pub http_proxy: String,
    pub api: String,
    pub admin_token: String,
    pub ca_file: PathBuf,
}

/// Runs a gateway node until standard input closes (the benchmark ends). The one scanner
/// credential of the benchmark may use every stream of the endpoint's cap, so that the cap is
/// what the held streams fill and what the firehose meets.
pub fn run_gateway(
    data_dir: &Path,
    max_streams: usize,
    event_log: Option<String>,
) -> anyhow::Result<()> {
    set_up_as_the_binaries();
    ism_tunnel::fd_limit::raise();
    let mut config = NodeConfig::local("bench-node", data_dir);
    config.event_log = event_log;
    config.session.max_streams = max_streams;
    config.stream_limits.per_credential = max_streams;
    // The firehose measures refusals at the cap: streams beyond it are refused at once, not
    // queued (the queue would hold the first of them for the queue timeout).
    config.stream_limits.queue.length = 0;
    let rt = || tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    actix::System::with_tokio_rt(rt).block_on(async move {
        as_the_binaries_do("ism-gateway")?;
        let node = ism_gateway::start(config).await?;
        let a = node.addresses;
        let info = NodeInfo {
            wss: a.endpoint_wss.to_string(),
            socks: a.socks.to_string(),
            http_proxy: a.http_proxy.to_string(),
            api: a.api.to_string(),
            admin_token: node.admin_token.clone(),
            ca_file: node.ca_file.clone().context("a generated CA")?,
        };
        announce(&serde_json::to_string(&info)?)?;
        until_parent_leaves().await?;
        node.stop().await;
        Ok(())
    })
}

/// Runs one agent per install directory under `dir` (see [`endpoint_config`]); prints
/// `connected <n> <seconds>` once all are connected and `nodes <node>=<count>...` (where they
/// landed), then runs until standard input closes. A line `lost <node> <unix ms>` on standard input
/// (the benchmark killed that node then) makes it wait for every agent that was on that node to
/// be connected to another one, and print `back <not back> <ms>...`: for each, the milliseconds
/// from the kill to its new session.
pub fn run_endpoints(dir: &Path) -> anyhow::Result<()> {
    set_up_as_the_binaries();
    ism_tunnel::fd_limit::raise();
    let installs: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    // One agent runs as the binary does; thousands of simulated ones share every core.
    let rt = match installs.len() {
        1 => ism_endpoint::agent::runtime()?,
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    rt.block_on(async {
        as_the_binaries_do("ism-endpoint")?;
        let started = std::time::Instant::now();
        let mut agents = Vec::new();
        for install in installs {
            let config = install.path().join("config/application.properties");
            agents.push(Agent::new(EndpointConfig::load(&config, &[])?)?.spawn());
        }
        let mut on_node = Vec::with_capacity(agents.len());
        for a in &agents {
            match a
                .wait_for(Duration::from_secs(600), |s| {
                    matches!(s, AgentStatus::Connected { .. } | AgentStatus::Stopped(_))
                })
                .await
            {
                Ok(AgentStatus::Connected { node, .. }) => on_node.push(node),
                other => bail!("an endpoint did not connect: {other:?}"),
            }
        }
        announce(&format!("connected {} {:.3}", agents.len(), started.elapsed().as_secs_f64()))?;
        let mut spread = std::collections::BTreeMap::<&str, usize>::new();
        for node in &on_node {
            *spread.entry(node).or_default() += 1;
        }
        let spread: Vec<String> = spread.iter().map(|(node, n)| format!("{node}={n}")).collect();
        announce(&format!("nodes {}", spread.join(" ")))?;
        let mut commands = parent_lines();
        while let Some(line) = commands.recv().await {
            let Some((node, killed_ms)) = line
                .strip_prefix("lost ")
                .and_then(|rest| rest.split_once(' '))
                .and_then(|(node, ms)| Some((node.to_string(), ms.parse::<u64>().ok()?)))
            else {
                bail!("unknown command {line:?}");
            };
            let on_lost = agents.iter().zip(&on_node).filter(|(_, n)| **n == node);
            let backs = futures_util::future::join_all(
                on_lost.map(|(a, _)| back_elsewhere(a, &node, killed_ms)),
            )
            .await;
            let not_back = backs.iter().filter(|b| b.is_none()).count();
            let ms: Vec<String> = backs.iter().flatten().map(u64::to_string).collect();
            announce(&format!("back {not_back} {}", ms.join(" ")))?;
        }
        for a in &agents {
            a.stop();
        }
        Ok(())
    })
}

/// Milliseconds from `killed_ms` (Unix time) until `agent` had a session on a node other than
/// `lost`; `None` if it had none within two minutes.
async fn back_elsewhere(agent: &AgentHandle, lost: &str, killed_ms: u64) -> Option<u64> {
    let back = agent
        .wait_for(
            Duration::from_secs(120),
            |s| matches!(s, AgentStatus::Connected { node, .. } if node != lost),
        )
        .await;
    match back {
        Ok(AgentStatus::Connected { since, .. }) => {
            let since = since.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
            Some(u64::try_from(since).ok()?.saturating_sub(killed_ms))
        }
        _ => None,
    }
}

/// Serves [`targets::hold`](crate::targets::hold) until standard input closes; prints its
/// address first. It runs apart so that its sockets count against neither the load generator's
/// descriptor limit nor the memory measured.
pub fn run_hold_target() -> anyhow::Result<()> {
    ism_tunnel::fd_limit::raise();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        announce(&crate::targets::hold().await.to_string())?;
        until_parent_leaves().await
    })
}

/// Runs a two-relay chain of [`crate::relay`] in front of each target until standard input
/// closes; prints their addresses first, on one line, in the order of the targets. Apart from the
/// load generator, as the tunnel's hops are.
pub fn run_relay_chains(targets: &[std::net::SocketAddr], tls: bool) -> anyhow::Result<()> {
    set_up_as_the_binaries();
    ism_tunnel::fd_limit::raise();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let mut in_front = Vec::new();
        for &target in targets {
            in_front.push(crate::relay::chain(target, tls).await?.to_string());
        }
        announce(&in_front.join(" "))?;
        until_parent_leaves().await
    })
}

/// Tells the parent one line.
/// Installs what `ism-gateway` and `ism-endpoint` install at start by default: the log
/// subscriber (and no tracer: without an exporter there is none), so that the spans each stream
/// makes cost here what they cost there. The log goes to standard error, at `warn` unless
/// `RUST_LOG` says otherwise (standard output is how a role talks to the benchmark).
fn as_the_binaries_do(service: &'static str) -> anyhow::Result<()> {
    let config =
        TraceConfig { service, instance: "bench".into(), otlp_endpoint: None, sample_ratio: 1.0 };
    let tracing = Tracing::new(&config)?;
    // The layer's tracer keeps the provider for the rest of the process.
    Ok(ism_telemetry::logs::init(LogFormat::Text, &tracing)?)
}

fn announce(line: &str) -> anyhow::Result<()> {
    println!("{line}");
    Ok(std::io::stdout().flush()?)
}

/// Returns when the parent closes our standard input (it ended, or is done with us).
async fn until_parent_leaves() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().count()).await?;
    Ok(())
}

/// The lines the parent writes to our standard input, until it closes it.
fn parent_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sets glibc up as the product's binaries do (`ism_glibc::set_up`: the vector copies' restart,
/// then the heap's thresholds); a restart that failed, or a threshold refused, shows on the
/// benchmark's standard error.
fn set_up_as_the_binaries() {
    let set_up = ism_glibc::set_up();
    if let ism_glibc::copies::VectorCopies::Unavailable(why) = &set_up.copies {
        eprintln!("vector copies unavailable: {}", ism_events::escaped(why));
    }
    if let ism_glibc::heap::HeapThresholds::Refused(name) = set_up.heap {
        eprintln!("glibc refused the heap's {name} threshold");
    }
}

/// A child process of this binary, ended when dropped.
pub struct ChildRole {
    child: Child,
    pub stdout: BufReader<ChildStdout>,
}

impl ChildRole {
    pub fn spawn(
        args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
    ) -> anyhow::Result<ChildRole> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        Ok(ChildRole { child, stdout })
    }

    /// Writes one line to the child's standard input.
    pub fn tell(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().context("the child's standard input")?;
        writeln!(stdin, "{line}")?;
        Ok(stdin.flush()?)
    }

    /// The next line the child prints.
    pub fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the child process ended early");
        }
        Ok(line.trim().to_string())
    }

    /// The child's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.child.id())
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// File descriptors the child holds open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }
}

/// CPU time process `pid` has used so far (user and system, all threads), in seconds; 0 once it
/// is gone. Unlike a throughput, it hardly depends on what else the machine is doing.
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, hence the last ')'): state is the
    // first, utime and stime the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let per_second = rustix::param::clock_ticks_per_second().max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / per_second
}

/// Resident memory of process `pid` in KiB (0 once it is gone).
pub fn rss_kib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for ChildRole {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes an endpoint's `config/application.properties` in the install directory `dir`.
pub fn endpoint_config(
    dir: &Path,
    gateway: &str,
    ca_file: &Path,
    key: &str,
    allowed: &str,
    max_streams: usize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("config"))?;
    let path = dir.join("config/application.properties");
    std::fs::write(
        &path,
        format!("token = {key}\ngateway = {gateway}\ngatewayCaFile = {}\nallowedTargets = {allowed}\nmaxStreams = {max_streams}\nstartupAttempts = 0\n", ca_file.display()),
    )?;
    Ok(())
}
