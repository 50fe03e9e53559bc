//! The node's heartbeat and what it does about the others: announce itself, judge who is alive,
//! record the end of what a lost node held, and fence out sessions a newer one replaced elsewhere.

use super::{service, Cluster};
use crate::state::NodeState;
use futures_util::{FutureExt, StreamExt};
use ism_cluster::{NodeAnnouncement, NodeRole};
use ism_events::{escaped, Cause, Principal};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

/// Announces this node every `every`, watches the others' heartbeats, and records the end of the
/// sessions of every node that stopped beating (each survivor may do it; the tunnel aggregates
/// record each end once).
pub async fn heartbeat(state: Arc<NodeState>, every: Duration) {
    // A drain request made before this start was for the node that stopped: this one serves.
    if let Err(e) = state.cluster.coordination.clear_drain(&state.cluster.node_id).await {
        tracing::warn!(error = %e, "cannot clear an old drain request for this node");
    }
    beat_forever(state, every).await
}

/// This node as its heartbeat would announce it now: for a listing asked for before its first
/// beat.
pub fn this_node(state: &NodeState) -> super::Member {
    super::Member { announcement: state.announcement(0), alive: true }
}

/// What the heartbeat needs of its node: a seam, so that its loop can be run in a test without a
/// whole node.
#[async_trait::async_trait]
trait Beating: Send + Sync + 'static {
    fn cluster(&self) -> &Cluster;
    /// This node as it announces itself at its `beat`.
    fn announcement(&self, beat: u64) -> NodeAnnouncement;
    /// The node's clock, in milliseconds: when the heartbeat saw a change.
    fn now_ms(&self) -> i64;
    /// Records that no live node serves the gateways any more (`false`, since `at_ms`: when the
    /// heartbeat saw it), or that one does again (at the append: the event carries no time of
    /// its own).
    async fn serving_changed(&self, serving: bool, at_ms: i64);
    /// Records that `node` is gone. Long for a node that held many sessions: a load and an
    /// append each.
    async fn record_lost(&self, node: &str);
}

#[async_trait::async_trait]
impl Beating for NodeState {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn announcement(&self, beat: u64) -> NodeAnnouncement {
        let cluster = &self.cluster;
        NodeAnnouncement {
            node: cluster.node_id.clone(),
            relay: cluster.relay_addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            role: cluster.role(),
            beat,
            sessions: self.sessions.len(),
            streams: self.streams.total(),
            emails: self.sends_email,
            protocol: ism_tunnel_proto::PROTOCOL_VERSION,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn serving_changed(&self, serving: bool, at_ms: i64) {
        if serving {
            service::record_online(self).await;
        } else {
            let why = "no gateway node serves it: every node is draining or lost";
            service::record_offline(self, at_ms, why).await;
        }
    }

    async fn record_lost(&self, node: &str) {
        record_lost_node(self, node).await;
    }
}

/// The heartbeat's loop. It waits for nothing but the coordination store: what it finds to
/// record runs beside it (lost nodes: [`LostNodeRecordings`]; whether any node serves:
/// [`record_serving_changes`]), or its own beat would stand still for as long, and the others
/// would take this node for lost too.
async fn beat_forever<N: Beating>(node: Arc<N>, every: Duration) {
    let cluster = node.cluster();
    let mut recordings = LostNodeRecordings::default();
    let (serving_changes, changes) = mpsc::unbounded_channel();
    // Aborted when the heartbeat is dropped.
    let _serving_recorder =
        AbortOnDropHandle::new(tokio::spawn(record_serving_changes(node.clone(), changes)));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for beat in 1u64.. {
        tick.tick().await;
        recordings.reap();
        match cluster.coordination.drain_requested(&cluster.node_id).await {
            Ok(true) if cluster.start_draining() => {
                tracing::info!("asked to drain: handing this node's endpoints to the others");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read this node's drain request"),
        }
        if let Err(e) = cluster.coordination.announce(&node.announcement(beat)).await {
            tracing::warn!(error = %e, "cannot announce this node to the cluster");
            continue;
        }
        let nodes = match cluster.coordination.nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's nodes");
                continue;
            }
        };
        let (lost, was_serving, serving) = {
            let mut liveness = cluster.liveness();
            // Tokio's clock: the system's in a node, and one a test can pause.
            let now = tokio::time::Instant::now().into_std();
            liveness.observe(&nodes, now);
            let serving = nodes.iter().any(|n| {
                n.role == NodeRole::Serving
                    && (n.node == cluster.node_id || liveness.is_alive(&n.node, now))
            });
            let was_serving = cluster.serving_somewhere.send_replace(serving);
            cluster.joined.send_replace(true);
            cluster.saw(&nodes);
            (liveness.lost(now), was_serving, serving)
        };
        if was_serving != serving {
            // The recorder lives as long as this loop (a recording that panics is logged and
            // the next change recorded); stamped now, not when the recorder gets to it.
            let _ = serving_changes.send((serving, node.now_ms()));
        }
        for lost in lost.into_iter().filter(|n| *n != cluster.node_id) {
            recordings.start(&node, lost);
        }
    }
}

/// Records each change of whether any node serves the gateways (and when the heartbeat saw it),
/// in the order seen: each is an append per gateway, which the beat must not wait for.
async fn record_serving_changes<N: Beating>(
    node: Arc<N>,
    mut changes: UnboundedReceiver<(bool, i64)>,
) {
    while let Some((serving, at_ms)) = changes.recv().await {
        if let Err(panic) = caught(node.serving_changed(serving, at_ms)).await {
            tracing::error!(serving, panic = %escaped(&panic), "recording whether any gateway node serves failed (it panicked)");
        }
    }
}

/// Runs `recording`, returning the message of a panic in it instead of unwinding: a recorder's
/// one failed recording must not end the recordings after it.
async fn caught(recording: impl std::future::Future<Output = ()>) -> Result<(), String> {
    AssertUnwindSafe(recording).catch_unwind().await.map_err(|panic| {
        let message = panic.downcast_ref::<&str>().map(|s| s.to_string());
        message
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

/// The recordings of lost nodes running, each on a task of its own, at most one per node: a node
/// still found lost while its recording runs (it withdraws its announcement only at the end) is
/// not recorded twice at once. Dropped with the heartbeat, which aborts them.
#[derive(Default)]
struct LostNodeRecordings {
    /// Each task returns the node it recorded, however its recording ended.
    running: JoinSet<String>,
    /// The nodes being recorded.
    nodes: HashSet<String>,
}

impl LostNodeRecordings {
    /// Forgets the recordings that ended, so that a node still announced after its recording
    /// (it failed to read the owners, say) is recorded again.
    fn reap(&mut self) {
        // Tasks are aborted only with the heartbeat, so every one that ended names its node.
        while let Some(Ok(node)) = self.running.try_join_next() {
            self.nodes.remove(&node);
        }
    }

    /// Starts recording that `node` is lost, unless that is running already.
    fn start<N: Beating>(&mut self, state: &Arc<N>, node: String) {
        if !self.nodes.insert(node.clone()) {
            return;
        }
        let state = state.clone();
        self.running.spawn(async move {
            if let Err(panic) = caught(state.record_lost(&node)).await {
                tracing::error!(node, panic = %escaped(&panic), "recording a lost gateway node failed (it panicked)");
            }
            node
        });
    }
}

/// Records that `node` is gone: the end of every session it held (and of their streams), its
/// endpoints let go, its announcement withdrawn.
async fn record_lost_node(state: &NodeState, node: &str) {
    tracing::warn!(node, "gateway node lost: recording the end of its sessions");
    let cluster = &state.cluster;
    let cause = Cause::by(Principal::node(state.node_id.clone()));
    let why = format!("gateway node {node} lost");
    let owned = match cluster.coordination.owners().await {
        Ok(owned) => owned,
        Err(e) => {
            // Its announcement stays, so the next heartbeat finds it lost and tries again.
            tracing::warn!(node, error = %e, "cannot read whose endpoints the lost node held");
            return;
        }
    };
    let mut tunnels: Vec<uuid::Uuid> =
        owned.iter().filter(|(_, o)| o.node == node).map(|(_, o)| o.tunnel).collect();
    // Sessions the log shows open on the node, claimed or not.
    tunnels.extend(state.directory.open_tunnels_on(node).unwrap_or_default().iter().map(|t| t.id));
    tunnels.sort();
    tunnels.dedup();
    for tunnel in tunnels {
        if let Err(e) = crate::node::close_lost_session(state, tunnel, &cause, &why).await {
            tracing::warn!(%tunnel, error = %e, "could not record the end of a lost session");
        }
    }
    for (endpoint, owner) in owned.into_iter().filter(|(_, o)| o.node == node) {
        let _ = cluster.coordination.release(endpoint, owner.tunnel).await;
    }
    crate::scans::fail_lost(state, node, &why).await;
    let _ = cluster.coordination.withdraw(node).await;
}

/// Follows who holds each endpoint (the routing of scanner streams reads it) and closes this
/// node's session of an endpoint that a newer session on another node claimed: the newest
/// session wins, wherever it lives. A draining node lets the replaced session's running streams
/// finish first (up to `drain_timeout`).
pub async fn fence_replaced(state: Arc<NodeState>, drain_timeout: Duration) {
    let cluster = &state.cluster;
    loop {
        let mut feed = match cluster.coordination.watch_owners().await {
            Ok(feed) => feed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow endpoint owners; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(change) = feed.next().await {
            let change = match change {
                Ok(change) => change,
                Err(e) => {
                    tracing::warn!(error = %e, "endpoint owner feed interrupted; following again");
                    break;
                }
            };
            cluster.saw_owner(change.endpoint, change.owner.clone());
            let Some(live) = state.sessions.get(change.endpoint) else { continue };
            let reason = match change.owner {
                Some(owner) if owner.tunnel == live.tunnel => continue,
                Some(owner) => format!("replaced by a newer session on node {}", owner.node),
                // This node's claim was let go by another node, which took this node for lost
                // and recorded the session's end: the agent starts a fresh session.
                None if live.session.is_closed() => continue,
                None => "another node took this node for lost and recorded its end".to_string(),
            };
            if cluster.is_draining() {
                tokio::spawn(async move {
                    // Make before break: the streams already running finish first.
                    super::draining::streams_finish(&live.session, drain_timeout).await;
                    live.session.close(reason);
                });
            } else {
                tracing::info!(endpoint = %change.endpoint, %reason, "session fenced out");
                live.session.close(reason);
            }
        }
        // However the feed ended (an error, or the store ended it), it is followed again after a
        // pause: a feed that ends at once again must not spin.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_cluster::in_process::InProcess;
    use ism_cluster::Coordination;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::watch;

    const BEAT: Duration = Duration::from_secs(1);
    const LEASE: Duration = Duration::from_secs(3);
    /// Generous, on the paused clock: it passes only while the test waits on nothing else.
    const PATIENCE: Duration = Duration::from_secs(600);

    fn announcement(node: &str, beat: u64) -> NodeAnnouncement {
        NodeAnnouncement {
            node: node.into(),
            relay: SocketAddr::from(([127, 0, 0, 1], 1)),
            role: NodeRole::Serving,
            beat,
            sessions: 0,
            streams: 0,
            emails: false,
            protocol: ism_tunnel_proto::PROTOCOL_VERSION,
        }
    }

    /// A node whose recordings (of a lost node, of a change in whether any node serves) last
    /// until the test lets them end.
    struct SlowToRecord {
        cluster: Cluster,
        /// Whether it announces itself draining.
        draining: AtomicBool,
        /// The last beat announced.
        beats: watch::Sender<u64>,
        /// Recordings of lost nodes started.
        lost_started: watch::Sender<usize>,
        /// Recordings of whether any node serves started, with what each was told.
        serving_started: watch::Sender<Vec<bool>>,
        /// Whether the first recording of whether any node serves panics.
        first_serving_panics: bool,
        /// Recordings end once this is true.
        release: watch::Sender<bool>,
    }

    impl SlowToRecord {
        fn new(cluster: Cluster, draining: bool) -> Self {
            Self {
                cluster,
                draining: AtomicBool::new(draining),
                beats: watch::channel(0).0,
                lost_started: watch::channel(0).0,
                serving_started: watch::channel(Vec::new()).0,
                first_serving_panics: false,
                release: watch::channel(false).0,
            }
        }

        async fn released(&self) {
            let _ = self.release.subscribe().wait_for(|released| *released).await;
        }
    }

    #[async_trait::async_trait]
    impl Beating for SlowToRecord {
        fn cluster(&self) -> &Cluster {
            &self.cluster
        }

        fn announcement(&self, beat: u64) -> NodeAnnouncement {
            self.beats.send_replace(beat);
            let draining = self.draining.load(Ordering::Relaxed);
            let role = if draining { NodeRole::Draining } else { NodeRole::Serving };
            NodeAnnouncement { role, ..announcement(&self.cluster.node_id, beat) }
        }

        fn now_ms(&self) -> i64 {
            0
        }

        async fn serving_changed(&self, serving: bool, _at_ms: i64) {
            let mut first = false;
            self.serving_started.send_modify(|told| {
                told.push(serving);
                first = told.len() == 1;
            });
            assert!(!(first && self.first_serving_panics), "the first recording panics");
            self.released().await;
        }

        async fn record_lost(&self, _node: &str) {
            self.lost_started.send_modify(|n| *n += 1);
            self.released().await;
        }
    }

    /// Waits until `rx` shows what `ready` wants, for at most [`PATIENCE`].
    async fn waited<T>(what: &str, rx: &mut watch::Receiver<T>, ready: impl FnMut(&T) -> bool) {
        let changed = tokio::time::timeout(PATIENCE, rx.wait_for(ready)).await;
        assert!(matches!(changed, Ok(Ok(_))), "{what}");
    }

    #[tokio::test(start_paused = true)]
    async fn recording_a_lost_node_leaves_the_heartbeat_beating() {
        let coordination = Arc::new(InProcess::default());
        // Node b announced itself once and then stopped.
        coordination.announce(&announcement("b", 1)).await.unwrap();
        let cluster = Cluster::new("a".into(), coordination.clone(), None, None, LEASE, BEAT);
        let node = Arc::new(SlowToRecord::new(cluster, false));
        let heartbeat = tokio::spawn(beat_forever(node.clone(), BEAT));

        let mut started = node.lost_started.subscribe();
        waited("b is found lost", &mut started, |n| *n == 1).await;
        let found_lost_at = *node.beats.borrow();
        // Far longer than a lease, during which b is found lost at every beat.
        let mut beats = node.beats.subscribe();
        let beating = |beat: &u64| *beat >= found_lost_at + 10;
        waited("the heartbeat goes on while b is recorded", &mut beats, beating).await;
        let nodes = coordination.nodes().await.unwrap();
        let a = nodes.iter().find(|n| n.node == "a").unwrap();
        assert!(a.beat >= found_lost_at + 10, "a announced beat {}", a.beat);
        assert_eq!(
            *node.lost_started.borrow(),
            1,
            "b's recording is not started again while it runs"
        );

        // Once it has ended, b (still announced: nothing withdrew it here) is recorded again.
        node.release.send_replace(true);
        waited("b is recorded again", &mut started, |n| *n >= 2).await;
        heartbeat.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn recording_that_no_node_serves_leaves_the_heartbeat_beating() {
        let coordination = Arc::new(InProcess::default());
        let cluster = Cluster::new("a".into(), coordination.clone(), None, None, LEASE, BEAT);
        // The only node, draining: nobody serves from its first beat on.
        let node = Arc::new(SlowToRecord::new(cluster, true));
        let heartbeat = tokio::spawn(beat_forever(node.clone(), BEAT));

        let mut started = node.serving_started.subscribe();
        waited("the change is being recorded", &mut started, |told| *told == [false]).await;
        let mut beats = node.beats.subscribe();
        waited("the heartbeat goes on meanwhile", &mut beats, |beat| *beat >= 10).await;
        assert!(!node.cluster.serving_somewhere());
        node.release.send_replace(true);
        heartbeat.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_recording_that_panics_leaves_the_next_change_recorded() {
        let coordination = Arc::new(InProcess::default());
        let cluster = Cluster::new("a".into(), coordination.clone(), None, None, LEASE, BEAT);
        // Draining: nobody serves, and recording that panics.
        let node = Arc::new(SlowToRecord {
            first_serving_panics: true,
            ..SlowToRecord::new(cluster, true)
        });
        node.release.send_replace(true);
        let heartbeat = tokio::spawn(beat_forever(node.clone(), BEAT));

        let mut started = node.serving_started.subscribe();
        waited("nobody serving is being recorded", &mut started, |told| *told == [false]).await;
        node.draining.store(false, Ordering::Relaxed);
        let recorded_again = |told: &Vec<bool>| *told == [false, true];
        waited("serving again is recorded after the panic", &mut started, recorded_again).await;
        heartbeat.abort();
    }
}
