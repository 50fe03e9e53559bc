//! Receive-side credit accounting for one stream.
//!
//! The receiver grants the sender a window of bytes when the stream opens. Every byte received
//! uses credit; credit comes back only when the application has *consumed* bytes (written them to
//! the target or scanner socket), so a slow consumer throttles exactly its own stream and no other.
//! Credit is returned in batches of at least half a window, which keeps `Window` frames rare.

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
    window: u32,
    /// Bytes the peer may still send before it must wait for a `Window` frame.
    peer_credit: u64,
    /// Bytes received and consumed locally but not yet granted back.
    unacked: u64,
    /// Bytes received and not yet consumed (buffered between reader and consumer).
    buffered: u64,
}

impl RecvWindow {
    pub fn new(window: u32) -> Self {
        Self { window, peer_credit: u64::from(window), unacked: 0, buffered: 0 }
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

    /// Accounts for `len` bytes the application consumed; returns the increment to grant back
    /// when enough has accumulated. Consuming more than was buffered is clamped (a driver bug
    /// must not mint credit).
    pub fn on_consumed(&mut self, len: usize) -> Option<u32> {
        let len = (len as u64).min(self.buffered);
        self.buffered -= len;
        self.unacked += len;
        if self.unacked * 2 >= u64::from(self.window) && self.unacked > 0 {
            let inc = self.unacked;
            self.unacked = 0;
            self.peer_credit += inc;
            Some(inc as u32)
        } else {
            None
        }
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

    /// The invariant every operation preserves: credit, buffered and unacknowledged bytes always
    /// add up to the window. Exposed for property tests.
    pub fn is_consistent(&self) -> bool {
        self.peer_credit + self.buffered + self.unacked == u64::from(self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn credit_returns_in_half_window_batches() {
        let mut w = RecvWindow::new(100);
        w.on_data(60).unwrap();
        assert_eq!(w.on_consumed(30), None);
        assert_eq!(w.on_consumed(30), Some(60));
        assert_eq!(w.peer_credit(), 100);
    }

    #[test]
    fn exceeding_credit_is_a_violation() {
        let mut w = RecvWindow::new(10);
        w.on_data(10).unwrap();
        assert_eq!(w.on_data(1), Err(FlowViolation { received: 1, credit: 0 }));
    }

    proptest! {
        #[test]
        fn any_sequence_keeps_the_window_consistent(ops in proptest::collection::vec((any::<bool>(), 0usize..5000), 0..200), window in 1u32..100_000) {
            let mut w = RecvWindow::new(window);
            for (is_data, n) in ops {
                if is_data {
                    let _ = w.on_data(n);
                } else {
                    let _ = w.on_consumed(n);
                }
                prop_assert!(w.is_consistent());
                prop_assert!(w.buffered() <= u64::from(window));
            }
        }
    }
}
