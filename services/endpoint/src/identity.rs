//! The machine identity: an Ed25519 key pair generated on first start and kept (owner-only) in
//! the install folder. The gateway binds the endpoint key to its public half; copying the endpoint
//! key to another machine is then refused ("Token already registered"). Copying the identity
//! too is told apart by the instance, a random id of each process using the identity: two
//! processes with one identity get different ones.

use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::path::{Path, PathBuf};

pub struct MachineIdentity {
    pair: Ed25519KeyPair,
    instance: [u8; 16],
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("machine identity {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

impl MachineIdentity {
    /// Loads the identity from `path`, creating it if the file does not exist, with a new
    /// instance.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        let err = |reason: String| IdentityError::File { path: path.into(), reason };
        let mut instance = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut instance)
            .map_err(|e| err(format!("no random instance id: {e}")))?;
        match std::fs::read(path) {
            Ok(pkcs8) => Ed25519KeyPair::from_pkcs8(&pkcs8)
                .map(|pair| Self { pair, instance })
                .map_err(|e| err(format!("not an Ed25519 PKCS#8 key: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|e| err(e.to_string()))?;
                // Whole or not at all: a cut-off key would fail every later start, after the
                // gateway may have bound its public half.
                ism_files::create_new(path, doc.as_ref(), 0o600).map_err(|e| err(e.to_string()))?;
                Ed25519KeyPair::from_pkcs8(doc.as_ref())
                    .map(|pair| Self { pair, instance })
                    .map_err(|e| err(e.to_string()))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// This process's instance of the identity.
    pub fn instance(&self) -> [u8; 16] {
        self.instance
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        k
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut s = [0u8; 64];
        s.copy_from_slice(self.pair.sign(message).as_ref());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/machine.key");
        let a = MachineIdentity::load_or_create(&path).unwrap();
        let b = MachineIdentity::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(a.instance(), b.instance(), "each use of the identity is its own instance");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(MachineIdentity::load_or_create(&path)
            .err()
            .unwrap()
            .to_string()
            .contains("machine.key"));
    }
}
