//! The endpoint as a customer runs it: the `ism-endpoint` process with an install folder and its
//! `config/application.properties`, against a real gateway node, through a real web proxy.
//! Covers the seed's error messages, the proxy options (checked against the proxy's own log),
//! `--authenticate`, the diagnostic tool, `status` and the log file.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_tests::cluster::{
    connected, http_server, provision, Backend, Provisioned, TestMachine, TestNode, PATIENCE,
};
use ism_tests::http_proxy::{ProxyRules, TestProxy};
use ism_tests::install::{terminate, text, Install};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

async fn curl(p: &Provisioned, node: &TestNode, url: &str) -> Output {
    tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "15", "--socks5-hostname"])
        .arg(format!("{}:{}@{}", p.endpoint_name, p.scanner_secret, node.socks()))
        .arg(url)
        .output()
        .await
        .unwrap()
}

fn has_line(lines: &[String], wanted: &str) -> bool {
    lines.iter().any(|l| l == wanted)
}

#[actix::test]
async fn the_seed_error_messages_are_printed_with_their_solutions() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;

    // Nothing listens where the gateway should be.
    let down = ism_tests::ReservedPort::new();
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], down.port));
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        &format!("gateway = {closed}"),
    );
    let out = install.run(&[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out)
            .contains("ERROR - Exit due to initialization failure: Failed to reach the gateway"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!(
            "Verify that the gateway server on port {} is on your allowlist",
            closed.port()
        )),
        "the port dialled, not 443: {}",
        text(&out)
    );

    // The gateway answers, but not with a WebSocket on that path (a proxy or firewall in the way).
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        "wsendpoint = /not-the-tunnel",
    );
    let out = install.run(&[]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out).contains(
            "Exit due to initialization failure: Failed to make websocket connection to gateway"
        ),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!(
            "Verify that WebSockets are allowed in your firewall or proxy configuration for port {}.",
            node.addresses.endpoint_wss.port()
        )),
        "{}",
        text(&out)
    );

    // A gateway certificate no trusted CA signed (a private CA not configured, a TLS-inspecting
    // proxy): said as such, with its fix, not as a firewall problem.
    let stranger = TestNode::start("node-b", Backend::Embedded);
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        &format!("gatewayCaFile = {}", stranger.ca_file.display()),
    );
    let out = install.run(&[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains(
            "ERROR - Exit due to initialization failure: The gateway's TLS certificate is not trusted"
        ) && text(&out).contains("set gatewayCaFile")
            && text(&out).contains("inspects TLS")
            && !text(&out).contains("Failed to make websocket connection"),
        "{}",
        text(&out)
    );

    // A key that is not this endpoint's.
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &ism_tests::cluster::tampered(&p.key),
        "",
    );
    let out = install.run(&[]).await;
    assert_eq!(out.status.code(), Some(11), "a key that does not work is not retried");
    assert!(
        text(&out)
            .contains("Exit due to initialization failure: Failure to authenticate endpoint key"),
        "{}",
        text(&out)
    );

    // The key is bound to another machine.
    let first = TestMachine::new();
    let agent = first.start_endpoint(&node, &p.key, "127.0.0.1");
    connected(&agent).await;
    let install = Install::new(env!("CARGO_BIN_EXE_ism-endpoint"), &node, &p.key, "");
    let out = install.run(&[]).await;
    assert_eq!(out.status.code(), Some(10), "a key bound to another machine is not retried");
    assert!(
        text(&out).contains(r#"ERROR - Exit due to initialization failure: GMS API invoke failed, cause : {"error":"Token already registered","success":false}"#),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("Run the endpoint on the machine on which it originally ran"),
        "{}",
        text(&out)
    );

    // A broken setting: the key and the line are named, and nothing starts.
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        "socketReadTimeoutMs = soon",
    );
    let out = install.run(&[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("line 7: socketReadTimeoutMs: \"soon\" is not a positive whole number"),
        "{}",
        text(&out)
    );
    agent.stop();
}

#[actix::test]
async fn a_proxy_for_the_gateway_only_that_resolves_the_gateway_name() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let app = http_server("through the tunnel").await;
    let proxy = TestProxy::start(ProxyRules::default());
    let wss = node.addresses.endpoint_wss;
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        &format!(
            "gateway = localhost:{}\nproxyHost = 127.0.0.1\nproxyPort = {}\nproxyScope = gateway\nproxyResolveGatewayHostname = false\nallowedTargets = 127.0.0.1:{}",
            wss.port(),
            proxy.addr.port(),
            app.port()
        ),
    );
    let service = install.start(&[]).await;
    // The proxy was asked for the gateway by name: the endpoint did not resolve it.
    assert!(
        has_line(&proxy.log_lines(), &format!("CONNECT localhost:{} user=- -> 200", wss.port())),
        "{:?}",
        proxy.log_lines()
    );
    let out = curl(&p, &node, &format!("http://127.0.0.1:{}/", app.port())).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through the tunnel", "{}", text(&out));
    // URLs do not go through a gateway-only proxy.
    assert!(
        !proxy.log_lines().iter().any(|l| l.contains(&format!(":{} ", app.port()))),
        "{:?}",
        proxy.log_lines()
    );

    let status = text(&install.run(&["status"]).await);
    assert!(
        status.contains("is connected to gateway localhost:") && status.contains("(node node-a)"),
        "{status}"
    );
    terminate(service).await;
    let after = install.run(&["status"]).await;
    assert!(!after.status.success() && text(&after).contains("not running"), "{}", text(&after));
    // The seed's log file, in the seed's format.
    let log = install.log();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.len() > 26
            && &first[10..11] == " "
            && &first[19..20] == ","
            && first[23..].starts_with(" INFO - "),
        "{first}"
    );
    assert!(
        log.contains("INFO - Launching endpoint version:")
            && log.contains("Endpoint shut down complete"),
        "{log}"
    );
}

#[actix::test]
async fn java_style_proxy_flags_send_gateway_and_urls_through_the_proxy() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let app = http_server("via proxy").await;
    let proxy = TestProxy::start(ProxyRules::default());
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        &format!("allowedTargets = 127.0.0.1:{}, localhost:{}", app.port(), app.port()),
    );
    let (host, port) = (
        format!("-Dhttps.proxyHost={}", proxy.addr.ip()),
        format!("-Dhttps.proxyPort={}", proxy.addr.port()),
    );
    let service = install.start(&[&host, &port]).await;
    let wss = node.addresses.endpoint_wss;
    // "Let endpoint resolve hostname" is on by default: the proxy is given addresses.
    assert!(
        has_line(&proxy.log_lines(), &format!("CONNECT 127.0.0.1:{} user=- -> 200", wss.port())),
        "{:?}",
        proxy.log_lines()
    );
    let out = curl(&p, &node, &format!("http://localhost:{}/", app.port())).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via proxy", "{}", text(&out));
    assert!(
        has_line(&proxy.log_lines(), &format!("CONNECT 127.0.0.1:{} user=- -> 200", app.port())),
        "{:?}",
        proxy.log_lines()
    );
    terminate(service).await;

    // --proxygatewayonly: the scanned URL is reached directly.
    let before = proxy.log_lines().len();
    let service = install.start(&[&host, &port, "--proxygatewayonly"]).await;
    let out = curl(&p, &node, &format!("http://127.0.0.1:{}/", app.port())).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via proxy");
    let new: Vec<String> = proxy.log_lines()[before..].to_vec();
    assert!(
        new.iter().all(|l| !l.contains(&format!(":{} ", app.port())))
            && new.iter().any(|l| l.contains(&format!(":{} ", wss.port()))),
        "{new:?}"
    );
    terminate(service).await;
}

#[actix::test]
async fn the_proxy_resolves_url_names_when_asked_and_exclusions_bypass_it() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let app = http_server("named").await;
    let names = vec![("app.invalid".to_string(), "127.0.0.1".to_string())];
    let proxy = TestProxy::start(ProxyRules { names, ..ProxyRules::default() });
    let base = format!("proxyHost = 127.0.0.1\nproxyPort = {}\n", proxy.addr.port());
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        &format!(
            "{base}proxyResolveUrlHostname = false\nallowedTargets = app.invalid:{0}, localhost:{0}",
            app.port()
        ),
    );
    let service = install.start(&[]).await;
    // A name that does not resolve here (`.invalid`) goes to the proxy as it is, which resolves
    // it: the page comes back.
    let out = curl(&p, &node, &format!("http://app.invalid:{}/", app.port())).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "named", "{}", text(&out));
    assert!(
        has_line(&proxy.log_lines(), &format!("CONNECT app.invalid:{} user=- -> 200", app.port())),
        "{:?}",
        proxy.log_lines()
    );
    // `localhost` would be the proxy's own loopback: refused, though a rule names it.
    let out = curl(&p, &node, &format!("http://localhost:{}/", app.port())).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(proxy.log_lines().iter().all(|l| !l.contains("localhost")), "{:?}", proxy.log_lines());
    terminate(service).await;

    // Same machine, new settings: the exclusion list sends everything around the proxy.
    let before = proxy.log_lines().len();
    install.configure(&format!(
        "{base}proxyExclusionList = *host, 127.0.0.1\nallowedTargets = 127.0.0.1:{}",
        app.port()
    ));
    let service = install.start(&[]).await;
    let out = curl(&p, &node, &format!("http://localhost:{}/", app.port())).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "named");
    assert_eq!(
        proxy.log_lines().len(),
        before,
        "excluded hosts must bypass the proxy: {:?}",
        proxy.log_lines()
    );
    terminate(service).await;
}

#[actix::test]
async fn an_authenticating_proxy_and_credentials_stored_once_with_authenticate() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let proxy = TestProxy::start(ProxyRules {
        credentials: Some(("svc-ism".into(), "Pr0xy-S3cret".into())),
        ..Default::default()
    });
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        &format!(
            "proxyHost = 127.0.0.1\nproxyPort = {}\nallowedTargets = 127.0.0.1",
            proxy.addr.port()
        ),
    );
    let out = install.run(&[]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out).contains("Failed to reach the gateway")
            && text(&out).contains("requires authentication"),
        "{}",
        text(&out)
    );
    assert!(
        has_line(
            &proxy.log_lines(),
            &format!("CONNECT 127.0.0.1:{} user=- -> 407", node.addresses.endpoint_wss.port())
        ),
        "{:?}",
        proxy.log_lines()
    );

    let mut auth = install
        .command(&["--authenticate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    auth.stdin.take().unwrap().write_all(b"svc-ism\nPr0xy-S3cret\n").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), auth.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("The key is valid"), "{}", text(&out));
    use std::os::unix::fs::PermissionsExt;
    let creds = install.root().join("config/proxy-credentials");
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);

    let service = install.start(&[]).await;
    assert!(
        has_line(
            &proxy.log_lines(),
            &format!(
                "CONNECT 127.0.0.1:{} user=svc-ism -> 200",
                node.addresses.endpoint_wss.port()
            )
        ),
        "{:?}",
        proxy.log_lines()
    );
    terminate(service).await;
    assert!(!install.log().contains("Pr0xy-S3cret"), "the proxy password must never be logged");
}

#[actix::test]
async fn the_diagnostic_tool_prints_the_seed_tables_and_fails_clearly() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let app = http_server("diagnose me").await;
    let url = format!("http://127.0.0.1:{}/", app.port());
    let install = Install::new(env!("CARGO_BIN_EXE_ism-endpoint"), &node, &p.key, &format!("allowedTargets = 127.0.0.1:{}\ndiagnosticUrl = {url}\ndiagnosticTunnelBatchCount = 3\ndiagnosticTunnelBatchSizeKB = 50\ndiagnosticUrlBatchCount = 2", app.port()));
    // The working endpoint runs; diagnostics must not disturb it.
    let service = install.start(&[]).await;

    // Arguments on the command line win over the properties file.
    let out = install.run(&["--diagnostics", &url, "4", "2", "100"]).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for line in [
        "INFO - Running endpoint diagnostics",
        "INFO - Running tunnel diagnostics",
        "INFO - Tunnel diagnostics complete",
        "INFO - Running destination diagnostics",
        "INFO - Tunnel diagnose usage stats: 200000 bytes sent; 200000 bytes received",
        "INFO - Gateway diagnostics results",
        "INFO - # Time(ms) Size(kB) Throughput(Mbps) Quality",
        "INFO - ==========Gateway Diagnostics Summary===========",
        "INFO - Average Transfer Time:",
        "INFO - Average Throughput:",
        &format!("INFO - Destination diagnostics results 1 thread each for target {url}"),
        "INFO - ==========Destination Diagnostic Summary===========",
        "INFO - Endpoint shut down complete",
    ] {
        assert!(t.contains(line), "missing {line:?} in:\n{t}");
    }
    let rows = |t: &str, size: &str| {
        t.lines()
            .filter(|l| {
                l.contains(" INFO - ")
                    && l.split(" INFO - ")
                        .nth(1)
                        .is_some_and(|r| r.split(' ').nth(2) == Some(size) && r.ends_with("100%"))
            })
            .count()
    };
    assert_eq!(rows(&t, "100"), 2, "two 100 kB tunnel batches:\n{t}");

    // Left out, they come from the properties file; as JSON for scripts.
    let out = install.run(&["--diagnostics", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["gateway"]["samples"].as_array().unwrap().len(), 3);
    assert_eq!(report["destination"]["samples"].as_array().unwrap().len(), 2);
    assert_eq!(report["params"]["tunnel_batch_size_kb"], 50);
    assert_eq!(report["gateway"]["samples"][0]["quality_pct"], 100.0);

    // The working endpoint was not disturbed.
    assert!(install.run(&["status"]).await.status.success());
    terminate(service).await;

    // A destination the endpoint may not reach: an error, explained by the allowlist (no proxy is
    // configured, so none is blamed).
    let out = install.run(&["--diagnostics", "http://127.0.0.1:9/", "1", "1", "10"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("ERROR - Destination check exception")
            && t.contains("WARN - The most likely cause of a destination diagnostic exception")
            && t.contains("does not list the URL's host and port")
            && !t.contains("proxy")
            && !t.contains("INFO - ERROR"),
        "{t}"
    );

    // A gateway that cannot be reached.
    let down = ism_tests::ReservedPort::new();
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], down.port));
    let out = install
        .run(&["--gateway", &closed.to_string(), "--diagnostics", &url, "1", "1", "10"])
        .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("ERROR - Failed to reach the gateway")
            && text(&out)
                .contains("WARN - The most likely cause of a gateway diagnostic exception"),
        "{}",
        text(&out)
    );
}

#[actix::test]
async fn a_destination_that_cannot_be_reached_without_a_proxy_blames_no_proxy() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let down = ism_tests::ReservedPort::new();
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], down.port));
    let install = Install::new(
        env!("CARGO_BIN_EXE_ism-endpoint"),
        &node,
        &p.key,
        &format!("allowedTargets = {closed}"),
    );
    let out = install.run(&["--diagnostics", &format!("http://{closed}/"), "1", "1", "10"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("ERROR - Destination check exception: connecting to")
            && t.contains("WARN - The most likely cause of a destination diagnostic exception is that the endpoint machine cannot reach the URL")
            && !t.contains("proxy"),
        "{t}"
    );
}

#[actix::test]
async fn a_deleted_endpoint_is_told_it_was_deleted() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let install = Install::new(env!("CARGO_BIN_EXE_ism-endpoint"), &node, &p.key, "");
    let service = install.start(&[]).await;
    node.api().delete_endpoint(&p.endpoint).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), service.wait_with_output())
        .await
        .expect("the endpoint stops once its endpoint is deleted")
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "a deleted endpoint is not retried");
    let log = install.log();
    assert!(
        log.contains("ERROR - This endpoint was deleted from its gateway")
            && log.contains("add a new endpoint")
            && !log.contains("Invalid endpoint key")
            && !log.contains("Copy Endpoint Key"),
        "{log}"
    );
}

#[actix::test]
async fn an_empty_allowlist_is_warned_about_in_the_log() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    // The install's defaults name no allowedTargets.
    let install = Install::new(env!("CARGO_BIN_EXE_ism-endpoint"), &node, &p.key, "");
    let service = install.start(&[]).await;
    terminate(service).await;
    assert!(
        install
            .log()
            .contains("WARN - allowedTargets is empty: every scanner request will be refused"),
        "{}",
        install.log()
    );
}

#[actix::test]
async fn a_destination_the_proxy_refuses_is_diagnosed_as_such() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let app = http_server("x").await;
    let proxy =
        TestProxy::start(ProxyRules { deny_hosts: vec!["127.0.0.1".into()], ..Default::default() });
    // The gateway is reached directly (excluded); URLs go through the proxy, which refuses this one.
    let install = Install::new(env!("CARGO_BIN_EXE_ism-endpoint"), &node, &p.key, &format!("proxyHost = 127.0.0.1\nproxyPort = {}\nproxyExclusionList = localhost\ngateway = localhost:{}\nallowedTargets = 127.0.0.1:{}", proxy.addr.port(), node.addresses.endpoint_wss.port(), app.port()));
    let out = install
        .run(&["--diagnostics", &format!("http://127.0.0.1:{}/", app.port()), "1", "1", "10"])
        .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("refused CONNECT 127.0.0.1")
            && text(&out).contains("your proxy does not allow access to the URL"),
        "{}",
        text(&out)
    );
    assert!(
        has_line(&proxy.log_lines(), &format!("CONNECT 127.0.0.1:{} user=- -> 403", app.port())),
        "{:?}",
        proxy.log_lines()
    );
}

/// A `machine.key` copied to a second host (or a second agent started on the same one): two live
/// agents with one machine identity. The newest session of an endpoint wins, which is right for
/// an agent restarted before its old connection died, but these two would replace each other for
/// ever. The one that comes back after being replaced is told why and stops; the other keeps the
/// session.
#[actix::test]
async fn two_agents_sharing_a_copied_machine_key_are_told_instead_of_fencing_forever() {
    let clock = ism_events::ManualClock::at(1_790_000_000_000);
    let node_clock = clock.clone();
    let node = TestNode::start_with("node-a", Backend::Embedded, move |c| {
        c.clock = std::sync::Arc::new(node_clock.clone())
    });
    let p = provision(&node.api(), "dc1").await;
    let original = Install::new(env!("CARGO_BIN_EXE_ism-endpoint"), &node, &p.key, "");
    let first = original.start(&[]).await;

    let copy = Install::new(env!("CARGO_BIN_EXE_ism-endpoint"), &node, &p.key, "");
    std::fs::create_dir_all(copy.root().join("data")).unwrap();
    std::fs::copy(original.root().join("data/machine.key"), copy.root().join("data/machine.key"))
        .unwrap();
    let second = copy.start(&[]).await;

    // The replaced agent comes back, is refused with the reason and the fix, and stops for good.
    let out = tokio::time::timeout(PATIENCE, first.wait_with_output())
        .await
        .expect("the replaced agent stops instead of replacing the other again")
        .unwrap();
    assert_eq!(out.status.code(), Some(14), "{}", original.log());
    let log = original.log();
    assert!(
        log.contains("ERROR - This machine identity is in use by another running endpoint")
            && log.contains("data/machine.key")
            && log.contains("copied")
            && log.contains("uninstall"),
        "{log}"
    );
    // The other keeps the session, and nothing replaced it after the refusal.
    assert!(copy.run(&["status"]).await.status.success(), "{}", copy.log());
    let entries = node.api().audit(&[("endpoint", p.endpoint.clone())]).await.unwrap();
    let opened = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "TunnelOpened")
        .count();
    assert_eq!(opened, 2, "the original's session and the copy's: {entries}");
    terminate(second).await;
}
