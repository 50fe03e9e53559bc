//! The gateway's log: one line per event on stderr, as text (coloured only when stderr is a
//! terminal, so a log file or journal gets no escape codes) or as JSON objects for a log
//! pipeline. Lines inside a request's span carry the span's fields, its `trace_id` among them.

use crate::traces::Tracing;
use crate::TelemetryError;
use std::io::IsTerminal;
use std::str::FromStr;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(TelemetryError::LogFormat(other.escape_debug().to_string())),
        }
    }
}

/// Installs the process's subscriber: `RUST_LOG` (default `info`) decides which lines are
/// written; the tracer's layer sees its spans whatever the log level.
pub fn init(format: LogFormat, tracing: &Tracing) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(tracing.layer())
        .with(lines.with_filter(filter))
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_others_are_named_in_the_error() {
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        let error = "yaml\n".parse::<LogFormat>().unwrap_err().to_string();
        assert_eq!(error, "--log-format must be text or json, not \"yaml\\\\n\"");
    }
}
