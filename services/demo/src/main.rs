//! `ism-demo`: the whole path on the embedded default, for real: a gateway node, a gateway and an
//! endpoint created through the REST API, the endpoint agent dialing in over TLS WebSocket with
//! its key, an internal app on loopback, and a scan through the SOCKS5 ingress with its results.
//!
//! With `--once` it exits 0 after the path worked (non-zero on any failure); otherwise it keeps
//! running and prints how to point `curl --socks5-hostname` at it.

mod checks;
mod target_app;

use anyhow::{bail, ensure, Context};
use clap::Parser;
use ism_cli::{scanner, ApiClient};
use ism_endpoint::{Agent, AgentStatus, EndpointConfig};
use ism_gateway::NodeConfig;
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
    println!("[{n}/7] {text}");
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

    let app_port = target_app::start().await.context("starting the internal app")?;
    step(
        4,
        format_args!(
            "internal app listening on 127.0.0.1:{app_port} (inside the endpoint's network)"
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
            "# written by ism-demo\ntoken = {key}\ngateway = {}\nwebsocketProtocol = wss\nwsendpoint = {}\nsocketConnectionTimeoutMs = 5000\nsocketReadTimeoutMs = 5000\ngatewayCaFile = {}\nallowedTargets = 127.0.0.1:{app_port}\n",
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
    step(7, format_args!("scanned http://127.0.0.1:{app_port}/ through scanner -> gateway -> wss -> endpoint -> app: {} ({} bytes)", resp.status_line, resp.body.len()));

    println!("results:");
    for f in checks::passive_checks(&resp) {
        println!("  [{}] {}", f.severity, f.title);
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
        println!("demo complete: the request went through the tunnel and back");
    } else {
        println!();
        println!("Everything is running. Try it yourself:");
        println!("  curl --socks5-hostname 'dc1:{secret}@{socks}' http://127.0.0.1:{app_port}/");
        println!("  cargo run -q -p ism-cli --bin ism -- --api http://{} --token {} endpoint list --gateway {gateway_id}", a.api, node.admin_token);
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
    }
    agent.stop();
    let _ = agent.join().await;
    node.stop().await;
    Ok(())
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
