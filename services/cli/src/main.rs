//! `ism`: the admin command line over the management REST API.

mod output;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ism_cli::scanner;
use ism_cli::ApiClient;
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Manage an internal-scanning gateway: gateways, endpoints, keys, access, credentials, users, audit, scans."
)]
struct Cli {
    /// Base URL of a gateway node's management API.
    #[arg(long, env = "ISM_API", default_value = "http://127.0.0.1:7070", global = true)]
    api: String,
    /// API token (a user's `ismt_...` token, or the node's administrator token).
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
    /// Who the token belongs to, and the role.
    Whoami,
    #[command(subcommand)]
    Gateway(GatewayCmd),
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    #[command(subcommand)]
    Credential(CredentialCmd),
    #[command(subcommand)]
    User(UserCmd),
    #[command(subcommand)]
    Node(NodeCmd),
    #[command(subcommand)]
    Webhook(WebhookCmd),
    #[command(subcommand)]
    Notifications(NotificationsCmd),
    #[command(subcommand)]
    Scan(ScanCmd),
    /// The event history as a timeline, filtered; from the API, or straight from an event log.
    Audit {
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        endpoint: Option<String>,
        /// Who made the changes (user name, `admin`, `endpoint:<name>`, a node id ...).
        #[arg(long)]
        actor: Option<String>,
        /// From this time on (`2026-11-23`, `2026-11-23T16:40:00Z`, or milliseconds).
        #[arg(long)]
        since: Option<String>,
        /// Before this time.
        #[arg(long)]
        until: Option<String>,
        /// How many entries (1 or more): as text, the most recent (default 1000); with --after,
        /// the first after it (default 1000); with --format jsonl, the oldest (default: all).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Entries after this log position (the `#` of an entry), oldest first: the next page.
        #[arg(long)]
        after: Option<u64>,
        /// Entries before this log position: without --after, the most recent before it (the
        /// page before one that starts there).
        #[arg(long)]
        before: Option<u64>,
        /// `text`, one line per entry, or `jsonl`: one JSON object per line, printed as the log
        /// is read (the first at once, however long the history).
        #[arg(long, default_value = "text", value_parser = ["text", "jsonl"])]
        format: String,
        /// Read this event log directly instead of asking a node: a `nats://` URL (with
        /// `user:password@` when the servers ask for a login: ISM_EVENT_LOG keeps it out of `ps`),
        /// or the embedded log's directory (`<data-dir>/events`, only while no node has it open).
        #[arg(long, env = "ISM_EVENT_LOG", hide_env_values = true)]
        event_log: Option<String>,
    },
    #[command(subcommand)]
    Projections(ProjectionsCmd),
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
    /// List deleted gateways (their names stay visible).
    Deleted,
    /// Show one gateway (with the address endpoints connect to).
    Show { id: String },
    /// Delete a gateway (its endpoints must be deleted first).
    Delete { id: String },
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
    /// Change the name and/or description.
    Edit {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// The version the change is based on (default: the current one, read first).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Delete an endpoint: its tunnel closes and its key stops working.
    Delete { id: String },
    /// Print the endpoint key ("Copy Endpoint Key").
    Key { id: String },
    /// Replace the key; the old one stops working.
    RotateKey { id: String },
    /// Release the key's binding to its machine: the next machine that presents the key binds
    /// it. The bound machine's session ends (stop its agent first, or it binds the key again).
    Unbind { id: String },
    /// Manage access: scan access on/off, support-engineer access off, 1-30 days, or indefinite;
    /// how many scans the endpoint runs at once.
    Access {
        id: String,
        /// `on` or `off`.
        #[arg(long)]
        scan: Option<String>,
        /// `off`, `indefinite`, or a number of days (1 to 30).
        #[arg(long)]
        support: Option<String>,
        /// Scans of the built-in engine run at once (1 to 1000), or `default` (the gateway's
        /// --scan-capacity); more wait in the endpoint's queue.
        #[arg(long)]
        scan_capacity: Option<String>,
    },
}

#[derive(Subcommand)]
enum CredentialCmd {
    /// Issue a scanner credential (the SOCKS5 password) for a gateway; shown once.
    Issue {
        #[arg(long)]
        gateway: String,
        #[arg(long, default_value = "")]
        label: String,
        /// `scan` (needs the endpoint's scan access) or `support` (needs support-engineer access).
        #[arg(long, default_value = "scan")]
        kind: String,
    },
    /// Revoke a scanner credential; streams using it stop.
    Revoke {
        #[arg(long)]
        gateway: String,
        credential: String,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user: administrator, security-lead or reviewer (read-only).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        /// Where notifications go (Security Leads get them unless they opt out).
        #[arg(long)]
        email: Option<String>,
    },
    /// List users.
    List,
    /// Change a user's role.
    Role { name: String, role: String },
    /// Change a user's email address (`--email ""` removes it) or notification choice.
    Edit {
        name: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// `on` or `off` (by default Security Leads get notifications, Administrators do not).
        #[arg(long, value_parser = parse_on_off)]
        notifications: Option<bool>,
    },
    /// Issue an API token for a user; shown once.
    Token {
        name: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke one of a user's API tokens.
    RevokeToken {
        name: String,
        /// The token's id (not the token itself): `ism user list --json` shows them.
        #[arg(value_name = "TOKEN_ID")]
        token_id: String,
    },
}

/// The gateway nodes of a cluster.
#[derive(Subcommand)]
enum NodeCmd {
    /// Each node, its state (serving, draining, lost), the endpoints and streams it holds.
    List,
    /// Drain a node: it takes no new endpoints and hands its endpoints to the other nodes,
    /// make before break, before it is stopped.
    Drain { node: String },
}

/// Webhooks: notifications as signed JSON POSTs.
#[derive(Subcommand)]
enum WebhookCmd {
    /// Subscribe a URL; the signing secret is shown once (generated unless given).
    Add {
        #[arg(long)]
        url: String,
        #[arg(long, env = "ISM_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Notification kinds, comma-separated (endpoint-offline, endpoint-online,
        /// endpoint-unstable, gateway-offline, gateway-online, retention-warning,
        /// gateway-retired); all without it.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    List,
    Remove {
        id: String,
    },
}

/// Scans of the built-in engine: a bounded crawl with passive checks, through an endpoint.
#[derive(Subcommand)]
enum ScanCmd {
    /// Queue a scan; it starts when the endpoint has a free slot of its scan capacity.
    Start {
        /// The endpoint to scan through, by name or id.
        #[arg(long, required_unless_present = "again")]
        endpoint: Option<String>,
        /// A URL the crawl starts from (repeatable); it stays within the targets' origins.
        #[arg(long = "target", required_unless_present = "again")]
        targets: Vec<String>,
        /// Most pages fetched (default 100).
        #[arg(long)]
        max_pages: Option<u32>,
        /// Deepest link depth followed (default 5).
        #[arg(long)]
        max_depth: Option<u32>,
        /// Most requests a second (default 10).
        #[arg(long)]
        rate: Option<u32>,
        /// Queue this earlier scan again, with its endpoint and settings.
        #[arg(long, conflicts_with_all = ["endpoint", "targets", "max_pages", "max_depth", "rate"])]
        again: Option<String>,
    },
    /// Scans in the order queued, each waiting one with its place in the queue.
    List {
        #[arg(long)]
        endpoint: Option<String>,
        /// queued, running, finished, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
    },
    /// A scan and its findings.
    Show { id: String },
    /// Cancel a queued or running scan.
    Cancel { id: String },
    /// The scan's report, as JSON (ism-scan-report/1) or SARIF 2.1.0.
    Report {
        id: String,
        #[arg(long, default_value = "json", value_parser = ["json", "sarif"])]
        format: String,
        /// Write it to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum NotificationsCmd {
    /// The notifications sent, suppressed or being sent, newest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum ProjectionsCmd {
    /// Rebuild every projection from the event log and report whether it matches the live one.
    Verify,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "enabled" => Ok(true),
        "off" | "false" | "disabled" => Ok(false),
        _ => Err(format!("on or off, not {s:?}")),
    }
}

fn parse_scan(s: &str) -> anyhow::Result<bool> {
    parse_on_off(s).map_err(|e| anyhow::anyhow!("--scan takes {e}"))
}

/// A number, or a word (`off`, `indefinite`, `default`) as it is.
fn number_or_word(s: &str) -> Value {
    match s.parse::<u64>() {
        Ok(days) => json!(days),
        Err(_) => json!(s),
    }
}

async fn fetch(socks: &str, endpoint: &str, secret: &str, url: &str) -> anyhow::Result<Value> {
    let rest = url.strip_prefix("http://").context(
        "only http:// URLs can be fetched (https needs a TLS client: use curl --socks5-hostname)",
    )?;
    let (authority, path) =
        rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse::<u16>().context("bad port in URL")?),
        None => (authority.to_string(), 80),
    };
    let stream = scanner::connect(socks, endpoint, secret, &host, port).await?;
    let resp = scanner::http_get(stream, authority, &path, Duration::from_secs(30)).await?;
    Ok(json!({ "status_line": resp.status_line, "headers": resp.headers, "body": resp.body }))
}

/// A client of the node `--api` names, with the caller's token.
fn api_client(cli: &Cli) -> anyhow::Result<ApiClient> {
    let Some(token) = cli.token.as_deref() else {
        bail!("an API token is required: pass --token or set ISM_API_TOKEN (a node keeps its administrator token in <data-dir>/admin-token)");
    };
    Ok(ApiClient::new(&cli.api, token))
}

/// The audit's filters and page as typed.
fn audit_query(command: &Command) -> output::AuditQuery<'_> {
    let Command::Audit { gateway, endpoint, actor, since, until, limit, after, before, .. } =
        command
    else {
        unreachable!("asked of the audit command only")
    };
    output::AuditQuery {
        gateway: gateway.as_deref(),
        endpoint: endpoint.as_deref(),
        actor: actor.clone(),
        since: since.as_deref(),
        until: until.as_deref(),
        page: ism_projectors::audit::Page {
            after: after.unwrap_or(0),
            before: *before,
            limit: limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
        },
    }
}

/// The audit's filters and page as API query parameters (without the limit).
fn audit_params(command: &Command) -> Vec<(&'static str, String)> {
    let Command::Audit { gateway, endpoint, actor, since, until, after, before, .. } = command
    else {
        unreachable!("asked of the audit command only")
    };
    let mut q = Vec::new();
    for (k, v) in [
        ("gateway", gateway),
        ("endpoint", endpoint),
        ("actor", actor),
        ("since", since),
        ("until", until),
    ] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    if let Some(a) = after {
        q.push(("after", a.to_string()));
    }
    if let Some(b) = before {
        q.push(("before", b.to_string()));
    }
    q
}

/// `ism audit --format jsonl`: each entry printed as it is read, from the log itself or
/// streamed by the node. A reader that went away ends it quietly.
async fn stream_audit(cli: &Cli) -> anyhow::Result<()> {
    let Command::Audit { limit, event_log, .. } = &cli.command else {
        unreachable!("asked of the audit command only")
    };
    // Written through a buffer; a reader still sees each line soon, since the buffer is small.
    let mut out = std::io::BufWriter::with_capacity(8 * 1024, std::io::stdout().lock());
    let mut print = |line: &[u8]| -> std::io::Result<()> {
        out.write_all(line)?;
        out.write_all(b"\n")
    };
    let written = match event_log {
        Some(spec) => {
            let entries = output::offline_audit(spec, audit_query(&cli.command)).await?;
            let mut entries = std::pin::pin!(entries);
            let mut written = Ok(());
            while let Some(entry) = futures_util::StreamExt::next(&mut entries).await {
                written = print(serde_json::to_string(&entry?)?.as_bytes());
                if written.is_err() {
                    break;
                }
            }
            written
        }
        None => {
            let mut q = audit_params(&cli.command);
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            api_client(cli)?.audit_stream(&q, |line| print(line)).await?
        }
    };
    let written = written.and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other.context("writing to standard output")?),
    }
}

/// What a command has to say, and whether it failed even so.
struct Said {
    text: String,
    failure: Option<&'static str>,
}

async fn run(cli: Cli) -> anyhow::Result<Said> {
    if matches!(&cli.command, Command::Audit { format, .. } if format == "jsonl") {
        stream_audit(&cli).await?;
        return Ok(Said { text: String::new(), failure: None });
    }
    let (value, render) = answer(&cli).await?;
    let failure = match &cli.command {
        // A projection that differs is a failure, whichever way the report is printed.
        Command::Projections(ProjectionsCmd::Verify) if value["all_match"] != true => {
            Some("a projection differs from the replay of the log")
        }
        _ => None,
    };
    let text = if cli.json { output::json(&value) } else { render(&value) };
    Ok(Said { text, failure })
}

/// The command's JSON, and how to show it as text.
async fn answer(cli: &Cli) -> anyhow::Result<(Value, output::Render)> {
    match &cli.command {
        Command::Fetch { socks, endpoint, secret, url } => {
            return Ok((fetch(socks, endpoint, secret, url).await?, output::fetched))
        }
        Command::Audit { limit, after, event_log: Some(spec), .. } => {
            // A page is the first entries after a position; otherwise the most recent ones.
            let mut query = audit_query(&cli.command);
            let keep = limit.map_or(1000, |l| usize::try_from(l).unwrap_or(usize::MAX));
            query.page.limit = after.is_some().then_some(keep);
            let entries = output::offline_audit(spec, query).await?;
            let entries = output::last_entries(entries, keep).await?;
            return Ok((json!({ "entries": entries }), output::audit));
        }
        _ => {}
    }
    let api = api_client(cli)?;
    Ok(match &cli.command {
        Command::Status => (api.status().await?, output::status),
        Command::Whoami => (api.me().await?, output::whoami),
        Command::Gateway(GatewayCmd::Create { name, description }) => {
            (api.create_gateway(name, description).await?, output::gateway)
        }
        Command::Gateway(GatewayCmd::List) => (api.gateways().await?, output::gateways),
        Command::Gateway(GatewayCmd::Deleted) => (api.deleted_gateways().await?, output::deleted),
        Command::Gateway(GatewayCmd::Show { id }) => (api.gateway(id).await?, output::gateway),
        Command::Gateway(GatewayCmd::Delete { id }) => {
            (api.delete_gateway(id).await?, output::gateway)
        }
        Command::Endpoint(EndpointCmd::Add { gateway, name, description, platform }) => {
            (api.add_endpoint(gateway, name, description, platform).await?, output::endpoint_added)
        }
        Command::Endpoint(EndpointCmd::List { gateway }) => {
            (api.endpoints(gateway).await?, output::endpoints)
        }
        Command::Endpoint(EndpointCmd::Show { id }) => (api.endpoint(id).await?, output::endpoint),
        Command::Endpoint(EndpointCmd::Edit { id, name, description, version }) => {
            let version = match version {
                Some(v) => *v,
                None => api.endpoint(id).await?["version"]
                    .as_u64()
                    .context("the endpoint has no version")?,
            };
            let edited =
                api.edit_endpoint(id, name.as_deref(), description.as_deref(), version).await?;
            (edited, output::endpoint)
        }
        Command::Endpoint(EndpointCmd::Delete { id }) => {
            (api.delete_endpoint(id).await?, output::endpoint_deleted)
        }
        Command::Endpoint(EndpointCmd::Key { id }) => {
            (json!({ "endpoint": id, "key": api.endpoint_key(id).await? }), output::key)
        }
        Command::Endpoint(EndpointCmd::RotateKey { id }) => {
            (api.rotate_key(id).await?, output::rotated_key)
        }
        Command::Endpoint(EndpointCmd::Unbind { id }) => {
            (api.unbind_endpoint(id).await?, output::unbound)
        }
        Command::Endpoint(EndpointCmd::Access { id, scan, support, scan_capacity }) => {
            if scan.is_none() && support.is_none() && scan_capacity.is_none() {
                bail!("say what to change: --scan on|off, --support off|indefinite|<days>, --scan-capacity <n>|default");
            }
            let scan = scan.as_deref().map(parse_scan).transpose()?;
            let mut changed = Value::Null;
            if scan.is_some() || support.is_some() {
                changed = api.set_access(id, scan, support.as_deref().map(number_or_word)).await?;
            }
            if let Some(c) = scan_capacity {
                changed = api.set_scan_capacity(id, number_or_word(c)).await?;
            }
            (changed, output::endpoint)
        }
        Command::Credential(CredentialCmd::Issue { gateway, label, kind }) => {
            (api.issue_credential(gateway, label, kind).await?, output::credential)
        }
        Command::Credential(CredentialCmd::Revoke { gateway, credential }) => {
            (api.revoke_credential(gateway, credential).await?, output::gateway)
        }
        Command::User(UserCmd::Create { name, role, email }) => {
            (api.create_user(name, role, email.as_deref()).await?, output::user)
        }
        Command::User(UserCmd::Edit { name, role, email, notifications }) => {
            let mut change = serde_json::Map::new();
            if let Some(r) = role {
                change.insert("role".into(), json!(r));
            }
            if let Some(e) = email {
                change.insert("email".into(), json!(e));
            }
            if let Some(n) = notifications {
                change.insert("notifications".into(), json!(n));
            }
            if change.is_empty() {
                bail!("say what to change: --role, --email or --notifications on|off");
            }
            (api.edit_user(name, &Value::Object(change)).await?, output::user)
        }
        Command::Webhook(WebhookCmd::Add { url, secret, events }) => {
            (api.add_webhook(url, secret.as_deref(), events).await?, output::webhook_added)
        }
        Command::Webhook(WebhookCmd::List) => (api.webhooks().await?, output::webhooks),
        Command::Webhook(WebhookCmd::Remove { id }) => {
            (api.remove_webhook(id).await?, output::webhook_removed)
        }
        Command::Notifications(NotificationsCmd::List { limit }) => {
            (api.notifications(*limit).await?, output::notifications)
        }
        Command::Scan(ScanCmd::Start { endpoint, targets, max_pages, max_depth, rate, again }) => {
            let body = match again {
                Some(id) => json!({ "again": id }),
                None => json!({
                    "endpoint": endpoint,
                    "targets": targets,
                    "max_pages": max_pages,
                    "max_depth": max_depth,
                    "rate": rate,
                }),
            };
            (api.start_scan(&body).await?, output::scan)
        }
        Command::Scan(ScanCmd::List { endpoint, state }) => {
            (api.scans(endpoint.as_deref(), state.as_deref()).await?, output::scans)
        }
        Command::Scan(ScanCmd::Show { id }) => (api.scan(id).await?, output::scan),
        Command::Scan(ScanCmd::Cancel { id }) => (api.cancel_scan(id).await?, output::scan),
        Command::Scan(ScanCmd::Report { id, format, output: file }) => {
            let report = api.scan_report(id, format).await?;
            match file {
                Some(path) => {
                    std::fs::write(path, serde_json::to_vec_pretty(&report)?)
                        .with_context(|| format!("writing {}", path.display()))?;
                    let said = json!({ "written": path.display().to_string(), "format": format });
                    (said, output::report_written)
                }
                None => (report, output::json),
            }
        }
        Command::User(UserCmd::List) => (api.users().await?, output::users),
        Command::Node(NodeCmd::List) => (api.nodes().await?, output::nodes),
        Command::Node(NodeCmd::Drain { node }) => (api.drain_node(node).await?, output::drained),
        Command::User(UserCmd::Role { name, role }) => {
            (api.change_role(name, role).await?, output::user)
        }
        Command::User(UserCmd::Token { name, label }) => {
            (api.issue_token(name, label).await?, output::api_token)
        }
        Command::User(UserCmd::RevokeToken { name, token_id }) => {
            (api.revoke_token(name, token_id).await?, output::user)
        }
        Command::Audit { limit, event_log: None, .. } => {
            let mut q = audit_params(&cli.command);
            q.push(("limit", limit.unwrap_or(1000).to_string()));
            (api.audit(&q).await?, output::audit)
        }
        Command::Projections(ProjectionsCmd::Verify) => {
            (api.verify_projections().await?, output::verify)
        }
        Command::Fetch { .. } | Command::Audit { .. } => unreachable!("answered above"),
    })
}

/// Writes what a command said. A reader that went away (`ism ... | head`) is not an error: it
/// has all it wanted.
fn write_out(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let said = actix_rt::System::new().block_on(run(cli)).and_then(|said| {
        write_out(&said.text).context("writing to standard output")?;
        Ok(said)
    });
    match said {
        Ok(Said { failure: None, .. }) => std::process::ExitCode::SUCCESS,
        Ok(Said { failure: Some(why), .. }) => {
            eprintln!("error: {why}");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
