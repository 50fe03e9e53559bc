//! The gateway actor: a gateway's identity and lifecycle, its scanner credentials, and the roster
//! of its endpoints' names.
//!
//! The roster lives here, not in the endpoints, because two rules span endpoints and must hold
//! across nodes: names are unique within a gateway, and a gateway with endpoints cannot be
//! deleted. Each change to the roster is one append to this aggregate, so optimistic concurrency
//! decides races between nodes. Adding, renaming and deleting an endpoint therefore touch the
//! gateway first (roster) and the endpoint second; see `ism-gateway`'s API for the order.

use crate::aggregate::Aggregate;
use crate::text::{checked, TextError, MAX_DESCRIPTION, MAX_NAME};
use ism_events::{AggregateKind, CredentialKind, GatewayEvent, RepeatedRefusals};
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayStatus {
    /// Created; no node has started serving it yet.
    Initializing,
    /// A node serves it.
    Online,
    /// Deleted; kept so its name stays visible.
    Deleted,
}

#[derive(Debug, Default)]
pub struct Gateway {
    pub id: Uuid,
    pub created: Option<CreatedGateway>,
}

#[derive(Debug)]
pub struct CreatedGateway {
    pub name: String,
    pub description: String,
    pub status: GatewayStatus,
    /// Scanner credential id -> whether it is still valid.
    pub scanner_credentials: BTreeMap<Uuid, bool>,
    /// Endpoint id -> name.
    pub endpoints: BTreeMap<Uuid, String>,
    /// Recorded as served by no node (after it was online).
    pub offline: bool,
}

pub enum GatewayCommand {
    Create {
        name: String,
        description: String,
    },
    /// A node starts serving the gateway.
    Activate {
        node: String,
    },
    IssueScannerCredential {
        credential: Uuid,
        label: String,
        secret_hash: String,
        kind: CredentialKind,
    },
    RevokeScannerCredential {
        credential: Uuid,
    },
    /// Reserve `name` for a new endpoint.
    AssignEndpoint {
        endpoint: Uuid,
        name: String,
    },
    RenameEndpoint {
        endpoint: Uuid,
        name: String,
    },
    /// The endpoint was deleted.
    ReleaseEndpoint {
        endpoint: Uuid,
    },
    Delete {
        reason: String,
    },
    /// A scanner was turned away before any stream was opened (recorded in full).
    RecordScannerRefused {
        scanner: String,
        endpoint: String,
        reason: String,
    },
    /// Refusals counted after a recorded `ScannerRefused` of the same kind.
    RecordScannerRefusalsRepeated(RepeatedRefusals),
    /// No node serves the gateway any more, since `since_ms`. Nothing to record unless it is
    /// online (two nodes seeing it record it once).
    RecordOffline {
        since_ms: i64,
        why: String,
    },
    /// `node` serves the gateway again after it was recorded offline.
    RecordOnline {
        node: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway {0} already exists")]
    AlreadyExists(Uuid),
    #[error("gateway {0} does not exist")]
    NotFound(Uuid),
    #[error("gateway {0} was deleted")]
    Deleted(Uuid),
    #[error("gateway {gateway:?} already has an endpoint named {name:?}")]
    DuplicateName { gateway: String, name: String },
    #[error("gateway {gateway:?} still has endpoints ({names}); delete them first")]
    HasEndpoints { gateway: String, names: String },
    #[error("gateway has no scanner credential {0}")]
    UnknownCredential(Uuid),
    #[error(transparent)]
    Invalid(#[from] TextError),
}

impl Gateway {
    fn existing(&self) -> Result<&CreatedGateway, GatewayError> {
        let g = self.created.as_ref().ok_or(GatewayError::NotFound(self.id))?;
        if g.status == GatewayStatus::Deleted {
            return Err(GatewayError::Deleted(self.id));
        }
        Ok(g)
    }
}

impl CreatedGateway {
    fn name_taken(&self, name: &str, by_other_than: Uuid) -> bool {
        self.endpoints.iter().any(|(id, n)| *id != by_other_than && n.eq_ignore_ascii_case(name))
    }
}

impl Aggregate for Gateway {
    type Command = GatewayCommand;
    type Error = GatewayError;
    type Event = GatewayEvent;
    const KIND: AggregateKind = AggregateKind::Gateway;

    fn new(id: Uuid) -> Self {
        Self { id, created: None }
    }

    fn apply(&mut self, event: &GatewayEvent) {
        use GatewayEvent::*;
        if let GatewayCreated { name, description } = event {
            self.created = Some(CreatedGateway {
                name: name.clone(),
                description: description.clone(),
                status: GatewayStatus::Initializing,
                scanner_credentials: BTreeMap::new(),
                endpoints: BTreeMap::new(),
                offline: false,
            });
            return;
        }
        // Every other event follows a creation.
        let Some(g) = &mut self.created else { return };
        match event {
            GatewayCreated { .. } => {}
            GatewayActivated { .. } => g.status = GatewayStatus::Online,
            ScannerCredentialIssued { credential, .. } => {
                g.scanner_credentials.insert(*credential, true);
            }
            ScannerCredentialRevoked { credential } => {
                g.scanner_credentials.insert(*credential, false);
            }
            EndpointAssigned { endpoint, name } | EndpointAssignmentRenamed { endpoint, name } => {
                g.endpoints.insert(*endpoint, name.clone());
            }
            EndpointReleased { endpoint } => {
                g.endpoints.remove(endpoint);
            }
            GatewayDeleted { .. } => g.status = GatewayStatus::Deleted,
            GatewayWentOffline { .. } => g.offline = true,
            GatewayCameOnline { .. } => g.offline = false,
            // Turned-away scanners are history; the gateway's state does not depend on them.
            ScannerRefused { .. } | ScannerRefusalsRepeated(_) => {}
        }
    }

    fn handle(
        &self,
        command: &GatewayCommand,
        _now_ms: i64,
    ) -> Result<Option<GatewayEvent>, GatewayError> {
        if let GatewayCommand::Create { name, description } = command {
            if self.created.is_some() {
                return Err(GatewayError::AlreadyExists(self.id));
            }
            return Ok(Some(GatewayEvent::GatewayCreated {
                name: checked("gateway name", name, MAX_NAME, true)?,
                description: checked("gateway description", description, MAX_DESCRIPTION, false)?,
            }));
        }
        // A scanner turned away is a fact even about a deleted gateway (its credentials stopped
        // working with it), never about one that never was.
        match command {
            GatewayCommand::RecordScannerRefused { scanner, endpoint, reason } => {
                self.created.as_ref().ok_or(GatewayError::NotFound(self.id))?;
                return Ok(Some(GatewayEvent::ScannerRefused {
                    scanner: scanner.clone(),
                    endpoint: endpoint.clone(),
                    reason: reason.clone(),
                }));
            }
            GatewayCommand::RecordScannerRefusalsRepeated(counted) => {
                self.created.as_ref().ok_or(GatewayError::NotFound(self.id))?;
                return Ok((counted.count > 0)
                    .then(|| GatewayEvent::ScannerRefusalsRepeated(counted.clone())));
            }
            _ => {}
        }
        let g = self.existing()?;
        Ok(match command {
            GatewayCommand::Create { .. }
            | GatewayCommand::RecordScannerRefused { .. }
            | GatewayCommand::RecordScannerRefusalsRepeated(_) => unreachable!("handled above"),
            GatewayCommand::Activate { node } => (g.status == GatewayStatus::Initializing)
                .then(|| GatewayEvent::GatewayActivated { node: node.clone() }),
            GatewayCommand::RecordOffline { since_ms, why } => {
                (g.status == GatewayStatus::Online && !g.offline).then(|| {
                    GatewayEvent::GatewayWentOffline { since_ms: *since_ms, why: why.clone() }
                })
            }
            GatewayCommand::RecordOnline { node } => (g.status == GatewayStatus::Online
                && g.offline)
                .then(|| GatewayEvent::GatewayCameOnline { node: node.clone() }),
            GatewayCommand::IssueScannerCredential { credential, label, secret_hash, kind } => {
                Some(GatewayEvent::ScannerCredentialIssued {
                    credential: *credential,
                    label: checked("credential label", label, MAX_NAME, false)?,
                    secret_hash: secret_hash.clone(),
                    kind: *kind,
                })
            }
            GatewayCommand::RevokeScannerCredential { credential } => {
                match g.scanner_credentials.get(credential) {
                    None => return Err(GatewayError::UnknownCredential(*credential)),
                    Some(false) => None,
                    Some(true) => {
                        Some(GatewayEvent::ScannerCredentialRevoked { credential: *credential })
                    }
                }
            }
            GatewayCommand::AssignEndpoint { endpoint, name } => {
                let name = checked("endpoint name", name, MAX_NAME, true)?;
                if g.endpoints.get(endpoint).is_some_and(|n| *n == name) {
                    None // a retried add
                } else if g.name_taken(&name, *endpoint) {
                    return Err(GatewayError::DuplicateName { gateway: g.name.clone(), name });
                } else {
                    Some(GatewayEvent::EndpointAssigned { endpoint: *endpoint, name })
                }
            }
            GatewayCommand::RenameEndpoint { endpoint, name } => {
                let name = checked("endpoint name", name, MAX_NAME, true)?;
                if g.name_taken(&name, *endpoint) {
                    return Err(GatewayError::DuplicateName { gateway: g.name.clone(), name });
                }
                (g.endpoints.get(endpoint) != Some(&name)).then_some(
                    GatewayEvent::EndpointAssignmentRenamed { endpoint: *endpoint, name },
                )
            }
            GatewayCommand::ReleaseEndpoint { endpoint } => g
                .endpoints
                .contains_key(endpoint)
                .then_some(GatewayEvent::EndpointReleased { endpoint: *endpoint }),
            GatewayCommand::Delete { reason } => {
                if !g.endpoints.is_empty() {
                    let names: Vec<&str> = g.endpoints.values().map(String::as_str).collect();
                    return Err(GatewayError::HasEndpoints {
                        gateway: g.name.clone(),
                        names: names.join(", "),
                    });
                }
                Some(GatewayEvent::GatewayDeleted { reason: reason.clone() })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::scenario::Scenario;
    use GatewayEvent::*;

    fn created() -> GatewayEvent {
        GatewayCreated { name: "corp".into(), description: "main".into() }
    }

    fn assigned(id: u128, name: &str) -> GatewayEvent {
        EndpointAssigned { endpoint: Uuid::from_u128(id), name: name.into() }
    }

    fn create(name: &str) -> GatewayCommand {
        GatewayCommand::Create { name: name.into(), description: "main".into() }
    }

    #[test]
    fn create_records_the_trimmed_name() {
        Scenario::<Gateway>::given(&[]).when(&create(" corp ")).then(created());
    }

    #[test]
    fn non_ascii_names_are_refused() {
        let err =
            Scenario::<Gateway>::given(&[]).when(&create("M\u{fc}nchen")).result().unwrap_err();
        assert!(err.to_string().contains("only ASCII"), "{err}");
    }

    #[test]
    fn create_twice_is_refused() {
        Scenario::<Gateway>::given(&[created()])
            .when(&create("x"))
            .then_error(GatewayError::AlreadyExists(Uuid::nil()));
    }

    #[test]
    fn activation_happens_once() {
        let activate = |node: &str| GatewayCommand::Activate { node: node.into() };
        Scenario::<Gateway>::given(&[created()])
            .when(&activate("n1"))
            .then(GatewayActivated { node: "n1".into() });
        let online =
            Scenario::<Gateway>::given(&[created(), GatewayActivated { node: "n1".into() }]);
        online.when(&activate("n2")).then_nothing();
        assert_eq!(online.state().created.as_ref().unwrap().status, GatewayStatus::Online);
    }

    #[test]
    fn going_offline_and_back_is_recorded_once_each_and_only_once_online() {
        let offline = GatewayCommand::RecordOffline { since_ms: 5, why: "stopped".into() };
        let online = GatewayCommand::RecordOnline { node: "n2".into() };
        Scenario::<Gateway>::given(&[created()]).when(&offline).then_nothing();
        let serving = [created(), GatewayActivated { node: "n1".into() }];
        Scenario::<Gateway>::given(&serving).when(&online).then_nothing();
        Scenario::<Gateway>::given(&serving)
            .when(&offline)
            .then(GatewayWentOffline { since_ms: 5, why: "stopped".into() });
        let down = [
            serving[0].clone(),
            serving[1].clone(),
            GatewayWentOffline { since_ms: 5, why: "stopped".into() },
        ];
        Scenario::<Gateway>::given(&down).when(&offline).then_nothing();
        Scenario::<Gateway>::given(&down)
            .when(&online)
            .then(GatewayCameOnline { node: "n2".into() });
    }

    #[test]
    fn credentials_need_an_existing_gateway_and_revoke_once() {
        let credential = Uuid::from_u128(9);
        let issue = GatewayCommand::IssueScannerCredential {
            credential,
            label: "zap".into(),
            secret_hash: "h".into(),
            kind: CredentialKind::Scan,
        };
        let issued = ScannerCredentialIssued {
            credential,
            label: "zap".into(),
            secret_hash: "h".into(),
            kind: CredentialKind::Scan,
        };
        let revoke = GatewayCommand::RevokeScannerCredential { credential };
        Scenario::<Gateway>::given(&[])
            .when(&issue)
            .then_error(GatewayError::NotFound(Uuid::nil()));
        Scenario::<Gateway>::given(&[created()]).when(&issue).then(issued.clone());
        Scenario::<Gateway>::given(&[created()])
            .when(&revoke)
            .then_error(GatewayError::UnknownCredential(credential));
        Scenario::<Gateway>::given(&[created(), issued.clone()])
            .when(&revoke)
            .then(ScannerCredentialRevoked { credential });
        Scenario::<Gateway>::given(&[created(), issued, ScannerCredentialRevoked { credential }])
            .when(&revoke)
            .then_nothing();
    }

    #[test]
    fn endpoint_names_are_unique_per_gateway_ignoring_case() {
        let g = Scenario::<Gateway>::given(&[created(), assigned(1, "dc1")]);
        let duplicate =
            || GatewayError::DuplicateName { gateway: "corp".into(), name: "DC1".into() };
        g.when(&GatewayCommand::AssignEndpoint {
            endpoint: Uuid::from_u128(2),
            name: "DC1".into(),
        })
        .then_error(duplicate());
        g.when(&GatewayCommand::RenameEndpoint {
            endpoint: Uuid::from_u128(2),
            name: "DC1".into(),
        })
        .then_error(duplicate());
        // An endpoint may change the case of its own name.
        g.when(&GatewayCommand::RenameEndpoint {
            endpoint: Uuid::from_u128(1),
            name: "DC1".into(),
        })
        .then(EndpointAssignmentRenamed { endpoint: Uuid::from_u128(1), name: "DC1".into() });
        // Retrying the same assignment changes nothing.
        g.when(&GatewayCommand::AssignEndpoint {
            endpoint: Uuid::from_u128(1),
            name: "dc1".into(),
        })
        .then_nothing();
    }

    #[test]
    fn delete_is_refused_while_endpoints_remain() {
        let delete = GatewayCommand::Delete { reason: "deleted by alice".into() };
        Scenario::<Gateway>::given(&[created(), assigned(1, "dc1")])
            .when(&delete)
            .then_error(GatewayError::HasEndpoints { gateway: "corp".into(), names: "dc1".into() });
        let released = EndpointReleased { endpoint: Uuid::from_u128(1) };
        Scenario::<Gateway>::given(&[created(), assigned(1, "dc1"), released])
            .when(&delete)
            .then(GatewayDeleted { reason: "deleted by alice".into() });
        let deleted =
            Scenario::<Gateway>::given(&[created(), GatewayDeleted { reason: "r".into() }]);
        deleted
            .when(&GatewayCommand::AssignEndpoint { endpoint: Uuid::nil(), name: "x".into() })
            .then_error(GatewayError::Deleted(Uuid::nil()));
        assert_eq!(deleted.state().created.as_ref().unwrap().status, GatewayStatus::Deleted);
    }
}
