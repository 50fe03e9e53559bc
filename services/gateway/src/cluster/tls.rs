//! TLS between gateway nodes: every node holds a certificate of the cluster's own CA, and a relay
//! link is mutual TLS on that CA, so only the cluster's nodes can use one (an endpoint key or a
//! scanner credential is no way in).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ClusterTlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{0:?} cannot be a node name in a certificate (letters, digits and '-' only)")]
    BadNodeName(String),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the cluster's TLS files do not fit together: {0}")]
    Config(String),
}

/// Where a node's cluster TLS files are.
#[derive(Debug, Clone)]
pub struct ClusterTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClusterTlsFiles {
    /// The files [`generate`] wrote for `node` in `dir`.
    pub fn in_dir(dir: &Path, node: &str) -> Self {
        Self {
            ca: dir.join("cluster-ca.pem"),
            cert: dir.join(format!("{node}.pem")),
            key: dir.join(format!("{node}.key")),
        }
    }
}

/// A node's side of relay links: what it presents and what it trusts, both ways.
#[derive(Clone)]
pub struct ClusterTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

fn read(path: &Path) -> Result<Vec<u8>, ClusterTlsError> {
    std::fs::read(path).map_err(|source| ClusterTlsError::Read { path: path.into(), source })
}

/// Replaces `path` whole or not at all: a cut-off key from a full disk would fail the node's
/// every start, and a failed run of `generate` keeps the files of the one before.
fn write(path: &Path, contents: &str, private: bool) -> Result<(), ClusterTlsError> {
    let mode = if private { 0o600 } else { 0o644 };
    ism_files::replace(path, contents.as_bytes(), mode)
        .map_err(|source| ClusterTlsError::Write { path: path.into(), source })
}

/// Generates a cluster CA and a certificate for each of `nodes` into `dir` (`cluster-ca.pem`,
/// `<node>.pem`, `<node>.key`); the CA's own key is discarded, so more nodes mean a new CA.
pub fn generate(dir: &Path, nodes: &[String]) -> Result<(), ClusterTlsError> {
    for node in nodes {
        let valid = !node.is_empty()
            && node.len() <= 63
            && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !node.starts_with('-')
            && !node.ends_with('-');
        if !valid {
            return Err(ClusterTlsError::BadNodeName(node.clone()));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|source| ClusterTlsError::Write { path: dir.into(), source })?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "ISM gateway cluster CA");
    ca_params.key_usages =
        vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    write(&dir.join("cluster-ca.pem"), &ca_cert.pem(), false)?;
    for node in nodes {
        let mut params = rcgen::CertificateParams::new(vec![node.clone()])?;
        params.distinguished_name.push(rcgen::DnType::CommonName, node.clone());
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let files = ClusterTlsFiles::in_dir(dir, node);
        write(&files.cert, &cert.pem(), false)?;
        write(&files.key, &key.serialize_pem(), true)?;
    }
    Ok(())
}

/// Loads a node's cluster TLS: its certificate and key, and the cluster CA it requires of every
/// peer, as server and as client.
pub fn load(files: &ClusterTlsFiles) -> Result<ClusterTls, ClusterTlsError> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&files.cert)?).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(ClusterTlsError::NoCertificate { path: files.cert.clone() });
    }
    let key = || {
        PrivateKeyDer::from_pem_slice(&read(&files.key)?)
            .map_err(|e| ClusterTlsError::BadKey { path: files.key.clone(), reason: e.to_string() })
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&read(&files.ca)?).filter_map(Result::ok) {
        roots.add(ca).map_err(|e| ClusterTlsError::Config(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ClusterTlsError::NoCertificate { path: files.ca.clone() });
    }
    let roots = Arc::new(roots);
    let config = |e: rustls::Error| ClusterTlsError::Config(e.to_string());
    let verifier = rustls::server::WebPkiClientVerifier::builder(roots.clone())
        .build()
        .map_err(|e| ClusterTlsError::Config(e.to_string()))?;
    let server = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key()?)
        .map_err(config)?;
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key()?)
        .map_err(config)?;
    Ok(ClusterTls { server: Arc::new(server), client: Arc::new(client) })
}
