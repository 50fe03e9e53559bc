//! User events: users and their API tokens.

use super::{encode, update, At, Tx, TxResult};
use crate::directory::views::*;
use ism_events::UserEvent;

pub(super) fn apply(tx: &Tx<'_>, at: &At<'_>, event: &UserEvent) -> TxResult<()> {
    let (id, key, seq, t) = (at.id, at.key, at.seq, at.time_ms);
    match event {
        UserEvent::UserCreated { name, role } => {
            let u = UserView {
                id,
                version: seq,
                name: name.clone(),
                role: *role,
                created_ms: t,
                created_by: at.envelope.actor_shown(),
                tokens: Vec::new(),
                email: None,
                notifications: None,
            };
            tx.users.insert(key, encode(&u))?;
        }
        UserEvent::UserRoleChanged { role } => {
            update(tx.users, key, |u: &mut UserView| u.role = *role)?
        }
        UserEvent::ApiTokenIssued { token, label, token_hash } => {
            tx.tokens.insert(
                token.as_bytes(),
                encode(&ApiTokenRow { user: id, token_hash: token_hash.clone(), revoked: false }),
            )?;
            update(tx.users, key, |u: &mut UserView| {
                u.tokens.push(TokenView {
                    id: *token,
                    label: label.clone(),
                    issued_ms: t,
                    revoked: false,
                })
            })?;
        }
        UserEvent::UserEmailChanged { email } => {
            update(tx.users, key, |u: &mut UserView| u.email = email.clone())?
        }
        UserEvent::UserNotificationsChanged { enabled } => {
            update(tx.users, key, |u: &mut UserView| u.notifications = Some(*enabled))?
        }
        UserEvent::ApiTokenRevoked { token } => {
            update(tx.tokens, token.as_bytes(), |r: &mut ApiTokenRow| r.revoked = true)?;
            update(tx.users, key, |u: &mut UserView| {
                u.tokens.iter_mut().filter(|x| x.id == *token).for_each(|x| x.revoked = true)
            })?;
        }
    }
    Ok(())
}
