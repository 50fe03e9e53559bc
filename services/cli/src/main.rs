//! `ism`: the admin command line over the management REST API.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ism_cli::scanner;
use ism_cli::ApiClient;
use serde_json::Value;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "Manage an internal-scanning gateway: gateways, endpoints, keys, scanner credentials.")]
struct Cli {
    /// Base URL of a gateway node's management API.
    #[arg(long, env = "ISM_API", default_value = "http://127.0.0.1:7070", global = true)]
    api: String,
    /// API token.
    #[arg(long, env = "ISM_API_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the API's JSON instead of text (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The node's status.
    Status,
    #[command(subcommand)]
    Gateway(GatewayCmd),
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Issue a scanner credential (the SOCKS5 password) for a gateway; shown once.
    Credential {
        #[arg(long)]
        gateway: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Fetch a URL through the gateway's SOCKS5 ingress, as a scanner would.
    Fetch {
        /// SOCKS5 ingress address (host:port).
        #[arg(long)]
        socks: String,
        /// Endpoint name (or id) to go through.
        #[arg(long)]
        endpoint: String,
        /// Scanner credential secret.
        #[arg(long, env = "ISM_SCANNER_SECRET", hide_env_values = true)]
        secret: String,
        /// http:// URL inside the endpoint's network.
        url: String,
    },
}

#[derive(Subcommand)]
enum GatewayCmd {
    /// Create a gateway.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List gateways.
    List,
    /// Show one gateway (with the address endpoints connect to).
    Show { id: String },
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// Add an endpoint to a gateway; prints its key.
    Add {
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// linux, windows or other.
        #[arg(long, default_value = "linux")]
        platform: String,
    },
    /// List a gateway's endpoints.
    List {
        #[arg(long)]
        gateway: String,
    },
    /// Show one endpoint.
    Show { id: String },
    /// Print the endpoint key ("Copy Endpoint Key").
    Key { id: String },
}

fn print_endpoints(list: &Value) {
    println!("{:<36}  {:<20}  {:<8}  {:<8}  NODE", "ID", "NAME", "STATUS", "VERSION");
    for e in list.as_array().into_iter().flatten() {
        println!(
            "{:<36}  {:<20}  {:<8}  {:<8}  {}",
            e["id"].as_str().unwrap_or(""),
            e["name"].as_str().unwrap_or(""),
            e["status"].as_str().unwrap_or(""),
            e["agent_version"].as_str().unwrap_or("-"),
            e["node"].as_str().unwrap_or("-")
        );
    }
}

fn print_gateways(list: &Value) {
    println!("{:<36}  {:<20}  {:<12}  ENDPOINT URL", "ID", "NAME", "STATUS");
    for g in list.as_array().into_iter().flatten() {
        println!("{:<36}  {:<20}  {:<12}  {}", g["id"].as_str().unwrap_or(""), g["name"].as_str().unwrap_or(""), g["status"].as_str().unwrap_or(""), g["endpoint_url"].as_str().unwrap_or(""));
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Fetch { socks, endpoint, secret, url } = &cli.command {
        let rest = url.strip_prefix("http://").context("only http:// URLs can be fetched (https needs a TLS client: use curl --socks5-hostname)")?;
        let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().context("bad port in URL")?),
            None => (authority.to_string(), 80),
        };
        let stream = scanner::connect(socks, endpoint, secret, &host, port).await?;
        let resp = scanner::http_get(stream, authority, &path, Duration::from_secs(30)).await?;
        println!("{}", resp.status_line);
        for (k, v) in &resp.headers {
            println!("{k}: {v}");
        }
        println!();
        print!("{}", resp.body);
        return Ok(());
    }
    let Some(token) = cli.token.as_deref() else {
        bail!("an API token is required: pass --token or set ISM_API_TOKEN (a node prints where its admin token is)");
    };
    let api = ApiClient::new(&cli.api, token);
    let out = match &cli.command {
        Command::Status => api.status().await?,
        Command::Gateway(GatewayCmd::Create { name, description }) => api.create_gateway(name, description).await?,
        Command::Gateway(GatewayCmd::List) => {
            let list = api.gateways().await?;
            if !cli.json {
                print_gateways(&list);
                return Ok(());
            }
            list
        }
        Command::Gateway(GatewayCmd::Show { id }) => api.gateway(id).await?,
        Command::Endpoint(EndpointCmd::Add { gateway, name, description, platform }) => api.add_endpoint(gateway, name, description, platform).await?,
        Command::Endpoint(EndpointCmd::List { gateway }) => {
            let list = api.endpoints(gateway).await?;
            if !cli.json {
                print_endpoints(&list);
                return Ok(());
            }
            list
        }
        Command::Endpoint(EndpointCmd::Show { id }) => api.endpoint(id).await?,
        Command::Endpoint(EndpointCmd::Key { id }) => {
            let key = api.endpoint_key(id).await?;
            if !cli.json {
                println!("{key}");
                return Ok(());
            }
            serde_json::json!({ "endpoint": id, "key": key })
        }
        Command::Credential { gateway, label } => api.issue_scanner_credential(gateway, label).await?,
        Command::Fetch { .. } => unreachable!("handled above"),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match actix_rt::System::new().block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
