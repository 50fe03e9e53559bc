//! A node that stops (SIGTERM from systemd, Ctrl-C, a restart) first records what its sessions
//! and streams did: the end of a stream still open, the refusals still being counted, the close
//! of each session. Nothing the data path told is lost with the process.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_events::{AggregateId, Event};
use ism_tests::cluster::{
    connected_endpoint, echo_server, eventually, socks_open, Backend, TestNode, PATIENCE,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[actix::test]
async fn a_stopping_node_records_every_fact_of_its_sessions_first() {
    // A refusal window longer than the test, so that the second refusal is certainly counted in
    // the first one's window; and all the time a loaded machine may need to record on stopping.
    let node = TestNode::start_with("node-a", Backend::Embedded, |c| {
        c.refusal_window = Duration::from_secs(3600);
        c.stop_grace = PATIENCE;
    });
    let echo = echo_server().await;
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", echo.port())).await;
    let socks = node.socks();

    let (code, stream) = socks_open(&socks, "dc1", &p.scanner_secret, echo.port()).await;
    assert_eq!(code, 0);
    let mut stream = stream.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.unwrap();
    // Two refusals by the allowlist: the first is recorded at once, the second is counted in a
    // window still open when the node stops.
    let off_list = if echo.port() == 1 { 2 } else { 1 };
    for _ in 0..2 {
        assert_eq!(
            socks_open(&socks, "dc1", &p.scanner_secret, off_list).await.0,
            2,
            "refused by the allowlist"
        );
    }
    let tunnel = node
        .state
        .sessions
        .get(p.endpoint.parse().unwrap())
        .expect("the endpoint's session")
        .tunnel;

    // The same stop a restart, Ctrl-C or SIGTERM makes; the restarted node reads the same log.
    let restarting = std::thread::spawn(move || node.restart());
    eventually("the node restarting", || {
        std::future::ready(restarting.is_finished().then_some(()))
    })
    .await;
    let node = restarting.join().unwrap();

    let events = node.state.log.read_aggregate(&AggregateId::tunnel(tunnel)).await.unwrap();
    let names: Vec<&str> = events.iter().map(|r| r.envelope.event.name()).collect();
    let count = |name: &str| names.iter().filter(|n| **n == name).count();
    assert_eq!(count("StreamOpened"), 1, "{names:?}");
    assert_eq!(count("StreamClosed"), 1, "the open stream's end is recorded: {names:?}");
    assert_eq!(count("StreamRefused"), 1, "{names:?}");
    let counted: Vec<u64> = events
        .iter()
        .filter_map(|r| match &r.envelope.event {
            Event::StreamRefusalsRepeated(r) => Some(r.count),
            _ => None,
        })
        .collect();
    assert_eq!(counted, vec![1], "the refusal still being counted is recorded: {names:?}");
    let closed: Vec<&str> = events
        .iter()
        .filter_map(|r| match &r.envelope.event {
            Event::TunnelClosed { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    // Recorded by the stopping node itself, not by the restarted one cleaning up after it.
    assert_eq!(closed.len(), 1, "{names:?}");
    assert!(closed[0].contains("shutting down"), "{closed:?}");
    agent.stop();
}

/// After a crash (no graceful stop), the restarted node records what the crashed one could not:
/// the end of every stream its sessions carried (the bytes they moved unknown), then the end of
/// the sessions.
#[actix::test]
async fn a_node_restarting_after_a_crash_records_the_end_of_the_streams_it_carried() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let echo = echo_server().await;
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", echo.port())).await;
    let (code, stream) = socks_open(&node.socks(), "dc1", &p.scanner_secret, echo.port()).await;
    assert_eq!(code, 0);
    let tunnel = node
        .state
        .sessions
        .get(p.endpoint.parse().unwrap())
        .expect("the endpoint's session")
        .tunnel;
    let log = node.state.log.clone();
    let names = |log: std::sync::Arc<dyn ism_events::EventLog>| async move {
        let events = log.read_aggregate(&AggregateId::tunnel(tunnel)).await.unwrap();
        events.iter().map(|r| r.envelope.event.clone()).collect::<Vec<_>>()
    };
    // The stream's opening is recorded (told to the tunnel actor, appended a moment later)...
    eventually("the stream's opening recorded", || {
        let log = log.clone();
        async move {
            let events = names(log).await;
            events.iter().any(|e| matches!(e, Event::StreamOpened { .. })).then_some(())
        }
    })
    .await;
    drop(log); // the log must be free for the restarted node (sled locks it while open)
               // ...then the node dies with the stream open.
    let restarting = std::thread::spawn(move || node.crash_and_restart());
    eventually("the node restarting", || {
        std::future::ready(restarting.is_finished().then_some(()))
    })
    .await;
    let node = restarting.join().unwrap();
    let events = names(node.state.log.clone()).await;
    let ends: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::StreamClosed { end, .. } => Some(end.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 1, "{events:?}");
    assert!(ends[0].contains("cut: gateway node node-a stopped"), "{ends:?}");
    assert!(
        matches!(events.last(), Some(Event::TunnelClosed { reason }) if reason.contains("restarted")),
        "{events:?}"
    );
    drop(stream);
    agent.stop();
}
