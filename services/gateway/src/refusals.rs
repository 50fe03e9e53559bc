//! Refused scanner streams, recorded so that a scanner opening in a loop cannot fill the log.
//!
//! Every refusal is accounted for, but not every one as its own event: the first refusal of a
//! kind (same tunnel, same scanner, same [`OpenStreamError::class`]) is recorded at once and in
//! full (`StreamRefused`, with its target and reason); the ones that follow within the next
//! [`WINDOW`] are counted, and recorded as one `StreamRefusalsRepeated` (count, the first
//! [`LISTED_TARGETS`] distinct targets, when) once the window is over. The next refusal after
//! that opens a new window. A scanner hammering an endpoint beyond its stream cap (about
//! 13 000 refusals a second on one node) thus writes two events a second instead of one per
//! open, while a scanner refused now and then still gets one event per refusal.

use ism_actors::host::Recorder;
use ism_actors::tunnel::{Tunnel, TunnelCommand};
use ism_events::{Cause, RepeatedRefusals};
use ism_tunnel::OpenStreamError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// How long refusals of one kind are counted after the one recorded in full.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Distinct targets a counted window lists by name; the rest are only counted.
pub const LISTED_TARGETS: usize = 32;

/// One refused stream, as the scanner path saw it.
pub struct Refusal<'a> {
    pub tunnel: Uuid,
    pub recorder: &'a Recorder<Tunnel>,
    pub scanner: String,
    pub target: &'a str,
    /// Counted by its [`class`](OpenStreamError::class); the first of a window is recorded with
    /// its full message.
    pub error: &'a OpenStreamError,
    pub cause: Cause,
    pub now_ms: i64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Kind {
    tunnel: Uuid,
    scanner: String,
    class: &'static str,
}

/// The refusals counted since the one recorded in full.
struct Window {
    recorder: Recorder<Tunnel>,
    cause: Cause,
    counted: RepeatedRefusals,
}

impl Window {
    fn count(&mut self, target: &str, now_ms: i64) {
        let c = &mut self.counted;
        if c.count == 0 {
            c.first_ms = now_ms;
        }
        c.count += 1;
        c.last_ms = now_ms;
        if !c.targets.iter().any(|t| t == target) {
            if c.targets.len() < LISTED_TARGETS {
                c.targets.push(target.to_string());
            } else {
                c.other_targets += 1;
            }
        }
    }

    fn record(self) {
        if self.counted.count > 0 {
            self.recorder
                .tell(TunnelCommand::RecordStreamRefusalsRepeated(self.counted), self.cause);
        }
    }
}

/// The open windows of this node. Cheap to clone; clones share the windows.
#[derive(Clone, Default)]
pub struct RefusalLedger {
    windows: Arc<Mutex<HashMap<Kind, Window>>>,
}

impl RefusalLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Kind, Window>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `refusal` in full, or counts it in the open window of its kind.
    pub fn refused(&self, refusal: Refusal<'_>) {
        let kind =
            Kind { tunnel: refusal.tunnel, scanner: refusal.scanner, class: refusal.error.class() };
        {
            let mut windows = self.lock();
            if let Some(window) = windows.get_mut(&kind) {
                window.count(refusal.target, refusal.now_ms);
                return;
            }
            let counted = RepeatedRefusals {
                scanner: kind.scanner.clone(),
                reason: kind.class.to_string(),
                count: 0,
                targets: Vec::new(),
                other_targets: 0,
                first_ms: 0,
                last_ms: 0,
            };
            windows.insert(
                kind.clone(),
                Window {
                    recorder: refusal.recorder.clone(),
                    cause: refusal.cause.clone(),
                    counted,
                },
            );
        }
        let command = TunnelCommand::RecordStreamRefused {
            target: refusal.target.to_string(),
            scanner: kind.scanner.clone(),
            reason: refusal.error.to_string(),
        };
        refusal.recorder.tell(command, refusal.cause);
        let ledger = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(WINDOW).await;
            let window = ledger.lock().remove(&kind);
            if let Some(window) = window {
                window.record();
            }
        });
    }

    /// Records what every open window counted so far (the node is stopping).
    pub fn record_all(&self) {
        let windows: Vec<Window> = self.lock().drain().map(|(_, w)| w).collect();
        for w in windows {
            w.record();
        }
    }
}
