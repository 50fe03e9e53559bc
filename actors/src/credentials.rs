//! Endpoint keys and scanner credentials: formats, derivation and hashing.
//!
//! **Endpoint keys** must be showable on demand ("Copy Endpoint Key") yet stored only as a hash.
//! So a key is not stored at all: it is derived, `HMAC-SHA256(cluster secret, endpoint id ||
//! generation)`, and only `SHA-256(key)` goes into the event log. Authorised users get the key
//! re-derived; the log (the audit trail, replicated, replayed) never contains it. Rotating bumps
//! the generation. Every node of a cluster shares the secret (`--key-secret-file`).
//!
//! **Scanner credentials** (the SOCKS5 password) and **API tokens** are random, shown once when
//! issued, and stored only as a hash. Every format embeds the id it belongs to, so verification
//! is one lookup and one constant-time comparison, and the secret parts carry 256 bits of entropy
//! (which is why a plain SHA-256, not a slow password hash, is the right hash here).

use ring::{aead, digest, hmac, rand::SecureRandom};
use std::fmt::Write;
use uuid::Uuid;

const ENDPOINT_KEY_PREFIX: &str = "ismk";

/// The kinds of issued secret, each with its own prefix so one is never mistaken for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// SOCKS5 password of a scanner: `isms_<id>_<secret>`.
    ScannerCredential,
    /// Bearer token of a management API user: `ismt_<id>_<secret>`.
    ApiToken,
}

impl SecretKind {
    fn prefix(self) -> &'static str {
        match self {
            SecretKind::ScannerCredential => "isms",
            SecretKind::ApiToken => "ismt",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            SecretKind::ScannerCredential => "a scanner credential (isms_<id>_<secret>)",
            SecretKind::ApiToken => "an API token (ismt_<id>_<secret>)",
        }
    }
}

/// The cluster-wide secret endpoint keys are derived from.
#[derive(Clone)]
pub struct KeySecret(hmac::Key);

impl KeySecret {
    /// From 32 or more random bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CredentialError> {
        if bytes.len() < 32 {
            return Err(CredentialError::WeakSecret(bytes.len()));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// 32 fresh random bytes, for writing a new secret file.
    pub fn generate_bytes() -> [u8; 32] {
        random_bytes()
    }

    /// The key of `endpoint` at `generation`.
    pub fn endpoint_key(&self, endpoint: Uuid, generation: u32) -> String {
        let mut msg = Vec::with_capacity(40);
        msg.extend_from_slice(b"endpoint-key\0");
        msg.extend_from_slice(endpoint.as_bytes());
        msg.extend_from_slice(&generation.to_be_bytes());
        let tag = hmac::sign(&self.0, &msg);
        format!("{ENDPOINT_KEY_PREFIX}_{}_{}", endpoint.simple(), hex(tag.as_ref()))
    }

    /// The AES-256-GCM key for secrets that must be stored yet used in the clear later (a
    /// webhook's signing secret): derived from the cluster secret, so every node can open what
    /// any node sealed, and the event log never holds them readable.
    fn sealing_key(&self) -> aead::LessSafeKey {
        let derived = hmac::sign(&self.0, b"sealed-secrets\0v1");
        let key = aead::UnboundKey::new(&aead::AES_256_GCM, derived.as_ref())
            .expect("an HMAC-SHA256 tag is an AES-256 key");
        aead::LessSafeKey::new(key)
    }

    /// `secret` encrypted (random nonce, authenticated), as hex.
    pub fn seal(&self, secret: &str) -> String {
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&random_bytes()[..12]);
        let mut sealed = secret.as_bytes().to_vec();
        self.sealing_key()
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                &mut sealed,
            )
            .expect("a secret this short always seals");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        hex(&out)
    }

    /// What [`seal`](Self::seal) sealed; fails on anything else, or on a value sealed under
    /// another cluster secret.
    pub fn open(&self, sealed: &str) -> Result<String, CredentialError> {
        let bytes = unhex(sealed).filter(|b| b.len() > 12).ok_or(CredentialError::Unsealable)?;
        let (nonce, rest) = bytes.split_at(12);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| CredentialError::Unsealable)?;
        let mut rest = rest.to_vec();
        let plain = self
            .sealing_key()
            .open_in_place(nonce, aead::Aad::empty(), &mut rest)
            .map_err(|_| CredentialError::Unsealable)?;
        String::from_utf8(plain.to_vec()).map_err(|_| CredentialError::Unsealable)
    }
}

/// The bytes of lower- or upper-case hex; `None` for anything else.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the key secret has {0} bytes; at least 32 are required")]
    WeakSecret(usize),
    #[error("malformed credential: expected {0}")]
    Malformed(&'static str),
    #[error(
        "a sealed secret cannot be opened: it is damaged or was sealed under another key secret"
    )]
    Unsealable,
}

/// The endpoint a presented key claims to belong to. Says nothing about whether it is valid.
pub fn endpoint_of_key(key: &str) -> Result<Uuid, CredentialError> {
    parse(key, ENDPOINT_KEY_PREFIX)
        .ok_or(CredentialError::Malformed("an endpoint key (ismk_<id>_<secret>)"))
}

/// A newly issued secret: hand `secret` out once, keep `hash`.
pub struct IssuedSecret {
    pub id: Uuid,
    pub secret: String,
    pub hash: String,
}

pub fn issue_secret(kind: SecretKind) -> IssuedSecret {
    let id = Uuid::new_v4();
    let secret = format!("{}_{}_{}", kind.prefix(), id.simple(), hex(&random_bytes()));
    let hash = hash_secret(&secret);
    IssuedSecret { id, secret, hash }
}

/// The id a presented secret of `kind` claims to have. Says nothing about whether it is valid.
pub fn secret_id(kind: SecretKind, secret: &str) -> Result<Uuid, CredentialError> {
    parse(secret, kind.prefix()).ok_or(CredentialError::Malformed(kind.describe()))
}

/// Hex SHA-256 of a key or secret: what the event log stores.
pub fn hash_secret(secret: &str) -> String {
    hex(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref())
}

/// Whether `presented` hashes to `stored_hash`, compared in constant time.
pub fn verify_secret(presented: &str, stored_hash: &str) -> bool {
    constant_time_eq(hash_secret(presented).as_bytes(), stored_hash.as_bytes())
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse(s: &str, prefix: &str) -> Option<Uuid> {
    let mut parts = s.trim().split('_');
    if parts.next()? != prefix {
        return None;
    }
    let id = Uuid::try_parse(parts.next()?).ok()?;
    let secret = parts.next()?;
    (secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()) && parts.next().is_none())
        .then_some(id)
}

/// 32 bytes from the OS random source.
pub fn random_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source failed");
    b
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_are_derived_stably_and_differ_by_generation() {
        let secret = KeySecret::from_bytes(&[7; 32]).unwrap();
        let id = Uuid::new_v4();
        let k1 = secret.endpoint_key(id, 1);
        assert_eq!(k1, secret.endpoint_key(id, 1));
        assert_ne!(k1, secret.endpoint_key(id, 2));
        assert_eq!(endpoint_of_key(&k1).unwrap(), id);
        assert!(verify_secret(&k1, &hash_secret(&k1)));
        assert!(!verify_secret(&secret.endpoint_key(id, 2), &hash_secret(&k1)));
        let other = KeySecret::from_bytes(&[8; 32]).unwrap();
        assert_ne!(k1, other.endpoint_key(id, 1));
    }

    #[test]
    fn malformed_credentials_are_refused() {
        for bad in [
            "",
            "ismk",
            "ismk_nothex_00",
            "isms_8d6c0c4a7d8b4e0f9d1f2a3b4c5d6e7f_00",
            "ismk_8d6c0c4a7d8b4e0f9d1f2a3b4c5d6e7f_zz",
        ] {
            assert!(endpoint_of_key(bad).is_err(), "{bad}");
        }
        let issued = issue_secret(SecretKind::ScannerCredential);
        assert_eq!(secret_id(SecretKind::ScannerCredential, &issued.secret).unwrap(), issued.id);
        assert!(
            endpoint_of_key(&issued.secret).is_err(),
            "a scanner secret is not an endpoint key"
        );
        assert!(
            secret_id(SecretKind::ApiToken, &issued.secret).is_err(),
            "a scanner secret is not an API token"
        );
        assert!(KeySecret::from_bytes(&[0; 16]).is_err());
    }

    #[test]
    fn sealed_secrets_open_only_under_the_same_key_secret() {
        let secret = KeySecret::from_bytes(&[7; 32]).unwrap();
        let sealed = secret.seal("whsec_abc");
        assert_ne!(sealed, secret.seal("whsec_abc"), "a fresh nonce each time");
        assert!(!sealed.contains("whsec"));
        assert_eq!(secret.open(&sealed).unwrap(), "whsec_abc");
        let other = KeySecret::from_bytes(&[8; 32]).unwrap();
        assert_eq!(other.open(&sealed), Err(CredentialError::Unsealable));
        let mut damaged = sealed.clone();
        damaged.replace_range(30..32, if &sealed[30..32] == "00" { "11" } else { "00" });
        assert_eq!(secret.open(&damaged), Err(CredentialError::Unsealable));
        assert_eq!(secret.open("zz"), Err(CredentialError::Unsealable));
    }
}
