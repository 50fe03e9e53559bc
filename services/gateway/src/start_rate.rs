//! How often one endpoint may start a working session on a node.
//!
//! Every session start is recorded (`TunnelOpened`, then `TunnelClosed`) and, in a cluster,
//! claims the endpoint in the coordination store. An agent backs off from 200 ms to 30 s between
//! rounds of attempts and starts fast again only after a session that lasted a minute; within a
//! round it tries the next gateway address at once, so an agent whose sessions die as soon as they
//! start (a broken network path, a broken build), or whoever holds a copy of the key and the
//! machine identity, would otherwise write two events and a claim per loop, thousands a second,
//! into a log kept for audits. Beyond the bound the node refuses the start as unavailable (the
//! agent takes it as a refusal to retry, after its backoff), before anything is recorded; the
//! session the endpoint holds is left alone.
//!
//! The rule is the generic cell rate algorithm: per endpoint one time, the earliest moment at
//! which the bucket would be full again; a start moves it one interval on; a start is refused
//! when that would put it more than a burst of intervals ahead of now. Times are passed in.

use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Starts one endpoint may make at once on a node, before the sustained rate applies.
pub const BURST: u32 = 20;

/// Once the burst is spent, one start per interval: ten a minute.
pub const INTERVAL: Duration = Duration::from_secs(6);

/// Session starts per endpoint on one node.
#[derive(Debug)]
pub struct StartRate {
    interval_ms: i64,
    /// How far ahead of now an endpoint's time may be and still start: a burst less one interval.
    tolerance_ms: i64,
    /// Per endpoint, when its bucket would be full again.
    full_at: HashMap<Uuid, i64>,
    /// When endpoints whose buckets are full were last let go, so the map holds only endpoints
    /// that started recently.
    swept_ms: i64,
}

impl Default for StartRate {
    fn default() -> Self {
        Self::new(BURST, INTERVAL)
    }
}

impl StartRate {
    pub fn new(burst: u32, interval: Duration) -> Self {
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        Self {
            interval_ms,
            tolerance_ms: interval_ms.saturating_mul(i64::from(burst.max(1) - 1)),
            full_at: HashMap::new(),
            swept_ms: i64::MIN,
        }
    }

    /// Counts a start of `endpoint` at `now_ms`, or says how long it must wait for one.
    pub fn start(&mut self, endpoint: Uuid, now_ms: i64) -> Result<(), Duration> {
        self.sweep(now_ms);
        // Under a clock that only goes forward an endpoint's time is never further ahead than a
        // burst; a wall clock stepped back would otherwise hold its starts back by the step.
        let furthest = now_ms.saturating_add(self.tolerance_ms).saturating_add(self.interval_ms);
        let full_at = self.full_at.get(&endpoint).map_or(now_ms, |&at| at.clamp(now_ms, furthest));
        let ahead = full_at - now_ms;
        if ahead > self.tolerance_ms {
            self.full_at.insert(endpoint, full_at);
            let wait = u64::try_from(ahead - self.tolerance_ms).unwrap_or(0);
            return Err(Duration::from_millis(wait));
        }
        self.full_at.insert(endpoint, full_at.saturating_add(self.interval_ms));
        Ok(())
    }

    /// Lets go of endpoints whose buckets are full again, at most once per burst's length.
    fn sweep(&mut self, now_ms: i64) {
        if now_ms.saturating_sub(self.swept_ms) < self.tolerance_ms.max(self.interval_ms) {
            return;
        }
        self.swept_ms = now_ms;
        self.full_at.retain(|_, full_at| *full_at > now_ms);
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.full_at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1000;

    #[test]
    fn a_burst_starts_then_one_per_interval() {
        let mut rate = StartRate::new(3, Duration::from_secs(6));
        let e = Uuid::new_v4();
        for _ in 0..3 {
            assert_eq!(rate.start(e, 0), Ok(()));
        }
        assert_eq!(rate.start(e, 0), Err(Duration::from_secs(6)));
        assert_eq!(rate.start(e, 4 * SECOND), Err(Duration::from_secs(2)));
        assert_eq!(rate.start(e, 6 * SECOND), Ok(()));
        assert_eq!(rate.start(e, 6 * SECOND), Err(Duration::from_secs(6)));
        // A refused start costs nothing: the wait does not grow by asking.
        assert_eq!(rate.start(e, 7 * SECOND), Err(Duration::from_secs(5)));
        assert_eq!(rate.start(e, 12 * SECOND), Ok(()));
    }

    #[test]
    fn endpoints_have_buckets_of_their_own() {
        let mut rate = StartRate::new(1, Duration::from_secs(6));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(rate.start(a, 0), Ok(()));
        assert!(rate.start(a, 0).is_err());
        assert_eq!(rate.start(b, 0), Ok(()));
    }

    #[test]
    fn a_quiet_endpoint_gets_its_whole_burst_back_and_is_forgotten() {
        let mut rate = StartRate::new(2, Duration::from_secs(6));
        let (e, other) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(rate.start(e, 0), Ok(()));
        assert_eq!(rate.start(e, 0), Ok(()));
        assert!(rate.start(e, 0).is_err());
        assert_eq!(rate.start(e, 60 * SECOND), Ok(()));
        assert_eq!(rate.start(e, 60 * SECOND), Ok(()));
        assert!(rate.start(e, 60 * SECOND).is_err());
        // Once its bucket is full again, the next sweep lets it go.
        assert_eq!(rate.start(other, 120 * SECOND), Ok(()));
        assert_eq!(rate.remembered(), 1);
    }

    #[test]
    fn a_clock_stepped_back_holds_starts_back_one_interval_at_most() {
        let mut rate = StartRate::new(2, Duration::from_secs(6));
        let e = Uuid::new_v4();
        assert_eq!(rate.start(e, 100 * SECOND), Ok(()));
        assert_eq!(rate.start(e, 100 * SECOND), Ok(()));
        assert_eq!(rate.start(e, 50 * SECOND), Err(Duration::from_secs(6)));
        assert_eq!(rate.start(e, 56 * SECOND), Ok(()));
    }
}
