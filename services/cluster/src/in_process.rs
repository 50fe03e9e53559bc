//! Coordination for a single node (the embedded default): nothing to share, so it lives in this
//! process.

use crate::coordination::{
    Claimed, CoordError, Coordination, NodeAnnouncement, Owner, OwnerChange, OwnerFeed,
};
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use tokio::sync::broadcast;
use uuid::Uuid;

pub struct InProcess {
    state: Mutex<State>,
    changes: broadcast::Sender<OwnerChange>,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, NodeAnnouncement>,
    owners: HashMap<Uuid, Owner>,
    drains: BTreeSet<String>,
}

impl Default for InProcess {
    fn default() -> Self {
        Self { state: Mutex::default(), changes: broadcast::channel(1024).0 }
    }
}

impl InProcess {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Coordination for InProcess {
    async fn announce(&self, node: &NodeAnnouncement) -> Result<(), CoordError> {
        self.state().nodes.insert(node.node.clone(), node.clone());
        Ok(())
    }

    async fn withdraw(&self, node: &str) -> Result<(), CoordError> {
        self.state().nodes.remove(node);
        Ok(())
    }

    async fn request_drain(&self, node: &str) -> Result<(), CoordError> {
        self.state().drains.insert(node.to_string());
        Ok(())
    }

    async fn drain_requested(&self, node: &str) -> Result<bool, CoordError> {
        Ok(self.state().drains.contains(node))
    }

    async fn clear_drain(&self, node: &str) -> Result<(), CoordError> {
        self.state().drains.remove(node);
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeAnnouncement>, CoordError> {
        Ok(self.state().nodes.values().cloned().collect())
    }

    async fn claim(&self, endpoint: Uuid, owner: &Owner) -> Result<Claimed, CoordError> {
        let previous = self.state().owners.insert(endpoint, owner.clone());
        let _ = self.changes.send(OwnerChange { endpoint, owner: Some(owner.clone()) });
        Ok(Claimed { previous })
    }

    async fn release(&self, endpoint: Uuid, tunnel: Uuid) -> Result<bool, CoordError> {
        let released = {
            let mut s = self.state();
            let ours = s.owners.get(&endpoint).is_some_and(|o| o.tunnel == tunnel);
            if ours {
                s.owners.remove(&endpoint);
            }
            ours
        };
        if released {
            let _ = self.changes.send(OwnerChange { endpoint, owner: None });
        }
        Ok(released)
    }

    async fn owner(&self, endpoint: Uuid) -> Result<Option<Owner>, CoordError> {
        Ok(self.state().owners.get(&endpoint).cloned())
    }

    async fn owners(&self) -> Result<Vec<(Uuid, Owner)>, CoordError> {
        Ok(self.state().owners.iter().map(|(e, o)| (*e, o.clone())).collect())
    }

    async fn watch_owners(&self) -> Result<OwnerFeed, CoordError> {
        // Subscribed before the snapshot is taken: a change in between is seen twice, not lost.
        let changes = feed_of(self.changes.subscribe());
        let current: Vec<Result<OwnerChange, CoordError>> = self
            .state()
            .owners
            .iter()
            .map(|(e, o)| Ok(OwnerChange { endpoint: *e, owner: Some(o.clone()) }))
            .collect();
        Ok(futures_util::stream::iter(current).chain(changes).boxed())
    }

    fn describe(&self) -> String {
        "in process (single node)".into()
    }
}

/// A broadcast receiver as a feed; a reader that fell behind is told, as NATS would fail it.
fn feed_of(rx: broadcast::Receiver<OwnerChange>) -> OwnerFeed {
    futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(change) => Some((Ok(change), rx)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some((
                Err(CoordError::Unavailable(format!("owner feed fell {n} changes behind"))),
                rx,
            )),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .boxed()
}
