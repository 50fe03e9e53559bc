//! Scanner streams beyond an endpoint's stream cap wait for a slot instead of being refused at
//! once, so that a burst of opens (a scanner starting its crawl) is absorbed: at most
//! `--stream-queue` wait per endpoint session, each for at most `--queue-timeout`. A stream that
//! finds the queue full, or whose wait runs out, is refused `Busy` with a message that says
//! which (SOCKS general failure, HTTP 503).
//!
//! Each freed slot wakes one waiting stream, the longest waiting first; one that loses the slot
//! to a new stream (which does not queue while the session is below its cap) waits again at the
//! back.

use ism_tunnel::{OpenStreamError, Session, TunnelStream};
use ism_tunnel_proto::{OpenError, OpenFailure, TargetAddr, TraceParent};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How many streams may wait per endpoint session, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub length: usize,
    pub timeout: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self { length: 256, timeout: Duration::from_secs(30) }
    }
}

/// The streams waiting for a slot of one endpoint session.
#[derive(Debug, Default, Clone)]
pub struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    /// Streams waiting now.
    pub fn len(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place in the queue, unless `limit` streams wait already.
    fn join(&self, limit: usize) -> Option<Place> {
        let joined = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1));
        joined.ok().map(|_| Place(self.0.clone()))
    }
}

/// A stream's place in the queue, given up when dropped.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Opens a stream to `target` through an endpoint's `session`, waiting among the session's
/// `waiting` streams while it is at its stream cap.
pub async fn open(
    session: &Session,
    waiting: &Waiting,
    target: TargetAddr,
    trace: Option<TraceParent>,
    limits: QueueLimits,
) -> Result<TunnelStream, OpenStreamError> {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut place = None;
    loop {
        let freed = session.slot_freed();
        tokio::pin!(freed);
        freed.as_mut().enable();
        let cap = match session.open_stream_traced(target.clone(), trace).await {
            Err(OpenStreamError::Local(OpenError::LimitReached(cap))) => cap,
            opened => return opened,
        };
        if place.is_none() {
            place = Some(waiting.join(limits.length).ok_or_else(|| busy(format!(
                "all {cap} streams of the endpoint are in use and {} more are waiting (--stream-queue)",
                limits.length
            )))?);
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            return Err(busy(format!(
                "all {cap} streams of the endpoint stayed in use for {:?} while this one waited (--queue-timeout)",
                limits.timeout
            )));
        }
    }
}

fn busy(message: String) -> OpenStreamError {
    OpenStreamError::Refused { reason: OpenFailure::Busy, message }
}
