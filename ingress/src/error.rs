//! Every error the HTTP API returns, as OpenAI's error JSON with its status.

use aigw_events::wire::error_body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
        code: Option<&'static str>,
    },
    #[error("missing API key")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("revoked API key")]
    RevokedKey,
    #[error("expired API key")]
    ExpiredKey,
    #[error("{message}")]
    Forbidden { message: String, code: &'static str },
    #[error("rate limited")]
    RateLimited {
        retry_after: u64,
        headers: crate::admission::RateHeaders,
        /// The level whose limit refused: `key`, `project` or `team`.
        level: &'static str,
    },
    #[error("{message}")]
    InsufficientQuota {
        message: String,
        headers: crate::admission::RateHeaders,
    },
    /// All of the key's `max_concurrency` slots are taken.
    #[error("concurrency limit of {0} reached")]
    ConcurrencyLimited(u32),
    /// The key has as many jobs queued or running as it may.
    #[error("{0} jobs open")]
    TooManyJobs(u64),
    /// The request body did not arrive within the body timeout.
    #[error("request body timed out")]
    BodyTimeout,
    /// A stream refused the request because it is full.
    #[error("queue full: {0}")]
    QueueFull(String),
    #[error("admin API disabled")]
    AdminDisabled,
    #[error("invalid admin token")]
    AdminUnauthorized,
    #[error("{message}")]
    NotFound { message: String, code: &'static str },
    /// `previous_response_id` names no stored response of the caller's.
    #[error("previous response {0} not found")]
    PreviousResponseNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("body over {0} bytes")]
    PayloadTooLarge(usize),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// An error answered by a dispatcher, passed on as is.
    #[error("upstream answered {status}")]
    Relayed {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<String>,
    },
    #[error("no answer in time")]
    Timeout,
    /// No dispatcher answered a request only a dispatcher answers (the
    /// admin's provider test): none is running, or none in time.
    #[error("no dispatcher answered")]
    NoDispatcher,
    /// The request was recorded but its answer was lost on its way back
    /// (`crate::lost_answer`).
    #[error("answer of request {0} lost in transit")]
    AnswerLost(uuid::Uuid),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message, kind, code, retry_after): (
            StatusCode,
            String,
            &str,
            Option<&str>,
            Option<String>,
        ) = match &self {
            ApiError::BadRequest {
                message,
                param,
                code,
            } => {
                let mut body = error_body(message, "invalid_request_error", *code);
                body["error"]["param"] = (*param).into();
                return json(StatusCode::BAD_REQUEST, &body, None);
            }
            ApiError::PreviousResponseNotFound(id) => {
                let message = format!("Previous response with id '{id}' not found.");
                let mut body = error_body(
                    &message,
                    "invalid_request_error",
                    Some("previous_response_not_found"),
                );
                body["error"]["param"] = "previous_response_id".into();
                return json(StatusCode::NOT_FOUND, &body, None);
            }
            ApiError::MissingKey => (
                StatusCode::UNAUTHORIZED,
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.".into(),
                "invalid_request_error",
                Some("missing_api_key"),
                None,
            ),
            ApiError::InvalidKey => (
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.".into(),
                "invalid_request_error",
                Some("invalid_api_key"),
                None,
            ),
            ApiError::RevokedKey => (
                StatusCode::UNAUTHORIZED,
                "This API key has been revoked.".into(),
                "invalid_request_error",
                Some("revoked_api_key"),
                None,
            ),
            ApiError::ExpiredKey => (
                StatusCode::UNAUTHORIZED,
                "This API key has expired.".into(),
                "invalid_request_error",
                Some("expired_api_key"),
                None,
            ),
            ApiError::Forbidden { message, code } => (
                StatusCode::FORBIDDEN,
                message.clone(),
                "permission_error",
                Some(code),
                None,
            ),
            ApiError::RateLimited {
                retry_after,
                headers,
                level,
            } => {
                let message = match *level {
                    "key" => "Rate limit reached for this key. Retry after the time in the Retry-After header.".to_string(),
                    level => format!("{level} rate limit reached: the rate limit of this key's {level} is reached. Retry after the time in the Retry-After header."),
                };
                let body = error_body(
                    &message,
                    "requests",
                    Some("rate_limit_exceeded"),
                );
                let mut response =
                    json(StatusCode::TOO_MANY_REQUESTS, &body, Some(retry_after.to_string()));
                headers.apply(response.headers_mut());
                return response;
            }
            ApiError::InsufficientQuota { message, headers } => {
                let body = error_body(message, "insufficient_quota", Some("insufficient_quota"));
                let mut response = json(StatusCode::TOO_MANY_REQUESTS, &body, None);
                headers.apply(response.headers_mut());
                return response;
            }
            ApiError::ConcurrencyLimited(limit) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("This key may have at most {limit} requests in flight at once; retry when one has finished."),
                "requests",
                Some("concurrency_limit_exceeded"),
                Some("1".into()),
            ),
            ApiError::TooManyJobs(limit) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("This key already has {limit} jobs queued or running, the most it may have; submit more once some have finished."),
                "requests",
                Some("too_many_queued_jobs"),
                Some("10".into()),
            ),
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "The request body was not received in time.".into(),
                "invalid_request_error",
                Some("request_timeout"),
                None,
            ),
            ApiError::QueueFull(detail) => {
                tracing::warn!(%detail, "queue full");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "aigw's queue is full. Please retry later.".into(),
                    "server_error",
                    Some("queue_full"),
                    Some("5".into()),
                )
            }
            ApiError::AdminDisabled => (
                StatusCode::FORBIDDEN,
                "The admin API is disabled: set AIGW_ADMIN_TOKEN to enable it.".into(),
                "permission_error",
                Some("admin_disabled"),
                None,
            ),
            ApiError::AdminUnauthorized => (
                StatusCode::UNAUTHORIZED,
                "Missing or incorrect admin token.".into(),
                "invalid_request_error",
                Some("invalid_admin_token"),
                None,
            ),
            ApiError::NotFound { message, code } => (
                StatusCode::NOT_FOUND,
                message.clone(),
                "invalid_request_error",
                Some(code),
                None,
            ),
            ApiError::Conflict(message) => (
                StatusCode::CONFLICT,
                message.clone(),
                "invalid_request_error",
                Some("conflict"),
                None,
            ),
            ApiError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("The request body is larger than the limit of {limit} bytes."),
                "invalid_request_error",
                Some("request_too_large"),
                None,
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed for this path.".into(),
                "invalid_request_error",
                Some("method_not_allowed"),
                None,
            ),
            ApiError::Relayed {
                status,
                body,
                retry_after,
            } => {
                let mut response = (*status, body.clone()).into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                if let Some(v) = retry_after.as_deref().and_then(|r| HeaderValue::from_str(r).ok()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return response;
            }
            ApiError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "The request was not answered in time.".into(),
                "server_error",
                Some("timeout"),
                None,
            ),
            ApiError::NoDispatcher => (
                StatusCode::GATEWAY_TIMEOUT,
                "No dispatcher answered in time: the check runs on a dispatcher, is one running?"
                    .into(),
                "server_error",
                Some("no_dispatcher"),
                None,
            ),
            ApiError::AnswerLost(id) => (
                StatusCode::BAD_GATEWAY,
                format!(
                    "Request {id} finished, but its answer was lost on its way back (a message bus failover). \
                     It is in the request log under this id, billed if it succeeded; a retry is a new request."
                ),
                "server_error",
                Some("answer_lost"),
                None,
            ),
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "service unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The service is temporarily unavailable. Please retry.".into(),
                    "server_error",
                    Some("service_unavailable"),
                    Some("1".into()),
                )
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The server had an error while processing your request.".into(),
                    "server_error",
                    None,
                    None,
                )
            }
        };
        json(status, &error_body(&message, kind, code), retry_after)
    }
}

fn json(status: StatusCode, body: &serde_json::Value, retry_after: Option<String>) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(v) = retry_after.and_then(|r| HeaderValue::from_str(&r).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}
