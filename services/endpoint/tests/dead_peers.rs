//! Heartbeats and dead peers: a frozen endpoint (SIGSTOP) or a link that silently stops carrying
//! packets is detected by the side still alive, the dead session's streams end, the endpoint comes
//! back by itself, and a reconnect by the same endpoint fences out its old session. These run with
//! fast heartbeats ([`FAST_HEARTBEATS`]) and wait for each state change; that detection takes the
//! idle timeout and no longer is the tunnel's paused-clock tests
//! (`a_silent_peer_is_declared_dead_after_the_idle_timeout`).
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_endpoint::AgentStatus;
use ism_tests::cluster::{
    connected, echo_server, eventually, freezable_relay, provision, Backend, TestMachine, TestNode,
    FAST_HEARTBEATS, PATIENCE,
};
use ism_tests::install::{terminate, Install};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The agent's properties for fast heartbeats.
fn fast_heartbeats() -> String {
    format!(
        "heartbeatIntervalMs = {}\ndeadPeerTimeoutMs = {}",
        FAST_HEARTBEATS.ping_interval.as_millis(),
        FAST_HEARTBEATS.idle_timeout.as_millis()
    )
}

fn fast_node() -> TestNode {
    TestNode::start_with("node-a", Backend::Embedded, |c| c.session.timing = FAST_HEARTBEATS)
}

fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

#[actix::test]
async fn a_frozen_endpoint_is_detected_and_comes_back() {
    let node = fast_node();
    let p = provision(&node.api(), "dc1").await;
    let echo = echo_server().await;
    let tasks_before = node.tasks();
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        &format!("allowedTargets = 127.0.0.1:{}\n{}", echo.port(), fast_heartbeats()),
    );
    let service = install.start(&[]).await;
    let mut stream = ism_cli::scanner::connect(
        &node.socks(),
        "dc1",
        &p.scanner_secret,
        "127.0.0.1",
        echo.port(),
    )
    .await
    .unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.unwrap();

    // Freeze the endpoint: its socket stays open, it just never answers again.
    let pid = service.id().unwrap();
    signal(pid, "-STOP");
    node.sessions_become(0).await;
    // Its streams ended with it: the scanner's connection is closed.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the scanner's stream must end with the session");
    node.streams_end().await;

    // Thawed, the endpoint notices its session is gone and reconnects by itself.
    signal(pid, "-CONT");
    node.sessions_become(1).await;
    terminate(service).await;
    node.sessions_become(0).await;
    drop(stream);
    eventually("the node's tasks back to where they were", || {
        std::future::ready((node.tasks() <= tasks_before).then_some(()))
    })
    .await;
}

#[actix::test]
async fn a_link_that_drops_everything_is_detected_by_the_endpoint() {
    let node = fast_node();
    let p = provision(&node.api(), "dc1").await;
    let frozen = Arc::new(AtomicBool::new(false));
    let relay = freezable_relay(node.addresses.endpoint_wss, frozen.clone()).await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint_with(
        &node,
        &p.key,
        "127.0.0.1",
        &relay.to_string(),
        &fast_heartbeats(),
    );
    connected(&agent).await;

    frozen.store(true, Ordering::SeqCst);
    let status = agent
        .wait_for(PATIENCE, |s| matches!(s, AgentStatus::Connecting { .. }))
        .await
        .expect("the endpoint must notice the dead link");
    assert!(
        matches!(&status, AgentStatus::Connecting { last_error: Some(e), .. } if e.contains("idle timeout")),
        "{status:?}"
    );
    node.sessions_become(0).await;

    frozen.store(false, Ordering::SeqCst);
    connected(&agent).await;
    agent.stop();
}

#[actix::test]
async fn a_reconnect_by_the_same_endpoint_fences_out_its_old_session() {
    // The node's clock stands still, so the copied-identity rule's window cannot run out here.
    let clock = ism_events::ManualClock::at(1_790_000_000_000);
    let node = TestNode::start_with("node-a", Backend::Embedded, move |c| {
        c.clock = Arc::new(clock.clone())
    });
    let p = provision(&node.api(), "dc1").await;
    let endpoint = p.endpoint.parse().unwrap();
    let machine = TestMachine::new();
    let old = machine.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&old).await;
    // The same machine identity connects again from a new agent process (a restarted agent whose
    // old TCP connection is not dead yet, after a network change): the new session wins at once,
    // never "already connected".
    let new = machine.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&new).await;
    let session = node.state.sessions.get(endpoint).expect("the new agent's session").tunnel;
    // Here the old agent was alive, though: two agents with one identity. It comes back, is told
    // so and stops, instead of fencing the new one out in turn.
    let stopped = tokio::time::timeout(PATIENCE, old.join()).await.expect("the old agent stops");
    let diagnosis = stopped.expect_err("the old agent is refused");
    assert!(diagnosis.message.contains("in use by another running endpoint"), "{diagnosis}");
    assert!(matches!(new.status(), AgentStatus::Connected { .. }), "{:?}", new.status());
    node.sessions_become(1).await;
    assert_eq!(node.state.sessions.get(endpoint).map(|s| s.tunnel), Some(session));
    new.stop();
}
