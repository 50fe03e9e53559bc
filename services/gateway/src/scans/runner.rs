//! One scan on this node: the engine run through the endpoint's tunnel, its progress recorded
//! at most every few seconds (with the findings new since), its end recorded once.
//!
//! A scan stopped by its token (cancelled by a user, scan access turned off, this node
//! stopping) records nothing more: whoever stopped it recorded why.

use super::tunnel_connector::TunnelConnector;
use crate::access::scan_credential;
use crate::scanner_auth::AuthorisedScanner;
use crate::state::NodeState;
use ism_actors::scan::ScanCommand;
use ism_actors::CommandError;
use ism_events::{Cause, Principal, ScanFinding};
use ism_projectors::directory::ScanView;
use ism_projectors::EndpointStatus;
use ism_scan_engine::{End, Finding, ScanPlan, Update};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest time between two recorded progresses of a running scan.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What the engine reported since the last recorded progress.
#[derive(Default)]
struct Progress {
    pages: u32,
    requests: u32,
    new_findings: Vec<ScanFinding>,
    changed: bool,
}

impl Progress {
    fn update(&mut self, update: Update) {
        match update {
            Update::Fetched { .. } => {
                (self.pages, self.requests) = (self.pages + 1, self.requests + 1)
            }
            Update::Unreachable { .. } => self.requests += 1,
            Update::Found(f) => self.new_findings.push(recorded(&f)),
        }
        self.changed = true;
    }
}

/// How often a running scan looks whether its endpoint is still connected to a node.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Why the scan cannot go on, if its endpoint went offline (no node holds its session) or was
/// deleted: the requests in flight would fail one by one, and the scan must say why it ended.
fn endpoint_gone(state: &NodeState, scan: &ScanView) -> Option<String> {
    match state.directory.endpoint(scan.endpoint) {
        Ok(Some(e)) if e.status == EndpointStatus::Offline => {
            Some(format!("endpoint {:?} went offline", e.name))
        }
        Ok(None) => Some("its endpoint was deleted".into()),
        Ok(Some(_)) | Err(_) => None,
    }
}

/// Why the scan may no longer run, if its endpoint's scan access was turned off.
fn access_withdrawn(state: &NodeState, scan: &ScanView) -> Option<String> {
    match state.directory.endpoint(scan.endpoint) {
        Ok(Some(e)) if !e.scan_access => {
            Some(format!("scan access to endpoint {:?} was turned off", e.name))
        }
        _ => None,
    }
}

/// A finding as the log records it.
pub fn recorded(f: &Finding) -> ScanFinding {
    ScanFinding {
        rule: f.rule.clone(),
        severity: f.severity.as_str().to_string(),
        url: f.url.clone(),
        evidence: f.evidence.clone(),
    }
}

/// Runs `scan` (started on this node) until it ends or `stop` is cancelled.
pub async fn run(state: Arc<NodeState>, scan: ScanView, stop: CancellationToken) {
    let id = scan.id;
    let cause = Cause::by(Principal::node(state.node_id.clone()));
    let mut last = None;
    for command in drive(&state, &scan, &stop, &cause).await {
        match state.scans.execute(id, command, cause.clone()).await {
            Ok(done) => last = done.position().or(last),
            // It ended meanwhile (cancelled through the API, failed by a stopping node).
            Err(CommandError::Rejected(e)) => {
                tracing::debug!(scan = %id, error = %e, "the scan had already ended")
            }
            Err(e) => tracing::warn!(scan = %id, error = %e, "could not record the end of a scan"),
        }
    }
    // Until the directory shows the end, the scheduler must not take the scan for one this
    // node lost.
    let _ = state.caught_up(last).await;
    state.running_scans.end(id);
    tracing::info!(scan = %id, "scan ended");
}

/// Runs the engine; the commands that record how the scan ended, if that is this runner's to
/// record.
async fn drive(
    state: &Arc<NodeState>,
    scan: &ScanView,
    stop: &CancellationToken,
    cause: &Cause,
) -> Vec<ScanCommand> {
    let fail = |reason: String| vec![ScanCommand::Fail { reason }];
    let endpoint = match state.directory.endpoint(scan.endpoint) {
        Ok(Some(e)) => e,
        Ok(None) => return fail("its endpoint was deleted".into()),
        Err(e) => return fail(format!("the directory could not be read: {e}")),
    };
    let targets = scan.settings.targets.iter().map(|t| url::Url::parse(t));
    let targets = match targets.collect::<Result<Vec<_>, _>>() {
        Ok(t) => t,
        Err(e) => return fail(format!("a target is not a URL: {e}")),
    };
    let plan = ScanPlan {
        targets,
        max_pages: scan.settings.max_pages,
        max_depth: scan.settings.max_depth,
        rate_per_second: f64::from(scan.settings.rate),
    };
    if let Err(e) = plan.validate() {
        return fail(e.to_string());
    }
    let scanner =
        AuthorisedScanner { credential_id: scan.id, credential: scan_credential(scan), endpoint };
    let connector = TunnelConnector { state: state.clone(), scanner: Arc::new(scanner) };
    let progress = Arc::new(Mutex::new(Progress::default()));
    let mut on_update = {
        let progress = progress.clone();
        move |u: Update| progress.lock().unwrap_or_else(|p| p.into_inner()).update(u)
    };
    // The engine stops on `engine_stop`; the scan's own token stops it too.
    let engine_stop = stop.child_token();
    let engine = ism_scan_engine::run(&plan, &connector, &engine_stop, &mut on_update);
    tokio::pin!(engine);
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    every.tick().await;
    let mut look = tokio::time::interval(LOOK_EVERY);
    let mut gone = None;
    let outcome = loop {
        tokio::select! {
            outcome = &mut engine => break outcome,
            _ = look.tick(), if gone.is_none() => {
                gone = endpoint_gone(state, scan);
                if gone.is_some() {
                    engine_stop.cancel();
                }
            }
            _ = every.tick() => {
                let command = {
                    let mut p = progress.lock().unwrap_or_else(|p| p.into_inner());
                    if !std::mem::take(&mut p.changed) {
                        continue;
                    }
                    ScanCommand::Progress {
                        pages: p.pages,
                        requests: p.requests,
                        findings: std::mem::take(&mut p.new_findings),
                    }
                };
                if let Err(e) = state.scans.execute(scan.id, command, cause.clone()).await {
                    // Ended meanwhile (cancelled through another node): the engine stops.
                    tracing::info!(scan = %scan.id, error = %e, "stopping a scan that can no longer progress");
                    stop.cancel();
                }
            }
        }
    };
    let rest = std::mem::take(&mut progress.lock().unwrap_or_else(|p| p.into_inner()).new_findings);
    let (pages, requests) = (outcome.pages, outcome.requests);
    // Scan access turned off stops the scan's streams before the request that turned it off has
    // cancelled the scan: the engine then ends (its requests failed), and the scan is cancelled.
    if !matches!(outcome.end, End::Cancelled) {
        if let Some(why) = access_withdrawn(state, scan) {
            let by = Principal::node(state.node_id.clone()).to_string();
            return vec![
                ScanCommand::Progress { pages, requests, findings: rest },
                ScanCommand::Cancel { by, reason: why },
            ];
        }
    }
    let end = match (gone, outcome.end) {
        (Some(why), End::Cancelled) if !stop.is_cancelled() => End::Failed(why),
        (_, end) => end,
    };
    match end {
        End::Finished => vec![ScanCommand::Finish { pages, requests, findings: rest }],
        // What it found before it failed stays in its report.
        End::Failed(why) => vec![
            ScanCommand::Progress { pages, requests, findings: rest },
            ScanCommand::Fail { reason: super::failure(&why, scan.id) },
        ],
        End::Cancelled => Vec::new(),
    }
}
