//! The gateway actor: a gateway's identity, its lifecycle and its scanner credentials.

use crate::aggregate::Aggregate;
use crate::text::{checked, TextError, MAX_DESCRIPTION, MAX_NAME};
use ism_events::{AggregateKind, Event};
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayStatus {
    /// Created; no node has started serving it yet.
    Initializing,
    /// A node serves it.
    Online,
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
    /// Scanner credential id -> hash of its secret.
    pub scanner_credentials: BTreeMap<Uuid, String>,
}

pub enum GatewayCommand {
    Create { name: String, description: String },
    /// A node starts serving the gateway.
    Activate { node: String },
    IssueScannerCredential { credential: Uuid, label: String, secret_hash: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway {0} already exists")]
    AlreadyExists(Uuid),
    #[error("gateway {0} does not exist")]
    NotFound(Uuid),
    #[error(transparent)]
    Invalid(#[from] TextError),
}

impl Gateway {
    fn existing(&self) -> Result<&CreatedGateway, GatewayError> {
        self.created.as_ref().ok_or(GatewayError::NotFound(self.id))
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
        match event {
            Event::GatewayCreated { name, description } => {
                self.created = Some(CreatedGateway {
                    name: name.clone(),
                    description: description.clone(),
                    status: GatewayStatus::Initializing,
                    scanner_credentials: BTreeMap::new(),
                })
            }
            Event::GatewayActivated { .. } => {
                if let Some(g) = &mut self.created {
                    g.status = GatewayStatus::Online;
                }
            }
            Event::ScannerCredentialIssued { credential, secret_hash, .. } => {
                if let Some(g) = &mut self.created {
                    g.scanner_credentials.insert(*credential, secret_hash.clone());
                }
            }
            _ => {}
        }
    }

    fn handle(&self, command: &GatewayCommand, _now_ms: i64) -> Result<Option<Event>, GatewayError> {
        match command {
            GatewayCommand::Create { name, description } => {
                if self.created.is_some() {
                    return Err(GatewayError::AlreadyExists(self.id));
                }
                Ok(Some(Event::GatewayCreated {
                    name: checked("gateway name", name, MAX_NAME, true)?,
                    description: checked("gateway description", description, MAX_DESCRIPTION, false)?,
                }))
            }
            GatewayCommand::Activate { node } => {
                let g = self.existing()?;
                Ok((g.status == GatewayStatus::Initializing).then(|| Event::GatewayActivated { node: node.clone() }))
            }
            GatewayCommand::IssueScannerCredential { credential, label, secret_hash } => {
                self.existing()?;
                Ok(Some(Event::ScannerCredentialIssued {
                    credential: *credential,
                    label: checked("credential label", label, MAX_NAME, false)?,
                    secret_hash: secret_hash.clone(),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given::given;

    fn created() -> Event {
        Event::GatewayCreated { name: "corp".into(), description: "main".into() }
    }

    #[test]
    fn create_records_the_trimmed_name() {
        let g: Gateway = given(&[]);
        let e = g.handle(&GatewayCommand::Create { name: " corp ".into(), description: "main".into() }, 0).unwrap();
        assert_eq!(e, Some(created()));
    }

    #[test]
    fn non_ascii_names_are_refused() {
        let g: Gateway = given(&[]);
        let err = g.handle(&GatewayCommand::Create { name: "M\u{fc}nchen".into(), description: String::new() }, 0).unwrap_err();
        assert!(err.to_string().contains("only ASCII"), "{err}");
    }

    #[test]
    fn create_twice_is_refused() {
        let g: Gateway = given(&[created()]);
        assert!(matches!(g.handle(&GatewayCommand::Create { name: "x".into(), description: String::new() }, 0), Err(GatewayError::AlreadyExists(_))));
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
    fn credentials_need_an_existing_gateway() {
        let cmd = GatewayCommand::IssueScannerCredential { credential: Uuid::nil(), label: "zap".into(), secret_hash: "h".into() };
        assert!(matches!(given::<Gateway>(&[]).handle(&cmd, 0), Err(GatewayError::NotFound(_))));
        assert!(matches!(given::<Gateway>(&[created()]).handle(&cmd, 0), Ok(Some(Event::ScannerCredentialIssued { .. }))));
    }
}
