//! Stability AI (v2beta Stable Image): OpenAI's images API to and from
//! `POST {base}/stable-image/generate/{ultra|core|sd3}`, a multipart form
//! answered as `{"image": <base64>, "finish_reason", "seed"}` with
//! `Accept: application/json`. One image per call: `n` images are `n` calls.

use aigw_events::Usage;
use aigw_events::provider::ProviderSpec;
use bytes::Bytes;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{Capabilities, Provider, Reply};
use crate::answer::Answer;
use crate::providers::media;
use crate::providers::media::KeyHeader;
use crate::upstream;
use crate::upstream::Part;
use crate::upstream::UpstreamError;
use aigw_events::wire::Endpoint;
use aigw_runtime::egress::Egress;
use futures::future::BoxFuture;

/// Stability AI: image generation.
pub struct Stability;

impl Provider for Stability {
    fn serves(&self) -> Capabilities {
        Capabilities {
            endpoints: &[Endpoint::Images],
            native: &[],
            max_images: None,
            cancels_upstream: false,
        }
    }

    fn gen_ai_system(&self, _spec: &ProviderSpec) -> String {
        "stability".into()
    }

    fn images<'a>(
        &'a self,
        call: super::Call<'a>,
        _egress: &'a Egress,
        body: &'a Value,
    ) -> Reply<'a> {
        Box::pin(images(call.http, call.spec, call.api_key(), body))
    }

    fn check_account<'a>(
        &'a self,
        call: super::Call<'a>,
    ) -> Option<BoxFuture<'a, Result<&'static str, UpstreamError>>> {
        let base = call.spec.base_url.trim_end_matches('/');
        let url = {
            // The account API is v1, at the root of the v2beta base.
            let root = base.strip_suffix("/v2beta").unwrap_or(base);
            upstream::url(root, "v1/user/account")
        };
        Some(Box::pin(media::account_check(
            call,
            url,
            KeyHeader::Bearer,
            None,
            "account",
        )))
    }
}

/// Aspect ratios Stability accepts.
const RATIOS: &[(&str, f64)] = &[
    ("21:9", 21.0 / 9.0),
    ("16:9", 16.0 / 9.0),
    ("3:2", 1.5),
    ("5:4", 1.25),
    ("1:1", 1.0),
    ("4:5", 0.8),
    ("2:3", 2.0 / 3.0),
    ("9:16", 9.0 / 16.0),
    ("9:21", 9.0 / 21.0),
];

/// The accepted aspect ratio nearest to `width`:`height`.
pub fn aspect_ratio(width: u32, height: u32) -> &'static str {
    let want = (f64::from(width) / f64::from(height)).ln();
    RATIOS
        .iter()
        .min_by(|a, b| {
            let da = (a.1.ln() - want).abs();
            let db = (b.1.ln() - want).abs();
            da.total_cmp(&db)
        })
        .map_or("1:1", |r| r.0)
}

/// A Stability call for one image of an OpenAI images request: the path
/// under the base URL and the form fields.
#[derive(Debug, PartialEq)]
pub struct Call {
    pub path: &'static str,
    pub fields: Vec<(&'static str, String)>,
    /// `png`, `jpeg` or `webp`.
    pub output_format: String,
}

/// Translates an OpenAI images body (model set) into a Stability call.
pub fn to_stability(body: &Value) -> Result<Call, UpstreamError> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let text = |field: &str| {
        body.get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|s| !s.is_empty())
    };
    let mut fields = vec![("prompt", text("prompt").unwrap_or_default())];
    let path = match model {
        "stable-image-ultra" => "stable-image/generate/ultra",
        "stable-image-core" => "stable-image/generate/core",
        m if m.starts_with("sd3") => {
            fields.push(("model", m.to_string()));
            "stable-image/generate/sd3"
        }
        other => {
            return Err(upstream::invalid(
                format!(
                    "Stability AI has no image model {other:?} (known: stable-image-ultra, stable-image-core, sd3.5-large, sd3.5-large-turbo, sd3.5-medium)"
                ),
                "model_not_found",
            ));
        }
    };
    let ratio = match text("aspect_ratio") {
        Some(r) => Some(r),
        None => text("size")
            .as_deref()
            .and_then(|s| s.split_once('x'))
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .filter(|(w, h)| *w > 0 && *h > 0)
            .map(|(w, h)| aspect_ratio(w, h).to_string()),
    };
    if let Some(r) = ratio {
        fields.push(("aspect_ratio", r));
    }
    for field in ["negative_prompt", "style_preset"] {
        if let Some(v) = text(field) {
            fields.push((field, v));
        }
    }
    if let Some(seed) = body.get("seed").and_then(Value::as_u64) {
        fields.push(("seed", seed.to_string()));
    }
    let output_format = match text("output_format").as_deref() {
        None | Some("png") => "png",
        Some("jpeg" | "jpg") => "jpeg",
        Some("webp") => "webp",
        Some(other) => {
            return Err(upstream::invalid(
                format!("Stability AI cannot produce {other:?} images (png, jpeg or webp)"),
                "invalid_output_format",
            ));
        }
    }
    .to_string();
    fields.push(("output_format", output_format.clone()));
    Ok(Call {
        path,
        fields,
        output_format,
    })
}

/// One Stability answer as an OpenAI images `data` item: `b64_json`, or a
/// `data:` URL when the caller asked for `url` (Stability hosts nothing).
pub fn to_openai_item(answer: &Value, output_format: &str, as_url: bool) -> Option<Value> {
    let image = answer.get("image").and_then(Value::as_str)?;
    Some(if as_url {
        json!({"url": format!("data:image/{output_format};base64,{image}")})
    } else {
        json!({"b64_json": image})
    })
}

pub async fn images(
    http: &reqwest::Client,
    provider: &ProviderSpec,
    api_key: Option<&SecretString>,
    body: &Value,
) -> Result<Answer, UpstreamError> {
    let call = to_stability(body)?;
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    let as_url = body.get("response_format").and_then(Value::as_str) == Some("url");
    let url = upstream::url(&provider.base_url, call.path);
    let mut data = Vec::new();
    for i in 0..n {
        let fields: Vec<(&str, Part)> = call
            .fields
            .iter()
            .map(|(k, v)| (*k, Part::Text(v.clone())))
            .collect();
        let (content_type, form) = upstream::multipart(&fields);
        let mut request = http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form);
        if let Some(key) = api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let item = upstream::send_raw(request, &provider.name)
            .await
            .and_then(|(answer, _)| {
                serde_json::from_slice::<Value>(&answer)
                    .ok()
                    .and_then(|v| to_openai_item(&v, &call.output_format, as_url))
                    .ok_or_else(|| upstream::not_json(&provider.name))
            });
        match item {
            Ok(item) => data.push(item),
            // Nothing made yet: an error, which may fail over.
            Err(e) if data.is_empty() => return Err(e),
            // Images made (and paid for) already: answer those, billed.
            Err(e) => {
                tracing::warn!(provider = %provider.name, made = i, asked = n, error = %e.message, "an image call failed after others succeeded; answering the images made");
                break;
            }
        }
    }
    let images = data.len() as u64;
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
    fn sizes_become_the_nearest_aspect_ratio() {
        assert_eq!(aspect_ratio(1024, 1024), "1:1");
        assert_eq!(aspect_ratio(1792, 1024), "16:9");
        assert_eq!(aspect_ratio(1024, 1792), "9:16");
        assert_eq!(aspect_ratio(1536, 1024), "3:2");
        assert_eq!(aspect_ratio(2560, 1080), "21:9");
    }

    #[test]
    fn openai_bodies_become_stability_forms() {
        let call = to_stability(&json!({"model": "sd3.5-large", "prompt": "a red fox",
            "size": "1792x1024", "n": 2, "seed": 7, "negative_prompt": "blur"}))
        .unwrap();
        assert_eq!(call.path, "stable-image/generate/sd3");
        assert_eq!(
            call.fields,
            vec![
                ("prompt", "a red fox".to_string()),
                ("model", "sd3.5-large".into()),
                ("aspect_ratio", "16:9".into()),
                ("negative_prompt", "blur".into()),
                ("seed", "7".into()),
                ("output_format", "png".into()),
            ]
        );
        let call = to_stability(&json!({"model": "stable-image-core", "prompt": "x",
            "aspect_ratio": "4:5", "output_format": "webp"}))
        .unwrap();
        assert_eq!(call.path, "stable-image/generate/core");
        assert!(call.fields.contains(&("aspect_ratio", "4:5".into())));
        assert_eq!(call.output_format, "webp");
        let err = to_stability(&json!({"model": "dall-e-3", "prompt": "x"})).unwrap_err();
        assert_eq!(err.status(), 400);
        let err = to_stability(&json!({"model": "stable-image-core", "prompt": "x",
            "output_format": "gif"}))
        .unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn answers_become_openai_items() {
        let answer = json!({"image": "iVBORw0KGgo=", "finish_reason": "SUCCESS", "seed": 42});
        assert_eq!(
            to_openai_item(&answer, "png", false),
            Some(json!({"b64_json": "iVBORw0KGgo="}))
        );
        assert_eq!(
            to_openai_item(&answer, "png", true),
            Some(json!({"url": "data:image/png;base64,iVBORw0KGgo="}))
        );
        assert_eq!(
            to_openai_item(&json!({"name": "bad_request"}), "png", false),
            None
        );
    }
}
