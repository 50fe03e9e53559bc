//! Who is calling, and what they may do. A bearer token is either the node's bootstrap
//! administrator token or a user's API token; the caller's name goes into every event it causes.
//! Administrators and Security Leads manage gateways and endpoints; Reviewers read; only
//! Administrators manage users.

use super::ApiError;
use crate::state::NodeState;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use ism_actors::credentials::{
    constant_time_eq, hash_secret, secret_id, verify_secret, SecretKind,
};
use ism_events::escaped;
use ism_events::{Cause, Principal, UserRole};
use std::future::{ready, Ready};
use std::sync::Arc;

/// The authenticated caller.
pub struct Caller {
    pub name: String,
    pub role: UserRole,
    /// Who the caller is in the events it causes: a user, or the bootstrap administrator.
    pub principal: Principal,
}

impl Caller {
    /// The cause of the commands this request runs: the caller, and the request's span (so the
    /// events join its trace).
    pub fn cause(&self) -> Cause {
        let mut cause = Cause::by(self.principal.clone());
        cause.trace = ism_telemetry::context::current().map(|t| t.to_string());
        cause
    }

    /// Only Administrators and Security Leads may change gateways, endpoints, keys and access.
    pub fn may_manage(&self) -> Result<(), ApiError> {
        if self.role.may_manage() {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("user {:?} is a {}: only Administrators and Security Leads may change gateways and endpoints", self.name, self.role.as_str()),
            ))
        }
    }

    /// Only Administrators manage users and verify projections.
    pub fn must_be_administrator(&self) -> Result<(), ApiError> {
        if self.role == UserRole::Administrator {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "user {:?} is a {}: only Administrators may do this",
                    self.name,
                    self.role.as_str()
                ),
            ))
        }
    }
}

fn authenticate(state: &NodeState, token: &str) -> Result<Caller, ApiError> {
    let invalid = || ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token");
    if constant_time_eq(hash_secret(token).as_bytes(), state.admin_token_hash.as_bytes()) {
        return Ok(Caller {
            name: "admin".into(),
            role: UserRole::Administrator,
            principal: Principal::BootstrapAdmin,
        });
    }
    let id = secret_id(SecretKind::ApiToken, token).map_err(|_| invalid())?;
    let row = state.directory.api_token(id)?.ok_or_else(invalid)?;
    if row.revoked || !verify_secret(token, &row.token_hash) {
        return Err(invalid());
    }
    let user = state.directory.user(row.user)?.ok_or_else(invalid)?;
    Ok(Caller { principal: Principal::user(user.name.clone()), name: user.name, role: user.role })
}

/// Counts and (within [`crate::log_pace`]'s pace) logs a request refused for its bearer token.
fn token_refused(state: &NodeState, req: &HttpRequest, reason: &'static str) {
    state.metrics.api_token_refused(reason);
    if let Some(refused) = state.refusal_logs.api_tokens.refused(reason, state.clock.now_ms()) {
        let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        tracing::warn!(
            %peer,
            method = %req.method(),
            path = %escaped(req.path()),
            reason,
            refused_since_last_line = refused,
            "API request refused for its bearer token",
        );
    }
}

/// The token of an `Authorization` header of the Bearer scheme, whose name is case-insensitive
/// (RFC 9110, section 11.1): `bearer x` is as good as `Bearer x`.
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<Arc<NodeState>>>().expect("node state registered");
        let token =
            req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(bearer);
        let caller = match token {
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing bearer token: send 'Authorization: Bearer <token>'",
            )),
            Some(t) => authenticate(state, t),
        };
        if let Err(e) = &caller {
            if e.status == StatusCode::UNAUTHORIZED {
                token_refused(state, req, if token.is_none() { "missing" } else { "invalid" });
            }
        }
        ready(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer t", "bearer t", "BEARER  t ", " bEaReR t"] {
            assert_eq!(bearer(header), Some("t"), "{header:?}");
        }
        for header in ["Basic t", "Bearer", "Bearert", "t"] {
            assert_eq!(bearer(header), None, "{header:?}");
        }
    }
}
