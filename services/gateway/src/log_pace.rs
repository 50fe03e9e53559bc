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
//! of their kind comes to report, are logged as a count by a ticker
//! ([`RefusalLogs::log_overdue`]) once their kind has not been refused for a period, and by a
//! stopping node ([`RefusalLogs::log_unreported`]).
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
    /// Logs, as counts, the refusals no line has reported of each kind that has been quiet for
    /// a period at `now_ms`: the end of a burst, which would otherwise reach only the metrics (a
    /// kind still refused gets its next line, with its details, from its next refusal). Run on a
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

    /// Logs, as counts, every refusal no line has reported yet, whatever the pace: when the node
    /// stops.
    pub fn log_unreported(&self) {
        // A time past every pace and every quiet period.
        self.log_overdue(i64::MAX);
    }
}

/// The pace of one kind of line per kind. Kinds are the metrics' reasons, a closed list, so the
/// map stays small.
#[derive(Debug)]
pub struct LogPace<K = &'static str> {
    kinds: Mutex<HashMap<K, Paced>>,
}

/// Where one kind's lines stand.
#[derive(Debug, Clone, Copy)]
struct Paced {
    /// When its last line was logged.
    logged_ms: i64,
    /// Refusals no line has reported yet (until its next refusal, or the ticker, reports them).
    unreported: u64,
    /// When it was last refused.
    refused_ms: i64,
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
        let paced = kinds.entry(kind).or_insert(Paced {
            logged_ms: i64::MIN,
            unreported: 0,
            refused_ms: now_ms,
        });
        paced.unreported += 1;
        paced.refused_ms = now_ms;
        if !line_due(paced.logged_ms, now_ms) {
            return None;
        }
        paced.logged_ms = now_ms;
        Some(std::mem::take(&mut paced.unreported))
    }

    /// The kinds with refusals no line has reported that have not been refused for a period at
    /// `now_ms` (the end of a burst; a kind still refused is reported by its next refusal's
    /// line, with its details), and how many each has; each counts as logged now.
    pub fn overdue(&self, now_ms: i64) -> Vec<(K, u64)> {
        let mut kinds = self.kinds();
        let due = kinds.iter_mut().filter(|(_, p)| {
            p.unreported > 0 && line_due(p.logged_ms, now_ms) && line_due(p.refused_ms, now_ms)
        });
        due.map(|(kind, p)| {
            p.logged_ms = now_ms;
            (*kind, std::mem::take(&mut p.unreported))
        })
        .collect()
    }

    fn kinds(&self) -> std::sync::MutexGuard<'_, HashMap<K, Paced>> {
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
    fn the_end_of_a_burst_is_overdue_once_its_kind_is_quiet_for_a_period_and_only_once() {
        let pace = LogPace::default();
        assert_eq!(pace.refused("invalid", 0), Some(1));
        assert_eq!(pace.refused("invalid", 1), None);
        assert_eq!(pace.refused("invalid", 2), None);
        assert_eq!(pace.refused("missing", 3), Some(1));
        assert_eq!(pace.overdue(LOGGED_EVERY_MS + 1), vec![], "not before a quiet period");
        assert_eq!(pace.overdue(LOGGED_EVERY_MS + 2), vec![("invalid", 2)], "none of missing");
        assert_eq!(pace.overdue(3 * LOGGED_EVERY_MS), vec![], "reported once");
        assert_eq!(pace.refused("invalid", LOGGED_EVERY_MS + 3), None, "the count was a line");
        assert_eq!(pace.refused("invalid", 3 * LOGGED_EVERY_MS), Some(2));
    }

    /// A kind refused every few seconds keeps getting lines of its own refusals, with their
    /// details, rather than bare counts from the ticker.
    #[test]
    fn a_kind_still_refused_is_reported_by_its_next_refusal_not_by_the_ticker() {
        let pace = LogPace::default();
        let every = LOGGED_EVERY_MS / 2;
        assert_eq!(pace.refused("invalid", 0), Some(1));
        for i in 1..10 {
            let due = pace.refused("invalid", i * every);
            assert_eq!(due, (i % 2 == 0).then_some(2), "refusal {i}");
            assert_eq!(pace.overdue(i * every + every - 1), vec![], "tick after refusal {i}");
        }
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
