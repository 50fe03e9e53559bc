//! `ism-endpoint`: runs the endpoint agent as configured in `application.properties`.

use clap::Parser;
use ism_endpoint::{Agent, EndpointConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// The endpoint agent: dials out to the gateway and reaches allowed internal targets for scanners.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The properties file.
    #[arg(long, env = "ISM_CONFIG", default_value = "config/application.properties")]
    config: PathBuf,
    /// Endpoint key (overrides `token`).
    #[arg(long, env = "ISM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Gateway host[:port] (overrides `gateway`).
    #[arg(long, env = "ISM_GATEWAY")]
    gateway: Option<String>,
    /// CA certificate file to trust for the gateway (overrides `gatewayCaFile`).
    #[arg(long, env = "ISM_GATEWAY_CA_FILE")]
    gateway_ca_file: Option<String>,
    /// Targets scanners may reach (overrides `allowedTargets`), e.g. `10.0.0.0/8:80-443,*.corp:443`.
    #[arg(long, env = "ISM_ALLOWED_TARGETS")]
    allowed_targets: Option<String>,
    /// Any other setting, as key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    let args = Args::parse();
    let mut overrides = Vec::new();
    for (key, value, source) in [
        ("token", args.token, "--token / ISM_TOKEN"),
        ("gateway", args.gateway, "--gateway / ISM_GATEWAY"),
        ("gatewayCaFile", args.gateway_ca_file, "--gateway-ca-file / ISM_GATEWAY_CA_FILE"),
        ("allowedTargets", args.allowed_targets, "--allowed-targets / ISM_ALLOWED_TARGETS"),
    ] {
        if let Some(v) = value {
            overrides.push((key.to_string(), v, source.to_string()));
        }
    }
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            eprintln!("ERROR - --set expects KEY=VALUE, got {kv:?}");
            return ExitCode::from(2);
        };
        overrides.push((k.trim().to_string(), v.trim().to_string(), format!("--set {}", k.trim())));
    }
    let config = match EndpointConfig::load(&args.config, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR - {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        tracing::info!("Launching endpoint version: {}", env!("CARGO_PKG_VERSION"));
        let agent = match Agent::new(config) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("ERROR - {e}");
                return ExitCode::from(2);
            }
        };
        let handle = agent.spawn();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("Endpoint is shutting down");
                handle.stop();
                let _ = handle.join().await;
                tracing::info!("Endpoint shut down complete");
                ExitCode::SUCCESS
            }
            failure = handle.stopped() => match failure {
                Some(_) => ExitCode::from(3),
                None => ExitCode::SUCCESS,
            },
        }
    })
}
