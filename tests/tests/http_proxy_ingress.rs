//! The HTTP proxy ingress, driven by curl as scanners drive it: `curl -x` (absolute-URI
//! forwarding) and `curl -p -x` (CONNECT), with the same credentials as SOCKS5.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_tests::cluster::{
    connected, http_server, provision, tampered, Backend, TestMachine, TestNode,
};
use std::process::Output;

async fn curl(args: &[&str]) -> Output {
    tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "15"])
        .args(args)
        .output()
        .await
        .unwrap()
}

fn body(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[actix::test]
async fn curl_through_the_http_proxy_forwarding_and_connect() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let app = http_server("over http proxy").await;
    let forbidden = http_server("no").await;
    let machine = TestMachine::new();
    let agent = machine.start_endpoint(&node, &p.key, &format!("127.0.0.1:{}", app.port()));
    connected(&agent).await;
    let proxy = format!("http://dc1:{}@{}", p.scanner_secret, node.addresses.http_proxy);
    let url = format!("http://127.0.0.1:{}/hello?x=1", app.port());

    // Plain HTTP forwarded (absolute URI), and through a CONNECT tunnel.
    let out = curl(&["-x", &proxy, &url]).await;
    assert_eq!(body(&out), "over http proxy", "{}", String::from_utf8_lossy(&out.stderr));
    let out = curl(&["-p", "-x", &proxy, &url]).await;
    assert_eq!(body(&out), "over http proxy", "{}", String::from_utf8_lossy(&out.stderr));

    // No credentials, or wrong ones: 407 with a challenge.
    let anonymous = format!("http://{}", node.addresses.http_proxy);
    let out = curl(&["-x", &anonymous, "-o", "/dev/null", "-w", "%{http_code}", &url]).await;
    assert_eq!(body(&out), "407");
    let wrong = format!("http://dc1:{}@{}", tampered(&p.scanner_secret), node.addresses.http_proxy);
    let out = curl(&["-x", &wrong, "-D", "-", "-o", "/dev/null", &url]).await;
    assert!(
        body(&out).starts_with("HTTP/1.1 407") && body(&out).contains("Proxy-Authenticate: Basic"),
        "{}",
        body(&out)
    );
    let out = curl(&["-p", "-x", &wrong, &url]).await;
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("407"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Off the allowlist: 403 with the reason, both ways.
    let off = format!("http://127.0.0.1:{}/", forbidden.port());
    let out = curl(&["-x", &proxy, "-w", "\n%{http_code}", &off]).await;
    assert!(
        body(&out).ends_with("\n403") && body(&out).contains("allowedTargets"),
        "{}",
        body(&out)
    );
    let out = curl(&["-p", "-x", &proxy, &off]).await;
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not a proxy request, and garbage: 400, and the ingress keeps serving.
    let direct = format!("http://{}/", node.addresses.http_proxy);
    let out = curl(&["-w", "\n%{http_code}", &direct]).await;
    assert!(
        body(&out).contains("this is a proxy") && body(&out).ends_with("\n400"),
        "{}",
        body(&out)
    );
    let out = curl(&["-x", &proxy, &url]).await;
    assert_eq!(body(&out), "over http proxy");

    // The endpoint offline: 502 naming it (once the node has let its session go).
    agent.stop();
    agent.join().await.unwrap();
    node.sessions_become(0).await;
    let out = curl(&["-x", &proxy, "-w", "\n%{http_code}", &url]).await;
    assert!(
        body(&out).ends_with("\n502") && body(&out).contains("endpoint dc1 is not connected"),
        "{}",
        body(&out)
    );
}
