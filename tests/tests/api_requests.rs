//! The management API read the way HTTP says: a wrong method on a route is 405 with the methods
//! it takes, and the bearer scheme is case-insensitive.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_tests::cluster::{Backend, TestNode};

/// `curl -i` with `args`: the status code, the headers (lower-case names) and the body.
async fn curl(args: &[&str]) -> (u16, Vec<(String, String)>, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[actix::test]
async fn a_wrong_method_is_405_with_the_allowed_ones() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let api = format!("http://{}", node.addresses.api);
    let auth = format!("Authorization: Bearer {}", node.admin_token);
    for (method, path, allowed) in [
        ("DELETE", "/api/v1/gateways", "GET, POST"),
        ("PUT", "/api/v1/endpoints/00000000-0000-0000-0000-000000000000", "GET, PATCH, DELETE"),
        ("GET", "/api/v1/projections/verify", "POST"),
        ("POST", "/healthz", "GET"),
    ] {
        let (status, headers, body) =
            curl(&["-X", method, "-H", &auth, &format!("{api}{path}")]).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(header(&headers, "allow"), Some(allowed), "{method} {path}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["success"], false);
        assert!(body["error"].as_str().unwrap().contains(method), "{body}");
    }
    // A path that does not exist is still 404, and the right method still works.
    let (status, _, _) = curl(&["-H", &auth, &format!("{api}/api/v1/nothing-here")]).await;
    assert_eq!(status, 404);
    let (status, _, body) = curl(&["-H", &auth, &format!("{api}/api/v1/gateways")]).await;
    assert_eq!((status, body.trim()), (200, "[]"));
}

#[actix::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let me = format!("http://{}/api/v1/me", node.addresses.api);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("Authorization: {scheme} {}", node.admin_token);
        let (status, _, body) = curl(&["-H", &auth, &me]).await;
        assert_eq!(status, 200, "{scheme}: {body}");
        assert!(body.contains("\"administrator\""), "{body}");
    }
    let (status, _, _) = curl(&["-H", "Authorization: bearer not-a-token", &me]).await;
    assert_eq!(status, 401);
}

/// `curl` as `token` with `args` against the node's API at `path`.
async fn curl_as(
    node: &TestNode,
    token: &str,
    args: &[&str],
    path: &str,
) -> (u16, Vec<(String, String)>, String) {
    let auth = format!("Authorization: Bearer {token}");
    let url = format!("http://{}{path}", node.addresses.api);
    curl(&[args, &["-H", &auth, &url]].concat()).await
}

#[actix::test]
async fn an_audit_page_larger_than_the_maximum_is_refused_with_or_without_after() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let token = node.admin_token.clone();
    for query in ["limit=1000000000", "after=0&limit=18446744073709551615", "limit=10001"] {
        let (status, _, body) =
            curl_as(&node, &token, &[], &format!("/api/v1/audit?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains("limit must be 1 to 10000"), "{query}: {body}");
    }
    let (status, _, body) = curl_as(&node, &token, &[], "/api/v1/audit?after=0&limit=10000").await;
    assert_eq!(status, 200, "{body}");
}

#[actix::test]
async fn an_access_change_with_a_bad_support_window_changes_nothing() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let api = node.api();
    let p = ism_tests::cluster::provision(&api, "dc1").await;
    let path = format!("/api/v1/endpoints/{}/access", p.endpoint);
    let body = r#"{"scan_access": false, "support_access": 45}"#;
    let json = ["-X", "PUT", "-H", "Content-Type: application/json", "-d", body];
    let (status, _, answer) = curl_as(&node, &node.admin_token, &json, &path).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("1 to 30 days"), "{answer}");
    let endpoint = api.endpoint(&p.endpoint).await.unwrap();
    assert_eq!(endpoint["scan_access"], true, "{endpoint}");
}

#[actix::test]
async fn a_reviewer_cannot_tell_whether_a_user_exists_by_editing_it() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let api = node.api();
    api.create_user("rita", "reviewer", None).await.unwrap();
    api.create_user("sam", "reviewer", None).await.unwrap();
    let token = api.issue_token("rita", "").await.unwrap()["token"].as_str().unwrap().to_string();
    let json = ["-X", "PATCH", "-H", "Content-Type: application/json", "-d", r#"{"email": ""}"#];
    for name in ["nosuch", "sam"] {
        let path = format!("/api/v1/users/{name}");
        let (status, _, body) = curl_as(&node, &token, &json, &path).await;
        assert_eq!(status, 403, "{name}: {body}");
    }
}

#[actix::test]
async fn responses_showing_a_secret_are_not_stored_by_caches() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let api = node.api();
    let p = ism_tests::cluster::provision(&api, "dc1").await;
    api.create_user("rita", "reviewer", None).await.unwrap();
    let json = ["-H", "Content-Type: application/json", "-d", "{}"];
    let post: Vec<&str> = [&["-X", "POST"][..], &json].concat();
    let endpoint_body = r#"{"name": "dc2", "platform": "linux"}"#;
    let add_endpoint = ["-X", "POST", "-H", "Content-Type: application/json", "-d", endpoint_body];
    let hook_body = r#"{"url": "https://hooks.example/ism"}"#;
    let add_webhook = ["-X", "POST", "-H", "Content-Type: application/json", "-d", hook_body];
    for (args, path) in [
        (&[][..], format!("/api/v1/endpoints/{}/key", p.endpoint)),
        (&post[..], format!("/api/v1/endpoints/{}/key/rotate", p.endpoint)),
        (&add_endpoint[..], format!("/api/v1/gateways/{}/endpoints", p.gateway)),
        (&post[..], format!("/api/v1/gateways/{}/scanner-credentials", p.gateway)),
        (&post[..], "/api/v1/users/rita/tokens".to_string()),
        (&add_webhook[..], "/api/v1/webhooks".to_string()),
    ] {
        let (status, headers, body) = curl_as(&node, &node.admin_token, args, &path).await;
        assert!(status == 200 || status == 201, "{path}: {status} {body}");
        assert_eq!(header(&headers, "cache-control"), Some("no-store"), "{path}");
    }
}

/// An endpoint added or renamed with a description the rules refuse changes nothing: before, the
/// gateway's roster took the name (and gave it back) before the endpoint refused the description.
#[actix::test]
async fn an_endpoint_with_a_refused_description_records_nothing() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let api = node.api();
    let p = ism_tests::cluster::provision(&api, "dc1").await;
    let gateway_events = || async {
        let id = ism_events::AggregateId::gateway(p.gateway.parse().unwrap());
        node.state.log.read_aggregate(&id).await.unwrap().len()
    };
    let before = gateway_events().await;
    let long = "d".repeat(300);
    let add = format!(r#"{{"name": "dc2", "platform": "linux", "description": "{long}"}}"#);
    let json = ["-X", "POST", "-H", "Content-Type: application/json", "-d", add.as_str()];
    let path = format!("/api/v1/gateways/{}/endpoints", p.gateway);
    let (status, _, answer) = curl_as(&node, &node.admin_token, &json, &path).await;
    assert_eq!(status, 400, "{answer}");
    let version = api.endpoint(&p.endpoint).await.unwrap()["version"].as_u64().unwrap();
    let edit = format!(r#"{{"name": "dc3", "description": "{long}", "version": {version}}}"#);
    let json = ["-X", "PATCH", "-H", "Content-Type: application/json", "-d", edit.as_str()];
    let path = format!("/api/v1/endpoints/{}", p.endpoint);
    let (status, _, answer) = curl_as(&node, &node.admin_token, &json, &path).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(gateway_events().await, before, "the roster recorded nothing");
}
