//! The user actor: a person (or automation) using the management API, their role, and their API
//! tokens (stored as hashes; the secret is shown once, when issued).
//!
//! A user's id is derived from the lower-cased name, so two nodes creating the same user race on
//! one aggregate and exactly one wins: names are unique without a separate index.

use crate::aggregate::Aggregate;
use crate::text::{checked, TextError, MAX_NAME};
use ism_events::{AggregateKind, Event, UserRole};
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
}

pub enum UserCommand {
    Create { name: String, role: UserRole },
    ChangeRole { role: UserRole },
    IssueToken { token: Uuid, label: String, token_hash: String },
    RevokeToken { token: Uuid },
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
    #[error(transparent)]
    Invalid(#[from] TextError),
}

impl Aggregate for User {
    type Command = UserCommand;
    type Error = UserError;
    const KIND: AggregateKind = AggregateKind::User;

    fn new(id: Uuid) -> Self {
        Self { id, created: None }
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::UserCreated { name, role } => {
                self.created =
                    Some(CreatedUser { name: name.clone(), role: *role, tokens: BTreeMap::new() })
            }
            Event::UserRoleChanged { role } => {
                if let Some(u) = &mut self.created {
                    u.role = *role;
                }
            }
            Event::ApiTokenIssued { token, .. } => {
                if let Some(u) = &mut self.created {
                    u.tokens.insert(*token, true);
                }
            }
            Event::ApiTokenRevoked { token } => {
                if let Some(u) = &mut self.created {
                    u.tokens.insert(*token, false);
                }
            }
            _ => {}
        }
    }

    fn handle(&self, command: &UserCommand, _now_ms: i64) -> Result<Option<Event>, UserError> {
        if let UserCommand::Create { name, role } = command {
            let name = checked("user name", name, MAX_NAME, true)?;
            if name.contains(' ') {
                return Err(UserError::Spaces);
            }
            if let Some(u) = &self.created {
                return Err(UserError::AlreadyExists(u.name.clone()));
            }
            return Ok(Some(Event::UserCreated { name, role: *role }));
        }
        let u = self.created.as_ref().ok_or(UserError::NotFound(self.id))?;
        Ok(match command {
            UserCommand::Create { .. } => unreachable!("handled above"),
            UserCommand::ChangeRole { role } => {
                (u.role != *role).then_some(Event::UserRoleChanged { role: *role })
            }
            UserCommand::IssueToken { token, label, token_hash } => Some(Event::ApiTokenIssued {
                token: *token,
                label: checked("token label", label, MAX_NAME, false)?,
                token_hash: token_hash.clone(),
            }),
            UserCommand::RevokeToken { token } => match u.tokens.get(token) {
                None => return Err(UserError::UnknownToken(*token)),
                Some(false) => None,
                Some(true) => Some(Event::ApiTokenRevoked { token: *token }),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given::given;

    #[test]
    fn user_ids_follow_the_name_case_insensitively() {
        assert_eq!(user_id("Alice"), user_id(" alice "));
        assert_ne!(user_id("alice"), user_id("bob"));
    }

    #[test]
    fn create_once_with_a_valid_name() {
        let create =
            |name: &str| UserCommand::Create { name: name.into(), role: UserRole::SecurityLead };
        assert!(matches!(
            given::<User>(&[]).handle(&create("alice"), 0),
            Ok(Some(Event::UserCreated { .. }))
        ));
        assert_eq!(given::<User>(&[]).handle(&create("al ice"), 0), Err(UserError::Spaces));
        assert!(matches!(
            given::<User>(&[]).handle(&create("\u{e9}lodie"), 0),
            Err(UserError::Invalid(_))
        ));
        let existing = Event::UserCreated { name: "alice".into(), role: UserRole::Reviewer };
        assert_eq!(
            given::<User>(&[existing]).handle(&create("ALICE"), 0),
            Err(UserError::AlreadyExists("alice".into()))
        );
    }

    #[test]
    fn tokens_are_issued_and_revoked_once() {
        let t = Uuid::from_u128(7);
        let created = Event::UserCreated { name: "alice".into(), role: UserRole::Reviewer };
        let issued = Event::ApiTokenIssued { token: t, label: "ci".into(), token_hash: "h".into() };
        let u: User = given(&[created.clone(), issued.clone()]);
        assert_eq!(
            u.handle(&UserCommand::RevokeToken { token: t }, 0).unwrap(),
            Some(Event::ApiTokenRevoked { token: t })
        );
        let u: User = given(&[created, issued, Event::ApiTokenRevoked { token: t }]);
        assert_eq!(u.handle(&UserCommand::RevokeToken { token: t }, 0).unwrap(), None);
        assert_eq!(
            u.handle(&UserCommand::RevokeToken { token: Uuid::nil() }, 0),
            Err(UserError::UnknownToken(Uuid::nil()))
        );
    }
}
