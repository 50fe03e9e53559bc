//! A scanner cannot forge audit or log lines through the target it names: a SOCKS5 domain or an
//! HTTP proxy host holding a line break or an escape sequence is refused at the ingress (SOCKS
//! "host unreachable", HTTP 400 without the bytes echoed), nothing about it is recorded, and the
//! gateway's log lines stay one line each.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use base64::Engine;
use futures_util::StreamExt;
use ism_events::EventLog;
use ism_tests::cluster::{
    connected_endpoint, eventually, http_server, node_on_a_manual_clock, socks_greeting_and_login,
    PATIENCE,
};
use ism_tests::log_capture::Captured;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What would be a line of its own if a target's LF reached a log or the audit raw.
const FORGED: &str =
    "FORGED 2026-11-23 16:40:01.123Z  #202    EndpointDeleted  deleted endpoint \"dc1\" (by admin)";

/// A SOCKS5 CONNECT to `domain`:80 as scanner of `endpoint`, in one write; the reply code.
async fn socks_domain(socks: &str, endpoint: &str, secret: &str, domain: &[u8], port: u16) -> u8 {
    let mut s = TcpStream::connect(socks).await.unwrap();
    let mut msg = socks_greeting_and_login(endpoint, secret);
    msg.extend_from_slice(&[5, 1, 0, 3, domain.len() as u8]);
    msg.extend_from_slice(domain);
    msg.extend_from_slice(&port.to_be_bytes());
    s.write_all(&msg).await.unwrap();
    // Method choice (2 bytes), authentication status (2), CONNECT reply (10, code second).
    let mut reply = [0u8; 14];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut reply)).await.unwrap().unwrap();
    reply[5]
}

/// Sends `request` to the HTTP proxy ingress; everything it answers until it closes.
async fn http_exchange(proxy: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut got)).await.unwrap().unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[actix::test]
async fn targets_that_are_not_host_names_are_refused_and_never_recorded_or_logged_raw() {
    let logs = Captured::install();
    // Stepped past the log's pace before each refusal, so that each is logged (and checked).
    let (node, clock) = node_on_a_manual_clock();
    let next_line_due = || clock.advance_ms(ism_gateway::log_pace::LOGGED_EVERY_MS);
    // The node logs a refusal once the client has its answer: the next step waits for the line.
    let logged = |line: &'static str, n: usize| {
        let logs = logs.clone();
        eventually(line, move || {
            let logs = logs.clone();
            async move { (logs.text().matches(line).count() == n).then_some(()) }
        })
    };
    let app = http_server("fine").await;
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", app.port())).await;
    let socks = node.socks();

    // SOCKS5: LF, ESC, a C1 control, non-ASCII: "host unreachable" (0x04), whatever the allowlist.
    for (i, domain) in [
        format!("evil\n{FORGED}").into_bytes(),
        format!("evil\u{1b}[2J\u{1b}[H{FORGED}").into_bytes(),
        b"evil\xc2\x9b31m.corp".to_vec(),
        b"evil\r\n.corp".to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        next_line_due();
        let code = socks_domain(&socks, "dc1", &p.scanner_secret, &domain, app.port()).await;
        assert_eq!(code, 0x04, "{}", domain.escape_ascii());
        logged("SOCKS5 request refused", i + 1).await;
    }

    // HTTP proxy: CONNECT hosts and absolute-URI hosts with controls: 400, the bytes not echoed.
    let proxy = node.addresses.http_proxy.to_string();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("dc1:{}", p.scanner_secret));
    for (i, target) in [
        format!("CONNECT evil\u{1b}[2J{}:443", FORGED.replace(' ', "_")),
        format!("CONNECT evil\n{FORGED}:443"),
        "CONNECT evil%0a.corp:443".to_string(),
        "GET http://evil\u{1b}]0;title\u{7}.corp/".to_string(),
        format!("GET http://127.0.0.1:{}/\u{1b}[2J", app.port()),
    ]
    .into_iter()
    .enumerate()
    {
        next_line_due();
        let request = format!("{target} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n");
        let answer = http_exchange(&proxy, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{target:?}: {answer:?}");
        let body = answer.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(body.lines().count(), 1, "{body:?}");
        assert!(!body.contains('\u{1b}') && !body.contains("evil"), "{body:?}");
        logged("HTTP proxy request refused", i + 1).await;
    }

    // A real target still works, so that the log below holds a stream.
    let ok = ism_cli::scanner::connect(&socks, "dc1", &p.scanner_secret, "127.0.0.1", app.port())
        .await
        .unwrap();
    assert_eq!(ism_cli::scanner::http_get(ok, "x", "/", PATIENCE).await.unwrap().body, "fine");
    node.streams_end().await;
    agent.stop();
    agent.join().await.unwrap();

    // Every fact told is recorded once the node has stopped.
    let data = node.stop();
    let log = ism_events::embedded::EmbeddedLog::open(&data.path().join("events")).unwrap();
    let head = log.head().await.unwrap();
    let recorded: Vec<String> = log
        .subscribe(0)
        .await
        .unwrap()
        .take(head as usize)
        .map(|r| format!("{:?}", r.unwrap().envelope))
        .collect()
        .await;
    assert!(recorded.iter().any(|e| e.contains("StreamOpened")), "{recorded:#?}");
    for event in &recorded {
        assert!(!event.contains("evil") && !event.contains("FORGED"), "recorded: {event}");
    }

    let logs = logs.text();
    assert_eq!(logs.matches("SOCKS5 request refused").count(), 4, "{logs}");
    assert_eq!(logs.matches("HTTP proxy request refused").count(), 5, "{logs}");
    for line in logs.lines() {
        assert!(!line.starts_with("FORGED") && !line.contains('\u{1b}'), "a forged line: {line:?}");
    }
}
