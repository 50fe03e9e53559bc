//! The notification aggregate: one notice (an endpoint went offline, a gateway will be deleted)
//! and who delivers it.
//!
//! Every node runs the notice projector and derives the same notices, each under an id made from
//! what it is about (`ism_projectors::notices`). The first node to append a claim to that id
//! sends it; the others find it claimed and leave it. A node that dies holding a claim leaves it
//! to lapse: after `lease_until_ms` another node claims it again and delivers the channels not
//! yet delivered (so delivery is at least once, and each message carries the notification's id
//! for the receiver to drop a duplicate).

use crate::aggregate::Aggregate;
use ism_events::{AggregateKind, NoticeKind, NotificationEvent};
use std::collections::BTreeSet;
use uuid::Uuid;

#[derive(Debug, Default)]
pub struct Notification {
    pub id: Uuid,
    /// Node holding the claim, and until when.
    pub claim: Option<(String, i64)>,
    pub channels: Vec<String>,
    pub sent: BTreeSet<String>,
    /// Channels given up on after retrying for long enough.
    pub abandoned: BTreeSet<String>,
    pub suppressed: bool,
    pub paused: bool,
    pub resumed: bool,
}

impl Notification {
    /// Nothing is left to do: suppressed, delivered on every channel it was claimed for, or (a
    /// pause's end) recorded.
    pub fn finished(&self) -> bool {
        self.suppressed
            || self.resumed
            || (self.claim.is_some()
                && self
                    .channels
                    .iter()
                    .all(|c| self.sent.contains(c) || self.abandoned.contains(c)))
    }

    fn holder(&self, node: &str) -> Result<(), NotificationError> {
        match &self.claim {
            Some((holder, _)) if holder == node => Ok(()),
            Some((holder, _)) => Err(NotificationError::TakenBy(holder.clone())),
            None => Err(NotificationError::Unclaimed),
        }
    }
}

pub enum NotificationCommand {
    /// Take the notification on until `lease_until_ms` (or extend one's own claim).
    Claim {
        kind: NoticeKind,
        subject: Uuid,
        node: String,
        channels: Vec<String>,
        lease_until_ms: i64,
    },
    Pause {
        node: String,
        endpoint: Uuid,
        until_ms: i64,
    },
    Sent {
        node: String,
        channel: String,
        recipients: Vec<String>,
        kind: NoticeKind,
        subject: String,
        message_id: String,
    },
    /// A delivery failed; with `gave_up`, the last one this channel gets.
    Failed {
        node: String,
        channel: String,
        error: String,
        attempt: u32,
        gave_up: bool,
    },
    /// Decide not to send it; valid unclaimed (the first decision wins) or by the holder.
    Suppress {
        node: String,
        kind: NoticeKind,
        subject: Uuid,
        why: String,
    },
    Resume {
        endpoint: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("the notification is already finished")]
    Finished,
    #[error("node {0} holds the notification")]
    TakenBy(String),
    #[error("the notification is not claimed")]
    Unclaimed,
}

impl Aggregate for Notification {
    type Command = NotificationCommand;
    type Error = NotificationError;
    type Event = NotificationEvent;
    const KIND: AggregateKind = AggregateKind::Notification;

    fn new(id: Uuid) -> Self {
        Self { id, ..Default::default() }
    }

    fn apply(&mut self, event: &NotificationEvent) {
        use NotificationEvent::*;
        match event {
            NotificationClaimed { node, lease_until_ms, channels, .. } => {
                self.claim = Some((node.clone(), *lease_until_ms));
                self.channels = channels.clone();
            }
            NotificationSent { channel, .. } => {
                self.sent.insert(channel.clone());
            }
            NotificationFailed { channel, gave_up: true, .. } => {
                self.abandoned.insert(channel.clone());
            }
            NotificationFailed { .. } => {}
            NotificationSuppressed { .. } => self.suppressed = true,
            NotificationsPaused { .. } => self.paused = true,
            NotificationsResumed { .. } => self.resumed = true,
        }
    }

    fn handle(
        &self,
        command: &NotificationCommand,
        now_ms: i64,
    ) -> Result<Option<NotificationEvent>, NotificationError> {
        use NotificationCommand as C;
        use NotificationEvent as E;
        if self.finished() {
            return match command {
                C::Sent { .. } | C::Pause { .. } | C::Resume { .. } => Ok(None),
                _ => Err(NotificationError::Finished),
            };
        }
        Ok(Some(match command {
            C::Claim { kind, subject, node, channels, lease_until_ms } => {
                if let Some((holder, until)) = &self.claim {
                    if holder != node && *until > now_ms {
                        return Err(NotificationError::TakenBy(holder.clone()));
                    }
                }
                E::NotificationClaimed {
                    kind: *kind,
                    subject: *subject,
                    node: node.clone(),
                    lease_until_ms: *lease_until_ms,
                    channels: channels.clone(),
                }
            }
            C::Pause { node, endpoint, until_ms } => {
                self.holder(node)?;
                if self.paused {
                    return Ok(None);
                }
                E::NotificationsPaused { endpoint: *endpoint, until_ms: *until_ms }
            }
            C::Sent { node, channel, recipients, kind, subject, message_id } => {
                self.holder(node)?;
                if self.sent.contains(channel) {
                    return Ok(None);
                }
                E::NotificationSent {
                    channel: channel.clone(),
                    recipients: recipients.clone(),
                    kind: *kind,
                    subject: subject.clone(),
                    message_id: message_id.clone(),
                }
            }
            C::Failed { node, channel, error, attempt, gave_up } => {
                self.holder(node)?;
                E::NotificationFailed {
                    channel: channel.clone(),
                    error: error.clone(),
                    attempt: *attempt,
                    gave_up: *gave_up,
                }
            }
            C::Suppress { node, kind, subject, why } => {
                // A lapsed claim (its node died) does not stand in the way.
                if self.claim.as_ref().is_some_and(|(_, until)| *until > now_ms) {
                    self.holder(node)?;
                }
                E::NotificationSuppressed { kind: *kind, why: why.clone(), subject: *subject }
            }
            C::Resume { endpoint } => E::NotificationsResumed { endpoint: *endpoint },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::scenario::Scenario;
    use NotificationEvent::*;

    const KIND: NoticeKind = NoticeKind::EndpointOffline;

    fn claim(node: &str, until: i64) -> NotificationCommand {
        NotificationCommand::Claim {
            kind: KIND,
            subject: Uuid::nil(),
            node: node.into(),
            channels: vec!["email".into()],
            lease_until_ms: until,
        }
    }

    fn claimed(node: &str, until: i64) -> NotificationEvent {
        NotificationClaimed {
            kind: KIND,
            subject: Uuid::nil(),
            node: node.into(),
            lease_until_ms: until,
            channels: vec!["email".into()],
        }
    }

    fn sent(node: &str) -> NotificationCommand {
        NotificationCommand::Sent {
            node: node.into(),
            channel: "email".into(),
            recipients: vec!["a@x".into()],
            kind: KIND,
            subject: "s".into(),
            message_id: "m".into(),
        }
    }

    #[test]
    fn a_live_claim_keeps_other_nodes_out_until_its_lease_ends() {
        Scenario::<Notification>::given(&[]).when(&claim("a", 100)).then(claimed("a", 100));
        let held = Scenario::<Notification>::given(&[claimed("a", 100)]).at(50);
        held.when(&claim("b", 200)).then_error(NotificationError::TakenBy("a".into()));
        held.when(&sent("b")).then_error(NotificationError::TakenBy("a".into()));
        held.when(&claim("a", 200)).then(claimed("a", 200));
        let lapsed = Scenario::<Notification>::given(&[claimed("a", 100)]).at(150);
        lapsed.when(&claim("b", 250)).then(claimed("b", 250));
    }

    #[test]
    fn once_delivered_on_every_channel_it_is_finished() {
        let sent_event = NotificationSent {
            channel: "email".into(),
            recipients: vec!["a@x".into()],
            kind: KIND,
            subject: "s".into(),
            message_id: "m".into(),
        };
        Scenario::<Notification>::given(&[claimed("a", 100)])
            .when(&sent("a"))
            .then(sent_event.clone());
        let done = Scenario::<Notification>::given(&[claimed("a", 100), sent_event]).at(500);
        assert!(done.state().finished());
        done.when(&claim("b", 900)).then_error(NotificationError::Finished);
        done.when(&sent("a")).then_nothing();
    }

    #[test]
    fn a_suppression_needs_no_claim_but_respects_one() {
        let suppress = |node: &str| NotificationCommand::Suppress {
            node: node.into(),
            kind: KIND,
            subject: Uuid::nil(),
            why: "paused".into(),
        };
        Scenario::<Notification>::given(&[]).when(&suppress("a")).then(NotificationSuppressed {
            kind: KIND,
            why: "paused".into(),
            subject: Uuid::nil(),
        });
        Scenario::<Notification>::given(&[claimed("a", 100)])
            .at(50)
            .when(&suppress("b"))
            .then_error(NotificationError::TakenBy("a".into()));
        Scenario::<Notification>::given(&[claimed("a", 100)]).at(150).when(&suppress("b")).then(
            NotificationSuppressed { kind: KIND, why: "paused".into(), subject: Uuid::nil() },
        );
        Scenario::<Notification>::given(&[NotificationSuppressed {
            kind: KIND,
            why: "p".into(),
            subject: Uuid::nil(),
        }])
        .when(&claim("a", 100))
        .then_error(NotificationError::Finished);
        Scenario::<Notification>::given(&[])
            .when(&sent("a"))
            .then_error(NotificationError::Unclaimed);
    }
}
