//! Projections are disposable: a rebuild from the event log gives byte-identical content to the
//! live projection, on both backends.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_events::{rebuild, Projection};
use ism_projectors::DirectoryProjection;
use ism_tests::cluster::{
    connected, eventually, http_server, provision, Backend, TestMachine, TestNode, PATIENCE,
};
use ism_tests::nats::NatsServer;

async fn rebuild_matches_live(node: &TestNode) {
    let api = node.api();
    let p = provision(&api, "dc1").await;
    api.add_endpoint(&p.gateway, "dc2", "second site", "windows").await.unwrap();
    let app = http_server("x").await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(node, &p.key, &format!("127.0.0.1:{}", app.port()));
    connected(&agent).await;
    let s =
        ism_cli::scanner::connect(&node.socks(), "dc1", &p.scanner_secret, "127.0.0.1", app.port())
            .await
            .unwrap();
    ism_cli::scanner::http_get(s, "x", "/", PATIENCE).await.unwrap();
    agent.stop();
    agent.join().await.unwrap();
    // Wait for the session's end to be recorded and projected.
    eventually("endpoint Offline", || {
        let (api, id) = (&api, p.endpoint.clone());
        async move { api.endpoint(&id).await.ok().filter(|e| e["status"] == "Offline") }
    })
    .await;
    let log = node.state.log.clone();
    let head = log.head().await.unwrap();
    node.state.progress.wait_for(head, PATIENCE).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let fresh = DirectoryProjection::open(dir.path()).unwrap();
    let reached = rebuild(&*log, &fresh).await.unwrap();
    assert_eq!(reached, head);
    let live = node.state.directory.dump().unwrap();
    let rebuilt = fresh.dump().unwrap();
    assert!(live.len() > 5, "the scenario must have produced content");
    assert_eq!(live, rebuilt, "rebuilt directory differs from the live one");
    // Rebuilding again over existing content gives the same bytes too (reset first).
    rebuild(&*log, &fresh).await.unwrap();
    assert_eq!(fresh.dump().unwrap(), live);
}

#[actix::test]
async fn rebuilt_directory_equals_live_on_the_embedded_log() {
    let node = TestNode::start("node-a", Backend::Embedded);
    rebuild_matches_live(&node).await;
}

#[actix::test]
async fn rebuilt_directory_equals_live_on_jetstream() {
    let nats = NatsServer::start();
    let node = TestNode::start("node-a", Backend::JetStream(nats.url().to_string()));
    rebuild_matches_live(&node).await;
}
