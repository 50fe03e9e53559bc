//! Scans of the built-in engine, end to end on a real node: queued, started by the node holding
//! the endpoint, crawling a deliberately insecure app through the tunnel (every request a stream
//! opened as an external scanner's, allowlist and all), findings recorded as events, reports in
//! JSON and SARIF 2.1.0 (validated against the official schema); the endpoint's capacity and its
//! first-in-first-out queue; cancel, scan access off, the endpoint offline and a node restart.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use awc::http::Method;
use ism_cli::ApiClient;
use ism_tests::cluster::{
    connected_endpoint, eventually, sink_server, Backend, Provisioned, TestNode,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;

async fn start(api: &ApiClient, endpoint: &str, targets: &[String], extra: Value) -> Value {
    let mut body = json!({ "endpoint": endpoint, "targets": targets });
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    api.start_scan(&body).await.expect("the scan is queued")
}

/// Waits until scan `id` is in `state`; returns it.
async fn scan_in(api: &ApiClient, id: &str, state: &str) -> Value {
    eventually(&format!("scan {id} {state}"), || async move {
        let scan = api.scan(id).await.ok()?;
        (scan["state"] == state).then_some(scan)
    })
    .await
}

fn id(scan: &Value) -> String {
    scan["id"].as_str().unwrap().to_string()
}

fn url(addr: SocketAddr, scheme: &str) -> String {
    format!("{scheme}://{addr}/")
}

/// An endpoint of `node` allowed to reach `targets`, its agent connected (until dropped).
async fn endpoint_to(node: &TestNode, targets: &[SocketAddr]) -> (Provisioned, RunningAgent) {
    let allowed: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    let (p, machine, agent) = connected_endpoint(node, "dc1", &allowed.join(",")).await;
    (p, RunningAgent(agent, machine))
}

/// An endpoint's agent, stopped when dropped (with its machine's folder).
struct RunningAgent(ism_endpoint::AgentHandle, #[allow(dead_code)] ism_tests::cluster::TestMachine);

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[actix::test]
async fn a_scan_through_the_tunnel_finds_the_apps_flaws_and_reports_them_as_sarif() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let app = ism_scan_engine::testing::InsecureApp::start().await.unwrap();
    let (p, _agent) = endpoint_to(&node, &[app.http, app.https]).await;
    let api = node.api();

    let targets = [url(app.http, "http"), url(app.https, "https")];
    let queued = start(&api, "dc1", &targets, json!({ "max_pages": 30, "rate": 100 })).await;
    assert!(matches!(queued["state"].as_str(), Some("queued" | "running")), "{queued}");
    let done = scan_in(&api, &id(&queued), "finished").await;
    let pages = done["pages"].as_u64().unwrap();
    assert!(
        (3..=30).contains(&pages),
        "the crawl fetched the app's pages, within the limit: {done}"
    );

    let rules: BTreeSet<&str> = done["finding_list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    for expected in [
        "missing-csp",
        "cookie-without-httponly",
        "password-over-http",
        "version-disclosure",
        "directory-listing",
        "verbose-error",
        "tls-self-signed",
        "mixed-content",
    ] {
        assert!(rules.contains(expected), "{expected} among {rules:?}");
    }
    assert!(!rules.contains("tls-below-1.2"), "the app speaks TLS 1.2 and 1.3: {rules:?}");
    let http_hsts =
        done["finding_list"].as_array().unwrap().iter().any(|f| {
            f["rule"] == "missing-hsts" && f["url"].as_str().unwrap().starts_with("http://")
        });
    assert!(!http_hsts, "HSTS is not asked of plain http");

    // Every request went through the tunnel as a stream of the scan, on the record.
    let audit = api.audit(&[("endpoint", p.endpoint.clone())]).await.unwrap();
    let scan_streams = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "StreamOpened")
        .filter(|e| e["summary"].as_str().unwrap().contains(&id(&queued)[..8]))
        .count();
    assert!(scan_streams > 0, "the scan's streams are in the audit");
    let events: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|e| e.starts_with("Scan"))
        .collect();
    assert_eq!(events.first(), Some(&"ScanQueued"), "{events:?}");
    assert!(events.contains(&"ScanStarted") && events.ends_with(&["ScanFinished"]), "{events:?}");

    // The reports: JSON with its documented shape, SARIF valid against the official schema.
    let report = api.scan_report(&id(&queued), "json").await.unwrap();
    assert_eq!(report["schema"], "ism-scan-report/1");
    let listed = done["finding_list"].as_array().unwrap().len();
    assert_eq!(report["findings"].as_array().unwrap().len(), listed);
    for key in ["scan", "counts", "findings"] {
        assert!(report.get(key).is_some(), "{key} in {report}");
    }
    let sarif = api.scan_report(&id(&queued), "sarif").await.unwrap();
    // The official SARIF 2.1.0 schema (the engine's test data, two broken patterns mended).
    let schema = ism_scan_engine::testing::sarif_schema().unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&sarif).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "SARIF 2.1.0 violations: {errors:?}");
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), done["finding_list"].as_array().unwrap().len());
    let bad = api.scan_report(&id(&queued), "pdf").await.unwrap_err().to_string();
    assert!(bad.contains("json or sarif"), "{bad}");

    // The scan's rows and findings are what a rebuild from the log gives.
    let verified = api.verify_projections().await.unwrap();
    assert_eq!(verified["all_match"], true, "{verified}");

    // A reviewer reads scans and their reports, and neither starts nor cancels one.
    api.create_user("rita", "reviewer", None).await.unwrap();
    let token = api.issue_token("rita", "laptop").await.unwrap();
    let reviewer = node.api_as(token["token"].as_str().unwrap());
    assert_eq!(reviewer.scans(Some("dc1"), None).await.unwrap().as_array().unwrap().len(), 1);
    assert_eq!(reviewer.scan_report(&id(&queued), "sarif").await.unwrap()["version"], "2.1.0");
    let start = reviewer.start_scan(&json!({ "endpoint": "dc1", "targets": targets })).await;
    assert!(start.unwrap_err().to_string().contains("reviewer"));
    let cancel = reviewer.cancel_scan(&id(&queued)).await;
    assert!(cancel.unwrap_err().to_string().contains("reviewer"));
}

#[actix::test]
async fn scans_beyond_the_capacity_wait_in_order_and_start_as_slots_free() {
    let node = TestNode::start("node-a", Backend::Embedded);
    // Each scan's one request waits for an answer that never comes: scans stay running.
    let hold = sink_server().await;
    let (p, _agent) = endpoint_to(&node, &[hold]).await;
    let api = node.api();
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(id(&start(&api, &p.endpoint, &[url(hold, "http")], json!({})).await));
    }
    let api = &api;
    eventually("30 scans running, 10 queued", || async move {
        let running = api.scans(None, Some("running")).await.ok()?;
        let queued = api.scans(None, Some("queued")).await.ok()?;
        (running.as_array()?.len() == 30 && queued.as_array()?.len() == 10).then_some(())
    })
    .await;
    // The first 30 queued run; the rest wait in the order they came, numbered from 1.
    let queued = api.scans(Some(&p.endpoint), Some("queued")).await.unwrap();
    let waiting: Vec<(String, u64)> = queued
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (id(s), s["queue_position"].as_u64().unwrap()))
        .collect();
    let expected: Vec<(String, u64)> = ids[30..].iter().cloned().zip(1..).collect();
    assert_eq!(waiting, expected);
    // The most recent few (the web page's list), still in the order queued; 0 is refused.
    let recent = api.call(Method::GET, "/api/v1/scans?limit=3", None).await.unwrap();
    let recent: Vec<String> = recent.as_array().unwrap().iter().map(id).collect();
    assert_eq!(recent, ids[37..]);
    let zero = api.call(Method::GET, "/api/v1/scans?limit=0", None).await.unwrap_err();
    assert!(zero.to_string().contains("limit must be 1 or more"), "{zero}");
    let e = api.endpoint(&p.endpoint).await.unwrap();
    assert_eq!(
        (e["running_scans"].as_u64(), e["scan_capacity"].as_u64(), e["queued_scans"].as_u64()),
        (Some(30), Some(30), Some(10))
    );
    let scraped = ism_tests::metrics::scrape_now(node.addresses.api).await.unwrap();
    let scans = |state| ism_tests::metrics::value(&scraped, "ism_scans", &[("state", state)]);
    assert_eq!((scans("running"), scans("queued")), (Some(30.0), Some(10.0)));
    assert_eq!(ism_tests::metrics::value(&scraped, "ism_scans_run_here", &[]), Some(30.0));

    // Five running scans cancelled: the five longest waiting start, in order.
    for cancelled in &ids[..5] {
        let c = api.cancel_scan(cancelled).await.unwrap();
        assert_eq!(c["state"], "cancelled");
        assert!(c["reason"].as_str().unwrap().contains("cancelled by admin"), "{c}");
    }
    for started in &ids[30..35] {
        scan_in(api, started, "running").await;
    }
    let still: Vec<String> = api
        .scans(Some("dc1"), Some("queued"))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(still, ids[35..].to_vec());
    // Cancelling again asks for nothing new.
    let again = api.cancel_scan(&ids[0]).await.unwrap();
    assert_eq!((again["state"].as_str(), again["version"].as_u64()), (Some("cancelled"), Some(3)));
}

#[actix::test]
async fn turning_scan_access_off_cancels_running_and_queued_scans_and_ends_their_streams() {
    let node = TestNode::start_with("node-a", Backend::Embedded, |c| c.scan_capacity = 1);
    let hold = sink_server().await;
    let (p, _agent) = endpoint_to(&node, &[hold]).await;
    let api = node.api();
    let running = id(&start(&api, "dc1", &[url(hold, "http")], json!({})).await);
    let queued = id(&start(&api, "dc1", &[url(hold, "http")], json!({})).await);
    scan_in(&api, &running, "running").await;
    let (node_ref, endpoint) = (&node, uuid::Uuid::parse_str(&p.endpoint).unwrap());
    eventually("the running scan's stream is open", || async move {
        (node_ref.state.running_streams(endpoint) == 1).then_some(())
    })
    .await;
    assert_eq!(api.scan(&queued).await.unwrap()["queue_position"], 1);

    api.set_access(&p.endpoint, Some(false), None).await.unwrap();
    for scan in [&running, &queued] {
        let s = api.scan(scan).await.unwrap();
        assert_eq!(s["state"], "cancelled", "at once, in the answer to the change: {s}");
        assert!(s["reason"].as_str().unwrap().contains("scan access"), "{s}");
    }
    node.streams_end().await;
    let refused =
        api.start_scan(&json!({ "endpoint": "dc1", "targets": [url(hold, "http")] })).await;
    assert!(refused.unwrap_err().to_string().contains("scan access is disabled"));
}

#[actix::test]
async fn a_running_scan_fails_when_its_endpoint_goes_offline_and_starts_again_as_asked() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let hold = sink_server().await;
    let (p, agent) = endpoint_to(&node, &[hold]).await;
    let api = node.api();
    let scan = id(&start(&api, &p.endpoint, &[url(hold, "http")], json!({ "max_pages": 7 })).await);
    scan_in(&api, &scan, "running").await;
    drop(agent);
    let failed = scan_in(&api, &scan, "failed").await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("went offline") && reason.contains("--again"), "{reason}");

    let again = api.start_scan(&json!({ "again": scan })).await.unwrap();
    assert_eq!(again["again_of"], scan.as_str());
    assert_eq!((again["max_pages"].as_u64(), again["state"].as_str()), (Some(7), Some("queued")));
    let refused = api.start_scan(&json!({ "again": scan, "endpoint": "dc1" })).await;
    assert!(refused.unwrap_err().to_string().contains("give only `again`"));
}

#[actix::test]
async fn a_scan_running_on_a_node_that_restarts_is_recorded_as_failed() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let hold = sink_server().await;
    let (p, _agent) = endpoint_to(&node, &[hold]).await;
    let api = node.api();
    let scan = id(&start(&api, &p.endpoint, &[url(hold, "http")], json!({})).await);
    scan_in(&api, &scan, "running").await;
    let node = node.crash_and_restart();
    let failed = scan_in(&node.api(), &scan, "failed").await;
    assert!(failed["reason"].as_str().unwrap().contains("node-a stopped"), "{failed}");
}

#[actix::test]
async fn bad_scan_requests_get_clear_errors() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let closed = ism_tests::ReservedPort::new();
    let (_, _agent) = endpoint_to(&node, &[([127, 0, 0, 1], closed.port).into()]).await;
    let api = node.api();
    for (body, says) in [
        (json!({ "endpoint": "dc1", "targets": [] }), "at least one target"),
        (json!({ "endpoint": "dc1", "targets": ["ftp://x/"] }), "only http"),
        (json!({ "endpoint": "dc1", "targets": ["http://x/"], "rate": 0 }), "--rate"),
        (json!({ "endpoint": "dc1", "targets": ["http://:80/"] }), "is not a URL"),
        (
            json!({ "endpoint": "nope\u{1b}[31m", "targets": ["http://x/"] }),
            "no endpoint is called",
        ),
        (json!({ "targets": ["http://x/"] }), "name the endpoint"),
        (json!({ "endpoint": "dc1", "targets": ["http://x/"], "bogus": 1 }), "unknown field"),
    ] {
        let e = api.start_scan(&body).await.unwrap_err().to_string();
        assert!(e.contains(says), "{body}: {e}");
        assert!(!e.contains('\u{1b}'), "escaped: {e}");
    }
    let missing = api.scan(&uuid::Uuid::new_v4().to_string()).await.unwrap_err().to_string();
    assert!(missing.contains("does not exist"), "{missing}");
    let bad_state = api.scans(None, Some("sleeping")).await.unwrap_err().to_string();
    assert!(bad_state.contains("unknown scan state"), "{bad_state}");
}

#[actix::test]
async fn an_endpoints_own_scan_capacity_overrides_the_gateways() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let hold = sink_server().await;
    let (p, _agent) = endpoint_to(&node, &[hold]).await;
    let api = node.api();
    let e = api.set_scan_capacity(&p.endpoint, json!(2)).await.unwrap();
    assert_eq!(e["scan_capacity"], 2);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(id(&start(&api, "dc1", &[url(hold, "http")], json!({})).await));
    }
    scan_in(&api, &ids[0], "running").await;
    scan_in(&api, &ids[1], "running").await;
    let api = &api;
    let endpoint = p.endpoint.as_str();
    eventually("2 of 2 running, 1 queued", || async move {
        let e = api.endpoint(endpoint).await.ok()?;
        let shown = (
            e["running_scans"].as_u64()?,
            e["scan_capacity"].as_u64()?,
            e["queued_scans"].as_u64()?,
        );
        (shown == (2, 2, 1)).then_some(())
    })
    .await;
    // Back to the gateway's default (30): the third starts.
    let e = api.set_scan_capacity(&p.endpoint, json!("default")).await.unwrap();
    assert_eq!(e["scan_capacity"], 30);
    scan_in(api, &ids[2], "running").await;
    for (bad, says) in [
        (json!(0), "the scan capacity must be 1 to 1000 scans at once, not 0"),
        (json!(1001), "the scan capacity must be 1 to 1000 scans at once, not 1001"),
        (json!("lots"), "scan_capacity must be a number of scans (1 to 1000) or \"default\""),
    ] {
        let refused = api.set_scan_capacity(&p.endpoint, bad.clone()).await.unwrap_err();
        assert!(refused.to_string().contains(says), "{bad}: {refused}");
    }
}

#[actix::test]
async fn a_scan_reaches_only_what_the_endpoints_allowlist_allows() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let app = ism_scan_engine::testing::InsecureApp::start().await.unwrap();
    // The https port is not on the allowlist: the endpoint refuses the scan's streams there.
    let (p, _agent) = endpoint_to(&node, &[app.http]).await;
    let api = node.api();
    let scan = start(&api, "dc1", &[url(app.https, "https")], json!({})).await;
    let done = scan_in(&api, &id(&scan), "finished").await;
    assert_eq!(
        (done["pages"].as_u64(), done["finding_list"].as_array().unwrap().len()),
        (Some(0), 0)
    );
    assert!(done["requests"].as_u64().unwrap() >= 1, "{done}");
    // Refusals are told to the tunnel's actor and recorded a moment later.
    let (api, endpoint, https) = (&api, p.endpoint.clone(), app.https.to_string());
    let (endpoint, https) = (&endpoint, &https);
    eventually("the endpoint's refusal on the record", || async move {
        let audit = api.audit(&[("endpoint", endpoint.clone())]).await.ok()?;
        let refused = audit["entries"].as_array()?.iter().any(|e| {
            e["event"] == "StreamRefused" && e["summary"].as_str().unwrap_or("").contains(https)
        });
        refused.then_some(())
    })
    .await;
}
