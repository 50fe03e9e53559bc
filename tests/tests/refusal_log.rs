//! The log's pace for refusals anyone can cause (`ism_gateway::log_pace`): what it holds back
//! of a burst is still logged, as a count, once the burst is over.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_tests::cluster::{eventually, node_on_a_manual_clock};
use ism_tests::log_capture::Captured;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A burst of refusals logs its first at once and holds the rest back; once the log's pace allows
/// a line, the node's ticker logs how many were held back, though no later refusal came to carry
/// them (before, they reached only the metrics).
#[actix::test]
async fn the_end_of_a_burst_of_refusals_is_logged_once_the_pace_allows_a_line() {
    let logs = Captured::install();
    let (node, clock) = node_on_a_manual_clock();
    for _ in 0..3 {
        // SOCKS version 4.
        let mut socks = TcpStream::connect(node.socks()).await.unwrap();
        socks.write_all(&[4, 1]).await.unwrap();
        let _ = socks.read_to_end(&mut Vec::new()).await;
    }
    // All three counted (the metric after the pace has seen each), the first logged.
    eventually("three refusals counted", || async {
        let s = ism_tests::metrics::scrape_now(node.addresses.api).await?;
        let name = "ism_scanner_request_refusals_total";
        let refused =
            ism_tests::metrics::value(&s, name, &[("ingress", "socks5"), ("kind", "protocol")]);
        (refused == Some(3.0)).then_some(())
    })
    .await;
    // The line is written after the pace's answer, perhaps on another thread than the count.
    eventually("the first refusal logged", || async {
        (logs.text().matches("SOCKS5 request refused").count() == 1).then_some(())
    })
    .await;
    let held_back = "scanner requests refused since the last line";
    // Not while the node's clock stands (a check the ticker may not have reached yet: the line
    // awaited below is what the test stands on).
    assert!(!logs.text().contains(held_back), "not while the node's clock stands: {}", logs.text());

    clock.advance_ms(ism_gateway::log_pace::LOGGED_EVERY_MS);
    let line = eventually("the held-back refusals logged", || async {
        logs.text().lines().find(|l| l.contains(held_back)).map(str::to_owned)
    })
    .await;
    for field in ["ingress=\"socks5\"", "kind=\"protocol\"", "refused=2"] {
        assert!(line.contains(field), "{field} in {line}");
    }
}
