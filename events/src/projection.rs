//! Running projections: read models fed from the log, each keeping its own checkpoint.
//!
//! A projection is disposable. It stores the position of the last event it applied *in the same
//! transaction* as the rows that event changed, so after a crash it resumes exactly where its data
//! stops; and [`rebuild`] from an empty store must give the same bytes as the live one.

use crate::codec::CodecError;
use crate::envelope::Recorded;
use crate::log::{EventLog, LogError};
use futures_util::StreamExt;
use ism_escape::escaped;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection storage failed: {0}")]
    Storage(String),
    #[error("projection row is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("projection did not reach position {wanted} within {timeout:?} (at {reached})")]
    Lagging { wanted: u64, reached: u64, timeout: Duration },
}

/// One stored key and its value.
pub type Row = (Vec<u8>, Vec<u8>);

/// A read model built from events.
pub trait Projection: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Position of the last event applied (0 when empty).
    fn checkpoint(&self) -> Result<u64, ProjectionError>;
    /// Applies one event and records its position as the checkpoint, atomically.
    fn apply(&self, rec: &Recorded) -> Result<(), ProjectionError>;
    /// Removes every row and the checkpoint.
    fn reset(&self) -> Result<(), ProjectionError>;
    /// Every stored key and value, in a deterministic order: two projections with equal dumps
    /// hold byte-identical content.
    fn dump(&self) -> Result<Vec<Row>, ProjectionError>;
    /// A record written with event schema `schema`, newer than this build's, was passed over:
    /// a projection that keeps its rows across restarts notes it, and starts over once opened by
    /// a build that reads that schema (see `ism_projectors`' stores), so that an upgraded node
    /// does not lack those events for good. Nothing to do for one held in memory.
    fn passed_over_newer(&self, _schema: u16) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// Watches a running projection's progress.
#[derive(Clone)]
pub struct ProjectionProgress {
    applied: watch::Receiver<u64>,
    events: broadcast::Sender<Recorded>,
    undecodable: Arc<AtomicU64>,
}

/// Events kept for slow followers of [`ProjectionProgress::applied_events`]; one that falls
/// further behind is told how many it missed.
const APPLIED_EVENTS_BUFFER: usize = 4096;

impl ProjectionProgress {
    /// Position of the last applied event.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Records of the log this projection passed over since it started because they do not
    /// decode (each is logged once): what an operator is shown, since the read model lacks them.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// Every event from now on, each handed out *after* the projection applied it, so a follower
    /// that reacts to an event can rely on the projection already showing it.
    pub fn applied_events(&self) -> broadcast::Receiver<Recorded> {
        self.events.subscribe()
    }

    /// Waits until the projection has applied `position`: how a request that just appended an
    /// event reads its own write.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<(), ProjectionError> {
        let mut rx = self.applied.clone();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => {
                Err(ProjectionError::Lagging { wanted: position, reached: self.applied(), timeout })
            }
        }
    }
}

/// Feeds `projection` from `log`, from its checkpoint on, forever; resubscribes after log
/// failures (a NATS restart, say) from wherever it got to. A record that does not decode is
/// passed over, logged and counted ([`ProjectionProgress::undecodable`]): retrying it would hold
/// the projection, and every node waiting for it, at that record for ever. The stored checkpoint
/// moves past it with the next event applied; until then a restart passes it over (and logs it)
/// once more.
pub fn spawn_projection<P: Projection>(
    log: Arc<dyn EventLog>,
    projection: Arc<P>,
) -> Result<ProjectionProgress, ProjectionError> {
    let start = projection.checkpoint()?;
    let (tx, rx) = watch::channel(start);
    let (events, _) = broadcast::channel(APPLIED_EVENTS_BUFFER);
    let undecodable = Arc::new(AtomicU64::new(0));
    let feed = Feed { applied: tx, observer: events.clone(), undecodable: undecodable.clone() };
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match feed.run(&*log, &*projection).await {
                Ok(()) => return, // every progress watcher is gone
                Err(e) => {
                    tracing::warn!(projection = projection.name(), error = %e, "projection feed interrupted; resubscribing");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
    Ok(ProjectionProgress { applied: rx, events, undecodable })
}

/// A running projection's side of its [`ProjectionProgress`].
struct Feed {
    /// The position reached: the last event applied, or the last record passed over.
    applied: watch::Sender<u64>,
    observer: broadcast::Sender<Recorded>,
    undecodable: Arc<AtomicU64>,
}

impl Feed {
    /// Applies the log from the position reached on, until the log fails (an error) or nobody
    /// watches the progress any more.
    async fn run<P: Projection + ?Sized>(
        &self,
        log: &dyn EventLog,
        projection: &P,
    ) -> Result<(), ProjectionError> {
        let from = *self.applied.borrow();
        let mut events = log.subscribe(from).await?;
        while let Some(item) = events.next().await {
            let (position, read) = readable(item)?;
            if position <= *self.applied.borrow() {
                continue;
            }
            let applied = match read {
                Ok(rec) => {
                    projection.apply(&rec)?;
                    Some(rec)
                }
                Err(source) => {
                    self.pass_over(projection.name(), position, &source);
                    if let CodecError::FromTheFuture { found } = source {
                        projection.passed_over_newer(found)?;
                    }
                    None
                }
            };
            if self.applied.send(position).is_err() {
                return Ok(());
            }
            // No follower yet is fine: nothing is running that could need enforcing.
            if let Some(rec) = applied {
                let _ = self.observer.send(rec);
            }
        }
        Err(LogError::Unavailable("event subscription ended".into()).into())
    }

    /// Counts a record that does not decode and says so, once (the position moves past it): the
    /// log keeps it, for a node of a newer build to read; this projection goes on without it.
    fn pass_over(&self, projection: &'static str, position: u64, error: &CodecError) {
        self.undecodable.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            projection,
            position,
            error = %escaped(error),
            "event log record does not decode: passed over (written by a newer build, or not an event)"
        );
    }
}

/// One item of the log's feed as a projection takes it: where it is, and its event or why it
/// does not decode (such a record is passed over, not retried: it would fail again for ever).
/// Any other failure is the log's (unreachable, say), for the caller to retry.
fn readable(
    item: Result<Recorded, LogError>,
) -> Result<(u64, Result<Recorded, CodecError>), LogError> {
    match item {
        Ok(rec) => Ok((rec.position, Ok(rec))),
        Err(LogError::Undecodable { position, source }) => Ok((position, Err(source))),
        Err(e) => Err(e),
    }
}

/// Empties `projection` and replays the log into it up to the log's current head. Returns the
/// position reached.
pub async fn rebuild<P: Projection + ?Sized>(
    log: &dyn EventLog,
    projection: &P,
) -> Result<u64, ProjectionError> {
    let head = log.head().await?;
    rebuild_to(log, projection, head).await
}

/// Empties `projection` and replays the log into it up to position `head` (inclusive), passing
/// over records that do not decode.
pub async fn rebuild_to<P: Projection + ?Sized>(
    log: &dyn EventLog,
    projection: &P,
    head: u64,
) -> Result<u64, ProjectionError> {
    projection.reset()?;
    if head == 0 {
        return Ok(0);
    }
    let mut events = log.subscribe(0).await?;
    while let Some(item) = events.next().await {
        let (position, read) = readable(item)?;
        // What does not decode is passed over as the live projection does (which logs and
        // counts it), noted alike, so a rebuild gives the same content.
        if let Err(CodecError::FromTheFuture { found }) = &read {
            projection.passed_over_newer(*found)?;
        }
        if let Ok(rec) = read {
            projection.apply(&rec)?;
        }
        if position >= head {
            return Ok(position);
        }
    }
    Err(LogError::Unavailable("event subscription ended during rebuild".into()).into())
}

/// Helpers for tests of projections, here and in other crates (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::{Projection, ProjectionError, Row};
    use crate::envelope::Recorded;
    use std::sync::Mutex;

    /// A projection that keeps the positions of the events it applied, in memory: what a test of
    /// the projection driver needs to see which events reached a projection, and in what order.
    #[derive(Default)]
    pub struct Positions {
        applied: Mutex<Vec<u64>>,
        newer: Mutex<Vec<u16>>,
    }

    impl Positions {
        /// The positions applied, in order.
        pub fn applied(&self) -> Vec<u64> {
            self.applied.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }

        /// The newer schemas of the records passed over, in order.
        pub fn passed_over_newer(&self) -> Vec<u16> {
            self.newer.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    impl Projection for Positions {
        fn name(&self) -> &'static str {
            "positions"
        }

        fn checkpoint(&self) -> Result<u64, ProjectionError> {
            Ok(self.applied().last().copied().unwrap_or(0))
        }

        fn apply(&self, rec: &Recorded) -> Result<(), ProjectionError> {
            self.applied.lock().unwrap_or_else(|p| p.into_inner()).push(rec.position);
            Ok(())
        }

        fn reset(&self) -> Result<(), ProjectionError> {
            self.applied.lock().unwrap_or_else(|p| p.into_inner()).clear();
            Ok(())
        }

        fn passed_over_newer(&self, schema: u16) -> Result<(), ProjectionError> {
            self.newer.lock().unwrap_or_else(|p| p.into_inner()).push(schema);
            Ok(())
        }

        fn dump(&self) -> Result<Vec<Row>, ProjectionError> {
            Ok(self.applied().iter().map(|p| (p.to_be_bytes().to_vec(), Vec::new())).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Positions;
    use super::*;
    use crate::embedded::EmbeddedLog;
    use crate::envelope::{AggregateId, Cause, Envelope};
    use crate::event::{Event, SCHEMA_VERSION};

    /// Generous: a projection that gets there does so in milliseconds.
    const PATIENCE: Duration = Duration::from_secs(30);

    fn activated() -> Envelope {
        let gateway = AggregateId::gateway(uuid::Uuid::new_v4());
        Envelope::new(gateway, 1, 0, Cause::default(), Event::GatewayActivated { node: "n".into() })
    }

    /// An event, then garbage, then an event of a newer catalogue than this build's, then an
    /// event: positions 1 to 4.
    async fn log_with_undecodable_records(dir: &std::path::Path) -> EmbeddedLog {
        let log = EmbeddedLog::open(dir).unwrap();
        log.append(&activated()).await.unwrap();
        log.append_raw(b"\xc1 not an event").await;
        let mut newer = activated();
        newer.schema = SCHEMA_VERSION + 1;
        log.append_raw(&crate::codec::encode(&newer).unwrap()).await;
        log.append(&activated()).await.unwrap();
        log
    }

    #[tokio::test]
    async fn a_projection_passes_over_records_that_do_not_decode() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(log_with_undecodable_records(dir.path()).await);
        let projection = Arc::new(Positions::default());
        let progress = spawn_projection(log.clone(), projection.clone()).unwrap();
        let reached = progress.wait_for(4, PATIENCE).await;
        assert!(reached.is_ok(), "{reached:?}");
        assert_eq!(projection.applied(), [1, 4]);
        assert_eq!(progress.undecodable(), 2);
        assert_eq!(projection.passed_over_newer(), [SCHEMA_VERSION + 1], "noted, to start over");
        // The log keeps them.
        assert_eq!(log.head().await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_rebuild_passes_over_records_that_do_not_decode() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_undecodable_records(dir.path()).await;
        let projection = Positions::default();
        assert_eq!(rebuild(&log, &projection).await.unwrap(), 4);
        assert_eq!(projection.applied(), [1, 4]);
        assert_eq!(projection.passed_over_newer(), [SCHEMA_VERSION + 1]);
    }
}
