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

/// A credential already runs as many streams as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReached(pub usize);

/// The streams running through this node.
pub struct RunningStreams {
    next: AtomicU64,
    by_endpoint: Mutex<Streams>,
    /// How many streams run, for those who wait for a change (a stopping node, tests).
    total: watch::Sender<usize>,
}

/// Running streams by endpoint, and how many each credential runs.
#[derive(Default)]
struct Streams {
    by_endpoint: HashMap<Uuid, HashMap<u64, Running>>,
    by_credential: HashMap<Uuid, usize>,
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
        let mut all = self.streams.lock();
        let Some(m) = all.by_endpoint.get_mut(&self.endpoint) else { return };
        if let Some(running) = m.remove(&self.id) {
            if m.is_empty() {
                all.by_endpoint.remove(&self.endpoint);
            }
            if let Some(n) = all.by_credential.get_mut(&running.credential) {
                *n -= 1;
                if *n == 0 {
                    all.by_credential.remove(&running.credential);
                }
            }
            self.streams.total.send_modify(|n| *n -= 1);
        }
    }
}

impl RunningStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.by_endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a stream through `endpoint` with `credential`, unless that credential already
    /// runs `quota` streams on this node (so one scanner cannot take every slot of an endpoint);
    /// `stop` is cancelled if access is withdrawn.
    pub fn register(
        &self,
        endpoint: Uuid,
        credential: Uuid,
        stop: CancellationToken,
        quota: usize,
    ) -> Result<StreamGuard<'_>, QuotaReached> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut all = self.lock();
        let running = all.by_credential.entry(credential).or_default();
        if *running >= quota {
            return Err(QuotaReached(quota));
        }
        *running += 1;
        all.by_endpoint.entry(endpoint).or_default().insert(id, Running { credential, stop });
        self.total.send_modify(|n| *n += 1);
        Ok(StreamGuard { streams: self, endpoint, id })
    }

    /// Stops the endpoint's streams whose credential `allowed` refuses; returns how many.
    pub fn stop_refused(&self, endpoint: Uuid, allowed: impl Fn(Uuid) -> bool) -> usize {
        let all = self.lock();
        let Some(streams) = all.by_endpoint.get(&endpoint) else { return 0 };
        let mut stopped = 0;
        for s in streams.values().filter(|s| !allowed(s.credential)) {
            s.stop.cancel();
            stopped += 1;
        }
        stopped
    }

    /// Endpoints with streams on this node.
    pub fn endpoints(&self) -> Vec<Uuid> {
        self.lock().by_endpoint.keys().copied().collect()
    }

    /// Streams running through `endpoint` on this node.
    pub fn count(&self, endpoint: Uuid) -> usize {
        self.lock().by_endpoint.get(&endpoint).map_or(0, HashMap::len)
    }

    /// Whether no stream runs through this node.
    pub fn is_empty(&self) -> bool {
        self.lock().by_endpoint.is_empty()
    }

    /// Streams running through this node.
    pub fn total(&self) -> usize {
        *self.total.borrow()
    }

    /// How many streams were ever registered here: unchanged means none started since.
    pub fn started(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
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
        let kept = streams.register(endpoint, ok, keep.clone(), 8).unwrap();
        let stopped = streams.register(endpoint, revoked, stop.clone(), 8).unwrap();
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

    #[test]
    fn a_credential_runs_at_most_its_quota_and_frees_it_as_streams_end() {
        let streams = RunningStreams::default();
        let (a, b, scanner, other) =
            (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), Uuid::from_u128(4));
        let first = streams.register(a, scanner, CancellationToken::new(), 2).unwrap();
        let _second = streams.register(b, scanner, CancellationToken::new(), 2).unwrap();
        let refused = streams.register(a, scanner, CancellationToken::new(), 2);
        assert_eq!(refused.err(), Some(QuotaReached(2)), "the quota spans endpoints");
        assert!(streams.register(a, other, CancellationToken::new(), 2).is_ok(), "per credential");
        drop(first);
        assert!(streams.register(a, scanner, CancellationToken::new(), 2).is_ok(), "freed");
    }
}
