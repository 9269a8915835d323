//! Admin UI sessions: the session cookie, what a request signed in by it
//! may do (CSRF), logout, and the sign-in history (`GET
//! /admin/api/sign-ins`).
//!
//! Invariants:
//! - the cookie holds a random secret (256 bits); only its SHA-256 is
//!   stored, and the session is looked up in the database on each request,
//!   so logout, expiry and a disabled user hold on every replica;
//! - the cookie is HttpOnly, SameSite=Lax, Path=/, and Secure unless
//!   `AIGW_SESSION_COOKIE_SECURE=false`;
//! - a state-changing request (anything but GET, HEAD, OPTIONS) signed in by
//!   the cookie must carry `x-aigw-csrf` equal to the session's CSRF token
//!   (from `GET /admin/api/me`) and an `Origin` of this gateway (the
//!   request's own host, the redirect URL's origin, or one of
//!   `AIGW_ADMIN_CORS_ORIGINS`): 403 `csrf_failed` otherwise. Bearer tokens
//!   need neither;
//! - every sign-in, failed sign-in and session end is an event of the
//!   sign-in aggregate, with the client's IP and user agent (cut to 64 and
//!   512 bytes).

use std::net::SocketAddr;
use std::time::Duration;

use aigw_events::{ClientInfo, SignInCommand};
use aigw_runtime::crypto::hash_api_key;
use aigw_runtime::sessions;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::admin::{NotFound, command_error};
use crate::auth::{Principal, SessionAuth};
use crate::error::ApiError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "aigw_session";
/// The header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-aigw-csrf";
const MAX_IP_BYTES: usize = 64;
const MAX_AGENT_BYTES: usize = 512;
const MAX_COOKIE_BYTES: usize = 256;

impl NotFound for aigw_events::SignInError {
    fn is_not_found(&self) -> bool {
        matches!(self, aigw_events::SignInError::NoSession)
    }
}

/// How sessions behave.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub secure: bool,
    pub idle: Duration,
    pub max_age: Duration,
    /// Origins (`scheme://host[:port]`) besides the request's own host that
    /// may send state-changing requests with the cookie.
    pub origins: Vec<String>,
}

/// A cookie's value by name, if present (bounded).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= MAX_COOKIE_BYTES * 8)
}

/// A `Set-Cookie` value.
pub fn set_cookie(
    config: &SessionConfig,
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if config.secure { "; Secure" } else { "" }
    )
}

fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The client's IP (the connection's peer) and user agent.
pub fn client_info(
    headers: &HeaderMap,
    peer: Option<&Extension<ConnectInfo<SocketAddr>>>,
) -> ClientInfo {
    ClientInfo {
        ip: peer.map(|p| cut(&p.0.0.ip().to_string(), MAX_IP_BYTES)),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| cut(v, MAX_AGENT_BYTES)),
    }
}

/// Records one sign-in event and folds it into the history.
pub async fn record(state: &AppState, id: Uuid, command: SignInCommand) -> Result<(), ApiError> {
    state
        .stores
        .sign_ins
        .execute(&id.to_string(), command)
        .await
        .map_err(|e| command_error(e, "sign-in"))?;
    sessions::refresh_sign_in(&state.stores.pool, id)
        .await
        .map_err(ApiError::internal)
}

/// Records a failed sign-in (best effort: a failure to record it is logged,
/// the caller still gets the refusal).
pub async fn record_failure(
    state: &AppState,
    email: Option<String>,
    reason: &str,
    client: ClientInfo,
) {
    let command = SignInCommand::Fail {
        email,
        method: "oidc".into(),
        reason: reason.into(),
        client,
        at: Utc::now(),
    };
    if let Err(e) = record(state, Uuid::now_v7(), command).await {
        tracing::warn!(error = %e, "recording a failed sign-in failed");
    }
}

/// Opens a session for `user_id`: stores its hash, records the sign-in,
/// and returns the `Set-Cookie` value.
pub async fn open(
    state: &AppState,
    user_id: Uuid,
    email: String,
    client: ClientInfo,
) -> Result<String, ApiError> {
    let config = &state.sessions;
    let bytes: [u8; 32] = rand::rng().random();
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let id = Uuid::now_v7();
    let now = Utc::now();
    let expires_at =
        now + chrono::Duration::from_std(config.max_age).map_err(ApiError::internal)?;
    sessions::create(
        &state.stores.pool,
        id,
        &hash_api_key(&secret),
        user_id,
        now,
        expires_at,
    )
    .await
    .map_err(ApiError::internal)?;
    let command = SignInCommand::Succeed {
        user_id,
        email,
        method: "oidc".into(),
        expires_at,
        client,
        at: now,
    };
    record(state, id, command).await?;
    Ok(set_cookie(
        config,
        SESSION_COOKIE,
        &secret,
        "/",
        config.max_age.as_secs(),
    ))
}

/// The principal of a live session cookie, if the request carries one.
pub async fn principal(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let now = Utc::now();
    let Some(session) = sessions::find_live(
        &state.stores.pool,
        &hash_api_key(secret),
        state.sessions.idle,
        now,
    )
    .await
    .map_err(ApiError::internal)?
    else {
        return Ok(None);
    };
    let Some(user) = state.registry.user(session.user_id) else {
        return Ok(None);
    };
    if !user.state.is_active() {
        return Ok(None);
    }
    let csrf = state
        .sealer
        .csrf_token(secret)
        .map_err(ApiError::internal)?;
    Ok(Some(Principal {
        user_id: Some(user.id),
        name: user.state.name.clone(),
        email: Some(user.state.email.clone()),
        actor: Principal::user_actor(user.id, &user.state.name),
        roles: user.state.roles.clone(),
        token_id: None,
        session: Some(SessionAuth {
            id: session.id,
            csrf,
        }),
    }))
}

fn csrf_failed(message: &str) -> ApiError {
    ApiError::Forbidden {
        message: message.into(),
        code: "csrf_failed",
    }
}

/// Refuses a state-changing request signed in by the cookie without the
/// session's CSRF token or from another origin.
pub fn check_csrf(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    session: &SessionAuth,
) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let same = given.len() == session.csrf.len()
        && given
            .bytes()
            .zip(session.csrf.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(csrf_failed(
            "A request signed in by the session cookie must carry the session's CSRF token in x-aigw-csrf.",
        ));
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            csrf_failed("A request signed in by the session cookie must carry an Origin.")
        })?;
    let own = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|host| {
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        });
    if own
        || state
            .sessions
            .origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    Err(csrf_failed("This origin may not use the session cookie."))
}

/// Ends a session: the row, then its event.
async fn end(
    state: &AppState,
    id: Uuid,
    reason: &str,
    actor: &str,
    client: ClientInfo,
) -> Result<(), ApiError> {
    sessions::end(&state.stores.pool, id, Utc::now())
        .await
        .map_err(ApiError::internal)?;
    let command = SignInCommand::End {
        reason: reason.into(),
        actor: actor.into(),
        client,
        at: Utc::now(),
    };
    record(state, id, command).await
}

/// Ends every open session of a disabled user (as `actor`).
pub async fn end_all_of_user(state: &AppState, user_id: Uuid, actor: &str) -> Result<(), ApiError> {
    let ids = sessions::open_of_user(&state.stores.pool, user_id)
        .await
        .map_err(ApiError::internal)?;
    for id in ids {
        end(state, id, "user_disabled", actor, ClientInfo::default()).await?;
    }
    Ok(())
}

fn clear_cookie(state: &AppState) -> HeaderValue {
    HeaderValue::from_str(&set_cookie(&state.sessions, SESSION_COOKIE, "", "/", 0))
        .unwrap_or_else(|_| HeaderValue::from_static("aigw_session=; Path=/; Max-Age=0"))
}

/// `POST /admin/auth/logout`: ends the cookie's session (CSRF checked) and
/// clears the cookie; 204 also when there was no live session.
pub async fn logout(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(principal) = principal(&state, &headers).await?
        && let Some(session) = &principal.session
    {
        check_csrf(&state, &method, &headers, session)?;
        let client = client_info(&headers, peer.as_ref());
        end(&state, session.id, "logout", &principal.actor, client).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(&state));
    Ok(response)
}

/// Paging of the sign-in history.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// 1-200 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Only rows older than this `seq` (the previous page's `next_before`).
    #[serde(default)]
    pub before: Option<i64>,
    /// Only this user's sign-ins.
    #[serde(default)]
    pub user_id: Option<Uuid>,
}

#[utoipa::path(
    get,
    path = "/admin/api/sign-ins",
    tag = "users",
    summary = "The sign-in history (successes, failures with their reason, session ends), newest first",
    params(
        ("limit" = Option<i64>, Query, description = "1-200 (default 50)."),
        ("before" = Option<i64>, Query, description = "Only rows older than this seq (the previous page's next_before)."),
        ("user_id" = Option<String>, Query, description = "Only this user's sign-ins."),
    ),
    responses((status = 200, description = "One page of the history.", body = Object))
)]
pub async fn sign_ins(
    State(state): State<AppState>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest {
        message: e.body_text(),
        param: None,
        code: None,
    })?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest {
            message: "'limit' must be 1-200.".into(),
            param: Some("limit"),
            code: None,
        });
    }
    let rows = sessions::history(&state.stores.pool, query.before, query.user_id, limit)
        .await
        .map_err(ApiError::internal)?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(Json(json!({
        "object": "list",
        "data": rows,
        "next_before": next_before,
    })))
}
