//! The scan's TLS client: it verifies the server's certificate as a browser would, records what
//! is wrong with it, and goes on anyway, so an internal app with a self-signed certificate is
//! still crawled and the certificate becomes a finding instead of a dead end.
//!
//! rustls with the ring provider only (a second provider in the process breaks
//! tokio-tungstenite), roots from webpki-roots, TLS 1.2 and 1.3: a server that only speaks an
//! older protocol fails the handshake, which [`is_below_tls_1_2`] recognises.

use crate::checks::{CertProblem, TlsFacts};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, PeerIncompatible,
    RootCertStore, SignatureScheme,
};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why a TLS handshake failed (certificate problems never fail it).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The server only speaks a protocol older than TLS 1.2.
    #[error("TLS handshake failed: {0}")]
    BelowTls12(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("TLS set-up: {0}")]
    Setup(String),
}

/// What every TLS connection of one scan shares: the provider and the verifier of public roots.
#[derive(Debug, Clone)]
pub struct TlsClient {
    provider: Arc<CryptoProvider>,
    verifier: Arc<WebPkiServerVerifier>,
}

impl TlsClient {
    pub fn new() -> Result<TlsClient, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        Ok(TlsClient { provider, verifier })
    }

    /// A TLS session over `io` with `name`, and what the certificate check found.
    pub async fn connect<Io>(
        &self,
        io: Io,
        name: ServerName<'static>,
    ) -> Result<(TlsStream<Io>, TlsFacts), TlsError>
    where
        Io: AsyncRead + AsyncWrite + Unpin,
    {
        let problems = Arc::new(Mutex::new(Vec::new()));
        let recorder = RecordingVerifier {
            inner: self.verifier.clone(),
            provider: self.provider.clone(),
            problems: problems.clone(),
        };
        // One configuration per connection: its verifier records into this connection's slot,
        // and no session is resumed (a resumed session would skip the certificate check).
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(recorder))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let stream = TlsConnector::from(Arc::new(config)).connect(name, io).await.map_err(|e| {
            let below = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(is_below_tls_1_2);
            if below {
                TlsError::BelowTls12(e.to_string())
            } else {
                TlsError::Handshake(e.to_string())
            }
        })?;
        let problems = std::mem::take(&mut *problems.lock().unwrap_or_else(|p| p.into_inner()));
        Ok((stream, TlsFacts { problems }))
    }
}

/// Whether the handshake failed because the server offered (or asked for) a protocol older
/// than TLS 1.2: its ServerHello named an old version, or it sent a protocol_version alert.
pub fn is_below_tls_1_2(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)
            | rustls::Error::PeerIncompatible(
                PeerIncompatible::ServerDoesNotSupportTls12Or13
                    | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            )
    )
}

/// Verifies like [`WebPkiServerVerifier`], records the problems, and accepts the certificate.
/// The handshake signatures are still checked by the inner verifier: the server must hold the
/// key of the certificate it showed.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
    problems: Arc<Mutex<Vec<CertProblem>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Presented { end_entity, intermediates, server_name, ocsp_response };
        let found = diagnose(&self.inner, &self.provider, &presented, now);
        *self.problems.lock().unwrap_or_else(|p| p.into_inner()) = found;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What the server showed in its handshake.
struct Presented<'a> {
    end_entity: &'a CertificateDer<'a>,
    intermediates: &'a [CertificateDer<'a>],
    server_name: &'a ServerName<'a>,
    ocsp_response: &'a [u8],
}

/// Every problem of the presented certificate, not only the first: webpki stops at the first
/// error, so each one found is set aside and the check runs again past it (at a time within the
/// validity period, trusting the certificate itself or the chain the server sent) to learn
/// whether the name would also have been wrong.
fn diagnose(
    verifier: &Arc<WebPkiServerVerifier>,
    provider: &Arc<CryptoProvider>,
    cert: &Presented<'_>,
    now: UnixTime,
) -> Vec<CertProblem> {
    let verify = |v: &WebPkiServerVerifier, now: UnixTime, ocsp: &[u8]| {
        v.verify_server_cert(cert.end_entity, cert.intermediates, cert.server_name, ocsp, now).err()
    };
    let mut problems = Vec::new();
    let (mut verifier, mut now, mut ocsp) = (verifier.clone(), now, cert.ocsp_response);
    let mut anchors_tried = false;
    // Each pass removes one cause; six passes cover time, issuer and name with room to spare.
    for _ in 0..6 {
        let Some(error) = verify(&verifier, now, ocsp) else { break };
        let text = error.to_string();
        let rustls::Error::InvalidCertificate(cert_error) = error else {
            problems.push(CertProblem::Invalid(text));
            break;
        };
        match cert_error {
            CertificateError::ExpiredContext { not_after, .. } => {
                problems.push(CertProblem::Expired(text));
                now = not_after;
            }
            CertificateError::NotValidYetContext { not_before, .. } => {
                problems.push(CertProblem::NotYetValid(text));
                now = not_before;
            }
            CertificateError::Expired => {
                problems.push(CertProblem::Expired(text));
                break;
            }
            CertificateError::NotValidYet => {
                problems.push(CertProblem::NotYetValid(text));
                break;
            }
            CertificateError::UnknownIssuer if !anchors_tried => {
                anchors_tried = true;
                ocsp = &[];
                // Only the name is left to check once a chain is built (the time is already
                // within the validity period).
                let chain_built = |v: &Arc<WebPkiServerVerifier>| match verify(v, now, &[]) {
                    None => true,
                    Some(rustls::Error::InvalidCertificate(e)) => matches!(
                        e,
                        CertificateError::NotValidForName
                            | CertificateError::NotValidForNameContext { .. }
                    ),
                    Some(_) => false,
                };
                // Trusting the certificate itself: if that builds a chain, it signed itself.
                let own = trusting(std::slice::from_ref(cert.end_entity), provider);
                if let Some(own) = own.filter(chain_built) {
                    problems.push(CertProblem::SelfSigned(text));
                    verifier = own;
                    continue;
                }
                problems.push(CertProblem::UntrustedIssuer(text));
                // Trusting the chain the server sent, the name can still be checked.
                match trusting(cert.intermediates, provider).filter(chain_built) {
                    Some(chain) => verifier = chain,
                    None => break,
                }
            }
            CertificateError::UnknownIssuer => break,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                problems.push(CertProblem::WrongName(text));
                break;
            }
            _ => {
                problems.push(CertProblem::Invalid(text));
                break;
            }
        }
    }
    problems
}

/// A verifier whose only trust anchors are `certs` (`None` when none of them can be one).
fn trusting(
    certs: &[CertificateDer<'_>],
    provider: &Arc<CryptoProvider>,
) -> Option<Arc<WebPkiServerVerifier>> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs.iter().map(|c| c.clone().into_owned()));
    if roots.is_empty() {
        return None;
    }
    WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone()).build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// A CA able to sign: its parameters, key and certificate.
    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        der: CertificateDer<'static>,
    }

    fn ca() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        Ca { params, key, der }
    }

    /// A certificate for `names` valid from 1 January of `valid.0` to 1 January of `valid.1`.
    fn cert(names: &[&str], valid: (i32, i32), signed_by: Option<&Ca>) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(valid.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(valid.1, 1, 1);
        let key = KeyPair::generate().unwrap();
        match signed_by {
            None => params.self_signed(&key).unwrap().der().clone(),
            Some(ca) => {
                let issuer = rcgen::Issuer::new(ca.params.clone(), &ca.key);
                params.signed_by(&key, &issuer).unwrap().der().clone()
            }
        }
    }

    fn problems_of(
        ee: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
        host: &str,
    ) -> Vec<String> {
        let client = TlsClient::new().unwrap();
        let name = ServerName::try_from(host.to_string()).unwrap();
        let presented = Presented {
            end_entity: ee,
            intermediates: chain,
            server_name: &name,
            ocsp_response: &[],
        };
        diagnose(&client.verifier, &client.provider, &presented, UnixTime::now())
            .iter()
            .map(|p| format!("{p:?}").split('(').next().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn a_self_signed_certificate_for_the_right_name() {
        let ee = cert(&["localhost", "127.0.0.1"], (2020, 2100), None);
        assert_eq!(problems_of(&ee, &[], "localhost"), ["SelfSigned"]);
        assert_eq!(problems_of(&ee, &[], "127.0.0.1"), ["SelfSigned"]);
    }

    #[test]
    fn every_problem_of_one_certificate_is_found() {
        let expired = cert(&["localhost"], (2001, 2002), None);
        assert_eq!(
            problems_of(&expired, &[], "intranet.test"),
            ["Expired", "SelfSigned", "WrongName"]
        );
        let future = cert(&["intranet.test"], (2090, 2100), None);
        assert_eq!(problems_of(&future, &[], "intranet.test"), ["NotYetValid", "SelfSigned"]);
    }

    #[test]
    fn an_unknown_issuer_is_not_self_signed() {
        let ca = ca();
        let ee = cert(&["app.corp"], (2020, 2100), Some(&ca));
        assert_eq!(problems_of(&ee, &[], "app.corp"), ["UntrustedIssuer"]);
        // With the CA in the chain the name can still be checked.
        let chain = [ca.der.clone()];
        assert_eq!(problems_of(&ee, &chain, "other.corp"), ["UntrustedIssuer", "WrongName"]);
        assert_eq!(problems_of(&ee, &chain, "app.corp"), ["UntrustedIssuer"]);
    }

    #[test]
    fn old_protocols_are_recognised() {
        let old = rustls::Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13);
        assert!(is_below_tls_1_2(&old));
        assert!(is_below_tls_1_2(&rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)));
        assert!(!is_below_tls_1_2(&rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure
        )));
    }
}
