//! Who may use an endpoint right now: the one rule, used when a scanner opens a stream and again
//! whenever access changes while it runs (see [`crate::enforcement`]).
//!
//! The endpoint must exist, the credential must not be revoked, and the endpoint's *scan access*
//! (for scan credentials and the built-in engine's scans) or *support-engineer access* (for
//! support credentials) must be on.

use ism_events::CredentialKind;
use ism_projectors::directory::{ScanView, ScannerCredentialRow};
use ism_projectors::{DirectoryProjection, EndpointView};
use uuid::Uuid;

/// Why a stream may not run through an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    #[error("endpoint {0} no longer exists")]
    EndpointGone(Uuid),
    #[error("the scanner credential was revoked")]
    CredentialRevoked,
    #[error("scan access is disabled for endpoint {0:?}")]
    ScanAccessOff(String),
    #[error("support-engineer access is not granted for endpoint {0:?}")]
    SupportAccessOff(String),
    #[error("the scanner credential belongs to another gateway than the endpoint's")]
    OtherGateway,
    #[error("a relayed stream named no scanner credential")]
    NotACredential,
}

/// A scan of the built-in engine as the scanner credential its streams run under (its id is the
/// scan's): it needs scan access, and stops working once the scan has ended.
pub fn scan_credential(scan: &ScanView) -> ScannerCredentialRow {
    ScannerCredentialRow {
        gateway: scan.gateway,
        secret_hash: String::new(),
        kind: CredentialKind::Scan,
        revoked: !scan.status.is_active(),
    }
}

/// The credential `id` as the directory holds it now: a scanner credential, or a scan of the
/// built-in engine (whose streams run under the scan's id). Both admission's last check and
/// enforcement read it afresh, since a credential revoked after its scanner logged in must not
/// open streams with the row read at login. `None` when neither exists (or the directory cannot be
/// read): no stream may run under it.
pub fn current_credential(
    directory: &DirectoryProjection,
    id: Uuid,
) -> Option<ScannerCredentialRow> {
    directory
        .scanner_credential(id)
        .ok()
        .flatten()
        .or_else(|| directory.scan(id).ok().flatten().map(|s| scan_credential(&s)))
}

/// May a stream with `credential` run through `endpoint` (looked up as `endpoint_id`) at
/// `now_ms`?
pub fn stream_allowed(
    endpoint: Option<&EndpointView>,
    credential: &ScannerCredentialRow,
    endpoint_id: Uuid,
    now_ms: i64,
) -> Result<(), AccessDenied> {
    let e = endpoint.filter(|e| !e.deleted).ok_or(AccessDenied::EndpointGone(endpoint_id))?;
    if credential.revoked {
        return Err(AccessDenied::CredentialRevoked);
    }
    match credential.kind {
        CredentialKind::Scan if !e.scan_access => Err(AccessDenied::ScanAccessOff(e.name.clone())),
        CredentialKind::Support if !e.support_access.is_active(now_ms) => {
            Err(AccessDenied::SupportAccessOff(e.name.clone()))
        }
        CredentialKind::Scan | CredentialKind::Support => Ok(()),
    }
}

/// May a stream relayed by another node of the cluster, for the credential `credential_id` as
/// this node's directory holds it (`credential`), run through `endpoint`, which this node holds?
/// The ingress node checked already and keeps enforcing; this is the owner's own check, so that a
/// relayed open is held to the rule here too (a credential revoked or access withdrawn while the
/// open travelled, or a peer naming what it should not). A credential this node's directory does
/// not know yet (issued a moment ago, its event still on its way) is let through: the ingress
/// node has checked it, and the peer is a node of the cluster (mutual TLS).
pub fn relayed_stream_allowed(
    endpoint: Option<&EndpointView>,
    credential: Option<&ScannerCredentialRow>,
    endpoint_id: Uuid,
    now_ms: i64,
) -> Result<(), AccessDenied> {
    let Some(credential) = credential else { return Ok(()) };
    if endpoint.is_some_and(|e| e.gateway != credential.gateway) {
        return Err(AccessDenied::OtherGateway);
    }
    stream_allowed(endpoint, credential, endpoint_id, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_events::{Platform, SupportAccess};
    use ism_projectors::EndpointStatus;

    fn endpoint(scan_access: bool, support_access: SupportAccess, deleted: bool) -> EndpointView {
        EndpointView {
            id: Uuid::nil(),
            version: 1,
            gateway: Uuid::nil(),
            name: "dc1".into(),
            description: String::new(),
            platform: Platform::Linux,
            key_generation: 1,
            key_hash: "h".into(),
            status: EndpointStatus::Ready,
            scan_access,
            scan_capacity: None,
            support_access,
            machine: None,
            hostname: None,
            agent_version: None,
            agent_platform: None,
            open_tunnels: Vec::new(),
            node: None,
            connected_since_ms: None,
            last_disconnected_ms: None,
            last_refusal: None,
            deleted,
        }
    }

    fn credential(kind: CredentialKind, revoked: bool) -> ScannerCredentialRow {
        ScannerCredentialRow { gateway: Uuid::nil(), secret_hash: "h".into(), kind, revoked }
    }

    #[test]
    fn the_rule_for_every_combination_that_matters() {
        use AccessDenied::*;
        use CredentialKind::{Scan, Support};
        use SupportAccess::{Indefinite, Off, Until};
        let gone = Err(EndpointGone(Uuid::nil()));
        let cases: Vec<(Option<EndpointView>, ScannerCredentialRow, Result<(), AccessDenied>)> = vec![
            (None, credential(Scan, false), gone.clone()),
            (Some(endpoint(true, Off, true)), credential(Scan, false), gone),
            (Some(endpoint(true, Off, false)), credential(Scan, true), Err(CredentialRevoked)),
            (Some(endpoint(true, Off, false)), credential(Scan, false), Ok(())),
            (
                Some(endpoint(false, Indefinite, false)),
                credential(Scan, false),
                Err(ScanAccessOff("dc1".into())),
            ),
            (
                Some(endpoint(false, Off, false)),
                credential(Support, false),
                Err(SupportAccessOff("dc1".into())),
            ),
            (Some(endpoint(false, Indefinite, false)), credential(Support, false), Ok(())),
            (Some(endpoint(true, Until(100), false)), credential(Support, false), Ok(())),
            (
                Some(endpoint(true, Until(50), false)),
                credential(Support, false),
                Err(SupportAccessOff("dc1".into())),
            ),
            (
                Some(endpoint(true, Indefinite, false)),
                credential(Support, true),
                Err(CredentialRevoked),
            ),
        ];
        for (endpoint, credential, expected) in cases {
            let got = stream_allowed(endpoint.as_ref(), &credential, Uuid::nil(), 50);
            assert_eq!(got, expected, "{endpoint:?} with {credential:?}");
        }
    }

    #[test]
    fn a_relayed_stream_is_held_to_the_rule_on_the_owner_too() {
        use CredentialKind::Scan;
        use SupportAccess::Off;
        let open = endpoint(true, Off, false);
        let now = 0;
        let revoked = credential(Scan, true);
        assert_eq!(
            relayed_stream_allowed(Some(&open), Some(&revoked), Uuid::nil(), now),
            Err(AccessDenied::CredentialRevoked)
        );
        let closed = endpoint(false, Off, false);
        let fine = credential(Scan, false);
        assert!(relayed_stream_allowed(Some(&closed), Some(&fine), Uuid::nil(), now).is_err());
        let elsewhere = ScannerCredentialRow { gateway: Uuid::from_u128(7), ..fine.clone() };
        assert_eq!(
            relayed_stream_allowed(Some(&open), Some(&elsewhere), Uuid::nil(), now),
            Err(AccessDenied::OtherGateway)
        );
        assert_eq!(relayed_stream_allowed(Some(&open), Some(&fine), Uuid::nil(), now), Ok(()));
        // Not known here yet: the ingress node's check stands.
        assert_eq!(relayed_stream_allowed(Some(&open), None, Uuid::nil(), now), Ok(()));
    }
}
