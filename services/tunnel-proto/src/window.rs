//! Receive-side credit accounting for one stream.
//!
//! The receiver grants the sender a window of bytes when the stream opens. Every byte received
//! uses credit; credit comes back only when the application has *consumed* bytes (written them to
//! the target or scanner socket), so a slow consumer throttles exactly its own stream and no other.
//! Credit is returned in batches of at least half of what the stream holds, which keeps `Window`
//! frames rare.
//!
//! The credit a stream holds (its *allowance*) follows a target the session sets at each grant:
//! every byte of credit a bulk stream holds can sit in the shared link ahead of another stream's
//! request, so a stream that shares the link is held to a smaller allowance than one alone
//! (see [`crate::table`]). Shrinking withholds consumed bytes instead of granting them back;
//! growing grants more than was consumed. The window is the ceiling; a stream may start below it.

/// A sender exceeded the credit it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("peer sent {received} bytes with only {credit} bytes of credit")]
pub struct FlowViolation {
    pub received: usize,
    pub credit: u64,
}

/// Receive window of one stream.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    /// The window advertised at open: the most this stream is ever allowed.
    window: u32,
    /// Credit this stream currently holds in total: `peer_credit + buffered + unacked`.
    allowance: u64,
    /// Bytes the peer may still send before it must wait for a `Window` frame.
    peer_credit: u64,
    /// Bytes received and consumed locally but not yet granted back.
    unacked: u64,
    /// Bytes received and not yet consumed (buffered between reader and consumer).
    buffered: u64,
}

impl RecvWindow {
    pub fn new(window: u32) -> Self {
        Self::starting_with(window, window)
    }

    /// A window of at most `window` whose peer starts with `initial` of it (the rest can be
    /// granted later).
    pub fn starting_with(window: u32, initial: u32) -> Self {
        let initial = u64::from(initial.min(window));
        Self { window, allowance: initial, peer_credit: initial, unacked: 0, buffered: 0 }
    }

    /// Accounts for `len` received bytes; refuses them if they exceed the peer's credit.
    pub fn on_data(&mut self, len: usize) -> Result<(), FlowViolation> {
        if len as u64 > self.peer_credit {
            return Err(FlowViolation { received: len, credit: self.peer_credit });
        }
        self.peer_credit -= len as u64;
        self.buffered += len as u64;
        Ok(())
    }

    /// Accounts for `len` bytes the application consumed; returns whether a batch of credit is
    /// due, which the caller then hands out with [`grant`](Self::grant) once it has decided the
    /// stream's target (a decision that may cost something, like reserving credit from a budget,
    /// so it is taken once per batch, not per chunk). Consuming more than was buffered is clamped
    /// (a driver bug must not mint credit).
    pub fn on_consumed(&mut self, len: usize) -> bool {
        let len = (len as u64).min(self.buffered);
        self.buffered -= len;
        self.unacked += len;
        // Half of the allowance, not of the target: once everything is consumed the batch is
        // due whatever the target, so a stream never waits on credit it will not be given.
        self.unacked != 0 && self.unacked * 2 >= self.allowance
    }

    /// Grants back what was consumed, steering the allowance towards `target` (clamped to
    /// `1..=window`): returns the increment, or nothing when the stream already holds its target
    /// (shrinking withholds). Meant for when [`on_consumed`](Self::on_consumed) says a batch is
    /// due; called earlier it only grants smaller batches.
    pub fn grant(&mut self, target: u32) -> Option<u32> {
        let target = u64::from(target.clamp(1, self.window));
        let still_out = self.peer_credit + self.buffered;
        self.unacked = 0;
        if still_out >= target {
            // Shrinking: what was consumed is withheld.
            self.allowance = still_out;
            return None;
        }
        let increment = target - still_out;
        self.peer_credit += increment;
        self.allowance = target;
        Some(increment as u32)
    }

    /// Bytes received but not yet consumed: what this stream currently holds in memory.
    pub fn buffered(&self) -> u64 {
        self.buffered
    }

    /// Credit the peer currently holds.
    pub fn peer_credit(&self) -> u64 {
        self.peer_credit
    }

    pub fn window(&self) -> u32 {
        self.window
    }

    /// Credit this stream holds in total (at most the window).
    pub fn allowance(&self) -> u64 {
        self.allowance
    }

    /// The invariant every operation preserves: credit, buffered and unacknowledged bytes always
    /// add up to the allowance, which never exceeds the window. Exposed for property tests.
    pub fn is_consistent(&self) -> bool {
        self.peer_credit + self.buffered + self.unacked == self.allowance
            && self.allowance <= u64::from(self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Consumes `n` bytes and grants at `target` when a batch is due, as the stream table does.
    fn consume(w: &mut RecvWindow, n: usize, target: u32) -> Option<u32> {
        w.on_consumed(n).then(|| w.grant(target)).flatten()
    }

    #[test]
    fn credit_returns_in_half_window_batches() {
        let mut w = RecvWindow::new(100);
        w.on_data(60).unwrap();
        assert_eq!(consume(&mut w, 30, 100), None);
        assert_eq!(consume(&mut w, 30, 100), Some(60));
        assert_eq!(w.peer_credit(), 100);
    }

    #[test]
    fn a_smaller_target_withholds_and_a_larger_one_grants_extra() {
        let mut w = RecvWindow::new(100);
        w.on_data(100).unwrap();
        // 50 consumed, 50 still buffered: the target of 40 is already met, nothing is granted.
        assert_eq!(consume(&mut w, 50, 40), None);
        assert_eq!(w.allowance(), 50);
        // Everything consumed: the batch is due, and brings the allowance to the target.
        assert_eq!(consume(&mut w, 50, 40), Some(40));
        assert_eq!(w.allowance(), 40);
        w.on_data(40).unwrap();
        // Alone again: half of the allowance consumed grants up to the full window.
        assert_eq!(consume(&mut w, 20, 100), Some(80));
        assert_eq!((w.allowance(), w.peer_credit()), (100, 80));
        assert!(w.is_consistent());
    }

    #[test]
    fn exceeding_credit_is_a_violation() {
        let mut w = RecvWindow::new(10);
        w.on_data(10).unwrap();
        assert_eq!(w.on_data(1), Err(FlowViolation { received: 1, credit: 0 }));
    }

    proptest! {
        /// Whatever the targets, the books balance, nothing beyond the window is held, and a
        /// stream is never stuck: either the peer holds credit or there is data left to consume
        /// (whose consumption will grant it).
        #[test]
        fn any_sequence_keeps_the_window_consistent_and_live(
            ops in proptest::collection::vec((any::<bool>(), 0usize..5000, 0u32..120_000), 0..200),
            window in 1u32..100_000,
        ) {
            let mut w = RecvWindow::new(window);
            for (is_data, n, target) in ops {
                if is_data {
                    let _ = w.on_data(n);
                } else {
                    let _ = consume(&mut w, n, target);
                }
                prop_assert!(w.is_consistent());
                prop_assert!(w.buffered() <= u64::from(window));
                prop_assert!(w.peer_credit() > 0 || w.buffered() > 0);
            }
        }
    }
}
