//! Heartbeats and dead peers: a frozen endpoint (SIGSTOP) or a link that silently stops carrying
//! packets is detected within 10 s by the side still alive, the dead session's streams end with a
//! reset, the endpoint comes back by itself, a reconnect by the same endpoint fences out its old
//! session at once, and descriptors return to where they were.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_endpoint::AgentStatus;
use ism_tests::cluster::{
    connected, echo_server, open_fds, provision, Backend, TestMachine, TestNode,
};
use ism_tests::install::{terminate, Install};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DETECTION_LIMIT: Duration = Duration::from_secs(10);

fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[actix::test]
async fn a_frozen_endpoint_is_detected_within_ten_seconds_and_comes_back() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let echo = echo_server().await;
    let (fds_before, tasks_before) = (open_fds(), node.tasks());
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        &format!("allowedTargets = 127.0.0.1:{}", echo.port()),
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
    let detected = until(DETECTION_LIMIT, "the gateway noticing the frozen endpoint", || {
        node.state.sessions.is_empty()
    })
    .await;
    println!("a frozen endpoint was detected after {detected:?}");
    // Its streams ended with it: the scanner's connection is closed.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the scanner's stream must end with the session");
    assert_eq!(node.state.sessions.open_streams(), 0);

    // Thawed, the endpoint notices its session is gone and reconnects by itself.
    signal(pid, "-CONT");
    until(Duration::from_secs(20), "the endpoint reconnecting", || node.state.sessions.len() == 1)
        .await;
    terminate(service).await;
    until(Duration::from_secs(10), "the session ending after the endpoint stopped", || {
        node.state.sessions.is_empty()
    })
    .await;
    drop(stream);
    until(Duration::from_secs(10), "descriptors returning to where they were", || {
        open_fds() <= fds_before
    })
    .await;
    until(Duration::from_secs(10), "the node's tasks returning to where they were", || {
        node.tasks() <= tasks_before
    })
    .await;
}

/// A TCP relay that can stop carrying bytes without closing anything: a link that silently
/// drops packets.
async fn freezable_relay(
    to: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let frozen = frozen.clone();
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(to).await else { return };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                let pump = |mut r: tokio::net::tcp::OwnedReadHalf,
                            mut w: tokio::net::tcp::OwnedWriteHalf,
                            frozen: Arc<AtomicBool>| async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if frozen.load(Ordering::SeqCst) {
                            continue; // dropped on the floor
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::join!(pump(cr, uw, frozen.clone()), pump(ur, cw, frozen));
            });
        }
    });
    addr
}

#[actix::test]
async fn a_link_that_drops_everything_is_detected_by_the_endpoint_within_ten_seconds() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let frozen = Arc::new(AtomicBool::new(false));
    let relay = freezable_relay(node.addresses.endpoint_wss, frozen.clone()).await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint_via(&node, &p.key, "127.0.0.1", &relay.to_string());
    connected(&agent).await;

    frozen.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let status = agent
        .wait_for(DETECTION_LIMIT, |s| matches!(s, AgentStatus::Connecting { .. }))
        .await
        .expect("the endpoint must notice the dead link");
    println!("a dead link was detected by the endpoint after {:?}: {status:?}", started.elapsed());
    assert!(
        matches!(&status, AgentStatus::Connecting { last_error: Some(e), .. } if e.contains("idle timeout")),
        "{status:?}"
    );
    until(DETECTION_LIMIT, "the gateway noticing the dead link", || node.state.sessions.is_empty())
        .await;

    frozen.store(false, Ordering::SeqCst);
    connected(&agent).await;
    agent.stop();
}

#[actix::test]
async fn a_reconnect_by_the_same_endpoint_fences_out_its_old_session_at_once() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let machine = TestMachine::new();
    let old = machine.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&old).await;
    // The same machine identity connects again (a restarted agent whose old TCP connection is
    // not dead yet, after a network change): the new session wins, never "already connected".
    let new = machine.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&new).await;
    let started = Instant::now();
    old.wait_for(Duration::from_secs(1), |s| matches!(s, AgentStatus::Connecting { .. }))
        .await
        .expect("the old session must be fenced out at once");
    println!("the old session was fenced out {:?} after the new one connected", started.elapsed());
    old.stop();
    old.join().await.unwrap();
    assert!(matches!(new.status(), AgentStatus::Connected { .. }));
    assert_eq!(node.state.sessions.len(), 1);
    new.stop();
}
