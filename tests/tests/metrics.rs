//! `/metrics`, scraped and parsed as Prometheus does: the values move as sessions come, streams
//! open, carry bytes and close, refusals and failed handshakes happen, events are appended and
//! the projections follow; every label set is bounded (ids and closed lists, never a target).
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_tests::cluster::{
    connected_endpoint, echo_server, echo_stream_through, eventually, round_trip, socks_open,
    tampered, Backend, TestMachine, TestNode,
};
use ism_tests::metrics::{scrape_now, value};
use prometheus_parse::Scrape;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(node: &TestNode) -> Scrape {
    scrape_now(node.addresses.api).await.expect("/metrics answers 200")
}

#[actix::test]
async fn metrics_move_as_streams_open_carry_bytes_and_close() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let echo = echo_server().await;
    let (p, _machine, _agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", echo.port())).await;
    let endpoint = [("endpoint", p.endpoint.as_str()), ("gateway", p.gateway.as_str())];

    let before = scrape(&node).await;
    assert_eq!(value(&before, "ism_sessions_connected", &[]), Some(1.0));
    assert_eq!(value(&before, "ism_streams_open", &endpoint), None, "no stream yet");
    assert_eq!(value(&before, "ism_stream_limit", &[]), Some(node.state.stream_limit as f64));
    let budget = node.state.window_budget.total() as f64;
    assert_eq!(value(&before, "ism_window_budget_bytes", &[]), Some(budget));
    assert_eq!(value(&before, "ism_window_budget_reserved_bytes", &[]), Some(0.0));
    assert_eq!(value(&before, "ism_window_budget_shortfalls_total", &[]), Some(0.0));

    let mut stream = echo_stream_through(&node.socks(), &p, echo.port()).await;
    round_trip(&mut stream).await.unwrap();
    let open = scrape(&node).await;
    assert_eq!(value(&open, "ism_streams_open", &endpoint), Some(1.0));
    assert_eq!(value(&open, "ism_stream_opens_total", &[]), Some(1.0));
    assert_eq!(
        value(&open, "ism_window_budget_reserved_bytes", &[]),
        Some(0.0),
        "a stream that carried a few bytes keeps its opening window"
    );

    // A MiB echoed: the stream, alone in its session, grew to the large window for the way back,
    // reserved from the node's budget (the agent's own budget is not the node's).
    echo_a_mib(&mut stream).await;
    let bulk = scrape(&node).await;
    let windows = ism_tunnel::SessionConfig::default().windows;
    let extra = f64::from(windows.alone - windows.shared);
    assert_eq!(value(&bulk, "ism_window_budget_reserved_bytes", &[]), Some(extra));

    drop(stream);
    node.streams_end().await;
    let closed = scrape(&node).await;
    assert_eq!(
        value(&closed, "ism_streams_open", &endpoint),
        None,
        "an endpoint without streams leaves the gauge"
    );
    let node_ref = &node;
    eventually("the ended stream returned its window", || async move {
        let s = scrape(node_ref).await;
        (value(&s, "ism_window_budget_reserved_bytes", &[])? == 0.0).then_some(())
    })
    .await;

    // With the budget spent (held here), a lone stream keeps its opening window: counted.
    let _spent = node.state.window_budget.try_reserve(node.state.window_budget.total()).unwrap();
    let mut stream = echo_stream_through(&node.socks(), &p, echo.port()).await;
    echo_a_mib(&mut stream).await;
    let held = scrape(&node).await;
    assert_eq!(value(&held, "ism_window_budget_reserved_bytes", &[]), Some(budget));
    let shortfalls = value(&held, "ism_window_budget_shortfalls_total", &[]).unwrap();
    assert!(shortfalls >= 1.0, "{shortfalls} shortfalls counted");
    drop(stream);
    node.streams_end().await;
    for direction in ["to_target", "to_scanner"] {
        let moved = value(&closed, "ism_stream_bytes_total", &[("direction", direction)]).unwrap();
        assert!(moved > 0.0, "{direction}: {moved}");
    }

    // A refusal by the endpoint, counted by its reason.
    let (code, _) = socks_open(&node.socks(), "dc1", &p.scanner_secret, 1).await;
    assert_eq!(code, 2, "port 1 is not allowed");
    let refused = scrape(&node).await;
    assert_eq!(
        value(&refused, "ism_stream_refusals_total", &[("reason", "not_allowed")]),
        Some(1.0)
    );

    // The writes so far were appended and timed; the projections caught up.
    let appended = value(&refused, "ism_event_appends_total", &[("outcome", "ok")]).unwrap();
    assert!(appended > 0.0);
    let timed = value(&refused, "ism_event_append_seconds_count", &[]).unwrap();
    assert!(timed >= appended, "{timed} appends timed, {appended} counted");
    let node = &node;
    for projection in ["directory", "notices"] {
        eventually("the projection caught up", || async move {
            let s = scrape(node).await;
            (value(&s, "ism_projection_lag_events", &[("projection", projection)])? == 0.0)
                .then_some(())
        })
        .await;
    }
}

#[actix::test]
async fn a_refused_endpoint_handshake_is_counted_by_its_reason() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let (p, _machine, _agent) = connected_endpoint(&node, "dc1", "127.0.0.1:9").await;
    let impostor = TestMachine::new();
    let agent = impostor.start_endpoint(&node, &tampered(&p.key), "127.0.0.1:9");
    let _ = agent
        .wait_for(ism_tests::cluster::PATIENCE, |s| {
            matches!(s, ism_endpoint::AgentStatus::Stopped(_))
        })
        .await;
    eventually("the refused handshake counted", || async {
        let s = scrape(&node).await;
        value(&s, "ism_tunnel_handshake_failures_total", &[("reason", "invalid_key")])
    })
    .await;
    let s = scrape(&node).await;
    assert_eq!(value(&s, "ism_sessions_connected", &[]), Some(1.0), "the real endpoint stays");
}

/// Sends a MiB through a stream to an echo server and reads it back.
async fn echo_a_mib(stream: &mut tokio::net::TcpStream) {
    let sent = vec![0x5a_u8; 1 << 20];
    let mut back = vec![0u8; sent.len()];
    let (mut r, mut w) = stream.split();
    let (wrote, read) = tokio::join!(w.write_all(&sent), r.read_exact(&mut back));
    wrote.unwrap();
    read.unwrap();
    assert!(back == sent, "the MiB came back whole");
}

#[actix::test]
async fn api_requests_refused_for_their_bearer_token_are_counted_by_reason() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let base = format!("http://{}", node.addresses.api);
    let wrong = ism_cli::ApiClient::new(&base, "isma_wrong");
    for _ in 0..3 {
        assert_eq!(wrong.gateways().await.unwrap_err().status(), Some(401));
    }
    // No Authorization header at all.
    let mut tcp = tokio::net::TcpStream::connect(node.addresses.api).await.unwrap();
    tcp.write_all(b"GET /api/v1/gateways HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 401") || answer.starts_with("HTTP/1.1 401"), "{answer}");
    node.api().gateways().await.unwrap();
    let s = scrape(&node).await;
    let refused = |reason| value(&s, "ism_api_token_refusals_total", &[("reason", reason)]);
    assert_eq!((refused("invalid"), refused("missing")), (Some(3.0), Some(1.0)));
}

/// Scanners' connections refused before any stream, which neither the audit nor the stream
/// refusals count (and whose log lines are paced), are counted by ingress and kind.
#[actix::test]
async fn scanner_requests_refused_before_a_stream_are_counted_by_ingress_and_kind() {
    let node = TestNode::start("node-a", Backend::Embedded);
    for _ in 0..2 {
        // SOCKS version 4.
        let mut socks = tokio::net::TcpStream::connect(node.socks()).await.unwrap();
        socks.write_all(&[4, 1]).await.unwrap();
        let _ = socks.read_to_end(&mut Vec::new()).await;
        // An HTTP proxy request without credentials: 407.
        let mut http = tokio::net::TcpStream::connect(node.addresses.http_proxy).await.unwrap();
        http.write_all(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = http.read_to_end(&mut answer).await;
        assert!(answer.starts_with(b"HTTP/1.1 407 "), "{}", answer.escape_ascii());
    }
    eventually("both refusals counted twice", || async {
        let s = scrape(&node).await;
        let name = "ism_scanner_request_refusals_total";
        let socks = value(&s, name, &[("ingress", "socks5"), ("kind", "protocol")]);
        let http = value(&s, name, &[("ingress", "http_proxy"), ("kind", "no_credentials")]);
        (socks == Some(2.0) && http == Some(2.0)).then_some(())
    })
    .await;
}
