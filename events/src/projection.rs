//! Running projections: read models fed from the log, each keeping its own checkpoint.
//!
//! A projection is disposable. It stores the position of the last event it applied *in the same
//! transaction* as the rows that event changed, so after a crash it resumes exactly where its data
//! stops; and [`rebuild`] from an empty store must give the same bytes as the live one.

use crate::envelope::Recorded;
use crate::log::{EventLog, LogError};
use futures_util::StreamExt;
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
}

/// Watches a running projection's progress.
#[derive(Clone)]
pub struct ProjectionProgress {
    applied: watch::Receiver<u64>,
    events: broadcast::Sender<Recorded>,
}

/// Events kept for slow followers of [`ProjectionProgress::applied_events`]; one that falls
/// further behind is told how many it missed.
const APPLIED_EVENTS_BUFFER: usize = 4096;

impl ProjectionProgress {
    /// Position of the last applied event.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
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
/// failures (a NATS restart, say) from wherever it got to.
pub fn spawn_projection<P: Projection>(
    log: Arc<dyn EventLog>,
    projection: Arc<P>,
) -> Result<ProjectionProgress, ProjectionError> {
    let start = projection.checkpoint()?;
    let (tx, rx) = watch::channel(start);
    let (events, _) = broadcast::channel(APPLIED_EVENTS_BUFFER);
    let observer = events.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let from = *tx.borrow();
            match feed(&*log, &*projection, from, &tx, &observer).await {
                Ok(()) => return, // every progress watcher is gone
                Err(e) => {
                    tracing::warn!(projection = projection.name(), error = %e, "projection feed interrupted; resubscribing");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
    Ok(ProjectionProgress { applied: rx, events })
}

async fn feed<P: Projection + ?Sized>(
    log: &dyn EventLog,
    projection: &P,
    from: u64,
    tx: &watch::Sender<u64>,
    observer: &broadcast::Sender<Recorded>,
) -> Result<(), ProjectionError> {
    let mut events = log.subscribe(from).await?;
    while let Some(rec) = events.next().await {
        let rec = rec?;
        if rec.position <= *tx.borrow() {
            continue;
        }
        projection.apply(&rec)?;
        if tx.send(rec.position).is_err() {
            return Ok(());
        }
        // No follower yet is fine: nothing is running that could need enforcing.
        let _ = observer.send(rec);
    }
    Err(LogError::Unavailable("event subscription ended".into()).into())
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

/// Empties `projection` and replays the log into it up to position `head` (inclusive).
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
    while let Some(rec) = events.next().await {
        let rec = rec?;
        projection.apply(&rec)?;
        if rec.position >= head {
            return Ok(rec.position);
        }
    }
    Err(LogError::Unavailable("event subscription ended during rebuild".into()).into())
}
