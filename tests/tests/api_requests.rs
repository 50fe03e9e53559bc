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
