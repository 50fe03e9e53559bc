//! The HTTP proxy ingress serves one forwarded request per connection: the target receives
//! exactly the rewritten request and its body, never what the client pipelined after it (with its
//! `Proxy-Authorization`); ambiguous or malformed requests get 400 before anything is forwarded,
//! and a client too slow with its head gets 408. A raw TCP client plays the scanner, and the
//! target records exactly the bytes it receives.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use base64::Engine;
use ism_endpoint::AgentHandle;
use ism_tests::cluster::{
    connected_endpoint, echo_server, eventually, Backend, Provisioned, TestMachine, TestNode,
    PATIENCE,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback HTTP target that answers `ok` once it has received `until` (the end of the request
/// it expects), half-closes, and records everything the connection brought once the other side
/// closes too.
struct RecordingTarget {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RecordingTarget {
    async fn start(until: &'static [u8]) -> RecordingTarget {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut answered = false;
                    let mut chunk = [0u8; 4096];
                    loop {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&chunk[..n]),
                        }
                        if !answered && got.windows(until.len()).any(|w| w == until) {
                            answered = true;
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                                .await;
                            let _ = s.shutdown().await;
                        }
                    }
                    record.lock().unwrap().push(got);
                });
            }
        });
        RecordingTarget { addr, received }
    }

    fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    /// Waits until `n` connections have ended; what each received.
    async fn received_from(&self, n: usize) -> Vec<String> {
        eventually(&format!("{n} connections to the target"), || async {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// Sends `bytes` to `proxy` in one write; everything it answers until it closes.
async fn exchange(proxy: &str, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut got)).await.unwrap().unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

fn basic(user: &str, secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
}

#[actix::test]
async fn one_request_per_connection_reaches_the_target_rewritten_and_nothing_after_it() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let get = RecordingTarget::start(b"\r\n\r\n").await;
    let post = RecordingTarget::start(b"X-Trailer: t\r\n\r\n").await;
    let form = RecordingTarget::start(b"a=b\n").await;
    let echo = echo_server().await;
    let allowed = [get.addr, post.addr, form.addr, echo]
        .map(|a| format!("127.0.0.1:{}", a.port()))
        .join(", ");
    let (p, _machine, agent) = connected_endpoint(&node, "dc1", &allowed).await;
    let proxy = node.addresses.http_proxy.to_string();
    let auth = basic("dc1", &p.scanner_secret);
    let port = get.addr.port();
    let request = |path: &str| {
        format!(
            "GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Proxy-Authorization: Basic {auth}\r\nProxy-Connection: keep-alive\r\n\
             Connection: keep-alive, X-Hop\r\nX-Hop: h\r\nUser-Agent: scanner\r\n\r\n"
        )
    };

    // Two pipelined requests: the first is answered, the connection then closes.
    let answer = exchange(&proxy, (request("/one") + &request("/two")).as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok"),
        "{answer:?}"
    );
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer:?}");
    let received = get.received_from(1).await;
    assert_eq!(
        received,
        [format!(
            "GET /one HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: scanner\r\nConnection: close\r\n\r\n"
        )]
    );

    // A chunked body goes through whole and unchanged, and stops there.
    let pport = post.addr.port();
    let chunked = format!(
        "POST http://127.0.0.1:{pport}/up HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic {auth}\r\n\
         Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n{}",
        request("/after-chunked")
    );
    let answer = exchange(&proxy, chunked.as_bytes()).await;
    assert!(answer.ends_with("\r\n\r\nok"), "{answer:?}");
    assert_eq!(
        post.received_from(1).await,
        [format!(
            "POST /up HTTP/1.1\r\nHost: 127.0.0.1:{pport}\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
        )]
    );

    // A Content-Length body as well.
    let fport = form.addr.port();
    let sized = format!(
        "POST http://127.0.0.1:{fport}/form HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\
         Content-Length: 4\r\n\r\na=b\n{}",
        request("/after-sized")
    );
    let answer = exchange(&proxy, sized.as_bytes()).await;
    assert!(answer.ends_with("\r\n\r\nok"), "{answer:?}");
    assert_eq!(
        form.received_from(1).await,
        [format!(
            "POST /form HTTP/1.1\r\nHost: 127.0.0.1:{fport}\r\nContent-Length: 4\r\nConnection: close\r\n\r\na=b\n"
        )]
    );

    // A client that closes its side after its request: the target is told (an end, not bytes),
    // and its end (here without an answer) ends the exchange.
    let mut s = TcpStream::connect(&proxy).await.unwrap();
    let quiet = format!(
        "GET http://127.0.0.1:{fport}/quiet HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
    );
    s.write_all(quiet.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut got)).await.unwrap().unwrap();
    assert!(got.is_empty(), "{got:?}");
    let received = form.received_from(2).await;
    assert_eq!(
        received[1],
        format!("GET /quiet HTTP/1.1\r\nHost: 127.0.0.1:{fport}\r\nConnection: close\r\n\r\n")
    );

    // CONNECT is unchanged: after the 200 the bytes are the client's own, not parsed.
    let mut s = TcpStream::connect(&proxy).await.unwrap();
    let connect = format!(
        "CONNECT 127.0.0.1:{} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n",
        echo.port()
    );
    s.write_all(connect.as_bytes()).await.unwrap();
    let mut established = [0u8; 39];
    s.read_exact(&mut established).await.unwrap();
    assert_eq!(&established[..], b"HTTP/1.1 200 Connection established\r\n\r\n");
    let raw = b"GET http://x/ HTTP/1.1\nProxy-Authorization: anything\r\n\x16\x03\x01\x00";
    s.write_all(raw).await.unwrap();
    let mut echoed = vec![0u8; raw.len()];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, raw);
    drop(s);

    node.streams_end().await;
    for (target, requests) in [(&get, 1), (&post, 1), (&form, 2)] {
        let received = target.received();
        assert_eq!(received.len(), requests, "{received:?}");
        for got in &received {
            let hop = got.contains("Proxy-") || got.contains("X-Hop");
            assert!(!got.contains(&auth) && !hop, "{got:?}");
            assert!(!got.contains("/two") && !got.contains("/after-"), "{got:?}");
        }
    }
    agent.stop();
}

#[actix::test]
async fn malformed_or_ambiguous_requests_get_400_and_slow_ones_408() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let target = RecordingTarget::start(b"\r\n\r\n").await;
    let port = target.addr.port();
    let (p, _machine, agent) = connected_endpoint(&node, "dc1", &format!("127.0.0.1:{port}")).await;
    let proxy = node.addresses.http_proxy.to_string();
    let auth = format!("Proxy-Authorization: Basic {}", basic("dc1", &p.scanner_secret));
    let url = format!("http://127.0.0.1:{port}/");

    // Slow clients first: their timeout runs while the others are tried.
    let silent = TcpStream::connect(&proxy).await.unwrap();
    let mut partial = TcpStream::connect(&proxy).await.unwrap();
    partial.write_all(format!("GET {url} HTTP/1.1\r\n{auth}\r\n").as_bytes()).await.unwrap();
    let read_all = |mut s: TcpStream| async move {
        let mut got = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut got)).await.unwrap().unwrap();
        String::from_utf8_lossy(&got).into_owned()
    };
    let slow = tokio::spawn(async move { (read_all(silent).await, read_all(partial).await) });

    for (request, why) in [
        (format!("GET {url} HTTP/1.1\n{auth}\n\n"), "bare LF"),
        (format!("GET {url} HTTP/1.1\r\n{auth}\nX: y\r\n\r\n"), "bare LF"),
        (
            format!("POST {url} HTTP/1.1\r\n{auth}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "both Content-Length and Transfer-Encoding",
        ),
        (
            format!("POST {url} HTTP/1.1\r\n{auth}\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello"),
            "Content-Length must be one",
        ),
        (
            format!("POST {url} HTTP/1.1\r\n{auth}\r\nContent-Length: 5, 5\r\n\r\nhello"),
            "Content-Length must be one",
        ),
        (
            format!("POST {url} HTTP/1.1\r\n{auth}\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
            "Transfer-Encoding must end with chunked",
        ),
        (format!("GET {url} HTTP/1.1\r\n{auth}\r\nX-A: 1\r\n  continued\r\n\r\n"), "obs-fold"),
        (format!("GET {url}\u{1b}[2J HTTP/1.1\r\n{auth}\r\n\r\n"), "control character"),
        (format!("GET {url}a\tb HTTP/1.1\r\n{auth}\r\n\r\n"), "control character"),
        (format!("GET {url} HTTP/1.1\r\n{auth}\r\nConnection: Content-Length\r\nContent-Length: 3\r\n\r\nabc"), "Connection must list"),
    ] {
        let answer = exchange(&proxy, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{request:?}: {answer:?}");
        assert!(answer.contains(why), "{request:?}: {answer:?}");
    }

    let (silent, partial) = slow.await.unwrap();
    for answer in [silent, partial] {
        assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer:?}");
    }

    // None of it reached the target; a good request still does.
    let good = format!("GET {url} HTTP/1.1\r\n{auth}\r\n\r\n");
    assert!(exchange(&proxy, good.as_bytes()).await.ends_with("ok"));
    assert_eq!(target.received_from(1).await.len(), 1);
    node.streams_end().await;
    assert_eq!(target.received().len(), 1, "{:?}", target.received());
    agent.stop();
}

/// A loopback target that takes a request and never answers nor closes; the receiver learns when
/// it has the request's head. Returns its port.
async fn silent_target() -> (u16, tokio::sync::oneshot::Receiver<()>) {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let (heard, has_head) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = silent.accept().await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = heard.send(());
        let _ = s.read_to_end(&mut got).await;
        // Even once the client's side has ended: still open, still silent.
        std::future::pending::<()>().await;
        drop(s);
    });
    (port, has_head)
}

/// A request forwarded through `node` to a [`silent_target`] behind a connected endpoint: the
/// head `request` makes from the target's port and the scanner's `Proxy-Authorization` value.
/// Returns the client's socket, what says when the target has the head, the endpoint's
/// provisioning and its agent (and the machine, which must outlive the agent).
async fn forwarded_to_a_silent_target(
    node: &TestNode,
    request: impl Fn(u16, &str) -> String,
) -> (TcpStream, tokio::sync::oneshot::Receiver<()>, Provisioned, TestMachine, AgentHandle) {
    let (port, has_head) = silent_target().await;
    let (p, machine, agent) = connected_endpoint(node, "dc1", &format!("127.0.0.1:{port}")).await;
    let mut client = TcpStream::connect(node.addresses.http_proxy).await.unwrap();
    let head = request(port, &basic("dc1", &p.scanner_secret));
    client.write_all(head.as_bytes()).await.unwrap();
    (client, has_head, p, machine, agent)
}

/// Waits until the target has the request's head.
async fn heard(has_head: tokio::sync::oneshot::Receiver<()>) {
    tokio::time::timeout(PATIENCE, has_head).await.unwrap().unwrap();
}

/// Waits for the proxy to end `client`'s connection, and checks it was a reset, not a clean end:
/// the client cannot take the missing response for an empty one. Then the stream's slot is free.
async fn reset_and_freed(node: &TestNode, client: &mut TcpStream) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, client.read_to_end(&mut got)).await.unwrap();
    let err = read.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}; got {got:?}");
    node.streams_end().await;
}

fn slow_get(port: u16, auth: &str) -> String {
    format!(
        "GET http://127.0.0.1:{port}/slow HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
    )
}

#[actix::test]
async fn withdrawing_scan_access_resets_a_forwarded_request_in_flight() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let (mut client, has_head, p, _machine, agent) =
        forwarded_to_a_silent_target(&node, slow_get).await;
    heard(has_head).await;
    node.api().set_access(&p.endpoint, Some(false), None).await.unwrap();
    reset_and_freed(&node, &mut client).await;
    agent.stop();
}

/// A forwarded request is held to the stream time limits a tunnelled one is: a client that stops
/// half-way through its body is reset after the idle timeout, and its stream's slot is freed.
#[actix::test]
async fn a_forwarded_request_whose_client_goes_quiet_is_reset_after_the_idle_timeout() {
    let node = TestNode::start_with("node-a", Backend::Embedded, |c| {
        c.stream_limits.idle_timeout = Some(std::time::Duration::from_secs(2));
    });
    // Three bytes of a ten-byte body, then nothing. Not waiting for the target to hear it: on a
    // slow machine the idle timeout may come first, and the reset is all this asserts.
    let (mut client, _, _, _machine, agent) = forwarded_to_a_silent_target(&node, |port, auth| {
        format!("POST http://127.0.0.1:{port}/upload HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\nContent-Length: 10\r\n\r\nabc")
    })
    .await;
    reset_and_freed(&node, &mut client).await;
    agent.stop();
}

/// A client that has sent its whole request and closed its side, to a target that stays silent
/// and open, is reset once the half-closed timeout has passed (with no idle timeout at all), and
/// its stream's slot is freed.
#[actix::test]
async fn a_forwarded_request_half_closed_before_a_silent_target_is_reset() {
    let node = TestNode::start_with("node-a", Backend::Embedded, |c| {
        c.stream_limits.idle_timeout = None;
        c.stream_limits.half_closed_timeout = std::time::Duration::from_secs(2);
    });
    let (mut client, has_head, _, _machine, agent) =
        forwarded_to_a_silent_target(&node, slow_get).await;
    heard(has_head).await;
    client.shutdown().await.unwrap();
    reset_and_freed(&node, &mut client).await;
    agent.stop();
}
