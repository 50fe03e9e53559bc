//! The endpoint actor: an endpoint's identity, its key and the machine the key is bound to, and
//! who may use it (scan access, support-engineer access).
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

/// Longest support-engineer access window, in days (the seed: "up to 30, or indefinitely").
pub const MAX_SUPPORT_DAYS: u32 = 30;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Support-engineer access, off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SupportAccess {
    #[default]
    Off,
    Until(i64),
    Indefinite,
}

impl SupportAccess {
    pub fn is_active(self, now_ms: i64) -> bool {
        match self {
            SupportAccess::Off => false,
            SupportAccess::Until(t) => now_ms < t,
            SupportAccess::Indefinite => true,
        }
    }
}

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
    pub scan_access: bool,
    pub support_access: SupportAccess,
    pub deleted: bool,
}

pub enum EndpointCommand {
    Add {
        gateway: Uuid,
        name: String,
        description: String,
        platform: Platform,
        key_hash: String,
    },
    /// A machine presented a key (hashed) for this endpoint, signed with its machine identity.
    Register {
        presented_key_hash: String,
        machine: String,
        hostname: String,
        platform: String,
        agent_version: String,
    },
    Edit {
        name: Option<String>,
        description: Option<String>,
    },
    /// Replace the key with generation `key_generation` (which must be the next one), whose hash
    /// is `key_hash`.
    RotateKey {
        key_generation: u32,
        key_hash: String,
    },
    SetScanAccess {
        enabled: bool,
    },
    /// `days`: 1 to 30, or `None` for indefinitely.
    GrantSupportAccess {
        days: Option<u32>,
    },
    RevokeSupportAccess,
    /// Record that the support window has run out, if it has.
    ExpireSupportAccess,
    Delete,
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
    #[error("the key was rotated meanwhile (now generation {current}); rotate again")]
    KeyGeneration { current: u32 },
    #[error("the support-engineer access window must be 1 to {MAX_SUPPORT_DAYS} days, or indefinite; {0} days is not")]
    SupportWindow(u32),
}

impl Endpoint {
    pub fn existing(&self) -> Result<&AddedEndpoint, EndpointError> {
        self.added.as_ref().filter(|e| !e.deleted).ok_or(EndpointError::NotFound(self.id))
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
        if let Event::EndpointAdded {
            gateway,
            name,
            description,
            platform,
            key_generation,
            key_hash,
        } = event
        {
            self.added = Some(AddedEndpoint {
                gateway: *gateway,
                name: name.clone(),
                description: description.clone(),
                platform: *platform,
                key_generation: *key_generation,
                key_hash: key_hash.clone(),
                machine: None,
                scan_access: true,
                support_access: SupportAccess::Off,
                deleted: false,
            });
            return;
        }
        let Some(e) = &mut self.added else { return };
        match event {
            Event::EndpointRegistered { machine, .. } => e.machine = Some(machine.clone()),
            Event::EndpointEdited { name, description } => {
                e.name = name.clone();
                e.description = description.clone();
            }
            Event::EndpointKeyRotated { key_generation, key_hash } => {
                e.key_generation = *key_generation;
                e.key_hash = key_hash.clone();
            }
            Event::ScanAccessChanged { enabled } => e.scan_access = *enabled,
            Event::SupportAccessGranted { until_ms } => {
                e.support_access = until_ms.map_or(SupportAccess::Indefinite, SupportAccess::Until)
            }
            Event::SupportAccessRevoked | Event::SupportAccessExpired => {
                e.support_access = SupportAccess::Off
            }
            Event::EndpointDeleted => e.deleted = true,
            _ => {}
        }
    }

    fn handle(
        &self,
        command: &EndpointCommand,
        now_ms: i64,
    ) -> Result<Option<Event>, EndpointError> {
        if let EndpointCommand::Add { gateway, name, description, platform, key_hash } = command {
            if self.added.is_some() {
                return Err(EndpointError::AlreadyExists(self.id));
            }
            return Ok(Some(Event::EndpointAdded {
                gateway: *gateway,
                name: checked("endpoint name", name, MAX_NAME, true)?,
                description: checked("endpoint description", description, MAX_DESCRIPTION, false)?,
                platform: *platform,
                key_generation: 1,
                key_hash: key_hash.clone(),
            }));
        }
        if matches!(command, EndpointCommand::Delete)
            && self.added.as_ref().is_some_and(|e| e.deleted)
        {
            return Ok(None);
        }
        let e = self.existing()?;
        Ok(match command {
            EndpointCommand::Add { .. } => unreachable!("handled above"),
            EndpointCommand::Register {
                presented_key_hash,
                machine,
                hostname,
                platform,
                agent_version,
            } => {
                if !constant_time_eq(presented_key_hash.as_bytes(), e.key_hash.as_bytes()) {
                    return Err(EndpointError::InvalidKey);
                }
                match &e.machine {
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
                }
            }
            EndpointCommand::Edit { name, description } => {
                let name = match name {
                    Some(n) => checked("endpoint name", n, MAX_NAME, true)?,
                    None => e.name.clone(),
                };
                let description = match description {
                    Some(d) => checked("endpoint description", d, MAX_DESCRIPTION, false)?,
                    None => e.description.clone(),
                };
                (name != e.name || description != e.description)
                    .then_some(Event::EndpointEdited { name, description })
            }
            EndpointCommand::RotateKey { key_generation, key_hash } => {
                if *key_generation != e.key_generation + 1 {
                    return Err(EndpointError::KeyGeneration { current: e.key_generation });
                }
                Some(Event::EndpointKeyRotated {
                    key_generation: *key_generation,
                    key_hash: key_hash.clone(),
                })
            }
            EndpointCommand::SetScanAccess { enabled } => (e.scan_access != *enabled)
                .then_some(Event::ScanAccessChanged { enabled: *enabled }),
            EndpointCommand::GrantSupportAccess { days } => {
                let until_ms = match days {
                    None => None,
                    Some(d) if (1..=MAX_SUPPORT_DAYS).contains(d) => {
                        Some(now_ms + i64::from(*d) * DAY_MS)
                    }
                    Some(d) => return Err(EndpointError::SupportWindow(*d)),
                };
                Some(Event::SupportAccessGranted { until_ms })
            }
            EndpointCommand::RevokeSupportAccess => {
                (e.support_access != SupportAccess::Off).then_some(Event::SupportAccessRevoked)
            }
            EndpointCommand::ExpireSupportAccess => {
                matches!(e.support_access, SupportAccess::Until(t) if t <= now_ms)
                    .then_some(Event::SupportAccessExpired)
            }
            EndpointCommand::Delete => Some(Event::EndpointDeleted),
        })
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

    fn bound(machine: &str) -> Event {
        Event::EndpointRegistered {
            machine: machine.into(),
            hostname: "h".into(),
            platform: "linux".into(),
            agent_version: "0.1.0".into(),
        }
    }

    fn register(machine: &str) -> EndpointCommand {
        EndpointCommand::Register {
            presented_key_hash: "h".into(),
            machine: machine.into(),
            hostname: "host".into(),
            platform: "linux".into(),
            agent_version: "0.1.0".into(),
        }
    }

    #[test]
    fn first_machine_binds_the_key() {
        let e: Endpoint = given(&[added()]);
        assert!(
            matches!(e.handle(&register("m1"), 0).unwrap(), Some(Event::EndpointRegistered { machine, .. }) if machine == "m1")
        );
    }

    #[test]
    fn a_wrong_key_is_refused_without_binding() {
        let e: Endpoint = given(&[added()]);
        let cmd = EndpointCommand::Register {
            presented_key_hash: "other".into(),
            machine: "m1".into(),
            hostname: "h".into(),
            platform: "linux".into(),
            agent_version: "0".into(),
        };
        assert_eq!(e.handle(&cmd, 0), Err(EndpointError::InvalidKey));
    }

    #[test]
    fn same_machine_again_changes_nothing() {
        let e: Endpoint = given(&[added(), bound("m1")]);
        assert_eq!(e.handle(&register("m1"), 0).unwrap(), None);
    }

    #[test]
    fn another_machine_is_refused_as_token_already_registered() {
        let e: Endpoint = given(&[added(), bound("m1")]);
        assert!(matches!(
            e.handle(&register("m2"), 0).unwrap(),
            Some(Event::EndpointRegistrationRefused { reason, .. }) if reason == TOKEN_ALREADY_REGISTERED
        ));
        // The refusal does not rebind the key.
        let mut e = e;
        e.apply(&Event::EndpointRegistrationRefused {
            machine: "m2".into(),
            hostname: "h".into(),
            reason: TOKEN_ALREADY_REGISTERED.into(),
        });
        assert_eq!(e.added.unwrap().machine.as_deref(), Some("m1"));
    }

    #[test]
    fn add_validates_text_and_refuses_duplicates() {
        let cmd = |name: &str| EndpointCommand::Add {
            gateway: Uuid::nil(),
            name: name.into(),
            description: String::new(),
            platform: Platform::Other,
            key_hash: "h".into(),
        };
        assert!(matches!(
            given::<Endpoint>(&[]).handle(&cmd("\u{65e5}\u{672c}"), 0),
            Err(EndpointError::Invalid(TextError::NotAscii { .. }))
        ));
        assert!(matches!(
            given::<Endpoint>(&[added()]).handle(&cmd("x"), 0),
            Err(EndpointError::AlreadyExists(_))
        ));
    }

    #[test]
    fn a_rotated_key_replaces_the_old_one() {
        let e: Endpoint = given(&[added(), bound("m1")]);
        assert_eq!(
            e.handle(&EndpointCommand::RotateKey { key_generation: 3, key_hash: "h3".into() }, 0),
            Err(EndpointError::KeyGeneration { current: 1 })
        );
        let rotated = e
            .handle(&EndpointCommand::RotateKey { key_generation: 2, key_hash: "h2".into() }, 0)
            .unwrap()
            .unwrap();
        assert_eq!(rotated, Event::EndpointKeyRotated { key_generation: 2, key_hash: "h2".into() });
        let e: Endpoint = given(&[added(), bound("m1"), rotated]);
        assert_eq!(
            e.handle(&register("m1"), 0),
            Err(EndpointError::InvalidKey),
            "the old key stops working"
        );
        let new_key = EndpointCommand::Register {
            presented_key_hash: "h2".into(),
            machine: "m1".into(),
            hostname: "h".into(),
            platform: "linux".into(),
            agent_version: "0".into(),
        };
        assert_eq!(e.handle(&new_key, 0).unwrap(), None, "the new key works on the bound machine");
    }

    #[test]
    fn edits_record_only_changes() {
        let e: Endpoint = given(&[added()]);
        let same = EndpointCommand::Edit { name: Some("dc1".into()), description: None };
        assert_eq!(e.handle(&same, 0).unwrap(), None);
        let edit = EndpointCommand::Edit { name: None, description: Some("first floor".into()) };
        assert_eq!(
            e.handle(&edit, 0).unwrap(),
            Some(Event::EndpointEdited { name: "dc1".into(), description: "first floor".into() })
        );
        let bad = EndpointCommand::Edit { name: Some(String::new()), description: None };
        assert!(matches!(e.handle(&bad, 0), Err(EndpointError::Invalid(TextError::Empty { .. }))));
    }

    #[test]
    fn scan_access_defaults_on_and_toggles() {
        let e: Endpoint = given(&[added()]);
        assert!(e.added.as_ref().unwrap().scan_access);
        assert_eq!(e.handle(&EndpointCommand::SetScanAccess { enabled: true }, 0).unwrap(), None);
        assert_eq!(
            e.handle(&EndpointCommand::SetScanAccess { enabled: false }, 0).unwrap(),
            Some(Event::ScanAccessChanged { enabled: false })
        );
    }

    #[test]
    fn support_access_windows_are_one_to_thirty_days_or_indefinite_and_expire() {
        let now = 1_000_000;
        let e: Endpoint = given(&[added()]);
        assert_eq!(e.added.as_ref().unwrap().support_access, SupportAccess::Off);
        for bad in [0, 31] {
            assert_eq!(
                e.handle(&EndpointCommand::GrantSupportAccess { days: Some(bad) }, now),
                Err(EndpointError::SupportWindow(bad))
            );
        }
        let granted =
            e.handle(&EndpointCommand::GrantSupportAccess { days: Some(2) }, now).unwrap().unwrap();
        assert_eq!(granted, Event::SupportAccessGranted { until_ms: Some(now + 2 * DAY_MS) });
        let e: Endpoint = given(&[added(), granted]);
        let access = e.added.as_ref().unwrap().support_access;
        assert!(access.is_active(now + DAY_MS) && !access.is_active(now + 2 * DAY_MS));
        assert_eq!(
            e.handle(&EndpointCommand::ExpireSupportAccess, now + DAY_MS).unwrap(),
            None,
            "not yet"
        );
        assert_eq!(
            e.handle(&EndpointCommand::ExpireSupportAccess, now + 2 * DAY_MS).unwrap(),
            Some(Event::SupportAccessExpired)
        );
        let forever = given::<Endpoint>(&[added()])
            .handle(&EndpointCommand::GrantSupportAccess { days: None }, now)
            .unwrap();
        assert_eq!(forever, Some(Event::SupportAccessGranted { until_ms: None }));
    }

    #[test]
    fn a_deleted_endpoint_refuses_its_key_and_deletes_once() {
        let e: Endpoint = given(&[added(), bound("m1"), Event::EndpointDeleted]);
        assert_eq!(e.handle(&register("m1"), 0), Err(EndpointError::NotFound(Uuid::nil())));
        assert_eq!(e.handle(&EndpointCommand::Delete, 0).unwrap(), None);
        assert!(matches!(
            e.handle(&EndpointCommand::SetScanAccess { enabled: false }, 0),
            Err(EndpointError::NotFound(_))
        ));
    }
}
