//! What an operator sees, with real receivers: one OpenTelemetry trace of a scanner's request
//! through two `ism-gateway` processes (the node it came to relays it to the node holding the
//! endpoint) and an `ism-endpoint` process, collected by an OTLP receiver; a management command's
//! trace from the HTTP request through the actor to the append, named by its audit entry; JSON
//! log lines that carry the trace id; and the agent's `/metrics`.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_tests::cluster::{eventually, http_server, provision, serving_nodes, Provisioned};
use ism_tests::gateway_cluster::ClusterFiles;
use ism_tests::gateway_process::NodeProcess;
use ism_tests::metrics::{scrape_now, value};
use ism_tests::nats::NatsServer;
use ism_tests::otlp::{OtlpReceiver, ReceivedSpan};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

const NODES: [&str; 2] = ["node-a", "node-b"];

/// The endpoint agent's binary, built beside this package's (`cargo nextest run --workspace`,
/// as `scripts/test` runs it, builds every binary of the workspace).
fn endpoint_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_ism-gateway")).with_file_name("ism-endpoint");
    assert!(
        bin.exists(),
        "{} is not built: run the tests with `cargo nextest run --workspace` (scripts/test)",
        bin.display()
    );
    bin
}

/// Nodes of one cluster on one NATS server, exporting their spans to `receiver`.
struct Cluster {
    nodes: Vec<NodeProcess>,
    files: Arc<ClusterFiles>,
    _data: tempfile::TempDir,
    _nats: NatsServer,
}

impl Cluster {
    /// Starts `names`, each with its own extra environment, and waits until each sees them all.
    async fn start(receiver: &OtlpReceiver, names: &[(&'static str, &[(&str, &str)])]) -> Cluster {
        let nats = tokio::task::spawn_blocking(NatsServer::start).await.unwrap();
        let files = Arc::new(ClusterFiles::new(&NODES));
        let data = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for &(name, extra) in names {
            let mut env: Vec<(String, String)> = vec![
                ("ISM_JETSTREAM_REPLICAS".into(), "1".into()),
                ("ISM_OTLP_ENDPOINT".into(), receiver.endpoint()),
                // Spans leave each process a tenth of a second after they end.
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ];
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let (files, url, dir) = (files.clone(), nats.url().to_string(), data.path().join(name));
            let bin = Path::new(env!("CARGO_BIN_EXE_ism-gateway"));
            nodes.push(
                tokio::task::spawn_blocking(move || {
                    let env: Vec<(&str, &str)> =
                        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    NodeProcess::start_with_env(bin, name, None, &files, &url, &dir, &env)
                })
                .await
                .unwrap(),
            );
        }
        for node in &nodes {
            serving_nodes(&node.api(&files), names.len()).await;
        }
        Cluster { nodes, files, _data: data, _nats: nats }
    }
}

/// An `ism-endpoint` process exporting its spans to `otlp` and serving its metrics.
struct AgentProcess {
    _child: tokio::process::Child,
    metrics: SocketAddr,
    dir: tempfile::TempDir,
}

impl AgentProcess {
    async fn start(
        files: &ClusterFiles,
        gateway: SocketAddr,
        key: &str,
        allowed: &str,
        otlp: &str,
    ) -> AgentProcess {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        let metrics = SocketAddr::from(([127, 0, 0, 1], ism_tests::free_port()));
        let props = dir.path().join("config/application.properties");
        std::fs::write(
            &props,
            format!(
                "token = {key}\ngateway = {gateway}\nwsendpoint = /wsendpoint\ngatewayCaFile = {}\nallowedTargets = {allowed}\nsocketConnectionTimeoutMs = 30000\nsocketReadTimeoutMs = 30000\notlpEndpoint = {otlp}\nmetricsListen = {metrics}\n",
                files.ca_file().display()
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new(endpoint_binary())
            .arg("--config")
            .arg(&props)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        eventually("the agent's metrics saying it is connected", || async move {
            let scrape = scrape_now(metrics).await?;
            (value(&scrape, "ism_endpoint_connected", &[])? == 1.0).then_some(())
        })
        .await;
        AgentProcess { _child: child, metrics, dir }
    }

    /// Its `logs/smartendpoint.log` so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/smartendpoint.log")).unwrap_or_default()
    }
}

/// `curl` through the SOCKS5 port `socks`, the name resolved by the endpoint; its exit status
/// and output.
async fn curl(socks: SocketAddr, p: &Provisioned, url: &str) -> (bool, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "--socks5-hostname"])
        .arg(format!("{}:{}@{socks}", p.endpoint_name, p.scanner_secret))
        .arg(url)
        .output()
        .await
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The span of `trace` called `name` on `instance`.
fn span<'a>(trace: &'a [ReceivedSpan], instance: &str, name: &str) -> Option<&'a ReceivedSpan> {
    trace.iter().find(|s| s.instance == instance && s.name == name)
}

/// Asserts that `child` is `parent`'s child.
fn assert_child(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.parent_span_id.as_deref(),
        Some(parent.span_id.as_str()),
        "{} ({}) should be a child of {} ({})",
        child.name,
        child.instance,
        parent.name,
        parent.instance
    );
}

#[actix::test]
async fn one_trace_follows_a_scanner_request_through_two_nodes_and_the_endpoint() {
    let receiver = OtlpReceiver::start().await;
    let json_logs: &[(&str, &str)] = &[("ISM_LOG_FORMAT", "json")];
    let cluster = Cluster::start(&receiver, &[("node-a", json_logs), ("node-b", &[])]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let p = provision(&b.api(&cluster.files), "dc1").await;
    let target = http_server("hello through the tunnel").await;
    let allowed = format!("127.0.0.1:{}", target.port());
    let agent = AgentProcess::start(
        &cluster.files,
        b.ports.endpoint_wss,
        &p.key,
        &allowed,
        &receiver.endpoint(),
    )
    .await;

    // The scanner comes to node-a; the endpoint is held by node-b. `localhost` is resolved by the
    // endpoint, so its dial has a DNS step.
    let url = format!("http://localhost:{}/", target.port());
    eventually("a scanner's request through node-a", || {
        let (p, url) = (&p, &url);
        async move {
            let (ok, body) = curl(a.ports.socks, p, url).await;
            (ok && body == "hello through the tunnel").then_some(())
        }
    })
    .await;
    let trace = receiver
        .wait_for("the whole trace of the request that reached the target", |spans| {
            let dial = spans.iter().find(|s| {
                s.name == "endpoint.dial"
                    && s.attributes.get("outcome").map(String::as_str) == Some("connected")
            })?;
            let trace: Vec<ReceivedSpan> =
                spans.iter().filter(|s| s.trace_id == dial.trace_id).cloned().collect();
            let complete = [
                ("node-a", "scanner.connection"),
                ("node-a", "scanner.authorise"),
                ("node-a", "stream.open"),
                ("node-a", "endpoint.lookup"),
                ("node-a", "relay.open"),
                ("node-b", "relay.serve"),
                ("node-b", "tunnel.open"),
                ("", "dns.resolve"),
                ("", "allowlist.check"),
                ("", "target.connect"),
            ]
            .iter()
            .all(|(node, name)| {
                trace.iter().any(|s| s.name == *name && (node.is_empty() || s.instance == *node))
            });
            complete.then_some(trace)
        })
        .await;

    // One trace, parent to child, across the three processes.
    let connection = span(&trace, "node-a", "scanner.connection").unwrap();
    assert_eq!(connection.parent_span_id, None, "the scanner's connection is the trace's root");
    assert_eq!(connection.service, "ism-gateway");
    let open = span(&trace, "node-a", "stream.open").unwrap();
    assert_child(span(&trace, "node-a", "scanner.authorise").unwrap(), connection);
    assert_child(open, connection);
    assert_child(span(&trace, "node-a", "endpoint.lookup").unwrap(), open);
    let relay_open = span(&trace, "node-a", "relay.open").unwrap();
    assert_child(relay_open, open);
    assert_eq!(relay_open.attributes["node"], "node-b");
    let relay_serve = span(&trace, "node-b", "relay.serve").unwrap();
    assert_child(relay_serve, relay_open);
    assert_eq!(relay_serve.service, "ism-gateway");
    let tunnel_open = span(&trace, "node-b", "tunnel.open").unwrap();
    assert_child(tunnel_open, relay_serve);
    let dial = trace.iter().find(|s| s.name == "endpoint.dial").unwrap();
    assert_eq!(dial.service, "ism-endpoint");
    assert_child(dial, tunnel_open);
    for step in ["dns.resolve", "allowlist.check", "target.connect"] {
        assert_child(trace.iter().find(|s| s.name == step).unwrap(), dial);
    }
    // The connection's span says what it carried (it ends after the bytes moved).
    let to_scanner: u64 = connection.attributes["to_scanner"].parse().unwrap();
    assert!(to_scanner >= "hello through the tunnel".len() as u64, "{connection:?}");
    assert!(connection.attributes["to_target"].parse::<u64>().unwrap() > 0, "{connection:?}");
    assert_eq!(dial.attributes["to_scanner"], connection.attributes["to_scanner"]);
    assert_eq!(connection.attributes["endpoint"], p.endpoint);

    // A refused request: its log line on node-a (JSON) carries its trace id, which names the
    // trace in which the endpoint refused it.
    let (ok, _) = curl(a.ports.socks, &p, "http://localhost:1/").await;
    assert!(!ok, "a target outside allowedTargets is refused");
    let refused = receiver
        .wait_for("the endpoint's refusal", |spans| {
            spans
                .iter()
                .find(|s| {
                    s.name == "endpoint.dial"
                        && s.attributes.get("outcome").map(String::as_str) == Some("not_allowed")
                })
                .cloned()
        })
        .await;
    let line = eventually("node-a's log line of the refusal", || {
        let log = a.log();
        async move {
            let lines: Vec<serde_json::Value> = log
                .lines()
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
                })
                .collect();
            lines.into_iter().find(|l| l["fields"]["message"] == "SOCKS5 request refused")
        }
    })
    .await;
    assert_eq!(line["span"]["name"], "scanner.connection", "{line}");
    assert_eq!(line["span"]["trace_id"], refused.trace_id.as_str(), "{line}");
    assert!(!b.log().contains('\u{1b}'), "a log file gets no terminal colour codes");
    // The endpoint's line of the same refusal names the same trace.
    let agent_line =
        eventually("the endpoint's log line of the refusal", || {
            let log = agent.log();
            async move {
                log.lines().find(|l| l.contains("Refused a scanner stream")).map(str::to_string)
            }
        })
        .await;
    assert!(agent_line.ends_with(&format!(" trace_id={}", refused.trace_id)), "{agent_line}");

    // What the agent counted meanwhile.
    let scrape = scrape_now(agent.metrics).await.unwrap();
    assert!(
        value(&scrape, "ism_endpoint_dials_total", &[("outcome", "connected")]).unwrap() >= 1.0
    );
    assert_eq!(
        value(&scrape, "ism_endpoint_dials_total", &[("outcome", "not_allowed")]),
        Some(1.0)
    );
    assert!(
        value(&scrape, "ism_endpoint_stream_bytes_total", &[("direction", "to_scanner")]).unwrap()
            > 0.0
    );
}

#[actix::test]
async fn a_management_command_is_traced_to_its_append_and_its_audit_entry_names_the_trace() {
    let receiver = OtlpReceiver::start().await;
    let cluster = Cluster::start(&receiver, &[("node-a", &[])]).await;
    let node = &cluster.nodes[0];
    // The caller's own trace: the request continues it.
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", "-H", "content-type: application/json"])
        .arg("-H")
        .arg(format!("authorization: Bearer {}", cluster.files.admin_token))
        .arg("-H")
        .arg(format!("traceparent: 00-{trace_id}-{caller_span}-01"))
        .args(["-d", r#"{"name":"traced","description":""}"#])
        .arg(format!("http://{}/api/v1/gateways", node.ports.api))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let trace = receiver
        .wait_for("the request's spans down to the append", |spans| {
            let trace: Vec<ReceivedSpan> =
                spans.iter().filter(|s| s.trace_id == trace_id).cloned().collect();
            let has = |name: &str| trace.iter().any(|s| s.name == name);
            (has("http.request") && has("command") && has("event.append")).then_some(trace)
        })
        .await;
    let request = trace.iter().find(|s| s.name == "http.request").unwrap();
    assert_eq!(request.parent_span_id.as_deref(), Some(caller_span));
    assert_eq!(request.attributes["route"], "/api/v1/gateways");
    assert_eq!(request.attributes["status"], "201");
    let command = trace
        .iter()
        .find(|s| s.name == "command" && s.attributes["aggregate"] == "gateway")
        .unwrap();
    assert_child(command, request);
    let append = trace.iter().find(|s| {
        s.name == "event.append" && s.parent_span_id.as_deref() == Some(command.span_id.as_str())
    });
    assert!(append.is_some(), "the command's append is its child: {trace:#?}");

    let audit = node.api(&cluster.files).audit(&[]).await.unwrap();
    let created = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "GatewayCreated")
        .unwrap_or_else(|| panic!("no GatewayCreated in {audit}"));
    assert_eq!(created["trace_id"], trace_id, "{created}");
}
