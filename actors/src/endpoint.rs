//! The endpoint actor: an endpoint's identity, its key and the machine the key is bound to, and
//! who may use it (scan access, support-engineer access).
//!
//! The key binds to the first machine that presents it; a different machine presenting the same
//! key is refused with the seed's "Token already registered". The gateway records the refusal
//! (the first of a machine in full, the repeats counted; see `ism_gateway::refusals`), so the
//! audit trail shows the attempts without a machine retrying in a loop filling it. A manager can
//! release the binding (`Unbind`): the next machine that presents the key binds it.

use crate::aggregate::Aggregate;
use crate::credentials::constant_time_eq;
use crate::text::{checked, TextError, MAX_DESCRIPTION, MAX_NAME};
use ism_events::{
    AggregateKind, EndpointEvent, Platform, RepeatedRegistrationRefusals, SupportAccess,
};
use uuid::Uuid;

/// The seed's wording, which endpoints print and scripts may match.
pub const TOKEN_ALREADY_REGISTERED: &str = "Token already registered";

/// Longest support-engineer access window, in days (the seed: "up to 30, or indefinitely").
pub const MAX_SUPPORT_DAYS: u32 = 30;

/// `days`, if a support window may last that long (1 to [`MAX_SUPPORT_DAYS`]): the rule the
/// actor applies, for callers that check a request whole before running its commands.
pub fn checked_support_days(days: u32) -> Result<u32, EndpointError> {
    if (1..=MAX_SUPPORT_DAYS).contains(&days) {
        Ok(days)
    } else {
        Err(EndpointError::SupportWindow(days))
    }
}

/// Most scans one endpoint may be set to run at once.
pub const MAX_SCAN_CAPACITY: u32 = 1000;

/// `capacity`, if an endpoint may run that many scans at once (1 to [`MAX_SCAN_CAPACITY`]).
pub fn checked_scan_capacity(capacity: u32) -> Result<u32, EndpointError> {
    if (1..=MAX_SCAN_CAPACITY).contains(&capacity) {
        Ok(capacity)
    } else {
        Err(EndpointError::ScanCapacity(capacity))
    }
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

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
    pub scan_capacity: Option<u32>,
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
    /// Record that `Register` refused `machine` because the key is bound to another one.
    RecordRegistrationRefused {
        machine: String,
        hostname: String,
    },
    /// Record the refusals counted after one recorded in full.
    RecordRegistrationRefusalsRepeated(RepeatedRegistrationRefusals),
    /// Release the key's binding to its machine.
    Unbind,
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
    /// Scans run at once: 1 to [`MAX_SCAN_CAPACITY`], or `None` for the gateway's default.
    SetScanCapacity {
        capacity: Option<u32>,
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
    #[error("the scan capacity must be 1 to {MAX_SCAN_CAPACITY} scans at once, not {0}")]
    ScanCapacity(u32),
    /// The key is not this endpoint's current key (wrong, rotated, or forged).
    #[error("invalid endpoint key")]
    InvalidKey,
    /// The key is bound to another machine (the seed's words).
    #[error("{TOKEN_ALREADY_REGISTERED}")]
    TokenAlreadyRegistered,
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
    type Event = EndpointEvent;
    const KIND: AggregateKind = AggregateKind::Endpoint;

    fn new(id: Uuid) -> Self {
        Self { id, added: None }
    }

    fn apply(&mut self, event: &EndpointEvent) {
        use EndpointEvent::*;
        if let EndpointAdded { gateway, name, description, platform, key_generation, key_hash } =
            event
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
                scan_capacity: None,
                support_access: SupportAccess::Off,
                deleted: false,
            });
            return;
        }
        // Every other event follows the addition.
        let Some(e) = &mut self.added else { return };
        match event {
            EndpointAdded { .. } => {}
            EndpointRegistered { machine, .. } => e.machine = Some(machine.clone()),
            // A refusal leaves the binding as it was: that is the point.
            EndpointRegistrationRefused { .. } | EndpointRegistrationRefusalsRepeated(_) => {}
            EndpointUnbound { .. } => e.machine = None,
            EndpointEdited { name, description } => {
                e.name = name.clone();
                e.description = description.clone();
            }
            EndpointKeyRotated { key_generation, key_hash } => {
                e.key_generation = *key_generation;
                e.key_hash = key_hash.clone();
            }
            ScanAccessChanged { enabled } => e.scan_access = *enabled,
            ScanCapacitySet { capacity } => e.scan_capacity = *capacity,
            SupportAccessGranted { until_ms } => {
                e.support_access = SupportAccess::granted(*until_ms)
            }
            SupportAccessRevoked | SupportAccessExpired => e.support_access = SupportAccess::Off,
            EndpointDeleted => e.deleted = true,
        }
    }

    fn handle(
        &self,
        command: &EndpointCommand,
        now_ms: i64,
    ) -> Result<Option<EndpointEvent>, EndpointError> {
        if let EndpointCommand::Add { gateway, name, description, platform, key_hash } = command {
            if self.added.is_some() {
                return Err(EndpointError::AlreadyExists(self.id));
            }
            return Ok(Some(EndpointEvent::EndpointAdded {
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
                    None => Some(EndpointEvent::EndpointRegistered {
                        machine: machine.clone(),
                        hostname: hostname.clone(),
                        platform: platform.clone(),
                        agent_version: agent_version.clone(),
                    }),
                    Some(bound) if bound == machine => None,
                    Some(_) => return Err(EndpointError::TokenAlreadyRegistered),
                }
            }
            EndpointCommand::RecordRegistrationRefused { machine, hostname } => {
                (e.machine.as_ref() != Some(machine)).then(|| {
                    EndpointEvent::EndpointRegistrationRefused {
                        machine: machine.clone(),
                        hostname: hostname.clone(),
                        reason: TOKEN_ALREADY_REGISTERED.into(),
                    }
                })
            }
            EndpointCommand::RecordRegistrationRefusalsRepeated(counted) => (counted.count > 0)
                .then(|| EndpointEvent::EndpointRegistrationRefusalsRepeated(counted.clone())),
            EndpointCommand::Unbind => {
                e.machine.clone().map(|machine| EndpointEvent::EndpointUnbound { machine })
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
                    .then_some(EndpointEvent::EndpointEdited { name, description })
            }
            EndpointCommand::RotateKey { key_generation, key_hash } => {
                if *key_generation != e.key_generation + 1 {
                    return Err(EndpointError::KeyGeneration { current: e.key_generation });
                }
                Some(EndpointEvent::EndpointKeyRotated {
                    key_generation: *key_generation,
                    key_hash: key_hash.clone(),
                })
            }
            EndpointCommand::SetScanAccess { enabled } => (e.scan_access != *enabled)
                .then_some(EndpointEvent::ScanAccessChanged { enabled: *enabled }),
            EndpointCommand::SetScanCapacity { capacity } => {
                if let Some(c) = capacity {
                    checked_scan_capacity(*c)?;
                }
                (e.scan_capacity != *capacity)
                    .then_some(EndpointEvent::ScanCapacitySet { capacity: *capacity })
            }
            EndpointCommand::GrantSupportAccess { days } => {
                let until_ms = match days {
                    None => None,
                    Some(d) => Some(now_ms + i64::from(checked_support_days(*d)?) * DAY_MS),
                };
                Some(EndpointEvent::SupportAccessGranted { until_ms })
            }
            EndpointCommand::RevokeSupportAccess => (e.support_access != SupportAccess::Off)
                .then_some(EndpointEvent::SupportAccessRevoked),
            EndpointCommand::ExpireSupportAccess => {
                e.support_access.expired(now_ms).then_some(EndpointEvent::SupportAccessExpired)
            }
            EndpointCommand::Delete => Some(EndpointEvent::EndpointDeleted),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::scenario::Scenario;
    use EndpointEvent::*;

    fn added() -> EndpointEvent {
        EndpointAdded {
            gateway: Uuid::nil(),
            name: "dc1".into(),
            description: String::new(),
            platform: Platform::Linux,
            key_generation: 1,
            key_hash: "h".into(),
        }
    }

    fn bound(machine: &str) -> EndpointEvent {
        EndpointRegistered {
            machine: machine.into(),
            hostname: "host".into(),
            platform: "linux".into(),
            agent_version: "0.1.0".into(),
        }
    }

    fn register_with(key_hash: &str, machine: &str) -> EndpointCommand {
        EndpointCommand::Register {
            presented_key_hash: key_hash.into(),
            machine: machine.into(),
            hostname: "host".into(),
            platform: "linux".into(),
            agent_version: "0.1.0".into(),
        }
    }

    fn register(machine: &str) -> EndpointCommand {
        register_with("h", machine)
    }

    #[test]
    fn first_machine_binds_the_key() {
        Scenario::<Endpoint>::given(&[added()]).when(&register("m1")).then(bound("m1"));
    }

    #[test]
    fn a_wrong_key_is_refused_without_binding() {
        Scenario::<Endpoint>::given(&[added()])
            .when(&register_with("other", "m1"))
            .then_error(EndpointError::InvalidKey);
    }

    #[test]
    fn same_machine_again_changes_nothing() {
        Scenario::<Endpoint>::given(&[added(), bound("m1")]).when(&register("m1")).then_nothing();
    }

    #[test]
    fn another_machine_is_refused_as_token_already_registered() {
        let refused = EndpointRegistrationRefused {
            machine: "m2".into(),
            hostname: "host".into(),
            reason: TOKEN_ALREADY_REGISTERED.into(),
        };
        let bound_to_m1 = Scenario::<Endpoint>::given(&[added(), bound("m1")]);
        bound_to_m1.when(&register("m2")).then_error(EndpointError::TokenAlreadyRegistered);
        // The gateway records the refusal (its ledger decides which ones in full).
        let record = |machine: &str| EndpointCommand::RecordRegistrationRefused {
            machine: machine.into(),
            hostname: "host".into(),
        };
        bound_to_m1.when(&record("m2")).then(refused.clone());
        bound_to_m1.when(&record("m1")).then_nothing(); // the bound machine was never refused
                                                        // The refusal does not rebind the key.
        let after = Scenario::<Endpoint>::given(&[added(), bound("m1"), refused]);
        assert_eq!(after.state().added.as_ref().unwrap().machine.as_deref(), Some("m1"));
        after.when(&register("m1")).then_nothing();
    }

    #[test]
    fn repeated_refusals_are_recorded_only_when_some_were_counted() {
        let counted = |count| RepeatedRegistrationRefusals {
            machine: "m2".into(),
            reason: TOKEN_ALREADY_REGISTERED.into(),
            count,
            hostnames: vec!["host".into()],
            other_hostnames: 0,
            first_ms: 1,
            last_ms: 2,
        };
        let e = Scenario::<Endpoint>::given(&[added(), bound("m1")]);
        e.when(&EndpointCommand::RecordRegistrationRefusalsRepeated(counted(0))).then_nothing();
        e.when(&EndpointCommand::RecordRegistrationRefusalsRepeated(counted(19)))
            .then(EndpointRegistrationRefusalsRepeated(counted(19)));
    }

    #[test]
    fn an_unbound_key_binds_to_the_next_machine_that_presents_it() {
        let unbound = EndpointUnbound { machine: "m1".into() };
        Scenario::<Endpoint>::given(&[added(), bound("m1")])
            .when(&EndpointCommand::Unbind)
            .then(unbound.clone());
        let released = Scenario::<Endpoint>::given(&[added(), bound("m1"), unbound.clone()]);
        assert_eq!(released.state().added.as_ref().unwrap().machine, None);
        released.when(&EndpointCommand::Unbind).then_nothing(); // nothing left to release
        released.when(&register("m2")).then(bound("m2"));
        Scenario::<Endpoint>::given(&[added(), bound("m1"), unbound, bound("m2")])
            .when(&register("m1"))
            .then_error(EndpointError::TokenAlreadyRegistered);
        Scenario::<Endpoint>::given(&[added()]).when(&EndpointCommand::Unbind).then_nothing();
    }

    #[test]
    fn add_validates_text_and_refuses_duplicates() {
        let add = |name: &str| EndpointCommand::Add {
            gateway: Uuid::nil(),
            name: name.into(),
            description: String::new(),
            platform: Platform::Other,
            key_hash: "h".into(),
        };
        let non_ascii = Scenario::<Endpoint>::given(&[]).when(&add("\u{65e5}\u{672c}")).result();
        assert!(matches!(non_ascii, Err(EndpointError::Invalid(TextError::NotAscii { .. }))));
        Scenario::<Endpoint>::given(&[added()])
            .when(&add("x"))
            .then_error(EndpointError::AlreadyExists(Uuid::nil()));
    }

    #[test]
    fn a_rotated_key_replaces_the_old_one() {
        let rotate = |generation: u32, hash: &str| EndpointCommand::RotateKey {
            key_generation: generation,
            key_hash: hash.into(),
        };
        let rotated = EndpointKeyRotated { key_generation: 2, key_hash: "h2".into() };
        let before = Scenario::<Endpoint>::given(&[added(), bound("m1")]);
        before.when(&rotate(3, "h3")).then_error(EndpointError::KeyGeneration { current: 1 });
        before.when(&rotate(2, "h2")).then(rotated.clone());
        let after = Scenario::<Endpoint>::given(&[added(), bound("m1"), rotated]);
        after.when(&register("m1")).then_error(EndpointError::InvalidKey); // the old key stops
        after.when(&register_with("h2", "m1")).then_nothing(); // the new one works on m1
    }

    #[test]
    fn edits_record_only_changes() {
        let edit = |name: Option<&str>, description: Option<&str>| EndpointCommand::Edit {
            name: name.map(Into::into),
            description: description.map(Into::into),
        };
        let e = Scenario::<Endpoint>::given(&[added()]);
        e.when(&edit(Some("dc1"), None)).then_nothing();
        e.when(&edit(None, Some("first floor")))
            .then(EndpointEdited { name: "dc1".into(), description: "first floor".into() });
        let empty = e.when(&edit(Some(""), None)).result();
        assert!(matches!(empty, Err(EndpointError::Invalid(TextError::Empty { .. }))));
    }

    #[test]
    fn scan_access_defaults_on_and_toggles_and_the_scan_capacity_is_bounded() {
        let e = Scenario::<Endpoint>::given(&[added()]);
        assert!(e.state().added.as_ref().unwrap().scan_access);
        e.when(&EndpointCommand::SetScanAccess { enabled: true }).then_nothing();
        let capacity = |c| EndpointCommand::SetScanCapacity { capacity: c };
        e.when(&capacity(Some(5))).then(ScanCapacitySet { capacity: Some(5) });
        e.when(&capacity(None)).then_nothing();
        e.when(&capacity(Some(0))).then_error(EndpointError::ScanCapacity(0));
        e.when(&capacity(Some(1001))).then_error(EndpointError::ScanCapacity(1001));
        e.when(&EndpointCommand::SetScanAccess { enabled: false })
            .then(ScanAccessChanged { enabled: false });
    }

    #[test]
    fn support_access_windows_are_one_to_thirty_days_or_indefinite_and_expire() {
        let now = 1_000_000;
        let grant = |days| EndpointCommand::GrantSupportAccess { days };
        let e = Scenario::<Endpoint>::given(&[added()]).at(now);
        assert_eq!(e.state().added.as_ref().unwrap().support_access, SupportAccess::Off);
        for bad in [0, 31] {
            e.when(&grant(Some(bad))).then_error(EndpointError::SupportWindow(bad));
        }
        let granted = SupportAccessGranted { until_ms: Some(now + 2 * DAY_MS) };
        e.when(&grant(Some(2))).then(granted.clone());
        e.when(&grant(None)).then(SupportAccessGranted { until_ms: None });
        let open = Scenario::<Endpoint>::given(&[added(), granted.clone()]).at(now + DAY_MS);
        open.when(&EndpointCommand::ExpireSupportAccess).then_nothing(); // not yet
        Scenario::<Endpoint>::given(&[added(), granted])
            .at(now + 2 * DAY_MS)
            .when(&EndpointCommand::ExpireSupportAccess)
            .then(SupportAccessExpired);
    }

    #[test]
    fn a_deleted_endpoint_refuses_its_key_and_deletes_once() {
        let deleted = Scenario::<Endpoint>::given(&[added(), bound("m1"), EndpointDeleted]);
        deleted.when(&register("m1")).then_error(EndpointError::NotFound(Uuid::nil()));
        deleted.when(&EndpointCommand::Delete).then_nothing();
        deleted
            .when(&EndpointCommand::SetScanAccess { enabled: false })
            .then_error(EndpointError::NotFound(Uuid::nil()));
    }
}
