//! `ism-endpoint`: runs the endpoint agent as configured in `config/application.properties`,
//! and the seed's other modes: `--diagnostics`, `--authenticate`, plus `--check` (the
//! installer's key validation) and `status`.
//!
//! Exit statuses: 0 stopped when asked (or the mode succeeded); 1 `status` found it not
//! connected; 2 a configuration or command-line error; 4 a diagnostic failed; and when the agent
//! cannot work, [`ExitStatus`]: 3 a failure that may pass (restart it), 10-14 a refusal that
//! starting again cannot fix (see `ism_endpoint::exit`).

use clap::{Parser, Subcommand};
use ism_endpoint::config::{environment_overrides, Origin, Overrides};
use ism_endpoint::exit::ExitStatus;
use ism_endpoint::proxy::ProxyCredentials;
use ism_endpoint::{diagnostics, logging, metrics, status, Agent, EndpointConfig};
use ism_escape::escaped;
use ism_telemetry::{TraceConfig, Tracing};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// The endpoint agent: dials out to the gateway and reaches allowed internal targets for scanners.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The properties file.
    #[arg(
        long,
        env = "ISM_CONFIG",
        default_value = "config/application.properties",
        global = true
    )]
    config: PathBuf,
    /// Java-style settings, as in the seed: `-Dhttps.proxyHost=proxy.corp -Dhttps.proxyPort=3128`.
    #[arg(short = 'D', value_name = "KEY=VALUE", global = true)]
    java: Vec<String>,
    /// Use the web proxy only for the gateway connection (not for the URLs scanned).
    #[arg(long, global = true)]
    proxygatewayonly: bool,
    /// Endpoint key (overrides `token`).
    #[arg(long, hide_env_values = true, global = true)]
    token: Option<String>,
    /// Gateway host[:port] (overrides `gateway`).
    #[arg(long, global = true)]
    gateway: Option<String>,
    /// Any setting, as key=value (repeatable; overrides the file and the environment).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
    /// Store the web proxy's user name and password (asked for once), then check them.
    #[arg(long)]
    authenticate: bool,
    /// Run the diagnostic tool: [diagnosticUrl] [diagnosticUrlBatchCount]
    /// [diagnosticTunnelBatchCount] [diagnosticTunnelBatchSizeKB].
    #[arg(long, num_args = 0..=4, value_name = "ARG")]
    diagnostics: Option<Vec<String>>,
    /// With --diagnostics: print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Check the key against the gateway (binding it to this machine on first use), then exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Whether the running endpoint is connected, to which gateway node, since when, and with
    /// how many open streams.
    Status,
}

/// Maps the seed's Java system properties onto our keys.
fn java_setting(kv: &str) -> Result<(String, String), String> {
    let (k, v) = kv.split_once('=').ok_or_else(|| format!("-D expects KEY=VALUE, got {kv:?}"))?;
    let key = match k {
        "https.proxyHost" | "http.proxyHost" => "proxyHost",
        "https.proxyPort" | "http.proxyPort" => "proxyPort",
        "http.nonProxyHosts" => return Ok(("proxyExclusionList".into(), v.replace('|', ","))),
        other => return Err(format!("-D{other} is not supported (use https.proxyHost, https.proxyPort or http.nonProxyHosts)")),
    };
    Ok((key.into(), v.into()))
}

fn overrides(args: &Args) -> Result<Overrides, String> {
    let mut out = environment_overrides();
    for kv in &args.java {
        let (k, v) = java_setting(kv)?;
        out.push((k, v, Origin::Flag(format!("-D{kv}"))));
    }
    if args.proxygatewayonly {
        out.push((
            "proxyScope".into(),
            "gateway".into(),
            Origin::Flag("--proxygatewayonly".into()),
        ));
    }
    for (key, value, flag) in
        [("token", &args.token, "--token"), ("gateway", &args.gateway, "--gateway")]
    {
        if let Some(v) = value {
            out.push((key.into(), v.clone(), Origin::Flag(flag.into())));
        }
    }
    for kv in &args.set {
        let (k, v) =
            kv.split_once('=').ok_or_else(|| format!("--set expects KEY=VALUE, got {kv:?}"))?;
        out.push((k.trim().into(), v.trim().into(), Origin::Flag(format!("--set {}", k.trim()))));
    }
    Ok(out)
}

/// Asks for the proxy credentials: on a terminal with the password hidden, else two lines on
/// standard input (for installers and scripts).
fn ask_credentials() -> std::io::Result<ProxyCredentials> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        print!("Proxy user name: ");
        std::io::stdout().flush()?;
        let mut username = String::new();
        stdin.lock().read_line(&mut username)?;
        let password = rpassword::prompt_password("Proxy password: ")?;
        Ok(ProxyCredentials { username: username.trim().to_string(), password })
    } else {
        let mut lines = stdin.lock().lines();
        let username = lines.next().transpose()?.unwrap_or_default();
        let password = lines.next().transpose()?.unwrap_or_default();
        Ok(ProxyCredentials { username: username.trim().to_string(), password })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match overrides(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ERROR - {e}");
            return ExitCode::from(2);
        }
    };
    let config = match EndpointConfig::load(&args.config, &settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR - {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Status) = args.command {
        return match status::read(&config.install.status_file) {
            Ok(report) => {
                println!("{}", status::describe(&report));
                if report.state == "connected" && status::writer_alive(&report) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("ERROR - {e}");
                ExitCode::from(1)
            }
        };
    }
    // Before any thread, and only in the modes that carry tunnel bytes: this may start the
    // process again (`ism_glibc`).
    let glibc = (!(args.check || args.authenticate)).then(ism_glibc::set_up);
    let runtime = ism_endpoint::agent::runtime().expect("tokio runtime");
    let observability = &config.observability;
    let tracer = {
        // The exporter's connection runs on the runtime.
        let _runtime = runtime.enter();
        let hostname = ism_endpoint::gateway_link::hostname();
        match Tracing::new(&TraceConfig {
            service: "ism-endpoint",
            instance: hostname,
            otlp_endpoint: observability.otlp_endpoint.clone(),
            sample_ratio: observability.sample_ratio,
        }) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("ERROR - {e}");
                return ExitCode::from(2);
            }
        }
    };
    let quiet_console = args.json && args.diagnostics.is_some();
    if let Err(e) = logging::init(!quiet_console, Some(&config.install.log_dir), &tracer) {
        eprintln!("ERROR - cannot write logs to {}: {e}", config.install.log_dir.display());
        return ExitCode::from(2);
    }
    if let Some(glibc) = &glibc {
        glibc.log();
    }
    let code = serve(args, config, &runtime);
    // The last spans are exported before the process ends.
    tracer.shutdown();
    code
}

/// Runs the mode `args` ask for (the agent by default) on `runtime`.
fn serve(args: Args, config: EndpointConfig, runtime: &tokio::runtime::Runtime) -> ExitCode {
    if args.authenticate {
        let creds = match ask_credentials() {
            Ok(c) if !c.username.is_empty() => c,
            Ok(_) => {
                tracing::error!("No proxy user name given");
                return ExitCode::from(2);
            }
            Err(e) => {
                tracing::error!("Cannot read the proxy credentials: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = creds.store(&config.install.proxy_credentials_file) {
            tracing::error!("Cannot store the proxy credentials: {e}");
            return ExitCode::from(2);
        }
        tracing::info!(
            "Proxy credentials for user {} stored in {}",
            creds.username,
            config.install.proxy_credentials_file.display()
        );
        if config.proxy.is_none() {
            tracing::warn!("No proxy is configured (proxyHost / -Dhttps.proxyHost): the credentials will be used once one is");
            return ExitCode::SUCCESS;
        }
    }
    runtime.block_on(async move {
        tracing::info!("Launching endpoint version: {}", env!("CARGO_PKG_VERSION"));
        let agent = match Agent::new(config) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
        };
        if let Some(diag_args) = &args.diagnostics {
            let params =
                match diagnostics::Params::from_args(diag_args, &agent.config().diagnostics) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!("{e}");
                        return ExitCode::from(2);
                    }
                };
            let report = diagnostics::run(&agent, params).await;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report encodes"));
            } else {
                for (level, line) in diagnostics::render(&report) {
                    match level {
                        tracing::Level::ERROR => tracing::error!("{line}"),
                        tracing::Level::WARN => tracing::warn!("{line}"),
                        _ => tracing::info!("{line}"),
                    }
                }
            }
            tracing::info!("Endpoint is shutting down");
            tracing::info!("Endpoint shut down complete");
            return if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(4) };
        }
        if args.check || args.authenticate {
            return match agent.side_session().await {
                Ok(link) => {
                    // The endpoint's and the node's names are the gateway's words.
                    tracing::info!(
                        "The key is valid: endpoint {} reached gateway {} (node {})",
                        escaped(&link.endpoint_name),
                        link.gateway,
                        escaped(&link.node)
                    );
                    link.session.close("check complete");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let d = e.diagnosis();
                    tracing::error!("{}", d.exit_line());
                    tracing::error!("{}", d.cause_line());
                    ExitCode::from(d.exit.code())
                }
            };
        }
        // Both stop handlers are in place before the agent runs: a service manager may stop it
        // at any moment after starting it.
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut terminate), Ok(mut interrupt)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("cannot listen for SIGTERM and SIGINT");
            return ExitCode::from(ExitStatus::Retryable.code());
        };
        // A descriptor per stream it serves: beyond the usual soft limit of 1024.
        ism_tunnel::fd_limit::raise();
        if let Some(listen) = agent.config().observability.metrics_listen {
            match metrics::bind(listen).await {
                Ok(listener) => {
                    tracing::info!("Serving metrics at http://{listen}/metrics");
                    tokio::spawn(metrics::serve(listener, agent.metrics()));
                }
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(2);
                }
            }
        }
        let handle = agent.spawn();
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            failure = handle.stopped() => return match failure {
                Some(d) => ExitCode::from(d.exit.code()),
                None => ExitCode::SUCCESS,
            },
        }
        tracing::info!("Endpoint is shutting down");
        handle.stop();
        let _ = handle.join().await;
        tracing::info!("Endpoint shut down complete");
        ExitCode::SUCCESS
    })
}
