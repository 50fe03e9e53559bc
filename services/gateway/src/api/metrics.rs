//! `GET /metrics`: the node's metrics in Prometheus' text format, for a scraper. Like
//! `/healthz` it needs no token: it holds counts and ids, no names, keys or targets.

use super::State;
use crate::metrics::{ProjectionLag, Snapshot};
use actix_web::HttpResponse;
use futures_util::StreamExt;
use ism_events::EventLog;
use ism_projectors::directory::ScanStatus;

/// Prometheus' text exposition format (what scrapers ask for).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) async fn scrape(state: State) -> HttpResponse {
    let streams = state
        .streams
        .endpoints()
        .into_iter()
        .map(|endpoint| {
            let view = state.directory.endpoint(endpoint).ok().flatten();
            let gateway = view.map(|v| v.gateway).unwrap_or_default();
            (endpoint, gateway, state.running_streams(endpoint))
        })
        .collect();
    let queued = state
        .sessions
        .endpoints()
        .into_iter()
        .filter_map(|endpoint| state.sessions.get(endpoint))
        .filter(|live| !live.waiting.is_empty())
        .map(|live| (live.endpoint, live.gateway, live.waiting.len()))
        .collect();
    let log_head = state.log.head().await.ok();
    let mut projections = Vec::new();
    for (name, progress) in [("directory", &state.progress), ("notices", &state.notices_progress)] {
        let applied = progress.applied();
        let behind = log_head.map_or(0, |head| head.saturating_sub(applied));
        let oldest_unapplied_ms = match behind {
            0 => None,
            _ => first_after(&*state.log, applied).await,
        };
        let undecodable = progress.undecodable();
        projections.push(ProjectionLag { name, behind, oldest_unapplied_ms, undecodable });
    }
    let active = state.directory.active_scans().unwrap_or_default();
    let scans_running = active.iter().filter(|s| s.status == ScanStatus::Running).count();
    let now = Snapshot {
        time_ms: state.clock.now_ms(),
        sessions: state.sessions.len(),
        stream_limit: state.stream_limit,
        window_budget: state.window_budget.total(),
        window_budget_reserved: state.window_budget.reserved(),
        window_budget_shortfalls: state.window_budget.shortfalls(),
        unrecorded_facts: state.tunnels.unrecorded(),
        scans_queued: active.len() - scans_running,
        scans_running,
        scans_run_here: state.running_scans.len(),
        streams,
        queued,
        log_head,
        projections,
    };
    HttpResponse::Ok().content_type(CONTENT_TYPE).body(state.metrics.render(&now))
}

/// When the event after `position` was recorded, if the log says so within a second (a scrape
/// must not hang on a slow log: the age is then left at 0).
async fn first_after(log: &dyn EventLog, position: u64) -> Option<i64> {
    let first = async {
        let mut events = log.subscribe(position).await.ok()?;
        events.next().await?.ok().map(|r| r.envelope.time_ms)
    };
    tokio::time::timeout(FIRST_UNAPPLIED_WAIT, first).await.ok().flatten()
}

/// How long a scrape waits for the log to show the oldest unapplied event.
const FIRST_UNAPPLIED_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
