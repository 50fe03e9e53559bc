//! One scanner request, for real: scanner -> gateway SOCKS5 ingress -> TLS WebSocket -> endpoint
//! -> target and back, on both event-log backends; and the refusals on that path.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_endpoint::AgentStatus;
use ism_events::{AggregateId, Event, ManualClock};
use ism_tests::cluster::{
    connected, connected_endpoint, echo_server, eventually, http_server, provision, recorded,
    socks_login, tampered, Backend, TestMachine, TestNode, PATIENCE,
};
use ism_tests::nats::NatsServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn curl_through(node: &TestNode, backend_name: &str) {
    let api = node.api();
    let p = provision(&api, "dc1").await;
    let app = http_server("hello from the intranet\n").await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(node, &p.key, &format!("127.0.0.1:{}", app.port()));
    connected(&agent).await;

    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--socks5-hostname"])
        .arg(format!("{}:{}@{}", p.endpoint_name, p.scanner_secret, node.socks()))
        .arg(format!("http://127.0.0.1:{}/", app.port()))
        .output()
        .await
        .expect("curl must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "curl failed on {backend_name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the intranet\n");

    // The directory shows the endpoint as the seed does once deployed, with its version (the
    // directory applies the session's opening after the endpoint was welcomed).
    let shown = eventually("the endpoint Ready", || {
        let (api, id) = (&api, p.endpoint.clone());
        async move { api.endpoint(&id).await.ok().filter(|e| e["status"] == "Ready") }
    })
    .await;
    assert_eq!(shown["agent_version"], env!("CARGO_PKG_VERSION"));

    // The stream is an audited fact on the tunnel.
    let log = node.state.log.clone();
    eventually("StreamClosed event", || {
        let log = log.clone();
        async move {
            let head = log.head().await.ok()?;
            let mut sub = log.subscribe(0).await.ok()?;
            use futures_util::StreamExt;
            while let Some(Ok(rec)) = sub.next().await {
                if let Event::StreamClosed { received, .. } = rec.envelope.event {
                    return (received > 0).then_some(());
                }
                if rec.position >= head {
                    break;
                }
            }
            None
        }
    })
    .await;
    agent.stop();
    agent.join().await.unwrap();
}

#[actix::test]
async fn curl_through_the_gateway_on_the_embedded_log() {
    let node = TestNode::start("node-a", Backend::Embedded);
    curl_through(&node, "embedded").await;
}

#[actix::test]
async fn curl_through_the_gateway_on_jetstream() {
    let nats = NatsServer::start();
    let node = TestNode::start("node-a", Backend::JetStream(nats.url().to_string()));
    curl_through(&node, "jetstream").await;
}

#[actix::test]
async fn fifty_concurrent_streams_through_one_endpoint_echo_byte_exact() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let echo = echo_server().await;
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", echo.port())).await;

    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let (socks, secret) = (node.socks(), p.scanner_secret.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut s = ism_cli::scanner::connect(&socks, "dc1", &secret, "127.0.0.1", echo.port())
                .await
                .expect("stream");
            let data: Vec<u8> = (0..200_000u32)
                .map(|x| (x.wrapping_mul(2654435761).wrapping_add(i) >> 7) as u8)
                .collect();
            let (mut r, mut w) = s.split();
            let send = async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut back = Vec::with_capacity(data.len());
            let (_, n) = tokio::join!(send, r.read_to_end(&mut back));
            n.unwrap();
            assert!(back == data, "stream {i}: {} bytes back, content differs", back.len());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    agent.stop();
}

#[actix::test]
async fn a_target_off_the_allowlist_is_refused_with_socks_reply_2() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let allowed = http_server("ok").await;
    let forbidden = http_server("secret").await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &p.key, &format!("127.0.0.1:{}", allowed.port()));
    connected(&agent).await;
    for host in ["127.0.0.1", "localhost"] {
        match ism_cli::scanner::connect(
            &node.socks(),
            "dc1",
            &p.scanner_secret,
            host,
            forbidden.port(),
        )
        .await
        {
            Err(ism_cli::scanner::ScannerError::Refused { code, .. }) => {
                assert_eq!(code, 2, "{host}")
            }
            other => panic!("{host}: expected a refusal, got {:?}", other.map(|_| "a connection")),
        }
    }
    // The metadata address is refused even though it is never listed.
    match ism_cli::scanner::connect(&node.socks(), "dc1", &p.scanner_secret, "169.254.169.254", 80)
        .await
    {
        Err(ism_cli::scanner::ScannerError::Refused { code: 2, .. }) => {}
        other => panic!("metadata address: {:?}", other.map(|_| "a connection")),
    }
    // curl reports the refusal too, and the endpoint keeps serving allowed targets.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--socks5-hostname"])
        .arg(format!("dc1:{}@{}", p.scanner_secret, node.socks()))
        .arg(format!("http://127.0.0.1:{}/", forbidden.port()))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let s = ism_cli::scanner::connect(
        &node.socks(),
        "dc1",
        &p.scanner_secret,
        "127.0.0.1",
        allowed.port(),
    )
    .await
    .unwrap();
    let resp = ism_cli::scanner::http_get(s, "x", "/", PATIENCE).await.unwrap();
    assert_eq!(resp.body, "ok");
    agent.stop();
}

#[actix::test]
async fn a_closed_target_port_is_refused_with_socks_reply_5() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    // A loopback port nothing listens on, held so no test running beside this one takes it.
    let down = ism_tests::ReservedPort::new();
    let closed = down.port;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &p.key, &format!("127.0.0.1:{closed}"));
    connected(&agent).await;
    // The scanner learns of the refusal in the CONNECT reply, not from a closed stream later.
    match ism_cli::scanner::connect(&node.socks(), "dc1", &p.scanner_secret, "127.0.0.1", closed)
        .await
    {
        Err(ism_cli::scanner::ScannerError::Refused { code, .. }) => assert_eq!(code, 5),
        other => panic!("expected a refusal, got {:?}", other.map(|_| "a connection")),
    }
    agent.stop();
}

#[actix::test]
async fn wrong_scanner_credentials_and_unknown_endpoints_are_refused() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let tampered = tampered(&p.scanner_secret);
    for (user, pass) in [
        ("dc1", tampered.as_str()),
        ("dc1", "not-a-credential"),
        ("no-such-endpoint", p.scanner_secret.as_str()),
    ] {
        match ism_cli::scanner::connect(&node.socks(), user, pass, "127.0.0.1", 80).await {
            Err(ism_cli::scanner::ScannerError::AuthRefused) => {}
            other => panic!(
                "{user}/{pass}: expected AuthRefused, got {:?}",
                other.map(|_| "a connection")
            ),
        }
    }
    // Known credential, endpoint not connected: network unreachable (0x03).
    match ism_cli::scanner::connect(&node.socks(), "dc1", &p.scanner_secret, "127.0.0.1", 80).await
    {
        Err(ism_cli::scanner::ScannerError::Refused { code: 3, .. }) => {}
        other => panic!("offline endpoint: {:?}", other.map(|_| "a connection")),
    }
}

/// A credential revoked after its scanner logged in and before its request opens nothing: a SOCKS
/// client may take up to the negotiation timeout between the two, and the stream must be admitted
/// on the credential as it is now, not as it was at the login.
#[actix::test]
async fn a_credential_revoked_between_login_and_request_opens_nothing() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let echo = echo_server().await;
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", echo.port())).await;
    let mut scanner = socks_login(&node.socks(), "dc1", &p.scanner_secret).await;
    let mut accepted = [0u8; 4];
    tokio::time::timeout(PATIENCE, scanner.read_exact(&mut accepted)).await.unwrap().unwrap();
    assert_eq!(accepted, [5, 2, 1, 0], "method choice and login status");

    node.api().revoke_credential(&p.gateway, &p.credential).await.unwrap();
    let mut request = vec![5, 1, 0, 1, 127, 0, 0, 1];
    request.extend_from_slice(&echo.port().to_be_bytes());
    scanner.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    tokio::time::timeout(PATIENCE, scanner.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply[1], 2, "refused as not allowed, not opened: {reply:?}");
    assert_eq!(node.state.streams.total(), 0);
    agent.stop();
}

/// A stream dropped before the scanner's connection was joined to it (its reply could not be
/// written) is recorded as closed: the audit never shows a stream opened and never closed.
#[actix::test]
async fn a_stream_dropped_before_it_is_joined_is_recorded_as_closed() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let echo = echo_server().await;
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", echo.port())).await;
    let endpoint = node.state.directory.endpoint(p.endpoint.parse().unwrap()).unwrap().unwrap();
    let scanner = ism_gateway::scanner_auth::AuthorisedScanner {
        credential_id: p.credential.parse().unwrap(),
        endpoint,
    };
    let target = ism_tunnel_proto::TargetAddr::Ipv4(std::net::Ipv4Addr::LOCALHOST, echo.port());
    let path = node.state.scanner_path();
    let opened = ism_gateway::scanner_stream::open(&path, &scanner, target).await;
    assert!(opened.is_ok(), "the stream opens");
    drop(opened);
    let end = eventually("the dropped stream's close recorded", || {
        let log = node.state.log.clone();
        async move {
            recorded(&*log).await.into_iter().find_map(|e| match e.event {
                Event::StreamClosed { end, .. } => Some(end),
                _ => None,
            })
        }
    })
    .await;
    assert!(end.contains("dropped before its end could be recorded"), "{end}");
    assert_eq!(node.state.streams.total(), 0);
    agent.stop();
}

#[actix::test]
async fn a_wrong_endpoint_key_is_refused_with_the_seed_message() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let wrong = tampered(&p.key);
    for key in [wrong.as_str(), "not-a-key"] {
        let machine = TestMachine::new();
        let agent = machine.start_endpoint(&node, key, "*");
        let diagnosis = agent.join().await.expect_err("a wrong key must stop the endpoint");
        assert!(diagnosis.message.contains("Failure to authenticate endpoint key"), "{diagnosis}");
    }
    assert_eq!(
        node.api().endpoint(&p.endpoint).await.unwrap()["status"],
        "Pending",
        "a refused key must not deploy the endpoint"
    );
}

#[actix::test]
async fn the_key_from_a_second_machine_is_refused_and_the_first_keeps_working() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let api = node.api();
    let p = provision(&api, "dc1").await;
    let app = http_server("still here").await;
    let allowed = format!("127.0.0.1:{}", app.port());
    let first = TestMachine::new();
    let agent_a = first.start_endpoint(&node, &p.key, &allowed);
    connected(&agent_a).await;

    let second = TestMachine::new();
    let agent_b = second.start_endpoint(&node, &p.key, &allowed);
    let diagnosis = agent_b.join().await.expect_err("the second machine must be refused");
    assert!(
        diagnosis.message.contains(r#"{"error":"Token already registered","success":false}"#),
        "{diagnosis}"
    );

    // The first machine never noticed.
    assert!(matches!(agent_a.status(), AgentStatus::Connected { .. }), "{:?}", agent_a.status());
    let s =
        ism_cli::scanner::connect(&node.socks(), "dc1", &p.scanner_secret, "127.0.0.1", app.port())
            .await
            .unwrap();
    assert_eq!(ism_cli::scanner::http_get(s, "x", "/", PATIENCE).await.unwrap().body, "still here");
    // The refusal shows on the endpoint once the directory has applied it.
    let shown = eventually("the refusal shown", || {
        let (api, id) = (&api, p.endpoint.clone());
        async move {
            let e = api.endpoint(&id).await.ok()?;
            let refused = e["last_refusal"].as_str()?.contains("Token already registered");
            refused.then_some(e)
        }
    })
    .await;
    assert_eq!(shown["status"], "Ready");

    // The first machine can come back after a restart: its identity is on its disk.
    agent_a.stop();
    agent_a.join().await.unwrap();
    let again = first.start_endpoint(&node, &p.key, &allowed);
    connected(&again).await;
    again.stop();
}

/// A second machine presenting a bound key is refused on every attempt; a service manager
/// restarting its agent, or a script, attempts for ever. The first refusal is recorded in full,
/// the rest of its window counted into one event.
#[actix::test]
async fn a_second_machine_trying_again_and_again_is_recorded_once_then_counted() {
    let clock = ManualClock::at(1_790_000_000_000);
    let node_clock = clock.clone();
    let node = TestNode::start_with("node-a", Backend::Embedded, move |c| {
        c.clock = Arc::new(node_clock.clone());
        // The node's clock says when the window is over (it is not moved until the end); a
        // short window makes its ticker (a tenth of it, real time) quick to notice.
        c.registration_refusal_window = Duration::from_secs(1);
    });
    let p = provision(&node.api(), "dc1").await;
    let first = TestMachine::new();
    let agent = first.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&agent).await;

    // A second machine's agent, started again and again as `Restart=always` would start it.
    let second = TestMachine::new();
    for _ in 0..5 {
        let refused = second.start_endpoint(&node, &p.key, "127.0.0.1");
        let diagnosis = refused.join().await.expect_err("the key is bound to the first machine");
        assert!(diagnosis.message.contains("Token already registered"), "{diagnosis}");
    }
    let endpoint = AggregateId::endpoint(p.endpoint.parse().unwrap());
    let recorded = || async {
        let events = node.state.log.read_aggregate(&endpoint).await.unwrap();
        let in_full = events
            .iter()
            .filter(|r| matches!(r.envelope.event, Event::EndpointRegistrationRefused { .. }))
            .count();
        let counted: Vec<_> = events
            .into_iter()
            .filter_map(|r| match r.envelope.event {
                Event::EndpointRegistrationRefusalsRepeated(counted) => Some(counted),
                _ => None,
            })
            .collect();
        (in_full, counted)
    };
    let (in_full, counted) = recorded().await;
    assert_eq!(in_full, 1, "the first refusal is recorded in full, the others counted");
    assert!(counted.is_empty(), "the window is not over: {counted:?}");

    // Once the window is over, the count is recorded once.
    clock.advance_ms(1_000);
    let counted = eventually("the count recorded", || async {
        let (_, counted) = recorded().await;
        (!counted.is_empty()).then_some(counted)
    })
    .await;
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert_eq!((counted[0].count, counted[0].hostnames.len()), (4, 1), "{counted:?}");
    // ...and shown on the endpoint once the directory has applied it.
    eventually("the count shown", || async {
        let shown = node.api().endpoint(&p.endpoint).await.ok()?;
        shown["last_refusal"].as_str()?.contains("4 more times").then_some(())
    })
    .await;
    assert!(matches!(agent.status(), AgentStatus::Connected { .. }), "{:?}", agent.status());
}

#[actix::test]
async fn the_endpoint_reconnects_after_the_gateway_node_restarts() {
    let nats = NatsServer::start();
    let node = TestNode::start("node-a", Backend::JetStream(nats.url().to_string()));
    let p = provision(&node.api(), "dc1").await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&agent).await;
    let restarting = std::thread::spawn(move || node.restart());
    agent
        .wait_for(PATIENCE, |s| matches!(s, AgentStatus::Connecting { .. }))
        .await
        .expect("the endpoint notices the node is gone");
    // The same node comes back on the same address and log: the endpoint reconnects by itself.
    eventually("the node restarting", || {
        std::future::ready(restarting.is_finished().then_some(()))
    })
    .await;
    let node = restarting.join().unwrap();
    connected(&agent).await;
    let api = node.api();
    let shown = eventually("endpoint Ready again", || {
        let api = &api;
        let id = p.endpoint.clone();
        async move { api.endpoint(&id).await.ok().filter(|e| e["status"] == "Ready") }
    })
    .await;
    assert_eq!(shown["node"], "node-a");
    agent.stop();
}

/// Scanners turned away before any stream are recorded on their gateway: the first of a kind in
/// full, the ones right after it counted; a password that is no credential names no gateway.
#[actix::test]
async fn scanners_turned_away_are_recorded_on_their_gateway_and_counted() {
    let node = TestNode::start_with("node-a", Backend::Embedded, |c| {
        c.refusal_window = std::time::Duration::from_secs(3600);
        c.stop_grace = PATIENCE;
    });
    let p = provision(&node.api(), "dc1").await;
    let wrong = tampered(&p.scanner_secret);
    for _ in 0..3 {
        let refused =
            ism_cli::scanner::connect(&node.socks(), "dc1", &wrong, "127.0.0.1", 80).await;
        assert!(matches!(refused, Err(ism_cli::scanner::ScannerError::AuthRefused)));
    }
    // The endpoint exists but is not connected.
    let offline =
        ism_cli::scanner::connect(&node.socks(), "dc1", &p.scanner_secret, "127.0.0.1", 80).await;
    assert!(matches!(offline, Err(ism_cli::scanner::ScannerError::Refused { code: 3, .. })));
    let gateway: uuid::Uuid = p.gateway.parse().unwrap();
    let first = eventually("the first refusals recorded", || {
        let log = node.state.log.clone();
        async move { Some(turned_away(&*log, gateway).await).filter(|s| s.len() >= 2) }
    })
    .await;
    assert!(first[0].1.contains("wrong secret"), "{first:?}");
    assert!(first[1].1.contains("not connected"), "{first:?}");
    // The two repeated wrong secrets are counted, and recorded once the node stops.
    let data = node.stop();
    let node = TestNode::start_in("node-a", Backend::Embedded, data);
    let log = node.state.log.clone();
    let events = log.read_aggregate(&ism_events::AggregateId::gateway(gateway)).await.unwrap();
    let counted: Vec<u64> = events
        .iter()
        .filter_map(|r| match &r.envelope.event {
            Event::ScannerRefusalsRepeated(r) => Some(r.count),
            _ => None,
        })
        .collect();
    assert_eq!(counted, vec![2], "{events:?}");
}

/// The scanners turned away recorded on `gateway`: (endpoint asked for, reason) of each event.
async fn turned_away(log: &dyn ism_events::EventLog, gateway: uuid::Uuid) -> Vec<(String, String)> {
    let events = log.read_aggregate(&ism_events::AggregateId::gateway(gateway)).await.unwrap();
    events
        .into_iter()
        .filter_map(|r| match r.envelope.event {
            Event::ScannerRefused { endpoint, reason, .. } => Some((endpoint, reason)),
            Event::ScannerRefusalsRepeated(r) => {
                Some((r.targets.join(","), format!("{} more: {}", r.count, r.reason)))
            }
            _ => None,
        })
        .collect()
}

/// A login username is recorded cut to the longest endpoint name (64 characters) and marked: over
/// HTTP it can be 12 KB, and none longer names an endpoint.
#[actix::test]
async fn a_huge_username_is_recorded_cut_to_the_longest_endpoint_name() {
    use base64::Engine as _;
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let login = format!("{}:{}", "x".repeat(12_000), tampered(&p.scanner_secret));
    let login = base64::engine::general_purpose::STANDARD.encode(login);
    let mut scanner = tokio::net::TcpStream::connect(node.addresses.http_proxy).await.unwrap();
    let head =
        format!("CONNECT 127.0.0.1:80 HTTP/1.1\r\nProxy-Authorization: Basic {login}\r\n\r\n");
    scanner.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 12];
    scanner.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, b"HTTP/1.1 407");
    let gateway: uuid::Uuid = p.gateway.parse().unwrap();
    let (endpoint, reason) = eventually("the refusal recorded", || {
        let log = node.state.log.clone();
        async move { turned_away(&*log, gateway).await.pop() }
    })
    .await;
    assert!(reason.contains("wrong secret"), "{reason}");
    assert!(endpoint.chars().count() <= 65, "{} characters recorded", endpoint.chars().count());
    assert_eq!(endpoint, format!("{}\u{2026}", "x".repeat(64)));
}
