//! Scans of the built-in engine: start (managers), list, show, cancel (managers), report.
//!
//! A started scan is queued; the node holding its endpoint starts it when a slot of the
//! endpoint's scan capacity is free (`crate::scans`). Its report is built from its recorded
//! findings, as JSON (`ism-scan-report/1`) or SARIF 2.1.0.

use super::views;
use super::{parse_id, ApiError, Caller, State};
use crate::scans::schedule::queue_positions;
use actix_web::{web, HttpResponse};
use ism_actors::scan::ScanCommand;
use ism_events::ScanSettings;
use ism_projectors::directory::{ScanStatus, ScanView};
use ism_projectors::EndpointView;
use ism_scan_engine::report::{self, ScanSummary};
use ism_scan_engine::{Finding, Severity};
use serde::Deserialize;
use uuid::Uuid;

/// Pages a scan fetches unless told otherwise.
const DEFAULT_MAX_PAGES: u32 = 100;
/// Link depth a scan follows unless told otherwise.
const DEFAULT_MAX_DEPTH: u32 = 5;
/// Requests a second a scan sends unless told otherwise.
const DEFAULT_RATE: u32 = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewScan {
    /// The endpoint, by id, or by name when only one endpoint of any gateway has it.
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    max_pages: Option<u32>,
    #[serde(default)]
    max_depth: Option<u32>,
    #[serde(default)]
    rate: Option<u32>,
    /// Queue this earlier scan's settings again (`ism scan start --again`).
    #[serde(default)]
    again: Option<String>,
}

/// The endpoint named by `raw`: an id, or a name only one endpoint has.
fn endpoint_named(state: &State, raw: &str) -> Result<EndpointView, ApiError> {
    if let Ok(id) = Uuid::try_parse(raw) {
        return state.directory.endpoint(id)?.ok_or_else(|| ApiError::not_found("endpoint", id));
    }
    let mut named: Vec<_> = state
        .directory
        .endpoints()?
        .into_iter()
        .filter(|e| e.name.eq_ignore_ascii_case(raw.trim()))
        .collect();
    let shown = ism_events::escaped(raw);
    match named.len() {
        0 => Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("no endpoint is called {shown:?}"),
        )),
        1 => Ok(named.remove(0)),
        n => Err(ApiError::bad_request(format!(
            "{n} endpoints (of different gateways) are called {shown:?}: give the endpoint's id"
        ))),
    }
}

fn scan_or_404(state: &State, raw: &str) -> Result<ScanView, ApiError> {
    let id = parse_id("scan", raw)?;
    state.directory.scan(id)?.ok_or_else(|| ApiError::not_found("scan", id))
}

/// The place of `scan` in its endpoint's queue, if it waits.
fn position(state: &State, scan: &ScanView) -> Result<Option<usize>, ApiError> {
    if scan.status != ScanStatus::Queued {
        return Ok(None);
    }
    Ok(queue_positions(&state.directory.active_scans_of(scan.endpoint)?).get(&scan.id).copied())
}

fn shown(state: &State, scan: ScanView) -> Result<HttpResponse, ApiError> {
    let place = position(state, &scan)?;
    Ok(HttpResponse::Ok().json(views::scan_detail(scan, place, state)))
}

/// Queues a scan (201); it starts when its endpoint has a free slot.
pub(super) async fn start(
    state: State,
    caller: Caller,
    body: web::Json<NewScan>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let body = body.into_inner();
    let (endpoint, settings, again_of) = match &body.again {
        Some(raw) => {
            if body.endpoint.is_some() || !body.targets.is_empty() {
                return Err(ApiError::bad_request(
                    "a scan started again keeps its endpoint and targets: give only `again`",
                ));
            }
            let earlier = scan_or_404(&state, raw)?;
            let endpoint = state
                .directory
                .endpoint(earlier.endpoint)?
                .ok_or_else(|| ApiError::not_found("endpoint", earlier.endpoint))?;
            (endpoint, earlier.settings, Some(earlier.id))
        }
        None => {
            let raw = body.endpoint.as_deref().ok_or_else(|| {
                ApiError::bad_request("name the endpoint to scan through (endpoint)")
            })?;
            let settings = ScanSettings {
                targets: body.targets,
                max_pages: body.max_pages.unwrap_or(DEFAULT_MAX_PAGES),
                max_depth: body.max_depth.unwrap_or(DEFAULT_MAX_DEPTH),
                rate: body.rate.unwrap_or(DEFAULT_RATE),
            };
            (endpoint_named(&state, raw)?, settings, None)
        }
    };
    for target in &settings.targets {
        if let Err(e) = url::Url::parse(target.trim()) {
            return Err(ApiError::bad_request(format!(
                "target {:?} is not a URL: {e}",
                ism_events::escaped(target)
            )));
        }
    }
    if !endpoint.scan_access {
        return Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            format!(
                "scan access is disabled for endpoint {:?}: turn it on first (ism endpoint access --scan on)",
                endpoint.name
            ),
        ));
    }
    let id = Uuid::new_v4();
    let command =
        ScanCommand::Queue { endpoint: endpoint.id, gateway: endpoint.gateway, settings, again_of };
    let queued = state.scans.execute(id, command, caller.cause()).await?;
    state.caught_up(queued.position()).await?;
    let scan = state.directory.scan(id)?.ok_or_else(|| ApiError::not_found("scan", id))?;
    let place = position(&state, &scan)?;
    Ok(HttpResponse::Created().json(views::scan_detail(scan, place, &state)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScanQuery {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    state: Option<String>,
    /// Only the most recently queued this many (the web page's list, polled every 2 s, reads
    /// the latest 100 rather than the whole history).
    #[serde(default)]
    limit: Option<usize>,
}

/// Scans, in the order they were queued, with each waiting one's place in its queue.
pub(super) async fn list(
    state: State,
    _caller: Caller,
    query: web::Query<ScanQuery>,
) -> Result<HttpResponse, ApiError> {
    let wanted = match &query.state {
        None => None,
        Some(s) => Some(ScanStatus::parse(s).ok_or_else(|| {
            let known: Vec<_> = ScanStatus::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::bad_request(format!(
                "unknown scan state {:?}; known: {}",
                ism_events::escaped(s),
                known.join(", ")
            ))
        })?),
    };
    let scans = match &query.endpoint {
        Some(raw) => state.directory.scans_of(endpoint_named(&state, raw)?.id)?,
        None => state.directory.scans()?,
    };
    if query.limit == Some(0) {
        return Err(ApiError::bad_request("limit must be 1 or more"));
    }
    let places = queue_positions(&scans);
    let chosen: Vec<_> =
        scans.into_iter().filter(|s| wanted.is_none_or(|w| s.status == w)).collect();
    let skipped = query.limit.map_or(0, |n| chosen.len().saturating_sub(n));
    let all: Vec<_> = chosen
        .into_iter()
        .skip(skipped)
        .map(|s| {
            let place = places.get(&s.id).copied();
            views::scan(&s, place, &state)
        })
        .collect();
    Ok(HttpResponse::Ok().json(all))
}

pub(super) async fn show(
    state: State,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let scan = scan_or_404(&state, &id)?;
    shown(&state, scan)
}

/// Cancels a queued or running scan: a running one is stopped at once on this node, at the
/// scheduler's next look on another.
pub(super) async fn cancel(
    state: State,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let scan = scan_or_404(&state, &id)?;
    let by = caller.principal.to_string();
    let command = ScanCommand::Cancel { by: by.clone(), reason: format!("cancelled by {by}") };
    let cancelled = state.scans.execute(scan.id, command, caller.cause()).await?;
    // Stopped here at once; a node running it elsewhere stops it when it sees the event.
    state.running_scans.stop(scan.id);
    state.caught_up(cancelled.position()).await?;
    shown(&state, scan_or_404(&state, &id)?)
}

/// Cancels every queued or running scan of `endpoint`, for `reason` (its scan access was
/// turned off, it was deleted): what the caller changed ends the scans at once.
pub(super) async fn cancel_all(
    state: &State,
    caller: &Caller,
    endpoint: Uuid,
    reason: &str,
) -> Result<Option<u64>, ApiError> {
    let mut last = None;
    let by = caller.principal.to_string();
    for scan in state.directory.active_scans_of(endpoint)? {
        let command = ScanCommand::Cancel { by: by.clone(), reason: reason.to_string() };
        match state.scans.execute(scan.id, command, caller.cause()).await {
            Ok(done) => last = done.position().or(last),
            // It ended meanwhile.
            Err(ism_actors::CommandError::Rejected(_)) => {}
            Err(e) => return Err(e.into()),
        }
        state.running_scans.stop(scan.id);
    }
    Ok(last)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    #[serde(default)]
    format: Option<String>,
}

/// A finding as the engine's reports take it.
fn reported(f: &ism_events::ScanFinding) -> Finding {
    let severity = Severity::parse(&f.severity).unwrap_or(Severity::Info);
    Finding { rule: f.rule.clone(), severity, url: f.url.clone(), evidence: f.evidence.clone() }
}

/// The scan's report: `format=json` (default) or `sarif`.
pub(super) async fn report(
    state: State,
    _caller: Caller,
    id: web::Path<String>,
    query: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let scan = scan_or_404(&state, &id)?;
    let endpoint = state.directory.endpoint_any(scan.endpoint)?;
    let gateway = state.directory.gateway(scan.gateway)?;
    let summary = ScanSummary {
        id: scan.id.to_string(),
        endpoint: endpoint.map(|e| e.name).unwrap_or_else(|| scan.endpoint.to_string()),
        gateway: gateway.map(|g| g.name).unwrap_or_else(|| scan.gateway.to_string()),
        targets: scan.settings.targets.clone(),
        state: scan.status.as_str().to_string(),
        queued_ms: scan.queued_ms,
        started_ms: scan.started_ms,
        ended_ms: scan.ended_ms,
        pages: scan.pages,
        requests: scan.requests,
        reason: scan.reason.clone(),
    };
    let findings: Vec<Finding> =
        state.directory.scan_findings(scan.id)?.iter().map(reported).collect();
    let body = match query.format.as_deref().unwrap_or("json").to_ascii_lowercase().as_str() {
        "json" => report::json(&summary, &findings),
        "sarif" => report::sarif(&summary, &findings),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown report format {:?}: json or sarif",
                ism_events::escaped(other)
            )))
        }
    };
    Ok(HttpResponse::Ok().json(body))
}
