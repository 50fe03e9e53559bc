//! The management REST API: gateways, endpoints, keys, access, scanner credentials, users, audit.
//!
//! Every request is authorised (a bearer token; [`auth`]). A change goes REST handler -> actor
//! command -> event appended -> directory updated; the handler waits until the directory shows
//! its own write before answering, so a client that creates something can list it at once.
//! Errors are JSON `{"success": false, "error": "..."}` with a 4xx/5xx status that says whose
//! fault it is. The contract is `openapi.json` (served at `/api/v1/openapi.json`), which the
//! tests check every response against.

mod audit;
mod auth;
mod endpoints;
mod gateways;
mod users;
mod views;

use crate::state::NodeState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use ism_actors::endpoint::EndpointError;
use ism_actors::gateway::GatewayError;
use ism_actors::user::UserError;
use ism_actors::CommandError;
use ism_events::ProjectionError;
use std::sync::Arc;
use uuid::Uuid;

pub use auth::Caller;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Largest JSON body accepted.
const MAX_BODY: usize = 64 * 1024;

type State = web::Data<Arc<NodeState>>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(MAX_BODY).error_handler(|err, _| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {err}")).into()
    }))
    .app_data(web::PathConfig::default().error_handler(|err, _| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no such resource: {err}")).into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("bad query: {err}")).into()
    }))
    .route(
        "/healthz",
        web::get().to(|| async { HttpResponse::Ok().content_type("text/plain").body("ok\n") }),
    )
    .service(
        web::scope("/api/v1")
            .route(
                "/openapi.json",
                web::get().to(|| async {
                    HttpResponse::Ok().content_type("application/json").body(OPENAPI)
                }),
            )
            .route("/status", web::get().to(audit::status))
            .route("/me", web::get().to(users::me))
            .route("/audit", web::get().to(audit::timeline))
            .route("/projections/verify", web::post().to(audit::verify_projections))
            .route("/gateways", web::get().to(gateways::list))
            .route("/gateways", web::post().to(gateways::create))
            .route("/deleted-gateways", web::get().to(gateways::list_deleted))
            .route("/gateways/{id}", web::get().to(gateways::show))
            .route("/gateways/{id}", web::delete().to(gateways::delete))
            .route("/gateways/{id}/scanner-credentials", web::post().to(gateways::issue_credential))
            .route(
                "/gateways/{id}/scanner-credentials/{credential}",
                web::delete().to(gateways::revoke_credential),
            )
            .route("/gateways/{id}/endpoints", web::get().to(endpoints::list))
            .route("/gateways/{id}/endpoints", web::post().to(endpoints::add))
            .route("/endpoints/{id}", web::get().to(endpoints::show))
            .route("/endpoints/{id}", web::patch().to(endpoints::edit))
            .route("/endpoints/{id}", web::delete().to(endpoints::delete))
            .route("/endpoints/{id}/key", web::get().to(endpoints::key))
            .route("/endpoints/{id}/key/rotate", web::post().to(endpoints::rotate_key))
            .route("/endpoints/{id}/access", web::put().to(endpoints::set_access))
            .route("/users", web::get().to(users::list))
            .route("/users", web::post().to(users::create))
            .route("/users/{name}", web::patch().to(users::change_role))
            .route("/users/{name}/tokens", web::post().to(users::issue_token))
            .route("/users/{name}/tokens/{token}", web::delete().to(users::revoke_token)),
    )
    .default_service(web::to(|| async {
        ApiError::new(StatusCode::NOT_FOUND, "no such API route").error_response()
    }));
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
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
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
        HttpResponse::build(self.status)
            .json(serde_json::json!({ "success": false, "error": self.message }))
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("directory unavailable: {e}"))
    }
}

impl From<ism_events::LogError> for ApiError {
    fn from(e: ism_events::LogError) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<ism_actors::text::TextError> for ApiError {
    fn from(e: ism_actors::text::TextError) -> Self {
        Self::bad_request(e.to_string())
    }
}

/// How an aggregate's refusal maps onto HTTP.
trait Refusal: std::error::Error + 'static {
    fn status(&self) -> StatusCode;
}

impl Refusal for GatewayError {
    fn status(&self) -> StatusCode {
        match self {
            GatewayError::AlreadyExists(_)
            | GatewayError::DuplicateName { .. }
            | GatewayError::HasEndpoints { .. } => StatusCode::CONFLICT,
            GatewayError::NotFound(_) | GatewayError::UnknownCredential(_) => StatusCode::NOT_FOUND,
            GatewayError::Deleted(_) => StatusCode::GONE,
            GatewayError::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl Refusal for EndpointError {
    fn status(&self) -> StatusCode {
        match self {
            EndpointError::AlreadyExists(_) | EndpointError::KeyGeneration { .. } => {
                StatusCode::CONFLICT
            }
            EndpointError::NotFound(_) => StatusCode::NOT_FOUND,
            EndpointError::Invalid(_) | EndpointError::SupportWindow(_) => StatusCode::BAD_REQUEST,
            EndpointError::InvalidKey => StatusCode::UNAUTHORIZED,
        }
    }
}

impl Refusal for UserError {
    fn status(&self) -> StatusCode {
        match self {
            UserError::AlreadyExists(_) => StatusCode::CONFLICT,
            UserError::NotFound(_) | UserError::UnknownToken(_) => StatusCode::NOT_FOUND,
            UserError::Spaces | UserError::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl<E: Refusal> From<CommandError<E>> for ApiError {
    fn from(e: CommandError<E>) -> Self {
        let status = match &e {
            CommandError::Rejected(r) => r.status(),
            CommandError::Stale { .. } | CommandError::Contended(_) => StatusCode::CONFLICT,
            CommandError::Log(_) | CommandError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

/// Parses a path segment that must be an id.
fn parse_id(what: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::not_found(what, format!("{raw:?}")))
}
