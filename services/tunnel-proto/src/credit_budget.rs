//! The node-wide budget for the large windows: of a stream alone in its session, and the shares
//! of it busy streams side by side get.
//!
//! A stream alone in its session may be granted up to [`Windows::alone`] of credit (8 MiB in
//! `ism-tunnel`'s default configuration), so that a lone bulk transfer keeps a long link busy
//! across the credit round trip.
//! Every byte of it can end up buffered on this side when the local reader stops reading (a
//! scanner that stops reading a download, a target that stops reading an upload), and credit once
//! granted cannot be taken back. So the extra credit above [`Windows::shared`] is *reserved* from
//! this budget before it is granted, and returned when the stream no longer holds it: the memory a
//! node can be made to hold for slow readers is the budget plus the shared window of every stream,
//! whatever the number of sessions. A stream that finds the budget spent keeps the shared window;
//! it is slower over long distances, never refused.
//!
//! One budget is shared by every session of a process (clones share it); it is plain atomics, as
//! sessions live on different threads.
//!
//! [`Windows::alone`]: crate::table::Windows::alone
//! [`Windows::shared`]: crate::table::Windows::shared

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of extra credit the streams of a process may hold at once. Clones share the budget.
#[derive(Debug, Clone)]
pub struct CreditBudget {
    pool: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    total: u64,
    /// What is not reserved; never above `total`.
    available: AtomicU64,
    /// Reservations refused because too little was left.
    shortfalls: AtomicU64,
}

impl CreditBudget {
    /// A budget of `total` bytes.
    pub fn new(total: u64) -> Self {
        Self {
            pool: Arc::new(Pool {
                total,
                available: AtomicU64::new(total),
                shortfalls: AtomicU64::new(0),
            }),
        }
    }

    /// The whole budget, reserved or not.
    pub fn total(&self) -> u64 {
        self.pool.total
    }

    /// What is reserved now.
    pub fn reserved(&self) -> u64 {
        self.pool.total - self.pool.available.load(Ordering::Relaxed)
    }

    /// Reservations refused so far because too little was left: how often the budget held a
    /// stream back, for an operator sizing it.
    pub fn shortfalls(&self) -> u64 {
        self.pool.shortfalls.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if that much is left, all or nothing; the reservation is returned when
    /// the [`Reservation`] is dropped.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        self.pool.take(bytes).then(|| Reservation { pool: self.pool.clone(), bytes })
    }
}

impl Pool {
    /// Takes `bytes` if that much is left; counts a shortfall if not.
    fn take(&self, bytes: u64) -> bool {
        let taken = self
            .available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(bytes));
        if taken.is_err() {
            self.shortfalls.fetch_add(1, Ordering::Relaxed);
        }
        taken.is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.available.fetch_add(bytes, Ordering::AcqRel);
    }
}

/// Bytes taken from a [`CreditBudget`], given back on drop.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<Pool>,
    bytes: u64,
}

impl Reservation {
    /// What is held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reserves `more` on top, all or nothing; returns whether it did.
    pub fn try_grow(&mut self, more: u64) -> bool {
        let taken = self.pool.take(more);
        if taken {
            self.bytes += more;
        }
        taken
    }

    /// Gives back all but `bytes` (nothing when it holds no more than that).
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.pool.give_back(self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_all_or_nothing_and_come_back_on_drop() {
        let budget = CreditBudget::new(10);
        let a = budget.try_reserve(6).expect("6 of 10");
        assert!(budget.try_reserve(5).is_none(), "only 4 left");
        let mut b = budget.clone().try_reserve(4).expect("a clone shares the budget");
        assert_eq!(budget.reserved(), 10);
        assert!(budget.try_reserve(1).is_none(), "spent");
        assert_eq!(budget.shortfalls(), 2, "both refusals counted");
        drop(a);
        assert_eq!(budget.reserved(), 4);
        assert!(b.try_grow(5) && !b.try_grow(2), "grown by 5 of the 6 left, not by 2 more");
        b.shrink_to(3);
        assert_eq!((b.bytes(), budget.reserved()), (3, 3), "shrinking gives the rest back");
        drop(b);
        assert_eq!((budget.reserved(), budget.total()), (0, 10));
    }

    #[test]
    fn threads_reserving_at_once_never_hold_more_than_the_budget() {
        let budget = CreditBudget::new(100);
        // What the threads hold between them, counted after a reservation is made and before it
        // is dropped, so it can only exceed the budget if the budget handed out too much.
        let held = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (budget, held) = (budget.clone(), held.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let mine: Vec<_> = (0..3).filter_map(|_| budget.try_reserve(30)).collect();
                        let n = 30 * mine.len() as u64;
                        assert!(held.fetch_add(n, Ordering::SeqCst) + n <= 100, "over budget");
                        held.fetch_sub(n, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no thread went over the budget");
        }
        assert_eq!(budget.reserved(), 0, "every reservation came back");
    }
}
