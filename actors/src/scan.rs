//! The scan aggregate: one run of the built-in engine against an endpoint's internal targets.
//!
//! A scan is queued, started by one node (the append with the expected version makes the start
//! happen once however many nodes try), makes progress, and ends exactly once: finished, failed
//! (its endpoint or node went away: it must be started again) or cancelled. Which scan starts
//! when (the endpoint's capacity and its first-in-first-out queue) is the scheduler's decision,
//! made on the directory's view of every scan of the endpoint; this aggregate only guards each
//! scan's own life.

use crate::aggregate::Aggregate;
use ism_events::{AggregateKind, ScanEvent, ScanFinding, ScanSettings};
use uuid::Uuid;

/// Most targets one scan starts from.
pub const MAX_TARGETS: usize = 20;
/// Most pages one scan may be asked to fetch.
pub const MAX_PAGES: u32 = 10_000;
/// Deepest link depth one scan may be asked to follow.
pub const MAX_DEPTH: u32 = 50;
/// Most requests a second one scan may be asked to send.
pub const MAX_RATE: u32 = 100;
/// Longest target URL accepted.
const MAX_URL: usize = 2048;

/// Where a scan is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ScanState {
    /// Not queued yet: the scan does not exist.
    #[default]
    New,
    Queued,
    Running {
        node: String,
    },
    Finished,
    Failed,
    Cancelled,
}

impl ScanState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ScanState::New => "new",
            ScanState::Queued => "queued",
            ScanState::Running { .. } => "running",
            ScanState::Finished => "finished",
            ScanState::Failed => "failed",
            ScanState::Cancelled => "cancelled",
        }
    }

    fn ended(&self) -> bool {
        matches!(self, ScanState::Finished | ScanState::Failed | ScanState::Cancelled)
    }
}

#[derive(Debug, Default)]
pub struct Scan {
    pub id: Uuid,
    pub state: ScanState,
    pub endpoint: Uuid,
    pub gateway: Uuid,
    /// What it was queued with (for `--again`).
    pub settings: Option<ScanSettings>,
}

#[derive(Debug, Clone)]
pub enum ScanCommand {
    Queue { endpoint: Uuid, gateway: Uuid, settings: ScanSettings, again_of: Option<Uuid> },
    Start { node: String },
    Progress { pages: u32, requests: u32, findings: Vec<ScanFinding> },
    Finish { pages: u32, requests: u32, findings: Vec<ScanFinding> },
    Fail { reason: String },
    Cancel { by: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("scan {0} does not exist")]
    NotFound(Uuid),
    #[error("scan {0} already exists")]
    AlreadyExists(Uuid),
    #[error("scan {id} is {state}, not queued: it cannot start")]
    NotQueued { id: Uuid, state: &'static str },
    #[error("scan {id} is {state}, not running")]
    NotRunning { id: Uuid, state: &'static str },
    #[error("scan {id} already ended ({state})")]
    Ended { id: Uuid, state: &'static str },
    #[error("invalid scan settings: {0}")]
    BadSettings(String),
}

/// Checks what a scan is asked to do: 1 to 20 http(s) targets with a host, and limits within
/// bounds (a page limit of at most 10 000, depth at most 50, 1 to 100 requests a second).
pub fn checked_settings(settings: &ScanSettings) -> Result<ScanSettings, ScanError> {
    let bad = |m: String| Err(ScanError::BadSettings(m));
    if settings.targets.is_empty() {
        return bad("give at least one target URL (--target http://host/...)".into());
    }
    if settings.targets.len() > MAX_TARGETS {
        return bad(format!("at most {MAX_TARGETS} targets, not {}", settings.targets.len()));
    }
    let mut targets = Vec::with_capacity(settings.targets.len());
    for raw in &settings.targets {
        let url = raw.trim();
        let shown = ism_events::escaped(url);
        if url.len() > MAX_URL || !url.chars().all(|c| c.is_ascii_graphic()) {
            return bad(format!(
                "target {shown}: a URL of printable ASCII without spaces, at most {MAX_URL} characters"
            ));
        }
        let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))
        else {
            return bad(format!("target {shown}: only http:// and https:// URLs can be scanned"));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return bad(format!("target {shown}: it needs a host, and no user name or password"));
        }
        targets.push(url.to_string());
    }
    if !(1..=MAX_PAGES).contains(&settings.max_pages) {
        return bad(format!("--max-pages must be 1 to {MAX_PAGES}, not {}", settings.max_pages));
    }
    if settings.max_depth > MAX_DEPTH {
        return bad(format!("--max-depth must be 0 to {MAX_DEPTH}, not {}", settings.max_depth));
    }
    if !(1..=MAX_RATE).contains(&settings.rate) {
        return bad(format!(
            "--rate must be 1 to {MAX_RATE} requests a second, not {}",
            settings.rate
        ));
    }
    Ok(ScanSettings { targets, ..settings.clone() })
}

impl Aggregate for Scan {
    type Command = ScanCommand;
    type Error = ScanError;
    type Event = ScanEvent;
    const KIND: AggregateKind = AggregateKind::Scan;

    fn new(id: Uuid) -> Self {
        Self { id, ..Default::default() }
    }

    fn apply(&mut self, event: &ScanEvent) {
        match event {
            ScanEvent::ScanQueued { endpoint, gateway, settings, .. } => {
                (self.endpoint, self.gateway) = (*endpoint, *gateway);
                self.settings = Some(settings.clone());
                self.state = ScanState::Queued;
            }
            ScanEvent::ScanStarted { node } => {
                self.state = ScanState::Running { node: node.clone() }
            }
            ScanEvent::ScanProgressed { .. } => {}
            ScanEvent::ScanFinished { .. } => self.state = ScanState::Finished,
            ScanEvent::ScanFailed { .. } => self.state = ScanState::Failed,
            ScanEvent::ScanCancelled { .. } => self.state = ScanState::Cancelled,
        }
    }

    fn handle(&self, command: &ScanCommand, _now_ms: i64) -> Result<Option<ScanEvent>, ScanError> {
        let (id, state) = (self.id, self.state.as_str());
        if self.state == ScanState::New && !matches!(command, ScanCommand::Queue { .. }) {
            return Err(ScanError::NotFound(id));
        }
        match command {
            ScanCommand::Queue { endpoint, gateway, settings, again_of } => {
                if self.state != ScanState::New {
                    return Err(ScanError::AlreadyExists(id));
                }
                Ok(Some(ScanEvent::ScanQueued {
                    endpoint: *endpoint,
                    gateway: *gateway,
                    settings: checked_settings(settings)?,
                    again_of: *again_of,
                }))
            }
            ScanCommand::Start { node } => match &self.state {
                ScanState::Queued => Ok(Some(ScanEvent::ScanStarted { node: node.clone() })),
                ScanState::Running { node: running } if running == node => Ok(None),
                _ => Err(ScanError::NotQueued { id, state }),
            },
            ScanCommand::Progress { pages, requests, findings } => match self.state {
                ScanState::Running { .. } => Ok(Some(ScanEvent::ScanProgressed {
                    pages: *pages,
                    requests: *requests,
                    findings: findings.clone(),
                })),
                _ => Err(ScanError::NotRunning { id, state }),
            },
            ScanCommand::Finish { pages, requests, findings } => match self.state {
                ScanState::Running { .. } => Ok(Some(ScanEvent::ScanFinished {
                    pages: *pages,
                    requests: *requests,
                    findings: findings.clone(),
                })),
                _ => Err(ScanError::NotRunning { id, state }),
            },
            ScanCommand::Fail { reason } if !self.state.ended() => {
                Ok(Some(ScanEvent::ScanFailed { reason: reason.clone() }))
            }
            ScanCommand::Cancel { by, reason } if !self.state.ended() => {
                Ok(Some(ScanEvent::ScanCancelled { by: by.clone(), reason: reason.clone() }))
            }
            // Ending what already ended in the same way asks for nothing new.
            ScanCommand::Cancel { .. } if self.state == ScanState::Cancelled => Ok(None),
            ScanCommand::Fail { .. } if self.state == ScanState::Failed => Ok(None),
            ScanCommand::Fail { .. } | ScanCommand::Cancel { .. } => {
                Err(ScanError::Ended { id, state })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::scenario::Scenario;

    fn settings() -> ScanSettings {
        ScanSettings {
            targets: vec!["http://intranet.corp:8080/".into()],
            max_pages: 100,
            max_depth: 5,
            rate: 10,
        }
    }

    fn queued() -> ScanEvent {
        ScanEvent::ScanQueued {
            endpoint: Uuid::from_u128(1),
            gateway: Uuid::from_u128(2),
            settings: settings(),
            again_of: None,
        }
    }

    fn started(node: &str) -> ScanEvent {
        ScanEvent::ScanStarted { node: node.into() }
    }

    #[test]
    fn a_scan_is_queued_with_checked_settings() {
        let queue = |settings| ScanCommand::Queue {
            endpoint: Uuid::from_u128(1),
            gateway: Uuid::from_u128(2),
            settings,
            again_of: None,
        };
        Scenario::<Scan>::given(&[]).when(&queue(settings())).then(queued());
        for (bad, says) in [
            (ScanSettings { targets: vec![], ..settings() }, "at least one target"),
            (ScanSettings { targets: vec!["ftp://x/".into()], ..settings() }, "only http"),
            (ScanSettings { targets: vec!["http://u:p@x/".into()], ..settings() }, "no user"),
            (ScanSettings { targets: vec!["http://h\u{7}/".into()], ..settings() }, "ASCII"),
            (ScanSettings { max_pages: 0, ..settings() }, "--max-pages"),
            (ScanSettings { max_depth: 51, ..settings() }, "--max-depth"),
            (ScanSettings { rate: 0, ..settings() }, "--rate"),
            (ScanSettings { targets: vec!["http://x/".into(); 21], ..settings() }, "at most 20"),
        ] {
            let e = checked_settings(&bad).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains('\u{7}'), "untrusted text is escaped: {e}");
        }
        Scenario::<Scan>::given(&[queued()])
            .when(&queue(settings()))
            .then_error(ScanError::AlreadyExists(Uuid::nil()));
    }

    #[test]
    fn one_node_starts_a_queued_scan_once() {
        let start = |node: &str| ScanCommand::Start { node: node.into() };
        Scenario::<Scan>::given(&[queued()]).when(&start("n1")).then(started("n1"));
        Scenario::<Scan>::given(&[queued(), started("n1")]).when(&start("n1")).then_nothing();
        Scenario::<Scan>::given(&[queued(), started("n1")])
            .when(&start("n2"))
            .then_error(ScanError::NotQueued { id: Uuid::nil(), state: "running" });
        Scenario::<Scan>::given(&[])
            .when(&start("n1"))
            .then_error(ScanError::NotFound(Uuid::nil()));
    }

    #[test]
    fn progress_and_finish_only_while_running() {
        let progress = ScanCommand::Progress { pages: 3, requests: 4, findings: vec![] };
        Scenario::<Scan>::given(&[queued()])
            .when(&progress)
            .then_error(ScanError::NotRunning { id: Uuid::nil(), state: "queued" });
        Scenario::<Scan>::given(&[queued(), started("n1")])
            .when(&progress)
            .then(ScanEvent::ScanProgressed { pages: 3, requests: 4, findings: vec![] });
        let finish = ScanCommand::Finish { pages: 5, requests: 6, findings: vec![] };
        let finished = ScanEvent::ScanFinished { pages: 5, requests: 6, findings: vec![] };
        Scenario::<Scan>::given(&[queued(), started("n1")]).when(&finish).then(finished.clone());
        Scenario::<Scan>::given(&[queued(), started("n1"), finished])
            .when(&finish)
            .then_error(ScanError::NotRunning { id: Uuid::nil(), state: "finished" });
    }

    #[test]
    fn a_scan_ends_once() {
        let cancel = ScanCommand::Cancel { by: "user:alice".into(), reason: "asked".into() };
        let cancelled =
            ScanEvent::ScanCancelled { by: "user:alice".into(), reason: "asked".into() };
        Scenario::<Scan>::given(&[queued()]).when(&cancel).then(cancelled.clone());
        Scenario::<Scan>::given(&[queued(), started("n1")]).when(&cancel).then(cancelled.clone());
        Scenario::<Scan>::given(&[queued(), cancelled.clone()]).when(&cancel).then_nothing();
        let fail = ScanCommand::Fail { reason: "endpoint dc1 went offline".into() };
        Scenario::<Scan>::given(&[queued(), started("n1")])
            .when(&fail)
            .then(ScanEvent::ScanFailed { reason: "endpoint dc1 went offline".into() });
        Scenario::<Scan>::given(&[queued(), cancelled])
            .when(&fail)
            .then_error(ScanError::Ended { id: Uuid::nil(), state: "cancelled" });
    }
}
