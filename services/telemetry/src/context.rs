//! A span's place in a trace as a [`TraceParent`] to hand to a peer (in an `Open` frame, an
//! event's envelope), and a span continued from a peer's.

use ism_tunnel_proto::TraceParent;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace context `span` hands on; `None` without a tracer (a process that installed none,
/// or a span no layer records).
pub fn of(span: &Span) -> Option<TraceParent> {
    let context = span.context();
    let span = context.span();
    let context = span.span_context();
    context.is_valid().then(|| TraceParent {
        trace_id: context.trace_id().to_bytes(),
        span_id: context.span_id().to_bytes(),
        flags: context.trace_flags().to_u8(),
    })
}

/// The trace context of the span the caller is in.
pub fn current() -> Option<TraceParent> {
    of(&Span::current())
}

/// Makes the new `span` a child of the peer's span `parent` (before it is entered), and records
/// the trace id in its `trace_id` field for the log lines inside it.
pub fn continue_from(span: &Span, parent: Option<TraceParent>) {
    if let Some(parent) = parent {
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        // Fails without a tracer layer (nothing to join), or once the span's context was read;
        // callers set the parent first, as this function's contract says.
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
    record_trace_id(span);
}

/// Records the trace id in `span`'s `trace_id` field (declared `trace_id = Empty`), so that
/// every log line inside it says which trace it belongs to.
pub fn record_trace_id(span: &Span) {
    if let Some(trace) = of(span) {
        span.record("trace_id", tracing::field::display(trace.trace_id_hex()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_continued_span_joins_the_peers_trace_under_its_span() {
        // A tracer that records without exporting.
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(crate::traces::layer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let opener = tracing::info_span!(target: "ism_test", "opener");
            let handed = of(&opener).expect("a traced span has a context");
            let peer =
                tracing::info_span!(target: "ism_test", "peer", trace_id = tracing::field::Empty);
            continue_from(&peer, Some(handed));
            let continued = of(&peer).unwrap();
            assert_eq!(continued.trace_id, handed.trace_id);
            assert_ne!(continued.span_id, handed.span_id);
            let root = tracing::info_span!(target: "ism_test", "another request");
            assert_ne!(of(&root).unwrap().trace_id, handed.trace_id);
        });
    }

    #[test]
    fn without_a_tracer_there_is_nothing_to_hand_on() {
        let span = tracing::info_span!("untraced");
        assert_eq!(of(&span), None);
        continue_from(&span, None);
    }
}
