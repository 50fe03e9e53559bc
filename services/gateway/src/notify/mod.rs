//! Notifications and retention, run on every node: the notices the rules say are due
//! (`ism_projectors::notices`) are claimed, delivered and recorded here.
//!
//! Each node looks at the due notices every tick and after every event the notice projection
//! applies. For each one it has not yet taken on, it appends a claim to the notification's
//! aggregate (`ism_actors::notification`); the first claim wins and the other nodes leave the
//! notification until the winner's lease ends. The winner delivers on each channel (email to the
//! notified users, a signed POST to each subscribed webhook, and for a retirement the deletion
//! itself), recording each delivery or failure, and retries failures with backoff while it
//! renews its lease. A node that dies lets its lease lapse and another finishes the work.

pub mod email;
pub mod message;
pub mod retention;
pub mod webhook;

use crate::state::NodeState;
use email::Mailer;
use ism_actors::aggregate::{self, Request};
use ism_actors::notification::{Notification, NotificationCommand, NotificationError};
use ism_actors::CommandError;
use ism_events::{Cause, NoticeKind, Principal};
use ism_projectors::notices::{Action, Notice, NoticeProjection, Settings};
use message::{About, Message};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// How notifications are sent from this node.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub settings: Settings,
    /// `--smtp-url` and `--mail-from`; without them nothing is emailed.
    pub smtp: Option<(String, String)>,
    /// Base of the links in messages; default: this node's management API address.
    pub manage_url: Option<String>,
    /// How long a claim keeps other nodes away.
    pub lease: Duration,
    /// How often due notices are looked for (they are also looked for after every event).
    pub tick: Duration,
    /// The first wait after a failed delivery; it doubles up to `max_retry`.
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// How long a node keeps retrying a channel (a webhook that answers 404 forever) before it
    /// records that it gave up.
    pub give_up_after: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            smtp: None,
            manage_url: None,
            lease: Duration::from_secs(120),
            tick: Duration::from_secs(1),
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(60),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Mailer(#[from] email::MailerError),
}

pub struct Notifier {
    state: Arc<NodeState>,
    notices: Arc<NoticeProjection>,
    mailer: Option<Mailer>,
    config: NotifyConfig,
    /// Notices a task of this node is working on.
    in_flight: Mutex<HashSet<Uuid>>,
    /// Subjects whose notices are being claimed and first delivered, in order.
    busy_subjects: Mutex<HashSet<Uuid>>,
    /// Notices another node holds, and when its lease ends.
    held_elsewhere: Mutex<HashMap<Uuid, i64>>,
    /// Cancelled when the node stops: its deliveries end with it (another node, or this one
    /// restarted, finishes them once their leases end).
    stopped: tokio_util::sync::CancellationToken,
}

/// Where a notice stands after its claim and first delivery.
enum Begun {
    /// Nothing is left to do here.
    Done,
    /// Another node holds it until then.
    HeldUntil(i64),
    /// Some channels failed: retried with backoff.
    Retrying(Box<Delivery>),
}

/// Why a channel was not delivered, and what follows.
enum Undelivered {
    /// Perhaps later: retried with backoff.
    Retry(String),
    /// Never: the channel is recorded as given up.
    GiveUp(String),
    /// The notification has no point any more: recorded as suppressed, with why.
    Moot(String),
}

/// One claimed notice being delivered.
struct Delivery {
    notice: Notice,
    kind: NoticeKind,
    channels: Vec<String>,
    recipients: Vec<String>,
    hooks: Vec<ism_projectors::WebhookView>,
    message: Message,
    /// Channels delivered or given up.
    done: BTreeSet<String>,
    lease_until_ms: i64,
    /// When this node took it on.
    started_ms: i64,
    attempt: u32,
}

impl Delivery {
    fn finished(&self) -> bool {
        self.channels.iter().all(|c| self.done.contains(c))
    }
}

type Failure = CommandError<NotificationError>;

impl Notifier {
    /// A notifier whose work ends when `stopped` is cancelled.
    pub fn new(
        state: Arc<NodeState>,
        notices: Arc<NoticeProjection>,
        config: NotifyConfig,
        stopped: &tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Self>, NotifyError> {
        let mailer = config.smtp.as_ref().map(|(url, from)| Mailer::new(url, from)).transpose()?;
        if let Some(m) = &mailer {
            tracing::info!(relay = %m.relay(), "notifications are emailed");
        }
        Ok(Arc::new(Self {
            state,
            notices,
            mailer,
            config,
            in_flight: Mutex::default(),
            busy_subjects: Mutex::default(),
            stopped: stopped.clone(),
            held_elsewhere: Mutex::default(),
        }))
    }

    /// Looks for due notices every tick: the rules depend on the time as much as on events,
    /// and one look a tick costs the same however many events a busy data path appends (each
    /// look reads every row of the notice projection).
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.start_due();
        }
    }

    fn start_due(self: &Arc<Self>) {
        let now = self.state.clock.now_ms();
        let due = match self.notices.due(now) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the due notices; trying again");
                return;
            }
        };
        self.lock_held().retain(|_, until| *until > now);
        // Each subject's notices in the order they fell due, one subject at a time: a person
        // reads "offline" before "back online" even when both fall due at once.
        let mut by_subject: BTreeMap<Uuid, Vec<Notice>> = BTreeMap::new();
        for notice in due {
            let held = self.lock_held().contains_key(&notice.id);
            if !held && !self.lock_in_flight().contains(&notice.id) {
                by_subject.entry(notice.subject).or_default().push(notice);
            }
        }
        for (subject, notices) in by_subject {
            if !self.lock_busy().insert(subject) {
                continue;
            }
            self.lock_in_flight().extend(notices.iter().map(|n| n.id));
            let me = self.clone();
            let stopped = self.stopped.clone();
            tokio::spawn(stopped.run_until_cancelled_owned(async move {
                for notice in notices {
                    let id = notice.id;
                    match me.begin(notice).await {
                        Ok(Begun::Done) => me.release(id),
                        Ok(Begun::HeldUntil(until)) => {
                            me.lock_held().insert(id, until);
                            me.release(id);
                        }
                        // Retries go on beside the subject's next notices.
                        Ok(Begun::Retrying(delivery)) => {
                            let me = me.clone();
                            let stopped = me.stopped.clone();
                            tokio::spawn(stopped.run_until_cancelled_owned(async move {
                                if let Err(e) = me.retry(*delivery).await {
                                    tracing::warn!(notification = %id, error = %e, "notification not finished; trying again");
                                }
                                me.release(id);
                            }));
                        }
                        Err(e) => {
                            tracing::warn!(notification = %id, error = %e, "notification not finished; trying again");
                            me.release(id);
                        }
                    }
                }
                me.lock_busy().remove(&subject);
            }));
        }
    }

    /// Whether another live node announces an SMTP relay.
    async fn another_node_emails(&self) -> bool {
        let cluster = &self.state.cluster;
        cluster
            .members()
            .await
            .unwrap_or_default()
            .iter()
            .any(|m| m.alive && m.announcement.emails && m.announcement.node != self.state.node_id)
    }

    fn release(&self, notice: Uuid) {
        self.lock_in_flight().remove(&notice);
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.busy_subjects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, i64>> {
        self.held_elsewhere.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cause(&self) -> Cause {
        Cause::by(Principal::node(self.state.node_id.clone()))
    }

    async fn execute(&self, id: Uuid, command: NotificationCommand) -> Result<(), Failure> {
        let request = Request { command: &command, cause: &self.cause(), expected_version: None };
        let (_, result) = aggregate::execute::<Notification>(
            &*self.state.log,
            &*self.state.clock,
            id,
            None,
            request,
        )
        .await;
        result.map(|_| ())
    }

    fn lease_until(&self) -> i64 {
        self.state.clock.now_ms() + self.config.lease.as_millis() as i64
    }

    fn claim(&self, d: &Delivery) -> NotificationCommand {
        NotificationCommand::Claim {
            kind: d.kind,
            subject: d.notice.subject,
            node: self.state.node_id.clone(),
            channels: d.channels.clone(),
            lease_until_ms: d.lease_until_ms,
        }
    }

    /// Claims the notice and makes the first delivery on each channel; what failed is left to
    /// [`retry`](Self::retry).
    async fn begin(&self, notice: Notice) -> Result<Begun, Failure> {
        let kind = match notice.action {
            Action::EndPause => {
                self.execute(notice.id, NotificationCommand::Resume { endpoint: notice.subject })
                    .await?;
                return Ok(Begun::Done);
            }
            Action::Send(kind) => kind,
        };
        if let Some(why) = &notice.suppressed {
            return self.suppress(&notice, kind, why.clone()).await;
        }
        let (recipients, hooks) = self.audience(kind)?;
        if self.mailer.is_none() && !recipients.is_empty() && self.another_node_emails().await {
            // Its email would be lost with this node: one that can send it takes it.
            return Ok(Begun::HeldUntil(self.lease_until()));
        }
        // The deletion first: nothing says "deleted" before it is.
        let mut channels = Vec::new();
        if kind == NoticeKind::GatewayRetired {
            channels.push(retention::CHANNEL.to_string());
        }
        if self.mailer.is_some() && !recipients.is_empty() {
            channels.push(EMAIL.to_string());
        }
        channels.extend(hooks.iter().map(|h| webhook_channel(h.id)));
        if channels.is_empty() {
            let why = if recipients.is_empty() {
                format!("nobody to tell: no Security Lead or opted-in Administrator has an email address, and no webhook takes {} notifications", kind.as_str())
            } else {
                format!(
                    "nobody to tell: no gateway node has an SMTP relay (--smtp-url) and no webhook takes {} notifications",
                    kind.as_str()
                )
            };
            return self.suppress(&notice, kind, why).await;
        }
        let message = message::compose(kind, &notice, &self.about(&notice)?);
        let mut d = Delivery {
            notice,
            kind,
            channels,
            recipients,
            hooks,
            message,
            done: BTreeSet::new(),
            lease_until_ms: self.lease_until(),
            started_ms: self.state.clock.now_ms(),
            attempt: 1,
        };
        match self.execute(d.notice.id, self.claim(&d)).await {
            Ok(()) => {}
            Err(CommandError::Rejected(NotificationError::Finished)) => return Ok(Begun::Done),
            Err(CommandError::Rejected(NotificationError::TakenBy(_))) => {
                let held = aggregate::load::<Notification>(&*self.state.log, d.notice.id).await?;
                return Ok(Begun::HeldUntil(held.state.claim.map_or(0, |(_, until)| until)));
            }
            Err(e) => return Err(e),
        }
        if let (NoticeKind::EndpointUnstable, Some(until_ms)) = (kind, d.notice.pause_until_ms) {
            let node = self.state.node_id.clone();
            let pause = NotificationCommand::Pause { node, endpoint: d.notice.subject, until_ms };
            self.execute(d.notice.id, pause).await?;
        }
        // What a node that held it before (and died) delivered, or gave up on, stays done.
        let before = aggregate::load::<Notification>(&*self.state.log, d.notice.id).await?.state;
        d.done = before.sent.union(&before.abandoned).cloned().collect();
        self.attempt(&mut d).await?;
        Ok(if d.finished() { Begun::Done } else { Begun::Retrying(Box::new(d)) })
    }

    /// Retries what failed, with backoff, renewing the claim, until every channel is delivered
    /// or `give_up_after` has passed (then the rest is recorded as given up).
    async fn retry(&self, mut d: Delivery) -> Result<(), Failure> {
        let mut wait = self.config.first_retry;
        while !d.finished() {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.config.max_retry);
            d.attempt += 1;
            // Subscriptions removed meanwhile are not retried.
            d.hooks = self.audience(d.kind)?.1;
            if self.state.clock.now_ms() - d.started_ms
                >= self.config.give_up_after.as_millis() as i64
            {
                return self.give_up(&mut d).await;
            }
            match self.attempt(&mut d).await {
                // Lost to another node (this one was too slow): it finishes the work.
                Err(CommandError::Rejected(_)) => return Ok(()),
                other => other?,
            }
        }
        Ok(())
    }

    /// One delivery on each channel not yet done, each recorded, the claim renewed as it goes
    /// (a round of slow channels can outlast half a lease). A failed deletion ends the round.
    async fn attempt(&self, d: &mut Delivery) -> Result<(), Failure> {
        let pending: Vec<String> =
            d.channels.iter().filter(|c| !d.done.contains(*c)).cloned().collect();
        for channel in pending {
            if d.lease_until_ms - self.state.clock.now_ms()
                < self.config.lease.as_millis() as i64 / 2
            {
                d.lease_until_ms = self.lease_until();
                self.execute(d.notice.id, self.claim(d)).await?;
            }
            let node = self.state.node_id.clone();
            let failed = |error: String, gave_up: bool| {
                let next = if gave_up { "giving up" } else { "retrying" };
                tracing::warn!(notification = %d.notice.id, %channel, attempt = d.attempt, error = %ism_events::escaped(&error), "notification delivery failed; {next}");
                NotificationCommand::Failed {
                    node: node.clone(),
                    channel: channel.clone(),
                    error,
                    attempt: d.attempt,
                    gave_up,
                }
            };
            let delivered = self.deliver(&channel, d).await;
            let outcome = match &delivered {
                Ok(_) => Some("sent"),
                Err(Undelivered::Retry(_)) => Some("failed"),
                Err(Undelivered::GiveUp(_)) => Some("gave_up"),
                Err(Undelivered::Moot(_)) => None,
            };
            if let Some(outcome) = outcome {
                self.state.metrics.notification(channel_kind(&channel), outcome);
            }
            let (command, done) = match delivered {
                Ok(to) => {
                    let sent = NotificationCommand::Sent {
                        node: node.clone(),
                        channel: channel.clone(),
                        recipients: to,
                        kind: d.kind,
                        subject: d.message.subject.clone(),
                        message_id: d.notice.id.to_string(),
                    };
                    (sent, true)
                }
                Err(Undelivered::Retry(e)) => (failed(e, false), false),
                Err(Undelivered::GiveUp(e)) => (failed(e, true), true),
                Err(Undelivered::Moot(why)) => {
                    tracing::info!(notification = %d.notice.id, why = %ism_events::escaped(&why), "notification no longer needed");
                    let moot = NotificationCommand::Suppress {
                        node,
                        kind: d.kind,
                        subject: d.notice.subject,
                        why,
                    };
                    self.execute(d.notice.id, moot).await?;
                    d.done.extend(d.channels.iter().cloned());
                    return Ok(());
                }
            };
            self.execute(d.notice.id, command).await?;
            if done {
                d.done.insert(channel);
            } else if channel == retention::CHANNEL {
                break;
            }
        }
        if d.finished() {
            tracing::info!(notification = %d.notice.id, kind = d.kind.as_str(), subject = %ism_events::escaped(&d.message.subject), "notification sent");
        }
        Ok(())
    }

    async fn give_up(&self, d: &mut Delivery) -> Result<(), Failure> {
        let pending: Vec<String> =
            d.channels.iter().filter(|c| !d.done.contains(*c)).cloned().collect();
        for channel in pending {
            tracing::error!(notification = %d.notice.id, %channel, "notification not delivered: giving up");
            self.state.metrics.notification(channel_kind(&channel), "gave_up");
            let error = format!("not delivered within {:?}: given up", self.config.give_up_after);
            let failed = NotificationCommand::Failed {
                node: self.state.node_id.clone(),
                channel: channel.clone(),
                error,
                attempt: d.attempt,
                gave_up: true,
            };
            self.execute(d.notice.id, failed).await?;
            d.done.insert(channel);
        }
        Ok(())
    }

    async fn suppress(
        &self,
        notice: &Notice,
        kind: NoticeKind,
        why: String,
    ) -> Result<Begun, Failure> {
        let node = self.state.node_id.clone();
        match self
            .execute(
                notice.id,
                NotificationCommand::Suppress { node, kind, subject: notice.subject, why },
            )
            .await
        {
            Ok(()) | Err(CommandError::Rejected(NotificationError::Finished)) => Ok(Begun::Done),
            Err(CommandError::Rejected(NotificationError::TakenBy(_))) => {
                Ok(Begun::HeldUntil(self.lease_until()))
            }
            Err(e) => Err(e),
        }
    }

    /// Who is told about `kind`: the notified users' addresses, and the webhooks subscribed.
    fn audience(
        &self,
        kind: NoticeKind,
    ) -> Result<(Vec<String>, Vec<ism_projectors::WebhookView>), Failure> {
        let dir = &self.state.directory;
        let mut emails: Vec<String> = dir
            .users()
            .map_err(storage)?
            .into_iter()
            .filter(|u| u.notified())
            .filter_map(|u| u.email)
            .collect();
        emails.sort();
        emails.dedup();
        let hooks =
            dir.webhooks().map_err(storage)?.into_iter().filter(|h| h.wants(kind)).collect();
        Ok((emails, hooks))
    }

    fn about(&self, notice: &Notice) -> Result<About, Failure> {
        let dir = &self.state.directory;
        let gateway_name = dir
            .gateway(notice.gateway)
            .map_err(storage)?
            .map(|g| g.name)
            .unwrap_or_else(|| notice.gateway.to_string());
        let endpoint = if notice.subject == notice.gateway {
            None
        } else {
            let name = dir.endpoint_any(notice.subject).map_err(storage)?.map(|e| e.name);
            Some((notice.subject, name.unwrap_or_else(|| notice.subject.to_string())))
        };
        let manage_url = self
            .config
            .manage_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.state.addresses.api));
        Ok(About {
            retention_months: self.config.settings.retention_months,
            gateway: notice.gateway,
            gateway_name,
            endpoint,
            manage_url: manage_url.trim_end_matches('/').to_string(),
        })
    }

    /// Delivers on one channel; the recipients it reached, or why not.
    /// Delivers on one channel: the email addresses it reached (none for a webhook, whose
    /// channel names it: its URL may carry a token and is not repeated in the record).
    async fn deliver(&self, channel: &str, d: &Delivery) -> Result<Vec<String>, Undelivered> {
        let (notice, recipients, hooks, message) = (&d.notice, &d.recipients, &d.hooks, &d.message);
        if channel == retention::CHANNEL {
            return match retention::retire(
                &self.state,
                notice,
                self.config.settings.retention_months,
            )
            .await
            {
                Ok(retention::Retired::Deleted) => Ok(Vec::new()),
                Ok(retention::Retired::ByOthers(reason)) => Err(Undelivered::Moot(format!(
                    "the gateway was deleted before its retirement ({reason})"
                ))),
                Ok(retention::Retired::StillActive(at_ms)) => Err(Undelivered::Moot(format!(
                    "the gateway had scan activity at {}, after the notice's {}: kept",
                    ism_projectors::audit::format_time(at_ms),
                    ism_projectors::audit::format_time(notice.since_ms)
                ))),
                Err(e) => Err(Undelivered::Retry(e)),
            };
        }
        if channel == EMAIL {
            let mailer = self
                .mailer
                .as_ref()
                .ok_or(Undelivered::GiveUp("this node has no --smtp-url any more".to_string()))?;
            return match mailer.send(notice.id, recipients, message).await {
                Ok(()) => Ok(recipients.to_vec()),
                Err(e) => Err(Undelivered::Retry(e)),
            };
        }
        let hook = hooks
            .iter()
            .find(|h| webhook_channel(h.id) == channel)
            .ok_or_else(|| Undelivered::GiveUp("the webhook was removed".to_string()))?;
        let secret = self.state.key_secret.open(&hook.secret_sealed).map_err(|e| {
            Undelivered::GiveUp(format!("its secret: {e} (is --key-secret-file the cluster's?)"))
        })?;
        let body =
            serde_json::to_vec(&message.json).map_err(|e| Undelivered::GiveUp(e.to_string()))?;
        let now_s = self.state.clock.now_ms() / 1000;
        match webhook::post(&hook.url, &secret, notice.id, now_s, &body).await {
            Ok(_) => Ok(Vec::new()),
            Err(webhook::PostError::Refused(e)) => Err(Undelivered::GiveUp(e)),
            Err(webhook::PostError::Failed(e)) => Err(Undelivered::Retry(e)),
        }
    }
}

const EMAIL: &str = "email";

/// A directory that cannot be read fails a delivery as the log would: it is tried again.
fn storage(e: ism_events::ProjectionError) -> Failure {
    Failure::Log(ism_events::LogError::Storage(e.to_string()))
}

fn webhook_channel(id: Uuid) -> String {
    format!("webhook:{id}")
}

/// A channel's kind for metric labels: `deletion`, `email` or `webhook` (not each webhook's id).
fn channel_kind(channel: &str) -> &'static str {
    match channel {
        retention::CHANNEL => "deletion",
        EMAIL => EMAIL,
        _ => "webhook",
    }
}
