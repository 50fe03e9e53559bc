//! The agent's metrics, served at `/metrics` in Prometheus' text format on `metricsListen` (off
//! by default): whether it is connected, the streams it serves, each dial's outcome, bytes.
//! Labels are closed lists; never a target.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type One = [(&'static str, &'static str); 1];

/// What the agent counts.
pub struct EndpointMetrics {
    registry: Registry,
    connected: Gauge,
    sessions: Counter,
    streams_open: Gauge,
    dials: Family<One, Counter>,
    bytes: Family<One, Counter>,
}

impl Default for EndpointMetrics {
    fn default() -> Self {
        let (connected, sessions, streams_open) = Default::default();
        let (dials, bytes) = Default::default();
        let mut registry = Registry::with_prefix("ism_endpoint");
        registry.register(
            "connected",
            "1 while a session to the gateway is up",
            Gauge::clone(&connected),
        );
        registry.register(
            "sessions",
            "Sessions established with the gateway (reconnects included)",
            Counter::clone(&sessions),
        );
        registry.register(
            "streams_open",
            "Scanner streams this endpoint is serving",
            Gauge::clone(&streams_open),
        );
        registry.register(
            "dials",
            "Targets dialed for scanners, by outcome (connected, or the refusal: not_allowed, host_unreachable, connection_refused, timed_out, ...)",
            Family::clone(&dials),
        );
        registry.register(
            "stream_bytes",
            "Bytes of ended streams (direction: to_target, to_scanner), counted when a stream ends",
            Family::clone(&bytes),
        );
        Self { registry, connected, sessions, streams_open, dials, bytes }
    }
}

impl EndpointMetrics {
    pub fn connected(&self) {
        self.connected.set(1);
        self.sessions.inc();
    }

    pub fn disconnected(&self) {
        self.connected.set(0);
    }

    /// A dial's outcome: `connected`, or the refusal's label.
    pub fn dialed(&self, outcome: &'static str) {
        self.dials.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// A stream being served until the guard is dropped, however its task ends.
    pub fn stream_started(&self) -> OpenStream {
        self.streams_open.inc();
        OpenStream(self.streams_open.clone())
    }

    pub fn stream_ended(&self, to_target: u64, to_scanner: u64) {
        self.bytes.get_or_create(&[("direction", "to_target")]).inc_by(to_target);
        self.bytes.get_or_create(&[("direction", "to_scanner")]).inc_by(to_scanner);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Counts a stream in `ism_endpoint_streams_open` while it lives.
pub struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Longest request head a scraper may send.
const MAX_HEAD: usize = 8 * 1024;
/// Time a scraper has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` for ever; anything else is answered 404 (or 400).
pub async fn serve(listener: TcpListener, metrics: Arc<EndpointMetrics>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = answer(tcp, &metrics).await;
        });
    }
}

/// Binds `addr` for [`serve`], with an error that names the setting.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("metricsListen {addr}: {e}"))
}

async fn answer(mut tcp: TcpStream, metrics: &EndpointMetrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok(head.windows(4).any(|w| w == b"\r\n\r\n"))
    })
    .await;
    let (status, body) = match complete {
        Ok(Ok(true)) => match head.split(|b| *b == b' ').take(2).collect::<Vec<_>>()[..] {
            [b"GET", b"/metrics"] => ("200 OK", metrics.render()),
            _ => ("404 Not Found", "only GET /metrics is served here\n".to_string()),
        },
        _ => ("400 Bad Request", "incomplete request\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(response.as_bytes()).await?;
    tcp.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_exposition() {
        let m = EndpointMetrics::default();
        m.connected();
        m.dialed("connected");
        m.dialed("not_allowed");
        drop(m.stream_started());
        m.stream_ended(10, 20);
        let text = m.render();
        for line in [
            "ism_endpoint_connected 1",
            "ism_endpoint_sessions_total 1",
            "ism_endpoint_streams_open 0",
            "ism_endpoint_dials_total{outcome=\"not_allowed\"} 1",
            "ism_endpoint_stream_bytes_total{direction=\"to_scanner\"} 20",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
