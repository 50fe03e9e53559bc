//! The event-log interface. Two real backends implement it: [`crate::embedded::EmbeddedLog`]
//! (sled, in-process, the single-node default) and [`crate::jetstream::JetStreamLog`] (NATS
//! JetStream, for clusters). `conformance` (feature `testing`) holds the one test suite both must pass.

use crate::codec::{self, CodecError};
use crate::envelope::{AggregateId, Envelope, Recorded};
use futures_util::stream::BoxStream;

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Someone else appended to the aggregate first: reload it and decide again.
    #[error("concurrent change to {aggregate}: expected version {expected}, found {actual}")]
    Conflict { aggregate: AggregateId, expected: u64, actual: u64 },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Failures of the log itself.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log storage failed: {0}")]
    Storage(String),
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// One stored record does not decode (garbage on the log, or an event of a newer catalogue
    /// during a rolling upgrade). Unlike the other errors it is about that record alone: a reader
    /// passes over it and goes on with the next, so projections are not held up by it for ever.
    #[error("the record at position {position} does not decode: {source}")]
    Undecodable { position: u64, source: CodecError },
}

/// The record stored at `position` as `bytes`; one that does not decode is
/// [`LogError::Undecodable`], naming where it is.
pub(crate) fn recorded(position: u64, bytes: &[u8]) -> Result<Recorded, LogError> {
    match codec::decode(bytes) {
        Ok(envelope) => Ok(Recorded { position, envelope }),
        Err(source) => Err(LogError::Undecodable { position, source }),
    }
}

/// A live feed of the log: first everything after the requested position, then new events as
/// they are appended, in position order. A record that does not decode comes as
/// [`LogError::Undecodable`] in its place and the feed goes on; any other error ends it.
pub type EventStream = BoxStream<'static, Result<Recorded, LogError>>;

#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends `envelope` as version `envelope.sequence` of its aggregate, only if the aggregate
    /// is currently at `envelope.sequence - 1` (optimistic concurrency). Returns its position.
    async fn append(&self, envelope: &Envelope) -> Result<u64, AppendError>;

    /// Appends several events of one aggregate, with consecutive sequences, the first checked
    /// against the aggregate's current version like [`append`](Self::append). Returns their
    /// positions. The embedded log writes the batch atomically and makes it durable once, which
    /// is what lets the data path record every stream without an fsync each.
    async fn append_batch(&self, batch: &[Envelope]) -> Result<Vec<u64>, AppendError> {
        let mut positions = Vec::with_capacity(batch.len());
        for e in batch {
            positions.push(self.append(e).await?);
        }
        Ok(positions)
    }

    /// The aggregate's current version (0 when it has no events): what a cached copy must match
    /// to be trusted.
    async fn version(&self, aggregate: &AggregateId) -> Result<u64, LogError>;

    /// Every event of one aggregate, oldest first.
    async fn read_aggregate(&self, aggregate: &AggregateId) -> Result<Vec<Recorded>, LogError>;

    /// Everything after position `after` (0 = from the beginning), then live.
    async fn subscribe(&self, after: u64) -> Result<EventStream, LogError>;

    /// Position of the last event in the log (0 when empty).
    async fn head(&self) -> Result<u64, LogError>;

    /// Which backend this is, for logs and status.
    fn describe(&self) -> String;
}
