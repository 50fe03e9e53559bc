//! Scanners turned away before any stream was opened, recorded on their gateway so the audit
//! shows who knocked and why: a wrong secret for a known credential, a revoked credential, an
//! endpoint the gateway does not have, access off, the endpoint offline, the credential's quota.
//! (A password that is no credential at all names no gateway: it is only logged.)
//!
//! The rule is the refused streams' ([`RefusalLedger`]), per gateway, scanner and kind of
//! refusal: the first is recorded in full (`ScannerRefused`), the rest of the window counted with
//! the endpoints they asked for (`ScannerRefusalsRepeated`), so a scanner knocking in a loop
//! writes two events a second, not one per connection.

use crate::refusals::{Counted, RefusalLedger};
use ism_actors::gateway::{Gateway, GatewayCommand};
use ism_actors::text::MAX_NAME;
use ism_actors::NodeActors;
use ism_events::{Cause, Clock, Principal, RepeatedRefusals};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Which refusals are counted together: one gateway, one scanner, one kind of refusal.
type Kind = (Uuid, String, &'static str);

/// Marks a name cut short by [`clamped_name`].
const CUT: char = '\u{2026}';

/// The endpoint name a scanner asked for, as recorded: the login's username is whatever the
/// scanner sent (up to about 12 KB over HTTP), while no endpoint name is longer than
/// [`MAX_NAME`] characters, so anything beyond that names nothing and is cut, at a character
/// boundary, with an ellipsis to show it was.
pub fn clamped_name(name: &str) -> Cow<'_, str> {
    match name.char_indices().nth(MAX_NAME) {
        Some((end, _)) => Cow::Owned(format!("{}{CUT}", &name[..end])),
        None => Cow::Borrowed(name),
    }
}

/// A name as listed among a window's targets: quoted and escaped as the audit shows a single
/// one (`{:?}`), since the audit joins the list with ", " and a name holding `", "` would
/// otherwise read as two.
fn listed(name: &str) -> String {
    format!("{name:?}")
}

/// One scanner turned away.
pub struct TurnedAway<'a> {
    pub gateway: Uuid,
    /// The scanner as the audit names it (its credential).
    pub scanner: Principal,
    /// The endpoint it asked for, as it named it.
    pub endpoint: &'a str,
    /// The kind of refusal in a few words, the same for every one of a kind.
    pub class: &'static str,
    /// The refusal in full, for the first of a window.
    pub reason: String,
}

/// A node's ledger of scanners turned away, shared by its ingresses.
pub struct RefusedScanners {
    ledger: Mutex<RefusalLedger<Kind, Cause>>,
    gateways: Arc<NodeActors<Gateway>>,
    clock: Arc<dyn Clock>,
}

impl RefusedScanners {
    pub fn new(
        window: Duration,
        gateways: Arc<NodeActors<Gateway>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { ledger: Mutex::new(RefusalLedger::new(window)), gateways, clock }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, RefusalLedger<Kind, Cause>> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `refusal` in full, or counts it in the open window of its kind.
    pub fn refused(&self, refusal: TurnedAway<'_>) {
        let scanner = refusal.scanner.to_string();
        let kind = (refusal.gateway, scanner.clone(), refusal.class);
        let cause = Cause::by(refusal.scanner);
        let now = self.clock.now_ms();
        let endpoint = clamped_name(refusal.endpoint);
        let (first, closed) = {
            let mut ledger = self.ledger();
            let first = ledger.refused(&kind, &listed(&endpoint), now, cause.clone());
            (first, ledger.due(now))
        };
        self.record(closed);
        if first {
            let command = GatewayCommand::RecordScannerRefused {
                scanner,
                endpoint: endpoint.into_owned(),
                reason: refusal.reason,
            };
            self.gateways.tell(refusal.gateway, command, cause);
        }
    }

    /// Records the windows that are over.
    pub fn record_due(&self) {
        let closed = self.ledger().due(self.clock.now_ms());
        self.record(closed);
    }

    /// Records what every window counted so far (the node is stopping).
    pub fn record_all(&self) {
        let closed = self.ledger().drain();
        self.record(closed);
    }

    fn record(&self, closed: Vec<Counted<Kind, Cause>>) {
        for ((gateway, scanner, class), cause, tally) in closed {
            let counted = RepeatedRefusals {
                scanner,
                reason: class.to_string(),
                count: tally.count,
                targets: tally.listed,
                other_targets: tally.others,
                first_ms: tally.first_ms,
                last_ms: tally.last_ms,
            };
            self.gateways.tell(
                gateway,
                GatewayCommand::RecordScannerRefusalsRepeated(counted),
                cause,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_is_cut_at_a_character_boundary_with_a_visible_mark() {
        let cut = |name: String| clamped_name(&name).into_owned();
        assert_eq!(cut("x".repeat(12_000)), format!("{}\u{2026}", "x".repeat(MAX_NAME)));
        // Two bytes a character: cut after the 64th character, not the 64th byte.
        assert_eq!(cut("\u{e9}".repeat(100)), format!("{}\u{2026}", "\u{e9}".repeat(MAX_NAME)));
        let longest = "n".repeat(MAX_NAME);
        assert_eq!(clamped_name(&longest), longest.as_str());
        assert_eq!(clamped_name("dc1"), "dc1");
    }

    #[test]
    fn a_name_holding_the_list_separator_reads_as_one_entry() {
        let forged = r#"dc1", "dc2"#;
        let joined = [listed(forged), listed("dc3")].join(", ");
        assert_eq!(joined, r#""dc1\", \"dc2", "dc3""#);
        assert_eq!(listed("a\nb"), r#""a\nb""#);
    }
}
