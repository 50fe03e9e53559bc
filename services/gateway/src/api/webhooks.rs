//! Webhook subscriptions (managers) and the notifications recorded (everyone).

use super::views;
use super::{parse_id, secret_response, ApiError, Caller, State};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use ism_actors::credentials::{hex, random_bytes};
use ism_actors::webhook::WebhookCommand;
use ism_events::NoticeKind;
use serde::Deserialize;
use uuid::Uuid;

/// Shortest signing secret accepted from the caller.
const MIN_SECRET: usize = 16;

pub(super) async fn list(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let hooks: Vec<_> = state.directory.webhooks()?.into_iter().map(views::webhook).collect();
    Ok(HttpResponse::Ok().json(hooks))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewWebhook {
    url: String,
    /// The signing secret; one is generated (and shown once) without it.
    #[serde(default)]
    secret: Option<String>,
    /// Notice kinds (`endpoint-offline`, ...); none: all of them.
    #[serde(default)]
    events: Vec<String>,
}

/// Subscribes a URL. The secret is in this response only; the log keeps it sealed.
pub(super) async fn add(
    state: State,
    caller: Caller,
    body: web::Json<NewWebhook>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let body = body.into_inner();
    let events = body
        .events
        .iter()
        .map(|e| {
            NoticeKind::parse(e).ok_or_else(|| {
                let known: Vec<_> = NoticeKind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::bad_request(format!(
                    "unknown notification kind {:?}; known: {}",
                    ism_events::escaped(e),
                    known.join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let secret = match body.secret {
        Some(s) if s.len() < MIN_SECRET || !s.chars().all(|c| c.is_ascii_graphic()) => {
            return Err(ApiError::bad_request(format!(
                "the secret must be at least {MIN_SECRET} printable ASCII characters without spaces"
            )))
        }
        Some(s) => s,
        None => format!("whsec_{}", hex(&random_bytes())),
    };
    let id = Uuid::new_v4();
    if let Some(why) = crate::notify::webhook::literal_refused(body.url.trim()) {
        return Err(ApiError::bad_request(why));
    }
    let command = WebhookCommand::Add {
        url: body.url,
        secret_sealed: state.key_secret.seal(&secret),
        events,
    };
    let added = state.webhooks.execute(id, command, caller.cause()).await?;
    state.caught_up(added.position()).await?;
    let hook = state.directory.webhooks()?.into_iter().find(|w| w.id == id);
    let hook = hook.ok_or_else(|| ApiError::not_found("webhook", id))?;
    Ok(secret_response(
        StatusCode::CREATED,
        serde_json::json!({ "webhook": views::webhook(hook), "secret": secret }),
    ))
}

pub(super) async fn remove(
    state: State,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let id = parse_id("webhook", &id)?;
    let removed = state.webhooks.execute(id, WebhookCommand::Remove, caller.cause()).await?;
    state.caught_up(removed.position()).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "removed": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotificationQuery {
    #[serde(default)]
    limit: Option<usize>,
}

/// The notifications recorded, newest first (default 100, at most 1000).
/// Who received each is shown to managers only (the users list is not everyone's).
pub(super) async fn notifications(
    state: State,
    caller: Caller,
    query: web::Query<NotificationQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100).min(1000);
    let all: Vec<_> = state
        .notices
        .notifications(limit)?
        .into_iter()
        .map(|mut n| {
            if !caller.role.may_manage() {
                n.sent.iter_mut().for_each(|s| s.recipients.clear());
            }
            views::notification(n, &state)
        })
        .collect();
    Ok(HttpResponse::Ok().json(all))
}
