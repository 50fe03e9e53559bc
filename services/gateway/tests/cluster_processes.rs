//! Three `ism-gateway` processes on a three-server NATS cluster (streams and buckets with three
//! replicas), as deployed: `kill -9` of the node holding an endpoint, the loss of one NATS server
//! of three, and a rolling restart under load, each with what must survive it. Endpoint agents
//! and scanners run in the test; they reach the nodes only through their ports.
//!
//! How long things took (the endpoint back after a kill, a stream ended after access was turned
//! off) is printed, not asserted: figures belong to the benchmark.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_endpoint::AgentStatus;
use ism_events::jetstream::JetStreamLog;
use ism_events::{AggregateId, Event, EventLog};
use ism_tests::cluster::{
    connected, echo_server, echo_stream_through, eventually, provision, recorded, round_trip,
    serving_nodes, socks_open, Provisioned, TestMachine, PATIENCE,
};
use ism_tests::gateway_cluster::ClusterFiles;
use ism_tests::gateway_process::{NodePorts, NodeProcess};
use ism_tests::nats::NatsCluster;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use uuid::Uuid;

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// Three nodes on three NATS servers.
/// (Fields drop in order: the nodes first, while their data and NATS are still there.)
struct ProcessCluster {
    nodes: Vec<Option<NodeProcess>>,
    nats: NatsCluster,
    files: Arc<ClusterFiles>,
    data: Arc<tempfile::TempDir>,
    /// Where each node listens, from its first start on.
    ports: Vec<NodePorts>,
}

impl ProcessCluster {
    async fn start() -> ProcessCluster {
        let mut c = ProcessCluster {
            nats: tokio::task::spawn_blocking(NatsCluster::start).await.unwrap(),
            files: Arc::new(ClusterFiles::new(&NODES)),
            data: Arc::new(tempfile::tempdir().unwrap()),
            ports: Vec::new(),
            nodes: Vec::new(),
        };
        for i in 0..NODES.len() {
            let node = c.launch(i).await;
            c.ports.push(node.ports);
            c.nodes.push(Some(node));
        }
        // Formed once every node has seen the others' heartbeats.
        for i in 0..NODES.len() {
            serving_nodes(&c.node(i).api(&c.files), NODES.len()).await;
        }
        c
    }

    /// Starts node `i` (again), where it was, off the test's runtime (a node takes a moment to
    /// come up, and the agents and scanners of the test run meanwhile).
    async fn launch(&self, i: usize) -> NodeProcess {
        let (files, data, ports, urls) =
            (self.files.clone(), self.data.clone(), self.ports.get(i).copied(), self.nats.urls());
        tokio::task::spawn_blocking(move || {
            NodeProcess::start(
                std::path::Path::new(env!("CARGO_BIN_EXE_ism-gateway")),
                NODES[i],
                ports,
                &files,
                &urls,
                &data.path().join(NODES[i]),
            )
        })
        .await
        .unwrap()
    }

    fn node(&self, i: usize) -> &NodeProcess {
        self.nodes[i].as_ref().expect("a running node")
    }

    fn socks(&self, i: usize) -> String {
        self.ports[i].socks.to_string()
    }

    /// The `gateway` setting for an endpoint that knows every node, node-1 first.
    fn gateways(&self) -> String {
        self.ports.iter().map(|p| p.endpoint_wss.to_string()).collect::<Vec<_>>().join(",")
    }

    async fn log(&self) -> JetStreamLog {
        JetStreamLog::connect(&self.nats.urls()).await.unwrap()
    }

    /// An endpoint provisioned through node-1, its agent connected (to node-1, its first
    /// address), allowed to reach the echo server at `echo_port`.
    async fn endpoint(
        &self,
        echo_port: u16,
    ) -> (Provisioned, TestMachine, ism_endpoint::AgentHandle) {
        let p = provision(&self.node(0).api(&self.files), "dc1").await;
        let machine = TestMachine::new();
        let agent = machine.start_endpoint_trusting(
            &self.files.ca_file(),
            &p.key,
            &format!("127.0.0.1:{echo_port}"),
            &self.gateways(),
            "",
        );
        connected(&agent).await;
        (p, machine, agent)
    }
}

/// The session the log shows `node` opened for the endpoint.
async fn tunnel_on(log: &dyn EventLog, endpoint: &str, node: &str) -> Uuid {
    let endpoint: Uuid = endpoint.parse().unwrap();
    recorded(log)
        .await
        .into_iter()
        .rev()
        .find_map(|e| match e.event {
            Event::TunnelOpened { endpoint: opened, node: on, .. }
                if opened == endpoint && on == node =>
            {
                Some(e.aggregate.id)
            }
            _ => None,
        })
        .expect("a session opened on the node")
}

async fn tunnel_events(log: &dyn EventLog, tunnel: Uuid) -> Vec<Event> {
    let recorded = log.read_aggregate(&AggregateId::tunnel(tunnel)).await.unwrap();
    recorded.into_iter().map(|r| r.envelope.event).collect()
}

/// Waits until `stream` ends (EOF or reset).
async fn ends(mut stream: TcpStream) {
    let mut buf = [0u8; 16];
    let ended = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await;
    assert!(matches!(ended, Ok(Ok(0) | Err(_))), "the stream must end: {ended:?}");
}

#[actix::test]
async fn a_killed_node_costs_seconds_and_its_sessions_end_once_in_the_log() {
    let mut c = ProcessCluster::start().await;
    let echo = echo_server().await;
    let (p, _machine, agent) = c.endpoint(echo.port()).await;
    // A scanner on each node reaches the endpoint node-1 holds.
    for i in 0..3 {
        drop(echo_stream_through(&c.socks(i), &p, echo.port()).await);
    }
    let log = c.log().await;
    let tunnel = tunnel_on(&log, &p.endpoint, "node-1").await;
    let relayed = echo_stream_through(&c.socks(1), &p, echo.port()).await;
    // Recorded before the kill: the three streams that ended, and the one still running.
    eventually("the streams recorded", || {
        let log = &log;
        async move {
            let events = tunnel_events(log, tunnel).await;
            let count = |f: fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
            let opened = count(|e| matches!(e, Event::StreamOpened { .. }));
            let closed = count(|e| matches!(e, Event::StreamClosed { .. }));
            (opened == 4 && closed == 3).then_some(())
        }
    })
    .await;

    let killed = Instant::now();
    c.nodes[0].take().unwrap().kill9();
    ends(relayed).await;
    // The endpoint goes on to its next address at once...
    let status = agent
        .wait_for(
            PATIENCE,
            |s| matches!(s, AgentStatus::Connected { node, .. } if node != "node-1"),
        )
        .await
        .expect("the endpoint back on another node");
    println!("endpoint back on {status:?} {:?} after the kill", killed.elapsed());
    // ...and a scanner's retry through another node reaches it.
    drop(echo_stream_through(&c.socks(2), &p, echo.port()).await);
    println!("a scanner through node-3 reached it {:?} after the kill", killed.elapsed());

    // Both survivors notice node-1 is lost; once both have let it go, its session's end and its
    // stream's are in the log exactly once.
    let (api2, api3) = (c.node(1).api(&c.files), c.node(2).api(&c.files));
    for api in [&api2, &api3] {
        eventually("node-1 forgotten", || async move {
            let nodes = api.nodes().await.ok()?;
            let names: Vec<&str> =
                nodes.as_array()?.iter().filter_map(|n| n["node"].as_str()).collect();
            (!names.contains(&"node-1")).then_some(())
        })
        .await;
    }
    let events = tunnel_events(&log, tunnel).await;
    let closed: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::TunnelClosed { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(closed, ["gateway node node-1 lost"], "{events:?}");
    let cut = events
        .iter()
        .filter(|e| matches!(e, Event::StreamClosed { end, .. } if end.starts_with("cut: gateway node node-1 lost")))
        .count();
    assert_eq!(cut, 1, "the stream open at the kill ends once: {events:?}");
    let ids: Vec<Uuid> = recorded(&log).await.iter().map(|e| e.id).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no event recorded twice");
    for api in [&api2, &api3] {
        let verified = api.verify_projections().await.unwrap();
        assert_eq!(verified["all_match"], true, "{verified}");
    }

    // Access turned off through node-2, which now holds the endpoint, ends a stream relayed
    // through node-3.
    let relayed = echo_stream_through(&c.socks(2), &p, echo.port()).await;
    let off = Instant::now();
    api2.set_access(&p.endpoint, Some(false), None).await.unwrap();
    ends(relayed).await;
    println!(
        "the stream relayed through node-3 ended {:?} after access was turned off",
        off.elapsed()
    );
    agent.stop();
}

#[actix::test]
async fn the_cluster_carries_on_when_one_nats_server_of_three_dies() {
    let mut c = ProcessCluster::start().await;
    let echo = echo_server().await;
    let (p, _machine, agent) = c.endpoint(echo.port()).await;
    drop(echo_stream_through(&c.socks(1), &p, echo.port()).await);
    let before: Vec<Uuid> = recorded(&c.log().await).await.iter().map(|e| e.id).collect();

    c.nats.kill(2);
    // Writes are acknowledged by the two servers left (a quorum of three replicas), once they
    // elected new leaders for what the lost server led. A client whose request timed out
    // meanwhile finds, when it retries, what its request did.
    let api2 = c.node(1).api(&c.files);
    let added = eventually("an endpoint added with one NATS server down", || {
        let api2 = &api2;
        let gateway = p.gateway.clone();
        async move {
            match api2.add_endpoint(&gateway, "dc2", "", "linux").await {
                Ok(added) => Some(added["endpoint"].clone()),
                Err(e) => {
                    println!("not yet: {e}");
                    let listed = api2.endpoints(&gateway).await.ok()?;
                    listed.as_array()?.iter().find(|e| e["name"] == "dc2").cloned()
                }
            }
        }
    })
    .await;
    let id = added["id"].as_str().unwrap().to_string();
    // ...read on another node...
    let api3 = c.node(2).api(&c.files);
    eventually("the new endpoint listed through node-3", || {
        let (api3, id) = (&api3, id.clone());
        async move { api3.endpoint(&id).await.ok() }
    })
    .await;
    // ...and scanners still reach the endpoint, relayed to the node holding it.
    drop(echo_stream_through(&c.socks(2), &p, echo.port()).await);
    // No acknowledged event is lost.
    let after: Vec<Uuid> = recorded(&c.log().await).await.iter().map(|e| e.id).collect();
    let lost: Vec<&Uuid> = before.iter().filter(|id| !after.contains(id)).collect();
    assert!(lost.is_empty(), "events lost with a NATS server: {lost:?}");
    // (A rebuild reads the whole log: the API answers 503 while NATS cannot serve it yet.)
    let verified =
        eventually("the projections verified", || async { api3.verify_projections().await.ok() })
            .await;
    assert_eq!(verified["all_match"], true, "{verified}");
    agent.stop();
}

#[actix::test]
async fn a_rolling_restart_under_load_loses_no_stream() {
    let mut c = ProcessCluster::start().await;
    let echo = echo_server().await;
    let (p, _machine, agent) = c.endpoint(echo.port()).await;
    for i in 0..3 {
        drop(echo_stream_through(&c.socks(i), &p, echo.port()).await);
    }
    // The scanners' load balancer: round robin over the nodes whose /ready says 200, one short
    // stream after another, each a round trip through the endpoint.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (ports, scanner) = (c.ports.clone(), p.clone());
    let load = tokio::spawn(async move {
        let (mut ok, mut failed, mut turn) = (0usize, Vec::new(), 0usize);
        while !*stopped.borrow_and_update() {
            turn += 1;
            let Some(node) = next_ready(&ports, turn).await else {
                // Every node is between its drain and its restart: ask again in a moment.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            };
            let socks = ports[node].socks.to_string();
            let (code, stream) =
                socks_open(&socks, &scanner.endpoint_name, &scanner.scanner_secret, echo.port())
                    .await;
            match stream.filter(|_| code == 0) {
                Some(mut s) => match round_trip(&mut s).await {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(format!("{}: {e}", NODES[node])),
                },
                None => failed.push(format!("{}: SOCKS reply {code}", NODES[node])),
            }
        }
        (ok, failed)
    });

    for (i, name) in NODES.iter().enumerate() {
        // SIGTERM: the node drains (its endpoint moves on, scanners are sent elsewhere), stops,
        // and comes back.
        let node = c.nodes[i].take().unwrap();
        let said = tokio::task::spawn_blocking(move || node.terminate()).await.unwrap();
        assert!(said.iter().any(|l| l.starts_with("draining")), "{said:?}");
        c.nodes[i] = Some(c.launch(i).await);
        // As a rolling restart does: the next node stops only once this one is back in
        // rotation.
        let api = c.ports[i].api;
        eventually(&format!("{name} ready"), || async move {
            tokio::task::spawn_blocking(move || ism_tests::answers_200(&api.to_string(), "/ready"))
                .await
                .unwrap()
                .then_some(())
        })
        .await;
        let status = agent
            .wait_for(
                PATIENCE,
                |s| matches!(s, AgentStatus::Connected { node, .. } if node != name),
            )
            .await
            .unwrap();
        println!("after restarting {name}: {status:?}");
    }
    let _ = stop.send(true);
    let (ok, failed) = load.await.unwrap();
    println!("{ok} streams during the rolling restart");
    assert!(failed.is_empty(), "streams lost during the rolling restart: {failed:?}");
    assert!(ok > 0);
    agent.stop();
}

/// The first node from `turn` on (round robin) whose `/ready` says 200, as a load balancer's
/// health check sees it; checked off the test's one thread, which the endpoint agent shares.
async fn next_ready(ports: &[NodePorts], turn: usize) -> Option<usize> {
    let apis: Vec<String> = ports.iter().map(|p| p.api.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        (0..apis.len())
            .map(|k| (turn + k) % apis.len())
            .find(|&k| ism_tests::answers_200(&apis[k], "/ready"))
    })
    .await
    .unwrap()
}
