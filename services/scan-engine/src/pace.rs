//! The politeness delay: requests start at least `1 / rate` seconds apart, so a scan never loads
//! a production app more than its plan allows. Time is passed in; the scan sleeps.

use std::time::Duration;
use tokio::time::Instant;

/// When the next request may start.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    /// The earliest start of the next request (`None` before the first).
    next: Option<Instant>,
}

impl Pacer {
    /// A pacer for at most `rate_per_second` requests a second (a validated plan's rate).
    pub fn new(rate_per_second: f64) -> Pacer {
        let rate = if rate_per_second.is_finite() { rate_per_second.max(0.01) } else { 1.0 };
        Pacer { interval: Duration::from_secs_f64(1.0 / rate), next: None }
    }

    /// How long to wait, from `now`, before the next request starts; the request is counted as
    /// started then.
    pub fn delay(&mut self, now: Instant) -> Duration {
        let start = self.next.map_or(now, |next| next.max(now));
        self.next = Some(start + self.interval);
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spaced_by_the_interval_and_never_bunch_up() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut pacer = Pacer::new(10.0);
        assert_eq!(pacer.delay(t0), Duration::ZERO, "the first request goes at once");
        assert_eq!(pacer.delay(t0), ms(100));
        // The second started at t0 + 100 ms: the third may start at t0 + 200 ms.
        assert_eq!(pacer.delay(t0 + ms(150)), ms(50));
        // A slow response: nothing is owed, and no burst follows the pause.
        assert_eq!(pacer.delay(t0 + ms(5000)), Duration::ZERO);
        assert_eq!(pacer.delay(t0 + ms(5010)), ms(90));
    }

    #[test]
    fn n_requests_take_at_least_n_minus_one_intervals() {
        let mut pacer = Pacer::new(4.0);
        let mut now = Instant::now();
        let start = now;
        for _ in 0..9 {
            now += pacer.delay(now);
        }
        assert_eq!(now - start, Duration::from_secs(2));
        assert_eq!(Pacer::new(0.1).delay(now) + Pacer::new(0.1).interval, Duration::from_secs(10));
    }
}
