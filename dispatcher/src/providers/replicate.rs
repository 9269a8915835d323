//! Replicate image models as OpenAI's `/v1/images/generations`: create a
//! prediction (`POST {base}/models/{owner}/{name}/predictions` with
//! `{"input": {...}}`), then poll `GET {base}/predictions/{id}` until it has
//! `succeeded`, `failed` or been `canceled`. The poll runs inside the attempt:
//! when the request's deadline passes or the caller cancels, the attempt is
//! dropped and the prediction is cancelled (`POST {base}/predictions/{id}/cancel`)
//! so it stops costing money.

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

/// Replicate predictions: image generation, at most 4 images a request.
pub struct Replicate;

impl Provider for Replicate {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[Endpoint::Images],
            native: &[],
            max_images: Some(MAX_OUTPUTS),
            cancels_upstream: true,
        }
    }

    fn gen_ai_system(&self, _spec: &ProviderSpec) -> String {
        "replicate".into()
    }

    fn images<'a>(&'a self, call: Call<'a>, egress: &'a Egress, body: &'a Value) -> Reply<'a> {
        Box::pin(images(call.http, egress, call.spec, call.api_key(), body))
    }

    fn check_account<'a>(
        &'a self,
        call: Call<'a>,
    ) -> Option<BoxFuture<'a, Result<&'static str, UpstreamError>>> {
        let base = call.spec.base_url.trim_end_matches('/');
        let url = upstream::url(base, "account");
        Some(Box::pin(media::account_check(
            call,
            url,
            KeyHeader::Bearer,
            None,
            "account",
        )))
    }
}

/// First wait between polls; doubled up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(250);
const MAX_POLL: Duration = Duration::from_secs(3);
/// Replicate's image models take 1 to 4 outputs per prediction.
const MAX_OUTPUTS: u64 = 4;

fn safe_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A prediction to create: the path under the base URL and the JSON body.
#[derive(Debug, PartialEq)]
pub struct Create {
    pub path: String,
    pub body: Value,
}

/// Translates an OpenAI images body (model set, `owner/name`) into a
/// prediction of that official model.
pub fn to_replicate(body: &Value) -> Result<Create, UpstreamError> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let Some((owner, name)) = model
        .split_once('/')
        .filter(|(o, n)| safe_segment(o) && safe_segment(n))
    else {
        return Err(upstream::invalid(
            format!(
                "Replicate models are named owner/name (e.g. black-forest-labs/flux-schnell), not {model:?}"
            ),
            "model_not_found",
        ));
    };
    let text = |field: &str| {
        body.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    if !(1..=MAX_OUTPUTS).contains(&n) {
        return Err(upstream::invalid(
            format!("Replicate makes 1 to {MAX_OUTPUTS} images per request, not {n}"),
            "invalid_n",
        ));
    }
    let mut input = json!({"prompt": text("prompt").unwrap_or_default(), "num_outputs": n});
    let ratio = text("aspect_ratio").map(str::to_string).or_else(|| {
        text("size")
            .and_then(|s| s.split_once('x'))
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .filter(|(w, h)| *w > 0 && *h > 0)
            .map(|(w, h)| crate::providers::stability::aspect_ratio(w, h).to_string())
    });
    if let Some(r) = ratio {
        input["aspect_ratio"] = json!(r);
    }
    if let Some(f) = text("output_format") {
        input["output_format"] = json!(f);
    }
    if let Some(seed) = body.get("seed").and_then(Value::as_u64) {
        input["seed"] = json!(seed);
    }
    Ok(Create {
        path: format!("models/{owner}/{name}/predictions"),
        body: json!({"input": input}),
    })
}

/// What one look at a prediction found.
#[derive(Debug, PartialEq)]
pub enum Status {
    Pending,
    Succeeded(Vec<String>),
    Failed(String),
    Canceled,
}

/// Reads a prediction object. `output` is a list of file URLs (or one URL).
pub fn status(prediction: &Value) -> Status {
    match prediction.get("status").and_then(Value::as_str) {
        Some("succeeded") => Status::Succeeded(match prediction.get("output") {
            Some(Value::String(url)) => vec![url.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }),
        Some("failed") => Status::Failed(
            prediction
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("prediction failed")
                .to_string(),
        ),
        Some("canceled") => Status::Canceled,
        _ => Status::Pending,
    }
}

/// The prediction's id, if it is safe to put in a path.
pub fn prediction_id(prediction: &Value) -> Option<&str> {
    prediction
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| safe_segment(id) && !id.contains('.'))
}

fn authorized(
    request: reqwest::RequestBuilder,
    key: Option<&SecretString>,
) -> reqwest::RequestBuilder {
    match key {
        Some(k) => request.bearer_auth(k.expose_secret()),
        None => request,
    }
}

pub async fn images(
    http: &reqwest::Client,
    egress: &Egress,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
) -> Result<Answer, UpstreamError> {
    let name = provider.name.as_str();
    let base = &provider.base_url;
    let create = to_replicate(body)?;
    let request =
        authorized(http.post(upstream::url(base, &create.path)), api_key).json(&create.body);
    let (created, _) = upstream::send_raw(request, name).await?;
    let created: Value = serde_json::from_slice(&created).map_err(|_| upstream::not_json(name))?;
    let id = prediction_id(&created)
        .ok_or_else(|| upstream::not_json(name))?
        .to_string();
    let mut guard = media::CancelOnDrop {
        request: Some(authorized(
            http.post(upstream::url(base, &format!("predictions/{id}/cancel"))),
            api_key,
        )),
    };
    let mut found = status(&created);
    let mut wait = FIRST_POLL;
    let urls = loop {
        match found {
            Status::Succeeded(urls) if !urls.is_empty() => break urls,
            Status::Succeeded(_) => {
                guard.request = None;
                return Err(upstream::task_failed(
                    name,
                    "the prediction produced no image",
                ));
            }
            Status::Failed(message) => {
                guard.request = None;
                return Err(upstream::task_failed(name, &message));
            }
            Status::Canceled => {
                guard.request = None;
                return Err(upstream::task_failed(name, "the prediction was canceled"));
            }
            Status::Pending => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_POLL);
        let poll = authorized(
            http.get(upstream::url(base, &format!("predictions/{id}"))),
            api_key,
        );
        let (polled, _) = upstream::send_raw(poll, name).await?;
        found = status(&serde_json::from_slice(&polled).map_err(|_| upstream::not_json(name))?);
    };
    guard.request = None;
    let as_b64 = body.get("response_format").and_then(Value::as_str) == Some("b64_json");
    let mut data = Vec::with_capacity(urls.len());
    for url in &urls {
        data.push(if as_b64 {
            match media::fetch_image(egress, url).await {
                Ok(image) => {
                    json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(&image)})
                }
                // Made (and paid for) but not fetched: give its URL rather
                // than lose it.
                Err(e) => {
                    tracing::warn!(provider = %name, error = %e, "fetching a Replicate image failed; answering its URL");
                    json!({"url": url})
                }
            }
        } else {
            json!({"url": url})
        });
    }
    let out = json!({"created": Utc::now().timestamp(), "data": data});
    Ok(Answer::Media {
        body: Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
        content_type: "application/json".into(),
        usage: Usage {
            images: urls.len() as u64,
            ..Usage::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigw_events::ErrorClass;

    #[test]
    fn openai_bodies_become_predictions() {
        let create = to_replicate(&json!({"model": "black-forest-labs/flux-schnell",
            "prompt": "a red fox", "n": 2, "size": "1792x1024", "seed": 7,
            "response_format": "url"}))
        .unwrap();
        assert_eq!(
            create.path,
            "models/black-forest-labs/flux-schnell/predictions"
        );
        assert_eq!(
            create.body,
            json!({"input": {"prompt": "a red fox", "num_outputs": 2,
                "aspect_ratio": "16:9", "seed": 7}})
        );
        let create = to_replicate(&json!({"model": "black-forest-labs/flux-dev",
            "prompt": "x", "aspect_ratio": "4:5", "output_format": "png"}))
        .unwrap();
        assert_eq!(
            create.body,
            json!({"input": {"prompt": "x", "num_outputs": 1, "aspect_ratio": "4:5",
                "output_format": "png"}})
        );
        for model in ["flux-schnell", "a/../b", "../x", "a/b/c", "a b/c", ""] {
            let err = to_replicate(&json!({"model": model, "prompt": "x"})).unwrap_err();
            assert_eq!(
                (err.status(), err.class()),
                (400, ErrorClass::Client),
                "{model}"
            );
        }
        let err = to_replicate(&json!({"model": "a/b", "prompt": "x", "n": 5})).unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn prediction_statuses() {
        assert_eq!(
            status(&json!({"id": "p", "status": "starting"})),
            Status::Pending
        );
        assert_eq!(status(&json!({"status": "processing"})), Status::Pending);
        assert_eq!(
            status(&json!({"status": "succeeded",
                "output": ["https://replicate.delivery/a.webp", "https://replicate.delivery/b.webp"]})),
            Status::Succeeded(vec![
                "https://replicate.delivery/a.webp".into(),
                "https://replicate.delivery/b.webp".into()
            ])
        );
        assert_eq!(
            status(&json!({"status": "succeeded", "output": "https://x/one.png"})),
            Status::Succeeded(vec!["https://x/one.png".into()])
        );
        assert_eq!(
            status(&json!({"status": "failed", "error": "NSFW content detected"})),
            Status::Failed("NSFW content detected".into())
        );
        assert_eq!(status(&json!({"status": "canceled"})), Status::Canceled);
        assert_eq!(
            prediction_id(&json!({"id": "gm3qorzdhgbfurvjtvhg6dckhu"})),
            Some("gm3qorzdhgbfurvjtvhg6dckhu")
        );
        assert_eq!(prediction_id(&json!({"id": "../x"})), None);
        assert_eq!(prediction_id(&json!({})), None);
    }
}
