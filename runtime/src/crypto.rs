//! API key secrets (generated, hashed) and provider credentials (sealed).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Every aigw API key starts with this.
pub const KEY_PREFIX: &str = "aig_";
const KEY_RANDOM_CHARS: usize = 43; // about 256 bits of base62

/// A new API key secret: `aig_` and 43 random alphanumerics.
pub fn generate_api_key() -> SecretString {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(KEY_RANDOM_CHARS)
        .map(char::from)
        .collect();
    SecretString::from(format!("{KEY_PREFIX}{random}"))
}

/// Hex SHA-256 of a key secret: what is stored and looked up.
///
/// A fast hash is right here: the secrets are 256-bit random, so there is
/// nothing to brute-force, and authentication must not cost milliseconds.
pub fn hash_api_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The start of a key that may be shown, to tell keys apart.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(KEY_PREFIX.len() + 6).collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("AIGW_MASTER_KEY is not set, so provider credentials cannot be stored or used")]
    NoMasterKey,
    #[error("a sealed credential could not be opened (wrong AIGW_MASTER_KEY?)")]
    Unreadable,
}

/// Seals and opens provider credentials with AES-256-GCM under a key derived
/// from `AIGW_MASTER_KEY`.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<Aes256Gcm>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("configured", &self.cipher.is_some())
            .finish()
    }
}

impl Sealer {
    pub fn new(master_key: Option<&SecretString>) -> Self {
        let cipher = master_key.map(|k| {
            let key = Sha256::digest(k.expose_secret().as_bytes());
            Aes256Gcm::new(&key)
        });
        Self { cipher }
    }

    pub fn is_configured(&self) -> bool {
        self.cipher.is_some()
    }

    /// `base64(nonce || ciphertext)`.
    pub fn seal(&self, plain: &str) -> Result<String, SealError> {
        let cipher = self.cipher.as_ref().ok_or(SealError::NoMasterKey)?;
        let nonce_bytes: [u8; 12] = rand::rng().random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let sealed = cipher
            .encrypt(nonce, plain.as_bytes())
            .map_err(|_| SealError::Unreadable)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<SecretString, SealError> {
        let cipher = self.cipher.as_ref().ok_or(SealError::NoMasterKey)?;
        let bytes = STANDARD.decode(sealed).map_err(|_| SealError::Unreadable)?;
        if bytes.len() < 12 {
            return Err(SealError::Unreadable);
        }
        let (nonce, body) = bytes.split_at(12);
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| SealError::Unreadable)?;
        let text = String::from_utf8(plain).map_err(|_| SealError::Unreadable)?;
        Ok(SecretString::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hashed() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert!(a.expose_secret().starts_with(KEY_PREFIX));
        assert_eq!(a.expose_secret().len(), KEY_PREFIX.len() + KEY_RANDOM_CHARS);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(hash_api_key("x").len(), 64);
        assert_ne!(
            hash_api_key(a.expose_secret()),
            hash_api_key(b.expose_secret())
        );
    }

    #[test]
    fn seal_round_trip_and_wrong_key() {
        let k1 = SecretString::from("master one");
        let k2 = SecretString::from("master two");
        let sealed = Sealer::new(Some(&k1)).seal("sk-secret").unwrap();
        assert!(!sealed.contains("sk-secret"));
        assert_eq!(
            Sealer::new(Some(&k1))
                .open(&sealed)
                .unwrap()
                .expose_secret(),
            "sk-secret"
        );
        assert_eq!(
            Sealer::new(Some(&k2)).open(&sealed).unwrap_err(),
            SealError::Unreadable
        );
        assert_eq!(
            Sealer::new(None).seal("x").unwrap_err(),
            SealError::NoMasterKey
        );
    }
}
