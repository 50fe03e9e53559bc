//! Two sessions joined by an in-memory WebSocket, splicing real loopback TCP sockets, or on
//! tokio's paused clock where no real socket is involved (then timing is deterministic).
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use ism_tunnel::{
    Expiry, Incoming, Session, SessionConfig, SpliceOptions, StreamEnd, StreamReader, Timing,
    TunnelSocket, TunnelStream,
};
use ism_tunnel_proto::{
    CreditBudget, Frame, OpenFailure, Role, StreamId, TargetAddr, Windows, MAX_DATA_LEN,
    V2_MAX_DATA_LEN,
};
use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long a wait for something that must happen may take on a loaded machine before the test
/// gives up: generous, since it bounds a failure, not a figure.
const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `done` holds, checking every few milliseconds, for at most [`PATIENCE`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn pair(config: SessionConfig) -> (Session, Session, Incoming) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let ws_cfg = Some(ism_tunnel::ws::websocket_config());
    let gw_ws =
        WebSocketStream::from_raw_socket(TunnelSocket::server(a), WsRole::Server, ws_cfg).await;
    let ep_ws =
        WebSocketStream::from_raw_socket(TunnelSocket::client(b), WsRole::Client, ws_cfg).await;
    let (gw, _) = Session::spawn(gw_ws, Role::Gateway, config.clone());
    let (ep, incoming) = Session::spawn(ep_ws, Role::Endpoint, config);
    (gw, ep, incoming)
}

/// The endpoint side: dial whatever the gateway asks for, like the real agent but without policy.
fn serve_dials(mut incoming: Incoming) {
    tokio::spawn(async move {
        while let Some(inc) = incoming.next().await {
            tokio::spawn(async move {
                let TargetAddr::Ipv4(ip, port) = inc.target().clone() else {
                    panic!("test uses IPv4")
                };
                match TcpStream::connect((ip, port)).await {
                    Ok(tcp) => {
                        if let Ok(stream) = inc.accept().await {
                            stream.splice(tcp).await;
                        }
                    }
                    Err(e) => inc.reject(OpenFailure::ConnectionRefused, e.to_string()),
                }
            });
        }
    });
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Reads `s` to its end: `UnexpectedEof` for a clean close (FIN), the error otherwise (an RST is
/// `ConnectionReset`).
async fn read_end(s: &mut TcpStream) -> std::io::ErrorKind {
    let mut rest = Vec::new();
    match tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest)).await.expect("the socket ended")
    {
        Ok(_) => std::io::ErrorKind::UnexpectedEof,
        Err(e) => e.kind(),
    }
}

/// A target that accepts and then says nothing; returns its address.
async fn silent_target() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

/// A stream spliced to a local socket pair with `options`; returns the scanner's end and the
/// splice.
async fn spliced_with(
    gw: &Session,
    to: SocketAddr,
    options: SpliceOptions,
) -> (TcpStream, tokio::task::JoinHandle<ism_tunnel::SpliceReport>) {
    let stream = gw.open_stream(target(to)).await.expect("open");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server_side, _) = l.accept().await.unwrap();
    (client, tokio::spawn(stream.splice_with(server_side, options)))
}

fn target(addr: SocketAddr) -> TargetAddr {
    match addr {
        SocketAddr::V4(a) => TargetAddr::Ipv4(*a.ip(), a.port()),
        SocketAddr::V6(a) => TargetAddr::Ipv6(*a.ip(), a.port()),
    }
}

/// Opens a stream and splices it to one end of a local socket pair; returns the other end, which
/// plays the scanner.
async fn scanner_through(gw: &Session, to: SocketAddr) -> TcpStream {
    let stream = gw.open_stream(target(to)).await.expect("open");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server_side, _) = l.accept().await.unwrap();
    tokio::spawn(stream.splice(server_side));
    client
}

#[tokio::test]
async fn fifty_concurrent_streams_echo_byte_exact() {
    let (gw, _ep, incoming) = pair(SessionConfig {
        windows: Windows { alone: 32 * 1024, shared: 2 * 1024 },
        ..Default::default()
    })
    .await;
    serve_dials(incoming);
    let echo = echo_server().await;
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = scanner_through(&gw, echo).await;
            // Larger than the window, so credit must cycle many times.
            let data: Vec<u8> =
                (0..300_000u32).map(|x| (x.wrapping_mul(31).wrapping_add(i)) as u8).collect();
            let (mut r, mut w) = s.split();
            let send = async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut back = Vec::new();
            let recv = r.read_to_end(&mut back);
            let (_, n) = tokio::join!(send, recv);
            n.unwrap();
            assert_eq!(back, data, "stream {i} corrupted");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every stream finished both ways, so the table is empty again.
    eventually("every stream forgotten", || gw.open_streams() == 0).await;
}

/// The driver holds large payloads until it has read what the tunnel holds now, then writes
/// them together: frames with no end and nothing smaller behind them must still reach the socket.
#[tokio::test]
async fn a_burst_the_driver_holds_reaches_the_socket_without_anything_behind_it() {
    // No pings: every message read counts towards ending a hold, and nothing but the frames may.
    let (gw, _ep, incoming) = pair(quiet()).await;
    serve_dials(incoming);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = gw.open_stream(target(listener.local_addr().unwrap())).await.expect("open");
    let (mut target, _) = listener.accept().await.unwrap();
    let (_reader, mut writer) = stream.split();
    // Two whole frames of the largest size, each far above what the driver writes at once.
    let payload: Vec<u8> = (0..(512u32 << 10)).map(|i| (i % 253) as u8).collect();
    let mut received = vec![0u8; payload.len()];
    let (sent, read) = tokio::time::timeout(PATIENCE, async {
        // Credit comes back only once the first bytes are written: both at once.
        tokio::join!(
            writer.send(bytes::Bytes::from(payload.clone())),
            target.read_exact(&mut received)
        )
    })
    .await
    .expect("the held frames were written while the stream stayed open");
    sent.unwrap();
    read.unwrap();
    assert!(received == payload, "received bytes differ");
}

#[tokio::test]
async fn a_stalled_target_does_not_stall_other_streams() {
    let (gw, _ep, incoming) = pair(SessionConfig {
        windows: Windows { alone: 64 * 1024, shared: 4 * 1024 },
        ..Default::default()
    })
    .await;
    serve_dials(incoming);
    // A target that accepts and never reads.
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (s, _) = sink.accept().await.unwrap();
            held_tx.send(s).unwrap();
        }
    });
    let stalled = scanner_through(&gw, sink_addr).await;
    let _held = held_rx.recv().await.unwrap();
    // Push into the stalled stream until everything between the scanner and the target is full:
    // the scanner's socket stays unwritable, which means the gateway stopped reading it because
    // the stream's credit is exhausted.
    let chunk = vec![0u8; 64 * 1024];
    let mut pushed = 0usize;
    loop {
        match stalled.try_write(&chunk) {
            Ok(n) => pushed += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if tokio::time::timeout(Duration::from_millis(300), stalled.writable())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => panic!("stalled stream failed: {e}"),
        }
        assert!(pushed < 512 * 1024 * 1024, "the stalled stream never pushed back");
    }
    let echo = echo_server().await;
    // Other streams still make progress, promptly.
    for _ in 0..20 {
        let mut s = scanner_through(&gw, echo).await;
        let res = tokio::time::timeout(PATIENCE, async {
            s.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            buf
        })
        .await
        .expect("a healthy stream was stalled by a stalled one");
        assert_eq!(&res, b"ping");
    }
    drop(stalled);
}

#[tokio::test]
async fn refused_dial_reaches_the_opener_and_closing_resets_streams() {
    let (gw, _ep, incoming) = pair(SessionConfig::default()).await;
    serve_dials(incoming);
    // A port with nothing listening, held bound so that no test running beside this one takes
    // it while the dial is refused.
    let down = tokio::net::TcpSocket::new_v4().unwrap();
    down.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = down.local_addr().unwrap();
    let err = gw.open_stream(target(closed)).await.err().expect("dial must fail");
    assert!(
        matches!(
            err,
            ism_tunnel::OpenStreamError::Refused { reason: OpenFailure::ConnectionRefused, .. }
        ),
        "{err:?}"
    );

    let echo = echo_server().await;
    let stream = gw.open_stream(target(echo)).await.unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server_side, _) = l.accept().await.unwrap();
    let spliced = tokio::spawn(stream.splice(server_side));
    gw.close("test closes the session");
    let report = tokio::time::timeout(PATIENCE, spliced).await.unwrap().unwrap();
    assert_eq!(report.end, StreamEnd::Reset(ism_tunnel_proto::ResetReason::SessionClosed));
    assert_eq!(read_end(&mut client).await, std::io::ErrorKind::ConnectionReset);
    assert_eq!(gw.closed().await, ism_tunnel::CloseReason::Local("test closes the session".into()));
}

#[tokio::test]
async fn a_target_reset_reaches_the_scanner_as_a_reset() {
    let (gw, _ep, incoming) = pair(SessionConfig::default()).await;
    serve_dials(incoming);
    // A target that sends part of a page, then aborts the connection.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial").await.unwrap();
        let mut request = [0u8; 1];
        let _ = s.read(&mut request).await;
        s.set_zero_linger().unwrap();
    });
    let (mut scanner, splice) = spliced_with(&gw, addr, SpliceOptions::default()).await;
    scanner.write_all(b"x").await.unwrap();
    let report = tokio::time::timeout(PATIENCE, splice).await.unwrap().unwrap();
    assert_eq!(report.end, StreamEnd::Reset(ism_tunnel_proto::ResetReason::Aborted));
    // What arrived before the reset may be read or not, but the end is an error, never EOF.
    let mut got = Vec::new();
    let end = loop {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(PATIENCE, scanner.read(&mut buf)).await.unwrap() {
            Ok(0) => break std::io::ErrorKind::UnexpectedEof,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e.kind(),
        }
    };
    assert_eq!(end, std::io::ErrorKind::ConnectionReset, "after {} bytes", got.len());
}

#[tokio::test]
async fn a_stream_whose_scanner_left_is_reset_when_the_target_stays_silent() {
    let (gw, _ep, incoming) = pair(SessionConfig::default()).await;
    serve_dials(incoming);
    let options = SpliceOptions {
        half_closed_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let (mut scanner, splice) = spliced_with(&gw, silent_target().await, options).await;
    // The scanner sends its request and closes its side; the target never answers.
    scanner.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    scanner.shutdown().await.unwrap();
    let report = tokio::time::timeout(PATIENCE, splice).await.unwrap().unwrap();
    assert_eq!(report.end, StreamEnd::Expired(Expiry::HalfClosed));
    assert_eq!(read_end(&mut scanner).await, std::io::ErrorKind::ConnectionReset);
    eventually("the slot freed on both sides", || gw.open_streams() == 0).await;
}

#[tokio::test]
async fn a_stream_on_which_nothing_moves_is_reset_after_the_idle_timeout_and_not_before() {
    let (gw, _ep, incoming) = pair(SessionConfig::default()).await;
    serve_dials(incoming);
    let echo = echo_server().await;
    let options =
        SpliceOptions { idle_timeout: Some(Duration::from_millis(300)), ..Default::default() };
    let (mut scanner, splice) = spliced_with(&gw, echo, options).await;
    // Traffic keeps it alive for several idle timeouts.
    for _ in 0..6 {
        scanner.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        scanner.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!splice.is_finished(), "a stream with traffic is not idle");
    let report = tokio::time::timeout(PATIENCE, splice).await.unwrap().unwrap();
    assert_eq!(report.end, StreamEnd::Expired(Expiry::Idle));
    assert_eq!(read_end(&mut scanner).await, std::io::ErrorKind::ConnectionReset);
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_declared_dead_after_the_idle_timeout() {
    let (a, _b_kept_open_but_silent) = tokio::io::duplex(1 << 16);
    let ws = WebSocketStream::from_raw_socket(TunnelSocket::server(a), WsRole::Server, None).await;
    let timing = Timing { idle_timeout: Duration::from_secs(7), ..Default::default() };
    let (s, _) = Session::spawn(ws, Role::Gateway, SessionConfig { timing, ..Default::default() });
    let started = tokio::time::Instant::now();
    let reason = s.closed().await;
    assert_eq!(reason, ism_tunnel::CloseReason::IdleTimeout);
    // On the paused clock the session ends exactly at the idle timeout.
    assert_eq!(started.elapsed(), Duration::from_secs(7));
}

#[tokio::test]
async fn cancelling_a_splice_resets_the_stream_on_both_sides() {
    let (gw, ep, mut incoming) = pair(SessionConfig::default()).await;
    let echo = echo_server().await;
    let stream = gw.open_stream(target(echo));
    let accepted = async {
        let inc = incoming.next().await.unwrap();
        let TargetAddr::Ipv4(ip, port) = inc.target().clone() else { unreachable!() };
        let tcp = TcpStream::connect((ip, port)).await.unwrap();
        (inc.accept().await.unwrap(), tcp)
    };
    let (stream, (peer, peer_tcp)) = tokio::join!(stream, accepted);
    let peer_side = tokio::spawn(peer.splice(peer_tcp));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server_side, _) = l.accept().await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let ours = tokio::spawn(
        stream
            .unwrap()
            .splice_with(server_side, SpliceOptions { stop: cancel.clone(), ..Default::default() }),
    );
    client.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    client.read_exact(&mut buf).await.unwrap();
    cancel.cancel();
    let report = tokio::time::timeout(PATIENCE, ours).await.unwrap().unwrap();
    assert_eq!((report.end, report.sent, report.received), (StreamEnd::Cancelled, 5, 5));
    let peer_report = tokio::time::timeout(PATIENCE, peer_side).await.unwrap().unwrap();
    assert_eq!(peer_report.end, StreamEnd::Reset(ism_tunnel_proto::ResetReason::Revoked));
    // The scanner's socket is aborted, not closed: an RST, so it cannot take a cut-off transfer
    // for a complete one.
    assert_eq!(read_end(&mut client).await, std::io::ErrorKind::ConnectionReset);
    assert_eq!(ep.open_streams(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_open_nobody_answers_times_out_and_is_cleaned_up() {
    let (gw, _ep, mut incoming) = pair(SessionConfig::default()).await;
    // The endpoint side takes the request and sits on it.
    let held = tokio::spawn(async move { incoming.next().await });
    let started = tokio::time::Instant::now();
    let err = gw.open_stream(TargetAddr::Domain("slow.example".into(), 80)).await.err().unwrap();
    assert_eq!(err, ism_tunnel::OpenStreamError::TimedOut(Timing::default().open_timeout));
    assert_eq!(started.elapsed(), Timing::default().open_timeout);
    assert_eq!(gw.open_streams(), 0, "the open is forgotten when it is given up");
    let _held = held.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_open_whose_opener_left_frees_its_slot_at_the_next_ping() {
    let (gw, _ep, mut incoming) = pair(SessionConfig::default()).await;
    let held = tokio::spawn(async move { incoming.next().await });
    // The scanner gives up after a second (its open is dropped unanswered).
    let open = gw.open_stream(TargetAddr::Domain("slow.example".into(), 80));
    assert!(tokio::time::timeout(Duration::from_secs(1), open).await.is_err());
    assert_eq!(gw.open_streams(), 1);
    tokio::time::sleep(Timing::default().ping_interval).await;
    assert_eq!(gw.open_streams(), 0, "freed at the first ping after the opener left");
    let _held = held.await.unwrap();
}

/// A socket with a fault: its reading side taking 16 KiB a millisecond (a link slower than the
/// streams feeding it, so that whatever the sender may put in flight queues in front of the
/// reader), its reads held while a [`Gate`] is shut, its reads never waiting while a [`Flood`]
/// lasts, or its writes failing once a budget of bytes has gone out (a connection that breaks in
/// the middle of a frame).
struct Faulty<S> {
    inner: S,
    slow_reads: bool,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    gate: Option<Arc<Gate>>,
    flood: Option<Arc<Flood>>,
    write_budget: Option<usize>,
}

impl<S> Faulty<S> {
    fn new(inner: S) -> Self {
        Self { inner, slow_reads: false, pause: None, gate: None, flood: None, write_budget: None }
    }

    fn flooded(inner: S, flood: Arc<Flood>) -> Self {
        Self { flood: Some(flood), ..Self::new(inner) }
    }

    fn slow_reads(inner: S) -> Self {
        Self { slow_reads: true, ..Self::new(inner) }
    }

    fn gated(inner: S, gate: Arc<Gate>) -> Self {
        Self { gate: Some(gate), ..Self::new(inner) }
    }

    fn breaks_after(inner: S, bytes: usize) -> Self {
        Self { write_budget: Some(bytes), ..Self::new(inner) }
    }
}

/// Holds a [`Faulty`] socket's reads while shut.
#[derive(Default)]
struct Gate {
    shut: std::sync::atomic::AtomicBool,
    reader: std::sync::Mutex<Option<std::task::Waker>>,
}

impl Gate {
    fn shut(&self) {
        self.shut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn open(&self) {
        self.shut.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(reader) = self.reader.lock().unwrap().take() {
            reader.wake();
        }
    }

    /// Whether a read must wait; if so, the reader is woken when the gate opens.
    fn holds(&self, cx: &std::task::Context<'_>) -> bool {
        *self.reader.lock().unwrap() = Some(cx.waker().clone());
        self.shut.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// While it lasts, a [`Faulty`] socket with nothing to read reads unsolicited WebSocket pongs
/// instead (a server's, unmasked, two bytes each, which nobody answers; whole frames only: the
/// test lets the socket read again, through its [`Gate`], only once the peer's frames are all
/// written): a tunnel that never runs dry, as when other streams keep it busy.
struct Flood {
    on: std::sync::atomic::AtomicBool,
    /// When the flood stops by itself, so that a test that fails does not spin for ever.
    until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Flood {
    fn new() -> Self {
        Self { on: false.into(), until: std::sync::Mutex::new(None) }
    }

    fn start(&self) {
        *self.until.lock().unwrap() = Some(std::time::Instant::now() + PATIENCE);
        self.on.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn stop(&self) {
        self.on.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn lasts(&self) -> bool {
        if self.until.lock().unwrap().is_some_and(|until| std::time::Instant::now() >= until) {
            self.stop();
        }
        self.on.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Fills `buf` with pongs if the flood lasts; returns whether it did.
    fn pongs(&self, buf: &mut tokio::io::ReadBuf<'_>) -> bool {
        let pongs = (buf.remaining() / 2).min(1024);
        if pongs == 0 || !self.lasts() {
            return false;
        }
        for _ in 0..pongs {
            buf.put_slice(&[0x8a, 0x00]);
        }
        true
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Faulty<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if self.gate.as_ref().is_some_and(|gate| gate.holds(cx)) {
            return Poll::Pending;
        }
        if let Some(flood) = self.flood.clone() {
            return match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Pending if flood.pongs(buf) => Poll::Ready(Ok(())),
                polled => polled,
            };
        }
        if !self.slow_reads {
            return std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if let Some(pause) = self.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        let mut limited = buf.take(16 * 1024);
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        buf.advance(n);
        if n > 0 {
            self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(1))));
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Faulty<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let allowed = match self.write_budget {
            Some(0) => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            Some(budget) => buf.len().min(budget),
            None => buf.len(),
        };
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, &buf[..allowed]);
        if let (Poll::Ready(Ok(n)), Some(budget)) = (&polled, self.write_budget.as_mut()) {
            *budget -= n;
        }
        polled
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A payload the driver holds is written after a bounded number of reads even when the tunnel
/// never runs dry (other streams keeping it busy), not only when the driver runs out of things to
/// read: otherwise the stream would wait, its credit with it, for as long as the others are busy.
/// The gateway here is a plain WebSocket that plays the protocol by hand; once the payload is
/// sent, the endpoint's socket reads pongs whenever it has nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_payload_is_written_while_the_tunnel_stays_busy() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let flood = Arc::new(Flood::new());
    let gate = Arc::new(Gate::default());
    let faulty = Faulty { gate: Some(gate.clone()), ..Faulty::flooded(b, flood.clone()) };
    let socket = TunnelSocket::client(faulty);
    let ws = WebSocketStream::from_raw_socket(socket, WsRole::Client, None).await;
    let mut gateway = WebSocketStream::from_raw_socket(a, WsRole::Server, None).await;
    let windows = Windows { alone: 1 << 20, shared: 1 << 20 };
    let (_endpoint, mut incoming) =
        Session::spawn(ws, Role::Endpoint, SessionConfig { windows, ..quiet() });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = StreamId(1);
    let open = Frame::Open {
        stream,
        target: target(listener.local_addr().unwrap()),
        window: 1 << 20,
        trace: None,
    };
    gateway.send(Message::Binary(open.encode())).await.unwrap();
    let inc = tokio::time::timeout(PATIENCE, incoming.next()).await.unwrap().unwrap();
    let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (mut target, _) = listener.accept().await.unwrap();
    let mut splice = Box::pin(inc.accept().await.unwrap().splice(tcp));
    // Its first step attaches the socket: from then on the driver may write to it and hold.
    std::future::poll_fn(|cx| {
        assert!(splice.as_mut().poll(cx).is_pending());
        std::task::Poll::Ready(())
    })
    .await;
    tokio::spawn(splice);
    // Twice the size from which the driver holds a payload, whole in the socket before the
    // endpoint reads it and the flood behind it.
    let payload: Vec<u8> = (0..128u32 << 10).map(|i| (i % 251) as u8).collect();
    let data = Frame::Data { stream, payload: Bytes::from(payload.clone()) };
    gate.shut();
    gateway.send(Message::Binary(data.encode())).await.unwrap();
    flood.start();
    gate.open();
    // The driver's own write: what the socket does not take goes to the stream's task, which
    // may not run before the flood ends.
    let mut received = vec![0u8; payload.len()];
    let (first, rest) = received.split_at_mut(16 << 10);
    tokio::time::timeout(PATIENCE, target.read_exact(first))
        .await
        .expect("the held payload reached the socket")
        .unwrap();
    assert!(flood.lasts(), "written while the tunnel was still busy, not after");
    flood.stop();
    tokio::time::timeout(PATIENCE, target.read_exact(rest)).await.unwrap().unwrap();
    assert!(received == payload, "received bytes differ");
}

/// The fairness rule, without wall-clock figures: while a bulk transfer saturates its stream
/// over a slow link, a small request on another stream of the same session is delivered with
/// at most the bulk stream's shared window of bulk bytes, plus the one frame the writer may be
/// sending, ahead of it: each stream has at most one frame waiting in the writer's ordered
/// queue, its frames are no larger than its credit, and the receiver holds a stream that shares
/// the session to the shared window, so that is all that can queue in the link. (Without the
/// rule the bulk stream's whole window, 8 MiB, could queue there.) Frames as large as the
/// protocol allows. Runs on the paused clock over an in-memory socket: the same interleaving
/// every run.
#[tokio::test(start_paused = true)]
async fn a_small_request_beside_a_bulk_transfer_waits_for_at_most_one_shared_window() {
    let config = SessionConfig { max_data_len: MAX_DATA_LEN, ..Default::default() };
    let window = u64::from(config.windows.alone);
    let shared = u64::from(config.windows.shared);
    let (a, b) = tokio::io::duplex(4 << 20);
    let ws_cfg = Some(ism_tunnel::ws::websocket_config());
    let gw_ws =
        WebSocketStream::from_raw_socket(TunnelSocket::server(a), WsRole::Server, ws_cfg).await;
    let slow = Faulty::slow_reads(b);
    let ep_ws =
        WebSocketStream::from_raw_socket(TunnelSocket::client(slow), WsRole::Client, ws_cfg).await;
    let (gw, _) = Session::spawn(gw_ws, Role::Gateway, config.clone());
    let (_ep, mut incoming) = Session::spawn(ep_ws, Role::Endpoint, config);
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let bulk_bytes = Rc::new(Cell::new(0u64));
            let (small_tx, mut small_rx) = tokio::sync::mpsc::unbounded_channel();
            // The endpoint side: reads both streams as fast as they come.
            let counted = bulk_bytes.clone();
            tokio::task::spawn_local(async move {
                let mut n = 0;
                while let Some(inc) = incoming.next().await {
                    n += 1;
                    let (mut reader, _writer) = inc.accept().await.unwrap().split();
                    let (counted, small_tx) = (counted.clone(), small_tx.clone());
                    tokio::task::spawn_local(async move {
                        while let Some(Ok(chunk)) = reader.recv().await {
                            match n {
                                1 => counted.set(counted.get() + chunk.len() as u64),
                                _ => small_tx.send((chunk, counted.get())).unwrap(),
                            }
                        }
                    });
                }
            });
            let bulk = gw.open_stream(TargetAddr::Domain("bulk".into(), 1)).await.unwrap();
            let (_r, mut bulk_writer) = bulk.split();
            let chunk = Bytes::from(vec![7u8; 4 * MAX_DATA_LEN]);
            tokio::task::spawn_local(async move {
                while bulk_writer.send(chunk.clone()).await.is_ok() {}
            });
            let at_least = |bytes: u64| {
                let counted = bulk_bytes.clone();
                async move {
                    while counted.get() < bytes {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            };
            // Let the bulk transfer grow to the whole window alone, then open the small stream
            // and let the bulk one spend what it had and settle into the shared window.
            at_least(2 * window).await;
            let small = gw.open_stream(TargetAddr::Domain("small".into(), 2)).await.unwrap();
            let (_r, mut small_writer) = small.split();
            at_least(bulk_bytes.get() + 2 * window).await;
            for i in 0..20u8 {
                let before = bulk_bytes.get();
                small_writer.send(Bytes::from(vec![i; 100])).await.unwrap();
                let (got, bulk_at_arrival) = small_rx.recv().await.unwrap();
                assert_eq!(got, Bytes::from(vec![i; 100]));
                let ahead = bulk_at_arrival - before;
                assert!(
                    ahead <= 2 * shared,
                    "request {i}: {ahead} bulk bytes were delivered ahead of it"
                );
            }
        })
        .await;
}

/// A lone bulk stream reserves its large window from the budget its config shares while it
/// runs, on both sides, and returns it when it ends; with the budget spent, a bulk stream keeps
/// the shared window and still arrives whole.
#[tokio::test]
async fn a_lone_stream_draws_its_window_from_the_budget_and_returns_it() {
    let windows = Windows { alone: 256 * 1024, shared: 16 * 1024 };
    let extra = u64::from(windows.alone - windows.shared);
    // Both ends of the pair share it here, as the sessions of one node do.
    let budget = CreditBudget::new(2 * extra);
    let (gw, _ep, incoming) =
        pair(SessionConfig { windows, budget: budget.clone(), ..Default::default() }).await;
    serve_dials(incoming);
    let echo = echo_server().await;
    let data: Vec<u8> = (0..4_000_000u32).map(|x| (x.wrapping_mul(131) >> 3) as u8).collect();

    // The scanner sends and reads nothing yet, and does not finish until told: its stream
    // stays open, alone, and grows to its large window both ways.
    let (mut r, mut w) = scanner_through(&gw, echo).await.into_split();
    let sent = data.clone();
    let (finish, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        finish_rx.await.unwrap();
        w.shutdown().await.unwrap();
    });
    eventually("both directions reserved their extra", || budget.reserved() == 2 * extra).await;
    finish.send(()).unwrap();
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    sender.await.unwrap();
    assert!(back == data, "the echo came back whole");
    eventually("every stream forgotten", || gw.open_streams() == 0).await;
    eventually("the ended stream returned its extra", || budget.reserved() == 0).await;

    // Someone else holds the whole budget: the next stream stays at the shared window.
    let _spent = budget.try_reserve(2 * extra).unwrap();
    let shortfalls = budget.shortfalls();
    let (mut r, mut w) = scanner_through(&gw, echo).await.into_split();
    let sent = data.clone();
    let sender = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    sender.await.unwrap();
    assert!(back == data, "with the budget spent the echo still came back whole");
    assert_eq!(budget.reserved(), 2 * extra, "the stream reserved nothing more");
    assert!(budget.shortfalls() > shortfalls, "the stream asked and was refused");
}

/// Bulk uploads side by side, each stream busy, share the whole window: each grows to its share
/// (reserved above the shared window from the budget) and every byte arrives.
#[tokio::test]
async fn busy_streams_side_by_side_share_the_whole_window() {
    let windows = Windows { alone: 256 * 1024, shared: 16 * 1024 };
    let budget = CreditBudget::new(u64::MAX);
    let (gw, _ep, incoming) =
        pair(SessionConfig { windows, budget: budget.clone(), ..Default::default() }).await;
    serve_dials(incoming);
    // A sink that counts what it read and says so when the scanner finishes.
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut n = 0u64;
                while let Ok(read @ 1..) = s.read(&mut buf).await {
                    n += read as u64;
                }
                s.write_all(&n.to_be_bytes()).await.unwrap();
            });
        }
    });
    let streams = 4;
    let share = u64::from(windows.alone) / streams as u64;
    let extra = share - u64::from(windows.shared);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut uploads = Vec::new();
    for _ in 0..streams {
        let (mut r, mut w) = scanner_through(&gw, sink_addr).await.into_split();
        let stop = stop.clone();
        uploads.push(tokio::spawn(async move {
            let chunk = vec![0x3c_u8; 64 * 1024];
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                w.write_all(&chunk).await.unwrap();
                sent += chunk.len() as u64;
            }
            w.shutdown().await.unwrap();
            let mut counted = [0u8; 8];
            r.read_exact(&mut counted).await.unwrap();
            (sent, u64::from_be_bytes(counted))
        }));
    }
    eventually("every busy stream holds its share", || budget.reserved() == streams as u64 * extra)
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for upload in uploads {
        let (sent, counted) = upload.await.unwrap();
        assert_eq!(sent, counted, "the sink counted every byte sent");
    }
}

/// Both sessions over the given WebSockets, and a stream the endpoint opened that the gateway
/// echoes: the diagnostic tool's path.
async fn echoed_by_the_gateway<A, B>(
    gw_ws: WebSocketStream<TunnelSocket<A>>,
    ep_ws: WebSocketStream<TunnelSocket<B>>,
    cfg: SessionConfig,
) -> (Session, Session, ism_tunnel::TunnelStream)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (gw, mut gw_incoming) = Session::spawn(gw_ws, Role::Gateway, cfg.clone());
    let (ep, _) = Session::spawn(ep_ws, Role::Endpoint, cfg);
    tokio::spawn(async move {
        while let Some(inc) = gw_incoming.next().await {
            tokio::spawn(async move { inc.accept().await.unwrap().echo().await });
        }
    });
    let stream = ep
        .open_stream(TargetAddr::Domain(ism_tunnel_proto::DIAGNOSTIC_ECHO_HOST.into(), 7))
        .await
        .unwrap();
    (gw, ep, stream)
}

#[tokio::test(start_paused = true)]
async fn split_halves_echo_through_the_peer() {
    // The endpoint opens (even ids) and the gateway echoes: the diagnostic tool's path.
    let (a, b) = tokio::io::duplex(1 << 20);
    let gw_ws =
        WebSocketStream::from_raw_socket(TunnelSocket::server(a), WsRole::Server, None).await;
    let ep_ws =
        WebSocketStream::from_raw_socket(TunnelSocket::client(b), WsRole::Client, None).await;
    let cfg =
        SessionConfig { windows: Windows { alone: 16 * 1024, shared: 1024 }, ..Default::default() };
    let (_gw, ep, stream) = echoed_by_the_gateway(gw_ws, ep_ws, cfg).await;
    let (mut reader, mut writer) = stream.split();
    // Far more than the window: sending and receiving must overlap.
    let payload: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let send = async move {
        writer.send(bytes::Bytes::from(sent)).await.unwrap();
        writer.finish().await.unwrap();
    };
    let recv = async {
        let mut got = Vec::new();
        while let Some(chunk) = reader.recv().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        got
    };
    let ((), echoed) = tokio::join!(send, recv);
    assert_eq!(echoed, payload);
    eventually("the finished stream forgotten", || ep.open_streams() == 0).await;
}

/// Everything a stream's reader receives until the peer finishes, and the largest Data frame's
/// payload among it.
async fn receive_all(mut reader: StreamReader) -> (Vec<u8>, usize) {
    let (mut received, mut biggest) = (Vec::new(), 0);
    while let Some(chunk) = tokio::time::timeout(PATIENCE, reader.recv()).await.unwrap() {
        let chunk = chunk.unwrap();
        biggest = biggest.max(chunk.len());
        received.extend_from_slice(&chunk);
    }
    (received, biggest)
}

/// A session sends frames as large as the protocol version both sides agreed on allows: at most
/// 64 KiB to a peer of protocol 2 (its decoder refuses more), up to 256 KiB from protocol 3 on.
/// The receiving reader gets each frame's payload as one chunk.
#[tokio::test(start_paused = true)]
async fn data_frames_are_as_large_as_the_agreed_version_allows() {
    for (version, largest) in [(2, V2_MAX_DATA_LEN), (3, MAX_DATA_LEN)] {
        let (gw, _ep, mut incoming) = pair(SessionConfig::default().at_version(version)).await;
        let sent = 2 * 1024 * 1024;
        let sender = tokio::spawn(async move {
            let (_r, mut w) =
                gw.open_stream(TargetAddr::Domain("bulk".into(), 1)).await.unwrap().split();
            w.send(Bytes::from(vec![5u8; sent])).await.unwrap();
            w.finish().await.unwrap();
            gw
        });
        let (reader, _w) = incoming.next().await.unwrap().accept().await.unwrap().split();
        let (received, biggest) = receive_all(reader).await;
        let _gw = sender.await.unwrap();
        assert_eq!(received.len(), sent, "protocol {version}");
        assert_eq!(biggest, largest, "protocol {version}: the largest frame");
    }
}

/// A socket whose peer writes `data` and then closes, spliced to `stream`: the pump's reads grow
/// to many frames' worth while the socket holds that much.
async fn splice_a_full_socket(stream: TunnelStream, data: Arc<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut source = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (spliced, _) = l.accept().await.unwrap();
    tokio::spawn(async move {
        source.write_all(&data).await.unwrap();
        source.shutdown().await.unwrap();
        // Held until the splice has read it all and ends.
        let _ = source.read(&mut [0u8; 1]).await;
    });
    stream.splice(spliced).await;
}

/// The setting (8 MiB of credit, 6 MiB queued at the socket) makes the pumps read many frames'
/// worth at once, which nothing outside the pump can see; what is checked is that such reads
/// arrive byte-exact in frames no larger than the version allows, masked or not. Breaking
/// `seal_apart`'s key rotation fails it (checked), so the later frames' path is exercised.
#[tokio::test]
async fn a_pumps_reads_of_many_frames_arrive_whole_in_frames_the_version_allows_both_ways() {
    let data: Arc<Vec<u8>> =
        Arc::new((0..6 * 1024 * 1024u32).map(|x| (x.wrapping_mul(131) >> 3) as u8).collect());
    for (version, largest) in [(2, V2_MAX_DATA_LEN), (3, MAX_DATA_LEN)] {
        // Credit for whole reads of many frames in both directions from the start.
        let big = 8 * 1024 * 1024;
        let config = SessionConfig {
            windows: Windows { alone: big, shared: big },
            ..SessionConfig::default().at_version(version)
        };
        // Gateway -> endpoint: unmasked frames.
        let (gw, _ep, mut incoming) = pair(config.clone()).await;
        let source = data.clone();
        let sender = tokio::spawn(async move {
            let stream = gw.open_stream(TargetAddr::Domain("bulk".into(), 1)).await.unwrap();
            splice_a_full_socket(stream, source).await;
            gw
        });
        let (reader, mut writer) = incoming.next().await.unwrap().accept().await.unwrap().split();
        writer.finish().await.unwrap();
        let (received, biggest) = receive_all(reader).await;
        assert!(received == *data, "gateway -> endpoint, protocol {version}: bytes differ");
        assert_eq!(biggest, largest, "gateway -> endpoint, protocol {version}: the largest frame");
        let _gw = tokio::time::timeout(PATIENCE, sender).await.unwrap().unwrap();

        // Endpoint -> gateway: masked frames, each under its own key.
        let (gw, _ep, mut incoming) = pair(config).await;
        let opened = tokio::spawn(async move {
            let (reader, mut writer) =
                gw.open_stream(TargetAddr::Domain("bulk".into(), 1)).await.unwrap().split();
            writer.finish().await.unwrap();
            (reader, gw)
        });
        let stream = incoming.next().await.unwrap().accept().await.unwrap();
        let (reader, _gw) = opened.await.unwrap();
        let spliced = tokio::spawn(splice_a_full_socket(stream, data.clone()));
        let (received, biggest) = receive_all(reader).await;
        assert!(received == *data, "endpoint -> gateway, protocol {version}: bytes differ");
        assert_eq!(biggest, largest, "endpoint -> gateway, protocol {version}: the largest frame");
        tokio::time::timeout(PATIENCE, spliced).await.unwrap().unwrap();
    }
}

/// Sessions whose own pings are an hour apart: nothing but what a test does makes them write.
fn quiet() -> SessionConfig {
    let hour = Duration::from_secs(3600);
    let timing = Timing { ping_interval: hour, idle_timeout: 2 * hour, ..Timing::default() };
    SessionConfig { timing, ..SessionConfig::default() }
}

/// A gateway session facing a plain tungstenite client, which sends what a session never does.
async fn session_facing_a_plain_client() -> (Session, WebSocketStream<tokio::io::DuplexStream>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let ws = WebSocketStream::from_raw_socket(TunnelSocket::server(a), WsRole::Server, None).await;
    let peer = WebSocketStream::from_raw_socket(b, WsRole::Client, None).await;
    let (session, _) = Session::spawn(ws, Role::Gateway, quiet());
    (session, peer)
}

#[tokio::test]
async fn a_websocket_ping_is_answered_through_the_sessions_writer() {
    let (session, mut peer) = session_facing_a_plain_client().await;
    for payload in [&b"are you there"[..], b"still?"] {
        peer.send(Message::Ping(Bytes::from_static(payload))).await.unwrap();
        let answer = tokio::time::timeout(PATIENCE, peer.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(answer, Message::Pong(Bytes::from_static(payload)));
    }
    assert!(!session.is_closed());
}

#[tokio::test]
async fn a_peers_close_ends_the_session_and_is_answered_with_one_close_and_nothing_after() {
    let (session, mut peer) = session_facing_a_plain_client().await;
    peer.close(None).await.unwrap();
    let reason = tokio::time::timeout(PATIENCE, session.closed()).await.unwrap();
    assert_eq!(reason, ism_tunnel::CloseReason::PeerClosed);
    drop(session);
    let mut heard = Vec::new();
    while let Some(Ok(message)) = tokio::time::timeout(PATIENCE, peer.next()).await.unwrap() {
        heard.push(message);
    }
    let closes: Vec<usize> = (0..heard.len()).filter(|&i| heard[i].is_close()).collect();
    assert_eq!(closes, [heard.len() - 1], "one Close, last of all: {heard:?}");
}

#[tokio::test]
async fn a_tunnel_that_breaks_mid_frame_ends_the_session_and_its_streams_sends() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let breaks = Faulty::breaks_after(b, 100_000);
    let gw_ws =
        WebSocketStream::from_raw_socket(TunnelSocket::server(a), WsRole::Server, None).await;
    let ep_ws =
        WebSocketStream::from_raw_socket(TunnelSocket::client(breaks), WsRole::Client, None).await;
    let (_gw, ep, stream) = echoed_by_the_gateway(gw_ws, ep_ws, SessionConfig::default()).await;
    let (_reader, mut writer) = stream.split();
    let payload = Bytes::from(vec![7u8; 1_000_000]);
    let sent = tokio::time::timeout(PATIENCE, writer.send(payload)).await.unwrap();
    assert!(sent.is_err(), "the write that broke the tunnel fails its sender");
    let reason = tokio::time::timeout(PATIENCE, ep.closed()).await.unwrap();
    assert!(matches!(reason, ism_tunnel::CloseReason::Transport(_)), "{reason:?}");
    // The stream's turn came back with the failed write: its next send fails, it does not wait.
    let finished = tokio::time::timeout(PATIENCE, writer.finish()).await.unwrap();
    assert!(finished.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_send_dropped_in_the_middle_of_a_frame_is_finished_by_the_writer_task() {
    // A small pipe, so that a frame stops part-way while the gateway does not read; pings an hour
    // apart, so that nothing else makes the endpoint's session write. On the paused clock the
    // send's timeout fires only once every task is idle: the frame has gone as far as it can.
    let (a, b) = tokio::io::duplex(16 * 1024);
    let gate = Arc::new(Gate::default());
    let gw_ws = WebSocketStream::from_raw_socket(
        TunnelSocket::server(Faulty::gated(a, gate.clone())),
        WsRole::Server,
        None,
    )
    .await;
    let ep_ws =
        WebSocketStream::from_raw_socket(TunnelSocket::client(b), WsRole::Client, None).await;
    let (_gw, _ep, stream) = echoed_by_the_gateway(gw_ws, ep_ws, quiet()).await;
    let (mut reader, mut writer) = stream.split();
    gate.shut();
    let payload = Bytes::from(vec![7u8; 60 * 1024]);
    let sending = tokio::time::timeout(Duration::from_millis(100), writer.send(payload)).await;
    assert!(sending.is_err(), "the send waits on the full pipe and is dropped part-way");
    gate.open();
    let echoed = tokio::time::timeout(PATIENCE, reader.recv()).await.unwrap().unwrap().unwrap();
    assert!(!echoed.is_empty() && echoed.iter().all(|&b| b == 7), "the frame arrived whole");
}

/// A stream the gateway opened and the endpoint side accepted, and the endpoint's two halves,
/// which send nothing unless the test makes them.
async fn accepted_stream(
    gw: &Session,
    incoming: &mut Incoming,
) -> (TunnelStream, StreamReader, ism_tunnel::StreamWriter) {
    let open = gw.open_stream(TargetAddr::Domain("target.test".into(), 80));
    let accept = async { incoming.next().await.unwrap().accept().await.unwrap() };
    let (stream, peer) = tokio::join!(open, accept);
    let (reader, writer) = peer.split();
    (stream.unwrap(), reader, writer)
}

/// An exchange's half-closed timeout runs from when its caller says its side finished, not
/// from its last byte: quiet for three times the timeout after its request, it lives on; once its
/// side finished, it is given up the timeout later, with what it sent counted, and the peer's
/// slot is freed.
#[tokio::test(start_paused = true)]
async fn an_exchange_is_given_up_the_half_closed_timeout_after_its_side_finished_and_not_before() {
    let (gw, ep, mut incoming) = pair(SessionConfig::default()).await;
    let (stream, mut peer_reader, _peer_writer) = accepted_stream(&gw, &mut incoming).await;
    let options =
        SpliceOptions { half_closed_timeout: Some(Duration::from_secs(30)), ..Default::default() };
    let started = tokio::time::Instant::now();
    let exchange = tokio::spawn(stream.exchange(options, async |reader, writer, exchanged| {
        if let Err(end) = writer.send(Bytes::from_static(b"request")).await {
            return end;
        }
        exchanged.sent(7);
        tokio::time::sleep(Duration::from_secs(90)).await;
        if let Err(end) = writer.finish().await {
            return end;
        }
        exchanged.half_closed();
        // The peer never answers.
        match reader.recv().await {
            Some(Err(end)) => end,
            other => panic!("the peer sent nothing, yet the exchange received {other:?}"),
        }
    }));
    assert_eq!(peer_reader.recv().await.unwrap().unwrap(), &b"request"[..]);
    assert!(peer_reader.recv().await.is_none(), "the exchange's side finished");
    tokio::time::sleep_until(started + Duration::from_secs(119)).await;
    assert!(!exchange.is_finished(), "given up before the half-closed timeout ran out");
    let report = exchange.await.unwrap();
    assert_eq!(
        report,
        ism_tunnel::SpliceReport {
            sent: 7,
            received: 0,
            end: StreamEnd::Expired(Expiry::HalfClosed),
        }
    );
    let ran = started.elapsed();
    assert!(ran >= Duration::from_secs(120) && ran < Duration::from_secs(121), "ran {ran:?}");
    eventually("the peer's slot freed", || ep.open_streams() == 0).await;
}

/// An exchange stopped (access withdrawn) ends at once, reports what it moved, and the peer
/// learns the stream was revoked.
#[tokio::test(start_paused = true)]
async fn a_stopped_exchange_is_reset_as_revoked_with_its_bytes_counted() {
    let (gw, _ep, mut incoming) = pair(SessionConfig::default()).await;
    let (stream, mut peer_reader, mut peer_writer) = accepted_stream(&gw, &mut incoming).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let options = SpliceOptions { stop: stop.clone(), ..Default::default() };
    let (counted, received) = tokio::sync::oneshot::channel();
    let exchange = tokio::spawn(stream.exchange(options, async |reader, writer, exchanged| {
        if let Err(end) = writer.send(Bytes::from_static(b"hello")).await {
            return end;
        }
        exchanged.sent(5);
        match reader.recv().await {
            Some(Ok(chunk)) => exchanged.received(chunk.len()),
            other => panic!("the peer's bytes, not {other:?}"),
        }
        let _ = counted.send(());
        std::future::pending().await
    }));
    assert_eq!(peer_reader.recv().await.unwrap().unwrap(), &b"hello"[..]);
    peer_writer.send(Bytes::from_static(b"hi")).await.unwrap();
    received.await.unwrap();
    stop.cancel();
    let report = exchange.await.unwrap();
    assert_eq!((report.end, report.sent, report.received), (StreamEnd::Cancelled, 5, 2));
    let peer_end = tokio::time::timeout(PATIENCE, peer_reader.recv()).await.unwrap();
    assert_eq!(peer_end, Some(Err(StreamEnd::Reset(ism_tunnel_proto::ResetReason::Revoked))));
}
