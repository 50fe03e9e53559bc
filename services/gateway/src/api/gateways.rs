//! Gateway handlers: create, list (and the deleted ones), show, delete, scanner credentials.

use super::views;
use super::{parse_id, secret_response, ApiError, Caller, State};
use crate::state::NodeState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use ism_actors::credentials::{issue_secret, SecretKind};
use ism_actors::gateway::GatewayCommand;
use ism_events::{Cause, CredentialKind};
use ism_projectors::{GatewayStatus, GatewayView};
use serde::Deserialize;

pub(super) fn gateway_or_404(state: &NodeState, raw: &str) -> Result<GatewayView, ApiError> {
    let id = parse_id("gateway", raw)?;
    state.directory.gateway(id)?.ok_or_else(|| ApiError::not_found("gateway", id))
}

pub(super) async fn list(state: State, _caller: Caller) -> Result<HttpResponse, ApiError> {
    let live: Vec<_> = state
        .directory
        .gateways()?
        .into_iter()
        .filter(|g| g.status != GatewayStatus::Deleted)
        .map(|g| views::gateway(g, &state))
        .collect();
    Ok(HttpResponse::Ok().json(live))
}

/// Deleted gateways: their names stay visible, as in the seed's management page.
pub(super) async fn list_deleted(state: State, _caller: Caller) -> Result<HttpResponse, ApiError> {
    let deleted: Vec<_> = state
        .directory
        .gateways()?
        .into_iter()
        .filter(|g| g.status == GatewayStatus::Deleted)
        .map(views::deleted_gateway)
        .collect();
    Ok(HttpResponse::Ok().json(deleted))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewGateway {
    name: String,
    #[serde(default)]
    description: String,
}

pub(super) async fn create(
    state: State,
    caller: Caller,
    body: web::Json<NewGateway>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let body = body.into_inner();
    let id = uuid::Uuid::new_v4();
    state
        .gateways
        .execute(
            id,
            GatewayCommand::Create { name: body.name, description: body.description },
            caller.cause(),
        )
        .await?;
    // Every node serves every gateway, so this one brings it online at once.
    let activated = state
        .gateways
        .execute(
            id,
            GatewayCommand::Activate { node: state.node_id.clone() },
            Cause::by(ism_events::Principal::node(state.node_id.clone())),
        )
        .await?;
    state.caught_up(activated.position()).await?;
    Ok(HttpResponse::Created()
        .json(views::gateway(gateway_or_404(&state, &id.to_string())?, &state)))
}

pub(super) async fn show(
    state: State,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(views::gateway(gateway_or_404(&state, &id)?, &state)))
}

/// Refused while the gateway has endpoints: delete those first.
pub(super) async fn delete(
    state: State,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let g = gateway_or_404(&state, &id)?;
    let deleted = state
        .gateways
        .execute(
            g.id,
            GatewayCommand::Delete { reason: format!("deleted by {}", caller.name) },
            caller.cause(),
        )
        .await?;
    state.caught_up(deleted.position()).await?;
    Ok(HttpResponse::Ok().json(views::gateway(gateway_or_404(&state, &id)?, &state)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCredential {
    #[serde(default)]
    label: String,
    /// `scan` (default) or `support`.
    #[serde(default)]
    kind: Option<String>,
}

/// Issues a scanner credential. The secret is in this response only.
pub(super) async fn issue_credential(
    state: State,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<NewCredential>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let g = gateway_or_404(&state, &id)?;
    let body = body.into_inner();
    let kind = match body.kind.as_deref() {
        None => CredentialKind::Scan,
        Some(k) => CredentialKind::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!("kind must be scan or support, not {k:?}"))
        })?,
    };
    let issued = issue_secret(SecretKind::ScannerCredential);
    let command = GatewayCommand::IssueScannerCredential {
        credential: issued.id,
        label: body.label,
        secret_hash: issued.hash,
        kind,
    };
    let recorded = state.gateways.execute(g.id, command, caller.cause()).await?;
    state.caught_up(recorded.position()).await?;
    Ok(secret_response(
        StatusCode::CREATED,
        serde_json::json!({
        "id": issued.id,
        "gateway": g.id,
        "kind": kind,
        "secret": issued.secret,
        "socks_address": state.public.socks.clone(),
        "usage": "SOCKS5 username: the endpoint's name (or id); password: this secret",
        }),
    ))
}

/// Revokes a scanner credential; streams using it stop at once.
pub(super) async fn revoke_credential(
    state: State,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.may_manage()?;
    let (gateway, credential) = path.into_inner();
    let g = gateway_or_404(&state, &gateway)?;
    let credential = parse_id("scanner credential", &credential)?;
    let revoked = state
        .gateways
        .execute(g.id, GatewayCommand::RevokeScannerCredential { credential }, caller.cause())
        .await?;
    state.caught_up(revoked.position()).await?;
    Ok(HttpResponse::Ok().json(views::gateway(gateway_or_404(&state, &gateway)?, &state)))
}
