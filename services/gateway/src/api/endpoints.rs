//! Endpoint handlers: add, list, show, edit, delete, the key ("Copy Endpoint Key", rotate), its
//! machine binding (unbind) and access (scan access, support-engineer access).
//!
//! Adding, renaming and deleting touch two aggregates, the gateway's roster of names and the
//! endpoint itself: `ism_actors::roster` does it in the right order and undoes half-done work.

use super::gateways::gateway_or_404;
use super::views;
use super::{parse_id, secret_response, ApiError, Caller, State};
use crate::state::NodeState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use ism_actors::credentials::hash_secret;
use ism_actors::endpoint::{
    checked_scan_capacity, checked_support_days, EndpointCommand, MAX_SCAN_CAPACITY,
    MAX_SUPPORT_DAYS,
};
use ism_actors::roster::{NewEndpoint as RosterEntry, ReadEndpoint, Roster};
use ism_actors::text::{checked, MAX_DESCRIPTION, MAX_NAME};
use ism_events::Platform;
use ism_projectors::{EndpointView, GatewayStatus};
use serde::Deserialize;
use uuid::Uuid;

fn roster(state: &NodeState) -> Roster<'_> {
    Roster { gateways: &state.gateways, endpoints: &state.endpoints, log: &*state.log }
}

fn endpoint_or_404(state: &NodeState, raw: &str) -> Result<EndpointView, ApiError> {
    let id = parse_id("endpoint", raw)?;
    state.directory.endpoint(id)?.ok_or_else(|| ApiError::not_found("endpoint", id))
}

fn shown(state: &NodeState, id: Uuid) -> Result<HttpResponse, ApiError> {
    let e = state.directory.endpoint(id)?.ok_or_else(|| ApiError::not_found("endpoint", id))?;
    Ok(HttpResponse::Ok().json(views::endpoint(e, state)))
}

pub(super) async fn list(
    state: State,
    _caller: Caller,
    gateway: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let g = gateway_or_404(&state, &gateway)?;
    let all: Vec<_> = state
        .directory
        .endpoints_of(g.id)?
        .into_iter()
        .map(|e| views::endpoint(e, &state))
        .collect();
    Ok(HttpResponse::Ok().json(all))
}

pub(super) async fn show(
    state: State,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(views::endpoint(endpoint_or_404(&state, &id)?, &state)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewEndpoint {
    name: String,
    #[serde(default)]
    description: String,
    platform: String,
}

pub(super) async fn add(
    state: State,
    caller: Caller,
    gateway: web::Path<String>,
    body: web::Json<NewEndpoint>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let g = gateway_or_404(&state, &gateway)?;
    if g.status == GatewayStatus::Deleted {
        return Err(ApiError::new(
            actix_web::http::StatusCode::GONE,
            format!("gateway {:?} was deleted", g.name),
        ));
    }
    let body = body.into_inner();
    let platform = Platform::parse(&body.platform).ok_or_else(|| {
        ApiError::bad_request(format!(
            "platform must be linux, windows or other, not {:?}",
            body.platform
        ))
    })?;
    // Both checked here, before the gateway's roster takes the name: a request refused half-way
    // would record the name taken and given back.
    let name = checked("endpoint name", &body.name, MAX_NAME, true)?;
    let description = checked("endpoint description", &body.description, MAX_DESCRIPTION, false)?;
    let id = Uuid::new_v4();
    let key = state.key_secret.endpoint_key(id, 1);
    let entry =
        RosterEntry { id, gateway: g.id, name, description, platform, key_hash: hash_secret(&key) };
    let added = roster(&state).add(entry, &caller.cause()).await?;
    state.caught_up(added.position()).await?;
    let endpoint = views::endpoint(endpoint_or_404(&state, &id.to_string())?, &state);
    Ok(secret_response(
        StatusCode::CREATED,
        serde_json::json!({ "endpoint": endpoint, "key": key }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndpointEdit {
    name: Option<String>,
    description: Option<String>,
    /// The endpoint's `version` as the client read it: an edit based on an older read is
    /// refused (409) instead of overwriting a change the client did not see.
    version: Option<u64>,
}

pub(super) async fn edit(
    state: State,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<EndpointEdit>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let e = endpoint_or_404(&state, &id)?;
    let body = body.into_inner();
    let version = body.version.ok_or_else(|| {
        ApiError::bad_request("version is required: send the endpoint's version as you read it")
    })?;
    let name = body.name.map(|n| checked("endpoint name", &n, MAX_NAME, true)).transpose()?;
    let description = body
        .description
        .map(|d| checked("endpoint description", &d, MAX_DESCRIPTION, false))
        .transpose()?;
    let read = ReadEndpoint { id: e.id, gateway: e.gateway, name: e.name, version };
    let edited = roster(&state).edit(&read, name, description, &caller.cause()).await?;
    state.caught_up(edited.position()).await?;
    shown(&state, e.id)
}

/// Deletes the endpoint: its session is closed at once (on every node) and its key stops
/// working. Safe to repeat if a previous attempt stopped half-way.
pub(super) async fn delete(
    state: State,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let id = parse_id("endpoint", &id)?;
    let e = state.directory.endpoint_any(id)?.ok_or_else(|| ApiError::not_found("endpoint", id))?;
    // Its scans first: a scan whose endpoint vanished under it would fail instead.
    let reason = format!("endpoint {:?} was deleted", e.name);
    let cancelled = super::scans::cancel_all(&state, &caller, id, &reason).await?;
    let last = roster(&state).delete(id, e.gateway, &caller.cause()).await?;
    state.caught_up(last.max(cancelled)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deleted": id, "name": e.name })))
}

/// "Copy Endpoint Key": the key is re-derived, never read from storage. Managers only.
pub(super) async fn key(
    state: State,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let e = endpoint_or_404(&state, &id)?;
    let key = state.key_secret.endpoint_key(e.id, e.key_generation);
    Ok(secret_response(
        StatusCode::OK,
        serde_json::json!({ "endpoint": e.id, "key_generation": e.key_generation, "key": key }),
    ))
}

/// Replaces the key; the old one stops working and the endpoint's session ends.
pub(super) async fn rotate_key(
    state: State,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let e = endpoint_or_404(&state, &id)?;
    let generation = e.key_generation + 1;
    let key = state.key_secret.endpoint_key(e.id, generation);
    let rotated = state
        .endpoints
        .execute(
            e.id,
            EndpointCommand::RotateKey { key_generation: generation, key_hash: hash_secret(&key) },
            caller.cause(),
        )
        .await?;
    state.caught_up(rotated.position()).await?;
    Ok(secret_response(
        StatusCode::OK,
        serde_json::json!({ "endpoint": e.id, "key_generation": generation, "key": key }),
    ))
}

/// Releases the key's binding to its machine, so that another machine can take the endpoint over
/// (the old one was replaced, or reinstalled without its identity): the next machine that
/// presents the key binds it. The bound machine's session ends on every node, as with a rotated
/// key; an agent still running there binds the key again when it reconnects, so stop it first.
/// Nothing is recorded for an endpoint bound to no machine.
pub(super) async fn unbind(
    state: State,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let e = endpoint_or_404(&state, &id)?;
    let unbound = state.endpoints.execute(e.id, EndpointCommand::Unbind, caller.cause()).await?;
    state.caught_up(unbound.position()).await?;
    shown(&state, e.id)
}

/// A number of scans, or `"default"`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum CapacitySetting {
    Scans(u32),
    Word(String),
}

/// `"off"`, `"indefinite"`, or a number of days (1 to [`MAX_SUPPORT_DAYS`]).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum SupportSetting {
    Days(u32),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessChange {
    scan_access: Option<bool>,
    support_access: Option<SupportSetting>,
    /// Scans run at once (1 to [`MAX_SCAN_CAPACITY`]), or `"default"` for the gateway's `--scan-capacity`.
    #[serde(default)]
    scan_capacity: Option<CapacitySetting>,
}

/// The command a `support_access` setting asks for, checked before anything is changed (the
/// window's days by the actor's own rule), so a request with a bad part changes nothing.
fn support_command(setting: SupportSetting) -> Result<EndpointCommand, ApiError> {
    match setting {
        SupportSetting::Days(d) => checked_support_days(d)
            .map(|d| EndpointCommand::GrantSupportAccess { days: Some(d) })
            .map_err(|e| ApiError::bad_request(e.to_string())),
        SupportSetting::Word(w) => match w.to_ascii_lowercase().as_str() {
            "off" => Ok(EndpointCommand::RevokeSupportAccess),
            "indefinite" => Ok(EndpointCommand::GrantSupportAccess { days: None }),
            _ => Err(ApiError::bad_request(format!(
                "support_access must be \"off\", \"indefinite\" or a number of days from 1 to {MAX_SUPPORT_DAYS}, not {:?}",
                ism_events::escaped(&w)
            ))),
        },
    }
}

/// The command a `scan_capacity` setting asks for, checked before anything is changed.
fn capacity_command(setting: CapacitySetting) -> Result<EndpointCommand, ApiError> {
    match setting {
        CapacitySetting::Scans(c) => checked_scan_capacity(c)
            .map(|c| EndpointCommand::SetScanCapacity { capacity: Some(c) })
            .map_err(|e| ApiError::bad_request(e.to_string())),
        CapacitySetting::Word(w) if w.eq_ignore_ascii_case("default") => {
            Ok(EndpointCommand::SetScanCapacity { capacity: None })
        }
        CapacitySetting::Word(w) => Err(ApiError::bad_request(format!(
            "scan_capacity must be a number of scans (1 to {MAX_SCAN_CAPACITY}) or \"default\", not {:?}",
            ism_events::escaped(&w)
        ))),
    }
}

/// Manage Access: turning scan access off ends the scans and streams in progress within a
/// second, on every node, and refuses new ones until it is turned on again. The scan capacity is
/// how many scans of the built-in engine it runs at once. Every part of the request is checked
/// before the first is carried out: a bad part changes nothing, and the 400 means exactly that.
pub(super) async fn set_access(
    state: State,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<AccessChange>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let e = endpoint_or_404(&state, &id)?;
    let body = body.into_inner();
    let support = body.support_access.map(support_command).transpose()?;
    let capacity = body.scan_capacity.map(capacity_command).transpose()?;
    let commands = body
        .scan_access
        .map(|enabled| EndpointCommand::SetScanAccess { enabled })
        .into_iter()
        .chain(support)
        .chain(capacity);
    let mut last = None;
    for command in commands {
        last = state.endpoints.execute(e.id, command, caller.cause()).await?.position().or(last);
    }
    if body.scan_access == Some(false) {
        let reason = format!("scan access to endpoint {:?} was turned off", e.name);
        last = super::scans::cancel_all(&state, &caller, e.id, &reason).await?.max(last);
    }
    state.caught_up(last).await?;
    shown(&state, e.id)
}
