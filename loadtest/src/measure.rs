//! The measurements, the same code for every route: direct, ours, the open tunnels, the relays.

use crate::socks::{self, Login};
use crate::targets::{DOWNLOAD, LAST_CHUNK, UPLOAD_CHUNK};
use anyhow::Context;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the load generator reaches a target.
#[derive(Clone)]
pub enum Route {
    Direct,
    /// Through forwarders, one in front of each target (rathole's services, the relay chains):
    /// a connection to a target goes to the forwarder in front of it.
    Forwarders(Arc<HashMap<SocketAddr, SocketAddr>>),
    /// Through a SOCKS5 ingress, with a login: at ours the endpoint's name and a scanner secret,
    /// at wstunnel's the one it was started with.
    Socks {
        proxy: SocketAddr,
        login: Login,
    },
}

impl Route {
    pub async fn connect(&self, target: SocketAddr) -> anyhow::Result<TcpStream> {
        let s = match self {
            Route::Direct => TcpStream::connect(target).await?,
            Route::Forwarders(in_front) => {
                let forwarder = in_front
                    .get(&target)
                    .with_context(|| format!("no forwarder in front of {target}"))?;
                TcpStream::connect(forwarder).await?
            }
            Route::Socks { proxy, login } => socks::connect(*proxy, login, target).await?,
        };
        s.set_nodelay(true)?;
        Ok(s)
    }
}

/// Gbit/s of `streams` parallel bulk uploads to the sink for about `duration`; and the bytes the
/// sink counted.
pub async fn bulk(
    route: &Route,
    sink: SocketAddr,
    streams: usize,
    duration: Duration,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = route.connect(sink).await?;
            let mut chunk = vec![0xa5u8; UPLOAD_CHUNK];
            let mut sent = 0u64;
            while started.elapsed() < duration {
                s.write_all(&chunk).await?;
                sent += chunk.len() as u64;
            }
            chunk[0] = LAST_CHUNK;
            s.write_all(&chunk).await?;
            sent += chunk.len() as u64;
            let mut count = [0u8; 8];
            s.read_exact(&mut count).await?;
            anyhow::ensure!(
                u64::from_be_bytes(count) == sent,
                "the sink counted {} of {sent} bytes",
                u64::from_be_bytes(count)
            );
            Ok::<u64, anyhow::Error>(sent)
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await??;
    }
    Ok((total as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9, total))
}

/// Gbit/s of one bulk download from the sink for about `duration`, and the bytes received: the
/// direction of a scanner's large responses.
pub async fn download(
    route: &Route,
    sink: SocketAddr,
    duration: Duration,
) -> anyhow::Result<(f64, u64)> {
    let mut s = route.connect(sink).await?;
    let mut chunk = vec![DOWNLOAD; UPLOAD_CHUNK];
    s.write_all(&chunk).await?;
    let started = Instant::now();
    let mut received = 0u64;
    while started.elapsed() < duration {
        match s.read(&mut chunk).await? {
            0 => anyhow::bail!("the download ended after {received} bytes"),
            n => received += n as u64,
        }
    }
    Ok((received as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9, received))
}

/// Requests per second and latencies (ms, sorted) of `connections` keep-alive HTTP clients.
pub async fn http(
    route: &Route,
    server: SocketAddr,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let expected = crate::targets::http_response().len();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = route.connect(server).await?;
            let request = b"GET /1k HTTP/1.1\r\nHost: bench\r\n\r\n";
            let mut response = vec![0u8; expected];
            let mut latencies = Vec::new();
            while started.elapsed() < duration {
                let t = Instant::now();
                s.write_all(request).await?;
                s.read_exact(&mut response).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<Vec<f64>, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rps = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    Ok((rps, all))
}

/// Runs a workload whose client is one sequential loop (one open after another, one download's
/// reads) on a thread of its own, in a single-threaded runtime whose reactor is that thread: each
/// event on the client's socket wakes the client once, as a scanner's own event loop (or a
/// blocking client) is woken. Awaited in the benchmark's `block_on` instead, each such event woke
/// the worker waiting in `epoll_wait`, which then woke the main thread: a second wake-up per event
/// that every path paid alike (ARCHITECTURE.md, "Measured", 2026-12-05, tenth session).
pub async fn on_client_thread<F, T>(work: impl FnOnce() -> F + Send + 'static) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("bench-client".into()).spawn(move || {
        let done = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(work()),
            Err(e) => Err(anyhow::Error::new(e).context("the client thread's runtime")),
        };
        let _ = tx.send(done);
    })?;
    rx.await.context("the client thread ended without a result")?
}

/// Sequential connect + 1-byte echo + close, per second; and how many were done.
pub async fn open_rate(
    route: &Route,
    echo: SocketAddr,
    duration: Duration,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        echo_once(route, echo).await?;
        n += 1;
    }
    Ok((n as f64 / started.elapsed().as_secs_f64(), n))
}

/// One open through `route`, a 1-byte round trip to the echo target, and the close.
pub async fn echo_once(route: &Route, echo: SocketAddr) -> anyhow::Result<()> {
    let mut s = route.connect(echo).await?;
    s.write_all(b"!").await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(())
}

/// The `q` quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// p99 latency (ms) of one keep-alive HTTP client alone, then beside a bulk upload through the
/// same route: what a scanner's small requests suffer while another stream saturates the link.
pub async fn fairness(
    route: &Route,
    server: SocketAddr,
    sink: SocketAddr,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    let (_, alone) = http(route, server, 1, duration).await?;
    let bulk_route = route.clone();
    // The upload outlasts the latency run so that every request shares the link with it.
    let upload = tokio::spawn(async move {
        bulk(&bulk_route, sink, 1, duration + Duration::from_millis(500)).await
    });
    let (_, beside) = http(route, server, 1, duration).await?;
    upload.await??;
    Ok((quantile(&alone, 0.99), quantile(&beside, 0.99)))
}

/// Opens `count` streams to `target` (64 at a time) and returns them, open and silent.
pub async fn idle_streams(
    route: &Route,
    target: SocketAddr,
    count: usize,
) -> anyhow::Result<Vec<TcpStream>> {
    stream::iter(0..count).map(|_| route.connect(target)).buffer_unordered(64).try_collect().await
}

/// Attempts `count` opens (256 at a time); returns how many were refused and the seconds taken.
pub async fn firehose(route: &Route, target: SocketAddr, count: usize) -> (usize, f64) {
    let started = Instant::now();
    let refused = stream::iter(0..count)
        .map(|_| route.connect(target))
        .buffer_unordered(256)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    (refused, started.elapsed().as_secs_f64())
}

/// Where a sequential open's time goes through our SOCKS5 ingress: mean microseconds for the TCP
/// connect, the method exchange, the authentication, the CONNECT (the stream opened through the
/// tunnel and the target connected), and a 1-byte echo on the new stream.
pub async fn open_phases(
    proxy: SocketAddr,
    login: &Login,
    echo: SocketAddr,
    duration: Duration,
) -> anyhow::Result<[f64; 5]> {
    let mut sums = [0f64; 5];
    let mut n = 0u32;
    let started = Instant::now();
    while started.elapsed() < duration {
        let mut t = Instant::now();
        let mut lap = |sums: &mut [f64; 5], i: usize| {
            sums[i] += t.elapsed().as_secs_f64() * 1e6;
            t = Instant::now();
        };
        let mut s = TcpStream::connect(proxy).await?;
        s.set_nodelay(true)?;
        lap(&mut sums, 0);
        socks::offer_method(&mut s).await?;
        lap(&mut sums, 1);
        socks::authenticate(&mut s, login).await?;
        lap(&mut sums, 2);
        socks::request_connect(&mut s, echo).await?;
        lap(&mut sums, 3);
        s.write_all(b"!").await?;
        s.read_exact(&mut [0u8; 1]).await?;
        lap(&mut sums, 4);
        n += 1;
    }
    Ok(sums.map(|s| s / f64::from(n.max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_loop_runs_on_its_own_thread_with_its_own_reactor() {
        let echo = crate::targets::echo().await;
        let caller = std::thread::current().id();
        let (thread, name) = on_client_thread(move || async move {
            // Its sockets work without the caller's runtime: the client thread has a reactor.
            echo_once(&Route::Direct, echo).await?;
            let me = std::thread::current();
            Ok((me.id(), me.name().map(str::to_string)))
        })
        .await
        .unwrap();
        assert_ne!(thread, caller);
        assert_eq!(name.as_deref(), Some("bench-client"));
    }

    #[tokio::test]
    async fn a_failed_client_loop_fails_the_measurement() {
        let failed: anyhow::Result<()> =
            on_client_thread(|| async { anyhow::bail!("the echo target went away") }).await;
        let err = failed.unwrap_err();
        assert!(err.to_string().contains("the echo target went away"), "{err}");
    }
}
