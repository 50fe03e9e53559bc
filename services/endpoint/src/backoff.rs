//! Reconnect pacing: exponential backoff with full jitter, a fast first retry, and a reset once a
//! session has been stable, so a fleet of endpoints does not reconnect in lock-step after a
//! gateway restart, and a single blip costs well under a second.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        let seed = random_seed();
        Self { base, cap, attempt: 0, seed }
    }

    /// The wait before the next attempt: uniform in [0, min(cap, base * 2^attempt)].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << self.attempt.min(20)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64*: plenty for spreading reconnects.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let fraction = (self.seed % 10_000) as f64 / 10_000.0;
        ceiling.mul_f64(fraction)
    }

    /// Call after a session stayed up long enough to count as stable.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A non-zero seed from the OS, so endpoints restarted together still spread out.
fn random_seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first <= Duration::from_millis(100));
        for _ in 0..30 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn delays_are_spread() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let ds: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(ds.iter().any(|d| *d != ds[0]), "full jitter must vary");
    }
}
