//! One problem seen in one response, and how bad it is.

use serde::{Deserialize, Serialize};

/// Longest evidence kept, in characters: enough to recognise the problem, short enough for an
/// event, a log line and a report row.
pub const MAX_EVIDENCE: usize = 200;

/// How bad a finding is; the order is the order of urgency (`High` is the greatest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
}

impl Severity {
    /// The lowercase name the reports and events use.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// The severity named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(name: &str) -> Option<Severity> {
        [Severity::Info, Severity::Low, Severity::Medium, Severity::High]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem a check found: which rule, how bad, where, and a short excerpt of what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's stable id (see [`crate::rules::ALL`]).
    pub rule: String,
    pub severity: Severity,
    pub url: String,
    /// At most [`MAX_EVIDENCE`] characters on one line: the target's own text, so whoever shows
    /// it escapes it.
    pub evidence: String,
}

impl Finding {
    /// A finding of `rule` at its default severity, the evidence cut to one short line.
    pub fn new(rule: &crate::rules::Rule, url: &str, evidence: &str) -> Finding {
        Finding {
            rule: rule.id.to_string(),
            severity: rule.severity,
            url: url.to_string(),
            evidence: excerpt(evidence),
        }
    }

    /// The same finding at another severity (a rule whose weight depends on the scheme).
    pub fn at(self, severity: Severity) -> Finding {
        Finding { severity, ..self }
    }
}

/// `text` on one line (runs of whitespace become one space), cut to [`MAX_EVIDENCE`] characters
/// with an ellipsis when longer.
pub fn excerpt(text: &str) -> String {
    let mut chars: Vec<char> = Vec::with_capacity(MAX_EVIDENCE + 1);
    for word in text.split_whitespace() {
        if !chars.is_empty() {
            chars.push(' ');
        }
        chars.extend(word.chars().take(MAX_EVIDENCE + 1));
        if chars.len() > MAX_EVIDENCE {
            chars.truncate(MAX_EVIDENCE - 1);
            chars.push('…');
            break;
        }
    }
    chars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_by_urgency_and_serialise_lowercase() {
        assert!(Severity::High > Severity::Medium && Severity::Low > Severity::Info);
        assert_eq!(serde_json::to_string(&Severity::Medium).unwrap(), "\"medium\"");
        assert_eq!(serde_json::from_str::<Severity>("\"info\"").unwrap(), Severity::Info);
    }

    #[test]
    fn evidence_is_one_short_line() {
        assert_eq!(excerpt("  a\n\tb   c "), "a b c");
        let long = "é".repeat(500);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), MAX_EVIDENCE);
        assert!(cut.ends_with('…'));
        let exact = "x".repeat(MAX_EVIDENCE);
        assert_eq!(excerpt(&exact), exact);
    }
}
