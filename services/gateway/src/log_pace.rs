//! The log's pace for refusals that anyone who reaches a port can cause: API requests refused
//! for their bearer token, endpoint connections refused before or at their handshake, scanners'
//! requests refused by either ingress.
//!
//! Every refusal is counted in the metrics at once (`ism_api_token_refusals_total`,
//! `ism_tunnel_handshake_failures_total`, `ism_scanner_request_refusals_total`); the log gets the
//! first of each kind at once, then at most one line of that kind per [`LOGGED_EVERY_MS`], with
//! how many were refused since the last (those after the last line wait for the next of their
//! kind, so the metrics are where the last of a burst shows), so that a client retrying in a loop (an agent with a revoked key, a port scanner, a
//! script with a wrong token) does not fill it, yet an operator sees that it happens and why.
//! Kinds are paced apart, so that a flood of one kind hides no other. What the log leaves out is
//! the metrics' (and the audit's: refused scanners, streams and registrations are recorded,
//! counted over their own windows). A throttle by address would lock
//! out everyone behind a load balancer, and guessing is no threat to throttle: users' tokens
//! carry 256 random bits (the bootstrap token at least 32 characters), keys likewise.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// How often a line of one kind may be logged.
pub const LOGGED_EVERY_MS: i64 = 10_000;

/// The paces of the node's refusal lines, one per place that refuses, each by its reasons.
#[derive(Debug, Default)]
pub struct RefusalLogs {
    /// Management API requests refused for their bearer token.
    pub api_tokens: LogPace,
    /// Endpoint connections that did not become sessions.
    pub endpoints: LogPace,
    /// Scanners' connections or requests refused, by ingress and kind.
    pub scanner_requests: LogPace<(&'static str, &'static str)>,
}

/// The pace of one kind of line per kind: when the last was logged, and how many refusals no
/// line has reported yet (those after the last line wait for the next refusal of that kind).
/// Kinds are the metrics' reasons, a closed list, so the map stays small.
#[derive(Debug)]
pub struct LogPace<K = &'static str> {
    kinds: Mutex<HashMap<K, (i64, u64)>>,
}

impl<K> Default for LogPace<K> {
    fn default() -> Self {
        Self { kinds: Mutex::new(HashMap::new()) }
    }
}

impl<K: Eq + Hash> LogPace<K> {
    /// Counts a refusal of `kind` at `now_ms`; when a line is due, how many refusals of that kind
    /// it reports (this one and those not reported yet).
    pub fn refused(&self, kind: K, now_ms: i64) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let (logged_ms, unreported) = kinds.entry(kind).or_insert((i64::MIN, 0));
        *unreported += 1;
        if now_ms.saturating_sub(*logged_ms) < LOGGED_EVERY_MS && now_ms >= *logged_ms {
            return None;
        }
        *logged_ms = now_ms;
        Some(std::mem::take(unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_reported_at_once_then_at_most_once_per_period_with_those_held_back() {
        let pace = LogPace::default();
        assert_eq!(pace.refused("invalid", 0), Some(1));
        assert_eq!(pace.refused("invalid", 1), None);
        assert_eq!(pace.refused("invalid", LOGGED_EVERY_MS - 1), None);
        assert_eq!(pace.refused("invalid", LOGGED_EVERY_MS), Some(3));
        // A clock stepped back reports at once rather than waiting out the step.
        assert_eq!(pace.refused("invalid", 5), Some(1));
    }

    #[test]
    fn each_kind_has_a_pace_of_its_own() {
        let pace = LogPace::default();
        assert_eq!(pace.refused("tls", 0), Some(1));
        assert_eq!(pace.refused("tls", 1), None);
        assert_eq!(pace.refused("unauthorized", 2), Some(1), "not held back by the other kind");
        assert_eq!(pace.refused("tls", LOGGED_EVERY_MS), Some(2));
    }
}
