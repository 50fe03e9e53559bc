//! API requests refused for their bearer token, as the node's log reports them.
//!
//! Every refusal is counted in the metrics at once (`ism_api_token_refusals_total`); the log gets
//! the first at once, then at most one line per [`REFUSALS_LOGGED_EVERY_MS`] with how many were
//! refused since the last, so that a client retrying a wrong token in a loop (or someone
//! guessing) does not fill it, yet an operator sees that it happens. Users' tokens carry 256
//! random bits (the bootstrap token has at least 32 characters), so guessing is no threat to
//! throttle, and a throttle by address would lock out everyone behind a load balancer.

/// How often a line about refused bearer tokens may be logged.
pub const REFUSALS_LOGGED_EVERY_MS: i64 = 10_000;

/// The log's pace for refused bearer tokens: when the last line was logged, and how many
/// refusals no line has reported yet (those after the last line wait for the next refusal).
#[derive(Debug)]
pub struct RefusedTokens {
    /// When the last line was logged, and the refusals since that no line has reported.
    state: std::sync::Mutex<(i64, u64)>,
}

impl Default for RefusedTokens {
    fn default() -> Self {
        Self { state: std::sync::Mutex::new((i64::MIN, 0)) }
    }
}

impl RefusedTokens {
    /// Counts a refusal at `now_ms`; when a line is due, how many refusals it reports (this one
    /// and those not reported yet).
    pub fn refused(&self, now_ms: i64) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (logged_ms, unreported) = &mut *state;
        *unreported += 1;
        if now_ms.saturating_sub(*logged_ms) < REFUSALS_LOGGED_EVERY_MS && now_ms >= *logged_ms {
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
        let refused = RefusedTokens::default();
        assert_eq!(refused.refused(0), Some(1));
        assert_eq!(refused.refused(1), None);
        assert_eq!(refused.refused(REFUSALS_LOGGED_EVERY_MS - 1), None);
        assert_eq!(refused.refused(REFUSALS_LOGGED_EVERY_MS), Some(3));
        // A clock stepped back reports at once rather than waiting out the step.
        assert_eq!(refused.refused(5), Some(1));
    }
}
