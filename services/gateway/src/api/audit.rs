//! Reading the record: node status, the audit timeline, and checking that the projections are
//! what a replay of the log gives.

use super::{ApiError, Caller, State};
use crate::state::NodeState;
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use ism_events::{Projection, ProjectionProgress};
use ism_projectors::audit::{self, parse_time, AuditFilter, Page};
use ism_projectors::{DirectoryProjection, NoticeProjection};
use serde::Deserialize;
use std::collections::VecDeque;
use uuid::Uuid;

pub(super) async fn status(state: State, _caller: Caller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "node": state.node_id,
        "event_log": state.log.describe(),
        "log_head": state.log.head().await?,
        "directory_position": state.progress.applied(),
        "connected_endpoints": state.sessions.len(),
        "open_streams": state.sessions.open_streams(),
        "stream_limit_per_endpoint": state.stream_limit,
        "queued_streams": state.sessions.queued_streams(),
        "endpoint_url": state.endpoint_url(),
        "socks_address": state.public.socks.clone(),
        "http_proxy_address": state.public.http_proxy.clone(),
        "gateway_ca_pem": state.gateway_ca_pem.clone(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    gateway: Option<Uuid>,
    endpoint: Option<Uuid>,
    actor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// Entries after this log position, oldest first (a page; the next page is after the last
    /// position returned). Without it: the most recent entries.
    after: Option<u64>,
    /// Only entries before this log position: with no `after`, the most recent `limit` of them
    /// (the page before one that starts there: paging back from the latest).
    before: Option<u64>,
    /// Most entries to return (default 1000, at most [`MAX_PAGE`]; for the stream, all).
    limit: Option<usize>,
}

/// Most entries one page of `/audit` returns: the page is held whole before it is sent, so an
/// unbounded `limit` would let any token make the node hold the whole history. The stream holds
/// one entry at a time and takes any limit.
const MAX_PAGE: usize = 10_000;

fn time(name: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|r| parse_time(r).ok_or_else(|| ApiError::bad_request(format!("{name} must be a date (2026-11-23), a UTC time (2026-11-23T16:40:00Z) or milliseconds, not {r:?}")))).transpose()
}

impl AuditQuery {
    fn limit(&self) -> Result<Option<usize>, ApiError> {
        match self.limit {
            Some(0) => Err(ApiError::bad_request("limit must be 1 or more")),
            other => Ok(other),
        }
    }

    /// The page's size: refused above [`MAX_PAGE`] rather than cut, so a client never takes a
    /// shorter page than it asked for as the end of the history.
    fn page_limit(&self) -> Result<usize, ApiError> {
        match self.limit()? {
            Some(n) if n > MAX_PAGE => Err(ApiError::bad_request(format!(
                "limit must be 1 to {MAX_PAGE}, not {n}: page with after (or before), or read /api/v1/audit/stream for the whole history"
            ))),
            n => Ok(n.unwrap_or(1000)),
        }
    }

    fn filter(&self) -> Result<AuditFilter, ApiError> {
        Ok(AuditFilter {
            gateway: self.gateway,
            endpoint: self.endpoint,
            actor: self.actor.clone(),
            since_ms: time("since", self.since.as_deref())?,
            until_ms: time("until", self.until.as_deref())?,
        })
    }
}

/// The history as a readable timeline, oldest first, read from the event log itself: the most
/// recent `limit` entries, or the first `limit` after `after` (`truncated`: more follow); a
/// `limit` above [`MAX_PAGE`] is refused (400).
pub(super) async fn timeline(
    state: State,
    _caller: Caller,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let limit = q.page_limit()?;
    // A page reads one entry more than it returns, to know whether more follow.
    let page = match q.after {
        Some(after) => Page { after, before: q.before, limit: Some(limit.saturating_add(1)) },
        None => Page { after: 0, before: q.before, limit: None },
    };
    let (head, entries) = audit::entries(state.log.clone(), q.filter()?, page).await?;
    let mut entries = std::pin::pin!(entries);
    let mut kept = VecDeque::new();
    let mut truncated = false;
    while let Some(entry) = entries.next().await {
        kept.push_back(entry?);
        if kept.len() > limit {
            truncated = true;
            if q.after.is_some() {
                kept.pop_back();
            } else {
                kept.pop_front();
            }
        }
    }
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "log_head": head, "truncated": truncated, "entries": kept })))
}

/// The same entries as one JSON object per line (`application/x-ndjson`), sent as they are read:
/// the first arrives at once and the node holds one at a time, however long the history. A
/// failure of the log midway ends the stream early (the last line is then not the log's head).
pub(super) async fn stream(
    state: State,
    _caller: Caller,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let page = Page { after: q.after.unwrap_or(0), before: q.before, limit: q.limit()? };
    let (_, entries) = audit::entries(state.log.clone(), q.filter()?, page).await?;
    let lines = entries.map(|entry| {
        let entry = entry.map_err(|e| actix_web::error::ErrorServiceUnavailable(e.to_string()))?;
        let mut line =
            serde_json::to_vec(&entry).map_err(actix_web::error::ErrorInternalServerError)?;
        line.push(b'\n');
        Ok::<_, actix_web::Error>(bytes::Bytes::from(line))
    });
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").streaming(lines))
}

/// Rebuilds every projection from the log in a scratch store and compares it with the live one.
pub(super) async fn verify_projections(
    state: State,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.must_be_administrator()?;
    let scratch = tempfile::tempdir().map_err(|e| {
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("no scratch space: {e}"),
        )
    })?;
    let directory = DirectoryProjection::open(&scratch.path().join("directory"))?;
    let notices =
        NoticeProjection::open(&scratch.path().join("notices"), *state.notices.settings())?;
    let reports = [
        compare(&state, &*state.directory, &state.progress, &directory).await?,
        compare(&state, &*state.notices, &state.notices_progress, &notices).await?,
    ];
    let all_match = reports.iter().all(|r| r["matches"] == true);
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "projections": reports, "all_match": all_match })))
}

/// Rebuilds `scratch` to where `live` is and compares them.
async fn compare<P: Projection>(
    state: &NodeState,
    live: &P,
    progress: &ProjectionProgress,
    scratch: &P,
) -> Result<serde_json::Value, ApiError> {
    // The live projection moves while we rebuild; compare at a position both have reached.
    for _ in 0..5 {
        let at = progress.applied();
        ism_events::rebuild_to(&*state.log, scratch, at).await?;
        let dump = live.dump()?;
        if progress.applied() == at {
            let matches = dump == scratch.dump()?;
            return Ok(
                serde_json::json!({ "name": live.name(), "position": at, "rows": dump.len(), "matches": matches }),
            );
        }
    }
    Err(ApiError::new(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "the log kept moving; try again",
    ))
}
