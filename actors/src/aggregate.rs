//! What every actor's state is: an aggregate that decides on commands and applies events.
//!
//! [`execute`] is the whole write path, without actix: load the aggregate from the log (or use
//! the cached state), let it decide, append the event with the expected version, apply it. On a
//! version conflict (another node changed the aggregate first) it reloads and decides again, so a
//! command is always validated against the state it is recorded on.

use ism_events::{
    AggregateId, AggregateKind, AppendError, Cause, Clock, Envelope, Event, EventLog, LogError,
    Recorded,
};
use tracing::Instrument;
use uuid::Uuid;

/// State rebuilt from events, with the rules that turn commands into events.
pub trait Aggregate: Sized + Send + 'static {
    type Command: Send + Unpin + 'static;
    type Error: std::error::Error + Send + Sync + 'static;
    /// This aggregate's own events: the stored catalogue's events of this kind, converted at the
    /// log boundary, so `apply` matches them exhaustively.
    type Event: Into<Event> + TryFrom<Event, Error = Event> + Clone + std::fmt::Debug + Send;
    const KIND: AggregateKind;

    /// The state before any event.
    fn new(id: Uuid) -> Self;
    /// Applies an event that happened to this aggregate. Must not fail: events are facts.
    fn apply(&mut self, event: &Self::Event);
    /// Decides what a command means in the current state: an event to record, nothing (the
    /// command is already satisfied), or a refusal.
    fn handle(
        &self,
        command: &Self::Command,
        now_ms: i64,
    ) -> Result<Option<Self::Event>, Self::Error>;
}

/// The event as this aggregate's own type; an event of another kind under this aggregate's id
/// means the log is corrupt.
fn typed<A: Aggregate>(id: Uuid, event: Event) -> Result<A::Event, LogError> {
    A::Event::try_from(event).map_err(|other| {
        LogError::Storage(format!(
            "the log holds a {} event under {} {id}",
            other.name(),
            A::KIND.as_str()
        ))
    })
}

/// An aggregate and the version its state reflects.
#[derive(Debug)]
pub struct Loaded<A> {
    pub state: A,
    pub version: u64,
}

/// What happened to a command.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The event recorded, if the command changed anything.
    pub recorded: Option<Recorded>,
    /// Version of the aggregate afterwards.
    pub version: u64,
}

impl Executed {
    pub fn event(&self) -> Option<&Event> {
        self.recorded.as_ref().map(|r| &r.envelope.event)
    }
    /// Position of the recorded event, for read-your-writes waits on projections.
    pub fn position(&self) -> Option<u64> {
        self.recorded.as_ref().map(|r| r.position)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate's rules refuse the command.
    #[error(transparent)]
    Rejected(E),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The caller decided on a version of the aggregate that is no longer current.
    #[error("{aggregate} changed since it was read (version {expected}, now {actual}); reload it and try again")]
    Stale { aggregate: AggregateId, expected: u64, actual: u64 },
    /// Other writers kept winning the race for this aggregate.
    #[error("too many concurrent changes to {0}; try again")]
    Contended(AggregateId),
    /// The actor is gone (the node is shutting down).
    #[error("actor unavailable: {0}")]
    Unavailable(String),
}

/// Replays an aggregate's events from the log.
pub async fn load<A: Aggregate>(log: &dyn EventLog, id: Uuid) -> Result<Loaded<A>, LogError> {
    folded(id, log.read_aggregate(&AggregateId { kind: A::KIND, id }).await?)
}

/// The state `records` (the aggregate's, in order) leave.
fn folded<A: Aggregate>(id: Uuid, records: Vec<Recorded>) -> Result<Loaded<A>, LogError> {
    let mut loaded = Loaded { state: A::new(id), version: 0 };
    for rec in records {
        loaded.state.apply(&typed::<A>(id, rec.envelope.event)?);
        loaded.version = rec.envelope.sequence;
    }
    Ok(loaded)
}

/// Attempts before giving up on a contended aggregate. In a cluster every node has its own actor
/// for an aggregate, so writers on several nodes race for it (a script adding endpoints to one
/// gateway through a load balancer): a loser waits a random moment before trying again, longer
/// each time, so that the writers spread out instead of colliding again.
const ATTEMPTS: u32 = 8;

/// The longest first wait after a lost race; it doubles with each further one (about 640 ms in
/// all at most).
const FIRST_RETRY_WITHIN: std::time::Duration = std::time::Duration::from_millis(5);

/// A random wait before attempt `attempt` (from 1) of a contended command.
async fn after_conflict(attempt: u32) {
    let ceiling = FIRST_RETRY_WITHIN * 2u32.pow(attempt.saturating_sub(1));
    let fraction = f64::from(uuid::Uuid::new_v4().as_u128() as u16) / f64::from(u16::MAX);
    tokio::time::sleep(ceiling.mul_f64(fraction)).await;
}

/// The aggregate's current state: the cached one if no other node has moved the aggregate since
/// (a decision that appends nothing, a refusal say, would otherwise never notice), else loaded.
async fn current<A: Aggregate>(
    log: &dyn EventLog,
    id: Uuid,
    cached: Option<Loaded<A>>,
) -> Result<Loaded<A>, LogError> {
    if let Some(c) = cached {
        if log.version(&AggregateId { kind: A::KIND, id }).await? == c.version {
            return Ok(c);
        }
    }
    load::<A>(log, id).await
}

/// One command for one aggregate, with why it is given.
pub struct Request<'a, A: Aggregate> {
    pub command: &'a A::Command,
    pub cause: &'a Cause,
    /// The version the caller decided on (an edit based on what it read); `None` when the
    /// command is valid against whatever the current state is.
    pub expected_version: Option<u64>,
}

/// Runs one command. Takes the cached state (if any) and gives back the state to cache: `None`
/// when the state is unknown after a log failure, so the next command reloads it.
pub async fn execute<A: Aggregate>(
    log: &dyn EventLog,
    clock: &dyn Clock,
    id: Uuid,
    mut cached: Option<Loaded<A>>,
    request: Request<'_, A>,
) -> (Option<Loaded<A>>, Result<Executed, CommandError<A::Error>>) {
    let Request { command, cause, expected_version } = request;
    let aggregate = AggregateId { kind: A::KIND, id };
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            after_conflict(attempt).await;
        }
        let mut current = match current::<A>(log, id, cached.take()).await {
            Ok(c) => c,
            Err(e) => return (None, Err(e.into())),
        };
        if let Some(expected) = expected_version {
            if expected != current.version {
                let actual = current.version;
                return (Some(current), Err(CommandError::Stale { aggregate, expected, actual }));
            }
        }
        let now = clock.now_ms();
        let event = match current.state.handle(command, now) {
            Err(e) => return (Some(current), Err(CommandError::Rejected(e))),
            Ok(None) => {
                let version = current.version;
                return (Some(current), Ok(Executed { recorded: None, version }));
            }
            Ok(Some(event)) => event,
        };
        let envelope =
            Envelope::new(aggregate, current.version + 1, now, cause.clone(), event.clone().into());
        let append = tracing::info_span!("event.append", sequence = envelope.sequence);
        match log.append(&envelope).instrument(append).await {
            Ok(position) => {
                current.state.apply(&event);
                current.version = envelope.sequence;
                let version = current.version;
                return (
                    Some(current),
                    Ok(Executed { recorded: Some(Recorded { position, envelope }), version }),
                );
            }
            // Someone else changed it: reload and decide again on the fresh state (an edit based
            // on an older read then fails the version check above).
            Err(AppendError::Conflict { .. }) => continue,
            Err(AppendError::Log(e)) => return (None, Err(e.into())),
        }
    }
    (None, Err(CommandError::Contended(aggregate)))
}

/// Runs `requests` in order against one aggregate and records what they decided in one append:
/// how facts the data path reports (a stream opened, closed) reach the log without an fsync
/// each. Returns each command's refusal, if it was refused; the outer error is the log's.
///
/// A batch may be recorded in part: JetStream publishes it one message at a time, and a lost
/// race (or a server answering while its stream elects a leader) can stop it half-way. After a
/// conflict the requests whose events of the last attempt are in the log (by envelope id) are
/// done, not decided again: the stream facts' commands are not idempotent, and a stream would be
/// recorded as opened twice.
pub async fn execute_batch<A: Aggregate>(
    log: &dyn EventLog,
    clock: &dyn Clock,
    id: Uuid,
    mut cached: Option<Loaded<A>>,
    requests: &[(A::Command, Cause)],
) -> (Option<Loaded<A>>, Result<Vec<Option<A::Error>>, CommandError<A::Error>>) {
    let aggregate = AggregateId { kind: A::KIND, id };
    // The requests recorded already, and the envelope each request's event had at the last
    // attempt.
    let mut done = vec![false; requests.len()];
    let mut attempted: Vec<(usize, Uuid)> = Vec::new();
    for attempt in 0..ATTEMPTS {
        let loaded = if attempt == 0 {
            current::<A>(log, id, cached.take()).await
        } else {
            after_conflict(attempt).await;
            reloaded(log, id, &mut done, &attempted).await
        };
        let mut state = match loaded {
            Ok(c) => c,
            Err(e) => return (None, Err(e.into())),
        };
        attempted.clear();
        let now = clock.now_ms();
        let mut envelopes = Vec::new();
        let mut refusals = Vec::with_capacity(requests.len());
        for (i, (command, cause)) in requests.iter().enumerate() {
            if done[i] {
                refusals.push(None);
                continue;
            }
            match state.state.handle(command, now) {
                Err(e) => refusals.push(Some(e)),
                Ok(None) => refusals.push(None),
                Ok(Some(event)) => {
                    state.state.apply(&event);
                    let envelope = Envelope::new(
                        aggregate,
                        state.version + 1,
                        now,
                        cause.clone(),
                        event.into(),
                    );
                    state.version = envelope.sequence;
                    attempted.push((i, envelope.id));
                    envelopes.push(envelope);
                    refusals.push(None);
                }
            }
        }
        if envelopes.is_empty() {
            return (Some(state), Ok(refusals));
        }
        match log.append_batch(&envelopes).await {
            Ok(_) => return (Some(state), Ok(refusals)),
            // The decisions were made on a state someone else moved: make them again.
            Err(AppendError::Conflict { .. }) => continue,
            Err(AppendError::Log(e)) => return (None, Err(e.into())),
        }
    }
    (None, Err(CommandError::Contended(aggregate)))
}

/// The aggregate after a conflict, read afresh; marks `done` the requests whose `attempted`
/// events are among its records.
async fn reloaded<A: Aggregate>(
    log: &dyn EventLog,
    id: Uuid,
    done: &mut [bool],
    attempted: &[(usize, Uuid)],
) -> Result<Loaded<A>, LogError> {
    let records = log.read_aggregate(&AggregateId { kind: A::KIND, id }).await?;
    let recorded: std::collections::HashSet<Uuid> = records.iter().map(|r| r.envelope.id).collect();
    for (i, envelope) in attempted {
        done[*i] |= recorded.contains(envelope);
    }
    folded(id, records)
}

/// Given/when/then for aggregate rules, with no log and no actor:
/// `Scenario::<Endpoint>::given(&[added()]).when(&command).then(&[event])`.
#[cfg(test)]
pub(crate) mod scenario {
    use super::Aggregate;
    use uuid::Uuid;

    pub struct Scenario<A: Aggregate> {
        state: A,
        now_ms: i64,
    }

    /// The outcome of one command, to be checked.
    pub struct Outcome<A: Aggregate> {
        result: Result<Option<A::Event>, A::Error>,
    }

    impl<A: Aggregate> Scenario<A> {
        /// The aggregate (id nil) after `events`.
        pub fn given(events: &[A::Event]) -> Self {
            let mut state = A::new(Uuid::nil());
            for e in events {
                state.apply(e);
            }
            Self { state, now_ms: 0 }
        }

        /// Commands are decided at `now_ms` (0 unless set).
        pub fn at(mut self, now_ms: i64) -> Self {
            self.now_ms = now_ms;
            self
        }

        pub fn when(&self, command: &A::Command) -> Outcome<A> {
            Outcome { result: self.state.handle(command, self.now_ms) }
        }

        /// The state, for rules not seen through a command's outcome.
        pub fn state(&self) -> &A {
            &self.state
        }
    }

    impl<A: Aggregate> Outcome<A>
    where
        A::Event: PartialEq,
        A::Error: PartialEq + std::fmt::Debug,
    {
        /// The command records `event`.
        #[track_caller]
        pub fn then(self, event: A::Event) {
            assert_eq!(self.result, Ok(Some(event)));
        }

        /// The command is already satisfied: nothing to record.
        #[track_caller]
        pub fn then_nothing(self) {
            assert_eq!(self.result, Ok(None));
        }

        /// The command is refused with `error`.
        #[track_caller]
        pub fn then_error(self, error: A::Error) {
            assert_eq!(self.result, Err(error));
        }

        /// The command's outcome, for checks the three above do not express.
        pub fn result(self) -> Result<Option<A::Event>, A::Error> {
            self.result
        }
    }
}
