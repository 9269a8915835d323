//! One call to one target: open its credential, build the body it is sent
//! (the provider's model id, the output cap a budget hold assumed, usage
//! asked for on streams), call the provider's adapter, and relay or keep
//! the answer. A call whose caller went away runs to its end when it is not
//! streamed, so what the provider used is known and billed. The usage is
//! priced as soon as it is known (`Billed`), and the answer carries that
//! cost to the caller.

use aigw_events::wire::{AnswerCost, DispatchRequest, Endpoint};
use aigw_events::{ErrorClass, Usage};
use aigw_runtime::Target;
use bytes::Bytes;
use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::answer::{self, Answer};
use crate::candidates;
use crate::convert;
use crate::dialect::{self, NativeAnswer};
use crate::process::json_bytes;
use crate::providers;
use crate::record::Billed;
use crate::relay::relay_stream;
use crate::reply::Replier;
use crate::spans;
use crate::upstream;
use crate::upstream::{UpstreamError, UpstreamErrorKind};
use aigw_events::provider::ProviderKind;
use aigw_runtime::estimate;
use aigw_runtime::health::Admission;
use aigw_runtime::worst_case::{self, TargetLimits};

/// The health key of a provider's `n`th credential.
pub fn credential_key(n: usize) -> String {
    format!("#credential{n}")
}

/// The next credential in turn whose own breaker is not open (any, if all are).
pub(crate) async fn choose_credential(shared: &Shared, target: &Target) -> usize {
    let count = target.provider.spec.credentials().len();
    if count <= 1 {
        return 0;
    }
    let now_ms = Utc::now().timestamp_millis();
    let first = shared.router.next_credential(target.provider.id, count);
    let mut turn = first;
    for _ in 0..count {
        match shared
            .health
            .admit(target.provider.id, &credential_key(turn), now_ms)
            .await
        {
            Admission::Open { .. } => {
                turn = shared.router.next_credential(target.provider.id, count);
            }
            Admission::Closed | Admission::Probe => return turn,
        }
    }
    first
}

/// A credential refused (401/403) or exhausted (429) trips its own breaker,
/// so one bad key does not take the provider down.
pub(crate) async fn credential_health(
    shared: &Shared,
    target: &Target,
    credential: usize,
    result: &AttemptResult,
    now_ms: i64,
) {
    if target.provider.spec.credentials().len() <= 1 {
        return;
    }
    let key = credential_key(credential);
    match result {
        AttemptResult::Done { .. } => {
            shared
                .health
                .success(target.provider.id, &key, now_ms)
                .await
        }
        AttemptResult::Failed { error, .. }
            if error.class() == ErrorClass::RateLimited
                || matches!(error.upstream_status, Some(401 | 403)) =>
        {
            shared
                .health
                .failure(target.provider.id, &key, &error.message, false, now_ms)
                .await
        }
        AttemptResult::Failed { .. } => {}
    }
}

pub(crate) enum AttemptResult {
    Done {
        billed: Billed,
        status: u16,
    },
    Failed {
        error: UpstreamError,
        /// What the provider may bill even though the request failed.
        billed: Billed,
        /// Whether bytes already reached the caller (no failover then).
        started_stream: bool,
    },
}

pub(crate) async fn attempt(
    shared: &Shared,
    request: &DispatchRequest,
    target: &Target,
    credential: usize,
    replier: &Replier,
    cancel: &CancellationToken,
    attempt_no: usize,
) -> AttemptResult {
    let provider = &target.provider.spec;
    let id = target.provider.id;
    let (api_key, session_token) = match shared.sealer.open_call_secrets(id, provider, credential) {
        Ok(secrets) => (secrets.api_key, secrets.session_token),
        Err(e) => {
            tracing::error!(provider = %provider.name, error = %e, "cannot open the provider credential");
            return AttemptResult::Failed {
                error: UpstreamError::new(
                    UpstreamErrorKind::CredentialUnavailable,
                    format!("provider {} is misconfigured", provider.name),
                ),
                billed: Billed::nothing(),
                started_stream: false,
            };
        }
    };
    let body = upstream_body(request, &target.model, output_cap_for(request, target));
    let native = dialect::native_to(request, provider);
    let untranslatable = dialect::untranslatable(request, provider);
    let to_provider = providers::Call {
        http: &shared.http,
        spec: provider,
        credentials: answer::Credentials {
            api_key: api_key.as_ref(),
            session_token: session_token.as_ref(),
        },
    };
    let provider_code = providers::of(provider.kind);
    let call = async {
        match request.endpoint {
            Endpoint::Chat if untranslatable.is_some() => Err(upstream::unsupported(
                &provider.name,
                untranslatable.as_deref().unwrap_or_default(),
            )),
            Endpoint::Chat if native => dialect::call(
                &shared.http,
                provider,
                api_key.as_ref(),
                request,
                &target.model,
                output_cap_for(request, target).map(|(_, cap)| cap),
            )
            .await
            .map(Answer::Native),
            Endpoint::Chat => provider_code.chat(to_provider, &body, request.stream).await,
            Endpoint::Embeddings => provider_code.embeddings(to_provider, &body).await,
            Endpoint::Rerank => provider_code.rerank(to_provider, &body).await,
            Endpoint::Moderations => provider_code.moderations(to_provider, &body).await,
            Endpoint::Images => {
                provider_code
                    .images(to_provider, &shared.egress, &body)
                    .await
            }
            Endpoint::Speech => provider_code.speech(to_provider, &body).await,
            Endpoint::Transcriptions => match upload(shared, request).await {
                Ok(audio) => {
                    provider_code
                        .transcriptions(to_provider, &body, audio)
                        .await
                }
                Err(e) => Err(e),
            },
        }
    };
    tokio::pin!(call);
    let mut caller_left = false;
    let answer = tokio::select! {
        a = &mut call => a,
        _ = cancel.cancelled() => {
            caller_left = true;
            if runs_to_completion(request, provider.kind) {
                // The caller left (or cancelled the job), but the provider
                // works, and bills, all the same: let the call end (the
                // request's deadline still applies) so what it used is
                // known and billed.
                call.await
            } else {
                Err(cancelled())
            }
        }
    };
    if caller_left {
        let (usage, estimated) = match answer {
            Ok(Answer::Full { body, usage }) => match candidates::plausible(usage) {
                Some(u) => (u, false),
                None => (estimate_from_body(request, &body), true),
            },
            Ok(Answer::Media { usage, .. }) => (usage, false),
            Ok(Answer::Native(NativeAnswer::Full { usage, .. })) => {
                match candidates::plausible(usage) {
                    Some(u) => (u, false),
                    None => (estimate_from_body(request, &Bytes::new()), true),
                }
            }
            Ok(Answer::Stream(_) | Answer::Native(NativeAnswer::Stream(_))) | Err(_) => {
                (Usage::default(), false)
            }
        };
        return AttemptResult::Failed {
            error: cancelled(),
            billed: Billed::priced(target, usage, estimated),
            started_stream: false,
        };
    }
    match answer {
        Err(error) => AttemptResult::Failed {
            error,
            billed: Billed::nothing(),
            started_stream: false,
        },
        Ok(Answer::Full { body, usage }) => {
            spans::full_answer(&body);
            let billed = match candidates::plausible(usage) {
                Some(u) => Billed::priced(target, u, false),
                None => Billed::priced(target, estimate_from_body(request, &body), true),
            };
            let body = if request.dialect.is_openai_chat() {
                if billed.estimated {
                    body
                } else {
                    convert::with_usage_details(body, &billed.usage)
                }
            } else {
                let completion = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
                let rendered =
                    dialect::render_full(request, &completion, &message_id(request), &billed.usage);
                if request.dialect == aigw_events::wire::Dialect::OpenaiResponses
                    && let Some(response) = &rendered
                {
                    replier.keep_rendered(response.clone());
                }
                rendered.as_ref().map_or(body, json_bytes)
            };
            let cost = AnswerCost::of(billed.cost_micros);
            replier
                .response(200, &provider.name, attempt_no, None, body, cost)
                .await;
            AttemptResult::Done {
                billed,
                status: 200,
            }
        }
        Ok(Answer::Media {
            body,
            content_type,
            usage,
        }) => {
            let content_type = (content_type != "application/json").then_some(content_type);
            let billed = Billed::priced(target, usage, false);
            replier
                .response(
                    200,
                    &provider.name,
                    attempt_no,
                    content_type.as_deref(),
                    body,
                    AnswerCost::of(billed.cost_micros),
                )
                .await;
            AttemptResult::Done {
                billed,
                status: 200,
            }
        }
        Ok(Answer::Stream(items)) => {
            replier.start(&provider.name, attempt_no).await;
            relay_stream(request, target, items, replier, cancel).await
        }
        Ok(Answer::Native(NativeAnswer::Full { body, usage })) => {
            let billed = match candidates::plausible(usage) {
                Some(u) => Billed::priced(target, u, false),
                None => Billed::priced(target, estimate_from_body(request, &Bytes::new()), true),
            };
            // A native Responses answer is stored as the caller got it.
            if request.dialect == aigw_events::wire::Dialect::OpenaiResponses
                && let Ok(response) = serde_json::from_slice::<Value>(&body)
            {
                replier.keep_rendered(response);
            }
            replier
                .response(
                    200,
                    &provider.name,
                    attempt_no,
                    None,
                    body,
                    AnswerCost::of(billed.cost_micros),
                )
                .await;
            AttemptResult::Done {
                billed,
                status: 200,
            }
        }
        Ok(Answer::Native(NativeAnswer::Stream(events))) => {
            replier.start(&provider.name, attempt_no).await;
            dialect::relay(request, target, events, replier, cancel).await
        }
    }
}

/// The id of a message rendered in Anthropic's dialect: the request's.
pub(crate) fn message_id(request: &DispatchRequest) -> String {
    let prefix = match request.dialect {
        aigw_events::wire::Dialect::OpenaiResponses => "resp",
        _ => "msg",
    };
    format!("{prefix}_{}", request.request_id.simple())
}

/// Whether a call is let run to its end when the caller goes away: every
/// non-streamed call, except those of providers aigw cancels upstream
/// (polled predictions and tasks), which then produce, and bill, nothing
/// more. A stream stops, and bills what was relayed (see `relay_stream`).
pub(crate) fn runs_to_completion(request: &DispatchRequest, kind: ProviderKind) -> bool {
    !request.stream && !providers::capabilities(kind).cancels_upstream
}

/// The uploaded audio of a transcription request.
pub(crate) async fn upload(
    shared: &Shared,
    request: &DispatchRequest,
) -> Result<Bytes, UpstreamError> {
    use tokio::io::AsyncReadExt;
    let lost = |e: String| {
        tracing::error!(request_id = %request.request_id, error = %e, "reading the upload");
        // Not a provider's fault and no other provider would do better: a
        // non-retryable kind, so no failover and no breaker trips.
        UpstreamError::new(
            UpstreamErrorKind::UploadUnavailable,
            "the uploaded file could not be read",
        )
    };
    let mut object = shared
        .media
        .get(request.request_id.to_string().as_str())
        .await
        .map_err(|e| lost(e.to_string()))?;
    let mut audio = Vec::new();
    object
        .read_to_end(&mut audio)
        .await
        .map_err(|e| lost(e.to_string()))?;
    Ok(Bytes::from(audio))
}

pub(crate) fn estimate_from_body(request: &DispatchRequest, body: &Bytes) -> Usage {
    let completion = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/choices/0/message/content")
                .and_then(Value::as_str)
                .map(estimate::text_tokens)
        })
        .unwrap_or(0);
    // A rerank billed per search is held to one unit per hundred documents.
    let searches = match request.endpoint {
        Endpoint::Rerank => request
            .body
            .get("documents")
            .and_then(Value::as_array)
            .map_or(0, |d| d.len() as u64)
            .div_ceil(worst_case::RERANK_DOCS_PER_SEARCH)
            .max(1),
        _ => 0,
    };
    Usage {
        prompt_tokens: estimate::prompt_tokens(&request.body),
        completion_tokens: completion,
        searches,
        ..Default::default()
    }
}

/// The output cap a budgeted chat request must carry to `target` (the
/// field and its value), when its hold assumed one that nothing else
/// enforces (see `worst_case::injected_output_cap`).
pub fn output_cap_for(request: &DispatchRequest, target: &Target) -> Option<(&'static str, u64)> {
    if request.reservation.is_none() || request.endpoint != Endpoint::Chat {
        return None;
    }
    let spec = &target.provider.spec;
    let limits = TargetLimits::of(spec, &target.model);
    let cap = worst_case::injected_output_cap(&request.body, &limits)?;
    // OpenAI's reasoning models refuse `max_tokens`; other OpenAI-compatible
    // servers may not know `max_completion_tokens` (the native adapters
    // read either).
    let openai = spec.kind == ProviderKind::Azure || spec.preset.as_deref() == Some("openai");
    let field = if openai {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    Some((field, cap))
}

/// The body sent upstream: the caller's, with the provider's model id and
/// the output cap the budget hold assumed (if any), and always asking for
/// usage on streams (so billing uses the provider's count).
pub fn upstream_body(
    request: &DispatchRequest,
    model: &str,
    output_cap: Option<(&'static str, u64)>,
) -> Value {
    let mut body = request.body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(model.to_string()));
        if let Some((field, cap)) = output_cap {
            obj.insert(field.into(), Value::from(cap));
        }
        if request.stream {
            let options = obj
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(o) = options.as_object_mut() {
                o.insert("include_usage".into(), Value::Bool(true));
            } else {
                *options = serde_json::json!({"include_usage": true});
            }
        }
    }
    body
}

pub(crate) fn cancelled() -> UpstreamError {
    UpstreamError::new(UpstreamErrorKind::Cancelled, "the caller went away")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn request(body: Value, stream: bool) -> DispatchRequest {
        DispatchRequest {
            request_id: Uuid::nil(),
            key_id: Uuid::nil(),
            reply_to: "r".into(),
            accepted_at: Utc::now(),
            model: "alias".into(),
            stream,
            include_usage: false,
            provider: None,
            deadline: None,
            reservation: None,
            rate_tokens: None,
            endpoint: Endpoint::Chat,
            body,
            scopes: None,
            body_object: None,
            project_id: None,
            team_id: None,
            rate_levels: vec![],
            rate_on_key: true,
            attribution: Default::default(),
            dialect: Default::default(),
            raw_body: None,
            native_body: None,
            native_only: None,
        }
    }

    #[test]
    fn streams_always_ask_for_usage() {
        let r = request(
            json!({"model":"alias","messages":[],"stream":true,"seed":7}),
            true,
        );
        let body = upstream_body(&r, "real-model", None);
        assert_eq!(body["model"], "real-model");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["seed"], 7);
        let r = request(
            json!({"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}),
            true,
        );
        let body = upstream_body(&r, "m", None);
        assert_eq!(
            body["stream_options"],
            json!({"include_usage": true, "x": 1})
        );
        let r = request(json!({"model":"m"}), false);
        assert!(upstream_body(&r, "m", None).get("stream_options").is_none());
    }

    fn target(preset: Option<&str>, kind: ProviderKind, model: &str) -> Target {
        use aigw_events::provider::ProviderSpec;
        Target {
            provider: std::sync::Arc::new(aigw_runtime::ProviderEntry {
                id: Uuid::nil(),
                spec: ProviderSpec {
                    name: "p".into(),
                    kind,
                    preset: preset.map(str::to_string),
                    models: vec![model.into()],
                    ..ProviderSpec::default()
                },
                created_at: Utc::now(),
                updated_at: Utc::now(),
            }),
            model: model.into(),
            weight: 1,
        }
    }

    #[test]
    fn what_only_anthropic_reads_goes_only_to_anthropic() {
        let mut r = request(
            json!({"model": "alias", "max_tokens": 5, "top_k": 3,
                "messages": [{"role": "user", "content": "hi"}]}),
            false,
        );
        r.dialect = aigw_events::wire::Dialect::AnthropicMessages {
            version: None,
            beta: None,
        };
        dialect::prepare(&mut r);
        assert_eq!(r.native_only.as_deref(), Some("top_k"));
        let native = target(None, ProviderKind::Anthropic, "m");
        let translated = target(None, ProviderKind::OpenaiCompatible, "m");
        assert!(dialect::native_to(&r, &native.provider.spec));
        assert_eq!(dialect::untranslatable(&r, &native.provider.spec), None);
        let why = dialect::untranslatable(&r, &translated.provider.spec).unwrap();
        assert!(why.contains("'top_k'"), "{why}");
        // A request that translates whole goes anywhere.
        let mut plain = request(
            json!({"model": "alias", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            false,
        );
        plain.dialect = r.dialect.clone();
        dialect::prepare(&mut plain);
        assert_eq!(plain.native_only, None);
        assert_eq!(
            dialect::untranslatable(&plain, &translated.provider.spec),
            None
        );
    }

    #[test]
    fn a_budgeted_request_without_a_cap_carries_the_cap_its_hold_assumed() {
        let mut r = request(json!({"model":"m","messages":[]}), false);
        let custom = target(None, ProviderKind::OpenaiCompatible, "m");
        // No hold: nothing to enforce.
        assert_eq!(output_cap_for(&r, &custom), None);
        r.reservation = Some(aigw_events::wire::Reservation {
            period: "total".into(),
            micros: 1,
            tokens: 1,
            lease: None,
            on_key: true,
            levels: vec![],
        });
        let cap = worst_case::DEFAULT_OUTPUT_CAP;
        assert_eq!(output_cap_for(&r, &custom), Some(("max_tokens", cap)));
        let body = upstream_body(&r, "m", output_cap_for(&r, &custom));
        assert_eq!(body["max_tokens"], cap);
        // A model whose maximum output the catalog knows is bounded by it.
        let known = target(Some("openai"), ProviderKind::OpenaiCompatible, "gpt-5.4");
        assert_eq!(output_cap_for(&r, &known), None);
        // An unknown model at OpenAI gets the field its reasoning models take.
        let openai = target(Some("openai"), ProviderKind::OpenaiCompatible, "gpt-x");
        assert_eq!(
            output_cap_for(&r, &openai),
            Some(("max_completion_tokens", cap))
        );
        // The caller's own cap is never replaced.
        let mut capped = r.clone();
        capped.body = json!({"model":"m","messages":[],"max_tokens":5});
        assert_eq!(output_cap_for(&capped, &custom), None);
    }
}
