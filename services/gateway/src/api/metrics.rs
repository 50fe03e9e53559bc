//! `GET /metrics`: the node's metrics in Prometheus' text format, for a scraper. Like
//! `/healthz` it needs no token: it holds counts and ids, no names, keys or targets.

use super::State;
use crate::metrics::{ProjectionLag, Snapshot};
use actix_web::HttpResponse;

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
            (endpoint, gateway, state.streams.count(endpoint))
        })
        .collect();
    let lag = |name, progress: &ism_events::ProjectionProgress| ProjectionLag {
        name,
        applied: progress.applied(),
        applied_time_ms: progress.applied_time_ms(),
    };
    let now = Snapshot {
        time_ms: state.clock.now_ms(),
        sessions: state.sessions.len(),
        stream_limit: state.stream_limit,
        unrecorded_facts: state.tunnels.unrecorded(),
        streams,
        log_head: state.log.head().await.ok(),
        projections: vec![
            lag("directory", &state.progress),
            lag("notices", &state.notices_progress),
        ],
    };
    HttpResponse::Ok().content_type(CONTENT_TYPE).body(state.metrics.render(&now))
}
