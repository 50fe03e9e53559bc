//! Users of the management API and their tokens (Administrators only), and `/me`.

use super::views;
use super::{parse_id, secret_response, ApiError, Caller, State};
use crate::state::NodeState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use ism_actors::credentials::{issue_secret, SecretKind};
use ism_actors::user::{user_id, UserCommand};
use ism_events::UserRole;
use ism_projectors::UserView;
use serde::Deserialize;

fn user_or_404(state: &NodeState, name: &str) -> Result<UserView, ApiError> {
    state
        .directory
        .user(user_id(name))?
        .ok_or_else(|| ApiError::not_found("user", format!("{name:?}")))
}

fn role(raw: &str) -> Result<UserRole, ApiError> {
    UserRole::parse(raw).ok_or_else(|| {
        ApiError::bad_request(format!(
            "role must be administrator, security-lead or reviewer, not {raw:?}"
        ))
    })
}

pub(super) async fn me(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "name": caller.name, "role": caller.role, "may_manage": caller.role.may_manage() }))
}

pub(super) async fn list(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.must_be_administrator()?;
    Ok(HttpResponse::Ok()
        .json(state.directory.users()?.into_iter().map(views::user).collect::<Vec<_>>()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    name: String,
    role: String,
    /// Where notifications go.
    #[serde(default)]
    email: Option<String>,
}

pub(super) async fn create(
    state: State,
    caller: Caller,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    caller.must_be_administrator()?;
    let body = body.into_inner();
    let role = role(&body.role)?;
    let id = user_id(&body.name);
    if let Some(email) = &body.email {
        // Checked before the user exists, so a bad address creates nothing.
        ism_actors::user::checked_email(email).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let created = state
        .users
        .execute(id, UserCommand::Create { name: body.name, role }, caller.cause())
        .await?;
    let mut last = created.position();
    if let Some(email) = body.email {
        let set = UserCommand::SetEmail { email: Some(email) };
        last = state.users.execute(id, set, caller.cause()).await?.position().or(last);
    }
    state.caught_up(last).await?;
    let u = state.directory.user(id)?.ok_or_else(|| ApiError::not_found("user", id))?;
    Ok(HttpResponse::Created().json(views::user(u)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserChange {
    #[serde(default)]
    role: Option<String>,
    /// A new address; `""` removes it.
    #[serde(default)]
    email: Option<String>,
    /// Opt in to (`true`) or out of notifications.
    #[serde(default)]
    notifications: Option<bool>,
}

/// Changes a user's role (Administrators only), email address or notification choice
/// (Administrators, or the user themselves).
pub(super) async fn edit(
    state: State,
    caller: Caller,
    name: web::Path<String>,
    body: web::Json<UserChange>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    // The role first, from the name alone: a caller who may not edit this user learns nothing
    // of whether it exists (403 either way, never 404 for a name that is not there).
    if body.role.is_some() || user_id(&caller.name) != user_id(&name) {
        caller.must_be_administrator()?;
    }
    let u = user_or_404(&state, &name)?;
    let mut commands = Vec::new();
    if let Some(r) = &body.role {
        commands.push(UserCommand::ChangeRole { role: role(r)? });
    }
    if let Some(email) = body.email {
        let email = (!email.trim().is_empty()).then_some(email);
        if let Some(e) = &email {
            ism_actors::user::checked_email(e).map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        commands.push(UserCommand::SetEmail { email });
    }
    if let Some(enabled) = body.notifications {
        commands.push(UserCommand::SetNotifications { enabled });
    }
    if commands.is_empty() {
        return Err(ApiError::bad_request("nothing to change: give role, email or notifications"));
    }
    let mut last = None;
    for command in commands {
        last = state.users.execute(u.id, command, caller.cause()).await?.position().or(last);
    }
    state.caught_up(last).await?;
    Ok(HttpResponse::Ok().json(views::user(user_or_404(&state, &name)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    #[serde(default)]
    label: String,
}

/// Issues an API token for the user. The token is in this response only.
pub(super) async fn issue_token(
    state: State,
    caller: Caller,
    name: web::Path<String>,
    body: web::Json<NewToken>,
) -> Result<HttpResponse, ApiError> {
    caller.must_be_administrator()?;
    let u = user_or_404(&state, &name)?;
    let issued = issue_secret(SecretKind::ApiToken);
    let command = UserCommand::IssueToken {
        token: issued.id,
        label: body.into_inner().label,
        token_hash: issued.hash,
    };
    let recorded = state.users.execute(u.id, command, caller.cause()).await?;
    state.caught_up(recorded.position()).await?;
    Ok(secret_response(
        StatusCode::CREATED,
        serde_json::json!({ "id": issued.id, "user": u.name, "token": issued.secret }),
    ))
}

pub(super) async fn revoke_token(
    state: State,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.must_be_administrator()?;
    let (name, token) = path.into_inner();
    let u = user_or_404(&state, &name)?;
    let token = parse_id("API token", &token)?;
    let revoked =
        state.users.execute(u.id, UserCommand::RevokeToken { token }, caller.cause()).await?;
    state.caught_up(revoked.position()).await?;
    Ok(HttpResponse::Ok().json(views::user(user_or_404(&state, &name)?)))
}
