//! What stream tasks use to reach their session: the control queue to the driver (accepted,
//! consumed, finished, reset) and the session's outbox. [`crate::session`] owns the receiving
//! end and [`crate::stream`] sends; this module depends on neither, so dependencies run one way.

use crate::moved::Home;
use crate::outbox::Outbox;
use ism_tunnel_proto::{Frame, OpenFailure, ResetReason, StreamId};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What stream tasks tell the driver about their stream.
pub(crate) enum Control {
    Accept { stream: StreamId, reply: oneshot::Sender<Option<Frame>> },
    Reject { stream: StreamId, reason: OpenFailure, message: String },
    Consumed { stream: StreamId, len: usize },
    LocalFin { stream: StreamId },
    LocalReset { stream: StreamId, reason: ResetReason },
}

/// What a stream task needs to reach its session: the driver, the way out, where the session's
/// tasks run, and the largest `Data` payload the peer accepts.
#[derive(Clone)]
pub(crate) struct Lanes {
    pub control: mpsc::UnboundedSender<Control>,
    pub outbox: Arc<Outbox>,
    pub home: Home,
    pub max_data: usize,
}
