//! Several gateway nodes on one `nats-server`: a scanner on any node reaches an endpoint held by
//! another (one relay hop, recorded with the ingress node), access withdrawn on the ingress node
//! ends relayed streams, a lost node's sessions and streams are recorded as ended by a survivor
//! while its endpoints reconnect to the next node, and a newer session on another node fences
//! the old one out.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_events::{AggregateId, Event, EventLog};
use ism_tests::cluster::{
    connected, echo_server, echo_stream_through, eventually, freezable_relay, http_server,
    provision, socks_open, Provisioned, TestMachine, TestNode, FAST_HEARTBEATS, PATIENCE,
};
use ism_tests::gateway_cluster::{gateways, TestCluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// The agent's properties for fast heartbeats.
fn fast_heartbeats() -> String {
    format!(
        "heartbeatIntervalMs = {}\ndeadPeerTimeoutMs = {}",
        FAST_HEARTBEATS.ping_interval.as_millis(),
        FAST_HEARTBEATS.idle_timeout.as_millis()
    )
}

/// A SOCKS stream to the echo server through `node`.
async fn echo_stream_via(node: &TestNode, p: &Provisioned, echo_port: u16) -> TcpStream {
    echo_stream_through(&node.socks(), p, echo_port).await
}

/// The events recorded on `tunnel`, once `done` holds for them.
async fn tunnel_events(
    log: Arc<dyn EventLog>,
    tunnel: Uuid,
    what: &str,
    done: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    eventually(what, || {
        let log = log.clone();
        let done = &done;
        async move {
            let recorded = log.read_aggregate(&AggregateId::tunnel(tunnel)).await.ok()?;
            let events: Vec<Event> = recorded.into_iter().map(|r| r.envelope.event).collect();
            done(&events).then_some(events)
        }
    })
    .await
}

fn tunnel_of(node: &TestNode, p: &Provisioned) -> Uuid {
    node.state.sessions.get(p.endpoint.parse().unwrap()).expect("the endpoint's session").tunnel
}

#[actix::test]
async fn a_scanner_on_any_node_reaches_an_endpoint_another_node_holds() {
    let cluster = TestCluster::new(&["node-a", "node-b"]);
    let (a, b) = (cluster.node("node-a"), cluster.node("node-b"));
    let p = provision(&b.api(), "dc1").await;
    let echo = echo_server().await;
    let app = http_server("hello from the intranet\n").await;
    let machine = TestMachine::new();
    let allowed = format!("127.0.0.1:{},127.0.0.1:{}", echo.port(), app.port());
    // Provisioned on node-b, connected to node-a: the directory is the cluster's.
    let agent = machine.start_endpoint(&a, &p.key, &allowed);
    connected(&agent).await;

    let stream = echo_stream_via(&b, &p, echo.port()).await;
    drop(stream);
    // A real scanner client through the other ingress of the other node.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--proxy"])
        .arg(format!("http://{}:{}@{}", p.endpoint_name, p.scanner_secret, b.addresses.http_proxy))
        .arg(format!("http://127.0.0.1:{}/", app.port()))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the intranet\n");

    // Both streams are recorded on the tunnel of node-a, the holder, as came in via node-b.
    let events =
        tunnel_events(a.state.log.clone(), tunnel_of(&a, &p), "both streams recorded", |e| {
            e.iter().filter(|e| matches!(e, Event::StreamClosed { .. })).count() == 2
        })
        .await;
    let vias: Vec<Option<&str>> = events
        .iter()
        .filter_map(|e| match e {
            Event::StreamOpened { via, .. } => Some(via.as_deref()),
            _ => None,
        })
        .collect();
    assert_eq!(vias, [Some("node-b"), Some("node-b")], "{events:?}");
    // The endpoint's own node serves it directly, recorded without a relay.
    drop(echo_stream_via(&a, &p, echo.port()).await);
    agent.stop();
}

#[actix::test]
async fn access_turned_off_ends_relayed_streams() {
    let cluster = TestCluster::new(&["node-a", "node-b"]);
    let (a, b) = (cluster.node("node-a"), cluster.node("node-b"));
    let p = provision(&a.api(), "dc1").await;
    let echo = echo_server().await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&a, &p.key, &format!("127.0.0.1:{}", echo.port()));
    connected(&agent).await;
    let mut stream = echo_stream_via(&b, &p, echo.port()).await;

    // Turned off through node-a's API: node-b, where the scanner came in, ends the stream.
    a.api().set_access(&p.endpoint, Some(false), None).await.unwrap();
    let mut buf = [0u8; 16];
    let ended = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await;
    assert!(matches!(ended, Ok(Ok(0) | Err(_))), "the relayed stream must end: {ended:?}");
    b.streams_end().await;
    a.streams_end().await;
    let (code, _) = socks_open(&b.socks(), "dc1", &p.scanner_secret, echo.port()).await;
    assert_ne!(code, 0, "access is off");
    agent.stop();
}

#[actix::test]
async fn a_lost_node_is_recorded_by_a_survivor_and_its_endpoint_moves_on() {
    let cluster = TestCluster::new(&["node-a", "node-b"]);
    let (a, b) = (cluster.node("node-a"), cluster.node("node-b"));
    let p = provision(&a.api(), "dc1").await;
    let echo = echo_server().await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint_with(
        &a,
        &p.key,
        &format!("127.0.0.1:{}", echo.port()),
        &gateways(&[&a, &b]),
        "",
    );
    connected(&agent).await;
    let tunnel = tunnel_of(&a, &p);
    // A scanner on node-b, relayed to node-a, when node-a dies.
    let mut stream = echo_stream_via(&b, &p, echo.port()).await;
    tunnel_events(a.state.log.clone(), tunnel, "the relayed stream recorded", |e| {
        e.iter().any(|e| matches!(e, Event::StreamOpened { .. }))
    })
    .await;

    a.crash();
    let mut buf = [0u8; 16];
    let ended = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await;
    assert!(matches!(ended, Ok(Ok(0) | Err(_))), "the stream dies with its node: {ended:?}");
    // The endpoint goes on to the next node it knows...
    b.sessions_become(1).await;
    assert_ne!(tunnel_of(&b, &p), tunnel);
    drop(echo_stream_via(&b, &p, echo.port()).await);
    // ...and node-b, once node-a's heartbeat has stood still for the lease, records the end of
    // the session node-a held, and of the stream it carried.
    let events = tunnel_events(b.state.log.clone(), tunnel, "the lost session closed", |e| {
        e.iter().any(|e| matches!(e, Event::TunnelClosed { .. }))
    })
    .await;
    let closed: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::TunnelClosed { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(closed, ["gateway node node-a lost"], "{events:?}");
    let cut = events.iter().any(|e| {
        matches!(e, Event::StreamClosed { end, .. } if end.contains("cut: gateway node node-a lost"))
    });
    assert!(cut, "{events:?}");
    agent.stop();
}

#[actix::test]
async fn a_newer_session_on_another_node_fences_the_old_one_out() {
    let cluster = TestCluster::new(&["node-a", "node-b"]);
    // Node-a never gives up on a silent endpoint by itself here: only the fence ends its session.
    let a =
        cluster.node_with("node-a", |c| c.session.timing.idle_timeout = Duration::from_secs(3600));
    let b = cluster.node("node-b");
    let p = provision(&a.api(), "dc1").await;
    let frozen = Arc::new(AtomicBool::new(false));
    let to_a = freezable_relay(a.addresses.endpoint_wss, frozen.clone()).await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint_with(
        &a,
        &p.key,
        "127.0.0.1",
        &format!("{to_a},{}", b.addresses.endpoint_wss),
        &fast_heartbeats(),
    );
    connected(&agent).await;
    let old = tunnel_of(&a, &p);

    // The link to node-a goes silent: the endpoint gives up on it and connects to node-b, whose
    // claim on the endpoint makes node-a close the session it still believes in.
    frozen.store(true, Ordering::SeqCst);
    b.sessions_become(1).await;
    a.sessions_become(0).await;
    let events = tunnel_events(a.state.log.clone(), old, "the old session closed", |e| {
        e.iter().any(|e| matches!(e, Event::TunnelClosed { .. }))
    })
    .await;
    assert!(
        events.iter().any(|e| matches!(e, Event::TunnelClosed { reason } if reason.ends_with("replaced by a newer session on node node-b"))),
        "{events:?}"
    );
    agent.stop();
}

#[actix::test]
async fn a_drained_node_hands_its_endpoint_over_without_cutting_a_stream() {
    let cluster = TestCluster::new(&["node-a", "node-b"]);
    let (a, b) = (cluster.node("node-a"), cluster.node("node-b"));
    let p = provision(&a.api(), "dc1").await;
    let echo = echo_server().await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint_with(
        &a,
        &p.key,
        &format!("127.0.0.1:{}", echo.port()),
        &gateways(&[&a, &b]),
        "",
    );
    connected(&agent).await;
    let old = tunnel_of(&a, &p);
    let mut running = echo_stream_via(&a, &p, echo.port()).await;
    let ready = |node: &TestNode| {
        let url = format!("http://{}/ready", node.addresses.api);
        async move { awc::Client::new().get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ready(&a).await, 200);

    // Asked through node-b's API: node-a sees the request at its next heartbeat.
    let drained = b.api().drain_node("node-a").await.unwrap();
    assert_eq!(drained["state"], "draining");
    // The endpoint moves to node-b (make)...
    b.sessions_become(1).await;
    assert_eq!(ready(&a).await, 503, "a load balancer sends new connections elsewhere");
    let nodes = b.api().nodes().await.unwrap();
    let states: Vec<(&str, &str)> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("node-a", "draining"), ("node-b", "serving")]);
    // ...while the stream running on the old session goes on (before break).
    running.write_all(b"more").await.unwrap();
    let mut buf = [0u8; 4];
    running.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"more");
    assert_eq!(a.state.sessions.len(), 1, "the old session stays while its stream runs");
    // A scanner still arriving at node-a is served by the endpoint's new session.
    drop(echo_stream_via(&a, &p, echo.port()).await);
    let new = tunnel_of(&b, &p);
    let events = tunnel_events(b.state.log.clone(), new, "the new stream recorded", |e| {
        e.iter().any(|e| matches!(e, Event::StreamOpened { .. }))
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::StreamOpened { via: Some(v), .. } if v == "node-a")),
        "{events:?}"
    );

    // The stream ends: the old session closes (break), its stream recorded as finished.
    drop(running);
    a.sessions_become(0).await;
    let events = tunnel_events(a.state.log.clone(), old, "the old session closed", |e| {
        e.iter().any(|e| matches!(e, Event::TunnelClosed { .. }))
    })
    .await;
    let ends: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::StreamClosed { end, .. } => Some(end.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ends, ["finished"], "{events:?}");

    // The gateway is Online while a node serves it, Offline once none does.
    let gateway_status = |node: &TestNode| {
        let (api, id) = (node.api(), p.gateway.clone());
        async move { api.gateway(&id).await.unwrap()["status"].as_str().unwrap().to_string() }
    };
    assert_eq!(gateway_status(&b).await, "Online");
    b.api().drain_node("node-b").await.unwrap();
    eventually("the gateway Offline", || {
        let status = gateway_status(&b);
        async move { (status.await == "Offline").then_some(()) }
    })
    .await;
    agent.stop();
}

/// A session the cluster cannot record as the endpoint's (its claim in NATS KV failed) is ended,
/// so that the agent connects again and its next session claims afresh: kept, it would be the
/// endpoint's session on this node only, while the other nodes route its scanners by what the
/// cluster still names. Before, the failure was only logged.
#[actix::test]
async fn a_session_whose_claim_fails_is_ended_for_the_agent_to_connect_again() {
    let nats = ism_tests::nats::NatsServer::start();
    let backend = ism_tests::cluster::Backend::JetStream(nats.url().to_string());
    let node = TestNode::start("node-a", backend);
    let p = provision(&node.api(), "dc1").await;
    // The owners' bucket gone: every claim fails, the event log (another stream) still works.
    async_nats::jetstream::new(nats.client().await)
        .delete_key_value(ism_cluster::nats::OWNERS_BUCKET)
        .await
        .unwrap();
    let machine = TestMachine::new();
    let _agent = machine.start_endpoint(&node, &p.key, "127.0.0.1");
    let log = node.state.log.as_ref();
    eventually("a session ended because its claim failed", || async move {
        let events = ism_tests::cluster::recorded(log).await;
        events
            .iter()
            .any(|e| matches!(&e.event, Event::TunnelClosed { reason } if reason.contains("could not record in the cluster")))
            .then_some(())
    })
    .await;
}
