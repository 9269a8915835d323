//! Who is calling: API keys for `/v1` and `/stats`, the admin token for
//! `/admin/api`. Keys are checked against the in-memory registry (hash lookup,
//! no database query per request).

use std::sync::Arc;

use aigw_events::KeyStatus;
use aigw_runtime::KeyEntry;
use aigw_runtime::crypto::hash_api_key;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// The authenticated caller's key.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<KeyEntry>);

/// The admin identity that made a call (stored as the actor of events).
#[derive(Debug, Clone)]
pub struct Admin(pub String);

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

/// Middleware: requires the admin token (and an enabled admin API).
pub async fn require_admin(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let expected = state.admin_token.as_ref().ok_or(ApiError::AdminDisabled)?;
    let given = presented_key(request.headers()).ok_or(ApiError::AdminUnauthorized)?;
    // Compare digests so the comparison's timing says nothing about the token.
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    let same = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0;
    if !same {
        return Err(ApiError::AdminUnauthorized);
    }
    let identity = format!("admin:{}", &hex::encode(b)[..12]);
    request.extensions_mut().insert(Admin(identity));
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
