//! Who may reach which endpoint: a scanner presents a credential (the password) and names an
//! endpoint (the username, by name or id) of the same gateway. No anonymous access. Whether the
//! endpoint's access currently allows that credential is `access::stream_allowed`.

use crate::refused_scanners::{clamped_name, RefusedScanners, TurnedAway};
use ism_actors::credentials::{secret_id, verify_secret, SecretKind};
use ism_projectors::{DirectoryProjection, EndpointView};
use uuid::Uuid;

/// A scanner that proved its credential and named an endpoint of the credential's gateway.
#[derive(Debug)]
pub struct AuthorisedScanner {
    /// The credential, looked up afresh at each admission ([`crate::access::current_credential`]).
    pub credential_id: Uuid,
    pub endpoint: EndpointView,
}

impl AuthorisedScanner {
    /// How the scanner appears in events: the credential id, never the secret.
    pub fn audit_name(&self) -> String {
        self.principal().to_string()
    }

    /// The scanner as the cause of what it does.
    pub fn principal(&self) -> ism_events::Principal {
        ism_events::Principal::Credential { id: self.credential_id.simple().to_string() }
    }
}

impl ScannerAuthError {
    /// The gateway the refused credential belongs to, when it is known (the refusal is then
    /// recorded on it), and the kind of refusal in a few words, the same for every one of a kind.
    pub fn gateway_and_class(&self) -> Option<(Uuid, &'static str)> {
        match self {
            ScannerAuthError::WrongSecret { gateway, .. } => Some((*gateway, "wrong secret")),
            ScannerAuthError::Revoked { gateway, .. } => Some((*gateway, "revoked credential")),
            ScannerAuthError::UnknownEndpoint { gateway, .. } => {
                Some((*gateway, "no such endpoint in the gateway"))
            }
            ScannerAuthError::Malformed
            | ScannerAuthError::UnknownCredential(_)
            | ScannerAuthError::Directory(_) => None,
        }
    }

    /// The credential presented, when the password was one.
    pub fn credential(&self) -> Option<Uuid> {
        match self {
            ScannerAuthError::WrongSecret { credential, .. }
            | ScannerAuthError::Revoked { credential, .. }
            | ScannerAuthError::UnknownEndpoint { credential, .. }
            | ScannerAuthError::UnknownCredential(credential) => Some(*credential),
            ScannerAuthError::Malformed | ScannerAuthError::Directory(_) => None,
        }
    }
}

/// Records `error` on the credential's gateway when it names one (a scanner that knocked with a
/// password that is no credential of ours names none: it is only logged).
pub fn record_refusal(refused: &RefusedScanners, error: &ScannerAuthError, username: &str) {
    if let (Some((gateway, class)), Some(credential)) =
        (error.gateway_and_class(), error.credential())
    {
        refused.refused(TurnedAway {
            gateway,
            scanner: ism_events::Principal::Credential { id: credential.simple().to_string() },
            endpoint: username,
            class,
            reason: error.to_string(),
        });
    }
}

/// Why a scanner was refused. Logged on the gateway; the scanner only learns that it failed.
#[derive(Debug, thiserror::Error)]
pub enum ScannerAuthError {
    #[error("the password is not a scanner credential")]
    Malformed,
    #[error("unknown scanner credential {0}")]
    UnknownCredential(Uuid),
    #[error("wrong secret for scanner credential {credential}")]
    WrongSecret { credential: Uuid, gateway: Uuid },
    #[error("scanner credential {credential} was revoked (or its gateway deleted)")]
    Revoked { credential: Uuid, gateway: Uuid },
    #[error("gateway {gateway} has no endpoint {username:?}")]
    UnknownEndpoint { gateway: Uuid, credential: Uuid, username: String },
    #[error("directory unavailable: {0}")]
    Directory(String),
}

/// Which endpoint the scanner presenting `username` and `password` may reach (a
/// `scanner.authorise` span of its connection).
#[tracing::instrument(name = "scanner.authorise", skip_all)]
pub fn authorise(
    directory: &DirectoryProjection,
    username: &str,
    password: &str,
) -> Result<AuthorisedScanner, ScannerAuthError> {
    let credential_id = secret_id(SecretKind::ScannerCredential, password)
        .map_err(|_| ScannerAuthError::Malformed)?;
    let dir = |e: ism_events::ProjectionError| ScannerAuthError::Directory(e.to_string());
    let credential = directory
        .scanner_credential(credential_id)
        .map_err(dir)?
        .ok_or(ScannerAuthError::UnknownCredential(credential_id))?;
    if !verify_secret(password, &credential.secret_hash) {
        return Err(ScannerAuthError::WrongSecret {
            credential: credential_id,
            gateway: credential.gateway,
        });
    }
    if credential.revoked {
        return Err(ScannerAuthError::Revoked {
            credential: credential_id,
            gateway: credential.gateway,
        });
    }
    let gateway = credential.gateway;
    let by_id = Uuid::try_parse(username)
        .ok()
        .map(|id| directory.endpoint(id))
        .transpose()
        .map_err(dir)?
        .flatten();
    let endpoint = match by_id {
        Some(e) => Some(e),
        None => directory.endpoint_by_name(gateway, username).map_err(dir)?,
    }
    .filter(|e| e.gateway == gateway)
    .ok_or_else(|| ScannerAuthError::UnknownEndpoint {
        gateway,
        credential: credential_id,
        // Cut as the recorded endpoint is: the refusal's reason is logged and recorded too.
        username: clamped_name(username).into_owned(),
    })?;
    Ok(AuthorisedScanner { credential_id, endpoint })
}
