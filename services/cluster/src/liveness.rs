//! Which nodes are alive: a node is lost when its heartbeat counter has not advanced for a lease,
//! measured on the observer's own clock (passed in), so no two nodes' clocks need to agree, and
//! only while the observer could observe: after a gap in its own readings (NATS unreachable, a
//! leader election) nobody is blamed for the silence, every node gets a fresh lease.

use crate::coordination::NodeAnnouncement;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Seen {
    beat: u64,
    /// When this observer first saw `beat`.
    since: Instant,
}

/// One observer's view of the nodes' heartbeats.
#[derive(Debug)]
pub struct Liveness {
    lease: Duration,
    /// How often the observer reads; a gap of more than two of these is the observer's own.
    interval: Duration,
    seen: HashMap<String, Seen>,
    last_observed: Option<Instant>,
}

impl Liveness {
    /// A node whose counter stays put for `lease` is lost, for an observer reading every
    /// `interval`.
    pub fn new(lease: Duration, interval: Duration) -> Self {
        Self { lease, interval, seen: HashMap::new(), last_observed: None }
    }

    /// Takes in the announcements read at `now`. Nodes that no longer announce themselves (they
    /// withdrew, or their record expired) are forgotten.
    pub fn observe(&mut self, announced: &[NodeAnnouncement], now: Instant) {
        let gap = self.last_observed.map(|last| now.saturating_duration_since(last));
        self.last_observed = Some(now);
        if gap.is_some_and(|gap| gap > self.interval * 2) {
            // What happened while this observer could not look is unknown, not silence.
            self.seen.values_mut().for_each(|s| s.since = now);
        }
        self.seen.retain(|node, _| announced.iter().any(|a| &a.node == node));
        for a in announced {
            match self.seen.get_mut(&a.node) {
                Some(s) if s.beat == a.beat => {}
                Some(s) => *s = Seen { beat: a.beat, since: now },
                None => {
                    self.seen.insert(a.node.clone(), Seen { beat: a.beat, since: now });
                }
            }
        }
    }

    /// Whether `node` counts as alive at `now` (a node never seen does not), judged as of the
    /// observer's last reading: between readings (and when its readings stall, as they do on an
    /// overloaded node) the observer knows nothing new, and a silence it did not see blames no
    /// one.
    pub fn is_alive(&self, node: &str, now: Instant) -> bool {
        let judged_at = self.last_observed.map_or(now, |last| last.min(now));
        self.seen
            .get(node)
            .is_some_and(|s| judged_at.saturating_duration_since(s.since) < self.lease)
    }

    /// Whether `node` was seen and its counter then stood still for the lease (a node never seen
    /// is not known to be lost).
    pub fn is_lost(&self, node: &str, now: Instant) -> bool {
        self.seen.contains_key(node) && !self.is_alive(node, now)
    }

    /// The nodes announced but lost at `now`, sorted.
    pub fn lost(&self, now: Instant) -> Vec<String> {
        let mut lost: Vec<String> =
            self.seen.keys().filter(|n| self.is_lost(n, now)).cloned().collect();
        lost.sort();
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordination::NodeRole;

    fn beat(node: &str, beat: u64) -> NodeAnnouncement {
        NodeAnnouncement {
            node: node.into(),
            relay: "127.0.0.1:1".parse().unwrap(),
            role: NodeRole::Serving,
            beat,
            sessions: 0,
            streams: 0,
            emails: false,
            protocol: 2,
        }
    }

    #[test]
    fn a_node_is_lost_when_its_counter_stays_put_for_a_lease() {
        let s = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut l = Liveness::new(3 * s, s);
        l.observe(&[beat("a", 1), beat("b", 7)], t0);
        l.observe(&[beat("a", 2), beat("b", 7)], t0 + 2 * s);
        assert!(l.is_alive("a", t0 + 2 * s) && l.is_alive("b", t0 + 2 * s));
        l.observe(&[beat("a", 2), beat("b", 7)], t0 + 3 * s);
        assert_eq!(l.lost(t0 + 3 * s), vec!["b".to_string()], "b stayed at 7 for 3 s");
        l.observe(&[beat("a", 2), beat("b", 7)], t0 + 4 * s);
        assert!(l.lost(t0 + 4 * s).len() == 1, "a beat at 2 s");
        l.observe(&[beat("a", 2), beat("b", 7)], t0 + 5 * s);
        assert_eq!(l.lost(t0 + 5 * s), vec!["a".to_string(), "b".to_string()]);
        // A beat brings it back.
        l.observe(&[beat("a", 3), beat("b", 8)], t0 + 6 * s);
        assert!(l.lost(t0 + 6 * s).is_empty());
    }

    #[test]
    fn between_readings_nobody_is_newly_lost() {
        let s = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut l = Liveness::new(3 * s, s);
        l.observe(&[beat("a", 1)], t0);
        l.observe(&[beat("a", 1)], t0 + 2 * s);
        // The observer's next reading is late (its own loop stalls): asked meanwhile, it still
        // judges by what it last read.
        assert!(l.is_alive("a", t0 + 5 * s) && !l.is_lost("a", t0 + 5 * s));
        l.observe(&[beat("a", 1)], t0 + 3 * s);
        assert!(l.is_lost("a", t0 + 3 * s));
    }

    #[test]
    fn clocks_need_not_agree_and_withdrawn_nodes_are_forgotten() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(3), Duration::from_secs(1));
        // The counter is the node's own: any value, observed on this node's clock.
        l.observe(&[beat("a", 1_000_000)], t0);
        assert!(l.is_alive("a", t0));
        assert!(!l.is_alive("never-seen", t0));
        l.observe(&[], t0 + Duration::from_secs(1));
        assert!(l.lost(t0 + Duration::from_secs(10)).is_empty(), "a withdrew: not lost, gone");
    }

    #[test]
    fn the_observers_own_silence_blames_no_one() {
        let s = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut l = Liveness::new(3 * s, s);
        l.observe(&[beat("a", 1)], t0);
        // The observer could not read for 8 s (NATS electing leaders); its first reading after
        // still shows the old beat, since "a" could not write either.
        l.observe(&[beat("a", 1)], t0 + 8 * s);
        assert!(l.lost(t0 + 8 * s).is_empty(), "not lost for a silence nobody could see");
        // Silent for a whole lease of readings after: lost.
        l.observe(&[beat("a", 1)], t0 + 9 * s);
        l.observe(&[beat("a", 1)], t0 + 10 * s);
        l.observe(&[beat("a", 1)], t0 + 11 * s);
        assert_eq!(l.lost(t0 + 11 * s), vec!["a".to_string()]);
    }
}
