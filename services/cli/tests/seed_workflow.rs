//! The seed's "Internal Scanning Management" workflow, end to end through the `ism` command line
//! against a running node, on both event-log backends: users and roles, the gateway, an endpoint
//! and its key, deployment, scans, Manage Access (with the support window expiring under an
//! injected clock), edits with optimistic concurrency, key rotation, deletion, the audit
//! timeline, and the projection check.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

mod support;

use ism_cli::scanner::{self, ScannerError};
use ism_events::ManualClock;
use ism_tests::cluster::{
    connected, echo_server, eventually, http_server, Backend, TestMachine, TestNode, PATIENCE,
};
use ism_tests::nats::NatsServer;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use support::Ism;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_string()
}

/// Waits until the peer closes `stream` (or fails it), for at most [`PATIENCE`]. How fast that
/// happens is the benchmark's figure, not a test's.
async fn closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the stream was still open after {PATIENCE:?}"),
        }
    }
}

async fn echoes(stream: &mut TcpStream) {
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

async fn refused_with(socks: &str, user: &str, secret: &str, port: u16) -> u8 {
    match scanner::connect(socks, user, secret, "127.0.0.1", port).await {
        Err(ScannerError::Refused { code, .. }) => code,
        Err(e) => panic!("expected a SOCKS refusal, got {e}"),
        Ok(_) => panic!("expected a SOCKS refusal, got a connection"),
    }
}

/// Returns the node, so the caller can read its log afterwards.
async fn seed_workflow(backend: Backend) -> TestNode {
    let clock = ManualClock::at(1_790_000_000_000);
    let node_clock = clock.clone();
    let node = TestNode::start_with("node-a", backend, move |c| {
        c.clock = Arc::new(node_clock.clone());
        c.support_sweep_interval = Duration::from_millis(100);
    });
    let api = format!("http://{}", node.addresses.api);
    let socks = node.socks();
    let admin = Ism { api: api.clone(), token: node.admin_token.clone() };

    // --- Users and roles: only Administrators and Security Leads manage. ---
    admin.json(&["user", "create", "--name", "alice", "--role", "security-lead"]).await;
    admin.json(&["user", "create", "--name", "rita", "--role", "reviewer"]).await;
    // No user can pose as the bootstrap administrator or another kind of actor.
    for posing in ["admin", "endpoint:dc1", "node:node-a"] {
        assert!(admin
            .fails(&["user", "create", "--name", posing, "--role", "administrator"])
            .await
            .contains("is reserved"));
    }
    assert!(admin
        .fails(&["user", "create", "--name", "ALICE", "--role", "reviewer"])
        .await
        .contains("already exists"));
    let alice = Ism {
        api: api.clone(),
        token: s(&admin.json(&["user", "token", "alice", "--label", "laptop"]).await["token"]),
    };
    let rita =
        Ism { api: api.clone(), token: s(&admin.json(&["user", "token", "rita"]).await["token"]) };
    assert_eq!(alice.json(&["whoami"]).await["role"], "security-lead");
    assert!(rita.fails(&["user", "list"]).await.contains("only Administrators may"));

    // --- Configure Internal Scanning: the gateway. ---
    let gw =
        alice.json(&["gateway", "create", "--name", "corp", "--description", "main gateway"]).await;
    assert_eq!(gw["status"], "Online");
    assert!(
        s(&gw["endpoint_url"]).ends_with("/wsendpoint"),
        "the gateway shows the address to allow: {gw}"
    );
    let gw_id = s(&gw["id"]);
    assert!(alice
        .fails(&["gateway", "create", "--name", "Z\u{fc}rich"])
        .await
        .contains("only ASCII"));
    assert!(rita
        .fails(&["gateway", "create", "--name", "shadow"])
        .await
        .contains("only Administrators and Security Leads"));

    // --- The endpoint: Pending, with a key shown on demand to managers only. ---
    let added = alice
        .json(&[
            "endpoint",
            "add",
            "--gateway",
            &gw_id,
            "--name",
            "dc1",
            "--platform",
            "linux",
            "--description",
            "data centre 1",
        ])
        .await;
    let (ep_id, key) = (s(&added["endpoint"]["id"]), s(&added["key"]));
    assert_eq!(added["endpoint"]["status"], "Pending");
    assert_eq!(added["endpoint"]["scan_access"], true, "scan access is on by default");
    assert_eq!(
        added["endpoint"]["support_access"]["state"], "off",
        "support-engineer access is off by default"
    );
    assert!(alice
        .fails(&["endpoint", "add", "--gateway", &gw_id, "--name", "DC1"])
        .await
        .contains("already has an endpoint named"));
    assert!(alice
        .fails(&["endpoint", "add", "--gateway", &gw_id, "--name", "s\u{e9}oul"])
        .await
        .contains("only ASCII"));
    assert_eq!(alice.ok(&["endpoint", "key", &ep_id]).await.trim(), key);
    assert!(rita
        .fails(&["endpoint", "key", &ep_id])
        .await
        .contains("only Administrators and Security Leads"));
    let listing = rita.ok(&["endpoint", "list", "--gateway", &gw_id]).await;
    assert!(listing.contains("dc1") && listing.contains("Pending"), "{listing}");

    // --- Deploy: the endpoint connects with its key and becomes Ready with its version. ---
    let echo = echo_server().await;
    let app = http_server("payroll").await;
    let allowed = format!("127.0.0.1:{}, 127.0.0.1:{}", echo.port(), app.port());
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &key, &allowed);
    connected(&agent).await;
    let ready = eventually("endpoint Ready", || async {
        let e = rita.json(&["endpoint", "show", &ep_id]).await;
        (e["status"] == "Ready").then_some(e)
    })
    .await;
    assert_eq!(ready["agent_version"], env!("CARGO_PKG_VERSION"));
    let scan = s(&alice
        .json(&["credential", "issue", "--gateway", &gw_id, "--label", "zap"])
        .await["secret"]);

    // --- Manage Access: scan access off ends running scans at once and refuses new
    // ones; on again restores service without restarting anything. ---
    let mut running =
        scanner::connect(&socks, "dc1", &scan, "127.0.0.1", echo.port()).await.unwrap();
    echoes(&mut running).await;
    let off = alice.json(&["endpoint", "access", &ep_id, "--scan", "off"]).await;
    assert_eq!(off["scan_access"], false);
    closed(&mut running).await;
    assert_eq!(refused_with(&socks, "dc1", &scan, echo.port()).await, 2);
    alice.json(&["endpoint", "access", &ep_id, "--scan", "on"]).await;
    let mut again = scanner::connect(&socks, "dc1", &scan, "127.0.0.1", echo.port()).await.unwrap();
    echoes(&mut again).await;

    // --- Support-engineer access: a window of 1..30 days (or indefinite) that expires by itself.
    let support = s(&alice
        .json(&[
            "credential",
            "issue",
            "--gateway",
            &gw_id,
            "--kind",
            "support",
            "--label",
            "vendor support",
        ])
        .await["secret"]);
    assert_eq!(refused_with(&socks, "dc1", &support, echo.port()).await, 2, "off by default");
    assert!(alice
        .fails(&["endpoint", "access", &ep_id, "--support", "31"])
        .await
        .contains("1 to 30 days"));
    let granted = alice.json(&["endpoint", "access", &ep_id, "--support", "2"]).await;
    assert_eq!(granted["support_access"]["state"], "active");
    assert_eq!(granted["support_access"]["until_ms"], clock_now(&clock) + 2 * DAY_MS);
    let mut engineer =
        scanner::connect(&socks, "dc1", &support, "127.0.0.1", echo.port()).await.unwrap();
    echoes(&mut engineer).await;
    clock.advance_ms(3 * DAY_MS);
    closed(&mut engineer).await;
    eventually("support access recorded as expired", || async {
        let e = rita.json(&["endpoint", "show", &ep_id]).await;
        (e["support_access"]["state"] == "off").then_some(())
    })
    .await;
    assert_eq!(refused_with(&socks, "dc1", &support, echo.port()).await, 2);
    echoes(&mut again).await; // scans were never affected
    alice.json(&["endpoint", "access", &ep_id, "--support", "indefinite"]).await;
    echoes(&mut scanner::connect(&socks, "dc1", &support, "127.0.0.1", echo.port()).await.unwrap())
        .await;
    alice.json(&["endpoint", "access", &ep_id, "--support", "off"]).await;

    // --- Edit, with optimistic concurrency: an edit based on an old read is refused; the retry
    // on the current version succeeds. ---
    let version =
        rita.json(&["endpoint", "show", &ep_id]).await["version"].as_u64().unwrap().to_string();
    let edited =
        alice.json(&["endpoint", "edit", &ep_id, "--name", "dc-east", "--version", &version]).await;
    assert_eq!(edited["name"], "dc-east");
    assert!(admin
        .fails(&["endpoint", "edit", &ep_id, "--description", "stale", "--version", &version])
        .await
        .contains("changed since it was read"));
    let retried = admin.json(&["endpoint", "edit", &ep_id, "--description", "east wing"]).await;
    assert_eq!(
        (retried["name"].as_str(), retried["description"].as_str()),
        (Some("dc-east"), Some("east wing"))
    );
    assert!(alice
        .fails(&["endpoint", "edit", &ep_id, "--name", ""])
        .await
        .contains("endpoint name is required"));
    // The new name is what scanners use now.
    let fetched = scanner::http_get(
        scanner::connect(&socks, "dc-east", &scan, "127.0.0.1", app.port()).await.unwrap(),
        "x",
        "/",
        PATIENCE,
    )
    .await
    .unwrap();
    assert_eq!(fetched.body, "payroll");

    // --- Rotate the key: the running endpoint is cut off, and its old key no longer works. ---
    let rotated = alice.json(&["endpoint", "rotate-key", &ep_id]).await;
    let new_key = s(&rotated["key"]);
    assert_ne!(new_key, key);
    let diagnosis = tokio::time::timeout(PATIENCE, agent.join())
        .await
        .expect("the endpoint must be cut off")
        .expect_err("the old key must stop working");
    assert!(diagnosis.message.contains("Failure to authenticate endpoint key"), "{diagnosis}");
    let agent = machine.start_endpoint(&node, &new_key, &allowed);
    connected(&agent).await;

    // --- Delete: refused while the gateway has endpoints; deleting the endpoint closes its
    // tunnel at once and its key stops working; the deleted gateway's name stays visible. ---
    assert!(alice.fails(&["gateway", "delete", &gw_id]).await.contains("delete them first"));
    alice.json(&["endpoint", "delete", &ep_id]).await;
    let diagnosis = tokio::time::timeout(PATIENCE, agent.join())
        .await
        .expect("the endpoint must be cut off")
        .expect_err("deleted");
    assert!(diagnosis.message.contains("This endpoint was deleted"), "{diagnosis}");
    let deleted = alice.json(&["gateway", "delete", &gw_id]).await;
    assert_eq!(deleted["status"], "Deleted");
    assert!(!alice.ok(&["gateway", "list"]).await.contains("corp"));
    let gone = alice.ok(&["gateway", "deleted"]).await;
    assert!(gone.contains("corp") && gone.contains("deleted by alice"), "{gone}");
    assert!(
        matches!(
            scanner::connect(&socks, "dc-east", &scan, "127.0.0.1", app.port()).await,
            Err(ScannerError::AuthRefused)
        ),
        "the deleted gateway's credentials must stop working"
    );

    // --- Audit: the whole story as a timeline, filterable by gateway, endpoint, actor, time. ---
    let story = rita.ok(&["audit", "--gateway", &gw_id]).await;
    for line in [
        "created gateway \"corp\" (main gateway) (by user:alice)",
        "added endpoint \"dc1\" (linux) to gateway \"corp\" (by user:alice)",
        "scan access disabled (by user:alice)",
        "support-engineer access expired",
        "key rotated (generation 2)",
        "deleted endpoint \"dc-east\" (by user:alice)",
        "deleted gateway \"corp\": deleted by alice (by user:alice)",
    ] {
        assert!(story.contains(line), "the timeline lacks {line:?}:\n{story}");
    }
    let by_admin = admin.json(&["audit", "--actor", "admin"]).await;
    let entries = by_admin["entries"].as_array().unwrap();
    assert!(!entries.is_empty() && entries.iter().all(|e| e["actor"] == "admin"), "{by_admin}");
    let later = admin
        .json(&["audit", "--since", &clock_now(&clock).to_string(), "--endpoint", &ep_id])
        .await;
    let later = later["entries"].as_array().unwrap();
    assert!(
        !later.is_empty()
            && later.iter().all(|e| e["time_ms"].as_i64().unwrap() >= clock_now(&clock))
    );
    assert!(later.iter().all(|e| e["endpoint"] == ep_id.as_str()));
    assert!(rita.fails(&["audit", "--since", "yesterday"]).await.contains("since must be"));

    // --- The projections are what a replay of the log gives. ---
    assert!(admin.ok(&["projections", "verify"]).await.contains("matches the replay"));
    assert!(rita.fails(&["projections", "verify"]).await.contains("only Administrators"));
    node
}

/// The timeline a node serves, as the CLI prints it.
async fn audit_via_api(node: &TestNode, gateway: &str) -> Vec<Value> {
    let admin =
        Ism { api: format!("http://{}", node.addresses.api), token: node.admin_token.clone() };
    admin.json(&["audit", "--gateway", gateway]).await["entries"].as_array().unwrap().clone()
}

/// The same timeline read straight from an event log, no node involved.
async fn audit_offline(spec: &str, gateway: &str) -> Vec<Value> {
    let offline = Ism { api: "http://127.0.0.1:9".into(), token: "unused".into() };
    offline.json(&["audit", "--event-log", spec, "--gateway", gateway]).await["entries"]
        .as_array()
        .unwrap()
        .clone()
}

fn first_gateway(entries: &[Value]) -> String {
    s(&entries.iter().find(|e| e["event"] == "GatewayCreated").expect("a gateway was created")
        ["gateway"])
}

fn clock_now(clock: &ManualClock) -> i64 {
    use ism_events::Clock;
    clock.now_ms()
}

#[actix::test]
async fn the_seed_workflow_through_the_cli_on_the_embedded_log() {
    let node = seed_workflow(Backend::Embedded).await;
    let admin =
        Ism { api: format!("http://{}", node.addresses.api), token: node.admin_token.clone() };
    let all = admin.json(&["audit"]).await["entries"].as_array().unwrap().clone();
    let gateway = first_gateway(&all);
    let served = audit_via_api(&node, &gateway).await;
    // With the node stopped, its embedded log can be read directly, and tells the same story.
    let data = node.stop();
    let offline = audit_offline(&data.path().join("events").display().to_string(), &gateway).await;
    assert_eq!(offline, served);
}

#[actix::test]
async fn the_seed_workflow_through_the_cli_on_jetstream() {
    let nats = NatsServer::start();
    let node = seed_workflow(Backend::JetStream(nats.url().to_string())).await;
    let admin =
        Ism { api: format!("http://{}", node.addresses.api), token: node.admin_token.clone() };
    let gateway = first_gateway(admin.json(&["audit"]).await["entries"].as_array().unwrap());
    // The cluster's log can be audited from anywhere that reaches NATS, while nodes run.
    assert_eq!(audit_offline(nats.url(), &gateway).await, audit_via_api(&node, &gateway).await);
}
