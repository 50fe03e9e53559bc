//! Notifications and retention end to end: a real endpoint agent stopped and started, a real
//! SMTP server (aiosmtpd) receiving the emails, a webhook receiver checking signatures, two
//! nodes racing on one NATS, the four-month rule on an injected clock.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_cli::ApiClient;
use ism_endpoint::AgentHandle;
use ism_events::{Clock, ManualClock, Projection};
use ism_gateway::NodeConfig;
use ism_projectors::NoticeProjection;
use ism_tests::cluster::{
    connected, connected_endpoint, eventually, http_server, serving_nodes, Backend, Provisioned,
    TestMachine, TestNode, PATIENCE,
};
use ism_tests::gateway_cluster::TestCluster;
use ism_tests::smtp::{Mail, SmtpServer};
use ism_tests::webhook::WebhookReceiver;
use ism_tests::ReservedPort;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

/// A node on `clock` emailing through `smtp_url`, retrying failed deliveries quickly.
fn notifying(
    clock: &ManualClock,
    smtp_url: Option<String>,
) -> impl Fn(&mut NodeConfig) + Send + Sync + 'static {
    let clock = clock.clone();
    move |c: &mut NodeConfig| {
        c.clock = Arc::new(clock.clone());
        c.notify.smtp = smtp_url.clone().map(|u| (u, "ISM <ism@localhost>".to_string()));
        c.notify.tick = Duration::from_millis(100);
        c.notify.first_retry = Duration::from_millis(100);
        c.notify.max_retry = Duration::from_millis(500);
    }
}

/// A Security Lead with an address: who the notifications go to.
async fn add_lead(api: &ApiClient) {
    api.create_user("lead", "security-lead", Some("lead@corp.example")).await.unwrap();
}

/// A node alone on the embedded log, on `clock`, emailing through `smtp_url`, with a Security
/// Lead to tell.
async fn node_with_lead(clock: &ManualClock, smtp_url: Option<String>) -> (TestNode, ApiClient) {
    let node = TestNode::start_with("node-a", Backend::Embedded, notifying(clock, smtp_url));
    let api = node.api();
    add_lead(&api).await;
    (node, api)
}

fn clock_now() -> ManualClock {
    ManualClock::at(ism_events::SystemClock.now_ms())
}

async fn mails(smtp: &SmtpServer, n: usize) -> Vec<Mail> {
    eventually(&format!("{n} emails"), || async move {
        let m = smtp.messages();
        (m.len() >= n).then_some(m)
    })
    .await
}

async fn notifications(api: &ApiClient) -> Vec<Value> {
    api.notifications(1000).await.unwrap().as_array().unwrap().clone()
}

/// Waits until a notification of `kind` is in `state`.
async fn notification(api: &ApiClient, kind: &str, state: &str) -> Value {
    eventually(&format!("a {state} {kind} notification"), || async move {
        notifications(api).await.into_iter().find(|n| n["kind"] == kind && n["state"] == state)
    })
    .await
}

/// How many notices the node's rules say are due now (what its notifier acts on); call it once
/// the node is `settled`.
fn due_now(node: &TestNode, clock: &ManualClock) -> usize {
    node.state.notices.due(clock.now_ms()).unwrap().len()
}

/// Waits until no notification is still being sent or retried.
async fn all_finished(api: &ApiClient) {
    eventually("every notification finished", || async move {
        let all = notifications(api).await;
        all.iter().all(|n| n["state"] != "sending" && n["state"] != "failing").then_some(())
    })
    .await
}

async fn status_becomes(api: &ApiClient, endpoint: &str, status: &str) {
    eventually(&format!("endpoint {status}"), || async move {
        api.endpoint(endpoint).await.ok().filter(|e| e["status"] == status)
    })
    .await;
}

/// Stops the agent and waits until the node shows the endpoint offline.
async fn stop(agent: AgentHandle, api: &ApiClient, p: &Provisioned) {
    agent.stop();
    agent.join().await.unwrap();
    status_becomes(api, &p.endpoint, "Offline").await;
}

async fn start(node: &TestNode, machine: &TestMachine, p: &Provisioned) -> AgentHandle {
    let agent = machine.start_endpoint(node, &p.key, "127.0.0.1");
    connected(&agent).await;
    status_becomes(&node.api(), &p.endpoint, "Ready").await;
    agent
}

/// Waits until the node's notice projection has applied everything in the log: what it decides
/// next is decided on all of it.
async fn settled(node: &TestNode) {
    let head = node.state.log.head().await.unwrap();
    node.state.notices_progress.wait_for(head, PATIENCE).await.unwrap();
}

#[actix::test]
async fn offline_online_and_unstable_emails_reach_a_real_smtp_server_and_pause_for_a_day() {
    let smtp = SmtpServer::start();
    let clock = clock_now();
    let (node, api) = node_with_lead(&clock, Some(smtp.url())).await;
    api.create_user("rev", "reviewer", Some("rev@corp.example")).await.unwrap();
    api.create_user("boss", "administrator", Some("boss@corp.example")).await.unwrap();
    let (p, machine, agent) = connected_endpoint(&node, "dc1", "127.0.0.1").await;

    // Offline: only after the grace period, to the Security Lead only.
    stop(agent, &api, &p).await;
    settled(&node).await;
    clock.advance_ms(MINUTE);
    settled(&node).await;
    assert_eq!(due_now(&node, &clock), 0, "within the grace nothing is due");
    assert!(smtp.messages().is_empty(), "within the grace nothing is sent");
    clock.advance_ms(2 * MINUTE);
    let m = mails(&smtp, 1).await;
    assert_eq!(m[0].subject, "Endpoint dc1 of gateway test-gateway is offline");
    assert_eq!(
        m[0].rcpt_to,
        ["lead@corp.example"],
        "reviewers and administrators who did not opt in get nothing"
    );
    assert!(m[0].body.contains("cannot complete while the endpoint is offline"), "{}", m[0].body);
    assert!(
        m[0].body.contains(&format!("/endpoints/{}", p.endpoint)),
        "a link to the endpoint: {}",
        m[0].body
    );

    // Back online; an administrator who opts in gets it too.
    api.edit_user("boss", &serde_json::json!({ "notifications": true })).await.unwrap();
    let agent = start(&node, &machine, &p).await;
    let m = mails(&smtp, 2).await;
    assert_eq!(m[1].subject, "Endpoint dc1 of gateway test-gateway is back online");
    assert_eq!(m[1].rcpt_to, ["boss@corp.example", "lead@corp.example"]);
    assert_ne!(m[0].message_id, m[1].message_id);

    // Two more outages within half an hour (short ones: no offline email each): unstable, once.
    stop(agent, &api, &p).await;
    let agent = start(&node, &machine, &p).await;
    stop(agent, &api, &p).await;
    let m = mails(&smtp, 3).await;
    assert_eq!(m[2].subject, "Endpoint dc1 of gateway test-gateway is unstable");
    assert!(m[2].body.contains("resume if its status changes again after"), "{}", m[2].body);
    let unstable = notification(&api, "endpoint-unstable", "sent").await;
    assert!(unstable["paused_until_ms"].as_i64().unwrap() > clock.now_ms() + DAY - MINUTE);

    // Paused: this outage, long enough to be reported, is recorded as suppressed, not sent.
    clock.advance_ms(3 * MINUTE);
    let held = notification(&api, "endpoint-offline", "suppressed").await;
    assert!(held["suppressed"].as_str().unwrap().contains("paused until"), "{held}");
    let agent = start(&node, &machine, &p).await;
    notification(&api, "endpoint-online", "suppressed").await;
    assert_eq!(smtp.messages().len(), 3);

    // A day later the pause's end is recorded, and the next outage is reported again.
    clock.advance_ms(DAY);
    notification(&api, "endpoint-unstable", "resumed").await;
    stop(agent, &api, &p).await;
    clock.advance_ms(3 * MINUTE);
    let m = mails(&smtp, 4).await;
    assert_eq!(m[3].subject, "Endpoint dc1 of gateway test-gateway is offline");

    // A replay decides nothing new: a fresh notice projection rebuilt from the log has nothing
    // due, and the live one equals the rebuild.
    all_finished(&api).await;
    settled(&node).await;
    let dir = tempfile::tempdir().unwrap();
    let fresh = NoticeProjection::open(dir.path(), *node.state.notices.settings()).unwrap();
    ism_events::rebuild(&*node.state.log, &fresh).await.unwrap();
    assert_eq!(fresh.due(clock.now_ms()).unwrap(), Vec::new());
    assert!(
        fresh.dump().unwrap() == node.state.notices.dump().unwrap(),
        "rebuilt differs from live"
    );
    let verified = api.verify_projections().await.unwrap();
    assert_eq!(verified["all_match"], true, "{verified}");
    assert_eq!(smtp.messages().len(), 4);
}

#[actix::test]
async fn webhooks_are_signed_retried_until_accepted_and_recorded() {
    let clock = clock_now();
    let node = TestNode::start_with("node-a", Backend::Embedded, notifying(&clock, None));
    let api = node.api();
    let secret = "whsec_test_0123456789abcdef";
    let hook = WebhookReceiver::start(secret, 2).await;
    let added =
        api.add_webhook(&hook.url, Some(secret), &["endpoint-offline".into()]).await.unwrap();
    assert_eq!(added["secret"], secret);
    let listed = api.webhooks().await.unwrap();
    assert!(!listed.to_string().contains(secret), "the secret is never shown again: {listed}");
    let forged = WebhookReceiver::start("another-secret-0123456789", 0).await;
    api.add_webhook(&forged.url, Some("a-different-secret-000"), &[]).await.unwrap();
    // Bad input is refused with a reason.
    let bad = api.add_webhook("ftp://x/", None, &[]).await.unwrap_err().to_string();
    assert!(bad.contains("http and https"), "{bad}");
    let bad =
        api.add_webhook(&hook.url, None, &["everything".into()]).await.unwrap_err().to_string();
    assert!(bad.contains("unknown notification kind"), "{bad}");

    let (p, _machine, agent) = connected_endpoint(&node, "dc1", "127.0.0.1").await;
    stop(agent, &api, &p).await;
    clock.advance_ms(3 * MINUTE);
    let sent = notification(&api, "endpoint-offline", "sent").await;
    let d = hook.deliveries();
    assert_eq!(d.iter().map(|d| d.answered).collect::<Vec<_>>(), vec![500, 500, 200]);
    assert!(d.iter().all(|d| d.signature_valid), "{d:?}");
    assert!(
        d.iter().all(|d| d.notification_id == sent["id"].as_str().unwrap()),
        "one id on every attempt"
    );
    assert_eq!(d[2].body["kind"], "endpoint-offline");
    assert_eq!(d[2].body["endpoint"]["name"], "dc1");
    assert_eq!(sent["failures"], 2);
    assert!(sent["last_error"].as_str().unwrap().contains("HTTP 500"), "{sent}");
    // The other subscriber's secret is not ours: its copy fails its signature check.
    let f = forged.deliveries();
    assert_eq!(f.len(), 1);
    assert!(!f[0].signature_valid);
}

#[actix::test]
async fn an_smtp_relay_that_is_down_gets_the_email_once_it_is_back() {
    // The relay is down: its port refuses connections, and no other process takes it.
    let relay = ReservedPort::new();
    let port = relay.port;
    let clock = clock_now();
    let url = format!("smtp://127.0.0.1:{port}");
    let (node, api) = node_with_lead(&clock, Some(url)).await;
    let (p, _machine, agent) = connected_endpoint(&node, "dc1", "127.0.0.1").await;
    stop(agent, &api, &p).await;
    clock.advance_ms(3 * MINUTE);
    let failing = notification(&api, "endpoint-offline", "failing").await;
    assert!(failing["last_error"].as_str().unwrap().contains("SMTP"), "{failing}");
    let smtp = SmtpServer::start_on(relay.release());
    let m = mails(&smtp, 1).await;
    assert_eq!(m[0].subject, "Endpoint dc1 of gateway test-gateway is offline");
    let sent = notification(&api, "endpoint-offline", "sent").await;
    assert!(sent["failures"].as_u64().unwrap() >= 1);
    assert_eq!(sent["sent"][0]["recipients"][0], "lead@corp.example");
    // Reviewers see that it was sent, not to whom.
    api.create_user("rev", "reviewer", None).await.unwrap();
    let token =
        api.issue_token("rev", "tests").await.unwrap()["token"].as_str().unwrap().to_string();
    let as_reviewer = node.api_as(&token);
    let seen = notification(&as_reviewer, "endpoint-offline", "sent").await;
    assert_eq!(seen["sent"][0]["recipients"], serde_json::json!([]), "{seen}");
}

#[actix::test]
async fn three_nodes_on_one_nats_send_each_notification_once() {
    let smtp = SmtpServer::start();
    let cluster = TestCluster::new(&["node-a", "node-b", "node-c"]);
    let clock = clock_now();
    let a = cluster.node_with("node-a", notifying(&clock, Some(smtp.url())));
    let b = cluster.node_with("node-b", notifying(&clock, Some(smtp.url())));
    // A third node without an SMTP relay leaves emails to the nodes that have one.
    let c = cluster.node_with("node-c", notifying(&clock, None));
    let api = a.api();
    add_lead(&api).await;
    let (p, _machine, agent) = connected_endpoint(&a, "dc1", "127.0.0.1").await;
    // Every node knows the others (and which send email) before the notice falls due.
    serving_nodes(&api, 3).await;
    stop(agent, &api, &p).await;
    settled(&a).await;
    settled(&b).await;
    settled(&c).await;
    clock.advance_ms(3 * MINUTE);
    mails(&smtp, 1).await;
    // Both nodes see it finished, and by then only one email was sent.
    for node in [&a, &b, &c] {
        let n = notification(&node.api(), "endpoint-offline", "sent").await;
        assert_eq!(n["sent"].as_array().unwrap().len(), 1, "{n}");
        assert_ne!(n["node"], "node-c", "{n}");
    }
    settled(&a).await;
    settled(&b).await;
    assert_eq!(smtp.messages().len(), 1);
    let claims = ism_tests::cluster::recorded(&*a.state.log)
        .await
        .into_iter()
        .filter(|e| e.event.name() == "NotificationClaimed")
        .count();
    assert_eq!(claims, 1, "one claim won; the other node never appended one");
}

#[actix::test]
async fn an_idle_gateway_is_warned_kept_by_activity_then_deleted_with_its_endpoints() {
    let smtp = SmtpServer::start();
    let clock = clock_now();
    let (node, api) = node_with_lead(&clock, Some(smtp.url())).await;
    let app = http_server("hello").await;
    let p = ism_tests::cluster::provision(&api, "dc1").await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &p.key, &format!("127.0.0.1:{}", app.port()));
    connected(&agent).await;
    let due = |g: &Value| g["deletion_due_ms"].as_i64().unwrap();
    let first_deadline = due(&api.gateway(&p.gateway).await.unwrap());
    assert_eq!(
        first_deadline,
        ism_time::add_months(
            api.gateway(&p.gateway).await.unwrap()["created_ms"].as_i64().unwrap(),
            4
        )
    );

    // 14 days before: a warning.
    clock.advance_ms(first_deadline - 14 * DAY - clock.now_ms());
    let m = mails(&smtp, 1).await;
    assert!(
        m[0].subject.starts_with("Gateway test-gateway will be deleted on"),
        "{}",
        m[0].subject
    );
    // A scan through the gateway cancels the countdown: a new deadline four months on.
    let s =
        ism_cli::scanner::connect(&node.socks(), "dc1", &p.scanner_secret, "127.0.0.1", app.port())
            .await
            .unwrap();
    ism_cli::scanner::http_get(s, "x", "/", PATIENCE).await.unwrap();
    let moved =
        eventually("a later deletion date", || {
            let (api, gateway) = (&api, p.gateway.clone());
            async move {
                api.gateway(&gateway).await.ok().map(|g| due(&g)).filter(|d| *d > first_deadline)
            }
        })
        .await;
    assert_eq!(moved, ism_time::add_months(clock.now_ms(), 4), "four months after the scan");
    clock.advance_ms(first_deadline + DAY - clock.now_ms());
    settled(&node).await;
    assert_eq!(due_now(&node, &clock), 0, "the old deadline means nothing: no deletion due");
    assert_eq!(
        api.gateway(&p.gateway).await.unwrap()["status"],
        "Online",
        "the old deadline means nothing"
    );

    // Four months after that scan: deleted, with its endpoint, whose session closes.
    clock.advance_ms(moved - clock.now_ms());
    let deleted = eventually("the gateway among the deleted", || {
        let api = &api;
        async move {
            api.deleted_gateways()
                .await
                .ok()?
                .as_array()?
                .iter()
                .find(|g| g["name"] == "test-gateway")
                .cloned()
        }
    })
    .await;
    assert!(deleted["deleted_reason"].as_str().unwrap().starts_with("inactivity"), "{deleted}");
    assert!(api.endpoint(&p.endpoint).await.is_err(), "its endpoint is deleted too");
    node.sessions_become(0).await;
    let m = mails(&smtp, 2).await;
    assert_eq!(m[1].subject, "Gateway test-gateway was deleted for inactivity");
    notification(&api, "gateway-retired", "sent").await;
    let audit = api.audit(&[("limit", "10000".to_string())]).await.unwrap().to_string();
    assert!(audit.contains("StreamOpened"), "the audit history is kept");
    drop(agent);
}

/// A retirement decided on a view that had not seen the gateway's latest activity (the notices
/// still replaying the log, or activity just after the notice was computed) deletes nothing: the
/// deletion checks the directory's last activity again, at each attempt.
#[actix::test]
async fn a_retirement_of_a_gateway_active_since_its_notice_keeps_it() {
    let clock = clock_now();
    let (node, api) = node_with_lead(&clock, None).await;
    let app = http_server("hello").await;
    let p = ism_tests::cluster::provision(&api, "dc1").await;
    let created_ms = api.gateway(&p.gateway).await.unwrap()["created_ms"].as_i64().unwrap();
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &p.key, &format!("127.0.0.1:{}", app.port()));
    connected(&agent).await;
    clock.advance_ms(10 * MINUTE);
    let s =
        ism_cli::scanner::connect(&node.socks(), "dc1", &p.scanner_secret, "127.0.0.1", app.port())
            .await
            .unwrap();
    ism_cli::scanner::http_get(s, "x", "/", PATIENCE).await.unwrap();
    let gateway: uuid::Uuid = p.gateway.parse().unwrap();
    eventually("the stream's activity in the directory", || async {
        let g = node.state.directory.gateway(gateway).ok()??;
        (g.last_activity_ms > created_ms).then_some(())
    })
    .await;
    // A notice computed from the creation alone, as a view behind the log would.
    let stale = ism_projectors::notices::Notice {
        id: uuid::Uuid::new_v4(),
        action: ism_projectors::notices::Action::Send(ism_events::NoticeKind::GatewayRetired),
        subject: gateway,
        gateway,
        due_ms: clock.now_ms(),
        since_ms: created_ms,
        suppressed: None,
        pause_until_ms: None,
        deadline_ms: Some(clock.now_ms()),
    };
    let retired = ism_gateway::notify::retention::retire(&node.state, &stale, 4).await.unwrap();
    assert!(matches!(retired, ism_gateway::notify::retention::Retired::StillActive(_)));
    assert_eq!(api.gateway(&p.gateway).await.unwrap()["status"], "Online", "kept");
    assert!(api.endpoint(&p.endpoint).await.is_ok(), "its endpoint kept");
    agent.stop();
}

#[actix::test]
async fn a_gateway_down_while_its_only_node_is_stopped_is_reported_once_for_it_and_not_per_endpoint(
) {
    let smtp = SmtpServer::start();
    let clock = clock_now();
    let (node, _) = node_with_lead(&clock, Some(smtp.url())).await;
    let (p, _machine, agent) = connected_endpoint(&node, "dc1", "127.0.0.1").await;
    settled(&node).await;
    // The node stops (its last act records the gateway offline); ten minutes pass; it starts.
    let node = node.restart_after(|| clock.advance_ms(10 * MINUTE));
    connected(&agent).await;
    let api = node.api();
    status_becomes(&api, &p.endpoint, "Ready").await;
    let m = mails(&smtp, 2).await;
    let subjects: Vec<&str> = m.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["Gateway test-gateway is offline", "Gateway test-gateway is back online"],
        "late but not lost: the offline report fell due while no node ran"
    );
    assert!(m[0].body.contains("no gateway node serves it"), "{}", m[0].body);
    // The endpoint came back within a grace of its gateway: the gateway's emails covered it.
    settled(&node).await;
    all_finished(&api).await;
    let about_endpoints = notifications(&api)
        .await
        .into_iter()
        .filter(|n| n["kind"].as_str().unwrap().starts_with("endpoint"))
        .count();
    assert_eq!(about_endpoints, 0);
    assert_eq!(smtp.messages().len(), 2);

    // Killed instead: the next start finds the gateway still recorded online, and records the
    // outage from the last event the killed node recorded.
    let node = node.crash_and_restart();
    let api = node.api();
    let outages = eventually("the outage after the crash recorded", || {
        let api = &api;
        async move {
            let audit = api.audit(&[("limit", "10000".to_string())]).await.ok()?;
            let entries = audit["entries"].as_array()?.clone();
            let n = entries.iter().filter(|e| e["event"] == "GatewayWentOffline").count();
            (n == 2).then_some(entries)
        }
    })
    .await;
    let last = outages.iter().rev().find(|e| e["event"] == "GatewayWentOffline").unwrap();
    assert!(last["summary"].as_str().unwrap().contains("crashed or was killed"), "{last}");
    assert!(outages.iter().filter(|e| e["event"] == "GatewayCameOnline").count() == 2);
}

#[actix::test]
async fn a_webhook_that_never_accepts_is_given_up_after_a_day_while_email_still_goes() {
    let smtp = SmtpServer::start();
    let clock = clock_now();
    let (node, api) = node_with_lead(&clock, Some(smtp.url())).await;
    let dead = WebhookReceiver::start("whsec_dead_0123456789abcdef", usize::MAX).await;
    api.add_webhook(&dead.url, Some("whsec_dead_0123456789abcdef"), &[]).await.unwrap();
    let (p, _machine, agent) = connected_endpoint(&node, "dc1", "127.0.0.1").await;
    stop(agent, &api, &p).await;
    clock.advance_ms(3 * MINUTE);
    mails(&smtp, 1).await;
    let failing = notification(&api, "endpoint-offline", "failing").await;
    assert_eq!(failing["sent"].as_array().unwrap().len(), 1, "the email went: {failing}");
    clock.advance_ms(DAY + MINUTE);
    let failed = notification(&api, "endpoint-offline", "failed").await;
    assert!(failed["last_error"].as_str().unwrap().contains("given up"), "{failed}");
    assert!(dead.deliveries().iter().all(|d| d.answered == 500 && d.signature_valid));
}

#[actix::test]
async fn a_claim_left_by_a_dead_node_is_taken_over_when_its_lease_ends() {
    let smtp = SmtpServer::start();
    let cluster = TestCluster::new(&["node-a", "node-b"]);
    let clock = clock_now();
    // node-a's relay is down: it claims the notification, fails, and dies holding it.
    let down = ReservedPort::new();
    let unreachable = format!("smtp://127.0.0.1:{}", down.port);
    let a = cluster.node_with("node-a", notifying(&clock, Some(unreachable)));
    let api = a.api();
    add_lead(&api).await;
    let (p, _machine, agent) = connected_endpoint(&a, "dc1", "127.0.0.1").await;
    stop(agent, &api, &p).await;
    clock.advance_ms(3 * MINUTE);
    let failing = notification(&api, "endpoint-offline", "failing").await;
    assert_eq!(failing["node"], "node-a");
    a.crash();

    let b = cluster.node_with("node-b", notifying(&clock, Some(smtp.url())));
    let api = b.api();
    settled(&b).await;
    // The claim's lease (2 minutes on the clock) ends: node-b takes the notification over.
    clock.advance_ms(3 * MINUTE);
    let m = mails(&smtp, 1).await;
    assert_eq!(m[0].subject, "Endpoint dc1 of gateway test-gateway is offline");
    let sent = notification(&api, "endpoint-offline", "sent").await;
    assert_eq!(sent["node"], "node-b", "{sent}");
    assert!(sent["failures"].as_u64().unwrap() >= 1, "node-a's failure stays on record: {sent}");
}

#[actix::test]
async fn a_cluster_whose_every_node_drains_reports_its_gateway_offline() {
    let smtp = SmtpServer::start();
    let cluster = TestCluster::new(&["node-a", "node-b"]);
    let clock = clock_now();
    let a = cluster.node_with("node-a", notifying(&clock, Some(smtp.url())));
    let b = cluster.node_with("node-b", notifying(&clock, Some(smtp.url())));
    let api = a.api();
    add_lead(&api).await;
    ism_tests::cluster::provision(&api, "dc1").await;
    for node in ["node-a", "node-b"] {
        api.drain_node(node).await.unwrap();
    }
    eventually("the gateway recorded offline", || {
        let api = &api;
        async move {
            let audit = api.audit(&[("limit", "10000".to_string())]).await.ok()?;
            let entries = audit["entries"].as_array()?.clone();
            entries.into_iter().find(|e| e["event"] == "GatewayWentOffline")
        }
    })
    .await;
    settled(&a).await;
    settled(&b).await;
    clock.advance_ms(3 * MINUTE);
    let m = mails(&smtp, 1).await;
    assert_eq!(m[0].subject, "Gateway test-gateway is offline");
    assert!(m[0].body.contains("no gateway node serves it"), "{}", m[0].body);
}
