//! The queues between a session's tasks: what stream tasks tell the driver, and the ordered
//! queue of frames they hand the writer. [`crate::session`] owns the receiving ends and
//! [`crate::stream`] sends; this module depends on neither, so dependencies run one way.

use bytes::Bytes;
use ism_tunnel_proto::{Frame, OpenFailure, ResetReason, StreamId};
use tokio::sync::{mpsc, oneshot};

/// What stream tasks tell the driver about their stream.
pub(crate) enum Control {
    Accept { stream: StreamId, reply: oneshot::Sender<Option<Frame>> },
    Reject { stream: StreamId, reason: OpenFailure, message: String },
    Consumed { stream: StreamId, len: usize },
    LocalFin { stream: StreamId },
    LocalReset { stream: StreamId, reason: ResetReason },
}

/// The queues a stream task needs to reach its session.
#[derive(Clone)]
pub(crate) struct Lanes {
    pub control: mpsc::UnboundedSender<Control>,
    pub ordered: mpsc::Sender<Outgoing>,
}

/// An encoded frame for the ordered queue. A data frame carries its stream's turn, released when
/// the writer takes the frame: each stream has at most one data frame waiting, so the frames of
/// a small request interleave with a bulk transfer's instead of queuing behind all of them.
pub(crate) struct Outgoing {
    pub frame: Bytes,
    /// Held, not read: dropping it gives the stream its turn back.
    pub _turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl From<Bytes> for Outgoing {
    fn from(frame: Bytes) -> Self {
        Outgoing { frame, _turn: None }
    }
}
