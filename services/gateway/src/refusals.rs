//! Refused scanner streams, recorded so that a scanner opening in a loop cannot fill the log.
//!
//! Every refusal is accounted for, but not every one as its own event: the first refusal of a
//! kind (same tunnel, same scanner, same [`OpenStreamError::class`]) is recorded at once and in
//! full (`StreamRefused`, with its target and reason); the ones that follow within the next
//! window (one second by default) are counted, and recorded as one `StreamRefusalsRepeated`
//! (count, the first [`LISTED_TARGETS`] distinct targets, when) once the window is over. The next
//! refusal after that opens a new window. A scanner hammering an endpoint beyond its stream cap
//! (about 13 000 refusals a second on one node) thus writes two events a second instead of one
//! per open, while a scanner refused now and then still gets one event per refusal.
//!
//! [`RefusalLedger`] is the rule, without I/O or a clock of its own (times are passed in), for
//! any kind of refusal: refused streams here, and refused registrations of an endpoint key by a
//! machine it is not bound to ([`crate::refused_registrations`]). [`Refusals`] applies it to
//! streams for a node: it tells the tunnel actors, and its `record_due` closes the windows that
//! are over on one ticker ([`every_tick`]).

use ism_actors::host::Recorder;
use ism_actors::tunnel::{Tunnel, TunnelCommand};
use ism_events::{Cause, Clock, RepeatedRefusals};
use ism_tunnel::OpenStreamError;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Distinct details (a stream's targets, a machine's host names) a counted window lists by name;
/// the rest are only counted.
pub const LISTED_TARGETS: usize = 32;

/// Which refused streams are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefusalKind {
    pub tunnel: Uuid,
    pub scanner: String,
    /// [`OpenStreamError::class`]: the same for every failure of a kind.
    pub class: &'static str,
}

/// What a window counted after the refusal it recorded in full.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tally {
    pub count: u64,
    /// The first [`LISTED_TARGETS`] distinct details, in order of arrival.
    pub listed: Vec<String>,
    /// Refusals whose detail is not in `listed`.
    pub others: u64,
    /// When the first and the last of them happened.
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Tally {
    fn count(&mut self, detail: &str, now_ms: i64) {
        if self.count == 0 {
            self.first_ms = now_ms;
        }
        self.count += 1;
        self.last_ms = now_ms;
        if !self.listed.iter().any(|t| t == detail) {
            if self.listed.len() < LISTED_TARGETS {
                self.listed.push(detail.to_string());
            } else {
                self.others += 1;
            }
        }
    }
}

/// The refusals of one kind counted since the one recorded in full; `C` is what the caller needs
/// to record them (for a node's streams: the tunnel's recorder and the cause).
#[derive(Debug)]
struct Window<C> {
    ends_ms: i64,
    context: C,
    tally: Tally,
}

/// A window over: its kind, its context and what it counted.
pub type Counted<K, C> = (K, C, Tally);

/// The counting rule, for refusals of kinds `K`. `C` travels with each window and comes back
/// with its count.
#[derive(Debug)]
pub struct RefusalLedger<K, C> {
    window_ms: i64,
    open: HashMap<K, Window<C>>,
    /// Windows a later refusal found over before the ticker did.
    closed: Vec<Counted<K, C>>,
}

impl<K: Clone + Eq + Hash, C> RefusalLedger<K, C> {
    pub fn new(window: Duration) -> Self {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
        Self { window_ms, open: HashMap::new(), closed: Vec::new() }
    }

    /// A refusal of `kind` at `now_ms`, `detail` saying what differs between refusals of a kind
    /// (a stream's target). Returns `true` when it must be recorded in full now (the first of a
    /// window), `false` when it was counted. `context` is kept with a new window.
    pub fn refused(&mut self, kind: &K, detail: &str, now_ms: i64, context: C) -> bool {
        if let Some(window) = self.open.get_mut(kind) {
            if now_ms < window.ends_ms {
                window.tally.count(detail, now_ms);
                return false;
            }
            if let Some(over) = self.open.remove(kind) {
                self.close(kind.clone(), over);
            }
        }
        let window = Window { ends_ms: now_ms + self.window_ms, context, tally: Tally::default() };
        self.open.insert(kind.clone(), window);
        true
    }

    /// The counts of the windows over at `now_ms`, to be recorded (windows that counted nothing
    /// end silently).
    pub fn due(&mut self, now_ms: i64) -> Vec<Counted<K, C>> {
        let over: Vec<K> =
            self.open.iter().filter(|(_, w)| w.ends_ms <= now_ms).map(|(k, _)| k.clone()).collect();
        for kind in over {
            if let Some(window) = self.open.remove(&kind) {
                self.close(kind, window);
            }
        }
        std::mem::take(&mut self.closed)
    }

    /// Every count so far, windows over or not (the node is stopping).
    pub fn drain(&mut self) -> Vec<Counted<K, C>> {
        let open: Vec<(K, Window<C>)> = self.open.drain().collect();
        for (kind, window) in open {
            self.close(kind, window);
        }
        std::mem::take(&mut self.closed)
    }

    fn close(&mut self, kind: K, window: Window<C>) {
        if window.tally.count > 0 {
            self.closed.push((kind, window.context, window.tally));
        }
    }
}

/// What recording a counted window needs.
type Told = (Recorder<Tunnel>, Cause);

/// One refused stream, as the scanner path saw it.
pub struct RefusedStream<'a> {
    pub tunnel: Uuid,
    pub recorder: &'a Recorder<Tunnel>,
    pub scanner: String,
    pub target: &'a str,
    /// Counted by its [`class`](OpenStreamError::class); the first of a window is recorded with
    /// its full message.
    pub error: &'a OpenStreamError,
    pub cause: Cause,
}

/// A node's refusal ledger, shared by its scanner paths.
pub struct Refusals {
    ledger: Mutex<RefusalLedger<RefusalKind, Told>>,
    clock: Arc<dyn Clock>,
}

impl Refusals {
    pub fn new(window: Duration, clock: Arc<dyn Clock>) -> Self {
        Self { ledger: Mutex::new(RefusalLedger::new(window)), clock }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, RefusalLedger<RefusalKind, Told>> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `refusal` in full, or counts it in the open window of its kind.
    pub fn refused(&self, refusal: RefusedStream<'_>) {
        let kind = RefusalKind {
            tunnel: refusal.tunnel,
            scanner: refusal.scanner,
            class: refusal.error.class(),
        };
        let context = (refusal.recorder.clone(), refusal.cause.clone());
        let now = self.clock.now_ms();
        let (first, closed) = {
            let mut ledger = self.ledger();
            let first = ledger.refused(&kind, refusal.target, now, context);
            (first, ledger.due(now))
        };
        record(closed);
        if first {
            let command = TunnelCommand::RecordStreamRefused {
                target: refusal.target.to_string(),
                scanner: kind.scanner,
                reason: refusal.error.to_string(),
            };
            refusal.recorder.tell(command, refusal.cause);
        }
    }

    /// Records the windows that are over.
    pub fn record_due(&self) {
        let closed = self.ledger().due(self.clock.now_ms());
        record(closed);
    }

    /// Records what every window counted so far (the node is stopping).
    pub fn record_all(&self) {
        let closed = self.ledger().drain();
        record(closed);
    }
}

fn record(closed: Vec<Counted<RefusalKind, Told>>) {
    for (kind, (recorder, cause), tally) in closed {
        let counted = RepeatedRefusals {
            scanner: kind.scanner,
            reason: kind.class.to_string(),
            count: tally.count,
            targets: tally.listed,
            other_targets: tally.others,
            first_ms: tally.first_ms,
            last_ms: tally.last_ms,
        };
        recorder.tell(TunnelCommand::RecordStreamRefusalsRepeated(counted), cause);
    }
}

/// Runs `record_due` (closing the windows that are over) every `every`, for as long as the node
/// runs: the ticker of every ledger a node keeps, and of the log's pace for refusals
/// (`crate::log_pace`).
pub async fn every_tick(every: Duration, record_due: impl Fn()) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        record_due();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(class: &'static str) -> RefusalKind {
        RefusalKind { tunnel: Uuid::nil(), scanner: "credential:zap".into(), class }
    }

    const BUSY: &str = "the endpoint is at its stream capacity";

    #[test]
    fn the_first_is_recorded_in_full_and_the_rest_of_its_window_counted() {
        let mut ledger = RefusalLedger::<RefusalKind, u8>::new(Duration::from_secs(1));
        assert!(ledger.refused(&kind(BUSY), "a:80", 1_000, 1), "the first: in full");
        assert!(!ledger.refused(&kind(BUSY), "b:80", 1_200, 2));
        assert!(!ledger.refused(&kind(BUSY), "a:80", 1_999, 3));
        assert!(ledger.due(1_999).is_empty(), "the window is not over yet");
        let due = ledger.due(2_000);
        assert_eq!(due.len(), 1);
        let (counted_kind, context, counted) = &due[0];
        assert_eq!(*counted_kind, kind(BUSY));
        assert_eq!(*context, 1, "the window keeps the context of its first refusal");
        assert_eq!(
            (counted.count, counted.first_ms, counted.last_ms, counted.listed.clone()),
            (2, 1_200, 1_999, vec!["b:80".to_string(), "a:80".to_string()])
        );
        assert!(ledger.due(5_000).is_empty(), "recorded once");
    }

    #[test]
    fn a_refusal_alone_is_one_event_and_kinds_are_counted_apart() {
        let mut ledger = RefusalLedger::<RefusalKind, ()>::new(Duration::from_secs(1));
        assert!(ledger.refused(&kind(BUSY), "a:80", 0, ()));
        assert!(ledger.refused(&kind("not allowed"), "a:80", 10, ()), "another kind: in full");
        assert!(ledger.due(10_000).is_empty(), "windows that counted nothing end silently");
        assert!(ledger.refused(&kind(BUSY), "a:80", 10_000, ()), "a new window, in full again");
    }

    #[test]
    fn a_refusal_after_its_window_closes_that_window_even_before_the_ticker() {
        let mut ledger = RefusalLedger::<RefusalKind, ()>::new(Duration::from_secs(1));
        ledger.refused(&kind(BUSY), "a:80", 0, ());
        ledger.refused(&kind(BUSY), "a:80", 500, ());
        assert!(ledger.refused(&kind(BUSY), "a:80", 1_000, ()), "the next window starts in full");
        let due = ledger.due(1_000);
        assert_eq!(due.iter().map(|(_, _, c)| c.count).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn targets_beyond_the_listed_ones_are_only_counted() {
        let mut ledger = RefusalLedger::<RefusalKind, ()>::new(Duration::from_secs(1));
        ledger.refused(&kind(BUSY), "first:1", 0, ());
        for i in 0..(LISTED_TARGETS + 8) {
            ledger.refused(&kind(BUSY), &format!("10.0.0.{i}:80"), 1, ());
        }
        let (_, _, counted) = ledger.drain().pop().unwrap();
        assert_eq!(counted.listed.len(), LISTED_TARGETS);
        assert_eq!(counted.others, 8);
        assert_eq!(counted.count, LISTED_TARGETS as u64 + 8);
    }

    /// Refused registrations are counted per endpoint and machine, with host names as details;
    /// a machine retrying every five seconds writes two events per window.
    #[test]
    fn any_kind_of_refusal_is_counted_alike() {
        let mut ledger = RefusalLedger::<(Uuid, &str), ()>::new(Duration::from_secs(600));
        let (m1, m2) = ((Uuid::nil(), "m1"), (Uuid::nil(), "m2"));
        assert!(ledger.refused(&m1, "host-a", 0, ()));
        assert!(ledger.refused(&m2, "host-b", 5_000, ()), "another machine: in full");
        for t in 1..=4 {
            assert!(!ledger.refused(&m1, "host-a", t * 5_000, ()));
        }
        assert!(!ledger.refused(&m1, "host-c", 25_000, ()));
        let due = ledger.due(600_000);
        assert_eq!(due.len(), 1, "m2 counted nothing after its first");
        let (kind, _, tally) = &due[0];
        let hosts = vec!["host-a".to_string(), "host-c".to_string()];
        assert_eq!((*kind, tally.count, tally.listed.clone()), (m1, 5, hosts));
    }

    /// A firehose: a refusal every millisecond for ten seconds, the ticker every 100 ms. Every
    /// refusal is accounted for, in at most two events a second.
    #[test]
    fn a_firehose_is_accounted_for_in_at_most_two_events_a_second() {
        let mut ledger = RefusalLedger::<RefusalKind, ()>::new(Duration::from_secs(1));
        let (mut events, mut accounted) = (0u64, 0u64);
        for now in 0..10_000i64 {
            if ledger.refused(&kind(BUSY), "a:80", now, ()) {
                events += 1;
                accounted += 1;
            }
            if now % 100 == 0 {
                for (_, _, counted) in ledger.due(now) {
                    events += 1;
                    accounted += counted.count;
                }
            }
        }
        for (_, _, counted) in ledger.drain() {
            events += 1;
            accounted += counted.count;
        }
        assert_eq!(accounted, 10_000);
        assert!(events <= 2 * 10, "{events} events for ten seconds of refusals");
    }
}
