//! Coordination in NATS KV, on the JetStream that holds the event log: bucket `ism-nodes` (one
//! key per node: its latest heartbeat) and bucket `ism-owners` (one key per connected endpoint:
//! the session that holds it), and bucket `ism-drains` (one key per node asked to drain). Claims and releases are compare-and-swap on the key's revision,
//! so of two nodes racing for an endpoint exactly one write wins and the other re-reads.

use crate::coordination::{
    Claimed, CoordError, Coordination, NodeAnnouncement, Owner, OwnerChange, OwnerFeed,
};
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, Store, UpdateErrorKind};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use ism_events::jetstream::{set_up, Patience};
use std::time::Duration;
use uuid::Uuid;

pub const NODES_BUCKET: &str = "ism-nodes";
pub const OWNERS_BUCKET: &str = "ism-owners";
pub const DRAINS_BUCKET: &str = "ism-drains";
/// Attempts at a claim before giving up on a contended endpoint.
const ATTEMPTS: usize = 8;

pub struct NatsCoordination {
    nodes: Store,
    owners: Store,
    drains: Store,
    url: String,
}

fn unavailable(e: impl std::fmt::Display) -> CoordError {
    CoordError::Unavailable(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, CoordError> {
    serde_json::from_slice(value).map_err(|e| CoordError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

impl NatsCoordination {
    /// Connects to NATS at `url` (one server or a comma-separated list) and creates the buckets (with `replicas` copies) if they do not
    /// exist. Node records expire after `record_ttl` without a heartbeat, so a node that died is
    /// forgotten eventually even if nobody withdraws it.
    pub async fn connect(
        url: &str,
        replicas: usize,
        record_ttl: Duration,
    ) -> Result<Self, CoordError> {
        let client =
            ism_events::jetstream::connect_client(url, "ism-cluster", Patience::WaitForServers)
                .await
                .map_err(CoordError::Unavailable)?;
        let js = async_nats::jetstream::new(client);
        let bucket = |name: &str, description: &str, max_age: Duration| kv::Config {
            bucket: name.into(),
            description: description.into(),
            history: 1,
            max_age,
            num_replicas: replicas,
            ..Default::default()
        };
        let create = |config: kv::Config| {
            let js = js.clone();
            async move {
                let what = format!("NATS KV bucket {}", config.bucket);
                set_up(&what, || js.create_or_update_key_value(config.clone()))
                    .await
                    .map_err(unavailable)
            }
        };
        let nodes =
            create(bucket(NODES_BUCKET, "gateway nodes: latest heartbeat of each", record_ttl))
                .await?;
        let owners = create(bucket(
            OWNERS_BUCKET,
            "connected endpoints: the node and session holding each",
            Duration::ZERO,
        ))
        .await?;
        let drains =
            create(bucket(DRAINS_BUCKET, "gateway nodes asked to drain", Duration::ZERO)).await?;
        Ok(Self { nodes, owners, drains, url: ism_events::jetstream::shown(url) })
    }
}

/// Whether a write expecting a key's revision found the key moved on since it was read.
fn moved_on(e: &kv::UpdateError) -> bool {
    use async_nats::jetstream::context::PublishError;
    e.kind() == UpdateErrorKind::WrongLastRevision
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<PublishError>())
            .is_some_and(ism_events::jetstream::lost_the_race)
}

/// The keys `store` holds (deleted ones included: their values read as none), as the server
/// lists its subjects at one moment. Not `kv::Store::keys`: that walks a consumer over the last
/// value of each key, and a key written again while it walks (a node's heartbeat, four times a
/// second) can have its old value removed before it is delivered and its new one counted after
/// the walk ends, so the key is missing from the list (a node left out of `ism node list`, or
/// taken for absent when a draining node looks for another to hand its endpoints to).
async fn keys_of(store: &kv::Store) -> Result<Vec<String>, CoordError> {
    let prefix = store.prefix.clone();
    let subjects =
        store.stream.info_with_subjects(format!("{prefix}>")).await.map_err(unavailable)?;
    subjects
        .map_ok(|(subject, _)| subject.strip_prefix(&prefix).unwrap_or(&subject).to_string())
        .try_collect()
        .await
        .map_err(unavailable)
}

/// The owner an entry of the owners' bucket names: none for a deletion, and none for a record
/// this version cannot read (another version's, or damaged). Such a record names no session
/// anyone could reach, fence or end; failing on it instead would stop every reader (a lost
/// node's sessions never recorded, the owner feed followed again from the same record) and
/// every claim (the endpoint never holding a session again), and the next claim overwrites it.
fn owner_in(entry: &kv::Entry) -> Option<Owner> {
    (entry.operation == Operation::Put).then(|| decode(&entry.value).ok()).flatten()
}

fn key(endpoint: Uuid) -> String {
    endpoint.simple().to_string()
}

#[async_trait::async_trait]
impl Coordination for NatsCoordination {
    async fn announce(&self, node: &NodeAnnouncement) -> Result<(), CoordError> {
        self.nodes.put(&node.node, encode(node)).await.map_err(unavailable)?;
        Ok(())
    }

    async fn withdraw(&self, node: &str) -> Result<(), CoordError> {
        self.nodes.delete(node).await.map_err(unavailable)
    }

    async fn request_drain(&self, node: &str) -> Result<(), CoordError> {
        self.drains.put(node, Bytes::from_static(b"drain")).await.map_err(unavailable)?;
        Ok(())
    }

    async fn drain_requested(&self, node: &str) -> Result<bool, CoordError> {
        Ok(self.drains.get(node).await.map_err(unavailable)?.is_some())
    }

    async fn clear_drain(&self, node: &str) -> Result<(), CoordError> {
        self.drains.delete(node).await.map_err(unavailable)
    }

    async fn nodes(&self) -> Result<Vec<NodeAnnouncement>, CoordError> {
        let keys = keys_of(&self.nodes).await?;
        let mut nodes = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(value) = self.nodes.get(k).await.map_err(unavailable)? {
                nodes.push(decode(&value)?);
            }
        }
        Ok(nodes)
    }

    async fn claim(&self, endpoint: Uuid, owner: &Owner) -> Result<Claimed, CoordError> {
        let (k, value) = (key(endpoint), encode(owner));
        for _ in 0..ATTEMPTS {
            let current = self.owners.entry(&k).await.map_err(unavailable)?;
            match current.filter(|e| e.operation == Operation::Put) {
                None => match self.owners.create(&k, value.clone()).await {
                    Ok(_) => return Ok(Claimed { previous: None }),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(unavailable(e)),
                },
                Some(entry) => {
                    let previous = owner_in(&entry);
                    match self.owners.update(&k, value.clone(), entry.revision).await {
                        Ok(_) => return Ok(Claimed { previous }),
                        Err(e) if moved_on(&e) => continue,
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
        }
        Err(CoordError::Contended(endpoint))
    }

    async fn release(&self, endpoint: Uuid, tunnel: Uuid) -> Result<bool, CoordError> {
        let k = key(endpoint);
        let Some(entry) = self.owners.entry(&k).await.map_err(unavailable)? else {
            return Ok(false);
        };
        if owner_in(&entry).map(|owner| owner.tunnel) != Some(tunnel) {
            return Ok(false);
        }
        // Only if nobody claimed it since we read it: a claim in between is a wrong last
        // sequence (not ours to release any more); anything else is NATS failing.
        match self.owners.delete_expect_revision(&k, Some(entry.revision)).await {
            Ok(()) => Ok(true),
            Err(e) if moved_on(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn owner(&self, endpoint: Uuid) -> Result<Option<Owner>, CoordError> {
        let entry = self.owners.entry(key(endpoint)).await.map_err(unavailable)?;
        Ok(entry.as_ref().and_then(owner_in))
    }

    async fn owners(&self) -> Result<Vec<(Uuid, Owner)>, CoordError> {
        let keys = keys_of(&self.owners).await?;
        let mut owners = Vec::with_capacity(keys.len());
        for k in keys {
            let Ok(endpoint) = Uuid::try_parse(&k) else { continue };
            if let Some(owner) = self.owner(endpoint).await? {
                owners.push((endpoint, owner));
            }
        }
        Ok(owners)
    }

    async fn watch_owners(&self) -> Result<OwnerFeed, CoordError> {
        // The last value of every key first, then each change.
        let watch = self.owners.watch_with_history(">").await.map_err(unavailable)?;
        Ok(watch
            .filter_map(|entry| {
                std::future::ready(match entry {
                    Err(e) => Some(Err(unavailable(e))),
                    Ok(entry) => Uuid::try_parse(&entry.key)
                        .ok()
                        .map(|endpoint| Ok(OwnerChange { endpoint, owner: owner_in(&entry) })),
                })
            })
            .boxed())
    }

    fn describe(&self) -> String {
        format!("NATS KV at {}", self.url)
    }
}
