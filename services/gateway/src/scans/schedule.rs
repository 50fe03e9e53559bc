//! Which queued scans start now, and the loop that starts them: every endpoint runs at most its
//! capacity of scans at once, the rest wait in the order they were queued.
//!
//! The loop also keeps the recorded states true on this node: a scan recorded as running here
//! that this node does not run (it restarted while the scan ran) has failed, and a scan this
//! node runs that ended meanwhile (cancelled through another node) is stopped.

use super::{node_cause, runner};
use crate::state::NodeState;
use ism_actors::scan::ScanCommand;
use ism_events::ProjectionError;
use ism_projectors::directory::{ScanStatus, ScanView};
use ism_projectors::EndpointView;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Scans an endpoint runs at once unless told otherwise (the reference's "at least 30").
pub const DEFAULT_CAPACITY: usize = 30;

/// How often the queue is looked at: a freed slot is taken, and a cancel made through another
/// node reaches the engine, within this.
pub const EVERY: Duration = Duration::from_millis(250);

/// The queued scans to start now, oldest first per endpoint: of the endpoints `held_here`, as
/// many as each has free slots of its `capacity`. `scans` are in the order they were queued.
pub fn due(
    scans: &[ScanView],
    capacity: impl Fn(Uuid) -> usize,
    held_here: impl Fn(Uuid) -> bool,
) -> Vec<Uuid> {
    let mut per_endpoint: BTreeMap<Uuid, (usize, Vec<Uuid>)> = BTreeMap::new();
    for s in scans {
        let (running, queued) = per_endpoint.entry(s.endpoint).or_default();
        match s.status {
            ScanStatus::Running => *running += 1,
            ScanStatus::Queued => queued.push(s.id),
            _ => {}
        }
    }
    per_endpoint
        .into_iter()
        .filter(|(endpoint, _)| held_here(*endpoint))
        .flat_map(|(endpoint, (running, queued))| {
            queued.into_iter().take(capacity(endpoint).saturating_sub(running))
        })
        .collect()
}

/// Scans `endpoint` runs at once: its own setting, else the node's `default`.
pub fn scan_capacity(endpoint: Option<&EndpointView>, default: usize) -> usize {
    endpoint.and_then(|e| e.scan_capacity).map_or(default, |c| c as usize)
}

/// Each queued scan's place in its endpoint's queue (1: next to start).
pub fn queue_positions(scans: &[ScanView]) -> HashMap<Uuid, usize> {
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    scans
        .iter()
        .filter(|s| s.status == ScanStatus::Queued)
        .map(|s| {
            let place = seen.entry(s.endpoint).or_default();
            *place += 1;
            (s.id, *place)
        })
        .collect()
}

/// Runs the queue on this node until the task is stopped.
pub async fn run(state: Arc<NodeState>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tick.tick().await;
        if let Err(e) = pass(&state).await {
            tracing::warn!(error = %e, "could not look at the scan queue");
        }
        if n % LOOK_FOR_LOST_EVERY == 0 {
            fail_on_lost_nodes(&state).await;
        }
    }
}

/// Every how many passes the scans recorded as running on other nodes are checked against the
/// nodes announced (every 5 s).
const LOOK_FOR_LOST_EVERY: u64 = 20;

/// Records as failed the scans recorded as running on a node gone from the cluster (its record
/// withdrawn or expired): the survivors record a lost node's scans when they notice the loss
/// (`membership.rs`), and this is what ends the ones that slipped through.
async fn fail_on_lost_nodes(state: &NodeState) {
    let Ok(scans) = state.directory.active_scans() else { return };
    let elsewhere: Vec<&ScanView> = scans
        .iter()
        .filter(|s| s.status == ScanStatus::Running)
        .filter(|s| s.node.as_deref().is_some_and(|n| n != state.node_id))
        .collect();
    if elsewhere.is_empty() {
        return;
    }
    let Ok(members) = state.cluster.members().await else { return };
    for s in elsewhere {
        let node = s.node.as_deref().unwrap_or_default();
        if !members.iter().any(|m| m.announcement.node == node) {
            super::record_failed(state, s.id, &format!("gateway node {node} is gone")).await;
        }
    }
}

async fn pass(state: &Arc<NodeState>) -> Result<(), ProjectionError> {
    let scans = state.directory.active_scans()?;
    let status: HashMap<Uuid, &ScanView> = scans.iter().map(|s| (s.id, s)).collect();
    for id in state.running_scans.ids() {
        if status.get(&id).is_none_or(|s| !s.status.is_active()) {
            state.running_scans.stop(id);
        }
    }
    // Scans of an endpoint deleted, or whose scan access was turned off, are cancelled (even
    // those queued where the request that changed it did not see them yet, or deleted by the
    // retention rule).
    let mut endpoints: HashMap<Uuid, Option<EndpointView>> = HashMap::new();
    for s in &scans {
        let endpoint = endpoints
            .entry(s.endpoint)
            .or_insert_with(|| state.directory.endpoint(s.endpoint).ok().flatten());
        if let Some(reason) = runner::access_withdrawn(endpoint.as_ref()) {
            let command = super::cancel_by_node(state, reason);
            if let Err(e) = state.scans.execute(s.id, command, node_cause(state)).await {
                tracing::debug!(scan = %s.id, error = %e, "scan not cancelled here");
            }
            state.running_scans.stop(s.id);
        }
    }
    for s in &scans {
        let mine = s.node.as_deref() == Some(state.node_id.as_str());
        if s.status == ScanStatus::Running && mine && !state.running_scans.runs(s.id) {
            let why = format!("gateway node {} stopped while the scan ran", state.node_id);
            super::record_failed(state, s.id, &why).await;
        }
    }
    if state.cluster.is_draining() {
        return Ok(());
    }
    let held_here = |endpoint| state.sessions.get(endpoint).is_some();
    let capacity = |endpoint| {
        let e = endpoints.get(&endpoint).and_then(Option::as_ref);
        scan_capacity(e, state.scan_capacity)
    };
    for id in due(&scans, capacity, held_here) {
        if let Some(scan) = status.get(&id) {
            start(state, (*scan).clone()).await;
        }
    }
    Ok(())
}

/// Starts `scan` here, unless another node started it first.
async fn start(state: &Arc<NodeState>, scan: ScanView) {
    // Registered before the start is recorded, so that this node never takes its own running
    // scan for one it lost.
    let Some(stop) = state.running_scans.begin(scan.id) else { return };
    let command = ScanCommand::Start { node: state.node_id.clone() };
    match state.scans.execute(scan.id, command, node_cause(state)).await {
        Ok(started) if started.recorded.is_some() => {
            tracing::info!(scan = %scan.id, endpoint = %scan.endpoint, "scan started");
            tokio::spawn(runner::run(state.clone(), scan, stop));
        }
        Ok(_) => state.running_scans.end(scan.id),
        Err(e) => {
            tracing::debug!(scan = %scan.id, error = %e, "scan not started here");
            state.running_scans.end(scan.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_events::ScanSettings;

    fn scan(n: u128, endpoint: u128, status: ScanStatus) -> ScanView {
        ScanView {
            id: Uuid::from_u128(n),
            version: 1,
            endpoint: Uuid::from_u128(endpoint),
            gateway: Uuid::nil(),
            settings: ScanSettings { targets: vec![], max_pages: 1, max_depth: 1, rate: 1 },
            again_of: None,
            status,
            queued_position: n as u64,
            queued_ms: 0,
            queued_by: None,
            started_ms: None,
            node: None,
            ended_ms: None,
            pages: 0,
            requests: 0,
            reason: None,
            cancelled_by: None,
            finding_counts: Default::default(),
        }
    }

    #[test]
    fn the_oldest_queued_scans_take_the_free_slots_of_endpoints_held_here() {
        use ScanStatus::*;
        let scans = vec![
            scan(1, 100, Running),
            scan(2, 100, Finished),
            scan(3, 100, Queued),
            scan(4, 200, Queued),
            scan(5, 100, Queued),
            scan(6, 100, Queued),
            scan(7, 300, Queued),
        ];
        let ids = |v: &[u128]| v.iter().map(|n| Uuid::from_u128(*n)).collect::<Vec<_>>();
        let held = |e: Uuid| e != Uuid::from_u128(300);
        assert_eq!(due(&scans, |_| 3, held), ids(&[3, 5, 4]));
        assert_eq!(due(&scans, |_| 1, held), ids(&[4]), "endpoint 100 is at its capacity");
        let each = |e: Uuid| if e == Uuid::from_u128(100) { 2 } else { 0 };
        assert_eq!(due(&scans, each, held), ids(&[3]), "each endpoint has its own capacity");
        assert_eq!(
            due(&scans, |_| 30, |_| false),
            ids(&[]),
            "nothing starts where nothing is held"
        );
        let places = queue_positions(&scans);
        assert_eq!(
            [3, 5, 6, 4, 7].map(|n| places[&Uuid::from_u128(n)]),
            [1, 2, 3, 1, 1],
            "each endpoint has its own queue"
        );
    }
}
