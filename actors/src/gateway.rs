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
use ism_events::{AggregateKind, CredentialKind, Event};
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
    const KIND: AggregateKind = AggregateKind::Gateway;

    fn new(id: Uuid) -> Self {
        Self { id, created: None }
    }

    fn apply(&mut self, event: &Event) {
        if let Event::GatewayCreated { name, description } = event {
            self.created = Some(CreatedGateway {
                name: name.clone(),
                description: description.clone(),
                status: GatewayStatus::Initializing,
                scanner_credentials: BTreeMap::new(),
                endpoints: BTreeMap::new(),
            });
            return;
        }
        let Some(g) = &mut self.created else { return };
        match event {
            Event::GatewayActivated { .. } => g.status = GatewayStatus::Online,
            Event::ScannerCredentialIssued { credential, .. } => {
                g.scanner_credentials.insert(*credential, true);
            }
            Event::ScannerCredentialRevoked { credential } => {
                g.scanner_credentials.insert(*credential, false);
            }
            Event::EndpointAssigned { endpoint, name }
            | Event::EndpointAssignmentRenamed { endpoint, name } => {
                g.endpoints.insert(*endpoint, name.clone());
            }
            Event::EndpointReleased { endpoint } => {
                g.endpoints.remove(endpoint);
            }
            Event::GatewayDeleted { .. } => g.status = GatewayStatus::Deleted,
            _ => {}
        }
    }

    fn handle(
        &self,
        command: &GatewayCommand,
        _now_ms: i64,
    ) -> Result<Option<Event>, GatewayError> {
        if let GatewayCommand::Create { name, description } = command {
            if self.created.is_some() {
                return Err(GatewayError::AlreadyExists(self.id));
            }
            return Ok(Some(Event::GatewayCreated {
                name: checked("gateway name", name, MAX_NAME, true)?,
                description: checked("gateway description", description, MAX_DESCRIPTION, false)?,
            }));
        }
        let g = self.existing()?;
        Ok(match command {
            GatewayCommand::Create { .. } => unreachable!("handled above"),
            GatewayCommand::Activate { node } => (g.status == GatewayStatus::Initializing)
                .then(|| Event::GatewayActivated { node: node.clone() }),
            GatewayCommand::IssueScannerCredential { credential, label, secret_hash, kind } => {
                Some(Event::ScannerCredentialIssued {
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
                    Some(true) => Some(Event::ScannerCredentialRevoked { credential: *credential }),
                }
            }
            GatewayCommand::AssignEndpoint { endpoint, name } => {
                let name = checked("endpoint name", name, MAX_NAME, true)?;
                if g.endpoints.get(endpoint).is_some_and(|n| *n == name) {
                    None // a retried add
                } else if g.name_taken(&name, *endpoint) {
                    return Err(GatewayError::DuplicateName { gateway: g.name.clone(), name });
                } else {
                    Some(Event::EndpointAssigned { endpoint: *endpoint, name })
                }
            }
            GatewayCommand::RenameEndpoint { endpoint, name } => {
                let name = checked("endpoint name", name, MAX_NAME, true)?;
                if g.name_taken(&name, *endpoint) {
                    return Err(GatewayError::DuplicateName { gateway: g.name.clone(), name });
                }
                (g.endpoints.get(endpoint) != Some(&name))
                    .then_some(Event::EndpointAssignmentRenamed { endpoint: *endpoint, name })
            }
            GatewayCommand::ReleaseEndpoint { endpoint } => g
                .endpoints
                .contains_key(endpoint)
                .then_some(Event::EndpointReleased { endpoint: *endpoint }),
            GatewayCommand::Delete { reason } => {
                if !g.endpoints.is_empty() {
                    let names: Vec<&str> = g.endpoints.values().map(String::as_str).collect();
                    return Err(GatewayError::HasEndpoints {
                        gateway: g.name.clone(),
                        names: names.join(", "),
                    });
                }
                Some(Event::GatewayDeleted { reason: reason.clone() })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given::given;

    fn created() -> Event {
        Event::GatewayCreated { name: "corp".into(), description: "main".into() }
    }

    fn assigned(id: u128, name: &str) -> Event {
        Event::EndpointAssigned { endpoint: Uuid::from_u128(id), name: name.into() }
    }

    #[test]
    fn create_records_the_trimmed_name() {
        let g: Gateway = given(&[]);
        let e = g
            .handle(
                &GatewayCommand::Create { name: " corp ".into(), description: "main".into() },
                0,
            )
            .unwrap();
        assert_eq!(e, Some(created()));
    }

    #[test]
    fn non_ascii_names_are_refused() {
        let g: Gateway = given(&[]);
        let err = g
            .handle(
                &GatewayCommand::Create { name: "M\u{fc}nchen".into(), description: String::new() },
                0,
            )
            .unwrap_err();
        assert!(err.to_string().contains("only ASCII"), "{err}");
    }

    #[test]
    fn create_twice_is_refused() {
        let g: Gateway = given(&[created()]);
        assert!(matches!(
            g.handle(&GatewayCommand::Create { name: "x".into(), description: String::new() }, 0),
            Err(GatewayError::AlreadyExists(_))
        ));
    }

    #[test]
    fn activation_happens_once() {
        let g: Gateway = given(&[created()]);
        let first = g.handle(&GatewayCommand::Activate { node: "n1".into() }, 0).unwrap();
        assert_eq!(first, Some(Event::GatewayActivated { node: "n1".into() }));
        let g: Gateway = given(&[created(), first.unwrap()]);
        assert_eq!(g.handle(&GatewayCommand::Activate { node: "n2".into() }, 0).unwrap(), None);
        assert_eq!(g.created.unwrap().status, GatewayStatus::Online);
    }

    #[test]
    fn credentials_need_an_existing_gateway_and_revoke_once() {
        let id = Uuid::from_u128(9);
        let cmd = GatewayCommand::IssueScannerCredential {
            credential: id,
            label: "zap".into(),
            secret_hash: "h".into(),
            kind: CredentialKind::Scan,
        };
        assert!(matches!(given::<Gateway>(&[]).handle(&cmd, 0), Err(GatewayError::NotFound(_))));
        let issued = given::<Gateway>(&[created()]).handle(&cmd, 0).unwrap().unwrap();
        let revoke = GatewayCommand::RevokeScannerCredential { credential: id };
        let revoked = given::<Gateway>(&[created(), issued.clone()]).handle(&revoke, 0).unwrap();
        assert_eq!(revoked, Some(Event::ScannerCredentialRevoked { credential: id }));
        assert_eq!(
            given::<Gateway>(&[created(), issued, revoked.unwrap()]).handle(&revoke, 0).unwrap(),
            None
        );
    }

    #[test]
    fn endpoint_names_are_unique_per_gateway_ignoring_case() {
        let g: Gateway = given(&[created(), assigned(1, "dc1")]);
        let dup =
            GatewayCommand::AssignEndpoint { endpoint: Uuid::from_u128(2), name: "DC1".into() };
        assert!(matches!(g.handle(&dup, 0), Err(GatewayError::DuplicateName { .. })));
        let rename =
            GatewayCommand::RenameEndpoint { endpoint: Uuid::from_u128(2), name: "dc1".into() };
        assert!(matches!(g.handle(&rename, 0), Err(GatewayError::DuplicateName { .. })));
        // An endpoint may change the case of its own name.
        let own =
            GatewayCommand::RenameEndpoint { endpoint: Uuid::from_u128(1), name: "DC1".into() };
        assert!(matches!(g.handle(&own, 0), Ok(Some(Event::EndpointAssignmentRenamed { .. }))));
        // Retrying the same assignment changes nothing.
        let retry =
            GatewayCommand::AssignEndpoint { endpoint: Uuid::from_u128(1), name: "dc1".into() };
        assert_eq!(g.handle(&retry, 0).unwrap(), None);
    }

    #[test]
    fn delete_is_refused_while_endpoints_remain() {
        let delete = GatewayCommand::Delete { reason: "deleted by alice".into() };
        let g: Gateway = given(&[created(), assigned(1, "dc1")]);
        let err = g.handle(&delete, 0).unwrap_err();
        assert!(
            err.to_string().contains("dc1") && err.to_string().contains("delete them first"),
            "{err}"
        );
        let released = Event::EndpointReleased { endpoint: Uuid::from_u128(1) };
        let g: Gateway = given(&[created(), assigned(1, "dc1"), released]);
        let deleted = g.handle(&delete, 0).unwrap().unwrap();
        let g: Gateway = given(&[created(), deleted]);
        assert!(matches!(
            g.handle(
                &GatewayCommand::AssignEndpoint { endpoint: Uuid::nil(), name: "x".into() },
                0
            ),
            Err(GatewayError::Deleted(_))
        ));
        assert_eq!(g.created.unwrap().status, GatewayStatus::Deleted);
    }
}
