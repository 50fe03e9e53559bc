//! The scanner streams running through this node, by endpoint, each with the token that stops
//! it: what access enforcement stops when access is withdrawn, and what a stopping node waits
//! for. Depends on nothing else of the node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One stream in progress, as far as access is concerned.
struct Running {
    credential: Uuid,
    stop: CancellationToken,
}

/// The streams running through this node.
pub struct RunningStreams {
    next: AtomicU64,
    by_endpoint: Mutex<HashMap<Uuid, HashMap<u64, Running>>>,
    /// How many streams run, for those who wait for a change (a stopping node, tests).
    total: watch::Sender<usize>,
}

impl Default for RunningStreams {
    fn default() -> Self {
        Self { next: AtomicU64::new(0), by_endpoint: Mutex::default(), total: watch::channel(0).0 }
    }
}

/// Deregisters its stream when dropped.
pub struct StreamGuard<'a> {
    streams: &'a RunningStreams,
    endpoint: Uuid,
    id: u64,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.streams.lock();
        if let Some(m) = map.get_mut(&self.endpoint) {
            if m.remove(&self.id).is_some() {
                self.streams.total.send_modify(|n| *n -= 1);
            }
            if m.is_empty() {
                map.remove(&self.endpoint);
            }
        }
    }
}

impl RunningStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, HashMap<u64, Running>>> {
        self.by_endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a stream through `endpoint` with `credential`; `stop` is cancelled if access is
    /// withdrawn.
    pub fn register(
        &self,
        endpoint: Uuid,
        credential: Uuid,
        stop: CancellationToken,
    ) -> StreamGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(endpoint).or_default().insert(id, Running { credential, stop });
        self.total.send_modify(|n| *n += 1);
        StreamGuard { streams: self, endpoint, id }
    }

    /// Stops the endpoint's streams whose credential `allowed` refuses; returns how many.
    pub fn stop_refused(&self, endpoint: Uuid, allowed: impl Fn(Uuid) -> bool) -> usize {
        let map = self.lock();
        let Some(streams) = map.get(&endpoint) else { return 0 };
        let mut stopped = 0;
        for s in streams.values().filter(|s| !allowed(s.credential)) {
            s.stop.cancel();
            stopped += 1;
        }
        stopped
    }

    /// Endpoints with streams on this node.
    pub fn endpoints(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    /// Streams running through `endpoint` on this node.
    pub fn count(&self, endpoint: Uuid) -> usize {
        self.lock().get(&endpoint).map_or(0, HashMap::len)
    }

    /// Whether no stream runs through this node.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Streams running through this node.
    pub fn total(&self) -> usize {
        *self.total.borrow()
    }

    /// Waits until the number of running streams satisfies `done`.
    pub async fn wait_for(&self, done: impl Fn(usize) -> bool) {
        let _ = self.total.subscribe().wait_for(|n| done(*n)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_counted_stopped_by_credential_and_forgotten_when_dropped() {
        let streams = RunningStreams::default();
        let (endpoint, ok, revoked) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let (keep, stop) = (CancellationToken::new(), CancellationToken::new());
        let kept = streams.register(endpoint, ok, keep.clone());
        let stopped = streams.register(endpoint, revoked, stop.clone());
        assert_eq!((streams.count(endpoint), streams.endpoints()), (2, vec![endpoint]));
        assert_eq!(streams.total(), 2);
        assert_eq!(streams.stop_refused(endpoint, |c| c == ok), 1);
        assert!(stop.is_cancelled() && !keep.is_cancelled());
        drop(stopped);
        assert_eq!(streams.count(endpoint), 1, "a stopped stream stays until its guard is gone");
        drop(kept);
        assert!(streams.is_empty() && streams.endpoints().is_empty());
        assert_eq!(streams.total(), 0);
    }
}
