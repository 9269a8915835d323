//! Single sign-on to the admin UI with OpenID Connect: the authorization
//! code flow with PKCE (`GET /admin/auth/oidc/login`, `GET
//! /admin/auth/oidc/callback`).
//!
//! Invariants:
//! - no login state lives in a process: `state`, `nonce` and the PKCE
//!   verifier travel in a login cookie sealed (AES-256-GCM) under a key
//!   derived from `AIGW_MASTER_KEY`, valid 10 minutes, so any replica can
//!   finish a login any replica began;
//! - the provider's discovery document must name the configured issuer;
//!   it and the JWKS are cached in memory (metadata only, 10 minutes; the
//!   JWKS is read again when a token names an unknown key);
//! - an ID token is accepted only with a signature of an asymmetric
//!   algorithm by a key of the JWKS, `iss` the issuer, `aud` the client id,
//!   `exp` ahead (60 s leeway), the login's `nonce`, an `email` (not
//!   marked unverified) in an allowed domain and at least one role; every
//!   refusal is a failed sign-in event with its reason and a 401/403 in
//!   the admin API's error shape;
//! - a user is created at their first sign-in, and at each sign-in the
//!   roles named in the role map follow the provider's claims (a disabled
//!   user stays out); the last owner keeps the owner role.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw_events::{AdminUserCommand, Role};
use axum::Extension;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::Rng;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::sessions::{self, SessionConfig, client_info, cookie, set_cookie};
use crate::sso_config::{OidcSettings, mapped_roles};

/// The login cookie's name, and its sealing purpose.
const LOGIN_COOKIE: &str = "aigw_oidc_login";
const LOGIN_PATH: &str = "/admin/auth/oidc";
const LOGIN_TTL_SECS: i64 = 600;
const METADATA_TTL: Duration = Duration::from_secs(600);
/// Least time between two JWKS reads for an unknown key id.
const JWKS_REFRESH: Duration = Duration::from_secs(10);
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
const MAX_PARAM_BYTES: usize = 4096;
/// Where the browser goes after signing in.
pub const UI_HOME: &str = "/admin/";

/// What discovery says (the fields aigw uses).
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

#[derive(Debug)]
struct Cached {
    discovery: Discovery,
    jwks: JwkSet,
    fetched: Instant,
    jwks_fetched: Instant,
}

/// Single sign-on: settings and the provider's cached metadata.
#[derive(Debug)]
pub struct Oidc {
    pub settings: OidcSettings,
    cache: RwLock<Option<Cached>>,
}

/// What the login cookie holds.
#[derive(Debug, Serialize, Deserialize)]
struct Login {
    state: String,
    nonce: String,
    verifier: String,
    /// Unix seconds after which it is refused.
    exp: i64,
}

/// Why a sign-in was refused: the reason recorded and the code returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    LoginExpired,
    BadState,
    ProviderError,
    TokenExchange,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    BadNonce,
    InvalidToken,
    NoEmail,
    EmailNotVerified,
    DomainNotAllowed,
    NoRole,
    UserDisabled,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::LoginExpired => "login_expired",
            Refusal::BadState => "bad_state",
            Refusal::ProviderError => "provider_error",
            Refusal::TokenExchange => "token_exchange_failed",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::Expired => "token_expired",
            Refusal::BadNonce => "bad_nonce",
            Refusal::InvalidToken => "invalid_id_token",
            Refusal::NoEmail => "no_email",
            Refusal::EmailNotVerified => "email_not_verified",
            Refusal::DomainNotAllowed => "domain_not_allowed",
            Refusal::NoRole => "no_role",
            Refusal::UserDisabled => "user_disabled",
        }
    }

    fn error(self) -> ApiError {
        let message = match self {
            Refusal::DomainNotAllowed => {
                "Single sign-on refused: this email domain may not sign in."
            }
            Refusal::NoRole => "Single sign-on refused: your groups grant no aigw role.",
            Refusal::UserDisabled => "Single sign-on refused: this user is disabled.",
            Refusal::LoginExpired | Refusal::BadState => {
                "Single sign-on failed: the login expired or came from another browser; start again."
            }
            _ => "Single sign-on failed: the identity provider's answer was refused.",
        };
        ApiError::Forbidden {
            message: message.into(),
            code: self.reason(),
        }
    }
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, Refusal> {
    let response = http.get(url).send().await.map_err(|e| {
        tracing::warn!(error = %e, url, "single sign-on: provider unreachable");
        Refusal::ProviderError
    })?;
    read_json(response).await
}

async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, Refusal> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(|_| Refusal::ProviderError)?;
    if !status.is_success() || bytes.len() > MAX_DOCUMENT_BYTES {
        tracing::warn!(%status, bytes = bytes.len(), "single sign-on: provider answer refused");
        return Err(Refusal::ProviderError);
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        tracing::warn!(error = %e, "single sign-on: provider answer unreadable");
        Refusal::ProviderError
    })
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Self {
        Self {
            settings,
            cache: RwLock::new(None),
        }
    }

    async fn discovery(&self, http: &reqwest::Client) -> Result<Discovery, Refusal> {
        if let Some(c) = self.cache.read().await.as_ref()
            && c.fetched.elapsed() < METADATA_TTL
        {
            return Ok(c.discovery.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer);
        let discovery: Discovery = get_json(http, &url).await?;
        if discovery.issuer.trim_end_matches('/') != self.settings.issuer {
            tracing::warn!(
                discovered = %discovery.issuer,
                "single sign-on: the discovery document names another issuer"
            );
            return Err(Refusal::ProviderError);
        }
        let jwks: JwkSet = get_json(http, &discovery.jwks_uri).await?;
        let now = Instant::now();
        *self.cache.write().await = Some(Cached {
            discovery: discovery.clone(),
            jwks,
            fetched: now,
            jwks_fetched: now,
        });
        Ok(discovery)
    }

    /// The key `kid` names (the only key if the token names none), reading
    /// the JWKS again if it is unknown.
    async fn key(&self, http: &reqwest::Client, kid: Option<&str>) -> Result<DecodingKey, Refusal> {
        let find = |jwks: &JwkSet| -> Option<DecodingKey> {
            let jwk = match kid {
                Some(kid) => jwks.find(kid)?,
                None if jwks.keys.len() == 1 => jwks.keys.first()?,
                None => return None,
            };
            DecodingKey::from_jwk(jwk).ok()
        };
        let stale = {
            let cache = self.cache.read().await;
            let cached = cache.as_ref().ok_or(Refusal::ProviderError)?;
            if let Some(key) = find(&cached.jwks) {
                return Ok(key);
            }
            cached.jwks_fetched.elapsed() >= JWKS_REFRESH
        };
        if !stale {
            return Err(Refusal::BadSignature);
        }
        let uri = self.discovery(http).await?.jwks_uri;
        let jwks: JwkSet = get_json(http, &uri).await?;
        let key = find(&jwks);
        if let Some(c) = self.cache.write().await.as_mut() {
            c.jwks = jwks;
            c.jwks_fetched = Instant::now();
        }
        key.ok_or(Refusal::BadSignature)
    }

    /// Checks an ID token; its claims.
    async fn verify(
        &self,
        http: &reqwest::Client,
        id_token: &str,
        nonce: &str,
    ) -> Result<Value, Refusal> {
        let header = jsonwebtoken::decode_header(id_token).map_err(|_| Refusal::InvalidToken)?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(Refusal::BadSignature);
        }
        let key = self.key(http, header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[
            self.settings.issuer.as_str(),
            format!("{}/", self.settings.issuer).as_str(),
        ]);
        validation.set_audience(&[self.settings.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 60;
        let data = jsonwebtoken::decode::<Value>(id_token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature | K::InvalidAlgorithm | K::InvalidKeyFormat => {
                    Refusal::BadSignature
                }
                K::ExpiredSignature => Refusal::Expired,
                K::InvalidAudience => Refusal::WrongAudience,
                K::InvalidIssuer => Refusal::WrongIssuer,
                _ => Refusal::InvalidToken,
            }
        })?;
        let claims = data.claims;
        let given = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if given.is_empty() || given != nonce {
            return Err(Refusal::BadNonce);
        }
        Ok(claims)
    }
}

fn login_cookie(
    config: &SessionConfig,
    value: &str,
    max_age: u64,
) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&set_cookie(
        config,
        LOGIN_COOKIE,
        value,
        LOGIN_PATH,
        max_age,
    ))
    .map_err(ApiError::internal)
}

fn sso_off() -> ApiError {
    ApiError::NotFound {
        message: "Single sign-on is not configured.".into(),
        code: "sso_disabled",
    }
}

/// `GET /admin/auth/oidc/login`: sends the browser to the provider.
pub async fn login(State(state): State<AppState>) -> Result<Response, ApiError> {
    let oidc = state.oidc.clone().ok_or_else(sso_off)?;
    let discovery = oidc
        .discovery(&state.http)
        .await
        .map_err(|_| ApiError::Unavailable("The identity provider cannot be reached.".into()))?;
    let login = Login {
        state: random_token(),
        nonce: random_token(),
        verifier: format!("{}{}", random_token(), random_token()),
        exp: Utc::now().timestamp() + LOGIN_TTL_SECS,
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(login.verifier.as_bytes()));
    let mut url = reqwest::Url::parse(&discovery.authorization_endpoint).map_err(|_| {
        ApiError::Unavailable("The identity provider's discovery is invalid.".into())
    })?;
    let scopes = if oidc
        .settings
        .scopes
        .split_whitespace()
        .any(|s| s == "openid")
    {
        oidc.settings.scopes.clone()
    } else {
        format!("openid {}", oidc.settings.scopes)
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.settings.client_id)
        .append_pair("redirect_uri", &oidc.settings.redirect_url)
        .append_pair("scope", &scopes)
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let plain = serde_json::to_string(&login).map_err(ApiError::internal)?;
    let sealed = state
        .sealer
        .seal_cookie(&plain, LOGIN_COOKIE)
        .map_err(ApiError::internal)?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(url.as_str()).map_err(ApiError::internal)?,
    );
    headers.insert(
        header::SET_COOKIE,
        login_cookie(&state.sessions, &sealed, LOGIN_TTL_SECS as u64)?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The provider's answer to the redirect.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// RFC 9207: the issuer of the answer.
    #[serde(default)]
    iss: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    id_token: String,
}

/// Exchanges the code for the provider's tokens (with the PKCE verifier).
async fn exchange(
    state: &AppState,
    oidc: &Oidc,
    code: &str,
    verifier: &str,
) -> Result<TokenAnswer, Refusal> {
    let discovery = oidc.discovery(&state.http).await?;
    let s = &oidc.settings;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", s.redirect_url.as_str()),
        ("code_verifier", verifier),
        ("client_id", s.client_id.as_str()),
    ];
    let basic = discovery
        .token_endpoint_auth_methods_supported
        .as_ref()
        .is_none_or(|m| m.iter().any(|m| m == "client_secret_basic"));
    let mut request = state.http.post(&discovery.token_endpoint);
    if basic {
        request = request.basic_auth(&s.client_id, Some(s.client_secret.expose_secret()));
    } else {
        form.push(("client_secret", s.client_secret.expose_secret()));
    }
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&");
    let response = request
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "single sign-on: token endpoint unreachable");
            Refusal::TokenExchange
        })?;
    read_json(response)
        .await
        .map_err(|_| Refusal::TokenExchange)
}

fn percent(value: &str) -> String {
    reqwest::Url::parse_with_params("x:", &[("v", value)])
        .ok()
        .and_then(|u| u.query().map(|q| q.trim_start_matches("v=").to_string()))
        .unwrap_or_default()
}

/// The checked claims of a sign-in.
struct Identity {
    email: String,
    name: String,
    roles: Vec<Role>,
}

fn identity(
    settings: &OidcSettings,
    claims: &Value,
) -> Result<Identity, (Option<String>, Refusal)> {
    let email = claims
        .get("email")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| e.len() <= 254 && e.contains('@') && !e.chars().any(char::is_control))
        .ok_or((None, Refusal::NoEmail))?
        .to_string();
    if claims.get("email_verified").and_then(Value::as_bool) == Some(false) {
        return Err((Some(email), Refusal::EmailNotVerified));
    }
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    if !settings.allowed_domains.is_empty() && !settings.allowed_domains.contains(&domain) {
        return Err((Some(email), Refusal::DomainNotAllowed));
    }
    let name: String = ["name", "preferred_username"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_str))
        .unwrap_or(&email)
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect();
    let name = if name.trim().is_empty() {
        email.clone()
    } else {
        name.trim().to_string()
    };
    Ok(Identity {
        roles: mapped_roles(&settings.rules, claims),
        email,
        name,
    })
}

/// Creates the user at their first sign-in, or makes their mapped roles
/// follow the provider; the user's id.
async fn sync_user(
    state: &AppState,
    settings: &OidcSettings,
    who: &Identity,
) -> Result<Result<Uuid, Refusal>, ApiError> {
    let actor = format!("oidc:{}", settings.issuer);
    let now = Utc::now();
    // A team admin role of a team that does not exist (any more) is not given.
    let mapped: Vec<Role> = who
        .roles
        .iter()
        .filter(|r| match r {
            Role::TeamAdmin { team_id } => state.registry.team(*team_id).is_some(),
            _ => true,
        })
        .copied()
        .collect();
    let existing = state
        .registry
        .users()
        .into_iter()
        .find(|u| u.state.email.eq_ignore_ascii_case(&who.email));
    let Some(user) = existing else {
        if mapped.is_empty() {
            return Ok(Err(Refusal::NoRole));
        }
        let id = Uuid::now_v7();
        let command = AdminUserCommand::CreateUser {
            name: who.name.clone(),
            email: who.email.clone(),
            roles: mapped,
            actor: actor.clone(),
            at: now,
        };
        crate::users::user_command(state, id, &actor, command).await?;
        return Ok(Ok(id));
    };
    if !user.state.is_active() {
        return Ok(Err(Refusal::UserDisabled));
    }
    let managed: Vec<Role> = settings.rules.iter().map(|r| r.role).collect();
    let other_owner = state
        .registry
        .users()
        .iter()
        .any(|u| u.id != user.id && u.state.is_owner());
    let keep_owner = user.state.is_owner() && !other_owner;
    let mut wanted: Vec<Role> = user
        .state
        .roles
        .iter()
        .filter(|r| !managed.contains(r) || (keep_owner && **r == Role::Owner))
        .copied()
        .chain(mapped.iter().copied())
        .collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(Err(Refusal::NoRole));
    }
    for role in wanted.iter().filter(|r| !user.state.roles.contains(r)) {
        let command = AdminUserCommand::GrantRole {
            role: *role,
            actor: actor.clone(),
            at: now,
        };
        crate::users::user_command(state, user.id, &actor, command).await?;
    }
    for role in user.state.roles.iter().filter(|r| !wanted.contains(r)) {
        let command = AdminUserCommand::RevokeRole {
            role: *role,
            actor: actor.clone(),
            at: now,
        };
        crate::users::user_command(state, user.id, &actor, command).await?;
    }
    Ok(Ok(user.id))
}

/// `GET /admin/auth/oidc/callback`: checks the provider's answer, signs
/// the user in and sends the browser to the UI.
pub async fn callback(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let oidc = state.oidc.clone().ok_or_else(sso_off)?;
    let client = client_info(&headers, peer.as_ref());
    let outcome = finish(&state, &oidc, &headers, query.ok().map(|q| q.0)).await?;
    let clear_login = login_cookie(&state.sessions, "", 0)?;
    let (user_id, email) = match outcome {
        Ok(found) => found,
        Err((email, refusal)) => {
            sessions::record_failure(&state, email, refusal.reason(), client).await;
            let mut response = refusal.error().into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, clear_login);
            return Ok(response);
        }
    };
    let session = sessions::open(&state, user_id, email, client).await?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static(UI_HOME));
    h.append(header::SET_COOKIE, clear_login);
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_str(&session).map_err(ApiError::internal)?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

type Outcome = Result<(Uuid, String), (Option<String>, Refusal)>;

async fn finish(
    state: &AppState,
    oidc: &Arc<Oidc>,
    headers: &HeaderMap,
    query: Option<CallbackQuery>,
) -> Result<Outcome, ApiError> {
    let bounded = |v: &Option<String>| v.as_ref().is_none_or(|v| v.len() <= MAX_PARAM_BYTES);
    let Some(query) = query.filter(|q| bounded(&q.code) && bounded(&q.state) && bounded(&q.iss))
    else {
        return Ok(Err((None, Refusal::BadState)));
    };
    let login: Option<Login> = cookie(headers, LOGIN_COOKIE)
        .and_then(|c| state.sealer.open_cookie(c, LOGIN_COOKIE).ok())
        .and_then(|plain| serde_json::from_str(&plain).ok())
        .filter(|l: &Login| l.exp > Utc::now().timestamp());
    let Some(login) = login else {
        return Ok(Err((None, Refusal::LoginExpired)));
    };
    if query.state.as_deref() != Some(login.state.as_str()) {
        return Ok(Err((None, Refusal::BadState)));
    }
    if query.error.is_some() {
        return Ok(Err((None, Refusal::ProviderError)));
    }
    if let Some(iss) = &query.iss
        && iss.trim_end_matches('/') != oidc.settings.issuer
    {
        return Ok(Err((None, Refusal::WrongIssuer)));
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        return Ok(Err((None, Refusal::ProviderError)));
    };
    let tokens = match exchange(state, oidc, code, &login.verifier).await {
        Ok(t) => t,
        Err(r) => return Ok(Err((None, r))),
    };
    let claims = match oidc
        .verify(&state.http, &tokens.id_token, &login.nonce)
        .await
    {
        Ok(c) => c,
        Err(r) => return Ok(Err((None, r))),
    };
    let who = match identity(&oidc.settings, &claims) {
        Ok(who) => who,
        Err(refused) => return Ok(Err(refused)),
    };
    Ok(match sync_user(state, &oidc.settings, &who).await? {
        Ok(id) => Ok((id, who.email)),
        Err(r) => Err((Some(who.email), r)),
    })
}

/// `GET /admin/auth/config`: what the sign-in page offers.
pub async fn auth_config(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(serde_json::json!({
        "object": "auth_config",
        "sso": state.oidc.is_some(),
        "sso_login_url": state.oidc.as_ref().map(|_| format!("{LOGIN_PATH}/login")),
    }))
}
