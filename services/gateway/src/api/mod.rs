//! The management REST API: gateways, endpoints, keys, access, scanner credentials, users, audit,
//! the cluster's nodes, scans.
//!
//! Webhooks and the notifications recorded are in `webhooks`.
//!
//! Every request is authorised (a bearer token; `auth`). A change goes REST handler -> actor
//! command -> event appended -> directory updated; the handler waits until the directory shows
//! its own write before answering, so a client that creates something can list it at once.
//! Errors are JSON `{"success": false, "error": "..."}` with a 4xx/5xx status that says whose
//! fault it is. The contract is `openapi.json` (served at `/api/v1/openapi.json`), which the
//! tests check every response against.

mod audit;
mod auth;
mod endpoints;
mod gateways;
mod metrics;
mod nodes;
pub mod request_span;
mod scans;
mod users;
mod views;
mod web_page;
mod webhooks;

use crate::state::NodeState;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, Resource, ResponseError, Route};
use ism_actors::endpoint::EndpointError;
use ism_actors::gateway::GatewayError;
use ism_actors::roster::RosterError;
use ism_actors::scan::ScanError;
use ism_actors::user::UserError;
use ism_actors::webhook::WebhookError;
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

/// Why a request's JSON body was not read, with the status that says so: a client that sent too
/// much, or not JSON at all, learns that rather than "malformed".
fn body_refused(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as Refused;
    match err {
        Refused::Overflow { .. } | Refused::OverflowKnownLength { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} KiB", MAX_BODY / 1024),
        ),
        Refused::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body must be JSON, sent with Content-Type: application/json",
        ),
        err => ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {err}")),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default().limit(MAX_BODY).error_handler(|err, _| body_refused(err).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|err, _| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no such resource: {err}")).into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("bad query: {err}")).into()
    }))
    .service(resource(
        "/healthz",
        [(
            Method::GET,
            web::to(|| async { HttpResponse::Ok().content_type("text/plain").body("ok\n") }),
        )],
    ))
    .service(resource("/metrics", [(Method::GET, web::to(metrics::scrape))]))
    .service(resource("/", [(Method::GET, web::to(web_page::index))]))
    .service(resource("/assets/app.js", [(Method::GET, web::to(web_page::script))]))
    .service(resource("/assets/app.css", [(Method::GET, web::to(web_page::style))]))
    // For a load balancer: 503 until the node knows the cluster and while it drains, so that new
    // connections go elsewhere.
    .service(resource(
        "/ready",
        [(
            Method::GET,
            web::to(|state: State| async move {
                if state.cluster.is_ready() {
                    HttpResponse::Ok().content_type("text/plain").body("ready\n")
                } else if state.cluster.is_draining() {
                    HttpResponse::ServiceUnavailable().content_type("text/plain").body("draining\n")
                } else {
                    HttpResponse::ServiceUnavailable().content_type("text/plain").body("joining\n")
                }
            }),
        )],
    ))
    .service(
        web::scope("/api/v1")
            .service(resource(
                "/openapi.json",
                [(
                    Method::GET,
                    web::to(|| async {
                        HttpResponse::Ok().content_type("application/json").body(OPENAPI)
                    }),
                )],
            ))
            .service(resource("/status", [(Method::GET, web::to(audit::status))]))
            .service(resource("/me", [(Method::GET, web::to(users::me))]))
            .service(resource("/audit", [(Method::GET, web::to(audit::timeline))]))
            .service(resource("/audit/stream", [(Method::GET, web::to(audit::stream))]))
            .service(resource(
                "/projections/verify",
                [(Method::POST, web::to(audit::verify_projections))],
            ))
            .service(resource(
                "/gateways",
                [(Method::GET, web::to(gateways::list)), (Method::POST, web::to(gateways::create))],
            ))
            .service(resource(
                "/deleted-gateways",
                [(Method::GET, web::to(gateways::list_deleted))],
            ))
            .service(resource(
                "/gateways/{id}",
                [
                    (Method::GET, web::to(gateways::show)),
                    (Method::DELETE, web::to(gateways::delete)),
                ],
            ))
            .service(resource(
                "/gateways/{id}/scanner-credentials",
                [(Method::POST, web::to(gateways::issue_credential))],
            ))
            .service(resource(
                "/gateways/{id}/scanner-credentials/{credential}",
                [(Method::DELETE, web::to(gateways::revoke_credential))],
            ))
            .service(resource(
                "/gateways/{id}/endpoints",
                [(Method::GET, web::to(endpoints::list)), (Method::POST, web::to(endpoints::add))],
            ))
            .service(resource(
                "/endpoints/{id}",
                [
                    (Method::GET, web::to(endpoints::show)),
                    (Method::PATCH, web::to(endpoints::edit)),
                    (Method::DELETE, web::to(endpoints::delete)),
                ],
            ))
            .service(resource("/endpoints/{id}/key", [(Method::GET, web::to(endpoints::key))]))
            .service(resource(
                "/endpoints/{id}/key/rotate",
                [(Method::POST, web::to(endpoints::rotate_key))],
            ))
            .service(resource(
                "/endpoints/{id}/access",
                [(Method::PUT, web::to(endpoints::set_access))],
            ))
            .service(resource(
                "/endpoints/{id}/unbind",
                [(Method::POST, web::to(endpoints::unbind))],
            ))
            .service(resource(
                "/scans",
                [(Method::GET, web::to(scans::list)), (Method::POST, web::to(scans::start))],
            ))
            .service(resource("/scans/{id}", [(Method::GET, web::to(scans::show))]))
            .service(resource("/scans/{id}/cancel", [(Method::POST, web::to(scans::cancel))]))
            .service(resource("/scans/{id}/report", [(Method::GET, web::to(scans::report))]))
            .service(resource("/nodes", [(Method::GET, web::to(nodes::list))]))
            .service(resource("/nodes/{node}/drain", [(Method::POST, web::to(nodes::drain))]))
            .service(resource(
                "/users",
                [(Method::GET, web::to(users::list)), (Method::POST, web::to(users::create))],
            ))
            .service(resource("/users/{name}", [(Method::PATCH, web::to(users::edit))]))
            .service(resource(
                "/webhooks",
                [(Method::GET, web::to(webhooks::list)), (Method::POST, web::to(webhooks::add))],
            ))
            .service(resource("/webhooks/{id}", [(Method::DELETE, web::to(webhooks::remove))]))
            .service(resource("/notifications", [(Method::GET, web::to(webhooks::notifications))]))
            .service(resource(
                "/users/{name}/tokens",
                [(Method::POST, web::to(users::issue_token))],
            ))
            .service(resource(
                "/users/{name}/tokens/{token}",
                [(Method::DELETE, web::to(users::revoke_token))],
            )),
    )
    .default_service(web::to(|| async {
        ApiError::new(StatusCode::NOT_FOUND, "no such API route").error_response()
    }));
}

/// A path and the methods it answers. Another method gets 405 with an `Allow` header naming them
/// (RFC 9110, section 15.5.6), not the 404 of a path that does not exist.
fn resource<const N: usize>(path: &str, routes: [(Method, Route); N]) -> Resource {
    let allow = routes.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>().join(", ");
    let resource =
        routes.into_iter().fold(web::resource(path), |r, (m, route)| r.route(route.method(m)));
    resource.default_service(web::to(move |req: HttpRequest| {
        let allow = allow.clone();
        async move {
            let message = format!("{} is not allowed here: use {allow}", req.method());
            let mut response =
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message).error_response();
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
    }))
}

/// A response that shows a secret (an endpoint key, an API token, a scanner credential, a
/// webhook's signing secret): `Cache-Control: no-store`, so that no browser or proxy cache keeps
/// a copy of what is meant to be shown once, to this caller only.
fn secret_response(status: StatusCode, body: serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(header::CacheControl(vec![header::CacheDirective::NoStore]))
        .json(body)
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
trait HttpStatus: std::error::Error + 'static {
    fn status(&self) -> StatusCode;
}

impl HttpStatus for GatewayError {
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

impl HttpStatus for EndpointError {
    fn status(&self) -> StatusCode {
        match self {
            EndpointError::AlreadyExists(_)
            | EndpointError::KeyGeneration { .. }
            | EndpointError::TokenAlreadyRegistered => StatusCode::CONFLICT,
            EndpointError::NotFound(_) => StatusCode::NOT_FOUND,
            EndpointError::Invalid(_)
            | EndpointError::SupportWindow(_)
            | EndpointError::ScanCapacity(_) => StatusCode::BAD_REQUEST,
            EndpointError::InvalidKey => StatusCode::UNAUTHORIZED,
        }
    }
}

impl HttpStatus for UserError {
    fn status(&self) -> StatusCode {
        match self {
            UserError::AlreadyExists(_) => StatusCode::CONFLICT,
            UserError::NotFound(_) | UserError::UnknownToken(_) => StatusCode::NOT_FOUND,
            UserError::Spaces
            | UserError::Reserved(_)
            | UserError::Invalid(_)
            | UserError::BadEmail(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl HttpStatus for WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            WebhookError::AlreadyExists(_) => StatusCode::CONFLICT,
            WebhookError::NotFound(_) => StatusCode::NOT_FOUND,
            WebhookError::BadUrl(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl HttpStatus for ScanError {
    fn status(&self) -> StatusCode {
        match self {
            ScanError::AlreadyExists(_)
            | ScanError::NotQueued { .. }
            | ScanError::NotRunning { .. }
            | ScanError::Ended { .. } => StatusCode::CONFLICT,
            ScanError::NotFound(_) => StatusCode::NOT_FOUND,
            ScanError::BadSettings(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl<E: HttpStatus> From<CommandError<E>> for ApiError {
    fn from(e: CommandError<E>) -> Self {
        let status = match &e {
            CommandError::Rejected(r) => r.status(),
            CommandError::Stale { .. } | CommandError::Contended(_) => StatusCode::CONFLICT,
            CommandError::Log(_) | CommandError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

impl From<RosterError> for ApiError {
    fn from(e: RosterError) -> Self {
        match e {
            RosterError::Gateway(e) => e.into(),
            RosterError::Endpoint(e) => e.into(),
        }
    }
}

/// Parses a path segment that must be an id.
fn parse_id(what: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::not_found(what, format!("{raw:?}")))
}
