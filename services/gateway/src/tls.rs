//! The node's TLS identity: an operator-supplied certificate, or on the embedded default a
//! private CA and a server certificate generated once and kept in the data directory.
//!
//! Endpoints trust the generated CA through their `gatewayCaFile` setting (the CA file is
//! `<data-dir>/tls/ca.pem`); with a certificate from a public CA they need nothing.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate and key do not fit together: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the node's certificate comes from.
pub enum TlsSource {
    /// PEM files supplied by the operator (the certificate file may hold the whole chain).
    Files { cert: PathBuf, key: PathBuf },
    /// Generated on first start in `dir`, for names `sans` (plus localhost and loopback).
    Generated { dir: PathBuf, sans: Vec<String> },
}

/// The loaded identity.
pub struct TlsIdentity {
    pub server_config: Arc<rustls::ServerConfig>,
    /// The generated CA, when there is one: what endpoints must trust.
    pub ca_file: Option<PathBuf>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source })
}

/// Writes `path` whole or not at all, owner-only when `private` from its first byte (written in
/// place and then restricted, a private key was readable by others for a moment).
fn write_private(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    let mode = if private { 0o600 } else { 0o644 };
    ism_files::replace(path, contents.as_bytes(), mode)
        .map_err(|source| TlsError::Write { path: path.into(), source })
}

fn generate(dir: &Path, sans: &[String]) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.into(), source })?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "ISM gateway private CA");
    ca_params.key_usages =
        vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.extend(sans.iter().cloned());
    names.dedup();
    let mut leaf_params = rcgen::CertificateParams::new(names)?;
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "ISM gateway node");
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

    write_private(&dir.join("ca.pem"), &ca_cert.pem(), false)?;
    write_private(&dir.join("cert.pem"), &format!("{}{}", leaf.pem(), ca_cert.pem()), false)?;
    write_private(&dir.join("key.pem"), &leaf_key.serialize_pem(), true)?;
    // The CA key is not kept: nothing else is ever signed with it.
    Ok(())
}

/// Loads (generating first if needed) the node's identity.
pub fn load(source: &TlsSource) -> Result<TlsIdentity, TlsError> {
    let (cert_path, key_path, ca_file) = match source {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone(), None),
        TlsSource::Generated { dir, sans } => {
            if !dir.join("cert.pem").exists() || !dir.join("key.pem").exists() {
                generate(dir, sans)?;
                tracing::info!(dir = %dir.display(), "generated a private CA and server certificate");
            }
            (dir.join("cert.pem"), dir.join("key.pem"), Some(dir.join("ca.pem")))
        }
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&cert_path)?).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?)
        .map_err(|e| TlsError::BadKey { path: key_path.clone(), reason: e.to_string() })?;
    let config =
        rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    Ok(TlsIdentity { server_config: Arc::new(config), ca_file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_is_kept_across_restarts() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let src =
            TlsSource::Generated { dir: dir.path().join("tls"), sans: vec!["gw.example".into()] };
        let first = load(&src).unwrap();
        let ca = std::fs::read(first.ca_file.as_ref().unwrap()).unwrap();
        load(&src).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("tls/ca.pem")).unwrap(),
            ca,
            "the CA must not change on restart"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls/key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn missing_files_are_a_clear_error() {
        let err = load(&TlsSource::Files {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
