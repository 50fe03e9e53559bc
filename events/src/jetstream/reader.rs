//! Reading the event stream in order from a position, with pulls this code controls: an
//! ephemeral consumer with no acknowledgements, asked for a batch at a time with a short expiry
//! and heartbeats. When the NATS server holding the consumer dies, the next pull fails within
//! seconds and the error reaches the caller, which reads on from its position with a new
//! consumer. (The client's self-recreating ordered consumer retried for ever in silence when its
//! recreation kept failing: projections stood still for minutes after losing a NATS server.)

use super::{unavailable, SUBJECT_ROOT};
use crate::envelope::Recorded;
use crate::log::{recorded, LogError};
use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use std::time::Duration;

/// Events asked for in one pull.
const BATCH: usize = 500;
/// How long one pull waits for events before it ends empty.
const PULL_EXPIRY: Duration = Duration::from_secs(2);
/// How often the server says it is still there during a pull (a quarter of the expiry).
const PULL_HEARTBEAT: Duration = Duration::from_millis(500);
/// Failed pulls asked again before the error reaches the caller, and the pause between them.
const SETTLING_PULLS: u32 = 10;
const SETTLING_PAUSE: Duration = Duration::from_millis(100);
/// How long the server keeps a consumer nobody pulls from: a subscription's, and one that
/// reads an aggregate (deleted once read; this is for a reader that never finished). A stream
/// holds at most 1 000 consumers by default since nats-server 2.15, so none may linger.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);
const AGGREGATE_INACTIVE_THRESHOLD: Duration = Duration::from_secs(5);

/// Reads `filter`'s events from stream position `next` on.
pub(super) struct Reader {
    stream: Stream,
    filter: String,
    /// The position of the next event to hand out.
    next: u64,
    consumer: Option<Consumer<pull::Config>>,
    /// The pulls in progress: events come out as they arrive; a pull is renewed before it
    /// expires, and a missed heartbeat is an error.
    pull: Option<pull::Stream>,
}

impl Reader {
    /// Every event, from the one after position `after`.
    pub(super) fn all_after(stream: Stream, after: u64) -> Self {
        Self::new(stream, format!("{SUBJECT_ROOT}.>"), after + 1)
    }

    /// The events of one subject (aggregate), from the first.
    pub(super) fn subject(stream: Stream, subject: String) -> Self {
        Self::new(stream, subject, 1)
    }

    fn new(stream: Stream, filter: String, next: u64) -> Self {
        Self { stream, filter, next, consumer: None, pull: None }
    }

    /// Deletes the reader's consumer on the server, in the background (nothing waits for it).
    pub(super) fn finish(mut self) {
        let Some(consumer) = self.consumer.take() else { return };
        let name = consumer.cached_info().name.clone();
        tokio::spawn(async move {
            if let Err(e) = self.stream.delete_consumer(&name).await {
                tracing::debug!(error = %e, consumer = name, "could not delete a finished reader's consumer");
            }
        });
    }

    /// The next event, waiting for it (the log has no end). An error ends the reader (its
    /// consumer is deleted); the caller reads on from its position with a new one. Except
    /// [`LogError::Undecodable`]: that record is passed, and the reader goes on with the next.
    pub(super) async fn next(&mut self) -> Result<Recorded, LogError> {
        // A consumer just created in a NATS cluster answers "no responders" (503) until its
        // server has it: pulls are asked again a few times, a moment apart, before giving up.
        let mut settling = SETTLING_PULLS;
        loop {
            if self.pull.is_none() {
                self.pull = Some(self.start_pull().await?);
            }
            let Some(pull) = &mut self.pull else { continue };
            let Some(message) = pull.next().await else {
                self.pull = None;
                continue;
            };
            let message = match message {
                Err(e) if settling > 0 => {
                    tracing::debug!(error = %e, "pull failed; asking again");
                    settling -= 1;
                    self.pull = None;
                    tokio::time::sleep(SETTLING_PAUSE).await;
                    continue;
                }
                other => other.map_err(unavailable)?,
            };
            settling = SETTLING_PULLS;
            let position = message.info().map_err(unavailable)?.stream_sequence;
            if position < self.next {
                continue;
            }
            self.next = position + 1;
            // One that does not decode is an error about it alone: the reader can go on.
            return recorded(position, &message.payload);
        }
    }

    /// Starts pulling events, a batch at a time.
    async fn start_pull(&mut self) -> Result<pull::Stream, LogError> {
        let consumer = match &self.consumer {
            Some(consumer) => consumer,
            None => {
                let config = pull::Config {
                    filter_subject: self.filter.clone(),
                    deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: self.next },
                    ack_policy: AckPolicy::None,
                    inactive_threshold: match self.filter.ends_with('>') {
                        true => INACTIVE_THRESHOLD,
                        false => AGGREGATE_INACTIVE_THRESHOLD,
                    },
                    memory_storage: true,
                    num_replicas: 1,
                    ..Default::default()
                };
                let consumer = self.stream.create_consumer(config).await.map_err(unavailable)?;
                self.consumer.insert(consumer)
            }
        };
        consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .expires(PULL_EXPIRY)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(unavailable)
    }
}
