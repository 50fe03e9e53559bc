//! The endpoint actor: an endpoint's identity, its key, and the machine the key is bound to.
//!
//! The key binds to the first machine that presents it; a different machine presenting the same
//! key is refused with the seed's "Token already registered", and the refusal is itself recorded,
//! so the audit trail shows the attempt.

use crate::aggregate::Aggregate;
use crate::credentials::constant_time_eq;
use crate::text::{checked, TextError, MAX_DESCRIPTION, MAX_NAME};
use ism_events::{AggregateKind, Event, Platform};
use uuid::Uuid;

/// The seed's wording, which endpoints print and scripts may match.
pub const TOKEN_ALREADY_REGISTERED: &str = "Token already registered";

#[derive(Debug, Default)]
pub struct Endpoint {
    pub id: Uuid,
    pub added: Option<AddedEndpoint>,
}

#[derive(Debug)]
pub struct AddedEndpoint {
    pub gateway: Uuid,
    pub name: String,
    pub description: String,
    pub platform: Platform,
    pub key_generation: u32,
    pub key_hash: String,
    /// The machine identity the key is bound to, once used.
    pub machine: Option<String>,
}

pub enum EndpointCommand {
    Add { gateway: Uuid, name: String, description: String, platform: Platform, key_hash: String },
    /// A machine presented a key (hashed) for this endpoint, signed with its machine identity.
    Register { presented_key_hash: String, machine: String, hostname: String, platform: String, agent_version: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {0} already exists")]
    AlreadyExists(Uuid),
    #[error("endpoint {0} does not exist")]
    NotFound(Uuid),
    #[error(transparent)]
    Invalid(#[from] TextError),
    /// The key is not this endpoint's current key (wrong, rotated, or forged).
    #[error("invalid endpoint key")]
    InvalidKey,
}

impl Endpoint {
    pub fn existing(&self) -> Result<&AddedEndpoint, EndpointError> {
        self.added.as_ref().ok_or(EndpointError::NotFound(self.id))
    }
}

impl Aggregate for Endpoint {
    type Command = EndpointCommand;
    type Error = EndpointError;
    const KIND: AggregateKind = AggregateKind::Endpoint;

    fn new(id: Uuid) -> Self {
        Self { id, added: None }
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::EndpointAdded { gateway, name, description, platform, key_generation, key_hash } => {
                self.added = Some(AddedEndpoint {
                    gateway: *gateway,
                    name: name.clone(),
                    description: description.clone(),
                    platform: *platform,
                    key_generation: *key_generation,
                    key_hash: key_hash.clone(),
                    machine: None,
                })
            }
            Event::EndpointRegistered { machine, .. } => {
                if let Some(e) = &mut self.added {
                    e.machine = Some(machine.clone());
                }
            }
            _ => {}
        }
    }

    fn handle(&self, command: &EndpointCommand, _now_ms: i64) -> Result<Option<Event>, EndpointError> {
        match command {
            EndpointCommand::Add { gateway, name, description, platform, key_hash } => {
                if self.added.is_some() {
                    return Err(EndpointError::AlreadyExists(self.id));
                }
                Ok(Some(Event::EndpointAdded {
                    gateway: *gateway,
                    name: checked("endpoint name", name, MAX_NAME, true)?,
                    description: checked("endpoint description", description, MAX_DESCRIPTION, false)?,
                    platform: *platform,
                    key_generation: 1,
                    key_hash: key_hash.clone(),
                }))
            }
            EndpointCommand::Register { presented_key_hash, machine, hostname, platform, agent_version } => {
                let e = self.existing()?;
                if !constant_time_eq(presented_key_hash.as_bytes(), e.key_hash.as_bytes()) {
                    return Err(EndpointError::InvalidKey);
                }
                Ok(match &e.machine {
                    None => Some(Event::EndpointRegistered {
                        machine: machine.clone(),
                        hostname: hostname.clone(),
                        platform: platform.clone(),
                        agent_version: agent_version.clone(),
                    }),
                    Some(bound) if bound == machine => None,
                    Some(_) => Some(Event::EndpointRegistrationRefused {
                        machine: machine.clone(),
                        hostname: hostname.clone(),
                        reason: TOKEN_ALREADY_REGISTERED.into(),
                    }),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given::given;

    fn added() -> Event {
        Event::EndpointAdded {
            gateway: Uuid::nil(),
            name: "dc1".into(),
            description: String::new(),
            platform: Platform::Linux,
            key_generation: 1,
            key_hash: "h".into(),
        }
    }

    fn register(machine: &str) -> EndpointCommand {
        EndpointCommand::Register { presented_key_hash: "h".into(), machine: machine.into(), hostname: "host".into(), platform: "linux".into(), agent_version: "0.1.0".into() }
    }

    #[test]
    fn first_machine_binds_the_key() {
        let e: Endpoint = given(&[added()]);
        assert!(matches!(e.handle(&register("m1"), 0).unwrap(), Some(Event::EndpointRegistered { machine, .. }) if machine == "m1"));
    }

    #[test]
    fn a_wrong_key_is_refused_without_binding() {
        let e: Endpoint = given(&[added()]);
        let cmd = EndpointCommand::Register { presented_key_hash: "other".into(), machine: "m1".into(), hostname: "h".into(), platform: "linux".into(), agent_version: "0".into() };
        assert_eq!(e.handle(&cmd, 0), Err(EndpointError::InvalidKey));
    }

    #[test]
    fn same_machine_again_changes_nothing() {
        let bound = Event::EndpointRegistered { machine: "m1".into(), hostname: "h".into(), platform: "linux".into(), agent_version: "0.1.0".into() };
        let e: Endpoint = given(&[added(), bound]);
        assert_eq!(e.handle(&register("m1"), 0).unwrap(), None);
    }

    #[test]
    fn another_machine_is_refused_as_token_already_registered() {
        let bound = Event::EndpointRegistered { machine: "m1".into(), hostname: "h".into(), platform: "linux".into(), agent_version: "0.1.0".into() };
        let e: Endpoint = given(&[added(), bound]);
        assert!(matches!(
            e.handle(&register("m2"), 0).unwrap(),
            Some(Event::EndpointRegistrationRefused { reason, .. }) if reason == TOKEN_ALREADY_REGISTERED
        ));
        // The refusal does not rebind the key.
        let mut e = e;
        e.apply(&Event::EndpointRegistrationRefused { machine: "m2".into(), hostname: "h".into(), reason: TOKEN_ALREADY_REGISTERED.into() });
        assert_eq!(e.added.unwrap().machine.as_deref(), Some("m1"));
    }

    #[test]
    fn add_validates_text_and_refuses_duplicates() {
        let cmd = |name: &str| EndpointCommand::Add { gateway: Uuid::nil(), name: name.into(), description: String::new(), platform: Platform::Other, key_hash: "h".into() };
        assert!(matches!(given::<Endpoint>(&[]).handle(&cmd("\u{65e5}\u{672c}"), 0), Err(EndpointError::Invalid(TextError::NotAscii { .. }))));
        assert!(matches!(given::<Endpoint>(&[added()]).handle(&cmd("x"), 0), Err(EndpointError::AlreadyExists(_))));
    }
}
