//! Runway text-to-image as OpenAI's `/v1/images/generations`: start a task
//! (`POST {base}/text_to_image` with `{"promptText","ratio","model"}` and
//! `X-Runway-Version`), then poll `GET {base}/tasks/{id}` until `SUCCEEDED`
//! (`output`: image URLs) or `FAILED` (`failure`). One image per task: `n`
//! images are `n` tasks. A task still running when the attempt is dropped
//! (deadline, cancellation) is cancelled with `DELETE {base}/tasks/{id}`.

use std::time::Duration;

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use aigw_runtime::egress::Egress;
use base64::Engine as _;
use bytes::Bytes;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{Call, Capabilities, Provider, Reply};
use crate::answer::Answer;
use crate::providers::media;
use crate::providers::media::KeyHeader;
use crate::upstream;
use crate::upstream::UpstreamError;
use aigw_events::wire::Endpoint;
use futures::future::BoxFuture;

/// Runway text-to-image tasks: image generation, at most 4 images a request.
pub struct Runway;

impl Provider for Runway {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[Endpoint::Images],
            native: &[],
            max_images: Some(MAX_IMAGES),
            cancels_upstream: true,
        }
    }

    fn gen_ai_system(&self, _spec: &ProviderSpec) -> String {
        "runway".into()
    }

    fn images<'a>(&'a self, call: Call<'a>, egress: &'a Egress, body: &'a Value) -> Reply<'a> {
        Box::pin(images(call.http, egress, call.spec, call.api_key(), body))
    }

    fn check_account<'a>(
        &'a self,
        call: Call<'a>,
    ) -> Option<BoxFuture<'a, Result<&'static str, UpstreamError>>> {
        let base = call.spec.base_url.trim_end_matches('/');
        let url = upstream::url(base, "organization");
        Some(Box::pin(media::account_check(
            call,
            url,
            KeyHeader::Bearer,
            Some(("X-Runway-Version", API_VERSION)),
            "organization",
        )))
    }
}

pub const API_VERSION: &str = "2024-11-06";
/// Runway asks for polls no more often than every 5 s, with backoff.
const FIRST_POLL: Duration = Duration::from_secs(5);
const MAX_POLL: Duration = Duration::from_secs(10);
const MAX_IMAGES: u64 = 4;

/// The 1080p output sizes `gen4_image` accepts, as `ratio` strings.
const RATIOS: &[(u32, u32)] = &[
    (1920, 1080),
    (1080, 1920),
    (1024, 1024),
    (1360, 768),
    (1080, 1080),
    (1168, 880),
    (1440, 1080),
    (1080, 1440),
    (1808, 768),
    (2112, 912),
];

/// The accepted `ratio` nearest in shape to `width`x`height`.
pub fn ratio(width: u32, height: u32) -> String {
    let want = (f64::from(width) / f64::from(height)).ln();
    let (w, h) = RATIOS
        .iter()
        .min_by(|a, b| {
            let da = ((f64::from(a.0) / f64::from(a.1)).ln() - want).abs();
            let db = ((f64::from(b.0) / f64::from(b.1)).ln() - want).abs();
            da.total_cmp(&db)
        })
        .copied()
        .unwrap_or((1024, 1024));
    format!("{w}:{h}")
}

/// Translates an OpenAI images body (model set) into a task body.
pub fn to_runway(body: &Value) -> Result<Value, UpstreamError> {
    let text = |field: &str| {
        body.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    if !(1..=MAX_IMAGES).contains(&n) {
        return Err(upstream::invalid(
            format!("Runway makes 1 to {MAX_IMAGES} images per request through aigw, not {n}"),
            "invalid_n",
        ));
    }
    let ratio = match text("ratio") {
        Some(r) => r.to_string(),
        None => text("size")
            .and_then(|s| s.split_once('x'))
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .filter(|(w, h)| *w > 0 && *h > 0)
            .map_or_else(|| "1024:1024".to_string(), |(w, h)| ratio(w, h)),
    };
    let mut out = json!({
        "model": text("model").unwrap_or_default(),
        "promptText": text("prompt").unwrap_or_default(),
        "ratio": ratio,
    });
    if let Some(seed) = body.get("seed").and_then(Value::as_u64) {
        out["seed"] = json!(seed);
    }
    Ok(out)
}

/// What one look at a task found.
#[derive(Debug, PartialEq)]
pub enum Status {
    Pending,
    Succeeded(Vec<String>),
    Failed(String),
    Cancelled,
}

pub fn status(task: &Value) -> Status {
    match task.get("status").and_then(Value::as_str) {
        Some("SUCCEEDED") => Status::Succeeded(
            task.get("output")
                .and_then(Value::as_array)
                .map(|o| {
                    o.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some("FAILED") => Status::Failed(
            task.get("failure")
                .and_then(Value::as_str)
                .unwrap_or("task failed")
                .to_string(),
        ),
        Some("CANCELLED") => Status::Cancelled,
        _ => Status::Pending,
    }
}

fn task_id(task: &Value) -> Option<&str> {
    task.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

fn authorized(
    request: reqwest::RequestBuilder,
    key: Option<&SecretString>,
) -> reqwest::RequestBuilder {
    let request = request.header("X-Runway-Version", API_VERSION);
    match key {
        Some(k) => request.bearer_auth(k.expose_secret()),
        None => request,
    }
}

/// Runs one task to its image URLs.
async fn one(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    task: &Value,
) -> Result<Vec<String>, UpstreamError> {
    let name = provider.name.as_str();
    let base = &provider.base_url;
    let request = authorized(http.post(upstream::url(base, "text_to_image")), api_key).json(task);
    let (created, _) = upstream::send_raw(request, name).await?;
    let created: Value = serde_json::from_slice(&created).map_err(|_| upstream::not_json(name))?;
    let id = task_id(&created)
        .ok_or_else(|| upstream::not_json(name))?
        .to_string();
    let task_url = upstream::url(base, &format!("tasks/{id}"));
    let mut guard = media::CancelOnDrop {
        request: Some(authorized(http.delete(&task_url), api_key)),
    };
    let mut wait = FIRST_POLL;
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_POLL);
        let poll = authorized(http.get(&task_url), api_key);
        let (polled, _) = upstream::send_raw(poll, name).await?;
        let found = status(&serde_json::from_slice(&polled).map_err(|_| upstream::not_json(name))?);
        let result = match found {
            Status::Pending => continue,
            Status::Succeeded(urls) if !urls.is_empty() => Ok(urls),
            Status::Succeeded(_) => Err(upstream::task_failed(name, "the task produced no image")),
            Status::Failed(message) => Err(upstream::task_failed(name, &message)),
            Status::Cancelled => Err(upstream::task_failed(name, "the task was cancelled")),
        };
        guard.request = None;
        return result;
    }
}

pub async fn images(
    http: &reqwest::Client,
    egress: &Egress,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
) -> Result<Answer, UpstreamError> {
    let task = to_runway(body)?;
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    let as_b64 = body.get("response_format").and_then(Value::as_str) == Some("b64_json");
    let mut data = Vec::new();
    // Images Runway made (and charged for), delivered or not.
    let mut made = 0u64;
    for i in 0..n {
        let urls = match one(http, provider, api_key, &task).await {
            Ok(urls) => urls,
            // Nothing made yet: an error, which may fail over.
            Err(e) if made == 0 => return Err(e),
            Err(e) => {
                tracing::warn!(provider = %provider.name, made = i, asked = n, error = %e.message, "a Runway task failed after others succeeded; answering the images made");
                break;
            }
        };
        for url in urls {
            made += 1;
            if !as_b64 {
                data.push(json!({"url": url}));
                continue;
            }
            match media::fetch_image(egress, &url).await {
                Ok(image) => data.push(
                    json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(&image)}),
                ),
                // Made but not fetched: give its URL rather than lose it.
                Err(e) => {
                    tracing::warn!(provider = %provider.name, error = %e, "fetching a Runway image failed; answering its URL");
                    data.push(json!({"url": url}));
                }
            }
        }
    }
    let images = made;
    let out = json!({"created": Utc::now().timestamp(), "data": data});
    Ok(Answer::Media {
        body: Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
        content_type: "application/json".into(),
        usage: Usage {
            images,
            ..Usage::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_bodies_become_tasks() {
        assert_eq!(
            to_runway(&json!({"model": "gen4_image", "prompt": "a red fox",
                "size": "1792x1024", "seed": 3}))
            .unwrap(),
            json!({"model": "gen4_image", "promptText": "a red fox", "ratio": "1360:768", "seed": 3})
        );
        assert_eq!(
            to_runway(&json!({"model": "gen4_image", "prompt": "x"})).unwrap()["ratio"],
            "1024:1024"
        );
        assert_eq!(
            to_runway(&json!({"model": "gen4_image", "prompt": "x", "ratio": "1080:1440"}))
                .unwrap()["ratio"],
            "1080:1440"
        );
        assert_eq!(ratio(1024, 1792), "1080:1920");
        assert_eq!(ratio(1920, 1080), "1920:1080");
        assert_eq!(ratio(2560, 1080), "1808:768");
        let err = to_runway(&json!({"model": "gen4_image", "prompt": "x", "n": 9})).unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn task_statuses() {
        assert_eq!(
            status(&json!({"id": "t", "status": "PENDING"})),
            Status::Pending
        );
        assert_eq!(status(&json!({"status": "THROTTLED"})), Status::Pending);
        assert_eq!(
            status(&json!({"status": "RUNNING", "progress": 0.4})),
            Status::Pending
        );
        assert_eq!(
            status(
                &json!({"status": "SUCCEEDED", "output": ["https://dnznrvs05pmza.cloudfront.net/a.png"]})
            ),
            Status::Succeeded(vec!["https://dnznrvs05pmza.cloudfront.net/a.png".into()])
        );
        assert_eq!(
            status(
                &json!({"status": "FAILED", "failure": "Content moderation", "failureCode": "SAFETY.INPUT.TEXT"})
            ),
            Status::Failed("Content moderation".into())
        );
        assert_eq!(status(&json!({"status": "CANCELLED"})), Status::Cancelled);
        assert_eq!(
            task_id(&json!({"id": "17f20503-6c24-4c16-946b-35dbbce2af2f"})),
            Some("17f20503-6c24-4c16-946b-35dbbce2af2f")
        );
        assert_eq!(task_id(&json!({"id": "../x"})), None);
    }
}
