//! Every API request in an `http.request` span, continuing the caller's trace when it sends a
//! W3C `traceparent` header. The commands a request causes carry the span's context in their
//! [`Cause`](ism_events::Cause) (see [`Caller::cause`](super::Caller::cause)), so the actor's
//! decision and the append join the trace, and the events recorded name it (`trace` in the
//! envelope, `trace_id` in the audit).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use ism_events::escaped;
use ism_telemetry::{context, TraceParent};
use tracing::field::Empty;
use tracing::Instrument;

/// Routes not traced.
const UNTRACED: [&str; 3] = ["/healthz", "/ready", "/metrics"];

pub async fn traced(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // The route's pattern, not the path: a bounded set, without the ids in it.
    let route = req.match_pattern().unwrap_or_else(|| "unrouted".into());
    // Probes and scrapes come every few seconds and do nothing worth a trace.
    if UNTRACED.contains(&route.as_str()) {
        return next.call(req).await;
    }
    let span = tracing::info_span!(
        "http.request",
        method = %req.method(),
        route = %escaped(&route),
        status = Empty,
        trace_id = Empty,
    );
    let parent =
        req.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    context::continue_from(&span, parent);
    let response = next.call(req).instrument(span.clone()).await?;
    span.record("status", response.status().as_u16());
    Ok(response)
}
