//! API key secrets (generated, hashed), provider credentials (sealed at
//! rest) and webhook signing secrets (derived from the master key).
//!
//! Invariants: every new ciphertext is v2 (HKDF-SHA256 key, AES-256-GCM,
//! bound to its provider and field); v1 ciphertexts keep opening; the
//! previous master key only ever opens, never seals.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aigw_events::provider::ProviderSpec;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

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

/// Every personal admin API token starts with this.
pub const ADMIN_TOKEN_PREFIX: &str = "aigwu_";

/// A new personal admin API token: `aigwu_` and 43 random alphanumerics
/// (hashed and shown like an API key: [`hash_api_key`], [`display_prefix`]).
pub fn generate_admin_token() -> SecretString {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(KEY_RANDOM_CHARS)
        .map(char::from)
        .collect();
    SecretString::from(format!("{ADMIN_TOKEN_PREFIX}{random}"))
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
    #[error(
        "a sealed credential could not be opened with AIGW_MASTER_KEY or AIGW_MASTER_KEY_PREVIOUS \
         (a wrong key, or a ciphertext that belongs to another provider or field)"
    )]
    Unreadable,
}

/// Which credential of a provider a sealed value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialField {
    /// The main credential (`sealed_credential`: an API key, or Bedrock's
    /// AWS secret access key).
    ApiKey,
    /// The `n`-th of `extra_credentials`.
    Extra(usize),
    /// Bedrock's AWS session token (`sealed_session_token`).
    SessionToken,
}

/// What a sealed value belongs to (`provider:<uuid>:api_key`,
/// `provider:<uuid>:extra:<n>`, `provider:<uuid>:session_token`). It is the
/// ciphertext's associated data: a value opens only with the binding it was
/// sealed with, so a ciphertext copied to another provider or field does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding(String);

impl Binding {
    pub fn new(provider: Uuid, field: CredentialField) -> Self {
        Self(match field {
            CredentialField::ApiKey => format!("provider:{provider}:api_key"),
            CredentialField::Extra(n) => format!("provider:{provider}:extra:{n}"),
            CredentialField::SessionToken => format!("provider:{provider}:session_token"),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The field of the `index`-th entry of [`ProviderSpec::credentials`] (the
/// main credential, if any, then the extra ones).
pub fn credential_field(spec: &ProviderSpec, index: usize) -> CredentialField {
    match (spec.sealed_credential.is_some(), index) {
        (true, 0) => CredentialField::ApiKey,
        (true, n) => CredentialField::Extra(n - 1),
        (false, n) => CredentialField::Extra(n),
    }
}

/// Every sealed value of a provider, with its field.
pub fn sealed_fields(spec: &ProviderSpec) -> Vec<(CredentialField, &str)> {
    spec.sealed_credential
        .iter()
        .map(|s| (CredentialField::ApiKey, s.as_str()))
        .chain(
            spec.extra_credentials
                .iter()
                .enumerate()
                .map(|(n, s)| (CredentialField::Extra(n), s.as_str())),
        )
        .chain(
            spec.sealed_session_token
                .iter()
                .map(|s| (CredentialField::SessionToken, s.as_str())),
        )
        .collect()
}

/// Prefix of the current ciphertext format. Version 1 had none (base64 has
/// no `:`, so the two cannot be confused).
const V2_PREFIX: &str = "v2:";
/// HKDF-SHA256 `info` of the key that seals provider credentials.
const V2_SEALING_INFO: &[u8] = b"aigw/v2/provider-credentials";
const NONCE_LEN: usize = 12;
/// HKDF-SHA256 `info` of the key that seals the admin UI's cookies.
const COOKIE_SEALING_INFO: &[u8] = b"aigw/v1/admin-cookies";
/// HKDF-SHA256 `info` of the key of the sessions' CSRF tokens.
const CSRF_INFO: &[u8] = b"aigw/v1/admin-csrf";

/// Everything derived from one master key.
#[derive(Clone)]
struct MasterKeys {
    /// Seals and opens v2 ciphertexts: HKDF-SHA256 of the master key.
    v2: Aes256Gcm,
    /// Opens v1 ciphertexts (never seals): a bare SHA-256 of the master key.
    v1: Aes256Gcm,
    /// Key of derived secrets (webhook signing). Its derivation predates
    /// HKDF here and is kept as it was, so that upgrading aigw does not change
    /// any key's webhook secret under a webhook receiver.
    webhook: [u8; 32],
    /// Seals the admin UI's short-lived cookies (a login in progress).
    cookies: Aes256Gcm,
    /// Key of the admin UI sessions' CSRF tokens.
    csrf: [u8; 32],
}

impl MasterKeys {
    fn derive(master: &SecretString) -> Self {
        let ikm = master.expose_secret().as_bytes();
        let mut sealing = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
        let _ = Hkdf::<Sha256>::new(None, ikm).expand(V2_SEALING_INFO, &mut sealing);
        let mut cookies = [0u8; 32];
        let _ = Hkdf::<Sha256>::new(None, ikm).expand(COOKIE_SEALING_INFO, &mut cookies);
        let mut csrf = [0u8; 32];
        let _ = Hkdf::<Sha256>::new(None, ikm).expand(CSRF_INFO, &mut csrf);
        let mut webhook = Sha256::new();
        webhook.update(b"aigw derived secrets\0");
        webhook.update(ikm);
        Self {
            v2: Aes256Gcm::new(&sealing.into()),
            v1: Aes256Gcm::new(&Sha256::digest(ikm)),
            webhook: webhook.finalize().into(),
            cookies: Aes256Gcm::new(&cookies.into()),
            csrf,
        }
    }

    /// Opens a v2 body (`nonce || ciphertext`) bound to `binding`.
    fn open_v2(&self, body: &[u8], binding: &Binding) -> Option<Vec<u8>> {
        let (nonce, sealed) = split_nonce(body)?;
        let payload = Payload {
            msg: sealed,
            aad: binding.as_str().as_bytes(),
        };
        self.v2.decrypt(Nonce::from_slice(nonce), payload).ok()
    }

    /// Opens a v1 body (`nonce || ciphertext`, no associated data).
    fn open_v1(&self, body: &[u8]) -> Option<Vec<u8>> {
        let (nonce, sealed) = split_nonce(body)?;
        self.v1.decrypt(Nonce::from_slice(nonce), sealed).ok()
    }
}

fn split_nonce(body: &[u8]) -> Option<(&[u8], &[u8])> {
    (body.len() >= NONCE_LEN).then(|| body.split_at(NONCE_LEN))
}

/// An opened credential, and whether its ciphertext is current: v2 under
/// `AIGW_MASTER_KEY`. Anything else (v1, or sealed under the previous master
/// key) is what `aigw providers reseal` seals again.
pub struct Opened {
    pub secret: SecretString,
    pub current: bool,
}

/// The opened secrets of one provider call ([`Sealer::open_call_secrets`]).
#[derive(Debug)]
pub struct CallSecrets {
    /// The API key (for Bedrock SigV4, the secret access key).
    pub api_key: Option<SecretString>,
    /// Bedrock only: the session token of temporary AWS credentials.
    pub session_token: Option<SecretString>,
}

/// Seals and opens provider credentials with AES-256-GCM under keys derived
/// from `AIGW_MASTER_KEY`; opens what was sealed under
/// `AIGW_MASTER_KEY_PREVIOUS` too, so the master key can be rotated.
///
/// New seals are always `v2:<base64(nonce || ciphertext)>`, bound to their
/// provider and field; v1 ciphertexts (`base64(nonce || ciphertext)`, no
/// binding) still open.
#[derive(Clone)]
pub struct Sealer {
    current: Option<MasterKeys>,
    previous: Option<MasterKeys>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("configured", &self.current.is_some())
            .field("previous", &self.previous.is_some())
            .finish()
    }
}

impl Sealer {
    pub fn new(master_key: Option<&SecretString>) -> Self {
        Self::with_previous(master_key, None)
    }

    /// A sealer that also opens what `previous` sealed. Without a current
    /// master key it neither seals nor opens anything.
    pub fn with_previous(
        master_key: Option<&SecretString>,
        previous: Option<&SecretString>,
    ) -> Self {
        let current = master_key.map(MasterKeys::derive);
        let previous = current.as_ref().and(previous).map(MasterKeys::derive);
        Self { current, previous }
    }

    pub fn is_configured(&self) -> bool {
        self.current.is_some()
    }

    /// A key's webhook signing secret (`whsec_...`): derived from the master
    /// key, the key's id and the hash of its current secret, so it needs no
    /// storage, every replica agrees, and rotating the key rotates it too
    /// (and so does rotating the master key).
    pub fn webhook_secret(
        &self,
        key_id: uuid::Uuid,
        key_hash: &str,
    ) -> Result<SecretString, SealError> {
        let keys = self.current.as_ref().ok_or(SealError::NoMasterKey)?;
        let digest = hmac_hex(
            &keys.webhook,
            &[b"webhook:", key_id.as_bytes(), b":", key_hash.as_bytes()],
        );
        Ok(SecretString::from(format!("whsec_{}", &digest[..48])))
    }

    /// `v2:<base64(nonce || ciphertext)>`, with `binding` as associated data.
    pub fn seal(&self, plain: &str, binding: &Binding) -> Result<String, SealError> {
        let keys = self.current.as_ref().ok_or(SealError::NoMasterKey)?;
        let nonce_bytes: [u8; NONCE_LEN] = rand::rng().random();
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: binding.as_str().as_bytes(),
        };
        let sealed = keys
            .v2
            .encrypt(Nonce::from_slice(&nonce_bytes), payload)
            .map_err(|_| SealError::Unreadable)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{V2_PREFIX}{}", STANDARD.encode(out)))
    }

    /// Opens a credential sealed for `binding` (a v1 ciphertext has no
    /// binding and opens anywhere).
    pub fn open(&self, sealed: &str, binding: &Binding) -> Result<SecretString, SealError> {
        self.open_checked(sealed, binding).map(|o| o.secret)
    }

    /// The secrets one call to provider `id` is signed with: its `index`-th
    /// credential ([`ProviderSpec::credentials`]) and, for Bedrock's
    /// temporary AWS credentials, the session token. Every path that calls
    /// a provider (requests, jobs, the admin's connection test) opens them
    /// here, so none signs with fewer secrets than the others.
    pub fn open_call_secrets(
        &self,
        id: Uuid,
        spec: &ProviderSpec,
        index: usize,
    ) -> Result<CallSecrets, SealError> {
        let open = |sealed: Option<&str>, field| {
            sealed
                .map(|s| self.open(s, &Binding::new(id, field)))
                .transpose()
        };
        Ok(CallSecrets {
            api_key: open(
                spec.credentials().get(index).copied(),
                credential_field(spec, index),
            )?,
            session_token: open(
                spec.sealed_session_token.as_deref(),
                CredentialField::SessionToken,
            )?,
        })
    }

    /// Opens a credential and tells whether its ciphertext is current.
    pub fn open_checked(&self, sealed: &str, binding: &Binding) -> Result<Opened, SealError> {
        let current = self.current.as_ref().ok_or(SealError::NoMasterKey)?;
        let keys = std::iter::once((current, true)).chain(self.previous.iter().map(|k| (k, false)));
        let (v2, body) = match sealed.strip_prefix(V2_PREFIX) {
            Some(rest) => (true, rest),
            None => (false, sealed),
        };
        let bytes = STANDARD.decode(body).map_err(|_| SealError::Unreadable)?;
        for (k, is_current) in keys {
            let plain = if v2 {
                k.open_v2(&bytes, binding)
            } else {
                k.open_v1(&bytes)
            };
            if let Some(plain) = plain {
                let text = String::from_utf8(plain).map_err(|_| SealError::Unreadable)?;
                return Ok(Opened {
                    secret: SecretString::from(text),
                    current: v2 && is_current,
                });
            }
        }
        Err(SealError::Unreadable)
    }
}

impl Sealer {
    /// Seals `plain` for a cookie named `purpose` (URL-safe base64 of
    /// `nonce || ciphertext`, the purpose as associated data), under the
    /// current master key only.
    pub fn seal_cookie(&self, plain: &str, purpose: &str) -> Result<String, SealError> {
        let keys = self.current.as_ref().ok_or(SealError::NoMasterKey)?;
        let nonce_bytes: [u8; NONCE_LEN] = rand::rng().random();
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: purpose.as_bytes(),
        };
        let sealed = keys
            .cookies
            .encrypt(Nonce::from_slice(&nonce_bytes), payload)
            .map_err(|_| SealError::Unreadable)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens what [`Sealer::seal_cookie`] sealed for `purpose`.
    pub fn open_cookie(&self, sealed: &str, purpose: &str) -> Result<String, SealError> {
        let keys = self.current.as_ref().ok_or(SealError::NoMasterKey)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| SealError::Unreadable)?;
        let (nonce, body) = split_nonce(&bytes).ok_or(SealError::Unreadable)?;
        let payload = Payload {
            msg: body,
            aad: purpose.as_bytes(),
        };
        let plain = keys
            .cookies
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Unreadable)?;
        String::from_utf8(plain).map_err(|_| SealError::Unreadable)
    }

    /// The CSRF token of the session with cookie secret `session_secret`:
    /// derived, so it needs no storage and every replica agrees.
    pub fn csrf_token(&self, session_secret: &str) -> Result<String, SealError> {
        let keys = self.current.as_ref().ok_or(SealError::NoMasterKey)?;
        Ok(hmac_hex(&keys.csrf, &[b"csrf:", session_secret.as_bytes()]))
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
    fn call_secrets_include_the_session_token_of_temporary_credentials() {
        let sealer = Sealer::new(Some(&SecretString::from("master one")));
        let id = uuid::Uuid::from_u128(9);
        let seal = |plain: &str, field| sealer.seal(plain, &Binding::new(id, field)).unwrap();
        let spec = ProviderSpec {
            kind: aigw_events::provider::ProviderKind::Bedrock,
            sealed_credential: Some(seal("secret", CredentialField::ApiKey)),
            extra_credentials: vec![seal("second", CredentialField::Extra(0))],
            sealed_session_token: Some(seal("token", CredentialField::SessionToken)),
            ..ProviderSpec::default()
        };
        let opened = |index| {
            let s = sealer.open_call_secrets(id, &spec, index).unwrap();
            let show = |v: Option<SecretString>| v.map(|v| v.expose_secret().to_string());
            (show(s.api_key), show(s.session_token))
        };
        let some = |v: &str| Some(v.to_string());
        assert_eq!(opened(0), (some("secret"), some("token")));
        assert_eq!(opened(1), (some("second"), some("token")));
        assert_eq!(opened(2), (None, some("token")));
        // A token sealed for another provider does not open here.
        let other = ProviderSpec {
            sealed_session_token: Some(
                sealer
                    .seal(
                        "token",
                        &Binding::new(uuid::Uuid::from_u128(1), CredentialField::SessionToken),
                    )
                    .unwrap(),
            ),
            ..spec.clone()
        };
        assert_eq!(
            sealer.open_call_secrets(id, &other, 0).unwrap_err(),
            SealError::Unreadable
        );
    }

    #[test]
    fn cookies_open_only_for_their_purpose_and_master_key() {
        let a = Sealer::new(Some(&SecretString::from("master one")));
        let b = Sealer::new(Some(&SecretString::from("master two")));
        let sealed = a.seal_cookie("state=1", "login").unwrap();
        assert!(!sealed.contains("state"));
        assert_eq!(a.open_cookie(&sealed, "login").unwrap(), "state=1");
        assert!(a.open_cookie(&sealed, "other").is_err());
        assert!(b.open_cookie(&sealed, "login").is_err());
        assert!(a.open_cookie("not base64!", "login").is_err());
        assert!(a.open_cookie("", "login").is_err());
        let t = a.csrf_token("s1").unwrap();
        assert_eq!(t, a.csrf_token("s1").unwrap());
        assert_ne!(t, a.csrf_token("s2").unwrap());
        assert_ne!(t, b.csrf_token("s1").unwrap());
    }

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

    fn master(s: &str) -> SecretString {
        SecretString::from(s)
    }

    fn api_key(n: u128) -> Binding {
        Binding::new(Uuid::from_u128(n), CredentialField::ApiKey)
    }

    /// Sealed by aigw before v2 (a bare SHA-256 key, no binding) under
    /// `V1_MASTER`: stored events hold such values and must keep opening.
    const V1_MASTER: &str = "fixture master key for v1 ciphertexts";
    const V1_SEALED: &str = "M++CpCc+w3zcxkk1hgHpqtjegsucrLTMqWxpFX9yOMs/lgUKg0xgTTLTQgCs+51G";

    #[test]
    fn seals_are_v2_and_round_trip() {
        let sealer = Sealer::new(Some(&master("master one")));
        let sealed = sealer.seal("sk-secret", &api_key(1)).unwrap();
        assert!(sealed.starts_with("v2:"), "{sealed}");
        assert!(!sealed.contains("sk-secret"));
        let opened = sealer.open_checked(&sealed, &api_key(1)).unwrap();
        assert_eq!(opened.secret.expose_secret(), "sk-secret");
        assert!(opened.current);
        // Two seals of one secret differ (random nonces).
        assert_ne!(sealed, sealer.seal("sk-secret", &api_key(1)).unwrap());
        assert_eq!(
            Sealer::new(Some(&master("master two")))
                .open(&sealed, &api_key(1))
                .unwrap_err(),
            SealError::Unreadable
        );
        assert_eq!(
            Sealer::new(None).seal("x", &api_key(1)).unwrap_err(),
            SealError::NoMasterKey
        );
        assert_eq!(
            Sealer::new(None).open(&sealed, &api_key(1)).unwrap_err(),
            SealError::NoMasterKey
        );
    }

    #[test]
    fn a_ciphertext_opens_only_for_its_provider_and_field() {
        let sealer = Sealer::new(Some(&master("master one")));
        let id = Uuid::from_u128(1);
        let fields = [
            CredentialField::ApiKey,
            CredentialField::Extra(0),
            CredentialField::Extra(1),
            CredentialField::SessionToken,
        ];
        for field in fields {
            let sealed = sealer.seal("sk-secret", &Binding::new(id, field)).unwrap();
            for other in fields {
                let opened = sealer.open(&sealed, &Binding::new(id, other));
                assert_eq!(
                    opened.is_ok(),
                    field == other,
                    "{field:?} opened as {other:?}"
                );
            }
            assert_eq!(
                sealer
                    .open(&sealed, &Binding::new(Uuid::from_u128(2), field))
                    .unwrap_err(),
                SealError::Unreadable
            );
        }
        assert_eq!(
            Binding::new(id, CredentialField::Extra(3)).as_str(),
            "provider:00000000-0000-0000-0000-000000000001:extra:3"
        );
    }

    #[test]
    fn v1_ciphertexts_still_open_and_are_not_current() {
        let sealer = Sealer::new(Some(&master(V1_MASTER)));
        // v1 has no binding: any binding opens it.
        let opened = sealer.open_checked(V1_SEALED, &api_key(9)).unwrap();
        assert_eq!(opened.secret.expose_secret(), "sk-legacy-credential");
        assert!(!opened.current);
        // Under a new master key with the old one as previous, too.
        let rotated = Sealer::with_previous(Some(&master("new master")), Some(&master(V1_MASTER)));
        let opened = rotated.open_checked(V1_SEALED, &api_key(9)).unwrap();
        assert_eq!(opened.secret.expose_secret(), "sk-legacy-credential");
        assert!(!opened.current);
        assert!(
            Sealer::new(Some(&master("new master")))
                .open(V1_SEALED, &api_key(9))
                .is_err()
        );
        // Neither a v1 body with a v2 prefix nor garbage opens.
        assert!(
            sealer
                .open(&format!("v2:{V1_SEALED}"), &api_key(9))
                .is_err()
        );
        assert!(sealer.open("v2:", &api_key(9)).is_err());
        assert!(sealer.open("not base64!", &api_key(9)).is_err());
    }

    #[test]
    fn the_previous_master_key_opens_but_never_seals() {
        let old = Sealer::new(Some(&master("old master")));
        let sealed = old.seal("sk-secret", &api_key(1)).unwrap();
        let rotated =
            Sealer::with_previous(Some(&master("new master")), Some(&master("old master")));
        let opened = rotated.open_checked(&sealed, &api_key(1)).unwrap();
        assert_eq!(opened.secret.expose_secret(), "sk-secret");
        assert!(!opened.current, "sealed under the previous key");
        let resealed = rotated.seal("sk-secret", &api_key(1)).unwrap();
        assert!(
            rotated
                .open_checked(&resealed, &api_key(1))
                .unwrap()
                .current
        );
        assert!(old.open(&resealed, &api_key(1)).is_err());
        assert!(
            Sealer::new(Some(&master("new master")))
                .open(&resealed, &api_key(1))
                .is_ok()
        );
        // A previous key alone (no current one) does nothing.
        let orphan = Sealer::with_previous(None, Some(&master("old master")));
        assert_eq!(
            orphan.open(&sealed, &api_key(1)).unwrap_err(),
            SealError::NoMasterKey
        );
    }

    #[test]
    fn webhook_secrets_did_not_change_with_v2() {
        // Computed by aigw before v2: upgrading must not change any key's
        // webhook secret under its receiver.
        let sealer = Sealer::new(Some(&master(V1_MASTER)));
        assert_eq!(
            sealer
                .webhook_secret(Uuid::from_u128(7), "h1")
                .unwrap()
                .expose_secret(),
            "whsec_37b93db68187239e8c52b6ca030a3ecd536665beea77db2a"
        );
    }

    #[test]
    fn credential_indexes_map_to_fields() {
        let mut spec = ProviderSpec {
            sealed_credential: Some("a".into()),
            extra_credentials: vec!["b".into(), "c".into()],
            sealed_session_token: Some("t".into()),
            ..ProviderSpec::default()
        };
        assert_eq!(credential_field(&spec, 0), CredentialField::ApiKey);
        assert_eq!(credential_field(&spec, 2), CredentialField::Extra(1));
        assert_eq!(
            sealed_fields(&spec),
            vec![
                (CredentialField::ApiKey, "a"),
                (CredentialField::Extra(0), "b"),
                (CredentialField::Extra(1), "c"),
                (CredentialField::SessionToken, "t"),
            ]
        );
        spec.sealed_credential = None;
        assert_eq!(credential_field(&spec, 0), CredentialField::Extra(0));
        assert_eq!(spec.credentials()[1], "c");
        assert_eq!(credential_field(&spec, 1), CredentialField::Extra(1));
    }
}
