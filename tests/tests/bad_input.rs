//! Hostile and broken input gets a clear refusal, and the node keeps serving.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_cli::ApiClient;
use ism_tests::cluster::{
    connected, eventually, http_server, provision, socks_login, Backend, TestMachine, TestNode,
    PATIENCE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn curl(args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

/// Reads until the peer closes (or 5 s pass); returns what arrived.
async fn drain(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut got))
        .await
        .expect("the server must close the connection");
    got
}

#[actix::test]
async fn the_socks_ingress_refuses_garbage_and_keeps_serving() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let app = http_server("fine").await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &p.key, &format!("127.0.0.1:{}", app.port()));
    connected(&agent).await;

    // HTTP sent to the SOCKS port: closed without a reply.
    let mut s = TcpStream::connect(node.socks()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(drain(&mut s).await.is_empty());
    // No username/password offered: "no acceptable methods".
    let mut s = TcpStream::connect(node.socks()).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(drain(&mut s).await, vec![5, 0xff]);
    // A BIND command after a good login: "command not supported".
    let mut s = socks_login(&node.socks(), "dc1", &p.scanner_secret).await;
    s.write_all(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80]).await.unwrap();
    assert_eq!(drain(&mut s).await, vec![5, 2, 1, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    // A client that connects and says nothing does not hold anything up.
    let _idle = TcpStream::connect(node.socks()).await.unwrap();
    // A truncated greeting followed by a close.
    let mut s = TcpStream::connect(node.socks()).await.unwrap();
    s.write_all(&[5, 200]).await.unwrap();
    s.shutdown().await.unwrap();
    drain(&mut s).await;

    let ok =
        ism_cli::scanner::connect(&node.socks(), "dc1", &p.scanner_secret, "127.0.0.1", app.port())
            .await
            .unwrap();
    assert_eq!(ism_cli::scanner::http_get(ok, "x", "/", PATIENCE).await.unwrap().body, "fine");
    agent.stop();
}

#[actix::test]
async fn the_tunnel_port_refuses_plain_bytes_wrong_paths_and_bad_handshakes() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let wss = node.addresses.endpoint_wss;
    // Not TLS at all.
    let mut s = TcpStream::connect(wss).await.unwrap();
    s.write_all(b"hello, is this a tunnel?\r\n\r\n").await.unwrap();
    drain(&mut s).await;
    // A WebSocket upgrade on the wrong path: a 404 that says where the tunnel is.
    let ca = node.ca_file.display().to_string();
    let upgrade = [
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    let mut args = vec!["--cacert", &ca];
    args.extend(upgrade);
    let url = format!("https://localhost:{}/other", wss.port());
    args.push(&url);
    let (code, body) = curl(&args).await;
    assert_eq!(code, "404", "{body}");
    assert!(body.contains("expected /wsendpoint"), "{body}");
    // The right path, but garbage instead of a Hello: the gateway hangs up, and then still admits
    // a real endpoint.
    use futures_util::{SinkExt, StreamExt};
    let tls = node.client_tls();
    let tcp = TcpStream::connect(wss).await.unwrap();
    let url = format!("wss://localhost:{}/wsendpoint", wss.port());
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
        url,
        tcp,
        None,
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    )
    .await
    .unwrap();
    let _challenge = ws.next().await.unwrap().unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![0x11, 0, 0, 0, 0, 1, 2, 3].into(),
    ))
    .await
    .unwrap();
    let ended =
        tokio::time::timeout(PATIENCE, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(ended.is_ok(), "the gateway must hang up on a malformed Hello");

    let p = provision(&node.api(), "dc1").await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&agent).await;
    agent.stop();
}

#[actix::test]
async fn the_api_answers_bad_requests_with_clear_errors() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let base = format!("http://{}", node.addresses.api);
    let (code, body) = curl(&[&format!("{base}/api/v1/gateways")]).await;
    assert_eq!((code.as_str(), body.contains("missing bearer token")), ("401", true), "{body}");
    let wrong = ApiClient::new(&base, "isma_wrong");
    assert_eq!(wrong.gateways().await.unwrap_err().status(), Some(401));

    let auth = format!("Authorization: Bearer {}", node.admin_token);
    let post = |body: &'static str| {
        let (auth, url) = (auth.clone(), format!("{base}/api/v1/gateways"));
        async move {
            curl(&["-H", &auth, "-H", "Content-Type: application/json", "-d", body, &url]).await
        }
    };
    let (code, body) = post("{not json").await;
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("malformed JSON"), "{body}");
    let (code, body) = post(r#"{"name": "x", "colour": "red"}"#).await;
    assert_eq!(code, "400", "unknown fields are refused: {body}");
    // Too much, or not JSON: said as such, not as a malformed body.
    let large = tempfile::NamedTempFile::new().unwrap();
    let description = "d".repeat(70 * 1024);
    std::fs::write(large.path(), format!(r#"{{"name": "x", "description": "{description}"}}"#))
        .unwrap();
    let (code, body) = curl(&[
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", large.path().display()),
        &format!("{base}/api/v1/gateways"),
    ])
    .await;
    assert_eq!(code, "413", "{body}");
    assert!(body.contains("larger than 64 KiB"), "{body}");
    let (code, body) = curl(&[
        "-H",
        &auth,
        "-H",
        "Content-Type: text/plain",
        "-d",
        r#"{"name": "x"}"#,
        &format!("{base}/api/v1/gateways"),
    ])
    .await;
    assert_eq!(code, "415", "{body}");
    assert!(body.contains("Content-Type: application/json"), "{body}");

    let api = node.api();
    let err = api.create_gateway("Z\u{fc}rich", "").await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("only ASCII"), "{err}");
    let err = api.create_gateway("", "").await.unwrap_err();
    assert!(err.to_string().contains("gateway name is required"), "{err}");
    let err = api.create_gateway(&"n".repeat(65), "").await.unwrap_err();
    assert!(err.to_string().contains("too long"), "{err}");
    assert_eq!(
        api.gateway(&uuid::Uuid::new_v4().to_string()).await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(api.gateway("not-a-uuid").await.unwrap_err().status(), Some(404));

    let gw = api.create_gateway("corp", "").await.unwrap();
    let id = gw["id"].as_str().unwrap();
    let err = api.add_endpoint(id, "dc1", "", "solaris").await.unwrap_err();
    assert!(err.to_string().contains("linux, windows or other"), "{err}");
    api.add_endpoint(id, "dc1", "", "linux").await.unwrap();
    let err = api.add_endpoint(id, "DC1", "", "linux").await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    let err = api.add_endpoint(id, "caf\u{e9}", "", "linux").await.unwrap_err();
    assert!(err.to_string().contains("only ASCII"), "{err}");
    // Nothing was half-applied: exactly the one endpoint exists.
    assert_eq!(api.endpoints(id).await.unwrap().as_array().unwrap().len(), 1);
}

/// A malformed RFC 1929 sub-negotiation (here an empty username) is a failed login: the scanner
/// reads the failure status before the close, and reports "authentication failed".
#[actix::test]
async fn a_malformed_socks_login_gets_the_failure_status_before_the_close() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let mut s = TcpStream::connect(node.socks()).await.unwrap();
    s.write_all(&[5, 1, 2]).await.unwrap();
    let mut selected = [0; 2];
    s.read_exact(&mut selected).await.unwrap();
    assert_eq!(selected, [5, 2]);
    s.write_all(&[1, 0, 0]).await.unwrap();
    assert_eq!(drain(&mut s).await, vec![1, 1]);
}

/// A request for port 0 is answered by the gateway ("general failure"), as the HTTP proxy refuses
/// `host:0`, instead of being carried to the endpoint.
#[actix::test]
async fn a_socks_request_for_port_0_is_refused_with_a_general_failure() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let mut s = socks_login(&node.socks(), "dc1", &p.scanner_secret).await;
    s.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 0]).await.unwrap();
    assert_eq!(drain(&mut s).await, vec![5, 2, 1, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
}

/// A peer that floods pings during the handshake without reading their pongs, then sends what the
/// gateway refuses, does not hold its connection: the refusal is given up after a grace (the
/// pongs fill every buffer on the way, so it cannot be written), and the node's task for the
/// connection ends. Before, the refusal's write waited for ever, outside the cap on pending
/// connections.
#[actix::test]
async fn a_refused_peer_that_never_reads_does_not_hold_its_connection() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let node = TestNode::start("node-a", Backend::Embedded);
    let tls = node.client_tls();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(node.addresses.endpoint_wss).await.unwrap();
    let url = format!("wss://localhost:{}/wsendpoint", node.addresses.endpoint_wss.port());
    let connector = Some(tokio_tungstenite::Connector::Rustls(tls));
    let (mut ws, _) =
        tokio_tungstenite::client_async_tls_with_config(url, tcp, None, connector).await.unwrap();
    let _challenge = ws.next().await.unwrap().unwrap();
    for _ in 0..100_000 {
        ws.feed(Message::Ping(vec![0x5a; 125].into())).await.unwrap();
    }
    // A well-formed Hello the gateway refuses (a protocol version it does not speak).
    let hello = ism_tunnel_proto::Frame::Hello(Box::new(ism_tunnel_proto::Hello {
        version: u16::MAX,
        purpose: ism_tunnel_proto::Purpose::Serve,
        key: "k".into(),
        machine_key: [0; 32],
        signature: [0; 64],
        agent_version: "1".into(),
        platform: "linux".into(),
        hostname: "h".into(),
        instance: None,
    }));
    ws.send(Message::Binary(hello.encode())).await.unwrap();
    // Never read: the node must drop the connection anyway, and then a write here fails (reset;
    // one that waits on the full socket is woken by it).
    let dropped = tokio::time::timeout(PATIENCE, async {
        while ws.send(Message::Ping(vec![0x5a; 125].into())).await.is_ok() {}
    })
    .await;
    assert!(dropped.is_ok(), "the gateway still holds the refused connection");
}

/// One endpoint key holds at most a few side sessions (the diagnostic tool, the key check) on a
/// node at once: they are not recorded and replace nothing, so without a bound a key could open
/// any number, each holding its streams' buffers. A place frees when a session ends.
#[actix::test]
async fn one_key_holds_a_bounded_number_of_diagnostic_sessions() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let machine = TestMachine::new();
    let gateway = node.addresses.endpoint_wss.to_string();
    let config = machine.config_trusting(&node.ca_file, &p.key, "127.0.0.1", &gateway, "");
    let agent = ism_endpoint::Agent::new(config).unwrap();
    let mut held = Vec::new();
    for _ in 0..ism_gateway::sessions::MAX_SIDE_SESSIONS {
        held.push(agent.side_session().await.expect("a side session within the bound"));
    }
    let refused = agent.side_session().await.err().expect("one more is refused");
    let why = format!("{:?}", refused.diagnosis());
    assert!(why.contains("diagnostic sessions"), "{why}");
    let first = held.remove(0);
    first.session.close("done");
    first.session.closed().await;
    eventually("a place freed by the session that ended", || async {
        agent.side_session().await.ok()
    })
    .await;
}
