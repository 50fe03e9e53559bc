//! The tracer: spans sampled by ratio (parent-based: a trace a caller sampled is recorded on
//! every hop) and exported in batches over OTLP/gRPC.
//!
//! Without an endpoint no tracer layer is installed at all: building OpenTelemetry spans nobody
//! exports cost about a tenth of the stream opens a node can make (`ism-bench`, opens per
//! second), and there is no trace for a log line's id to name.

use crate::TelemetryError;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Where and how much to trace.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// `service.name` of the spans: `ism-gateway`, `ism-endpoint`.
    pub service: &'static str,
    /// `service.instance.id`: the node id, the endpoint's host name.
    pub instance: String,
    /// An OTLP/gRPC collector, `http://host:4317`; `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0 to 1; traces begun elsewhere follow their caller.
    pub sample_ratio: f64,
}

/// The process's tracer provider, when it exports; [`shutdown`](Self::shutdown) exports what is
/// still buffered.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Builds the tracer. With an OTLP endpoint this must run inside a tokio runtime, whose
    /// tasks carry the exporter's connection.
    pub fn new(config: &TraceConfig) -> Result<Self, TelemetryError> {
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(TelemetryError::SampleRatio(config.sample_ratio));
        }
        let resource = Resource::builder()
            .with_service_name(config.service)
            .with_attribute(KeyValue::new("service.instance.id", config.instance.clone()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(Self { provider: None });
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(sampler)
            .with_batch_exporter(exporter)
            .build();
        Ok(Self { provider: Some(provider) })
    }

    /// The `tracing` layer that turns the `ism*` crates' INFO spans into OpenTelemetry spans;
    /// none without an exporter.
    pub fn layer<S>(&self) -> Option<impl Layer<S> + use<S>>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        self.provider.as_ref().map(|provider| layer(provider.tracer("ism")))
    }

    /// Exports the spans still buffered and stops the exporter (at the process's end).
    pub fn shutdown(&self) {
        if let Some(Err(e)) = self.provider.as_ref().map(SdkTracerProvider::shutdown) {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// The layer for `tracer`: the `ism*` crates' INFO spans, whatever the log's level.
pub(crate) fn layer<S>(tracer: SdkTracer) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Busy and idle times would cost two clock reads on every entry into a span.
        .with_tracked_inactivity(false)
        .with_filter(Targets::new().with_target("ism", tracing::Level::INFO))
}
