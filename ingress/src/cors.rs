//! Cross-origin access (CORS), decided separately for the admin API and for
//! everything else.
//!
//! Invariants: `/admin/api` answers no other origin unless
//! `AIGW_ADMIN_CORS_ORIGINS` names it (default: none, same-origin only:
//! no `access-control-*` header, and a preflight is not approved); `/v1`,
//! `/stats` and the public routes follow `AIGW_CORS_ORIGINS` (default `*`,
//! so SDKs in browsers work). Origins are checked at start: each must be
//! `scheme://host[:port]`, nothing else.

use std::sync::Arc;

use aigw_runtime::RuntimeError;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::EXPOSED_HEADERS;

/// The origins allowed on each side; `None`: same-origin only.
#[derive(Debug, Clone, Default)]
pub struct CorsConfig {
    pub api: Option<CorsLayer>,
    pub admin: Option<CorsLayer>,
}

const ADMIN_PREFIX: &str = "/admin/api";

impl CorsConfig {
    /// From the two settings (`*`, a comma-separated list, or empty).
    pub fn parse(api: &str, admin: &str) -> Result<Self, RuntimeError> {
        Ok(Self {
            api: layer("AIGW_CORS_ORIGINS", api)?,
            admin: layer("AIGW_ADMIN_CORS_ORIGINS", admin)?,
        })
    }
}

fn layer(setting: &str, value: &str) -> Result<Option<CorsLayer>, RuntimeError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let origins: AllowOrigin = if value == "*" {
        Any.into()
    } else {
        let list = value
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| origin(setting, o))
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Ok(None);
        }
        list.into()
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods(Any)
            .allow_headers(Any)
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static)),
    ))
}

/// One origin, as a browser sends it: `scheme://host[:port]`.
fn origin(setting: &str, value: &str) -> Result<HeaderValue, RuntimeError> {
    let value = value.trim_end_matches('/');
    let fine = value.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "http" | "https")
            && !rest.is_empty()
            && !rest.contains(['/', '?', '#', '@', '*'])
    });
    let header = HeaderValue::from_str(value).ok().filter(|_| fine);
    header.ok_or_else(|| {
        RuntimeError::Config(format!(
            "{setting}: {value:?} is not an origin like https://app.example.com (or `*`)"
        ))
    })
}

/// Middleware: answers CORS for the side the path belongs to.
pub async fn cors(State(config): State<Arc<CorsConfig>>, request: Request, next: Next) -> Response {
    let side = if request.uri().path().starts_with(ADMIN_PREFIX) {
        &config.admin
    } else {
        &config.api
    };
    match side {
        None => next.run(request).await,
        Some(layer) => match layer.clone().layer(next).oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(layer("X", "").unwrap().is_none());
        assert!(layer("X", " , ").unwrap().is_none());
        assert!(layer("X", "*").unwrap().is_some());
        assert!(
            layer("X", "https://a.example.com, http://localhost:3000/")
                .unwrap()
                .is_some()
        );
        for bad in [
            "example.com",
            "https://a.com/path",
            "ftp://a.com",
            "https://",
            "https://*.a.com",
        ] {
            assert!(layer("X", bad).is_err(), "{bad}");
        }
    }
}
