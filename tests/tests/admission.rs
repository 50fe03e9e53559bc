//! Admission control: beyond an endpoint's stream cap, scanners get a clear refusal instead of
//! queued memory, a stream of opens beyond it leaves the endpoint serving, and the log still
//! accounts for every refusal. (How fast refusals come and what a firehose costs in memory and
//! descriptors are the benchmark's figures: `ism-bench --only idle-streams`.)
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_endpoint::AgentHandle;
use ism_events::{AggregateId, Event};
use ism_gateway::stream_queue::QueueLimits;
use ism_tests::cluster::{
    connected_endpoint, eventually, sink_server, socks_open, Backend, Provisioned, TestMachine,
    TestNode, PATIENCE,
};
use std::time::Duration;
use tokio::net::TcpStream;

/// The refusals a tunnel's log records: (events, refusals they account for).
async fn recorded_refusals(node: &TestNode, tunnel: uuid::Uuid) -> (usize, u64) {
    let events = node.state.log.read_aggregate(&AggregateId::tunnel(tunnel)).await.unwrap();
    events.iter().fold((0, 0), |(n, total), r| match &r.envelope.event {
        Event::StreamRefused { .. } => (n + 1, total + 1),
        Event::StreamRefusalsRepeated(r) => {
            let listed = r.targets.len();
            assert!(listed > 0 && listed <= ism_gateway::refusals::LISTED_TARGETS, "{listed}");
            (n + 1, total + r.count)
        }
        _ => (n, total),
    })
}

/// A node whose endpoint has `cap` streams, all held open, and `queue` beyond them.
struct AtCap {
    node: TestNode,
    p: Provisioned,
    target: u16,
    held: Vec<TcpStream>,
    _machine: TestMachine,
    _agent: AgentHandle,
}

impl AtCap {
    async fn start(cap: usize, queue: QueueLimits) -> AtCap {
        let node = TestNode::start_with("node-a", Backend::Embedded, move |c| {
            c.session.max_streams = cap;
            c.stream_limits.queue = queue;
        });
        let target = sink_server().await.port();
        let (p, _machine, _agent) =
            connected_endpoint(&node, "dc1", &format!("127.0.0.1:{target}")).await;
        let mut at = AtCap { node, p, target, held: Vec::new(), _machine, _agent };
        for _ in 0..cap {
            let (code, s) = at.open().await;
            assert_eq!(code, 0, "streams within the cap open");
            at.held.push(s.unwrap());
        }
        at
    }

    /// Opens a stream to the target: the SOCKS reply code, and the stream.
    async fn open(&self) -> (u8, Option<TcpStream>) {
        socks_open(&self.node.socks(), "dc1", &self.p.scanner_secret, self.target).await
    }

    /// Opens a stream on its own task, where it may wait in the queue.
    fn open_waiting(&self) -> tokio::task::JoinHandle<(u8, Option<TcpStream>)> {
        let (socks, secret, port) = (self.node.socks(), self.p.scanner_secret.clone(), self.target);
        tokio::task::spawn_local(async move { socks_open(&socks, "dc1", &secret, port).await })
    }

    /// Waits until the node's status shows `n` streams queued.
    async fn queued(&self, n: u64) {
        let api = self.node.api();
        eventually("the queue's length", || async {
            (api.status().await.ok()?["queued_streams"] == n).then_some(())
        })
        .await
    }
}

#[actix::test]
async fn beyond_the_cap_a_stream_waits_for_a_slot_in_a_bounded_queue() {
    let mut at = AtCap::start(2, QueueLimits { length: 1, timeout: PATIENCE }).await;
    // The third waits for a slot: the node and the endpoint show it queued.
    let waiting = at.open_waiting();
    at.queued(1).await;
    let shown = at.node.api().endpoint(&at.p.endpoint).await.unwrap();
    assert_eq!(shown["queued_streams"], 1, "{shown}");
    // The queue holds one: a fourth is refused at once, as busy.
    let (code, _) = at.open().await;
    assert_eq!(code, 1, "beyond the queue: general failure");
    assert!(!waiting.is_finished(), "the queued stream still waits");
    // A slot frees: the queued stream opens.
    drop(at.held.pop());
    let (code, stream) = waiting.await.unwrap();
    assert_eq!(code, 0, "the queued stream opened once a slot freed");
    assert!(stream.is_some());
    assert_eq!(at.node.api().status().await.unwrap()["queued_streams"], 0);
}

#[actix::test]
async fn a_waiting_stream_leaves_the_queue_when_its_scanner_leaves_or_loses_access() {
    let at = AtCap::start(1, QueueLimits { length: 4, timeout: PATIENCE }).await;
    // A scanner that gives up while it waits (its socket closed) leaves the queue at once.
    let gave_up = at.open_waiting();
    at.queued(1).await;
    gave_up.abort();
    at.queued(0).await;
    // Scan access turned off while a stream waits: it is refused (not allowed), never opened.
    let waiting = at.open_waiting();
    at.queued(1).await;
    at.node.api().set_access(&at.p.endpoint, Some(false), None).await.unwrap();
    let (code, _) = waiting.await.unwrap();
    assert_eq!(code, 2, "access withdrawn while waiting: not allowed");
    at.queued(0).await;
}

#[actix::test]
async fn a_freed_slot_goes_to_the_stream_that_waited_longest() {
    let mut at = AtCap::start(1, QueueLimits { length: 4, timeout: PATIENCE }).await;
    let first = at.open_waiting();
    at.queued(1).await;
    let second = at.open_waiting();
    at.queued(2).await;
    drop(at.held.pop());
    let (code, _first_stream) = first.await.unwrap();
    assert_eq!(code, 0, "the first to wait opens first");
    assert!(!second.is_finished(), "the second still waits: the one slot is taken");
    assert_eq!(at.node.api().status().await.unwrap()["queued_streams"], 1);
}

#[actix::test]
async fn a_stream_that_waits_longer_than_the_queue_timeout_is_refused() {
    let timeout = Duration::from_millis(300);
    let at = AtCap::start(1, QueueLimits { length: 8, timeout }).await;
    let (code, _) = at.open().await;
    assert_eq!(code, 1, "no slot freed within the queue timeout: general failure");
    assert_eq!(at.node.api().status().await.unwrap()["queued_streams"], 0, "it left the queue");
}

#[actix::test]
async fn beyond_the_cap_scanners_are_refused_and_every_refusal_is_accounted_for() {
    // No queue: every open beyond the cap is refused at once.
    let node = TestNode::start_with("node-a", Backend::Embedded, |c| {
        c.session.max_streams = 32;
        c.stream_limits.queue.length = 0;
    });
    let target = sink_server().await;
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", target.port())).await;
    let socks = node.socks();

    // Fill the cap with streams that stay open.
    let mut open = Vec::new();
    for _ in 0..32 {
        let (code, s) = socks_open(&socks, "dc1", &p.scanner_secret, target.port()).await;
        assert_eq!(code, 0, "streams within the cap open");
        open.push(s.unwrap());
    }
    // The capacity is visible: the endpoint is at its limit.
    let shown = node.api().endpoint(&p.endpoint).await.unwrap();
    assert_eq!(
        (shown["open_streams"].as_u64(), shown["stream_limit"].as_u64()),
        (Some(32), Some(32)),
        "{shown}"
    );
    // Beyond it: general failure (0x01), for every one of many opens, 20 at a time.
    let mut workers = Vec::new();
    for _ in 0..20 {
        let (socks, secret, port) = (socks.clone(), p.scanner_secret.clone(), target.port());
        workers.push(tokio::task::spawn_local(async move {
            let mut codes = Vec::new();
            for _ in 0..100 {
                codes.push(socks_open(&socks, "dc1", &secret, port).await.0);
            }
            codes
        }));
    }
    for w in workers {
        let codes = w.await.unwrap();
        assert!(codes.iter().all(|c| *c == 1), "every open beyond the cap is refused: {codes:?}");
    }

    // The log accounts for all 2 000 refusals once the last counting window is over.
    let tunnel = node
        .state
        .sessions
        .get(p.endpoint.parse().unwrap())
        .expect("the endpoint's session")
        .tunnel;
    let (events, accounted) = eventually("every refusal accounted for", || async {
        let (events, accounted) = recorded_refusals(&node, tunnel).await;
        (accounted >= 2_000).then_some((events, accounted))
    })
    .await;
    assert_eq!(accounted, 2_000, "each refusal once");
    assert!(events < 2_000, "refusals are counted, not recorded one by one: {events} events");

    // The streams within the cap still work, and once they end the endpoint takes new ones.
    drop(open);
    node.streams_end().await;
    let (code, _) = socks_open(&socks, "dc1", &p.scanner_secret, target.port()).await;
    assert_eq!(code, 0);
    agent.stop();
}

#[actix::test]
async fn one_credential_cannot_take_every_slot_of_an_endpoint() {
    let node = TestNode::start_with("node-a", Backend::Embedded, |c| {
        c.stream_limits.per_credential = 4;
    });
    let target = sink_server().await;
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", target.port())).await;
    let socks = node.socks();
    let mut open = Vec::new();
    for _ in 0..4 {
        let (code, s) = socks_open(&socks, "dc1", &p.scanner_secret, target.port()).await;
        assert_eq!(code, 0);
        open.push(s.unwrap());
    }
    assert_eq!(socks_open(&socks, "dc1", &p.scanner_secret, target.port()).await.0, 1);
    // Another scanner still gets through the same endpoint.
    let other = node.api().issue_scanner_credential(&p.gateway, "other").await.unwrap();
    let other = other["secret"].as_str().unwrap();
    assert_eq!(socks_open(&socks, "dc1", other, target.port()).await.0, 0);
    // Once the first scanner's streams end, it may open again.
    drop(open);
    eventually("the first scanner's quota freed", || async {
        (socks_open(&socks, "dc1", &p.scanner_secret, target.port()).await.0 == 0).then_some(())
    })
    .await;
    agent.stop();
}

#[actix::test]
async fn connections_waiting_to_authenticate_are_capped_and_the_node_keeps_serving() {
    let node = TestNode::start_with("node-a", Backend::Embedded, |c| c.max_pending_connections = 8);
    let target = sink_server().await;
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", target.port())).await;
    let socks = node.socks();
    // Eight connections that never say a word hold every place.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(&socks).await.unwrap());
    }
    // Until a place is free again, the next connection is closed without an answer...
    eventually("a connection beyond the cap closed unanswered", || async {
        (socks_open(&socks, "dc1", &p.scanner_secret, target.port()).await.0 == 255).then_some(())
    })
    .await;
    // ...while the management API and the running endpoint are unaffected (the directory shows
    // the session once it has applied its recording, which the agent does not wait for)...
    let api = node.api();
    eventually("the endpoint shown Ready", || async {
        let shown = api.endpoint(&p.endpoint).await.ok()?;
        (shown["status"] == "Ready").then_some(())
    })
    .await;
    // ...and an endpoint still connects: endpoints have places of their own.
    let (_, _machine2, agent2) = connected_endpoint(&node, "dc2", "127.0.0.1:1").await;
    agent2.stop();
    drop(idle);
    eventually("a place freed once the idle connections left", || async {
        (socks_open(&socks, "dc1", &p.scanner_secret, target.port()).await.0 == 0).then_some(())
    })
    .await;
    agent.stop();
}

/// When the event log stalls, the facts streams tell wait in a bounded queue: beyond
/// `max_unrecorded`, new streams are refused with the reason, and once the log records again
/// they are accepted, every fact recorded.
#[actix::test]
async fn streams_are_refused_while_the_log_is_behind_and_accepted_once_it_catches_up() {
    let nats = ism_tests::nats::NatsServer::start();
    let node = TestNode::start_with("node-a", Backend::JetStream(nats.url().to_string()), |c| {
        c.stream_limits.max_unrecorded = 1
    });
    let target = sink_server().await;
    let (p, _machine, _agent) =
        connected_endpoint(&node, "dc1", &format!("127.0.0.1:{}", target.port())).await;
    let socks = node.socks();
    let open =
        || ism_cli::scanner::connect(&socks, "dc1", &p.scanner_secret, "127.0.0.1", target.port());

    nats.pause();
    let first = open().await.expect("nothing waits to be recorded yet: accepted");
    eventually("the first stream's fact waiting for the log", || async {
        (node.state.tunnels.unrecorded() >= 1).then_some(())
    })
    .await;
    let refused = open().await.expect_err("the log is behind: refused");
    assert!(refused.to_string().contains("general"), "{refused}");
    nats.resume();

    eventually("the log to catch up", || async {
        (node.state.tunnels.unrecorded() == 0).then_some(())
    })
    .await;
    let again = eventually("a stream accepted again", || async { open().await.ok() }).await;
    drop((first, again));
    let recorded = eventually("both streams recorded", || async {
        let all = ism_tests::cluster::recorded(&*node.state.log).await;
        let opened = all.iter().filter(|e| matches!(e.event, Event::StreamOpened { .. })).count();
        (opened >= 2).then_some(all)
    })
    .await;
    assert!(
        recorded.iter().any(|e| matches!(&e.event, Event::ScannerRefused { reason, .. } if reason.contains("event log is behind"))),
        "the refusal is on record with its reason"
    );
}

/// An endpoint that starts working sessions in a loop (a broken build, or whoever holds a copy of
/// its key and identity) is refused beyond a burst, before anything is recorded, and told when
/// to come back; the agent takes it as a refusal to retry later. Without the bound every loop
/// recorded a session's opening and closing.
#[actix::test]
async fn an_endpoint_starting_sessions_in_a_loop_is_refused_beyond_a_burst() {
    use ism_endpoint::gateway_link::{connect, LinkError};
    use ism_tunnel_proto::Purpose;
    // The node's clock stands still: the burst is spent however slowly the machine connects.
    let (node, _clock) = ism_tests::cluster::node_on_a_manual_clock();
    let p = ism_tests::cluster::provision(&node.api(), "dc1").await;
    let machine = TestMachine::new();
    let gateway = node.addresses.endpoint_wss.to_string();
    let config = machine.config_trusting(&node.ca_file, &p.key, "127.0.0.1", &gateway, "");
    let agent = ism_endpoint::Agent::new(config).unwrap();
    let start = || {
        let session = ism_tunnel::SessionConfig::default();
        connect(agent.config(), agent.tls().clone(), agent.identity(), Purpose::Serve, session)
    };
    let mut held = None;
    for _ in 0..ism_gateway::start_rate::BURST {
        held = Some(start().await.expect("a start within the burst"));
    }
    let refused = start().await.err().expect("one start more is refused");
    let why = format!("{:?}", refused.diagnosis());
    assert!(matches!(refused, LinkError::Retry(_)), "{why}");
    assert!(why.contains("starts sessions on this node too often") && why.contains("again in"));

    // Counted once the node's task for the refused connection ends (after the agent was told).
    let node = &node;
    eventually("the refusal counted", || async move {
        let scraped = ism_tests::metrics::scrape_now(node.addresses.api).await?;
        let reason = [("reason", "too_frequent")];
        let counted =
            ism_tests::metrics::value(&scraped, "ism_tunnel_handshake_failures_total", &reason);
        (counted == Some(1.0)).then_some(())
    })
    .await;
    // The log has the burst's sessions (each recorded as it starts) and none for the refusal.
    let opened = |events: Vec<ism_events::Envelope>| {
        events.iter().filter(|e| matches!(e.event, Event::TunnelOpened { .. })).count()
    };
    eventually("the burst's sessions recorded", || async move {
        let events = ism_tests::cluster::recorded(node.state.log.as_ref()).await;
        (opened(events) == ism_gateway::start_rate::BURST as usize).then_some(())
    })
    .await;
    let held = held.unwrap();
    let endpoint = p.endpoint.parse().unwrap();
    assert!(node.state.sessions.get(endpoint).is_some(), "the endpoint is still served");
    held.session.close("done");
}
