//! `ism-demo`: the whole path on the embedded default, for real: a gateway node, a gateway and an
//! endpoint created through the REST API, the endpoint agent dialing in over TLS WebSocket with
//! its key, a deliberately insecure internal app on loopback (http and https), a scanner request
//! through the SOCKS5 ingress, and a scan of the built-in engine through the tunnel with the
//! findings of its report (JSON, and SARIF written beside the node's data).
//!
//! With `--once` it exits 0 after the path worked (non-zero on any failure); otherwise it keeps
//! running and prints how to point `curl --socks5-hostname` at it.

use anyhow::{bail, ensure, Context};
use clap::Parser;
use ism_cli::{scanner, ApiClient};
use ism_endpoint::{Agent, AgentStatus, EndpointConfig};
use ism_gateway::NodeConfig;
use ism_scan_engine::testing::InsecureApp;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Run gateway, endpoint, an internal app and a scan through the tunnel, on the embedded event log."
)]
struct Args {
    /// Do the whole path once, print the results and exit (0 = everything worked).
    #[arg(long)]
    once: bool,
    /// Keep the node's data here (default: a temporary directory removed at exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn step(n: u32, text: impl std::fmt::Display) {
    println!("[{n}/8] {text}");
}

async fn demo(args: Args) -> anyhow::Result<()> {
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let data = args.data_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    println!(
        "Internal-scanning gateway demo, embedded event log in {}",
        data.join("gateway").display()
    );

    let node = ism_gateway::start(NodeConfig::local("demo-node", &data.join("gateway")))
        .await
        .context("starting the gateway node")?;
    let a = node.addresses;
    step(
        1,
        format_args!(
            "gateway node started: endpoints wss://{}{}, scanners socks5://{}, API http://{}",
            a.endpoint_wss, node.state.ws_path, a.socks, a.api
        ),
    );

    let api = ApiClient::new(&format!("http://{}", a.api), &node.admin_token);
    let gateway = api.create_gateway("demo-gateway", "created by ism-demo").await?;
    let gateway_id = gateway["id"].as_str().context("gateway id")?.to_string();
    step(
        2,
        format_args!(
            "created gateway \"demo-gateway\" ({}), status {}",
            gateway_id,
            gateway["status"].as_str().unwrap_or("?")
        ),
    );

    let added = api.add_endpoint(&gateway_id, "dc1", "demo data centre", "linux").await?;
    let endpoint_id = added["endpoint"]["id"].as_str().context("endpoint id")?.to_string();
    let key = added["key"].as_str().context("endpoint key")?.to_string();
    step(
        3,
        format_args!(
            "added endpoint \"dc1\", status {}; key {}...",
            added["endpoint"]["status"].as_str().unwrap_or("?"),
            &key[..20]
        ),
    );

    let app = InsecureApp::start().await.context("starting the internal app")?;
    let (app_port, tls_port) = (app.http.port(), app.https.port());
    step(
        4,
        format_args!(
            "internal app listening on http://127.0.0.1:{app_port} and https://127.0.0.1:{tls_port} (inside the endpoint's network)"
        ),
    );

    // The endpoint is configured exactly as a customer would: an application.properties file.
    let endpoint_dir = data.join("endpoint").join("config");
    std::fs::create_dir_all(&endpoint_dir)?;
    let properties = endpoint_dir.join("application.properties");
    let ca = node.ca_file.as_ref().context("the demo node generates its own CA")?;
    std::fs::write(
        &properties,
        format!(
            "# written by ism-demo\ntoken = {key}\ngateway = {}\nwebsocketProtocol = wss\nwsendpoint = {}\nsocketConnectionTimeoutMs = 5000\nsocketReadTimeoutMs = 5000\ngatewayCaFile = {}\nallowedTargets = 127.0.0.1:{app_port},127.0.0.1:{tls_port}\n",
            a.endpoint_wss,
            node.state.ws_path,
            ca.display()
        ),
    )?;
    let agent = Agent::new(EndpointConfig::load(&properties, &[])?)?.spawn();
    let connected = agent
        .wait_for(Duration::from_secs(60), |s| {
            matches!(s, AgentStatus::Connected { .. } | AgentStatus::Stopped(_))
        })
        .await
        .map_err(|s| anyhow::anyhow!("the endpoint did not connect within 60 s: {s:?}"))?;
    let AgentStatus::Connected { node: node_name, .. } = connected else {
        bail!("the endpoint stopped: {connected:?}")
    };
    // The session is an event; the directory shows it once it has applied that event.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let shown = api.endpoint(&endpoint_id).await?;
        if shown["status"] == "Ready" {
            break shown;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the API still shows the endpoint as {} instead of Ready",
            shown["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    step(
        5,
        format_args!(
            "endpoint agent connected to node {node_name}; API status {} (version {})",
            shown["status"].as_str().unwrap_or("?"),
            shown["agent_version"].as_str().unwrap_or("?")
        ),
    );

    let credential = api.issue_scanner_credential(&gateway_id, "demo scanner").await?;
    let secret = credential["secret"].as_str().context("scanner secret")?.to_string();
    step(
        6,
        format_args!(
            "scanner credential {} issued (SOCKS5 user \"dc1\", the secret as password)",
            credential["id"].as_str().unwrap_or("?")
        ),
    );

    let socks = a.socks.to_string();
    let stream = scanner::connect(&socks, "dc1", &secret, "127.0.0.1", app_port)
        .await
        .context("opening a stream through the tunnel")?;
    let resp =
        scanner::http_get(stream, &format!("127.0.0.1:{app_port}"), "/", Duration::from_secs(60))
            .await?;
    ensure!(resp.status_line.contains(" 200 "), "unexpected response: {}", resp.status_line);
    step(7, format_args!("an external scanner fetched http://127.0.0.1:{app_port}/ through scanner -> gateway -> wss -> endpoint -> app: {} ({} bytes)", resp.status_line, resp.body.len()));

    // The SARIF report outlives the demo's temporary data (unless --data-dir keeps it there).
    let sarif = match &args.data_dir {
        Some(dir) => dir.join("scan-report.sarif"),
        None => std::env::temp_dir().join("ism-demo-scan-report.sarif"),
    };
    let report = scan(&api, &sarif, &[app.http, app.https]).await?;
    println!("results:");
    for f in report["findings"].as_array().into_iter().flatten() {
        // What the app sent is untrusted text: shown escaped, never obeyed by the terminal.
        let text = |k: &str| ism_escape::escaped(f[k].as_str().unwrap_or("?")).to_string();
        let evidence: String = text("evidence").chars().take(60).collect();
        println!("  [{}] {}: {} ({evidence})", text("severity"), text("name"), text("url"));
    }
    // The endpoint must not be an open door: anything off its allowlist is refused.
    match scanner::connect(&socks, "dc1", &secret, "127.0.0.1", a.api.port()).await {
        Err(scanner::ScannerError::Refused { code: 2, meaning }) => println!(
            "  [ok] a target off the allowlist (127.0.0.1:{}) was refused: {meaning}",
            a.api.port()
        ),
        Err(e) => bail!("a target off the allowlist failed the wrong way: {e}"),
        Ok(_) => bail!("a target off the allowlist was reachable"),
    }

    if args.once {
        println!("demo complete: the request and the scan went through the tunnel and back");
    } else {
        println!();
        println!("Everything is running. Try it yourself:");
        println!(
            "  the Internal Scanning Management page: http://{}/ (sign in with the API token {})",
            a.api, node.admin_token
        );
        println!("  curl --socks5-hostname 'dc1:{secret}@{socks}' http://127.0.0.1:{app_port}/");
        println!(
            "  cargo run -q -p ism-cli --bin ism -- --api http://{} --token {} scan list",
            a.api, node.admin_token
        );
        println!("  cargo run -q -p ism-cli --bin ism -- --api http://{} --token {} endpoint list --gateway {gateway_id}", a.api, node.admin_token);
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
    }
    agent.stop();
    let _ = agent.join().await;
    node.stop().await;
    Ok(())
}

/// Step 8: a scan of the built-in engine through endpoint `dc1` of the app at `targets`, waited
/// for; its JSON report, and its SARIF report written to `sarif`.
async fn scan(
    api: &ApiClient,
    sarif: &std::path::Path,
    targets: &[std::net::SocketAddr],
) -> anyhow::Result<serde_json::Value> {
    let [http, https] = targets else { bail!("the app listens on http and https") };
    let targets = [format!("http://{http}/"), format!("https://{https}/")];
    let body =
        serde_json::json!({ "endpoint": "dc1", "targets": targets, "max_pages": 40, "rate": 50 });
    let queued = api.start_scan(&body).await?;
    let id = queued["id"].as_str().context("scan id")?.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let done = loop {
        let scan = api.scan(&id).await?;
        match scan["state"].as_str() {
            Some("finished") => break scan,
            Some("queued" | "running") => {}
            other => bail!("the scan ended {other:?}: {}", scan["reason"]),
        }
        ensure!(tokio::time::Instant::now() < deadline, "the scan did not finish within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let sarif_report = api.scan_report(&id, "sarif").await?;
    std::fs::write(sarif, serde_json::to_vec_pretty(&sarif_report)?)
        .with_context(|| format!("writing {}", sarif.display()))?;
    let f = &done["findings"];
    step(
        8,
        format_args!(
            "scan {id} of {} through the tunnel: {} pages, {} requests; findings {} high, {} medium, {} low, {} info (SARIF: {})",
            targets.join(" and "),
            done["pages"],
            done["requests"],
            f["high"],
            f["medium"],
            f["low"],
            f["info"],
            sarif.display()
        ),
    );
    Ok(api.scan_report(&id, "json").await?)
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let runtime =
        || tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match actix::System::with_tokio_rt(runtime).block_on(demo(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
