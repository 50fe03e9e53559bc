//! Admission control: beyond an endpoint's stream cap, scanners get a fast, clear refusal instead
//! of queued memory, and a firehose of opens leaves the gateway's memory and its log bounded,
//! while the log still accounts for every refusal.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_events::{AggregateId, Event};
use ism_tests::cluster::{
    connected_endpoint, open_fds, rss_kib, sink_server, socks_open, Backend, TestNode,
};
use std::time::{Duration, Instant};

/// The refusals a tunnel's log records: (events, refusals they account for).
async fn recorded_refusals(node: &TestNode, tunnel: uuid::Uuid) -> (usize, u64) {
    let events = node.state.log.read_aggregate(&AggregateId::tunnel(tunnel)).await.unwrap();
    events.iter().fold((0, 0), |(n, total), r| match &r.envelope.event {
        Event::StreamRefused { .. } => (n + 1, total + 1),
        Event::StreamRefusalsRepeated(r) => {
            assert!(
                !r.targets.is_empty() && r.targets.len() <= ism_gateway::refusals::LISTED_TARGETS,
                "{:?}",
                r.targets
            );
            (n + 1, total + r.count)
        }
        _ => (n, total),
    })
}

#[actix::test]
async fn beyond_the_cap_scanners_are_refused_at_once_and_a_firehose_stays_bounded() {
    let node = TestNode::start_with("node-a", Backend::Embedded, |c| c.session.max_streams = 32);
    let target = sink_server().await;
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", target.port())).await;
    let socks = node.socks();

    // Fill the cap with streams that stay open.
    let mut open = Vec::new();
    for _ in 0..32 {
        let (code, s) = socks_open(&socks, "dc1", &p.scanner_secret, target.port()).await;
        assert_eq!(code, 0, "streams within the cap open");
        open.push(s.unwrap());
    }
    // The capacity is visible: the endpoint is at its limit.
    let shown = node.api().endpoint(&p.endpoint).await.unwrap();
    assert_eq!(
        (shown["open_streams"].as_u64(), shown["stream_limit"].as_u64()),
        (Some(32), Some(32)),
        "{shown}"
    );
    // The next one is refused with general failure (0x01), fast.
    let started = Instant::now();
    let (code, _) = socks_open(&socks, "dc1", &p.scanner_secret, target.port()).await;
    assert_eq!(code, 1);
    assert!(started.elapsed() < Duration::from_secs(1), "the refusal took {:?}", started.elapsed());

    // A firehose: 50 000 opens, 200 at a time, all refused at the cap.
    let fds_before = open_fds();
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut refused = 0usize;
    let mut workers = Vec::new();
    for _ in 0..200 {
        let (socks, secret) = (socks.clone(), p.scanner_secret.clone());
        let port = target.port();
        workers.push(tokio::task::spawn_local(async move {
            let mut refused = 0usize;
            for _ in 0..250 {
                if socks_open(&socks, "dc1", &secret, port).await.0 == 1 {
                    refused += 1;
                }
            }
            refused
        }));
    }
    for w in workers {
        refused += w.await.unwrap();
    }
    let elapsed = started.elapsed();
    let growth_mib = rss_kib().saturating_sub(rss_before) / 1024;
    println!("firehose: 50000 opens in {elapsed:?} ({:.0}/s), {refused} refused at the cap, RSS growth {growth_mib} MiB", 50_000.0 / elapsed.as_secs_f64());
    assert_eq!(refused, 50_000, "every open beyond the cap is refused");
    assert!(growth_mib < 256, "the firehose grew memory by {growth_mib} MiB");

    // The log accounts for all 50 001 refusals (the one before the firehose too), once the last
    // counting window is over, in a handful of events: two per second of firehose at most.
    let tunnel = node
        .state
        .sessions
        .get(p.endpoint.parse().unwrap())
        .expect("the endpoint's session")
        .tunnel;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (events, accounted) = loop {
        let (events, accounted) = recorded_refusals(&node, tunnel).await;
        if accounted >= 50_001 || Instant::now() > deadline {
            break (events, accounted);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("the log holds {events} refusal events for {accounted} refusals");
    assert_eq!(accounted, 50_001, "every refusal is accounted for in the log");
    let bound = 2 * (elapsed.as_secs() as usize + 2);
    assert!(
        events <= bound,
        "{events} refusal events for a {elapsed:?} firehose (at most {bound})"
    );
    // The streams within the cap still work, and sockets are not leaked.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.state.sessions.open_streams() != 0 {
        assert!(
            Instant::now() < deadline,
            "streams left open: {}",
            node.state.sessions.open_streams()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, _) = socks_open(&socks, "dc1", &p.scanner_secret, target.port()).await;
    assert_eq!(code, 0);
    assert!(
        open_fds() <= fds_before + 8,
        "file descriptors leaked: {} before, {} after",
        fds_before,
        open_fds()
    );
    agent.stop();
}
