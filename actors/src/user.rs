//! The user actor: a person (or automation) using the management API, their role, and their API
//! tokens (stored as hashes; the secret is shown once, when issued).
//!
//! A user's id is derived from the lower-cased name, so two nodes creating the same user race on
//! one aggregate and exactly one wins: names are unique without a separate index.

use crate::aggregate::Aggregate;
use crate::text::{checked, TextError, MAX_NAME};
use ism_events::{AggregateKind, UserEvent, UserRole};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Namespace of user ids (UUID v5 of the lower-cased name).
const USER_NAMESPACE: Uuid = Uuid::from_u128(0x6973_6d2d_7573_6572_2d6e_616d_6573_7061);

/// The id of the user called `name`.
pub fn user_id(name: &str) -> Uuid {
    Uuid::new_v5(&USER_NAMESPACE, name.trim().to_ascii_lowercase().as_bytes())
}

#[derive(Debug, Default)]
pub struct User {
    pub id: Uuid,
    pub created: Option<CreatedUser>,
}

#[derive(Debug)]
pub struct CreatedUser {
    pub name: String,
    pub role: UserRole,
    /// Token id -> still valid.
    pub tokens: BTreeMap<Uuid, bool>,
    pub email: Option<String>,
    pub notifications: Option<bool>,
}

pub enum UserCommand {
    Create {
        name: String,
        role: UserRole,
    },
    ChangeRole {
        role: UserRole,
    },
    IssueToken {
        token: Uuid,
        label: String,
        token_hash: String,
    },
    RevokeToken {
        token: Uuid,
    },
    /// Sets (or, with `None`, removes) the address notifications go to.
    SetEmail {
        email: Option<String>,
    },
    /// Opts in to or out of notifications.
    SetNotifications {
        enabled: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("a user named {0:?} already exists")]
    AlreadyExists(String),
    #[error("user {0} does not exist")]
    NotFound(Uuid),
    #[error("user has no API token {0}")]
    UnknownToken(Uuid),
    #[error("user names may not contain spaces")]
    Spaces,
    #[error("{0:?} is reserved (it reads as the bootstrap administrator or another kind of actor); choose another user name")]
    Reserved(String),
    #[error("{0:?} is not an email address (expected name@domain, ASCII, no spaces)")]
    BadEmail(String),
    #[error(transparent)]
    Invalid(#[from] TextError),
}

/// Longest email address (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;

/// An address notifications can be sent to: `local@domain` in printable ASCII without spaces or
/// the characters that would break a mail header (`<`, `>`, `,`, `;`, quotes), a domain with a
/// dot or a single label (`localhost` relays in tests and labs).
pub fn checked_email(raw: &str) -> Result<String, UserError> {
    let email = checked("email", raw, MAX_EMAIL, true)?;
    let bad = || UserError::BadEmail(email.clone());
    let (local, domain) = email.rsplit_once('@').ok_or_else(bad)?;
    let forbidden = |c: char| c.is_ascii_whitespace() || "<>,;\"()[]\\:".contains(c) || c == '@';
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
    };
    if local.is_empty() || local.chars().any(forbidden) || !domain.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(email)
}

/// Names a user may not take: the bootstrap administrator's, names of the system itself, and
/// anything with a `:`, which the audit uses between an actor's kind and name (`node:node-a`).
/// Events record the kind anyway; this keeps what people read unambiguous too.
fn is_reserved(name: &str) -> bool {
    const RESERVED: &[&str] = &["admin", "administrator", "root", "system", "bootstrap"];
    name.contains(':') || RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

impl Aggregate for User {
    type Command = UserCommand;
    type Error = UserError;
    type Event = UserEvent;
    const KIND: AggregateKind = AggregateKind::User;

    fn new(id: Uuid) -> Self {
        Self { id, created: None }
    }

    fn apply(&mut self, event: &UserEvent) {
        use UserEvent::*;
        if let UserCreated { name, role } = event {
            self.created = Some(CreatedUser {
                name: name.clone(),
                role: *role,
                tokens: BTreeMap::new(),
                email: None,
                notifications: None,
            });
            return;
        }
        // Every other event follows a creation.
        let Some(u) = &mut self.created else { return };
        match event {
            UserCreated { .. } => {}
            UserRoleChanged { role } => u.role = *role,
            UserEmailChanged { email } => u.email = email.clone(),
            UserNotificationsChanged { enabled } => u.notifications = Some(*enabled),
            ApiTokenIssued { token, .. } => {
                u.tokens.insert(*token, true);
            }
            ApiTokenRevoked { token } => {
                u.tokens.insert(*token, false);
            }
        }
    }

    fn handle(&self, command: &UserCommand, _now_ms: i64) -> Result<Option<UserEvent>, UserError> {
        if let UserCommand::Create { name, role } = command {
            let name = checked("user name", name, MAX_NAME, true)?;
            if name.contains(' ') {
                return Err(UserError::Spaces);
            }
            if is_reserved(&name) {
                return Err(UserError::Reserved(name));
            }
            if let Some(u) = &self.created {
                return Err(UserError::AlreadyExists(u.name.clone()));
            }
            return Ok(Some(UserEvent::UserCreated { name, role: *role }));
        }
        let u = self.created.as_ref().ok_or(UserError::NotFound(self.id))?;
        Ok(match command {
            UserCommand::Create { .. } => unreachable!("handled above"),
            UserCommand::ChangeRole { role } => {
                (u.role != *role).then_some(UserEvent::UserRoleChanged { role: *role })
            }
            UserCommand::IssueToken { token, label, token_hash } => {
                Some(UserEvent::ApiTokenIssued {
                    token: *token,
                    label: checked("token label", label, MAX_NAME, false)?,
                    token_hash: token_hash.clone(),
                })
            }
            UserCommand::RevokeToken { token } => match u.tokens.get(token) {
                None => return Err(UserError::UnknownToken(*token)),
                Some(false) => None,
                Some(true) => Some(UserEvent::ApiTokenRevoked { token: *token }),
            },
            UserCommand::SetEmail { email } => {
                let email = email.as_deref().map(checked_email).transpose()?;
                (u.email != email).then_some(UserEvent::UserEmailChanged { email })
            }
            UserCommand::SetNotifications { enabled } => (u.notifications != Some(*enabled))
                .then_some(UserEvent::UserNotificationsChanged { enabled: *enabled }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::scenario::Scenario;
    use UserEvent::*;

    #[test]
    fn user_ids_follow_the_name_case_insensitively() {
        assert_eq!(user_id("Alice"), user_id(" alice "));
        assert_ne!(user_id("alice"), user_id("bob"));
    }

    #[test]
    fn create_once_with_a_valid_name() {
        let create =
            |name: &str| UserCommand::Create { name: name.into(), role: UserRole::SecurityLead };
        Scenario::<User>::given(&[])
            .when(&create("alice"))
            .then(UserCreated { name: "alice".into(), role: UserRole::SecurityLead });
        Scenario::<User>::given(&[]).when(&create("al ice")).then_error(UserError::Spaces);
        for reserved in ["admin", "Administrator", "endpoint:dc1", "node:node-1", "SYSTEM"] {
            Scenario::<User>::given(&[])
                .when(&create(reserved))
                .then_error(UserError::Reserved(reserved.into()));
        }
        let invalid = Scenario::<User>::given(&[]).when(&create("\u{e9}lodie")).result();
        assert!(matches!(invalid, Err(UserError::Invalid(_))), "{invalid:?}");
        let existing = UserCreated { name: "alice".into(), role: UserRole::Reviewer };
        Scenario::<User>::given(&[existing])
            .when(&create("ALICE"))
            .then_error(UserError::AlreadyExists("alice".into()));
    }

    #[test]
    fn emails_are_checked_and_set_once() {
        let created = UserCreated { name: "alice".into(), role: UserRole::SecurityLead };
        let set = |e: &str| UserCommand::SetEmail { email: Some(e.into()) };
        let alice = Scenario::<User>::given(std::slice::from_ref(&created));
        alice
            .when(&set(" alice@corp.example "))
            .then(UserEmailChanged { email: Some("alice@corp.example".into()) });
        alice
            .when(&set("ops@localhost"))
            .then(UserEmailChanged { email: Some("ops@localhost".into()) });
        for bad in
            ["alice", "@corp.example", "a b@corp.example", "a@corp..example", "a<b>@x", "a@-x"]
        {
            alice.when(&set(bad)).then_error(UserError::BadEmail(bad.trim().into()));
        }
        assert!(matches!(
            alice.when(&set("\u{e9}@corp.example")).result(),
            Err(UserError::Invalid(TextError::NotAscii { .. }))
        ));
        let with_email = Scenario::<User>::given(&[
            created,
            UserEmailChanged { email: Some("a@x.example".into()) },
        ]);
        with_email.when(&set("a@x.example")).then_nothing();
        with_email
            .when(&UserCommand::SetEmail { email: None })
            .then(UserEmailChanged { email: None });
        with_email
            .when(&UserCommand::SetNotifications { enabled: false })
            .then(UserNotificationsChanged { enabled: false });
    }

    #[test]
    fn tokens_are_issued_and_revoked_once() {
        let token = Uuid::from_u128(7);
        let created = UserCreated { name: "alice".into(), role: UserRole::Reviewer };
        let issued = ApiTokenIssued { token, label: "ci".into(), token_hash: "h".into() };
        let revoke = UserCommand::RevokeToken { token };
        Scenario::<User>::given(&[created.clone(), issued.clone()])
            .when(&revoke)
            .then(ApiTokenRevoked { token });
        let revoked = Scenario::<User>::given(&[created, issued, ApiTokenRevoked { token }]);
        revoked.when(&revoke).then_nothing();
        revoked
            .when(&UserCommand::RevokeToken { token: Uuid::nil() })
            .then_error(UserError::UnknownToken(Uuid::nil()));
    }
}
