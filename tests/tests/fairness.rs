//! Fairness: a bulk transfer on one stream must not starve the other streams of the same
//! endpoint. Every byte of credit the bulk stream holds can sit in the shared WebSocket ahead of a
//! small request, so the session holds a stream that shares it to a quarter window.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_tests::cluster::{
    connected, echo_server, provision, sink_server, socks_open, Backend, TestMachine, TestNode,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `count` 100-byte requests one after another and waits for each echo; returns the
/// 99th-percentile round trip.
async fn p99_round_trip(s: &mut TcpStream, count: usize) -> Duration {
    let request = [7u8; 100];
    let mut echo = [0u8; 100];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        s.write_all(&request).await.unwrap();
        s.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, request);
        times.push(t.elapsed());
    }
    times.sort();
    times[count * 99 / 100]
}

#[actix::test]
async fn small_requests_beside_a_bulk_upload_keep_their_latency() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let (echo, sink) = (echo_server().await, sink_server().await);
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&agent).await;
    let socks = node.socks();

    let (code, small) = socks_open(&socks, "dc1", &p.scanner_secret, echo.port()).await;
    assert_eq!(code, 0);
    let mut small = small.unwrap();
    small.set_nodelay(true).unwrap();
    p99_round_trip(&mut small, 200).await; // warm-up
    let alone = p99_round_trip(&mut small, 2000).await;

    // A bulk upload through the same endpoint, as fast as the tunnel takes it.
    let (code, bulk) = socks_open(&socks, "dc1", &p.scanner_secret, sink.port()).await;
    assert_eq!(code, 0);
    let mut bulk = bulk.unwrap();
    let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let uploader = tokio::spawn({
        let (stop, sent) = (stop.clone(), sent.clone());
        async move {
            let chunk = vec![0u8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                bulk.write_all(&chunk).await.unwrap();
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
    });
    // The upload is under way (its first window is in flight) before measuring.
    while sent.load(Ordering::Relaxed) < 4 << 20 {
        tokio::task::yield_now().await;
    }
    let before = sent.load(Ordering::Relaxed);
    let started = Instant::now();
    let beside = p99_round_trip(&mut small, 2000).await;
    let uploaded = sent.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    uploader.await.unwrap();

    let mbit = uploaded as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    let ratio = beside.as_secs_f64() / alone.as_secs_f64();
    println!("small-request p99 {alone:?} alone, {beside:?} beside a bulk upload ({ratio:.2}x); the upload ran at {mbit:.0} Mbit/s meanwhile");
    assert!(
        uploaded >= 16 << 20,
        "the bulk upload moved only {uploaded} bytes while the requests ran: it did not compete"
    );
    // Measured here: 2.1-2.4x with the quarter window for shared streams, 6.8-8.2x without it
    // (every stream keeping 256 KiB). The benchmark's release figure is 2.3-2.6x.
    assert!(
        ratio <= 4.0,
        "small requests starved: p99 {alone:?} alone, {beside:?} beside the upload ({ratio:.2}x)"
    );
    agent.stop();
}
