//! How sessions end and why opening a stream fails.

use ism_tunnel_proto::{OpenError, OpenFailure, ResetReason, SessionEnd};
use std::fmt;
use std::time::Duration;

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the WebSocket.
    PeerClosed,
    /// Nothing arrived from the peer within the idle timeout.
    IdleTimeout,
    /// The peer broke the protocol.
    Violation(String),
    /// The socket failed.
    Transport(String),
    /// This side closed it (fenced by a newer session, access revoked, shutting down).
    Local(String),
}

impl From<SessionEnd> for CloseReason {
    fn from(end: SessionEnd) -> Self {
        match end {
            SessionEnd::IdleTimeout => CloseReason::IdleTimeout,
            SessionEnd::Violation(m) => CloseReason::Violation(m),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => write!(f, "peer closed the tunnel"),
            CloseReason::IdleTimeout => write!(f, "{}", SessionEnd::IdleTimeout),
            CloseReason::Violation(m) => write!(f, "protocol violation: {m}"),
            CloseReason::Transport(m) => write!(f, "transport error: {m}"),
            CloseReason::Local(m) => write!(f, "closed locally: {m}"),
        }
    }
}

/// Why opening a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenStreamError {
    #[error("endpoint refused: {message}")]
    Refused { reason: OpenFailure, message: String },
    #[error("{0}")]
    Local(#[from] OpenError),
    #[error("no answer from the endpoint within {0:?}")]
    TimedOut(Duration),
    #[error("the endpoint reset the stream while opening it ({0:?})")]
    Reset(ResetReason),
    #[error("tunnel closed")]
    SessionClosed,
}

impl OpenStreamError {
    /// The kind of failure in a few words, the same for every failure of that kind (the
    /// message of a refusal may name the target): what refusals are counted by.
    pub fn class(&self) -> &'static str {
        match self {
            OpenStreamError::Refused { reason, .. } => match reason {
                OpenFailure::General => "refused by the endpoint",
                OpenFailure::NotAllowed => "not allowed by the endpoint's allowlist",
                OpenFailure::NetworkUnreachable => "network unreachable from the endpoint",
                OpenFailure::HostUnreachable => "host unreachable from the endpoint",
                OpenFailure::ConnectionRefused => "connection refused by the target",
                OpenFailure::TimedOut => "the target did not answer in time",
                OpenFailure::Busy => "the endpoint is at its stream capacity",
                OpenFailure::NotHeld => "the endpoint moved to another gateway node",
            },
            OpenStreamError::Local(OpenError::LimitReached(_)) => {
                "the endpoint's stream limit is reached"
            }
            OpenStreamError::Local(OpenError::IdsExhausted) => {
                "the tunnel's stream ids are exhausted"
            }
            OpenStreamError::TimedOut(_) => "no answer from the endpoint in time",
            OpenStreamError::Reset(_) => "reset while opening",
            OpenStreamError::SessionClosed => "the tunnel closed",
        }
    }
}
