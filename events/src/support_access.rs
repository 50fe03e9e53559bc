//! Support-engineer access as a value: the one home of the "active until t" rule, used by the
//! endpoint actor, the directory projection, the API's views and access enforcement alike.

use serde::{Deserialize, Serialize};

/// Support-engineer access to an endpoint, off by default (the seed: "a window of 1 to 30 days,
/// or indefinitely"). Whether a window is still open depends on the time it is asked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SupportAccess {
    #[default]
    Off,
    /// Granted until this time (ms since the epoch), exclusive.
    Until(i64),
    Indefinite,
}

impl SupportAccess {
    /// What `SupportAccessGranted { until_ms }` grants.
    pub fn granted(until_ms: Option<i64>) -> Self {
        until_ms.map_or(SupportAccess::Indefinite, SupportAccess::Until)
    }

    /// Whether a support engineer may use the endpoint at `now_ms`.
    pub fn is_active(self, now_ms: i64) -> bool {
        match self {
            SupportAccess::Off => false,
            SupportAccess::Until(t) => now_ms < t,
            SupportAccess::Indefinite => true,
        }
    }

    /// Whether a window was granted and has run out at `now_ms` (its expiry is still to be
    /// recorded).
    pub fn expired(self, now_ms: i64) -> bool {
        matches!(self, SupportAccess::Until(t) if t <= now_ms)
    }

    /// "off", "active" or "expired", as the API and the CLI show it.
    pub fn state_name(self, now_ms: i64) -> &'static str {
        match self {
            SupportAccess::Off => "off",
            _ if self.is_active(now_ms) => "active",
            _ => "expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SupportAccess::{self, *};

    #[test]
    fn a_window_is_active_until_its_end_exclusive_then_expired() {
        let cases: [(SupportAccess, i64, bool, bool, &str); 7] = [
            (Off, 0, false, false, "off"),
            (Indefinite, i64::MAX, true, false, "active"),
            (Until(100), 99, true, false, "active"),
            (Until(100), 100, false, true, "expired"),
            (Until(100), 101, false, true, "expired"),
            (SupportAccess::granted(Some(5)), 4, true, false, "active"),
            (SupportAccess::granted(None), 0, true, false, "active"),
        ];
        for (access, now, active, expired, name) in cases {
            assert_eq!(access.is_active(now), active, "{access:?} at {now}");
            assert_eq!(access.expired(now), expired, "{access:?} at {now}");
            assert_eq!(access.state_name(now), name, "{access:?} at {now}");
        }
    }
}
