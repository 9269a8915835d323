//! Who is calling: API keys for `/v1` and `/stats`; for `/admin/api`, an
//! admin user's personal token, the bootstrap token (`AIGW_ADMIN_TOKEN`,
//! an owner, unless turned off), or, with no token, an admin UI session
//! cookie (`sessions`: CSRF-checked on state-changing requests). Keys and tokens are checked against the
//! in-memory registry (hash lookup, no database query per request).
//!
//! Every admin call resolves to a [`Principal`] (a session resolves to its
//! user, with the user's current roles), is checked against the role
//! table (`roles`), and carries its actor into the events it causes.

use std::sync::Arc;

use aigw_events::{KeyStatus, Role};
use aigw_runtime::KeyEntry;
use aigw_runtime::crypto::hash_api_key;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::roles::TeamScope;

/// The authenticated caller's key.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<KeyEntry>);

/// The admin identity that made a call (stored as the actor of events).
#[derive(Debug, Clone)]
pub struct Admin(pub String);

/// Who is calling the admin API, and with which roles.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None`: the bootstrap token.
    pub user_id: Option<Uuid>,
    pub name: String,
    /// The user's email (`None`: the bootstrap token).
    pub email: Option<String>,
    /// Recorded as the actor of the events the call causes.
    pub actor: String,
    pub roles: Vec<Role>,
    /// The personal token used, if any.
    pub token_id: Option<Uuid>,
    /// The admin UI session used, if signed in by its cookie.
    pub session: Option<SessionAuth>,
}

/// A request signed in by the session cookie.
#[derive(Debug, Clone)]
pub struct SessionAuth {
    pub id: Uuid,
    /// The CSRF token its state-changing requests must carry.
    pub csrf: String,
}

impl Principal {
    /// The actor of a user's calls: stable id, readable name.
    pub fn user_actor(id: Uuid, name: &str) -> String {
        format!("user:{id} ({name})")
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let token = match v.get(..6) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer") => &v[6..],
            _ => v,
        };
        return Some(token.trim()).filter(|t| !t.is_empty());
    }
    ["x-api-key", crate::dialects::gemini::KEY_HEADER]
        .into_iter()
        .find_map(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Middleware: requires a valid, active API key.
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let key = presented_key(request.headers()).ok_or(ApiError::MissingKey)?;
    let now = chrono::Utc::now();
    let hash = hash_api_key(key);
    let entry = match state.registry.key_by_hash(&hash, now) {
        Some(entry) => entry,
        None => state
            .registry
            .find_missing_key(&hash, now)
            .await
            .ok_or(ApiError::InvalidKey)?,
    };
    match entry.status() {
        KeyStatus::Active => {}
        KeyStatus::Revoked => return Err(ApiError::RevokedKey),
        KeyStatus::Unissued => return Err(ApiError::InvalidKey),
    }
    if entry.state.is_expired(now) {
        return Err(ApiError::ExpiredKey);
    }
    // The key's id, never the key.
    aigw_runtime::traces::attr(
        &tracing::Span::current(),
        "aigw.key_id",
        entry.id.to_string(),
    );
    request.extensions_mut().insert(Caller(entry));
    metrics::histogram!("aigw_auth_seconds").record(started.elapsed().as_secs_f64());
    Ok(next.run(request).await)
}

/// The bootstrap owner, if `given` is the bootstrap token and it is on.
fn bootstrap(state: &AppState, given: &str) -> Option<Principal> {
    if state.admin_token_disabled {
        return None;
    }
    let expected = state.admin_token.as_ref()?;
    // Compare digests so the comparison's timing says nothing about the token.
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    let same = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0;
    same.then(|| Principal {
        user_id: None,
        name: "bootstrap".into(),
        email: None,
        actor: format!("admin:{}", &hex::encode(b)[..12]),
        roles: vec![Role::Owner],
        token_id: None,
        session: None,
    })
}

/// Resolves the admin principal of a presented token.
async fn admin_principal(state: &AppState, given: &str) -> Result<Principal, ApiError> {
    if let Some(owner) = bootstrap(state, given) {
        return Ok(owner);
    }
    let now = chrono::Utc::now();
    let hash = hash_api_key(given);
    match state.registry.find_user_token(&hash, now).await {
        Some((user, token)) => Ok(Principal {
            user_id: Some(user.id),
            name: user.state.name.clone(),
            email: Some(user.state.email.clone()),
            actor: Principal::user_actor(user.id, &user.state.name),
            roles: user.state.roles.clone(),
            token_id: Some(token.id),
            session: None,
        }),
        // No way in at all: say the admin API is off, as before users.
        None if state.admin_token.is_none() && !state.registry.has_users() => {
            Err(ApiError::AdminDisabled)
        }
        None => Err(ApiError::AdminUnauthorized),
    }
}

/// Middleware: requires an admin principal whose roles allow the route
/// (see `roles`).
pub async fn require_admin(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = match presented_key(request.headers()) {
        Some(given) => admin_principal(&state, given).await?,
        None => match crate::sessions::principal(&state, request.headers()).await? {
            Some(p) => p,
            None if state.admin_token.is_none() && !state.registry.has_users() => {
                return Err(ApiError::AdminDisabled);
            }
            None => return Err(ApiError::AdminUnauthorized),
        },
    };
    if let Some(session) = &principal.session {
        crate::sessions::check_csrf(&state, request.method(), request.headers(), session)?;
    }
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let scope = crate::roles::authorize(
        &state,
        &principal,
        request.method(),
        &template,
        request.uri(),
    )?;
    request
        .extensions_mut()
        .insert(Admin(principal.actor.clone()));
    request.extensions_mut().insert(scope);
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::MissingKey)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::AdminUnauthorized)
    }
}

/// The route's team scope, as `require_admin` decided it.
impl<S: Send + Sync> FromRequestParts<S> for TeamScope {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TeamScope>()
            .cloned()
            .ok_or(ApiError::AdminUnauthorized)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Admin>()
            .cloned()
            .ok_or(ApiError::AdminUnauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_header_styles() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", "aig_a".parse().unwrap());
        assert_eq!(presented_key(&h), Some("aig_a"));
        h.insert("authorization", "Bearer aig_b".parse().unwrap());
        assert_eq!(presented_key(&h), Some("aig_b"));
        h.insert("authorization", "bearer   aig_c ".parse().unwrap());
        assert_eq!(presented_key(&h), Some("aig_c"));
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(presented_key(&h), None);
        h.insert("authorization", "Bearer".parse().unwrap());
        assert_eq!(presented_key(&h), None);
        // Gemini's header, as its clients send it.
        let mut h = HeaderMap::new();
        h.insert("x-goog-api-key", " aig_g ".parse().unwrap());
        assert_eq!(presented_key(&h), Some("aig_g"));
    }
}
