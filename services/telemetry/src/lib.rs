//! What an operator sees of a process: its log lines (text or JSON, colour only on a terminal),
//! its spans exported as OpenTelemetry traces over OTLP, and the W3C trace context that carries
//! one trace from process to process.
//!
//! - [`traces`]: the tracer (OTLP exporter, sampling) and the `tracing` layer that feeds it;
//! - [`logs`]: the gateway's log format and the subscriber that joins logs and traces;
//! - [`context`]: a span's trace context as a [`TraceParent`] to hand to a peer, and a span
//!   continued from one.
//!
//! Spans are `tracing` spans of the `ism*` crates at INFO; the OpenTelemetry layer sees only
//! those, whatever `RUST_LOG` says, so the exporter's own client code is never traced into itself.

pub mod context;
pub mod logs;
pub mod traces;

pub use ism_tunnel_proto::TraceParent;
pub use logs::LogFormat;
pub use traces::{TraceConfig, Tracing};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("--log-format must be text or json, not {0:?}")]
    LogFormat(String),
    #[error("--trace-sample-ratio must be between 0 and 1, not {0}")]
    SampleRatio(f64),
    #[error("the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("a log subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}
