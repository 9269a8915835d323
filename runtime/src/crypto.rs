//! API key secrets (generated, hashed) and provider credentials (sealed).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// HMAC-SHA256 of `parts` under `key`, hex encoded.
fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            for part in parts {
                mac.update(part);
            }
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length.
        Err(_) => String::new(),
    }
}

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
    /// Key for derived secrets (webhook signing), separate from the cipher's.
    mac_key: Option<[u8; 32]>,
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
        let mac_key = master_key.map(|k| {
            let mut h = Sha256::new();
            h.update(b"aigw derived secrets\0");
            h.update(k.expose_secret().as_bytes());
            h.finalize().into()
        });
        Self { cipher, mac_key }
    }

    pub fn is_configured(&self) -> bool {
        self.cipher.is_some()
    }

    /// A key's webhook signing secret (`whsec_...`): derived from the master
    /// key, the key's id and the hash of its current secret, so it needs no
    /// storage, every replica agrees, and rotating the key rotates it too.
    pub fn webhook_secret(
        &self,
        key_id: uuid::Uuid,
        key_hash: &str,
    ) -> Result<SecretString, SealError> {
        let mac_key = self.mac_key.as_ref().ok_or(SealError::NoMasterKey)?;
        let digest = hmac_hex(
            mac_key,
            &[b"webhook:", key_id.as_bytes(), b":", key_hash.as_bytes()],
        );
        Ok(SecretString::from(format!("whsec_{}", &digest[..48])))
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

/// `sha256=<hex HMAC-SHA256 of body>`: the webhook signature header value.
pub fn webhook_signature(secret: &SecretString, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hmac_hex(secret.expose_secret().as_bytes(), &[body])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secrets_are_per_key_and_per_master() {
        let id = uuid::Uuid::from_u128(7);
        let a = Sealer::new(Some(&SecretString::from("master one")));
        let b = Sealer::new(Some(&SecretString::from("master two")));
        let s1 = a.webhook_secret(id, "h1").unwrap();
        assert!(s1.expose_secret().starts_with("whsec_"));
        assert_eq!(
            s1.expose_secret(),
            a.webhook_secret(id, "h1").unwrap().expose_secret()
        );
        assert_ne!(
            s1.expose_secret(),
            b.webhook_secret(id, "h1").unwrap().expose_secret()
        );
        assert_ne!(
            s1.expose_secret(),
            a.webhook_secret(uuid::Uuid::from_u128(8), "h1")
                .unwrap()
                .expose_secret()
        );
        assert!(Sealer::new(None).webhook_secret(id, "h1").is_err());
        // A rotated key (a new secret, so a new hash) signs with a new secret.
        assert_ne!(
            s1.expose_secret(),
            a.webhook_secret(id, "h2").unwrap().expose_secret()
        );
        // RFC 4231 test case 2.
        assert_eq!(
            webhook_signature(&SecretString::from("Jefe"), b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

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
