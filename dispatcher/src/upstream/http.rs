//! The HTTP exchange with a provider: send a prepared request, hand back a
//! successful response, or classify the failure.
//!
//! Invariants: a transport failure is a [`transport_error`], an error
//! status goes through [`error_from_response`], and a successful answer
//! that is not the JSON expected is an `InvalidResponse`; no provider
//! module classifies a failure itself.

use bytes::Bytes;
use serde_json::Value;

use super::classify::error_from_response;
use super::error::{UpstreamError, invalid_response, transport_error};

/// `{base}/{path}`, with one slash between them.
pub fn url(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}

/// Sends `request`, returning the response when it succeeded and the
/// classified error otherwise.
pub async fn send(
    request: reqwest::RequestBuilder,
    provider: &str,
) -> Result<reqwest::Response, UpstreamError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(&e, provider))?;
    if !response.status().is_success() {
        return Err(error_from_response(response, provider).await);
    }
    Ok(response)
}

/// Reads a successful JSON response body.
pub async fn read_json(
    response: reqwest::Response,
    provider: &str,
) -> Result<Value, UpstreamError> {
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(&e, provider))?;
    serde_json::from_slice(&body).map_err(|_| invalid_response(provider, status))
}

/// Sends a request whose successful answer is taken as raw bytes (with its
/// content type); failures are classified like any upstream error.
pub async fn send_raw(
    request: reqwest::RequestBuilder,
    provider: &str,
) -> Result<(Bytes, Option<String>), UpstreamError> {
    let response = send(request, provider).await?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(&e, provider))?;
    Ok((body, content_type))
}
