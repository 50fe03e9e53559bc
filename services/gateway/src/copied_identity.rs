//! Two agents running with one machine identity: a `machine.key` copied to a second host, or a
//! second agent started on the same one. The newest session of an endpoint wins
//! ([`crate::sessions`]), which is right for an agent restarted before its old connection died;
//! but two live agents would replace each other for ever, each coming back as soon as it is
//! replaced. This rule tells that apart and refuses the one coming back instead.
//!
//! Each agent process sends a random instance id in its `Hello`. A session replaced by another
//! instance's is evidence that the other instance is alive. If the replaced instance comes back
//! within the window while a different instance holds the session, it is alive too: two live
//! agents share the identity. It is refused (`RejectCode::MachineKeyCopied`), and the attempt
//! counts as fresh evidence, so an agent that keeps trying keeps being refused while the other
//! holds the session. A restarted agent is a new instance whose predecessor never comes back, so
//! it replaces the old session at once, as before; an agent reconnecting is the instance of the
//! session it replaces, which is no evidence. The only mistake the rule can make is to refuse a
//! duplicate while the other duplicate's connection is dead but not yet noticed (a few seconds):
//! with duplicates, one of them stopping is the outcome wanted anyway. Agents too old to send an
//! instance are never refused by it.
//!
//! Without I/O or a clock of its own (times are passed in); one per node, like the sessions
//! whose replacements it watches.

use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// One agent process, as its `Hello` names it.
pub type Instance = [u8; 16];

/// How long a replaced instance coming back is taken as a second live agent: several times the
/// agent's longest reconnect delay (30 s), so a duplicate is caught on its first return.
pub const WINDOW: Duration = Duration::from_secs(120);

/// Replaced instances remembered per endpoint, newest first: two copies of an identity are
/// already a mistake; beyond this many the oldest are forgotten, so memory stays bounded.
const REMEMBERED: usize = 8;

/// The instances replaced lately, per endpoint.
#[derive(Debug)]
pub struct Replacements {
    window_ms: i64,
    /// Each replaced instance with the time of the last evidence that it is alive.
    replaced: HashMap<Uuid, Vec<(Instance, i64)>>,
}

impl Replacements {
    pub fn new(window: Duration) -> Self {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        Self { window_ms, replaced: HashMap::new() }
    }

    /// Whether `newcomer` must be refused rather than replace the session of `holder` (`None`
    /// when no session of the endpoint is on this node) at `now_ms`.
    pub fn refuses(
        &mut self,
        endpoint: Uuid,
        newcomer: Option<Instance>,
        holder: Option<Instance>,
        now_ms: i64,
    ) -> bool {
        let (Some(newcomer), Some(holder)) = (newcomer, holder) else { return false };
        if newcomer == holder {
            return false;
        }
        let window_ms = self.window_ms;
        let Some(replaced) = self.replaced.get_mut(&endpoint) else { return false };
        replaced.retain(|(_, at)| now_ms.saturating_sub(*at) < window_ms);
        let refused = match replaced.iter_mut().find(|(instance, _)| *instance == newcomer) {
            Some((_, at)) => {
                *at = now_ms;
                true
            }
            None => false,
        };
        if replaced.is_empty() {
            self.replaced.remove(&endpoint);
        }
        refused
    }

    /// `new` replaced the session of `old` at `now_ms`.
    pub fn replaced(
        &mut self,
        endpoint: Uuid,
        old: Option<Instance>,
        new: Option<Instance>,
        now_ms: i64,
    ) {
        let Some(old) = old.filter(|o| Some(*o) != new) else { return };
        let replaced = self.replaced.entry(endpoint).or_default();
        replaced.retain(|(instance, _)| *instance != old);
        replaced.insert(0, (old, now_ms));
        replaced.truncate(REMEMBERED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Uuid = Uuid::nil();
    const A: Option<Instance> = Some([1; 16]);
    const B: Option<Instance> = Some([2; 16]);
    const C: Option<Instance> = Some([3; 16]);

    fn rule() -> Replacements {
        Replacements::new(Duration::from_secs(120))
    }

    #[test]
    fn a_replaced_instance_coming_back_while_another_holds_the_session_is_refused() {
        let mut r = rule();
        assert!(!r.refuses(E, B, A, 1_000), "the first replacement is no evidence yet");
        r.replaced(E, A, B, 1_000);
        assert!(r.refuses(E, A, B, 1_300), "A was replaced by a live B and is alive too");
        assert!(r.refuses(E, A, B, 1_300 + 119_999), "each attempt renews the evidence");
        assert!(!r.refuses(E, B, B, 1_400), "B reconnecting replaces its own session");
    }

    #[test]
    fn a_restarted_agent_wins_at_once_and_its_predecessor_is_not_held_against_it() {
        let mut r = rule();
        // A restarted as B before A's connection died: B replaces it.
        assert!(!r.refuses(E, B, A, 0));
        r.replaced(E, A, B, 0);
        // B restarted as C: C replaces B at once, as B did A.
        assert!(!r.refuses(E, C, B, 5_000));
        r.replaced(E, B, C, 5_000);
        // The same instance reconnecting never counts as a replacement.
        r.replaced(E, C, C, 6_000);
        assert!(!r.refuses(E, C, C, 6_000));
    }

    #[test]
    fn evidence_older_than_the_window_is_forgotten() {
        let mut r = rule();
        r.replaced(E, A, B, 0);
        assert!(!r.refuses(E, A, B, 120_000), "A came back only after the window");
        assert!(r.replaced.is_empty(), "nothing is kept for the endpoint");
    }

    #[test]
    fn no_session_here_or_an_agent_without_an_instance_is_never_refused() {
        let mut r = rule();
        r.replaced(E, A, B, 0);
        assert!(!r.refuses(E, A, None, 10), "the other agent's session is gone: A may come back");
        assert!(!r.refuses(E, None, B, 10), "an older agent sends no instance");
        assert!(!r.refuses(Uuid::from_u128(1), A, B, 10), "another endpoint");
        r.replaced(E, None, A, 20);
        assert!(!r.refuses(E, None, A, 30));
    }

    #[test]
    fn three_copies_settle_on_one() {
        let mut r = rule();
        r.replaced(E, A, B, 0);
        assert!(!r.refuses(E, C, B, 10));
        r.replaced(E, B, C, 10);
        assert!(r.refuses(E, A, C, 20) && r.refuses(E, B, C, 30), "both replaced ones refused");
    }

    #[test]
    fn memory_per_endpoint_is_bounded() {
        let mut r = rule();
        for i in 0..100u8 {
            r.replaced(E, Some([i; 16]), Some([i + 1; 16]), i64::from(i));
        }
        assert_eq!(r.replaced[&E].len(), REMEMBERED);
        assert!(r.refuses(E, Some([99; 16]), Some([100; 16]), 100), "the newest are kept");
    }
}
