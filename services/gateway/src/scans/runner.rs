//! One scan on this node: the engine run through the endpoint's tunnel, its progress recorded
//! at most every few seconds (with the findings new since), its end recorded once.
//!
//! A scan stopped by its token (cancelled by a user, scan access turned off, this node
//! stopping) records nothing more: whoever stopped it recorded why.

use super::tunnel_connector::TunnelConnector;
use crate::scanner_auth::AuthorisedScanner;
use crate::state::NodeState;
use ism_actors::scan::ScanCommand;
use ism_actors::CommandError;
use ism_events::{Cause, ScanFinding};
use ism_projectors::directory::ScanView;
use ism_projectors::{EndpointStatus, EndpointView};
use ism_scan_engine::{End, Finding, ScanPlan, Update};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest time between two recorded progresses of a running scan.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Most findings one scan records: a scan's row and report stay bounded whatever the targets
/// hold (the rest are counted in the log line of its end).
pub const MAX_FINDINGS: usize = 1000;

/// Most findings in one event: an event stays far below NATS' 1 MiB message limit (a finding is
/// at most about 2.5 KiB: its URL is cut at `MAX_URL`, its evidence at 200 characters).
pub const FINDINGS_PER_EVENT: usize = 250;

/// Longest URL a finding records.
const MAX_URL: usize = 2048;

/// What the engine reported since the last recorded progress.
#[derive(Default)]
struct Progress {
    pages: u32,
    requests: u32,
    new_findings: Vec<ScanFinding>,
    /// Findings taken, and those beyond [`MAX_FINDINGS`].
    taken: usize,
    dropped: usize,
    changed: bool,
}

impl Progress {
    fn update(&mut self, update: Update) {
        match update {
            // A redirect is a request, not a page (as the engine counts).
            Update::Fetched { status, .. } => {
                self.pages += u32::from(!(300..400).contains(&status));
                self.requests += 1;
            }
            Update::Unreachable { .. } => self.requests += 1,
            Update::Found(_) if self.taken >= MAX_FINDINGS => self.dropped += 1,
            Update::Found(f) => {
                self.taken += 1;
                self.new_findings.push(recorded(&f));
            }
        }
        self.changed = true;
    }

    /// The next findings to record in one event, at most [`FINDINGS_PER_EVENT`].
    fn batch(&mut self) -> Vec<ScanFinding> {
        let n = self.new_findings.len().min(FINDINGS_PER_EVENT);
        self.changed = n < self.new_findings.len();
        self.new_findings.drain(..n).collect()
    }
}

/// How often a running scan looks whether its endpoint is still connected to a node.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Why the scan cannot go on, if its endpoint went offline (no node holds its session): the
/// requests in flight would fail one by one, and the scan must say why it ended.
fn endpoint_gone(state: &NodeState, scan: &ScanView) -> Option<String> {
    match state.directory.endpoint(scan.endpoint) {
        Ok(Some(e)) if e.status == EndpointStatus::Offline => {
            Some(format!("endpoint {:?} went offline", e.name))
        }
        // A deleted endpoint's scans are cancelled (`access_withdrawn`).
        Ok(_) | Err(_) => None,
    }
}

/// Why the scan may no longer run, if its endpoint's scan access was turned off or it was
/// deleted: the scan is then cancelled (starting it again would not help).
pub fn access_withdrawn(endpoint: Option<&EndpointView>) -> Option<String> {
    match endpoint {
        Some(e) if !e.scan_access => {
            Some(format!("scan access to endpoint {:?} was turned off", e.name))
        }
        Some(_) => None,
        None => Some("its endpoint was deleted".into()),
    }
}

/// Findings still to record, as batches of at most [`FINDINGS_PER_EVENT`] for progress events,
/// and the last batch that goes with the end when `finishing` (the end of a failed or cancelled
/// scan carries none).
fn in_events(
    mut findings: Vec<ScanFinding>,
    finishing: bool,
) -> (Vec<Vec<ScanFinding>>, Vec<ScanFinding>) {
    let keep = match finishing {
        true => findings.len().saturating_sub(1) / FINDINGS_PER_EVENT * FINDINGS_PER_EVENT,
        false => findings.len(),
    };
    let last = findings.split_off(keep);
    (findings.chunks(FINDINGS_PER_EVENT).map(<[_]>::to_vec).collect(), last)
}

/// A finding as the log records it.
pub fn recorded(f: &Finding) -> ScanFinding {
    ScanFinding {
        rule: f.rule.clone(),
        severity: f.severity.as_str().to_string(),
        url: f.url.chars().take(MAX_URL).collect(),
        evidence: f.evidence.clone(),
    }
}

/// Runs `scan` (started on this node) until it ends or `stop` is cancelled.
pub async fn run(state: Arc<NodeState>, scan: ScanView, stop: CancellationToken) {
    let id = scan.id;
    let cause = super::node_cause(&state);
    let mut last = None;
    for command in drive(&state, &scan, &stop, &cause).await {
        match record(&state, id, command, &cause).await {
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

/// Records `command`, trying again while the log fails (a few times, a second apart): the end
/// of a scan that is not recorded leaves it to be taken for one this node lost.
async fn record(
    state: &NodeState,
    id: uuid::Uuid,
    command: ScanCommand,
    cause: &Cause,
) -> Result<ism_actors::Executed, CommandError<ism_actors::scan::ScanError>> {
    let mut attempts = 1;
    loop {
        match state.scans.execute(id, command.clone(), cause.clone()).await {
            Err(
                CommandError::Log(_) | CommandError::Contended(_) | CommandError::Unavailable(_),
            ) if attempts < RECORD_ATTEMPTS => {
                attempts += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// Attempts to record a scan's end.
const RECORD_ATTEMPTS: u32 = 5;

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
        Ok(None) => {
            let reason = access_withdrawn(None).unwrap_or_default();
            return vec![super::cancel_by_node(state, reason)];
        }
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
    let scanner = AuthorisedScanner { credential_id: scan.id, endpoint };
    // The engine stops on `engine_stop`; the scan's own token stops it too.
    let engine_stop = stop.child_token();
    let connector = TunnelConnector {
        state: state.clone(),
        scanner: Arc::new(scanner),
        stop: engine_stop.clone(),
    };
    let progress = Arc::new(Mutex::new(Progress::default()));
    let mut on_update = {
        let progress = progress.clone();
        move |u: Update| progress.lock().unwrap_or_else(|p| p.into_inner()).update(u)
    };
    let engine = ism_scan_engine::run(&plan, &connector, &engine_stop, &mut on_update);
    tokio::pin!(engine);
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    // A slow append delays the next progress rather than bunching the ones missed.
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                let (pages, requests, findings) = {
                    let mut p = progress.lock().unwrap_or_else(|p| p.into_inner());
                    if !p.changed {
                        continue;
                    }
                    (p.pages, p.requests, p.batch())
                };
                let command = ScanCommand::Progress { pages, requests, findings: findings.clone() };
                match state.scans.execute(scan.id, command, cause.clone()).await {
                    Ok(_) => {}
                    // Ended meanwhile (cancelled through another node): the engine stops.
                    Err(CommandError::Rejected(e)) => {
                        tracing::info!(scan = %scan.id, error = %e, "stopping a scan that can no longer progress");
                        stop.cancel();
                    }
                    // The log failed: the batch is recorded with the next progress.
                    Err(e) => {
                        tracing::warn!(scan = %scan.id, error = %e, "could not record a scan's progress; retrying with the next");
                        let mut p = progress.lock().unwrap_or_else(|p| p.into_inner());
                        p.new_findings.splice(0..0, findings);
                        p.changed = true;
                    }
                }
            }
        }
    };
    let (rest, dropped): (Vec<ScanFinding>, usize) = {
        let mut p = progress.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut p.new_findings), p.dropped)
    };
    if dropped > 0 {
        tracing::warn!(scan = %scan.id, dropped, "the scan found more than {MAX_FINDINGS} problems; the rest are not recorded");
    }
    let (pages, requests) = (outcome.pages, outcome.requests);
    let (batches, last) = in_events(rest, matches!(outcome.end, End::Finished));
    let mut commands: Vec<ScanCommand> = batches
        .into_iter()
        .map(|findings| ScanCommand::Progress { pages, requests, findings })
        .collect();
    // Scan access turned off stops the scan's streams before the request that turned it off has
    // cancelled the scan: the engine then ends (its requests failed), and the scan is cancelled.
    if !matches!(outcome.end, End::Cancelled) {
        let endpoint = state.directory.endpoint(scan.endpoint).ok().flatten();
        if let Some(why) = access_withdrawn(endpoint.as_ref()) {
            commands.push(super::cancel_by_node(state, why));
            return commands;
        }
    }
    let end = match (gone, outcome.end) {
        (Some(why), End::Cancelled) if !stop.is_cancelled() => End::Failed(why),
        (_, end) => end,
    };
    match end {
        End::Finished => commands.push(ScanCommand::Finish { pages, requests, findings: last }),
        // What it found before it failed stays in its report.
        End::Failed(why) => {
            commands.push(ScanCommand::Fail { reason: super::failure(&why, scan.id) })
        }
        End::Cancelled => commands.clear(),
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_scan_engine::Severity;

    fn found(n: usize) -> Update {
        let url = format!("http://intranet/{n}/{}", "x".repeat(5000));
        Update::Found(Finding {
            rule: "verbose-error".into(),
            severity: Severity::Medium,
            url,
            evidence: "Traceback".into(),
        })
    }

    #[test]
    fn findings_are_bounded_per_scan_and_per_event() {
        let mut p = Progress::default();
        for n in 0..MAX_FINDINGS + 7 {
            p.update(found(n));
        }
        p.update(Update::Fetched { url: "u".into(), status: 302 });
        p.update(Update::Fetched { url: "u".into(), status: 200 });
        assert_eq!((p.taken, p.dropped, p.pages, p.requests), (MAX_FINDINGS, 7, 1, 2));
        assert!(p.new_findings.iter().all(|f| f.url.len() == MAX_URL), "URLs cut");
        let first = p.batch();
        assert_eq!((first.len(), p.changed), (FINDINGS_PER_EVENT, true));
        assert!(first[0].url.starts_with("http://intranet/0/"), "oldest first");

        let sized = |n: usize| {
            vec![
                recorded(&Finding {
                    rule: "r".into(),
                    severity: Severity::Low,
                    url: "u".into(),
                    evidence: String::new()
                });
                n
            ]
        };
        let shape = |(batches, last): (Vec<Vec<ScanFinding>>, Vec<ScanFinding>)| {
            (batches.iter().map(Vec::len).collect::<Vec<_>>(), last.len())
        };
        assert_eq!(shape(in_events(sized(0), true)), (vec![], 0));
        assert_eq!(shape(in_events(sized(250), true)), (vec![], 250));
        assert_eq!(shape(in_events(sized(251), true)), (vec![250], 1));
        assert_eq!(shape(in_events(sized(600), false)), (vec![250, 250, 100], 0));
    }
}
