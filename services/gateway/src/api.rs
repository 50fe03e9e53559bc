//! The management REST API: gateways, endpoints, keys and scanner credentials.
//!
//! Every request is authorised (a bearer token). A change goes REST handler -> actor command ->
//! event appended -> directory updated; the handler waits until the directory shows its own
//! write before answering, so a client that creates something can list it at once. Errors are
//! JSON `{"success": false, "error": "..."}` with a 4xx/5xx status that says whose fault it is.

use crate::state::NodeState;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use ism_actors::credentials::{constant_time_eq, hash_secret, issue_scanner_credential};
use ism_actors::endpoint::{EndpointCommand, EndpointError};
use ism_actors::gateway::{GatewayCommand, GatewayError};
use ism_actors::text::{checked, MAX_NAME};
use ism_actors::CommandError;
use ism_events::{Cause, Platform, ProjectionError};
use ism_projectors::{EndpointView, GatewayView};
use serde::{Deserialize, Serialize};
use std::future::{ready, Ready};
use std::sync::Arc;
use uuid::Uuid;

/// Largest JSON body accepted.
const MAX_BODY: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(MAX_BODY).error_handler(|err, _| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {err}")).into()
    }))
    .app_data(web::PathConfig::default().error_handler(|err, _| ApiError::new(StatusCode::NOT_FOUND, format!("no such resource: {err}")).into()))
    .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok\n") }))
    .service(
        web::scope("/api/v1")
            .route("/status", web::get().to(status))
            .route("/gateways", web::get().to(list_gateways))
            .route("/gateways", web::post().to(create_gateway))
            .route("/gateways/{id}", web::get().to(get_gateway))
            .route("/gateways/{id}/endpoints", web::get().to(list_endpoints))
            .route("/gateways/{id}/endpoints", web::post().to(add_endpoint))
            .route("/gateways/{id}/scanner-credentials", web::post().to(issue_credential))
            .route("/endpoints/{id}", web::get().to(get_endpoint))
            .route("/endpoints/{id}/key", web::get().to(get_endpoint_key)),
    )
    .default_service(web::to(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API route").error_response() }));
}

// ----- errors -----

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    fn not_found(what: &str, id: Uuid) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} {id} does not exist"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(serde_json::json!({ "success": false, "error": self.message }))
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("directory unavailable: {e}"))
    }
}

/// How an aggregate's refusal maps onto HTTP.
trait Refusal: std::error::Error + 'static {
    fn status(&self) -> StatusCode;
}

impl Refusal for GatewayError {
    fn status(&self) -> StatusCode {
        match self {
            GatewayError::AlreadyExists(_) => StatusCode::CONFLICT,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl Refusal for EndpointError {
    fn status(&self) -> StatusCode {
        match self {
            EndpointError::AlreadyExists(_) => StatusCode::CONFLICT,
            EndpointError::NotFound(_) => StatusCode::NOT_FOUND,
            EndpointError::Invalid(_) => StatusCode::BAD_REQUEST,
            EndpointError::InvalidKey => StatusCode::UNAUTHORIZED,
        }
    }
}

impl<E: Refusal> From<CommandError<E>> for ApiError {
    fn from(e: CommandError<E>) -> Self {
        let status = match &e {
            CommandError::Rejected(r) => r.status(),
            CommandError::Contended(_) => StatusCode::CONFLICT,
            CommandError::Log(_) | CommandError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

// ----- authorisation -----

/// The authenticated caller, named in the events it causes.
pub struct Caller {
    name: String,
}

impl Caller {
    fn cause(&self) -> Cause {
        Cause::by(self.name.clone())
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<Arc<NodeState>>>().expect("node state registered");
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        ready(match token {
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing bearer token: send 'Authorization: Bearer <token>'")),
            Some(t) if constant_time_eq(hash_secret(t).as_bytes(), state.admin_token_hash.as_bytes()) => Ok(Caller { name: "admin".into() }),
            Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token")),
        })
    }
}

// ----- representations -----

#[derive(Serialize)]
struct GatewayOut {
    id: Uuid,
    name: String,
    description: String,
    status: &'static str,
    created_ms: i64,
    created_by: Option<String>,
    /// What endpoints connect to: add it (and its IP address) to the network allowlist.
    endpoint_url: String,
    /// Where scanners connect (SOCKS5).
    socks_address: String,
    scanner_credentials: Vec<CredentialOut>,
}

#[derive(Serialize)]
struct CredentialOut {
    id: Uuid,
    label: String,
    issued_ms: i64,
}

#[derive(Serialize)]
struct EndpointOut {
    id: Uuid,
    gateway: Uuid,
    name: String,
    description: String,
    platform: Platform,
    status: &'static str,
    version: Option<String>,
    agent_platform: Option<String>,
    hostname: Option<String>,
    machine: Option<String>,
    node: Option<String>,
    connected_since_ms: Option<i64>,
    last_disconnected_ms: Option<i64>,
    key_generation: u32,
    last_refusal: Option<String>,
}

fn gateway_out(g: GatewayView, state: &NodeState) -> GatewayOut {
    GatewayOut {
        id: g.id,
        name: g.name,
        description: g.description,
        status: match g.status {
            ism_projectors::GatewayStatus::Initializing => "Initializing",
            ism_projectors::GatewayStatus::Online => "Online",
        },
        created_ms: g.created_ms,
        created_by: g.created_by,
        endpoint_url: format!("wss://{}{}", state.addresses.endpoint_wss, state.ws_path),
        socks_address: state.addresses.socks.to_string(),
        scanner_credentials: g.scanner_credentials.into_iter().map(|c| CredentialOut { id: c.id, label: c.label, issued_ms: c.issued_ms }).collect(),
    }
}

fn endpoint_out(e: EndpointView) -> EndpointOut {
    EndpointOut {
        id: e.id,
        gateway: e.gateway,
        name: e.name,
        description: e.description,
        platform: e.platform,
        status: match e.status {
            ism_projectors::EndpointStatus::Pending => "Pending",
            ism_projectors::EndpointStatus::Ready => "Ready",
            ism_projectors::EndpointStatus::Offline => "Offline",
        },
        version: e.agent_version,
        agent_platform: e.agent_platform,
        hostname: e.hostname,
        machine: e.machine,
        node: e.node,
        connected_since_ms: e.connected_since_ms,
        last_disconnected_ms: e.last_disconnected_ms,
        key_generation: e.key_generation,
        last_refusal: e.last_refusal,
    }
}

type State = web::Data<Arc<NodeState>>;

fn gateway_or_404(state: &NodeState, id: Uuid) -> Result<GatewayView, ApiError> {
    state.directory.gateway(id)?.ok_or_else(|| ApiError::not_found("gateway", id))
}

fn endpoint_or_404(state: &NodeState, id: Uuid) -> Result<EndpointView, ApiError> {
    state.directory.endpoint(id)?.ok_or_else(|| ApiError::not_found("endpoint", id))
}

// ----- handlers -----

async fn status(state: State, _caller: Caller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "node": state.node_id,
        "event_log": state.log.describe(),
        "directory_position": state.progress.applied(),
        "connected_endpoints": state.sessions.len(),
        "open_streams": state.sessions.open_streams(),
        "endpoint_url": format!("wss://{}{}", state.addresses.endpoint_wss, state.ws_path),
        "socks_address": state.addresses.socks.to_string(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGateway {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_gateway(state: State, caller: Caller, body: web::Json<NewGateway>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let id = Uuid::new_v4();
    state.gateways.execute(id, GatewayCommand::Create { name: body.name, description: body.description }, caller.cause()).await?;
    // Every node serves every gateway, so this one brings it online at once.
    let activated = state.gateways.execute(id, GatewayCommand::Activate { node: state.node_id.clone() }, Cause::by(state.node_id.clone())).await?;
    state.caught_up(activated.position()).await?;
    Ok(HttpResponse::Created().json(gateway_out(gateway_or_404(&state, id)?, &state)))
}

async fn list_gateways(state: State, _caller: Caller) -> Result<HttpResponse, ApiError> {
    let all: Vec<_> = state.directory.gateways()?.into_iter().map(|g| gateway_out(g, &state)).collect();
    Ok(HttpResponse::Ok().json(all))
}

async fn get_gateway(state: State, _caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(gateway_out(gateway_or_404(&state, *id)?, &state)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    name: String,
    #[serde(default)]
    description: String,
    platform: String,
}

async fn add_endpoint(state: State, caller: Caller, gateway: web::Path<Uuid>, body: web::Json<NewEndpoint>) -> Result<HttpResponse, ApiError> {
    let gateway = gateway_or_404(&state, *gateway)?;
    let body = body.into_inner();
    let platform = Platform::parse(&body.platform)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("platform must be linux, windows or other, not {:?}", body.platform)))?;
    let name = checked("endpoint name", &body.name, MAX_NAME, true).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if state.directory.endpoint_by_name(gateway.id, &name)?.is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("gateway {:?} already has an endpoint named {name:?}", gateway.name)));
    }
    let id = Uuid::new_v4();
    let key = state.key_secret.endpoint_key(id, 1);
    let command = EndpointCommand::Add { gateway: gateway.id, name, description: body.description, platform, key_hash: hash_secret(&key) };
    let added = state.endpoints.execute(id, command, caller.cause()).await?;
    state.caught_up(added.position()).await?;
    let endpoint = endpoint_out(endpoint_or_404(&state, id)?);
    Ok(HttpResponse::Created().json(serde_json::json!({ "endpoint": endpoint, "key": key })))
}

async fn list_endpoints(state: State, _caller: Caller, gateway: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let gateway = gateway_or_404(&state, *gateway)?;
    let all: Vec<_> = state.directory.endpoints_of(gateway.id)?.into_iter().map(endpoint_out).collect();
    Ok(HttpResponse::Ok().json(all))
}

async fn get_endpoint(state: State, _caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(endpoint_out(endpoint_or_404(&state, *id)?)))
}

/// "Copy Endpoint Key": the key is re-derived, never read from storage.
async fn get_endpoint_key(state: State, _caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let e = endpoint_or_404(&state, *id)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "endpoint": e.id, "key": state.key_secret.endpoint_key(e.id, e.key_generation) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCredential {
    #[serde(default)]
    label: String,
}

/// Issues a scanner credential. The secret is in this response only.
async fn issue_credential(state: State, caller: Caller, gateway: web::Path<Uuid>, body: web::Json<NewCredential>) -> Result<HttpResponse, ApiError> {
    let gateway = gateway_or_404(&state, *gateway)?;
    let issued = issue_scanner_credential();
    let command = GatewayCommand::IssueScannerCredential { credential: issued.id, label: body.into_inner().label, secret_hash: issued.hash };
    let recorded = state.gateways.execute(gateway.id, command, caller.cause()).await?;
    state.caught_up(recorded.position()).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": issued.id,
        "gateway": gateway.id,
        "secret": issued.secret,
        "socks_address": state.addresses.socks.to_string(),
        "usage": "SOCKS5 username: the endpoint's name (or id); password: this secret",
    })))
}
