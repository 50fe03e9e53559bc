//! Who may reach which endpoint: a scanner presents a credential (the password) and names an
//! endpoint (the username, by name or id) of the same gateway. No anonymous access. Whether the
//! endpoint's access currently allows that credential is `access::stream_allowed`.

use ism_actors::credentials::{secret_id, verify_secret, SecretKind};
use ism_projectors::directory::ScannerCredentialRow;
use ism_projectors::{DirectoryProjection, EndpointView};
use uuid::Uuid;

/// A scanner that proved its credential and named an endpoint of the credential's gateway.
#[derive(Debug)]
pub struct AuthorisedScanner {
    pub credential_id: Uuid,
    pub credential: ScannerCredentialRow,
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

/// Why a scanner was refused. Logged on the gateway; the scanner only learns that it failed.
#[derive(Debug, thiserror::Error)]
pub enum ScannerAuthError {
    #[error("the password is not a scanner credential")]
    Malformed,
    #[error("unknown scanner credential {0}")]
    UnknownCredential(Uuid),
    #[error("wrong secret for scanner credential {0}")]
    WrongSecret(Uuid),
    #[error("scanner credential {0} was revoked (or its gateway deleted)")]
    Revoked(Uuid),
    #[error("gateway {gateway} has no endpoint {username:?}")]
    UnknownEndpoint { gateway: Uuid, username: String },
    #[error("directory unavailable: {0}")]
    Directory(String),
}

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
        return Err(ScannerAuthError::WrongSecret(credential_id));
    }
    if credential.revoked {
        return Err(ScannerAuthError::Revoked(credential_id));
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
    .ok_or_else(|| ScannerAuthError::UnknownEndpoint { gateway, username: username.to_string() })?;
    Ok(AuthorisedScanner { credential_id, credential, endpoint })
}
