//! `/metrics` scraped as Prometheus does (plain HTTP GET) and read with a Prometheus text-format
//! parser, so the tests check the exposition a real scraper would see.

use prometheus_parse::{Scrape, Value};
use std::io::{Read, Write};

/// Scrapes `http://{addr}/metrics`; `None` while nothing answers 200 there. Blocking: call it off
/// the async runtime (`spawn_blocking`).
pub fn scrape(addr: &str) -> Option<Scrape> {
    let mut tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    write!(tcp, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.lines().next()?.contains(" 200 ") {
        return None;
    }
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"),
        "not Prometheus' text format: {head}"
    );
    Some(Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("a valid exposition"))
}

/// The value of the sample `metric` whose labels include `labels`; `None` when there is none.
pub fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// Scrapes `addr` off the runtime.
pub async fn scrape_now(addr: std::net::SocketAddr) -> Option<Scrape> {
    tokio::task::spawn_blocking(move || scrape(&addr.to_string())).await.unwrap()
}
