//! Adding, renaming and deleting an endpoint: two aggregates, one rule.
//!
//! Endpoint names are unique per gateway and a gateway with endpoints cannot be deleted, so the
//! gateway aggregate holds the roster of its endpoints' names. Each of these operations changes
//! the roster first and the endpoint second; if the endpoint's change fails, the roster change is
//! undone, so nothing is left half-applied; a deletion that stopped half-way completes when
//! repeated. The API, the CLI (through the API) and tests all go through here.

use crate::aggregate::{CommandError, Executed};
use crate::endpoint::{Endpoint, EndpointCommand, EndpointError};
use crate::gateway::{Gateway, GatewayCommand, GatewayError};
use crate::host::NodeActors;
use ism_events::{AggregateId, Cause, EventLog, Platform};
use uuid::Uuid;

/// Why a roster operation failed: the gateway's rules (a duplicate name, say) or the endpoint's.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error(transparent)]
    Gateway(#[from] CommandError<GatewayError>),
    #[error(transparent)]
    Endpoint(#[from] CommandError<EndpointError>),
}

/// The aggregates a roster operation changes.
pub struct Roster<'a> {
    pub gateways: &'a NodeActors<Gateway>,
    pub endpoints: &'a NodeActors<Endpoint>,
    pub log: &'a dyn EventLog,
}

/// A new endpoint.
pub struct NewEndpoint {
    pub id: Uuid,
    pub gateway: Uuid,
    pub name: String,
    pub description: String,
    pub platform: Platform,
    /// Hash of its first key.
    pub key_hash: String,
}

/// An endpoint as a caller read it, to edit it.
pub struct ReadEndpoint {
    pub id: Uuid,
    pub gateway: Uuid,
    pub name: String,
    /// The endpoint aggregate's version the read reflects.
    pub version: u64,
}

impl Roster<'_> {
    /// Reserves the name in the gateway's roster, then adds the endpoint.
    pub async fn add(&self, new: NewEndpoint, cause: &Cause) -> Result<Executed, RosterError> {
        let (id, gateway) = (new.id, new.gateway);
        let assign = GatewayCommand::AssignEndpoint { endpoint: id, name: new.name.clone() };
        self.gateways.execute(gateway, assign, cause.clone()).await?;
        let add = EndpointCommand::Add {
            gateway,
            name: new.name,
            description: new.description,
            platform: new.platform,
            key_hash: new.key_hash,
        };
        match self.endpoints.execute(id, add, cause.clone()).await {
            Ok(added) => Ok(added),
            Err(e) => {
                self.undo(gateway, GatewayCommand::ReleaseEndpoint { endpoint: id }, cause).await;
                Err(e.into())
            }
        }
    }

    /// Edits the endpoint's name and description, as the caller read it: `read` is the
    /// endpoint as it was at its `version`. A rename changes the roster first. An edit based on
    /// an outdated read is refused before anything is recorded.
    pub async fn edit(
        &self,
        read: &ReadEndpoint,
        name: Option<String>,
        description: Option<String>,
        cause: &Cause,
    ) -> Result<Executed, RosterError> {
        let (endpoint, version) = (read.id, read.version);
        // Checked here as well as by the endpoint's own append: a stale edit must not rename
        // the roster entry and undo it, recording two renames for one refusal.
        let actual = self
            .log
            .version(&AggregateId::endpoint(endpoint))
            .await
            .map_err(CommandError::<EndpointError>::from)?;
        if actual != version {
            let stale = CommandError::Stale {
                aggregate: AggregateId::endpoint(endpoint),
                expected: version,
                actual,
            };
            return Err(RosterError::Endpoint(stale));
        }
        let renamed = name.clone().filter(|n| *n != read.name);
        if let Some(n) = &renamed {
            let rename = GatewayCommand::RenameEndpoint { endpoint, name: n.clone() };
            self.gateways.execute(read.gateway, rename, cause.clone()).await?;
        }
        let edit = EndpointCommand::Edit { name, description };
        match self.endpoints.execute_at(endpoint, edit, cause.clone(), Some(version)).await {
            Ok(edited) => Ok(edited),
            Err(e) => {
                if renamed.is_some() {
                    let back = GatewayCommand::RenameEndpoint { endpoint, name: read.name.clone() };
                    self.undo(read.gateway, back, cause).await;
                }
                Err(e.into())
            }
        }
    }

    /// Deletes the endpoint, then releases its name. Safe to repeat if a previous attempt
    /// stopped half-way. Returns the last change recorded, if any.
    pub async fn delete(
        &self,
        endpoint: Uuid,
        gateway: Uuid,
        cause: &Cause,
    ) -> Result<Option<u64>, RosterError> {
        let deleted =
            self.endpoints.execute(endpoint, EndpointCommand::Delete, cause.clone()).await?;
        let release = GatewayCommand::ReleaseEndpoint { endpoint };
        let released = self.gateways.execute(gateway, release, cause.clone()).await?;
        Ok(released.position().or(deleted.position()))
    }

    async fn undo(&self, gateway: Uuid, command: GatewayCommand, cause: &Cause) {
        if let Err(e) = self.gateways.execute(gateway, command, cause.clone()).await {
            tracing::warn!(%gateway, error = %e, "could not undo a roster change; repeat the operation to settle it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::Arbiter;
    use ism_events::embedded::EmbeddedLog;
    use ism_events::{Clock, Event, SystemClock};
    use std::sync::Arc;

    struct Node {
        log: Arc<dyn EventLog>,
        gateways: NodeActors<Gateway>,
        endpoints: NodeActors<Endpoint>,
        _dir: tempfile::TempDir,
    }

    impl Node {
        fn new() -> Node {
            let dir = tempfile::tempdir().unwrap();
            let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path()).unwrap());
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let gateways = NodeActors::new(Arbiter::current(), log.clone(), clock.clone());
            let endpoints = NodeActors::new(Arbiter::current(), log.clone(), clock);
            Node { log, gateways, endpoints, _dir: dir }
        }

        fn roster(&self) -> Roster<'_> {
            Roster { gateways: &self.gateways, endpoints: &self.endpoints, log: &*self.log }
        }

        async fn events(&self, aggregate: AggregateId) -> Vec<&'static str> {
            let records = self.log.read_aggregate(&aggregate).await.unwrap();
            records.iter().map(|r| r.envelope.event.name()).collect()
        }
    }

    fn entry(gateway: Uuid, name: &str) -> NewEndpoint {
        NewEndpoint {
            id: Uuid::new_v4(),
            gateway,
            name: name.into(),
            description: String::new(),
            platform: Platform::Linux,
            key_hash: "h".into(),
        }
    }

    async fn gateway(node: &Node) -> Uuid {
        let id = Uuid::new_v4();
        let create = GatewayCommand::Create { name: "corp".into(), description: String::new() };
        node.gateways
            .execute(id, create, Cause::by(ism_events::Principal::user("admin")))
            .await
            .unwrap();
        id
    }

    #[actix::test]
    async fn a_stale_rename_is_refused_before_anything_is_recorded() {
        let node = Node::new();
        let gw = gateway(&node).await;
        let new = entry(gw, "dc1");
        let id = new.id;
        node.roster().add(new, &Cause::by(ism_events::Principal::user("admin"))).await.unwrap();
        let read = |version| ReadEndpoint { id, gateway: gw, name: "dc1".into(), version };
        let cause = Cause::by(ism_events::Principal::user("admin"));
        node.roster().edit(&read(1), None, Some("first".into()), &cause).await.unwrap();
        // A client that read version 1 renames: refused, and the roster is left alone.
        let stale = node.roster().edit(&read(1), Some("dc2".into()), None, &cause).await;
        assert!(
            matches!(stale, Err(RosterError::Endpoint(CommandError::Stale { actual: 2, .. }))),
            "{stale:?}"
        );
        let gateway_events = node.events(AggregateId::gateway(gw)).await;
        assert_eq!(gateway_events, ["GatewayCreated", "EndpointAssigned"]);
        // On the current version the rename goes through, roster first.
        node.roster().edit(&read(2), Some("dc2".into()), None, &cause).await.unwrap();
        let gateway_events = node.events(AggregateId::gateway(gw)).await;
        assert_eq!(gateway_events.last(), Some(&"EndpointAssignmentRenamed"));
    }

    #[actix::test]
    async fn a_duplicate_name_adds_nothing_and_a_deletion_frees_the_name() {
        let node = Node::new();
        let gw = gateway(&node).await;
        let cause = Cause::by(ism_events::Principal::user("admin"));
        let first = entry(gw, "dc1");
        let first_id = first.id;
        node.roster().add(first, &cause).await.unwrap();
        let duplicate = entry(gw, "DC1");
        let duplicate_id = duplicate.id;
        let refused = node.roster().add(duplicate, &cause).await;
        assert!(matches!(refused, Err(RosterError::Gateway(_))), "{refused:?}");
        assert!(node.events(AggregateId::endpoint(duplicate_id)).await.is_empty());
        // Deleting twice (a retried deletion) settles once.
        node.roster().delete(first_id, gw, &cause).await.unwrap();
        assert_eq!(node.roster().delete(first_id, gw, &cause).await.unwrap(), None);
        let events = node.log.read_aggregate(&AggregateId::gateway(gw)).await.unwrap();
        let released =
            events.iter().filter(|r| matches!(r.envelope.event, Event::EndpointReleased { .. }));
        assert_eq!(released.count(), 1);
        node.roster().add(entry(gw, "dc1"), &cause).await.unwrap();
    }
}
