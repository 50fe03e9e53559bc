//! The log's pace for refusals that anyone who reaches a port can cause: API requests refused
//! for their bearer token, endpoint connections refused before or at their handshake, scanners'
//! requests refused by either ingress.
//!
//! Every refusal is counted in the metrics at once (`ism_api_token_refusals_total`,
//! `ism_tunnel_handshake_failures_total`, `ism_scanner_request_refusals_total`); the log gets the
//! first of each kind at once, then at most one line of that kind per [`LOGGED_EVERY_MS`], with
//! how many were refused since the last, so that a client retrying in a loop (an agent with a
//! revoked key, a port scanner, a script with a wrong token) does not fill it, yet an operator
//! sees that it happens and why. The refusals after a burst's last line, which no later refusal
//! of their kind comes to report, are logged by a ticker ([`RefusalLogs::log_overdue`]) once
//! their kind's pace allows a line, as a count.
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

impl RefusalLogs {
    /// Logs, as counts, the refusals no line has reported of each kind whose pace allows a line
    /// at `now_ms`: the end of a burst, which would otherwise reach only the metrics. Run on a
    /// ticker.
    pub fn log_overdue(&self, now_ms: i64) {
        for (reason, refused) in self.api_tokens.overdue(now_ms) {
            tracing::warn!(
                reason,
                refused,
                "API requests refused for their bearer token since the last line"
            );
        }
        for (reason, refused) in self.endpoints.overdue(now_ms) {
            tracing::info!(reason, refused, "endpoint connections refused since the last line");
        }
        for ((ingress, kind), refused) in self.scanner_requests.overdue(now_ms) {
            tracing::info!(ingress, kind, refused, "scanner requests refused since the last line");
        }
    }
}

/// The pace of one kind of line per kind: when the last was logged, and how many refusals no
/// line has reported yet (until the next refusal of that kind, or the ticker, reports them).
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

/// Whether a line may be logged at `now_ms` after the last at `logged_ms`: a period later, or at
/// once if the clock was stepped back (rather than waiting out the step).
fn line_due(logged_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(logged_ms) >= LOGGED_EVERY_MS || now_ms < logged_ms
}

impl<K: Eq + Hash + Copy> LogPace<K> {
    /// Counts a refusal of `kind` at `now_ms`; when a line is due, how many refusals of that kind
    /// it reports (this one and those not reported yet).
    pub fn refused(&self, kind: K, now_ms: i64) -> Option<u64> {
        let mut kinds = self.kinds();
        let (logged_ms, unreported) = kinds.entry(kind).or_insert((i64::MIN, 0));
        *unreported += 1;
        if !line_due(*logged_ms, now_ms) {
            return None;
        }
        *logged_ms = now_ms;
        Some(std::mem::take(unreported))
    }

    /// The kinds with refusals no line has reported whose line is due at `now_ms`, and how many
    /// each has; each counts as logged now.
    pub fn overdue(&self, now_ms: i64) -> Vec<(K, u64)> {
        let mut kinds = self.kinds();
        let due = kinds
            .iter_mut()
            .filter(|(_, (logged_ms, unreported))| *unreported > 0 && line_due(*logged_ms, now_ms));
        due.map(|(kind, (logged_ms, unreported))| {
            *logged_ms = now_ms;
            (*kind, std::mem::take(unreported))
        })
        .collect()
    }

    fn kinds(&self) -> std::sync::MutexGuard<'_, HashMap<K, (i64, u64)>> {
        self.kinds.lock().unwrap_or_else(|p| p.into_inner())
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
    fn refusals_after_the_last_line_are_overdue_once_a_line_is_due_and_only_once() {
        let pace = LogPace::default();
        assert_eq!(pace.refused("invalid", 0), Some(1));
        assert_eq!(pace.refused("invalid", 1), None);
        assert_eq!(pace.refused("invalid", 2), None);
        assert_eq!(pace.refused("missing", 3), Some(1));
        assert_eq!(pace.overdue(LOGGED_EVERY_MS - 1), vec![], "not before the pace allows");
        assert_eq!(pace.overdue(LOGGED_EVERY_MS), vec![("invalid", 2)], "none left of missing");
        assert_eq!(pace.overdue(3 * LOGGED_EVERY_MS), vec![], "reported once");
        assert_eq!(pace.refused("invalid", LOGGED_EVERY_MS + 1), None, "the count was a line");
        assert_eq!(pace.refused("invalid", 2 * LOGGED_EVERY_MS), Some(2));
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
