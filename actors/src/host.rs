//! The actix actor that hosts one aggregate, and `NodeActors`, the node-local set of them.
//!
//! An actor serialises the commands for its aggregate (its mailbox is the queue, and each
//! command runs as an `AtomicResponse`, so no two interleave) and caches the state between
//! commands. Actors on different nodes may host the same aggregate: the log's optimistic
//! concurrency decides between them. Actors decide; they never carry tunnel bytes.

use crate::aggregate::{
    execute, execute_batch, Aggregate, CommandError, Executed, Loaded, Request,
};
use actix::prelude::*;
use ism_events::{Cause, Clock, EventLog};
use ism_telemetry::TraceParent;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

/// A command for the aggregate hosted by the receiving actor.
pub struct Execute<A: Aggregate> {
    pub command: A::Command,
    pub cause: Cause,
    /// See [`crate::aggregate::Request::expected_version`].
    pub expected_version: Option<u64>,
}

impl<A: Aggregate> Message for Execute<A> {
    type Result = Result<Executed, CommandError<A::Error>>;
}

/// Commands whose outcome nobody waits for (recording what the data path did), queued by an
/// actor's [`Recorder`]s until its next flush. Commands told by one caller are recorded in the
/// order they were told, batched into one append with the others that arrived meanwhile;
/// refusals are logged.
///
/// They wait here rather than in the actor's mailbox so that only the first command of a batch
/// wakes the actor's thread: a message per command woke it twice per scanner stream (opened,
/// closed), and on a small machine each wake-up of another thread costs more than the command.
struct Told<A: Aggregate> {
    queued: Mutex<Vec<(A::Command, Cause)>>,
}

impl<A: Aggregate> Told<A> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(A::Command, Cause)>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Tells an actor that its told queue has commands again: it schedules their flush.
struct Gather;

impl Message for Gather {
    type Result = ();
}

/// Records the commands told since the last flush.
struct FlushTold;

impl Message for FlushTold {
    type Result = ();
}

/// Most told commands recorded in one append.
const MAX_TOLD_BATCH: usize = 1024;

/// How long told commands gather before they are recorded. Each append is a storage
/// transaction, and the embedded log pays a disk write per transaction: waiting this long lets
/// a short stream's opening and closing (and a busy tunnel's many streams) share one. Nobody
/// waits for a told command, so the delay costs nothing but the delay.
const TOLD_GATHERING: std::time::Duration = std::time::Duration::from_millis(5);

pub struct AggregateActor<A: Aggregate> {
    id: Uuid,
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    cached: Option<Loaded<A>>,
    told: Arc<Told<A>>,
    flush_scheduled: bool,
    /// Told commands of this node's actors of this kind not yet recorded (see [`Recorder`]).
    unrecorded: Arc<watch::Sender<usize>>,
}

impl<A: Aggregate + Unpin> Actor for AggregateActor<A> {
    type Context = Context<Self>;
}

impl<A: Aggregate + Unpin> AggregateActor<A> {
    /// The command's whole write path, run while the actor's mailbox waits, in a `command` span
    /// that continues the trace of whatever caused it (an API request).
    fn run(
        &mut self,
        command: A::Command,
        cause: Cause,
        expected_version: Option<u64>,
    ) -> ResponseActFuture<Self, Result<Executed, CommandError<A::Error>>> {
        let (log, clock, id, cached) =
            (self.log.clone(), self.clock.clone(), self.id, self.cached.take());
        let span = tracing::info_span!(
            "command",
            aggregate = A::KIND.as_str(),
            id = %id,
            trace_id = tracing::field::Empty,
        );
        let caused_by = cause.trace.as_deref().and_then(TraceParent::parse);
        ism_telemetry::context::continue_from(&span, caused_by);
        let work = async move {
            execute::<A>(
                &*log,
                &*clock,
                id,
                cached,
                Request { command: &command, cause: &cause, expected_version },
            )
            .await
        }
        .instrument(span);
        Box::pin(work.into_actor(self).map(|(cached, result), actor, _| {
            actor.cached = cached;
            result
        }))
    }
}

impl<A: Aggregate + Unpin> Handler<Execute<A>> for AggregateActor<A> {
    type Result = AtomicResponse<Self, Result<Executed, CommandError<A::Error>>>;

    fn handle(&mut self, msg: Execute<A>, _ctx: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.run(msg.command, msg.cause, msg.expected_version))
    }
}

impl<A: Aggregate + Unpin> Handler<Gather> for AggregateActor<A> {
    type Result = ();

    fn handle(&mut self, _: Gather, ctx: &mut Self::Context) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify_later(FlushTold, TOLD_GATHERING);
        }
    }
}

impl<A: Aggregate + Unpin> Handler<FlushTold> for AggregateActor<A> {
    type Result = AtomicResponse<Self, ()>;

    /// While one batch is being appended, the mailbox holds the tells that arrive; they form the
    /// next batch (group commit).
    fn handle(&mut self, _: FlushTold, ctx: &mut Self::Context) -> Self::Result {
        let batch: Vec<(A::Command, Cause)> = {
            let mut told = self.told.lock();
            let take = told.len().min(MAX_TOLD_BATCH);
            let batch = told.drain(..take).collect();
            // Drained under the lock: a command told after this finds the queue empty and sends
            // a `Gather`; one told before it is in this batch or the next.
            if told.is_empty() {
                self.flush_scheduled = false;
            } else {
                ctx.notify(FlushTold);
            }
            batch
        };
        if batch.is_empty() {
            // A `Gather` that arrived after its commands had already gone out with a batch.
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        }
        let take = batch.len();
        let (log, clock, id, cached) =
            (self.log.clone(), self.clock.clone(), self.id, self.cached.take());
        let work = async move { execute_batch::<A>(&*log, &*clock, id, cached, &batch).await };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(move |(cached, result), actor, _| {
            actor.cached = cached;
            // Recorded or refused, these are settled: nobody will record them later.
            actor.unrecorded.send_modify(|n| *n -= take);
            match result {
                Ok(refusals) => {
                    for e in refusals.into_iter().flatten() {
                        tracing::warn!(kind = A::KIND.as_str(), %id, error = %e, "a recorded fact was refused");
                    }
                }
                Err(e) => tracing::warn!(kind = A::KIND.as_str(), %id, error = %e, "could not record events"),
            }
        })))
    }
}

/// Tells one aggregate's actor what the data path did, without waiting. Holding it keeps the
/// actor alive until what it was told is recorded, even if its node forgot the aggregate.
pub struct Recorder<A: Aggregate + Unpin> {
    actor: Hosted<A>,
    unrecorded: Arc<watch::Sender<usize>>,
}

impl<A: Aggregate + Unpin> Clone for Recorder<A> {
    fn clone(&self) -> Self {
        Self { actor: self.actor.clone(), unrecorded: self.unrecorded.clone() }
    }
}

impl<A: Aggregate + Unpin> Recorder<A> {
    /// Queues `command` in call order; it is counted as unrecorded until its batch is appended.
    pub fn tell(&self, command: A::Command, cause: Cause) {
        self.unrecorded.send_modify(|n| *n += 1);
        let first = {
            let mut told = self.actor.told.lock();
            told.push((command, cause));
            told.len() == 1
        };
        if first {
            self.actor.addr.do_send(Gather);
        }
    }
}

/// An actor's address and its told queue.
struct Hosted<A: Aggregate + Unpin> {
    addr: Addr<AggregateActor<A>>,
    told: Arc<Told<A>>,
}

impl<A: Aggregate + Unpin> Clone for Hosted<A> {
    fn clone(&self) -> Self {
        Self { addr: self.addr.clone(), told: self.told.clone() }
    }
}

/// This node's actors for one kind of aggregate, started on demand.
pub struct NodeActors<A: Aggregate + Unpin> {
    arbiter: ArbiterHandle,
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    actors: Mutex<HashMap<Uuid, Hosted<A>>>,
    unrecorded: Arc<watch::Sender<usize>>,
}

impl<A: Aggregate + Unpin> NodeActors<A> {
    /// Actors are started on `arbiter` (the actix system thread of the node).
    pub fn new(arbiter: ArbiterHandle, log: Arc<dyn EventLog>, clock: Arc<dyn Clock>) -> Self {
        Self {
            arbiter,
            log,
            clock,
            actors: Mutex::new(HashMap::new()),
            unrecorded: Arc::new(watch::channel(0).0),
        }
    }

    fn start(&self, id: Uuid) -> Hosted<A> {
        let (log, clock, unrecorded) =
            (self.log.clone(), self.clock.clone(), self.unrecorded.clone());
        let told = Arc::new(Told { queued: Mutex::new(Vec::new()) });
        let queue = told.clone();
        let addr = AggregateActor::start_in_arbiter(&self.arbiter, move |_| AggregateActor {
            id,
            log,
            clock,
            cached: None,
            told: queue,
            flush_scheduled: false,
            unrecorded,
        });
        Hosted { addr, told }
    }

    /// The actor for aggregate `id`, started if this node has none yet.
    fn hosted(&self, id: Uuid) -> Hosted<A> {
        let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        actors.entry(id).or_insert_with(|| self.start(id)).clone()
    }

    /// The address of the actor for aggregate `id`, started if this node has none yet.
    pub fn actor(&self, id: Uuid) -> Addr<AggregateActor<A>> {
        self.hosted(id).addr
    }

    /// Sends a command to aggregate `id` and waits for the outcome.
    pub async fn execute(
        &self,
        id: Uuid,
        command: A::Command,
        cause: Cause,
    ) -> Result<Executed, CommandError<A::Error>> {
        self.execute_at(id, command, cause, None).await
    }

    /// As [`execute`](Self::execute), refused with [`CommandError::Stale`] unless the aggregate
    /// is still at `expected_version` (when given).
    pub async fn execute_at(
        &self,
        id: Uuid,
        command: A::Command,
        cause: Cause,
        expected_version: Option<u64>,
    ) -> Result<Executed, CommandError<A::Error>> {
        self.actor(id)
            .send(Execute { command, cause, expected_version })
            .await
            .map_err(|e| CommandError::Unavailable(e.to_string()))?
    }

    /// A recorder for aggregate `id`: its hosted actor, or else a new one that this node does not
    /// keep, which stops once its last recorder is dropped. For callers that record facts about an
    /// aggregate that may be forgotten meanwhile (a stream outliving its session).
    pub fn recorder(&self, id: Uuid) -> Recorder<A> {
        let hosted = self.actors.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned();
        Recorder {
            actor: hosted.unwrap_or_else(|| self.start(id)),
            unrecorded: self.unrecorded.clone(),
        }
    }

    /// Sends a command to aggregate `id` without waiting: it is queued in call order.
    pub fn tell(&self, id: Uuid, command: A::Command, cause: Cause) {
        Recorder { actor: self.hosted(id), unrecorded: self.unrecorded.clone() }
            .tell(command, cause);
    }

    /// Told commands not yet recorded (appended, or refused by their aggregate): a stopping
    /// node waits for none to be left, so that what its streams did is not lost with it.
    pub fn unrecorded(&self) -> usize {
        *self.unrecorded.borrow()
    }

    /// Waits until every told command is recorded.
    pub async fn all_recorded(&self) {
        let _ = self.unrecorded.subscribe().wait_for(|n| *n == 0).await;
    }

    /// Forgets the actor of a finished aggregate; it stops once its queued commands are done.
    pub fn forget(&self, id: Uuid) {
        self.actors.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Actors currently hosted, for status.
    pub fn len(&self) -> usize {
        self.actors.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{Gateway, GatewayCommand};
    use ism_events::embedded::EmbeddedLog;
    use ism_events::{AggregateId, Event, SystemClock};

    /// Two nodes host the same gateway; the one with a stale cache loses the append race,
    /// reloads, and re-decides on the fresh state instead of recording a duplicate.
    #[actix::test]
    async fn a_stale_node_re_decides_after_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path()).unwrap());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let node_a = NodeActors::<Gateway>::new(Arbiter::current(), log.clone(), clock.clone());
        let node_b = NodeActors::<Gateway>::new(Arbiter::current(), log.clone(), clock);
        let id = Uuid::new_v4();
        node_a
            .execute(
                id,
                GatewayCommand::Create { name: "corp".into(), description: String::new() },
                Cause::by(ism_events::Principal::user("alice")),
            )
            .await
            .unwrap();
        // Node B caches the gateway while it is still Initializing.
        let cred = GatewayCommand::IssueScannerCredential {
            credential: Uuid::new_v4(),
            label: "zap".into(),
            secret_hash: "h".into(),
            kind: ism_events::CredentialKind::Scan,
        };
        node_b.execute(id, cred, Cause::by(ism_events::Principal::user("bob"))).await.unwrap();
        node_a
            .execute(
                id,
                GatewayCommand::Activate { node: "a".into() },
                Cause::by(ism_events::Principal::user("a")),
            )
            .await
            .unwrap();
        let again = node_b
            .execute(
                id,
                GatewayCommand::Activate { node: "b".into() },
                Cause::by(ism_events::Principal::user("b")),
            )
            .await
            .unwrap();
        assert!(again.recorded.is_none(), "node b must see the activation after reloading");
        let events = log.read_aggregate(&AggregateId::gateway(id)).await.unwrap();
        let activations = events
            .iter()
            .filter(|r| matches!(r.envelope.event, Event::GatewayActivated { .. }))
            .count();
        assert_eq!(activations, 1);
        assert_eq!(events[0].envelope.actor_shown().as_deref(), Some("user:alice"));
    }

    /// A node whose cached endpoint predates a key rotation made elsewhere must not let the old
    /// key in, although accepting it would append nothing.
    #[actix::test]
    async fn a_cached_state_is_refreshed_before_a_decision_that_appends_nothing() {
        use crate::endpoint::{Endpoint, EndpointCommand, EndpointError};
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path()).unwrap());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let node_a = NodeActors::<Endpoint>::new(Arbiter::current(), log.clone(), clock.clone());
        let node_b = NodeActors::<Endpoint>::new(Arbiter::current(), log.clone(), clock);
        let id = Uuid::new_v4();
        let add = EndpointCommand::Add {
            gateway: Uuid::nil(),
            name: "dc1".into(),
            description: String::new(),
            platform: ism_events::Platform::Linux,
            key_hash: "old".into(),
        };
        node_a.execute(id, add, Cause::by(ism_events::Principal::user("alice"))).await.unwrap();
        let register = |hash: &str| EndpointCommand::Register {
            presented_key_hash: hash.into(),
            machine: "m1".into(),
            hostname: "h".into(),
            platform: "linux".into(),
            agent_version: "0".into(),
        };
        node_b
            .execute(id, register("old"), Cause::by(ism_events::Principal::user("m1")))
            .await
            .unwrap();
        node_a
            .execute(
                id,
                EndpointCommand::RotateKey { key_generation: 2, key_hash: "new".into() },
                Cause::by(ism_events::Principal::user("alice")),
            )
            .await
            .unwrap();
        let again =
            node_b.execute(id, register("old"), Cause::by(ism_events::Principal::user("m1"))).await;
        assert!(
            matches!(again, Err(CommandError::Rejected(EndpointError::InvalidKey))),
            "{again:?}"
        );
    }

    /// A node's tunnel actors over a fresh embedded log, and a tunnel opened through them.
    async fn an_open_tunnel(
    ) -> (tempfile::TempDir, Arc<dyn EventLog>, NodeActors<crate::tunnel::Tunnel>, Uuid) {
        use crate::tunnel::{Tunnel, TunnelCommand};
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path()).unwrap());
        let tunnels =
            NodeActors::<Tunnel>::new(Arbiter::current(), log.clone(), Arc::new(SystemClock));
        let id = Uuid::new_v4();
        let open = TunnelCommand::Open {
            endpoint: Uuid::nil(),
            gateway: Uuid::nil(),
            node: "n".into(),
            machine: "m".into(),
            remote_addr: "r".into(),
            agent_version: "0".into(),
        };
        tunnels.execute(id, open, Cause::by(ism_events::Principal::user("n"))).await.unwrap();
        (dir, log, tunnels, id)
    }

    /// Each command told after the previous batch went out starts a batch of its own, also
    /// through a recorder whose actor the node has forgotten (and which only that recorder holds).
    #[actix::test]
    async fn a_command_told_after_a_batch_went_out_is_recorded_too() {
        use crate::tunnel::TunnelCommand;
        let (_dir, log, tunnels, id) = an_open_tunnel().await;
        let by = || Cause::by(ism_events::Principal::user("s"));
        let opened = |stream| TunnelCommand::RecordStreamOpened {
            stream,
            target: "t:1".into(),
            scanner: "s".into(),
            via: None,
        };
        let agg = AggregateId::tunnel(id);
        for stream in 0..3u32 {
            if stream == 2 {
                let recorder = tunnels.recorder(id);
                tunnels.forget(id);
                recorder.tell(opened(stream), by());
            } else {
                tunnels.tell(id, opened(stream), by());
            }
            let recorded =
                tokio::time::timeout(std::time::Duration::from_secs(30), tunnels.all_recorded());
            recorded.await.expect("every told command recorded");
            assert_eq!(log.version(&agg).await.unwrap(), u64::from(stream) + 2);
        }
    }

    /// Facts told in a burst are all recorded, in the order told (in batches, which this does not
    /// count: see the told facts' figures in ARCHITECTURE.md).
    #[actix::test]
    async fn told_facts_are_recorded_in_order_in_batches() {
        use crate::tunnel::TunnelCommand;
        let (_dir, log, tunnels, id) = an_open_tunnel().await;
        let started = std::time::Instant::now();
        for stream in 0..2000u32 {
            tunnels.tell(
                id,
                TunnelCommand::RecordStreamOpened {
                    stream,
                    target: "t:1".into(),
                    scanner: "s".into(),
                    via: None,
                },
                Cause::by(ism_events::Principal::user("s")),
            );
        }
        let recorded =
            tokio::time::timeout(std::time::Duration::from_secs(30), tunnels.all_recorded());
        recorded.await.expect("every told fact recorded");
        let agg = AggregateId::tunnel(id);
        assert_eq!(log.version(&agg).await.unwrap(), 2001);
        println!("2000 told facts recorded in {:?}", started.elapsed());
        let events = log.read_aggregate(&agg).await.unwrap();
        let streams: Vec<u32> = events
            .iter()
            .filter_map(|r| match r.envelope.event {
                Event::StreamOpened { stream, .. } => Some(stream),
                _ => None,
            })
            .collect();
        assert_eq!(streams, (0..2000).collect::<Vec<_>>());
    }
}
