//! Send credit of one stream: how many bytes the peer has said it can take.
//!
//! The stream's upstream pump waits here before reading its socket, so a stream whose receiver is
//! slow stops reading its own socket (TCP pushes back on the scanner or target) while every other
//! stream keeps flowing.

use tokio::sync::Semaphore;

/// Most credit a peer may grant a stream in total. HTTP/2 uses the same bound (2^31 - 1); it also
/// keeps us far below the semaphore's limit, which would panic if exceeded.
pub const MAX_CREDIT: u64 = (1 << 31) - 1;

/// Grant beyond [`MAX_CREDIT`].
#[derive(Debug, thiserror::Error)]
#[error("peer granted credit beyond {MAX_CREDIT} bytes")]
pub struct CreditOverflow;

#[derive(Debug)]
pub struct SendCredit {
    permits: Semaphore,
}

impl SendCredit {
    pub fn new(initial: u32) -> Self {
        Self { permits: Semaphore::new(initial as usize) }
    }

    /// Adds credit from a `Window` frame (or gives back credit taken but not used).
    pub fn grant(&self, n: u32) -> Result<(), CreditOverflow> {
        if self.permits.available_permits() as u64 + u64::from(n) > MAX_CREDIT {
            return Err(CreditOverflow);
        }
        self.permits.add_permits(n as usize);
        Ok(())
    }

    /// Waits for credit, then takes as much as is available up to `max`. `None` once the stream
    /// is closed.
    pub async fn take(&self, max: usize) -> Option<usize> {
        debug_assert!(max > 0);
        self.permits.acquire().await.ok()?.forget();
        let extra = self.permits.available_permits().min(max - 1);
        if extra > 0 {
            if let Ok(p) = self.permits.try_acquire_many(extra as u32) {
                p.forget();
                return Some(1 + extra);
            }
        }
        Some(1)
    }

    /// Wakes a waiting pump with `None`: the stream is over.
    pub fn close(&self) {
        self.permits.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn take_waits_for_grant_and_takes_at_most_max() {
        let c = std::sync::Arc::new(SendCredit::new(0));
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.take(10).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        c.grant(25).unwrap();
        assert_eq!(waiter.await.unwrap(), Some(10));
        assert_eq!(c.take(100).await, Some(15));
    }

    #[tokio::test]
    async fn close_releases_waiters_and_overflow_is_refused() {
        let c = SendCredit::new(0);
        c.close();
        assert_eq!(c.take(1).await, None);
        let c = SendCredit::new(10);
        assert!(c.grant(u32::MAX).is_err());
    }
}
